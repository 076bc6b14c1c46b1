//! Recurring posts: the list (each schedule's crontab in words where it is simple, its time
//! zone, holiday and catch-up policies, its next five firings in Japan time, its latest
//! firings with their announcements) and the editor (create, edit, pause, resume, delete).
//! Every read and change goes through the API's own handler in `api/schedules.rs` as the
//! signed-in user; a refusal is shown at its field with what was typed kept.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use minijinja::context;
use serde_json::{json, Map, Value};

use super::{channel_label, page, refused, Lang, Signed};
use crate::api::auth::Role;
use crate::api::problem::Problem;
use crate::api::schedules as api;
use crate::api::SharedState;

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/schedules", get(list).post(create))
        .route("/schedules/new", get(new_form))
        .route("/schedules/{id}", get(edit_form).post(edit))
        .route("/schedules/{id}/{action}", post(action))
}

/// A form field at fault and what to say about it.
type FieldError = (String, String);

/// The editor's fields as typed (repeated `channels` read by hand).
#[derive(Clone, Default)]
pub struct ScheduleForm {
    csrf: String,
    name: String,
    cron: String,
    timezone: String,
    title: String,
    body: String,
    link: String,
    tags: String,
    channels: Vec<String>,
    template: String,
    /// `name=value`, one a line.
    params: String,
    /// `datetime-local` in Japan time.
    starts_at: String,
    ends_at: String,
    holidays: String,
    catch_up: String,
    paused: bool,
}

fn nonempty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// A `datetime-local` value typed in Japan time, as RFC 3339 with +09:00; `None` when it
/// is not one.
pub(super) fn japan_time(v: &str) -> Option<String> {
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(v.trim(), f).ok())
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S+09:00").to_string())
}

/// A refusal in the user's words, followed by the API's own detail.
pub(super) fn in_words(ja: &str, en: &str, detail: &str, lang: Lang) -> String {
    match lang {
        Lang::Ja => format!("{ja}（{detail}）"),
        Lang::En => format!("{en} ({detail})"),
    }
}

/// An RFC 3339 time as a `datetime-local` value in Japan time.
fn to_local_input(s: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| {
            t.with_timezone(&noroshi_channel_core::jst())
                .format("%Y-%m-%dT%H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

impl ScheduleForm {
    fn parse(body: &[u8]) -> ScheduleForm {
        let mut f = ScheduleForm::default();
        for (k, v) in url::form_urlencoded::parse(body) {
            let v = v.into_owned();
            match k.as_ref() {
                "csrf" => f.csrf = v,
                "name" => f.name = v,
                "cron" => f.cron = v,
                "timezone" => f.timezone = v,
                "title" => f.title = v,
                "body" => f.body = v,
                "link" => f.link = v,
                "tags" => f.tags = v,
                "channels" => f.channels.push(v),
                "template" => f.template = v,
                "params" => f.params = v,
                "starts_at" => f.starts_at = v,
                "ends_at" => f.ends_at = v,
                "holidays" => f.holidays = v,
                "catch_up" => f.catch_up = v,
                "paused" => f.paused = !v.is_empty(),
                _ => {}
            }
        }
        f
    }

    /// A new schedule's form: Japan time, every enabled channel.
    fn fresh(state: &SharedState) -> ScheduleForm {
        ScheduleForm {
            timezone: "Asia/Tokyo".into(),
            holidays: "ignore".into(),
            catch_up: "once".into(),
            channels: state
                .channels
                .iter()
                .map(|c| c.name().to_string())
                .collect(),
            ..ScheduleForm::default()
        }
    }

    /// The form of a stored schedule.
    fn of_view(state: &SharedState, v: &api::ScheduleView) -> ScheduleForm {
        let a = &v.announcement;
        let text = |k: &str| a[k].as_str().unwrap_or_default().to_string();
        let strings = |k: &str| -> Option<Vec<String>> {
            a[k].as_array().map(|xs| {
                xs.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
        };
        let params = a["params"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => format!("{k}={s}"),
                        other => format!("{k}={other}"),
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        ScheduleForm {
            csrf: String::new(),
            name: v.name.clone(),
            cron: v.cron.clone(),
            timezone: v.timezone.clone(),
            title: text("title"),
            body: text("body"),
            link: text("link"),
            tags: strings("tags").unwrap_or_default().join("、"),
            channels: strings("channels").unwrap_or_else(|| {
                state
                    .channels
                    .iter()
                    .map(|c| c.name().to_string())
                    .collect()
            }),
            template: text("template"),
            params,
            starts_at: v
                .starts_at
                .as_deref()
                .map(to_local_input)
                .unwrap_or_default(),
            ends_at: v.ends_at.as_deref().map(to_local_input).unwrap_or_default(),
            holidays: v.holidays.clone(),
            catch_up: v.catch_up.clone(),
            paused: v.paused,
        }
    }

    /// A `datetime-local` value (Japan time) as RFC 3339 with +09:00.
    fn time(field: &str, value: &str, lang: Lang) -> Result<Option<String>, FieldError> {
        let v = value.trim();
        if v.is_empty() {
            return Ok(None);
        }
        japan_time(v).map(Some).ok_or_else(|| {
            (
                field.to_string(),
                lang.pick(
                    "日時は「2026-04-01T08:00」の形（日本時間）で入力してください。",
                    "Enter the date and time as 2026-04-01T08:00 (Japan time).",
                )
                .to_string(),
            )
        })
    }

    /// The post each firing makes: the stored one (`base`) with the form's fields over it,
    /// so what the form does not show (priority, per-channel text, languages) is kept.
    fn announcement(&self, base: Value, lang: Lang) -> Result<Value, FieldError> {
        let mut a = match base {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        a.remove("scheduled_at");
        let mut params = Map::new();
        for line in self.params.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let Some((k, v)) = line.split_once(['=', '＝']) else {
                return Err((
                    "params".into(),
                    lang.pick(
                        "テンプレートの項目は「項目名=値」の形で、1行に1つずつ入力してください。",
                        "Write the template's values as name=value, one a line.",
                    )
                    .into(),
                ));
            };
            params.insert(k.trim().to_string(), Value::String(v.trim().to_string()));
        }
        let tags: Vec<String> = self
            .tags
            .split([',', '、', '，'])
            .filter_map(nonempty)
            .collect();
        a.insert("title".into(), json!(self.title.trim()));
        a.insert("body".into(), json!(self.body.trim_end()));
        a.insert("link".into(), json!(nonempty(&self.link)));
        a.insert("channels".into(), json!(self.channels));
        a.insert("tags".into(), json!(tags));
        a.insert("template".into(), json!(nonempty(&self.template)));
        a.insert("params".into(), Value::Object(params));
        Ok(Value::Object(a))
    }

    /// What staff call it: as typed, or the post's title or template.
    fn name_or_default(&self) -> String {
        nonempty(&self.name)
            .or_else(|| nonempty(&self.template))
            .unwrap_or_else(|| self.title.trim().to_string())
    }

    /// The body of `POST /api/v1/schedules`.
    fn create_body(&self, lang: Lang) -> Result<Value, FieldError> {
        Ok(json!({
            "name": nonempty(&self.name),
            "cron": self.cron,
            "timezone": nonempty(&self.timezone),
            "announcement": self.announcement(Value::Null, lang)?,
            "starts_at": Self::time("starts_at", &self.starts_at, lang)?,
            "ends_at": Self::time("ends_at", &self.ends_at, lang)?,
            "paused": self.paused,
            "catch_up": nonempty(&self.catch_up),
            "holidays": nonempty(&self.holidays),
        }))
    }

    /// The body of `PATCH /api/v1/schedules/{id}`: every field of the form.
    fn edit_body(&self, current: &api::ScheduleView, lang: Lang) -> Result<Value, FieldError> {
        let mut body = Map::new();
        for (field, typed, stored) in [
            ("starts_at", &self.starts_at, &current.starts_at),
            ("ends_at", &self.ends_at, &current.ends_at),
        ] {
            match Self::time(field, typed, lang)? {
                Some(t) => {
                    body.insert(field.into(), json!(t));
                }
                None if stored.is_some() => {
                    return Err((
                        field.into(),
                        lang.pick(
                            "一度設定した開始・終了日時は空欄にできません。別の日時を入力するか、この定期発信を削除して作り直してください。",
                            "A start or end once set cannot be emptied: enter another time, or delete this schedule and create it again.",
                        )
                        .into(),
                    ));
                }
                None => {}
            }
        }
        body.insert("name".into(), json!(self.name_or_default()));
        body.insert("cron".into(), json!(self.cron));
        body.insert(
            "timezone".into(),
            json!(nonempty(&self.timezone).unwrap_or_else(|| "Asia/Tokyo".into())),
        );
        body.insert(
            "announcement".into(),
            self.announcement(current.announcement.clone(), lang)?,
        );
        body.insert("paused".into(), json!(self.paused));
        body.insert("catch_up".into(), json!(self.catch_up));
        body.insert("holidays".into(), json!(self.holidays));
        Ok(Value::Object(body))
    }
}

/// The form field an API refusal is about (`announcement.channels[1]` → `channels`), or
/// empty when the form has no such field.
fn form_field(api_field: &str) -> String {
    let f = api_field.strip_prefix("announcement.").unwrap_or(api_field);
    let head = f.split(['.', '[']).next().unwrap_or(f);
    match head {
        "name" | "cron" | "timezone" | "starts_at" | "ends_at" | "holidays" | "catch_up"
        | "paused" | "title" | "body" | "link" | "tags" | "channels" | "template" | "params" => {
            head.to_string()
        }
        _ => String::new(),
    }
}

/// An API refusal in the user's words, with the API's own detail.
fn refusal_text(field: &str, detail: &str, lang: Lang) -> String {
    let (ja, en) = match field {
        "cron" => (
            "繰り返しの指定が正しくありません。「分 時 日 月 曜日」の5項目を半角スペースで区切って入力してください。",
            "The repeat rule is not right: write five fields, minute hour day month weekday, separated by spaces.",
        ),
        "timezone" => (
            "タイムゾーンが正しくありません。Asia/Tokyo のような名前で入力してください。",
            "The time zone is not right: write a name such as Asia/Tokyo.",
        ),
        "starts_at" | "ends_at" => (
            "期間を確認してください。終了日時は開始日時より後にしてください。",
            "Check the period: the end must come after the start.",
        ),
        "title" | "body" | "link" => (
            "お知らせの内容を確認してください。",
            "Check the post's text.",
        ),
        "channels" => (
            "発信するチャンネルを確認してください。",
            "Check the channels.",
        ),
        "template" | "params" => (
            "テンプレートとその項目を確認してください。",
            "Check the template and its values.",
        ),
        _ => ("入力内容を確認してください。", "Please check the input."),
    };
    in_words(ja, en, detail, lang)
}

/// An API refusal as the form shows it: at its field, in the user's words.
fn field_error(p: &Problem, lang: Lang) -> FieldError {
    let field = p.field.as_deref().map(form_field).unwrap_or_default();
    let text = refusal_text(&field, &p.detail, lang);
    (field, text)
}

const DAYS_JA: [&str; 7] = ["日", "月", "火", "水", "木", "金", "土"];
const DAYS_EN: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// A simple crontab in words (`0 8 * * 1` → 毎週月曜 8:00); `None` when it is not simple.
pub fn cron_in_words(cron: &str, lang: Lang) -> Option<String> {
    let f: Vec<&str> = cron.split_whitespace().collect();
    if f.len() != 5 {
        return None;
    }
    let num =
        |s: &str, min: u32, max: u32| s.parse::<u32>().ok().filter(|n| (min..=max).contains(n));
    let minute = num(f[0], 0, 59)?;
    if f[1] == "*" {
        return (f[2] == "*" && f[3] == "*" && f[4] == "*").then(|| match lang {
            Lang::Ja => format!("毎時{minute}分"),
            Lang::En => format!("Every hour at :{minute:02}"),
        });
    }
    let time = format!("{}:{minute:02}", num(f[1], 0, 23)?);
    match (f[2], f[3], f[4]) {
        ("*", "*", "*") => Some(match lang {
            Lang::Ja => format!("毎日 {time}"),
            Lang::En => format!("Every day at {time}"),
        }),
        ("*", "*", dow) => {
            let day = |s: &str| num(s, 0, 7).map(|n| (n % 7) as usize);
            if let Some((a, b)) = dow.split_once('-') {
                let (a, b) = (day(a)?, day(b)?);
                return Some(match lang {
                    Lang::Ja => format!("毎週{}〜{}曜 {time}", DAYS_JA[a], DAYS_JA[b]),
                    Lang::En => format!("{} to {} at {time}", DAYS_EN[a], DAYS_EN[b]),
                });
            }
            let days: Vec<usize> = dow.split(',').map(day).collect::<Option<_>>()?;
            Some(match lang {
                Lang::Ja => format!(
                    "毎週{}曜 {time}",
                    days.iter()
                        .map(|d| DAYS_JA[*d])
                        .collect::<Vec<_>>()
                        .join("・")
                ),
                Lang::En => format!(
                    "Every {} at {time}",
                    days.iter()
                        .map(|d| DAYS_EN[*d])
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
        }
        (dom, "*", "*") => {
            let d = num(dom, 1, 31)?;
            Some(match lang {
                Lang::Ja => format!("毎月{d}日 {time}"),
                Lang::En => format!("Day {d} of every month at {time}"),
            })
        }
        (dom, month, "*") => {
            let (d, m) = (num(dom, 1, 31)?, num(month, 1, 12)?);
            Some(match lang {
                Lang::Ja => format!("毎年{m}月{d}日 {time}"),
                Lang::En => format!("Every year on {m}/{d} at {time}"),
            })
        }
        _ => None,
    }
}

/// A time in Japan time with its weekday, as staff read a timetable.
fn jst_with_weekday(t: chrono::DateTime<chrono::FixedOffset>, lang: Lang) -> String {
    use chrono::Datelike;
    let t = t.with_timezone(&noroshi_channel_core::jst());
    let wd = t.weekday().num_days_from_sunday() as usize;
    match lang {
        Lang::Ja => format!(
            "{}（{}）{}",
            t.format("%Y年%-m月%-d日"),
            DAYS_JA[wd],
            t.format("%H:%M")
        ),
        Lang::En => t.format("%a %-d %b %Y %H:%M JST").to_string(),
    }
}

/// An API time (RFC 3339 in the schedule's zone) in Japan time, and in the schedule's own
/// zone when that is not Japan's.
fn firing_time(s: &str, timezone: &str, lang: Lang) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) else {
        return s.to_string();
    };
    let jst = jst_with_weekday(t, lang);
    if timezone == "Asia/Tokyo" || t.offset().local_minus_utc() == 9 * 3600 {
        jst
    } else {
        format!("{jst}（{timezone}: {}）", t.format("%-m/%-d %H:%M"))
    }
}

fn holidays_label(h: &str, lang: Lang) -> &'static str {
    match h {
        "skip" => lang.pick("祝日は発信しない", "not on public holidays"),
        "next_day" => lang.pick(
            "祝日の場合は翌日（祝日でない日）の同じ時刻に発信",
            "moved to the next day that is not a public holiday",
        ),
        _ => lang.pick("祝日も発信する", "public holidays too"),
    }
}

fn catch_up_label(c: &str, lang: Lang) -> &'static str {
    match c {
        "skip" => lang.pick(
            "システム停止中に予定時刻が過ぎた分は発信しない",
            "missed while Noroshi was stopped: not posted",
        ),
        _ => lang.pick(
            "システム停止中に予定時刻が過ぎた分は、再開時に1回だけ発信",
            "missed while Noroshi was stopped: posted once on restart",
        ),
    }
}

/// One schedule as the list shows it.
fn item(v: &api::ScheduleView, lang: Lang) -> minijinja::Value {
    let a = &v.announcement;
    let title = a["title"]
        .as_str()
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .or_else(|| {
            a["template"]
                .as_str()
                .map(|t| format!("{}{t}", lang.pick("テンプレート：", "template: ")))
        })
        .unwrap_or_default();
    let channels = match a["channels"].as_array() {
        Some(cs) => cs
            .iter()
            .filter_map(|c| c.as_str())
            .map(|c| channel_label(c, lang))
            .collect::<Vec<_>>()
            .join("、"),
        None => lang
            .pick("有効なすべてのチャンネル", "every enabled channel")
            .into(),
    };
    let recent: Vec<minijinja::Value> = v
        .recent_firings
        .iter()
        .map(|f| {
            let at = chrono::DateTime::from_timestamp_millis(f.fire_at)
                .unwrap_or_default()
                .fixed_offset();
            context! {
                at => jst_with_weekday(at, lang),
                announcement_id => f.announcement_id,
                note => f.note.clone().unwrap_or_default(),
            }
        })
        .collect();
    context! {
        id => v.id, name => v.name, title => title, cron => v.cron,
        cron_words => cron_in_words(&v.cron, lang),
        timezone => v.timezone, paused => v.paused,
        holidays => holidays_label(&v.holidays, lang),
        catch_up => catch_up_label(&v.catch_up, lang),
        starts_at => v.starts_at.as_deref().map(|t| firing_time(t, &v.timezone, lang)),
        ends_at => v.ends_at.as_deref().map(|t| firing_time(t, &v.timezone, lang)),
        channels => channels,
        next => v.next_firings.iter().map(|t| firing_time(t, &v.timezone, lang)).collect::<Vec<_>>(),
        recent => recent,
        created_by => v.created_by,
    }
}

/// `GET /schedules`: every recurring post, with its next firings in Japan time.
pub async fn list(State(state): State<SharedState>, signed: Signed) -> Response {
    let lang = signed.lang;
    let found = match api::list(State(state.clone()), signed.caller.clone()).await {
        Ok(Json(v)) => v,
        Err(p) => return refused(lang, &p),
    };
    let items: Vec<minijinja::Value> = found.iter().map(|v| item(v, lang)).collect();
    page(
        "schedules.html",
        lang,
        context! { me => signed.header(), items => items },
    )
}

/// The editor, for a new schedule (`id` none) or a stored one.
fn editor(
    state: &SharedState,
    signed: &Signed,
    current: Option<&api::ScheduleView>,
    f: &ScheduleForm,
    error: Option<FieldError>,
    status: StatusCode,
) -> Response {
    let lang = signed.lang;
    let channels: Vec<minijinja::Value> = state
        .channels
        .iter()
        .map(|c| {
            let name = c.name().to_string();
            context! {
                checked => f.channels.contains(&name),
                label => channel_label(&name, lang), name => name,
            }
        })
        .collect();
    let templates: Vec<minijinja::Value> = state
        .templates
        .iter()
        .filter(|t| {
            t.priority != noroshi_channel_core::Priority::Disaster
                || signed.caller.role >= Role::Disaster
                || t.name == f.template
        })
        .map(|t| {
            let params: Vec<String> = t
                .params
                .iter()
                .map(|(k, p)| format!("{k}（{}）", p.description))
                .collect();
            context! { name => t.name, description => t.description, params => params.join("、") }
        })
        .collect();
    let option = |value: &str, label: &str| context! { value => value, label => label };
    let holidays = ["ignore", "skip", "next_day"]
        .iter()
        .map(|h| option(h, holidays_label(h, lang)))
        .collect::<Vec<_>>();
    let catch_ups = ["once", "skip"]
        .iter()
        .map(|c| option(c, catch_up_label(c, lang)))
        .collect::<Vec<_>>();
    let (error_field, error) = error
        .map(|(f, m)| (Some(f).filter(|f| !f.is_empty()), Some(m)))
        .unwrap_or((None, None));
    let mut r = page(
        "schedule.html",
        lang,
        context! {
            me => signed.header(), f => context! {
                name => f.name, cron => f.cron, timezone => f.timezone, title => f.title,
                body => f.body, link => f.link, tags => f.tags, template => f.template,
                params => f.params, starts_at => f.starts_at, ends_at => f.ends_at,
                holidays => f.holidays, catch_up => f.catch_up, paused => f.paused,
            },
            current => current.map(|v| item(v, lang)),
            channels => channels, templates => templates,
            holiday_options => holidays, catch_up_options => catch_ups,
            error => error, error_field => error_field,
        },
    );
    *r.status_mut() = status;
    r
}

/// `GET /schedules/new` (staff and above): an empty editor.
pub async fn new_form(State(state): State<SharedState>, signed: Signed) -> Response {
    if let Err(r) = signed.require(Role::Staff) {
        return r;
    }
    editor(
        &state,
        &signed,
        None,
        &ScheduleForm::fresh(&state),
        None,
        StatusCode::OK,
    )
}

fn refused_status(p: &Problem) -> StatusCode {
    StatusCode::from_u16(p.status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY)
}

/// `POST /schedules`: creates a schedule through the API's handler, as the signed-in user.
pub async fn create(
    State(state): State<SharedState>,
    signed: Signed,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = signed.require(Role::Staff) {
        return r;
    }
    let f = ScheduleForm::parse(&body);
    if let Err(r) = signed.check_csrf(&f.csrf) {
        return r;
    }
    let unprocessable =
        |e: FieldError, status: StatusCode| editor(&state, &signed, None, &f, Some(e), status);
    let json = match f.create_body(signed.lang) {
        Ok(j) => j,
        Err(e) => return unprocessable(e, StatusCode::UNPROCESSABLE_ENTITY),
    };
    let result = api::create(
        State(state.clone()),
        signed.caller.clone(),
        bytes::Bytes::from(json.to_string()),
    )
    .await;
    match result {
        Ok((_, Json(v))) => {
            signed.audit(&state, "/schedules", 303);
            Redirect::to(&format!("/schedules#schedule-{}", v.id)).into_response()
        }
        Err(p) => unprocessable(field_error(&p, signed.lang), refused_status(&p)),
    }
}

async fn current(
    state: &SharedState,
    signed: &Signed,
    id: &str,
) -> Result<api::ScheduleView, Problem> {
    api::get_one(
        State(state.clone()),
        signed.caller.clone(),
        Path(id.to_string()),
    )
    .await
    .map(|Json(v)| v)
}

/// `GET /schedules/{id}` (staff and above): the editor with the schedule's values.
pub async fn edit_form(
    State(state): State<SharedState>,
    signed: Signed,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = signed.require(Role::Staff) {
        return r;
    }
    match current(&state, &signed, &id).await {
        Ok(v) => {
            let f = ScheduleForm::of_view(&state, &v);
            editor(&state, &signed, Some(&v), &f, None, StatusCode::OK)
        }
        Err(p) => refused(signed.lang, &p),
    }
}

/// `POST /schedules/{id}`: every field of the form replaces the schedule's, through the
/// API's edit handler (what the form does not show is kept).
pub async fn edit(
    State(state): State<SharedState>,
    signed: Signed,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = signed.require(Role::Staff) {
        return r;
    }
    let f = ScheduleForm::parse(&body);
    if let Err(r) = signed.check_csrf(&f.csrf) {
        return r;
    }
    let v = match current(&state, &signed, &id).await {
        Ok(v) => v,
        Err(p) => return refused(signed.lang, &p),
    };
    let json = match f.edit_body(&v, signed.lang) {
        Ok(j) => j,
        Err(e) => {
            return editor(
                &state,
                &signed,
                Some(&v),
                &f,
                Some(e),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
    };
    let result = api::edit(
        State(state.clone()),
        signed.caller.clone(),
        Path(id.clone()),
        bytes::Bytes::from(json.to_string()),
    )
    .await;
    match result {
        Ok(_) => {
            signed.audit(&state, &format!("/schedules/{id}"), 303);
            Redirect::to(&format!("/schedules#schedule-{id}")).into_response()
        }
        Err(p) => {
            let e = field_error(&p, signed.lang);
            editor(&state, &signed, Some(&v), &f, Some(e), refused_status(&p))
        }
    }
}

#[derive(serde::Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /schedules/{id}/pause`, `/resume` (from now on: missed firings are not made up)
/// and `/delete` (it never fires again; its past firings stay on record).
pub async fn action(
    State(state): State<SharedState>,
    signed: Signed,
    Path((id, action)): Path<(String, String)>,
    axum::Form(f): axum::Form<CsrfForm>,
) -> Response {
    if let Err(r) = signed.check_csrf(&f.csrf) {
        return r;
    }
    let (st, caller, path) = (
        State(state.clone()),
        signed.caller.clone(),
        Path(id.clone()),
    );
    let (result, then) = match action.as_str() {
        "pause" => (
            api::pause(st, caller, path).await.map(drop),
            format!("/schedules#schedule-{id}"),
        ),
        "resume" => (
            api::resume(st, caller, path).await.map(drop),
            format!("/schedules#schedule-{id}"),
        ),
        "delete" => (
            api::delete(st, caller, path).await.map(drop),
            "/schedules".to_string(),
        ),
        _ => return refused(signed.lang, &Problem::not_found("action")),
    };
    super::act(
        &state,
        &signed,
        &format!("/schedules/{id}/{action}"),
        result,
        &then,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_crontabs_read_in_words() {
        let ja = |c| cron_in_words(c, Lang::Ja);
        assert_eq!(ja("0 8 * * 1").as_deref(), Some("毎週月曜 8:00"));
        assert_eq!(ja("30 7 * * 1-5").as_deref(), Some("毎週月〜金曜 7:30"));
        assert_eq!(ja("0 9 * * 1,4").as_deref(), Some("毎週月・木曜 9:00"));
        assert_eq!(ja("0 9 1 * *").as_deref(), Some("毎月1日 9:00"));
        assert_eq!(ja("0 9 1 4 *").as_deref(), Some("毎年4月1日 9:00"));
        assert_eq!(ja("15 * * * *").as_deref(), Some("毎時15分"));
        assert_eq!(ja("0 7 * * *").as_deref(), Some("毎日 7:00"));
        assert_eq!(ja("*/5 * * * *"), None);
        assert_eq!(ja("0 8 * *"), None);
        assert_eq!(
            cron_in_words("0 8 * * 0", Lang::En).as_deref(),
            Some("Every Sunday at 8:00")
        );
    }

    #[test]
    fn refusals_land_on_the_form_fields() {
        assert_eq!(form_field("cron"), "cron");
        assert_eq!(form_field("announcement.channels[1]"), "channels");
        assert_eq!(form_field("announcement.title"), "title");
        assert_eq!(form_field("announcement.params.area"), "params");
        assert_eq!(form_field("announcement.overrides.x.text"), "");
    }

    #[test]
    fn japan_time_from_the_form_becomes_rfc3339() {
        assert_eq!(
            ScheduleForm::time("starts_at", "2026-04-01T08:00", Lang::Ja).unwrap(),
            Some("2026-04-01T08:00:00+09:00".into())
        );
        assert_eq!(ScheduleForm::time("starts_at", "", Lang::Ja).unwrap(), None);
        assert!(ScheduleForm::time("ends_at", "tomorrow", Lang::Ja).is_err());
        assert_eq!(to_local_input("2026-03-31T23:00:00Z"), "2026-04-01T08:00");
    }
}

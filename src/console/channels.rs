//! Channels and subscribers. The channels page shows every channel's state in words, why
//! it is paused or degraded, what to do about it ([`causes`]), its budgets and pacing, the
//! storage state and the CAP feeds; an admin resumes a paused channel. The subscribers page
//! lists, adds and removes email subscribers and imports a CSV after a preview of its
//! errors, checked by the import's own rules ([`crate::api::subscribers::check_csv`]).
//! Reads and actions go through the API's own handlers.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use minijinja::context;
use serde::Deserialize;
use serde_json::Value;

use super::{channel_label, local_rfc3339, page, refused, status_label, Lang, Signed};
use crate::api::auth::Role;
use crate::api::channels as api;
use crate::api::problem::Problem;
use crate::api::subscribers as subs;
use crate::api::SharedState;

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/channels", get(channels))
        .route("/channels/{name}/resume", post(resume))
        .route("/subscribers", get(subscribers).post(add))
        .route("/subscribers/{id}/delete", post(remove))
        .route("/subscribers/import", post(import))
}

/// Why a channel is not simply working, as far as its view tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    LineToken,
    XAuth,
    FacebookToken,
    GraphVersion,
    FacebookRestricted,
    MailAuth,
    WebhookAuth,
    Credentials,
    LineQuota,
    LineQuotaLow,
    LineBroadcastHour,
    XCap,
    GraphUsage,
    Quota,
    ReachFailed,
    CapFeed,
    Held,
    DisasterMode,
    NotEnabled,
    Other,
}

/// What the channel view says about one channel.
pub(crate) struct Facts<'a> {
    pub name: &'a str,
    /// ok | degraded | paused | disabled
    pub state: &'a str,
    /// The reason and the last error, as the API gives them.
    pub text: &'a str,
    /// The platform rate-limited the account and the channel waits.
    pub held: bool,
    pub disaster_mode: bool,
}

/// The causes of a channel's state, from its view (the adapters' words, CHANNELS.md's
/// classes): the one its state comes from first, then a hold and disaster mode.
pub(crate) fn causes(f: &Facts) -> Vec<Cause> {
    let t = f.text.to_lowercase();
    let has = |s: &str| t.contains(s);
    let version = has("graph api version") || has("api_version") || has("(2635");
    let main = match f.state {
        _ if f.name.starts_with("cap-feed:") => (f.state != "ok").then_some(Cause::CapFeed),
        "disabled" => Some(Cause::NotEnabled),
        "paused" if version => Some(Cause::GraphVersion),
        "paused" => Some(match f.name {
            "line" => Cause::LineToken,
            "x" => Cause::XAuth,
            "facebook" => Cause::FacebookToken,
            "email" => Cause::MailAuth,
            n if n.starts_with("webhook") => Cause::WebhookAuth,
            _ => Cause::Credentials,
        }),
        "degraded" => Some(if version {
            Cause::GraphVersion
        } else if has("blocked for policy") || has("(368") {
            Cause::FacebookRestricted
        } else if has("page token") {
            Cause::FacebookToken
        } else if has("quota low") {
            Cause::LineQuotaLow
        } else if has("disaster reserve") {
            Cause::LineBroadcastHour
        } else if f.name == "line" && (has("monthly") || has("quota")) {
            Cause::LineQuota
        } else if f.name == "x" && (has("24-hour") || has("budget exhausted") || has("quota")) {
            Cause::XCap
        } else if has("graph usage high") {
            Cause::GraphUsage
        } else if has("quota") {
            Cause::Quota
        } else if has("reach collection failed") {
            Cause::ReachFailed
        } else {
            Cause::Other
        }),
        _ => None,
    };
    let mut out: Vec<Cause> = main.into_iter().collect();
    if f.held {
        out.push(Cause::Held);
    }
    if f.disaster_mode {
        out.push(Cause::DisasterMode);
    }
    out
}

impl Cause {
    /// What it is and what to do about it, in `lang`.
    pub(crate) fn words(self, lang: Lang) -> (&'static str, &'static str) {
        let (ja, en) = match self {
            Cause::LineToken => (
                ("LINEのチャネルアクセストークンが受け付けられません（期限切れ・再発行・取り消しなど）。",
                 "LINE Developersでチャネルアクセストークンを再発行し、設定ファイルを更新してから再開してください。"),
                ("LINE refuses the channel access token (expired, reissued or revoked).",
                 "Reissue the channel access token in LINE Developers, update the configuration file, then resume."),
            ),
            Cause::XAuth => (
                ("Xがアプリの認証情報を受け付けません（401：アクセストークンの失効、アプリの権限変更など）。",
                 "X Developer Portalでアプリを再認可し（アクセストークンとシークレットを再発行）、設定ファイルを更新してから再開してください。"),
                ("X refuses the app's credentials (401: a revoked token, changed app permissions).",
                 "Re-authorise the app in the X Developer Portal (new access token and secret), update the configuration file, then resume."),
            ),
            Cause::FacebookToken => (
                ("Facebookページのアクセストークンが期限切れか、無効になっています（または期限が近づいています）。",
                 "Meta for Developers（ビジネス設定のシステムユーザーなど）でページアクセストークンを再発行し、設定ファイルを更新してから再開してください。"),
                ("The Facebook Page access token has expired or is invalid (or expires soon).",
                 "Issue a new Page access token in Meta for Developers (for example a system user in Business Settings), update the configuration file, then resume."),
            ),
            Cause::GraphVersion => (
                ("設定しているGraph APIのバージョンの提供が終了した（または終了が近い）ためです。",
                 "設定ファイルの [channels.facebook] の api_version を提供中のバージョン（例：v25.0）に更新し、デーモンを再起動してから再開してください。"),
                ("The Graph API version in the configuration is no longer served (or soon will not be).",
                 "Set api_version in [channels.facebook] to a version still served (e.g. v25.0), restart the daemon, then resume."),
            ),
            Cause::FacebookRestricted => (
                ("Facebookページがポリシー違反の疑いで、一時的に投稿を制限されています。",
                 "Metaのビジネスサポートホームで制限の内容と期間を確認してください。制限が解けるまで投稿は送られません。"),
                ("The Facebook Page is temporarily blocked from posting for suspected policy violations.",
                 "Check the restriction and how long it lasts in Meta Business Support Home. Posts wait until it is lifted."),
            ),
            Cause::MailAuth => (
                ("メールサーバー（SMTP）がログインを受け付けません。",
                 "メールサーバーのユーザー名・パスワードと暗号化（STARTTLS）の設定を確認し、設定ファイルを更新してから再開してください。"),
                ("The mail server (SMTP) refuses the login.",
                 "Check the mail server's user name, password and encryption (STARTTLS) settings, update the configuration file, then resume."),
            ),
            Cause::WebhookAuth => (
                ("連携先が署名または認証情報を受け付けません。",
                 "連携先（CMSなど）の担当者に署名用シークレットや認証情報を確認してもらい、設定ファイルを合わせてから再開してください。"),
                ("The receiving system refuses the signature or credentials.",
                 "Ask the receiving system's (e.g. the CMS's) administrator to check the signing secret or credentials, match the configuration file, then resume."),
            ),
            Cause::Credentials => (
                ("認証情報が受け付けられません。",
                 "このチャンネルの認証情報を確認し、設定ファイルを更新してから再開してください。"),
                ("The credentials are refused.",
                 "Check this channel's credentials, update the configuration file, then resume."),
            ),
            Cause::LineQuota => (
                ("LINEの今月のメッセージ通数が上限に達しました。",
                 "通常の発信は翌月1日の上限リセットまで待機します（災害の発信はエラーになります）。急ぐ場合はLINE公式アカウントの料金プランを上げるか、地方公共団体プランへの切り替えを検討してください。"),
                ("LINE's message count for this month is used up.",
                 "Normal posts wait until the limit resets on the 1st of next month (disaster posts fail). If it cannot wait, raise the LINE Official Account plan or consider the plan for local governments."),
            ),
            Cause::LineQuotaLow => (
                ("LINEの今月のメッセージ通数の残りが少なくなっています。",
                 "災害時に送れなくならないよう、月末まで一斉配信を控えるか、料金プランの変更を検討してください。"),
                ("Few of this month's LINE messages are left.",
                 "So that alerts can still go out, send fewer broadcasts until the month ends or consider a larger plan."),
            ),
            Cause::LineBroadcastHour => (
                ("LINEの一斉配信の1時間あたりの回数が、災害用の予備枠だけになっています。",
                 "通常の発信は次の時間枠まで自動で待機します。対応は不要です。"),
                ("Only the disaster reserve of LINE's hourly broadcasts is left.",
                 "Normal posts wait for the next hour by themselves; nothing to do."),
            ),
            Cause::XCap => (
                ("Xの投稿数の上限（24時間の上限、または利用クレジット）に達しました。",
                 "リセット時刻まで通常の投稿は待機します。たびたび起きる場合は、Xの利用プラン（クレジット）の見直しを検討してください。"),
                ("X's post cap (the 24-hour cap or the credits) is reached.",
                 "Normal posts wait until it resets. If this happens often, review the X plan (credits)."),
            ),
            Cause::GraphUsage => (
                ("Facebook（Graph API）の利用量が多く、投稿の間隔を自動で空けています。",
                 "対応は不要です。利用量が下がると自動で元に戻ります。"),
                ("Graph API usage is high and posting is slowed down.",
                 "Nothing to do: it returns to normal when usage drops."),
            ),
            Cause::Quota => (
                ("プラットフォームの利用上限に達しました。",
                 "上限がリセットされるまで待つか、契約プランの見直しを検討してください。"),
                ("The platform's quota is used up.",
                 "Wait until it resets, or consider a larger plan."),
            ),
            Cause::ReachFailed => (
                ("到達状況（フォロワー数など）の集計に失敗しました。発信には影響ありません。",
                 "次回の集計で回復することがあります。続く場合は、集計に使う権限（インサイトの権限など）とトークンを確認してください。"),
                ("Collecting reach figures (followers and views) failed; sending is not affected.",
                 "The next collection may succeed. If it keeps failing, check the token and its permissions for statistics."),
            ),
            Cause::CapFeed => (
                ("外部の防災情報フィード（CAP）の取り込みに失敗しています。",
                 "フィードのURLと配信元の状況を確認してください。取り込みは自動で再試行されます。"),
                ("Reading this CAP feed fails.",
                 "Check the feed's URL and its publisher. Reading is retried by itself."),
            ),
            Cause::Held => (
                ("プラットフォームから送信回数の制限を受け、送信を一時的に止めています。",
                 "表示の時刻を過ぎると自動で送信を再開します。対応は不要です。"),
                ("The platform rate-limited the account; sending waits.",
                 "Sending resumes by itself after the time shown; nothing to do."),
            ),
            Cause::DisasterMode => (
                ("警報の発表中のため、このチャンネルでは災害の発信だけを送っています。",
                 "通常・緊急のお知らせ、定期発信、訓練は、警報が解除されると送信されます。"),
                ("A live alert is active: this channel sends disaster work only.",
                 "Normal and urgent posts, schedules and drills go out when the alert ends."),
            ),
            Cause::NotEnabled => (
                ("このチャンネルは設定ファイルで有効になっていません。",
                 "使う場合は設定ファイルで有効にし（enabled = true）、デーモンを再起動してください。"),
                ("This channel is not enabled in the configuration file.",
                 "To use it, enable it in the configuration file (enabled = true) and restart the daemon."),
            ),
            Cause::Other => (
                ("原因を特定できませんでした。",
                 "下の「最後のエラー」を確認してください。解決しない場合はシステム担当者に連絡してください。"),
                ("The cause could not be told.",
                 "Read the last error below. If it does not clear, contact the system administrator."),
            ),
        };
        match lang {
            Lang::Ja => ja,
            Lang::En => en,
        }
    }
}

/// A platform budget's name as staff read it.
fn budget_label(name: &str, lang: Lang) -> String {
    let fixed = match name {
        "broadcast_requests_per_hour" => {
            Some(("一斉配信の回数（1時間あたり）", "broadcasts per hour"))
        }
        "broadcast_requests_per_hour_non_disaster" => Some((
            "一斉配信の回数（1時間あたり、災害用の予備枠を除く）",
            "broadcasts per hour (without the disaster reserve)",
        )),
        "narrowcast_requests_per_hour" => {
            Some(("絞り込み配信の回数（1時間あたり）", "narrowcasts per hour"))
        }
        "narrowcast_requests_per_hour_non_disaster" => Some((
            "絞り込み配信の回数（1時間あたり、災害用の予備枠を除く）",
            "narrowcasts per hour (without the disaster reserve)",
        )),
        "monthly_messages" => Some(("今月のメッセージ通数", "messages this month")),
        "posts per 24 h (user)" => {
            Some(("24時間の投稿数（アカウント）", "posts per 24 h (account)"))
        }
        "posts per 24 h (app)" => Some(("24時間の投稿数（アプリ）", "posts per 24 h (app)")),
        _ => None,
    };
    if let Some((ja, en)) = fixed {
        return lang.pick(ja, en).to_string();
    }
    match lang {
        Lang::En => name.to_string(),
        Lang::Ja => {
            if let Some(n) = name.strip_suffix(" (15 min window)") {
                format!("{n}（15分間の枠）")
            } else if let Some(n) = name.strip_suffix(" (% of allowance left)") {
                format!("{n}（利用枠の残り、％）")
            } else {
                name.to_string()
            }
        }
    }
}

fn time_of(v: &Value, lang: Lang) -> Option<String> {
    v.as_str().map(|s| local_rfc3339(s, lang))
}

fn number(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => {
            let s = n.to_string();
            Some(s.strip_suffix(".0").map(str::to_string).unwrap_or(s))
        }
        _ => None,
    }
}

/// One channel (or CAP feed) of the API's list, ready for the page.
fn channel_view(c: &api::ChannelView, lang: Lang, admin: bool) -> minijinja::Value {
    let state = if c.enabled {
        c.state.as_str()
    } else {
        "disabled"
    };
    let held_until = time_of(&c.rate_limit["held_until"], lang);
    let text = [c.reason.as_deref(), c.last_error.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" / ");
    let advice: Vec<minijinja::Value> = causes(&Facts {
        name: &c.name,
        state,
        text: &text,
        held: held_until.is_some(),
        disaster_mode: c.disaster_mode,
    })
    .into_iter()
    .map(|cause| {
        let (what, todo) = cause.words(lang);
        context! { what => what, todo => todo }
    })
    .collect();
    let budgets: Vec<minijinja::Value> = c.platform["budgets"]
        .as_array()
        .map(|b| b.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|b| {
            context! {
                name => budget_label(b["name"].as_str().unwrap_or(""), lang),
                remaining => number(&b["remaining"]), limit => number(&b["limit"]),
                resets_at => time_of(&b["resets_at"], lang),
            }
        })
        .collect();
    let warnings: Vec<String> = c.platform["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let rl = &c.rate_limit;
    let rate = (!rl.is_null()).then(|| {
        context! {
            per_second => number(&rl["rate_per_second"]), burst => number(&rl["burst"]),
            reserve_percent => rl["disaster_reserve"].as_f64().map(|r| format!("{:.0}", r * 100.0)),
            concurrency => number(&rl["concurrency"]),
            reserved_workers => number(&rl["reserved_disaster_workers"]),
            instances => number(&rl["instances"]),
        }
    });
    let reach = &c.platform["reach"];
    let reach = (!reach.is_null()).then(|| {
        context! {
            at => time_of(&reach["last_collected_at"], lang),
            samples => number(&reach["samples"]),
            error => reach["error"].as_str(),
        }
    });
    let feed = c.name.strip_prefix("cap-feed:");
    context! {
        name => c.name, anchor => format!("channel-{}", c.name.replace(|ch: char| !ch.is_ascii_alphanumeric(), "-")),
        label => feed.map(|u| u.to_string()).unwrap_or_else(|| channel_label(&c.name, lang)),
        feed => feed.is_some(),
        state => state, state_label => status_label(state, lang),
        reason => c.reason, last_error => c.last_error,
        last_error_at => c.last_error_at.as_deref().map(|t| local_rfc3339(t, lang)),
        last_success_at => c.last_success_at.as_deref().map(|t| local_rfc3339(t, lang)),
        held_until => held_until, disaster_mode => c.disaster_mode,
        advice => advice, budgets => budgets, warnings => warnings, rate => rate, reach => reach,
        followers => number(&c.platform["webhook_followers"]),
        ingested => number(&c.platform["ingested"]),
        last_poll_at => time_of(&c.platform["last_poll_at"], lang),
        queue => context! {
            disaster => number(&c.queue["disaster"]), urgent => number(&c.queue["urgent"]),
            normal => number(&c.queue["normal"]), in_flight => number(&c.queue["in_flight_here"]),
        },
        can_resume => admin && c.enabled && state == "paused" && feed.is_none(),
        paused => state == "paused",
    }
}

/// `GET /channels` (viewer+): every channel's state, cause and what to do, the storage
/// state and the CAP feeds.
pub async fn channels(State(state): State<SharedState>, signed: Signed) -> Response {
    let lang = signed.lang;
    let list = match api::list(State(state.clone()), signed.caller.clone()).await {
        Ok(Json(l)) => l,
        Err(p) => return refused(lang, &p),
    };
    let storage = match api::storage(signed.caller.clone()).await {
        Ok(Json(s)) => s,
        Err(p) => return refused(lang, &p),
    };
    let admin = signed.caller.role >= Role::Admin;
    let (feeds, chans): (Vec<_>, Vec<_>) =
        list.iter().partition(|c| c.name.starts_with("cap-feed:"));
    let view = |l: Vec<&api::ChannelView>| -> Vec<minijinja::Value> {
        l.into_iter()
            .map(|c| channel_view(c, lang, admin))
            .collect()
    };
    let (feeds, chans) = (view(feeds), view(chans));
    let storage_label = match storage.state.as_str() {
        "ok" => lang.pick("正常（書き込みできます）", "working (takes writes)"),
        "full" => lang.pick("容量不足（書き込みできません）", "full (takes no writes)"),
        _ => lang.pick(
            "接続できません（書き込みできません）",
            "unavailable (takes no writes)",
        ),
    };
    page(
        "channels.html",
        lang,
        context! {
            me => signed.header(), channels => chans, feeds => feeds, admin => admin,
            storage => context! {
                state => storage.state, label => storage_label, reason => storage.reason,
                since => storage.since.as_deref().map(|t| local_rfc3339(t, lang)),
            },
        },
    )
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// An admin's form through an API handler: the CSRF token and the role are checked
/// before `call` runs, then [`super::act`] audits it and redirects to `then`.
async fn admin_act<T>(
    state: &SharedState,
    signed: &Signed,
    csrf: &str,
    path: &str,
    then: &str,
    call: impl std::future::Future<Output = Result<T, Problem>>,
) -> Response {
    if let Err(r) = signed.check_csrf(csrf).and(signed.require(Role::Admin)) {
        return r;
    }
    super::act(state, signed, path, call.await, then)
}

/// `POST /channels/{name}/resume` (admin): a paused channel sends again.
pub async fn resume(
    State(state): State<SharedState>,
    signed: Signed,
    Path(name): Path<String>,
    axum::Form(f): axum::Form<CsrfForm>,
) -> Response {
    let call = api::resume(
        State(state.clone()),
        signed.caller.clone(),
        Path(name.clone()),
    );
    let path = format!("/channels/{name}/resume");
    admin_act(&state, &signed, &f.csrf, &path, "/channels", call).await
}

#[derive(Deserialize, Default)]
pub struct SubscribersQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    done: Option<String>,
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    existing: Option<String>,
    #[serde(default)]
    skipped: Option<String>,
}

/// A refusal of the API, said at its field: the field (`email`, `lang`, `topics[0]`,
/// without a CSV's `line N: `), the message in the user's language, and the API's own
/// words when they are not already the message.
struct Said {
    field: String,
    message: String,
    detail: String,
}

fn said(p: &Problem, lang: Lang) -> Said {
    let full = p.field.clone().unwrap_or_default();
    let field = match full.split_once(": ") {
        Some((line, f)) if line.starts_with("line ") => f.to_string(),
        _ => full.clone(),
    };
    let detail = p
        .detail
        .strip_prefix(&format!("{full}: "))
        .unwrap_or(&p.detail)
        .to_string();
    if lang == Lang::En {
        return Said {
            field,
            message: detail,
            detail: String::new(),
        };
    }
    let message = if p.status == 409 {
        "このアドレスはすでに登録されています。"
    } else if detail.contains("appears twice") {
        "ファイルの中に同じアドレスが2回以上あります。"
    } else if detail.contains("control character") {
        "制御文字が含まれています。削除してください。"
    } else if detail.contains("header row") {
        "1行目（見出し行）を email,lang,topics にしてください。"
    } else if detail.contains("is empty") {
        "CSVが空です。"
    } else if field == "email" {
        "メールアドレスとして正しくありません。"
    } else if field == "lang" {
        "言語は ja、en、ja-easy などの言語コードで入力してください。"
    } else if field.starts_with("topics") {
        "分野は1〜64文字で入力してください。"
    } else {
        "入力を確認してください。"
    };
    Said {
        field,
        message: message.into(),
        detail,
    }
}

/// The languages offered when adding a subscriber (the API takes any language tag).
const LANGS: &[(&str, &str, &str)] = &[
    ("ja", "日本語", "Japanese"),
    ("ja-easy", "やさしい日本語", "Easy Japanese"),
    ("en", "英語", "English"),
    ("zh", "中国語", "Chinese"),
    ("ko", "韓国語", "Korean"),
    ("pt", "ポルトガル語", "Portuguese"),
    ("vi", "ベトナム語", "Vietnamese"),
];

/// What the forms of the subscribers page carry back after a refusal or a preview.
#[derive(Default)]
struct Forms {
    email: String,
    lang: String,
    add_error: Option<Said>,
    csv: String,
    csv_error: Option<Said>,
    preview: Option<Preview>,
    /// A note about the import (nothing stored, nothing to store).
    import_note: Option<String>,
}

struct Preview {
    rows: Vec<minijinja::Value>,
    good: usize,
    bad: usize,
}

fn preview(check: &subs::CsvCheck, lang: Lang) -> Preview {
    let rows: Vec<minijinja::Value> = check
        .rows
        .iter()
        .map(|r| match &r.checked {
            Ok(s) => context! {
                line => r.line, ok => true, email => s.email, lang => s.lang, topics => s.topics.join("; "),
            },
            Err(p) => {
                let s = said(p, lang);
                context! {
                    line => r.line, ok => false, text => r.text, field => s.field,
                    field_label => field_label(&s.field, lang), message => s.message, detail => s.detail,
                }
            }
        })
        .collect();
    let good = check.rows.iter().filter(|r| r.checked.is_ok()).count();
    Preview {
        good,
        bad: rows.len() - good,
        rows,
    }
}

fn field_label(field: &str, lang: Lang) -> &'static str {
    match field {
        "email" => lang.pick("メールアドレス", "email address"),
        "lang" => lang.pick("言語", "language"),
        f if f.starts_with("topics") => lang.pick("分野", "topics"),
        _ => lang.pick("ファイル全体", "the file"),
    }
}

/// The subscribers page with its list, and the forms as `forms` left them.
async fn subscribers_page(
    state: &SharedState,
    signed: &Signed,
    q: &SubscribersQuery,
    forms: Forms,
    status: StatusCode,
) -> Response {
    let lang = signed.lang;
    let filter = q.status.clone().filter(|s| !s.is_empty());
    let query = subs::SubscriberQuery {
        status: filter.clone(),
        cursor: q.cursor.as_deref().and_then(|c| c.parse().ok()),
        limit: Some(50),
    };
    let found = match subs::list(
        State(state.clone()),
        signed.caller.clone(),
        Ok(Query(query)),
    )
    .await
    {
        Ok(Json(p)) => p,
        Err(p) => return refused(lang, &p),
    };
    let items: Vec<minijinja::Value> = found
        .items
        .iter()
        .map(|s| {
            context! {
                id => s.id, email => s.email, lang => s.lang, topics => s.topics.join("、"),
                active => s.status == "active",
                status => if s.status == "active" { lang.pick("配信中", "subscribed") } else { lang.pick("配信停止", "unsubscribed") },
                created_at => local_rfc3339(&s.created_at, lang),
            }
        })
        .collect();
    let next = found.next_cursor.map(|c| {
        let mut u = url::form_urlencoded::Serializer::new(String::new());
        if let Some(s) = &filter {
            u.append_pair("status", s);
        }
        u.append_pair("cursor", &c.to_string());
        format!("/subscribers?{}", u.finish())
    });
    let count = |v: &Option<String>| v.as_deref().and_then(|n| n.parse::<u64>().ok());
    let done = match q.done.as_deref() {
        Some("added") => Some(lang.pick("登録しました。", "Added.").to_string()),
        Some("removed") => Some(lang.pick("削除しました。", "Removed.").to_string()),
        Some("imported") => {
            let (c, e, s) = (
                count(&q.created).unwrap_or(0),
                count(&q.existing).unwrap_or(0),
                count(&q.skipped).unwrap_or(0),
            );
            Some(match lang {
                Lang::Ja => format!("取り込みました：新規登録 {c}件、登録済みのため変更なし {e}件、問題があり取り込まなかった行 {s}件。"),
                Lang::En => format!("Imported: {c} added, {e} already subscribed (left as they were), {s} refused rows left out."),
            })
        }
        _ => None,
    };
    let langs: Vec<minijinja::Value> = LANGS
        .iter()
        .map(|(code, ja, en)| context! { value => code, label => format!("{}（{code}）", lang.pick(ja, en)) })
        .collect();
    let said_ctx = |s: &Option<Said>| {
        s.as_ref().map(|s| {
            context! { field => s.field, label => field_label(&s.field, lang), message => s.message, detail => s.detail }
        })
    };
    let preview = forms
        .preview
        .map(|p| context! { rows => p.rows, good => p.good, bad => p.bad });
    let mut r = page(
        "subscribers.html",
        lang,
        context! {
            me => signed.header(), items => items, next => next, active => found.active,
            status => filter.unwrap_or_default(), done => done, langs => langs,
            email => forms.email,
            lang_value => if forms.lang.is_empty() { "ja".to_string() } else { forms.lang },
            add_error => said_ctx(&forms.add_error),
            csv => forms.csv, csv_error => said_ctx(&forms.csv_error),
            preview => preview, import_note => forms.import_note,
        },
    );
    *r.status_mut() = status;
    r
}

/// `GET /subscribers` (admin, as the API): search by state, fifty at a time; add, remove,
/// import.
pub async fn subscribers(
    State(state): State<SharedState>,
    signed: Signed,
    Query(q): Query<SubscribersQuery>,
) -> Response {
    if let Err(r) = signed.require(Role::Admin) {
        return r;
    }
    subscribers_page(&state, &signed, &q, Forms::default(), StatusCode::OK).await
}

#[derive(Deserialize)]
pub struct AddForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    lang: String,
}

/// `POST /subscribers`: one subscriber through the API's `create`; a refusal is shown at
/// its field.
pub async fn add(
    State(state): State<SharedState>,
    signed: Signed,
    axum::Form(f): axum::Form<AddForm>,
) -> Response {
    if let Err(r) = signed.check_csrf(&f.csrf).and(signed.require(Role::Admin)) {
        return r;
    }
    let lang = if f.lang.trim().is_empty() {
        "ja"
    } else {
        f.lang.trim()
    };
    let body = serde_json::json!({ "email": f.email, "lang": lang });
    let result = subs::create(
        State(state.clone()),
        signed.caller.clone(),
        Bytes::from(body.to_string()),
    )
    .await;
    match result {
        Err(p) if matches!(p.status, 409 | 422) && p.field.is_some() => {
            let forms = Forms {
                add_error: Some(said(&p, signed.lang)),
                email: f.email,
                lang: f.lang,
                ..Forms::default()
            };
            let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            subscribers_page(&state, &signed, &SubscribersQuery::default(), forms, status).await
        }
        result => super::act(
            &state,
            &signed,
            "/subscribers",
            result,
            "/subscribers?done=added",
        ),
    }
}

/// `POST /subscribers/{id}/delete`: one subscriber and their address removed for good.
pub async fn remove(
    State(state): State<SharedState>,
    signed: Signed,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<CsrfForm>,
) -> Response {
    let call = subs::delete(
        State(state.clone()),
        signed.caller.clone(),
        Path(id.clone()),
    );
    let path = format!("/subscribers/{id}/delete");
    let then = "/subscribers?done=removed";
    admin_act(&state, &signed, &f.csrf, &path, then, call).await
}

#[derive(Deserialize)]
pub struct ImportForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    csv: String,
    /// `check` (preview only), `import` (all rows, or nothing when one is refused) or
    /// `import_good` (the rows without problems).
    #[serde(default)]
    action: String,
}

/// `POST /subscribers/import`: 「確認する」 checks the CSV by the import's own rules and
/// stores nothing; 「取り込む」 imports it through the API's `import` (only the good rows
/// when asked to leave the refused ones out).
pub async fn import(
    State(state): State<SharedState>,
    signed: Signed,
    axum::Form(f): axum::Form<ImportForm>,
) -> Response {
    if let Err(r) = signed.check_csrf(&f.csrf).and(signed.require(Role::Admin)) {
        return r;
    }
    let lang = signed.lang;
    let q = SubscribersQuery::default();
    let check = match subs::check_csv(&f.csv) {
        Ok(c) => c,
        Err(p) => {
            let forms = Forms {
                csv_error: Some(said(&p, lang)),
                csv: f.csv,
                ..Forms::default()
            };
            return subscribers_page(&state, &signed, &q, forms, StatusCode::UNPROCESSABLE_ENTITY)
                .await;
        }
    };
    let shown = preview(&check, lang);
    let (good, bad) = (shown.good, shown.bad);
    let note = if f.action == "check" {
        None
    } else if good == 0 {
        Some(lang.pick(
            "取り込める行がないため、何も登録していません。",
            "There are no rows to import; nothing was stored.",
        ))
    } else if bad > 0 && f.action != "import_good" {
        Some(lang.pick(
            "問題のある行があるため、何も登録していません。行を直すか、「問題のない行だけを取り込む」を選んでください。",
            "Some rows are refused, so nothing was stored. Fix them, or choose \"Import only the rows without problems\".",
        ))
    } else {
        let mut body = check.header.clone();
        for r in check.rows.iter().filter(|r| r.checked.is_ok()) {
            body.push('\n');
            body.push_str(&r.text);
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        let result = subs::import(
            State(state.clone()),
            signed.caller.clone(),
            headers,
            Bytes::from(body),
        )
        .await;
        let then = match &result {
            Ok(Json(r)) => format!(
                "/subscribers?done=imported&created={}&existing={}&skipped={bad}",
                r.created, r.existing
            ),
            Err(_) => "/subscribers".into(),
        };
        return super::act(&state, &signed, "/subscribers/import", result, &then);
    };
    let status = if note.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let forms = Forms {
        csv: f.csv,
        preview: Some(shown),
        import_note: note.map(str::to_string),
        ..Forms::default()
    };
    subscribers_page(&state, &signed, &q, forms, status).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(name: &str, state: &str, text: &str) -> Vec<Cause> {
        causes(&Facts {
            name,
            state,
            text,
            held: false,
            disaster_mode: false,
        })
    }

    #[test]
    fn causes_follow_the_adapters_words() {
        let feed = "cap-feed:https://feeds.example.jp/cap.atom";
        let cases: &[(&str, &str, &str, &[Cause])] = &[
            ("line", "paused", "credentials refused: LINE answered 401: Authentication failed due to the following reason: invalid token.", &[Cause::LineToken]),
            ("x", "paused", "credentials refused: X answered 401: Unauthorized", &[Cause::XAuth]),
            ("facebook", "paused", "credentials refused: page token expired (190/463): Error validating access token", &[Cause::FacebookToken]),
            ("facebook", "paused", "credentials refused: Graph API version no longer served (2635): (#2635) You are calling a deprecated version", &[Cause::GraphVersion]),
            ("facebook", "degraded", "Graph API v21.0 expires on 2026-12-01: raise api_version before then", &[Cause::GraphVersion]),
            ("facebook", "degraded", "quota exhausted: Page temporarily blocked for policy violations (368): blocked", &[Cause::FacebookRestricted]),
            ("facebook", "degraded", "Graph usage high: app at 95% (call_count 95, total_time 3, total_cputime 2); posting is slowed down", &[Cause::GraphUsage]),
            ("line", "degraded", "quota exhausted: LINE answered 429: You have reached your monthly limit.", &[Cause::LineQuota]),
            ("line", "degraded", "LINE monthly message quota low: 40 of 1000 messages left", &[Cause::LineQuotaLow]),
            ("line", "degraded", "LINE broadcast budget: only the disaster reserve (10 of 60 an hour) is left", &[Cause::LineBroadcastHour]),
            ("x", "degraded", "quota exhausted: X answered 429: Too Many Requests (24-hour user post cap exhausted)", &[Cause::XCap]),
            ("email", "paused", "credentials refused: 535 5.7.8 authentication credentials refused", &[Cause::MailAuth]),
            ("webhook.cms", "paused", "credentials refused: endpoint refused the credentials or signature: HTTP 401", &[Cause::WebhookAuth]),
            ("x", "degraded", "reach collection failed: X answered 500", &[Cause::ReachFailed]),
            ("website", "degraded", "something new", &[Cause::Other]),
            (feed, "degraded", "HTTP 500", &[Cause::CapFeed]),
            (feed, "ok", "", &[]),
            ("line", "disabled", "", &[Cause::NotEnabled]),
            ("line", "ok", "an old error", &[]),
        ];
        for (name, state, text, want) in cases {
            assert_eq!(&of(name, state, text), want, "{name} {state}: {text}");
        }
        let held = causes(&Facts {
            name: "x",
            state: "ok",
            text: "",
            held: true,
            disaster_mode: true,
        });
        assert_eq!(held, vec![Cause::Held, Cause::DisasterMode]);
    }

    #[test]
    fn every_cause_says_what_to_do_in_both_languages() {
        let (what, todo) = Cause::LineToken.words(Lang::Ja);
        assert!(what.contains("チャネルアクセストークン"));
        assert_eq!(todo, "LINE Developersでチャネルアクセストークンを再発行し、設定ファイルを更新してから再開してください。");
        assert!(Cause::GraphVersion
            .words(Lang::Ja)
            .1
            .contains("api_version"));
        assert!(Cause::LineQuota.words(Lang::Ja).1.contains("料金プラン"));
        assert!(Cause::XAuth.words(Lang::En).1.contains("Re-authorise"));
        assert_eq!(
            budget_label("monthly_messages", Lang::Ja),
            "今月のメッセージ通数"
        );
        assert_eq!(
            budget_label("tweets (15 min window)", Lang::Ja),
            "tweets（15分間の枠）"
        );
    }
}

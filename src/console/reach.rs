//! Reach and KPIs: followers and views per channel over time as SVG charts drawn here on
//! the server (no script, no chart library), each with its figures in a table for
//! screen-reader users; the plan's KPIs for a Japanese fiscal year with their progress and
//! the lineage the API gives; the CSV downloads; and, for admins, collection now and a
//! figure entered by hand with its source. Reads and actions go through the API's own
//! handlers in `api/reach.rs`.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::NaiveDate;
use minijinja::context;
use serde::Deserialize;

use super::{channel_label, local_rfc3339, page, refused, Lang, Signed};
use crate::api::auth::Role;
use crate::api::problem::Problem;
use crate::api::reach as api;
use crate::api::SharedState;

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/reach", get(show))
        .route("/reach.csv", get(reach_csv))
        .route("/kpi.csv", get(kpi_csv))
        .route("/reach/collect", post(collect))
        .route("/reach/figures", post(enter))
}

/// The periods a chart can cover, in days.
const PERIODS: [i64; 4] = [7, 30, 90, 365];
const DEFAULT_DAYS: i64 = 30;

#[derive(Deserialize, Default)]
pub struct PageQuery {
    #[serde(default)]
    fy: Option<String>,
    #[serde(default)]
    days: Option<String>,
    #[serde(default)]
    saved: Option<String>,
}

impl PageQuery {
    fn days(&self) -> i64 {
        self.days
            .as_deref()
            .and_then(|d| d.parse().ok())
            .filter(|d| PERIODS.contains(d))
            .unwrap_or(DEFAULT_DAYS)
    }
    fn since(&self) -> String {
        let since = crate::clock::now() - chrono::TimeDelta::days(self.days());
        since
            .with_timezone(&noroshi_channel_core::jst())
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
    }
}

/// One measurement as `GET /api/v1/reach` answers it.
#[derive(Deserialize)]
struct Sample {
    channel: String,
    metric: String,
    value: f64,
    period: String,
    api_version: Option<String>,
    subject: Option<String>,
    collected_at: i64,
    source: String,
    note: Option<String>,
}

/// One KPI as `GET /api/v1/kpi` answers it.
#[derive(Deserialize)]
struct Kpi {
    name: String,
    metric: String,
    fiscal_year: i32,
    baseline: Option<f64>,
    target: f64,
    value: Option<f64>,
    progress: Option<f64>,
    lineage: Vec<Lineage>,
}

#[derive(Deserialize)]
struct Lineage {
    term: String,
    value: f64,
    how: String,
    samples: usize,
    period: Option<String>,
    api_versions: Vec<String>,
    sources: Vec<String>,
    latest_at: Option<String>,
    breaks: Vec<String>,
}

/// The JSON body of an API handler's answer.
async fn json_of<T: serde::de::DeserializeOwned>(r: Response) -> Result<T, Problem> {
    let bytes = axum::body::to_bytes(r.into_body(), 64 << 20)
        .await
        .map_err(Problem::internal)?;
    serde_json::from_slice(&bytes).map_err(Problem::internal)
}

/// A number as a city's report writes it: 4,210 or 86.5.
pub fn number(v: f64) -> String {
    let neg = v < 0.0;
    let v = v.abs();
    let rounded = (v * 100.0).round() / 100.0;
    let whole = rounded.trunc() as u64;
    let frac = rounded - rounded.trunc();
    let digits = whole.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if frac > 0.000_001 {
        let f = format!("{frac:.2}");
        out.push_str(f.trim_start_matches('0').trim_end_matches('0'));
    }
    if neg && rounded != 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

fn metric_label(metric: &str, lang: Lang) -> String {
    let (ja, en) = match metric {
        "followers_count" => ("フォロワー数", "followers"),
        "followers" => ("友だち数", "friends"),
        "webhook_followers" => (
            "友だち数（Webhookで集計）",
            "friends (counted from the webhook)",
        ),
        "targetedReaches" => ("ターゲットリーチ数", "targeted reach"),
        "blocks" => ("ブロック数", "blocks"),
        "active_subscribers" => ("配信登録者数", "active subscribers"),
        "page_views" => ("ページビュー数", "page views"),
        "page_media_view" => ("ページのコンテンツ表示回数", "page content views"),
        "page_total_media_view_unique" => (
            "ページのコンテンツを見た人数",
            "people who saw the page's content",
        ),
        "impression_count" => ("投稿の表示回数", "post impressions"),
        "post_media_view" => ("投稿の表示回数", "post views"),
        "delivered" => ("配信数", "delivered"),
        "uniqueImpression" => ("メッセージを開封した人数", "people who opened"),
        "uniqueClick" => ("リンクをクリックした人数", "people who clicked"),
        "successCount" => ("配信成功数", "delivered"),
        "readership_percent" => ("読者率（％）", "readership (%)"),
        other => return other.to_string(),
    };
    lang.pick(ja, en).to_string()
}

/// Followers first, then views, then the rest by name.
fn metric_rank(metric: &str) -> usize {
    const ORDER: [&str; 9] = [
        "followers_count",
        "followers",
        "webhook_followers",
        "active_subscribers",
        "page_views",
        "page_media_view",
        "page_total_media_view_unique",
        "impression_count",
        "post_media_view",
    ];
    ORDER
        .iter()
        .position(|m| *m == metric)
        .unwrap_or(ORDER.len())
}

fn source_label(source: &str, lang: Lang) -> String {
    match source {
        "api" => lang.pick("各サービスのAPI", "the platform's API").into(),
        "daemon" => lang.pick("狼煙で集計", "counted by Noroshi").into(),
        "manual" => lang.pick("手入力", "entered by hand").into(),
        other => other.into(),
    }
}

fn period_label(period: &str, lang: Lang) -> String {
    match period {
        "lifetime" => lang.pick("累計", "lifetime").into(),
        "day" => lang.pick("日別", "per day").into(),
        "days_28" => lang.pick("28日間", "28 days").into(),
        "fiscal_year" => lang.pick("年度", "fiscal year").into(),
        other => other.into(),
    }
}

/// One day of a series: each subject's latest value that day, and where they came from.
#[derive(Default)]
struct Day {
    by_subject: BTreeMap<String, (i64, f64)>,
    sources: BTreeSet<String>,
    versions: BTreeSet<String>,
    notes: BTreeSet<String>,
}

#[derive(Default)]
struct Series {
    per_post: bool,
    periods: BTreeSet<String>,
    days: BTreeMap<NaiveDate, Day>,
}

/// Chart geometry (the viewBox is 640 × 260).
const W: f64 = 640.0;
const H: f64 = 260.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 44.0;

fn nice_step(span: f64) -> f64 {
    let raw = (span / 4.0).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let n = raw / mag;
    let m = if n <= 1.0 {
        1.0
    } else if n <= 2.0 {
        2.0
    } else if n <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// The y axis: from, to and the ticks between, at round numbers.
fn y_axis(min: f64, max: f64) -> (f64, f64, Vec<f64>) {
    let (low, high) = if max > min {
        (min, max)
    } else {
        let pad = (min.abs() * 0.1).max(1.0);
        (min - pad, max + pad)
    };
    let step = nice_step(high - low);
    let mut lo = (low / step).floor() * step;
    let hi = (high / step).ceil() * step;
    if min >= 0.0 && lo < 0.0 {
        lo = 0.0;
    }
    let ticks = (0..)
        .map(|i| lo + step * i as f64)
        .take_while(|t| *t <= hi + step / 1000.0)
        .collect();
    (lo, hi, ticks)
}

/// A day as an axis label (6/1) and in full.
fn day_label(d: NaiveDate, lang: Lang) -> (String, String) {
    let short = d.format("%-m/%-d").to_string();
    let long = match lang {
        Lang::Ja => d.format("%Y年%-m月%-d日").to_string(),
        Lang::En => d.format("%-d %b %Y").to_string(),
    };
    (short, long)
}

/// One series as an SVG line chart's coordinates, its text alternative and its table.
fn chart(
    id: usize,
    channel: &str,
    metric: &str,
    s: &Series,
    lang: Lang,
) -> Option<minijinja::Value> {
    let points: Vec<(NaiveDate, f64, &Day)> = s
        .days
        .iter()
        .map(|(d, day)| (*d, day.by_subject.values().map(|(_, v)| v).sum(), day))
        .collect();
    let (first, last) = (points.first()?.0, points.last()?.0);
    let min = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let max = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi, ticks) = y_axis(min, max);
    let span_days = (last - first).num_days().max(0) as f64;
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let x = |d: NaiveDate| {
        if span_days == 0.0 {
            LEFT + plot_w / 2.0
        } else {
            LEFT + (d - first).num_days() as f64 / span_days * plot_w
        }
    };
    let y = |v: f64| TOP + plot_h - (v - lo) / (hi - lo) * plot_h;
    let coords: Vec<(f64, f64)> = points.iter().map(|p| (x(p.0), y(p.1))).collect();
    let line = coords
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect::<Vec<_>>()
        .join(" ");
    let dots: Vec<minijinja::Value> = coords
        .iter()
        .map(|(x, y)| context! { x => format!("{x:.1}"), y => format!("{y:.1}") })
        .collect();
    let y_ticks: Vec<minijinja::Value> = ticks
        .iter()
        .map(|t| context! { y => format!("{:.1}", y(*t)), label => number(*t) })
        .collect();
    let mut x_days = vec![first];
    if points.len() > 2 {
        x_days.push(points[points.len() / 2].0);
    }
    if last != first {
        x_days.push(last);
    }
    let x_labels: Vec<minijinja::Value> = x_days
        .iter()
        .map(|d| context! { x => format!("{:.1}", x(*d)), label => day_label(*d, lang).0 })
        .collect();
    let title = format!(
        "{}：{}{}",
        channel_label(channel, lang),
        metric_label(metric, lang),
        if s.per_post {
            lang.pick(
                "（投稿ごとの最新値の合計）",
                " (sum of each post's latest value)",
            )
        } else {
            ""
        }
    );
    let latest = points.last().map(|p| p.1).unwrap_or_default();
    let (from, to) = (day_label(first, lang).1, day_label(last, lang).1);
    let (latest, min, max) = (number(latest), number(min), number(max));
    let n = points.len();
    let summary = match (lang, n) {
        (Lang::Ja, 1) => format!("{to}の値のみ（1点）。値は{latest}です。"),
        (Lang::En, 1) => format!("One value only, on {to}: {latest}."),
        (Lang::Ja, _) => format!(
            "{from}から{to}までの{n}日分の折れ線グラフ。最新の値は{latest}、最小は{min}、最大は{max}です。"
        ),
        (Lang::En, _) => format!(
            "Line chart of {n} days from {from} to {to}. Latest {latest}, lowest {min}, highest {max}."
        ),
    };
    let rows: Vec<minijinja::Value> = points
        .iter()
        .map(|(d, v, day)| {
            context! {
                day => day_label(*d, lang).1, value => number(*v),
                source => day.sources.iter().map(|s| source_label(s, lang)).collect::<Vec<_>>().join("、"),
                api_version => day.versions.iter().cloned().collect::<Vec<_>>().join("、"),
                note => day.notes.iter().cloned().collect::<Vec<_>>().join("、"),
            }
        })
        .collect();
    Some(context! {
        id => format!("chart-{id}"), title => title, summary => summary, metric => metric,
        periods => s.periods.iter().map(|p| period_label(p, lang)).collect::<Vec<_>>().join("、"),
        width => W, height => H, left => LEFT, right => W - RIGHT,
        top => TOP, bottom => H - BOTTOM, label_y => H - BOTTOM + 22.0,
        line => line, dots => dots, y_ticks => y_ticks, x_labels => x_labels, rows => rows,
    })
}

/// The charts, grouped by channel: the known channels first, in the daemon's order.
fn charts(state: &SharedState, samples: Vec<Sample>, lang: Lang) -> Vec<minijinja::Value> {
    let mut series: BTreeMap<(String, String), Series> = BTreeMap::new();
    for s in samples {
        let day = chrono::DateTime::from_timestamp_millis(s.collected_at)
            .unwrap_or_default()
            .with_timezone(&noroshi_channel_core::jst())
            .date_naive();
        let entry = series.entry((s.channel, s.metric)).or_default();
        entry.per_post |= s.subject.is_some();
        entry.periods.insert(s.period);
        let d = entry.days.entry(day).or_default();
        let slot = d
            .by_subject
            .entry(s.subject.unwrap_or_default())
            .or_insert((i64::MIN, 0.0));
        if s.collected_at >= slot.0 {
            *slot = (s.collected_at, s.value);
        }
        d.sources.insert(s.source);
        d.versions.extend(s.api_version);
        d.notes.extend(s.note);
    }
    let rank = |c: &str| {
        state
            .known_channels
            .iter()
            .position(|k| k == c)
            .unwrap_or(usize::MAX)
    };
    let mut channels: Vec<String> = series
        .keys()
        .map(|(c, _)| c.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    channels.sort_by_key(|c| (rank(c), c.clone()));
    let mut n = 0;
    channels
        .into_iter()
        .map(|channel| {
            let mut metrics: Vec<&String> = series
                .keys()
                .filter(|(c, _)| *c == channel)
                .map(|(_, m)| m)
                .collect();
            metrics.sort_by_key(|m| (metric_rank(m), (*m).clone()));
            let charts: Vec<minijinja::Value> = metrics
                .into_iter()
                .filter_map(|m| {
                    n += 1;
                    chart(n, &channel, m, &series[&(channel.clone(), m.clone())], lang)
                })
                .collect();
            context! { name => channel, label => channel_label(&channel, lang), charts => charts }
        })
        .collect()
}

/// A fiscal year as the city writes it: 2026年度（令和8年度）.
fn fiscal_year_label(fy: i32, lang: Lang) -> String {
    match lang {
        Lang::Ja => {
            // Named by the era most of the year is in (2019年度 is 令和元年度).
            let era = NaiveDate::from_ymd_opt(fy, 5, 1)
                .map(crate::schedule::era_year)
                .unwrap_or_default();
            format!("{fy}年度（{era}度）")
        }
        Lang::En => format!("FY{fy} (April {fy} to March {})", fy + 1),
    }
}

fn kpi_view(i: usize, k: &Kpi, lang: Lang) -> minijinja::Value {
    let percent = k.progress.map(|p| p * 100.0);
    let lineage: Vec<minijinja::Value> = k
        .lineage
        .iter()
        .map(|l| {
            context! {
                term => l.term, value => number(l.value), how => l.how, samples => l.samples,
                period => l.period.as_deref().map(|p| period_label(p, lang)).unwrap_or_default(),
                api_versions => l.api_versions.join("、"),
                sources => l.sources.iter().map(|s| source_label(s, lang)).collect::<Vec<_>>().join("、"),
                latest_at => l.latest_at.as_deref().map(|t| local_rfc3339(t, lang)).unwrap_or_default(),
                breaks => l.breaks.join("、"),
            }
        })
        .collect();
    context! {
        id => format!("kpi-{i}"), name => k.name, metric => k.metric,
        baseline => k.baseline.map(number), target => number(k.target),
        value => k.value.map(number),
        percent => percent.map(|p| format!("{p:.1}")),
        bar => percent.map(|p| format!("{:.1}", p.clamp(0.0, 100.0))),
        reached => percent.is_some_and(|p| p >= 100.0),
        lineage => lineage,
    }
}

/// A manual figure as typed.
#[derive(Deserialize, Default)]
pub struct FigureForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    metric: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    period: String,
    #[serde(default)]
    collected_at: String,
    #[serde(default)]
    note: String,
}

/// What a page shows besides the reads: the figure form as typed and its refusal, the
/// result of a collection.
#[derive(Default)]
struct Extra {
    figure: FigureForm,
    error: Option<(String, String)>,
    collected: Option<Vec<minijinja::Value>>,
}

async fn reach_page(
    state: &SharedState,
    signed: &Signed,
    q: &PageQuery,
    extra: Extra,
    status: StatusCode,
) -> Response {
    let lang = signed.lang;
    let query = api::ReachQuery {
        channel: None,
        metric: None,
        since: Some(q.since()),
        until: None,
        announcement_id: None,
    };
    let samples = api::list(
        State(state.clone()),
        signed.caller.clone(),
        HeaderMap::new(),
        Ok(Query(query)),
    )
    .await;
    let samples: Vec<Sample> = match samples {
        Ok(r) => match json_of(r).await {
            Ok(s) => s,
            Err(p) => return refused(lang, &p),
        },
        Err(p) => return refused(lang, &p),
    };
    let kpis: Vec<Kpi> = match api::kpi(
        State(state.clone()),
        signed.caller.clone(),
        HeaderMap::new(),
    )
    .await
    {
        Ok(r) => match json_of(r).await {
            Ok(k) => k,
            Err(p) => return refused(lang, &p),
        },
        Err(p) => return refused(lang, &p),
    };
    let current_fy = crate::reach::fiscal_year(crate::clock::now());
    let fy =
        q.fy.as_deref()
            .and_then(|f| f.parse::<i32>().ok())
            .unwrap_or(current_fy);
    let mut years: BTreeSet<i32> = kpis.iter().map(|k| k.fiscal_year).collect();
    years.insert(current_fy);
    years.insert(fy);
    let years: Vec<minijinja::Value> = years
        .into_iter()
        .rev()
        .map(|y| context! { value => y, label => fiscal_year_label(y, lang), current => y == current_fy })
        .collect();
    let shown: Vec<minijinja::Value> = kpis
        .iter()
        .filter(|k| k.fiscal_year == fy)
        .enumerate()
        .map(|(i, k)| kpi_view(i + 1, k, lang))
        .collect();
    let periods: Vec<minijinja::Value> = PERIODS
        .iter()
        .map(|d| {
            let label = match lang {
                Lang::Ja => format!("直近{d}日間"),
                Lang::En => format!("last {d} days"),
            };
            context! { value => d, label => label }
        })
        .collect();
    let period_options: Vec<minijinja::Value> = ["lifetime", "day", "days_28", "fiscal_year"]
        .iter()
        .map(|p| context! { value => p, label => period_label(p, lang) })
        .collect();
    let (error_field, error) = extra
        .error
        .map(|(f, m)| (Some(f).filter(|f| !f.is_empty()), Some(m)))
        .unwrap_or((None, None));
    let f = &extra.figure;
    let mut r = page(
        "reach.html",
        lang,
        context! {
            me => signed.header(),
            channels => charts(state, samples, lang),
            days => q.days(), periods => periods,
            fy => fy, fy_label => fiscal_year_label(fy, lang), years => years, kpis => shown,
            saved => q.saved.is_some(),
            collected => extra.collected,
            figure => context! {
                channel => f.channel, metric => f.metric, value => f.value,
                period => if f.period.is_empty() { "fiscal_year" } else { f.period.as_str() },
                collected_at => f.collected_at, note => f.note,
            },
            period_options => period_options,
            error => error, error_field => error_field,
        },
    );
    *r.status_mut() = status;
    r
}

/// `GET /reach` (everyone signed in): charts, KPIs, downloads.
pub async fn show(
    State(state): State<SharedState>,
    signed: Signed,
    Query(q): Query<PageQuery>,
) -> Response {
    reach_page(&state, &signed, &q, Extra::default(), StatusCode::OK).await
}

fn attachment(mut r: Response, name: &str) -> Response {
    r.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
            .unwrap_or_else(|_| HeaderValue::from_static("attachment")),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn csv_accept() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT, HeaderValue::from_static("text/csv"));
    headers
}

fn today() -> String {
    crate::clock::now()
        .with_timezone(&noroshi_channel_core::jst())
        .format("%Y%m%d")
        .to_string()
}

/// `GET /reach.csv?days=N`: the open-data CSV of the chart's period, as the API exports it.
pub async fn reach_csv(
    State(state): State<SharedState>,
    signed: Signed,
    Query(q): Query<PageQuery>,
) -> Response {
    let query = api::ReachQuery {
        channel: None,
        metric: None,
        since: Some(q.since()),
        until: None,
        announcement_id: None,
    };
    match api::list(
        State(state),
        signed.caller.clone(),
        csv_accept(),
        Ok(Query(query)),
    )
    .await
    {
        Ok(r) => attachment(r, &format!("reach-{}.csv", today())),
        Err(p) => refused(signed.lang, &p),
    }
}

/// `GET /kpi.csv`: every KPI of every fiscal year with its lineage, as the API exports it.
pub async fn kpi_csv(State(state): State<SharedState>, signed: Signed) -> Response {
    match api::kpi(State(state), signed.caller.clone(), csv_accept()).await {
        Ok(r) => attachment(r, &format!("kpi-{}.csv", today())),
        Err(p) => refused(signed.lang, &p),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /reach/collect` (admin): every enabled channel is read now; the page then says
/// what each gave.
pub async fn collect(
    State(state): State<SharedState>,
    signed: Signed,
    axum::Form(f): axum::Form<CsrfForm>,
) -> Response {
    if let Err(r) = signed.require(Role::Admin).and(signed.check_csrf(&f.csrf)) {
        return r;
    }
    let lang = signed.lang;
    match api::collect(State(state.clone()), signed.caller.clone()).await {
        Ok(Json(out)) => {
            signed.audit(&state, "/reach/collect", 200);
            let collected = out
                .iter()
                .map(|c| {
                    context! {
                        label => channel_label(&c.channel, lang), samples => c.samples,
                        error => c.error,
                    }
                })
                .collect();
            let extra = Extra {
                collected: Some(collected),
                ..Extra::default()
            };
            reach_page(
                &state,
                &signed,
                &PageQuery::default(),
                extra,
                StatusCode::OK,
            )
            .await
        }
        Err(p) => refused(lang, &p),
    }
}

fn figure_refusal(field: &str, detail: &str, lang: Lang) -> String {
    let (ja, en) = match field {
        "note" => (
            "出典（どの調査・報告の数値か）を入力してください。",
            "Say where the figure comes from (the survey, the report).",
        ),
        "value" => (
            "値は数値で入力してください。",
            "Enter the value as a number.",
        ),
        "collected_at" => (
            "計測日時を確認してください。",
            "Check when it was measured.",
        ),
        "channel" | "metric" => (
            "チャンネルと指標名は1〜64文字で入力してください。",
            "Channel and metric take 1 to 64 characters.",
        ),
        _ => ("入力内容を確認してください。", "Please check the input."),
    };
    super::schedules::in_words(ja, en, detail, lang)
}

/// `POST /reach/figures` (admin): a figure no API gives, with its source, through the API's
/// own handler; a refusal is shown at its field with what was typed kept.
pub async fn enter(
    State(state): State<SharedState>,
    signed: Signed,
    axum::Form(f): axum::Form<FigureForm>,
) -> Response {
    if let Err(r) = signed.require(Role::Admin).and(signed.check_csrf(&f.csrf)) {
        return r;
    }
    let lang = signed.lang;
    let fail = |field: &str, message: String, status: StatusCode, f: FigureForm| {
        let extra = Extra {
            figure: f,
            error: Some((field.to_string(), message)),
            collected: None,
        };
        let (state, signed) = (&state, &signed);
        async move { reach_page(state, signed, &PageQuery::default(), extra, status).await }
    };
    let typed = f.value.trim().replace([',', '，'], "");
    let Ok(value) =
        typed.parse::<f64>().map_err(|_| ()).and_then(
            |v| {
                if v.is_finite() {
                    Ok(v)
                } else {
                    Err(())
                }
            },
        )
    else {
        let message = figure_refusal("value", &f.value, lang);
        return fail("value", message, StatusCode::UNPROCESSABLE_ENTITY, f).await;
    };
    let collected_at = match f.collected_at.trim() {
        "" => None,
        t => match super::schedules::japan_time(t) {
            Some(t) => Some(t),
            None => {
                let message = figure_refusal("collected_at", t, lang);
                return fail("collected_at", message, StatusCode::UNPROCESSABLE_ENTITY, f).await;
            }
        },
    };
    let body = serde_json::json!({
        "channel": f.channel.trim(), "metric": f.metric.trim(), "value": value,
        "period": f.period, "collected_at": collected_at, "note": f.note.trim(),
    });
    match api::enter(
        State(state.clone()),
        signed.caller.clone(),
        bytes::Bytes::from(body.to_string()),
    )
    .await
    {
        Ok(_) => {
            signed.audit(&state, "/reach/figures", 303);
            Redirect::to("/reach?saved=1#figure-heading").into_response()
        }
        Err(p) => {
            let field = p.field.clone().unwrap_or_default();
            let message = figure_refusal(&field, &p.detail, lang);
            let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            fail(&field, message, status, f).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_in_a_report() {
        assert_eq!(number(4210.0), "4,210");
        assert_eq!(number(1234567.0), "1,234,567");
        assert_eq!(number(86.5), "86.5");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(-1500.0), "-1,500");
    }

    #[test]
    fn the_y_axis_runs_on_round_numbers_around_the_values() {
        let (lo, hi, ticks) = y_axis(4100.0, 4210.0);
        assert!(lo <= 4100.0 && hi >= 4210.0, "{lo} {hi}");
        assert!(ticks.len() >= 2 && ticks.len() <= 7, "{ticks:?}");
        let (lo, hi, _) = y_axis(86.5, 86.5);
        assert!(lo < 86.5 && hi > 86.5, "{lo} {hi}");
        let (lo, _, _) = y_axis(0.0, 3.0);
        assert_eq!(lo, 0.0);
    }

    #[test]
    fn fiscal_years_read_with_their_era() {
        assert_eq!(fiscal_year_label(2026, Lang::Ja), "2026年度（令和8年度）");
        assert_eq!(fiscal_year_label(2019, Lang::Ja), "2019年度（令和元年度）");
    }
}

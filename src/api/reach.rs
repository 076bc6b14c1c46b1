//! `/api/v1/reach` and `/api/v1/kpi`: measurements with their lineage, manual figures, the
//! plan's KPIs by fiscal year; JSON, or CSV with `Accept: text/csv`.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::{Caller, Role};
use super::problem::{parse_json, ApiResult, Problem};
use super::SharedState;
use crate::reach::{csv_field, KpiView};
use crate::store::reach::{self as store, Sample};

fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"))
}

fn csv_response(name: &str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReachQuery {
    /// Only this channel (`x`, `facebook`, `line`, `email`, `website`, …).
    pub channel: Option<String>,
    /// Only this metric, by the platform's own name.
    pub metric: Option<String>,
    /// From (RFC 3339); default 30 days ago.
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<String>,
    /// Until (RFC 3339, exclusive); default now.
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<String>,
    /// Only the reach of this announcement's posts (X, Facebook posts, LINE requests).
    pub announcement_id: Option<String>,
}

fn time_of(field: &str, v: &Option<String>, default: i64) -> ApiResult<i64> {
    match v {
        None => Ok(default),
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map(|d| d.timestamp_millis())
            .map_err(|_| Problem::invalid(field, "must be RFC 3339 with an offset")),
    }
}

/// The open-data CSV columns of `GET /api/v1/reach`, in order.
pub const REACH_CSV_COLUMNS: &str =
    "date,channel,metric,subject,period,value,source,api_version,collected_at,note";

/// Followers and views per channel over time, with each value's lineage: the platform's
/// metric name, API version, period, collection time, and whether it was measured (`api`),
/// counted by Noroshi (`daemon`) or entered (`manual`). With `Accept: text/csv`: one row per
/// day (Asia/Tokyo), channel, metric and subject, the day's latest value, UTF-8 with a header
/// row: `date,channel,metric,subject,period,value,source,api_version,collected_at,note`.
///
/// Role: viewer.
#[utoipa::path(get, path = "/api/v1/reach", operation_id = "listReach", tag = "reach",
    params(ReachQuery),
    responses((status = 200, description = "Measurements (JSON), or CSV with Accept: text/csv",
        content((Vec<Sample> = "application/json"), (String = "text/csv")))),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<SharedState>,
    caller: Caller,
    headers: HeaderMap,
    query: Result<Query<ReachQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    caller.require(Role::Viewer)?;
    let Query(q) = query.map_err(|e| Problem::invalid("query", e.body_text()))?;
    let now = crate::clock::now_ms();
    let since = time_of("since", &q.since, now - 30 * 86_400_000)?;
    let until = time_of("until", &q.until, now + 1)?;
    if let Some(id) = &q.announcement_id {
        if crate::store::announcements::get(&state.db, id)
            .await?
            .is_none()
        {
            return Err(Problem::not_found("announcement"));
        }
    }
    let mut samples = store::samples(
        &state.db,
        q.channel.as_deref(),
        q.metric.as_deref(),
        q.announcement_id.as_deref(),
        since,
        until,
    )
    .await?;
    // The site's page views are the whole site's, no announcement's.
    if q.announcement_id.is_none()
        && q.channel.as_deref().is_none_or(|c| c == "website")
        && q.metric.as_deref().is_none_or(|m| m == "page_views")
    {
        let day = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .unwrap_or_default()
                .with_timezone(&noroshi_channel_core::jst())
                .format("%Y-%m-%d")
                .to_string()
        };
        for (d, views) in store::site_views_by_day(&state.db, &day(since), &day(until)).await? {
            samples.push(Sample {
                channel: "website".into(),
                metric: "page_views".into(),
                value: views as f64,
                period: "day".into(),
                api_version: None,
                subject: None,
                collected_at: chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d")
                    .ok()
                    .and_then(|n| n.and_hms_opt(23, 59, 59))
                    .map(|n| n.and_utc().timestamp_millis() - 9 * 3_600_000)
                    .unwrap_or(now),
                source: "daemon".into(),
                note: None,
                entered_by: None,
            });
        }
    }
    if !wants_csv(&headers) {
        return Ok(Json(samples).into_response());
    }
    // One row per day, channel, metric and subject: the day's latest value.
    let mut rows: std::collections::BTreeMap<(String, String, String, String), Sample> =
        Default::default();
    for s in samples {
        let local = chrono::DateTime::from_timestamp_millis(s.collected_at)
            .unwrap_or_default()
            .with_timezone(&noroshi_channel_core::jst());
        let key = (
            local.format("%Y-%m-%d").to_string(),
            s.channel.clone(),
            s.metric.clone(),
            s.subject.clone().unwrap_or_default(),
        );
        rows.insert(key, s);
    }
    let mut csv = format!("{REACH_CSV_COLUMNS}\n");
    for ((date, channel, metric, subject), s) in rows {
        let collected = chrono::DateTime::from_timestamp_millis(s.collected_at)
            .unwrap_or_default()
            .with_timezone(&noroshi_channel_core::jst())
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
        let fields = [
            date,
            channel,
            metric,
            subject,
            s.period,
            format!("{}", s.value),
            s.source,
            s.api_version.unwrap_or_default(),
            collected,
            s.note.unwrap_or_default(),
        ];
        csv.push_str(
            &fields
                .iter()
                .map(|f| csv_field(f))
                .collect::<Vec<_>>()
                .join(","),
        );
        csv.push('\n');
    }
    Ok(csv_response("reach.csv", csv))
}

/// A figure no API gives (the newsletter readership survey), entered by an admin with its
/// source.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"channel": "newsletter", "metric": "readership_percent", "value": 86.5,
    "period": "fiscal_year", "collected_at": "2026-03-31T00:00:00+09:00", "note": "広報すざか読者アンケート 2025年度"}))]
pub struct ManualFigure {
    pub channel: String,
    pub metric: String,
    pub value: f64,
    /// lifetime | day | days_28 | fiscal_year
    pub period: String,
    /// When it was measured (RFC 3339); default now.
    #[serde(default)]
    pub collected_at: Option<String>,
    /// Where the figure comes from (required).
    pub note: String,
}

/// Enter a figure by hand, with its source; it keeps the same lineage as measured ones.
///
/// Role: admin.
#[utoipa::path(post, path = "/api/v1/reach", operation_id = "enterReachFigure", tag = "reach",
    request_body = ManualFigure,
    responses((status = 201, description = "Stored", body = Sample), (status = 422, description = "Invalid", body = Problem)),
    security(("bearer" = [])))]
pub async fn enter(
    State(state): State<SharedState>,
    caller: Caller,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<Sample>)> {
    caller.require(Role::Admin)?;
    let f: ManualFigure = parse_json(&body)?;
    for (field, v) in [("channel", &f.channel), ("metric", &f.metric)] {
        if v.trim().is_empty() || v.len() > 64 {
            return Err(Problem::invalid(field, "must be 1 to 64 characters"));
        }
    }
    if !matches!(
        f.period.as_str(),
        "lifetime" | "day" | "days_28" | "fiscal_year"
    ) {
        return Err(Problem::invalid(
            "period",
            "must be lifetime, day, days_28 or fiscal_year",
        ));
    }
    if f.note.trim().is_empty() {
        return Err(Problem::invalid(
            "note",
            "say where the figure comes from (the survey, the report)",
        ));
    }
    if !f.value.is_finite() {
        return Err(Problem::invalid("value", "must be a number"));
    }
    let sample = Sample {
        channel: f.channel.trim().into(),
        metric: f.metric.trim().into(),
        value: f.value,
        period: f.period,
        api_version: None,
        subject: None,
        collected_at: match &f.collected_at {
            None => crate::clock::now_ms(),
            Some(t) => chrono::DateTime::parse_from_rfc3339(t)
                .map(|d| d.timestamp_millis())
                .map_err(|_| Problem::invalid("collected_at", "must be RFC 3339 with an offset"))?,
        },
        source: "manual".into(),
        note: Some(f.note),
        entered_by: Some(caller.name.clone()),
    };
    store::insert(&state.db, std::slice::from_ref(&sample)).await?;
    Ok((StatusCode::CREATED, Json(sample)))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Collected {
    pub channel: String,
    pub samples: usize,
    /// The collector's failure (a token, a rate limit, a deprecated metric), if any.
    pub error: Option<String>,
}

/// Collect reach from every enabled channel now (besides the hourly schedule).
///
/// Role: admin.
#[utoipa::path(post, path = "/api/v1/reach/collect", operation_id = "collectReach", tag = "reach",
    responses((status = 200, description = "What each channel gave", body = Vec<Collected>)),
    security(("bearer" = [])))]
pub async fn collect(
    State(state): State<SharedState>,
    caller: Caller,
) -> ApiResult<Json<Vec<Collected>>> {
    caller.require(Role::Admin)?;
    state.site_views.flush(&state.db).await;
    let out = crate::reach::collect(&state).await;
    Ok(Json(
        out.into_iter()
            .map(|(channel, samples, error)| Collected {
                channel,
                samples,
                error,
            })
            .collect(),
    ))
}

/// The city plan's KPIs: each target, the value measured in its Japanese fiscal year
/// (April–March, Asia/Tokyo), the progress from the baseline, and the lineage of what it
/// was computed from. CSV with `Accept: text/csv`:
/// `fiscal_year,name,metric,baseline,target,value,progress,lineage`.
///
/// Role: viewer.
#[utoipa::path(get, path = "/api/v1/kpi", operation_id = "listKpis", tag = "reach",
    responses((status = 200, description = "KPIs (JSON), or CSV with Accept: text/csv",
        content((Vec<KpiView> = "application/json"), (String = "text/csv")))),
    security(("bearer" = [])))]
pub async fn kpi(
    State(state): State<SharedState>,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.require(Role::Viewer)?;
    state.site_views.flush(&state.db).await;
    let kpis = crate::reach::kpis(&state).await?;
    if !wants_csv(&headers) {
        return Ok(Json(kpis).into_response());
    }
    let mut csv = String::from("fiscal_year,name,metric,baseline,target,value,progress,lineage\n");
    for k in kpis {
        let lineage = k
            .lineage
            .iter()
            .map(|l| format!("{}={} ({}, {} samples)", l.term, l.value, l.how, l.samples))
            .collect::<Vec<_>>()
            .join("; ");
        let fields = [
            k.fiscal_year.to_string(),
            k.name,
            k.metric,
            k.baseline.map(|b| b.to_string()).unwrap_or_default(),
            k.target.to_string(),
            k.value.map(|v| v.to_string()).unwrap_or_default(),
            k.progress.map(|p| format!("{p:.4}")).unwrap_or_default(),
            lineage,
        ];
        csv.push_str(
            &fields
                .iter()
                .map(|f| csv_field(f))
                .collect::<Vec<_>>()
                .join(","),
        );
        csv.push('\n');
    }
    Ok(csv_response("kpi.csv", csv))
}

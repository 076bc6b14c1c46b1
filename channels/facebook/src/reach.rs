//! Reading Graph's reach answers: Page fields, insights values, recent post ids (CHANNELS.md §3.5).

use serde::Deserialize;

/// Page views, each asked for on its own so one retired name cannot blank the rest.
/// `page_impressions` and `page_fans` were retired on 2025-11-15 (code 100 since).
pub(crate) const PAGE_METRICS: &[&str] = &["page_media_view", "page_total_media_view_unique"];
/// Views of each recent post (`post_impressions` was retired with `page_impressions`).
pub(crate) const POST_METRIC: &str = "post_media_view";
/// Recent posts whose views are collected: each costs one call of the Page's small budget.
pub(crate) const RECENT_POSTS: usize = 5;

/// `{"followers_count":9560,…}`.
pub(crate) fn followers_count(body: &str) -> Option<i64> {
    #[derive(Deserialize)]
    struct Page {
        followers_count: Option<i64>,
    }
    serde_json::from_str::<Page>(body).ok()?.followers_count
}

/// The newest value of `metric` in an insights answer. Daily metrics list one value per
/// Pacific-time day, oldest first; lifetime metrics list one.
pub(crate) fn last_value(body: &str, metric: &str) -> Result<Option<i64>, serde_json::Error> {
    #[derive(Deserialize)]
    struct Insights {
        #[serde(default)]
        data: Vec<Metric>,
    }
    #[derive(Deserialize)]
    struct Metric {
        name: String,
        #[serde(default)]
        values: Vec<Value>,
    }
    #[derive(Deserialize)]
    struct Value {
        #[serde(default)]
        value: serde_json::Value,
    }
    let insights: Insights = serde_json::from_str(body)?;
    Ok(insights
        .data
        .into_iter()
        .find(|m| m.name == metric)
        .and_then(|m| m.values.into_iter().last())
        .and_then(|v| v.value.as_i64()))
}

/// Ids from a `/posts` answer.
pub(crate) fn post_ids(body: &str) -> Vec<String> {
    #[derive(Deserialize)]
    struct Posts {
        #[serde(default)]
        data: Vec<Post>,
    }
    #[derive(Deserialize)]
    struct Post {
        id: String,
    }
    serde_json::from_str::<Posts>(body)
        .map(|p| p.data.into_iter().map(|p| p.id).collect())
        .unwrap_or_default()
}

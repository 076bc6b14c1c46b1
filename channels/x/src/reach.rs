//! Reach for X: followers from `users/me`, views (`impression_count`) per recent own post.

use chrono::{DateTime, Utc};
use noroshi_channel_core::{DeliveryError, ReachSample};

use crate::client::XChannel;

/// How many recent own posts `fetch_reach` reads views for (one `GET /2/tweets` call).
pub const RECENT_POSTS_FOR_REACH: u32 = 20;

fn sample(
    metric: &str,
    value: i64,
    subject: Option<String>,
    collected_at: DateTime<Utc>,
) -> ReachSample {
    ReachSample {
        metric: metric.to_string(),
        value,
        api_version: Some("2".to_string()),
        subject,
        collected_at,
    }
}

impl XChannel {
    /// `followers_count` of the account (`GET /2/users/me?user.fields=public_metrics`).
    pub async fn followers(&self) -> Result<i64, DeliveryError> {
        let v = self.users_me(true).await?;
        v["data"]["public_metrics"]["followers_count"]
            .as_i64()
            .ok_or_else(|| DeliveryError::transient("users/me answer has no followers_count"))
    }

    /// `public_metrics.impression_count` per post id (`GET /2/tweets?ids=…`, ≤ 100 ids).
    /// Ids X cannot return (deleted posts) are left out.
    pub async fn impressions(&self, ids: &[String]) -> Result<Vec<(String, i64)>, DeliveryError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(100) {
            let mut url = self.api_url("/2/tweets")?;
            url.query_pairs_mut()
                .append_pair("ids", &chunk.join(","))
                .append_pair("tweet.fields", "public_metrics");
            let v = self.get_json(url, "GET /2/tweets").await?;
            for t in v["data"].as_array().into_iter().flatten() {
                if let (Some(id), Some(n)) = (
                    t["id"].as_str(),
                    t["public_metrics"]["impression_count"].as_i64(),
                ) {
                    out.push((id.to_string(), n));
                }
            }
        }
        Ok(out)
    }

    pub(crate) async fn collect_reach(&self) -> Result<Vec<ReachSample>, DeliveryError> {
        let followers = self.followers().await?;
        let mut samples = vec![sample("followers_count", followers, None, self.now())];
        let recent = self
            .own_recent_posts(None, RECENT_POSTS_FOR_REACH)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect::<Vec<_>>();
        if !recent.is_empty() {
            for (id, n) in self.impressions(&recent).await? {
                samples.push(sample("impression_count", n, Some(id), self.now()));
            }
        }
        Ok(samples)
    }
}

//! The disaster desk: what follows an alert (its all-clear or correction), CAP intake and
//! output, templates in the official wording. The HTTP side is `api/desk.rs`; alerts are
//! stored by `store/alerts.rs`; disaster mode is the dispatcher's
//! (`Dispatcher::sync_disaster_mode`).

pub mod cap;
pub mod feeds;
pub mod templates;

use crate::accept::{Refusal, Submission};
use crate::store::alerts::AlertKind;
use crate::store::announcements::AnnouncementRow;

/// The body of `POST /api/v1/announcements/{id}/all-clear`: an all-clear (解除) by default,
/// or a correction (訂正) with the corrected text.
#[derive(Clone, Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FollowUp {
    /// all_clear (default) | correction
    #[serde(default)]
    #[schema(example = "all_clear")]
    pub kind: Option<String>,
    /// Defaults to 【解除】 / 【訂正】 and the alert's title.
    #[serde(default)]
    pub title: Option<String>,
    /// An all-clear defaults to a sentence saying the alert is lifted; a correction needs
    /// its corrected text.
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub link: Option<String>,
}

/// The submission that follows `original` on the same channels, through the same fast lane,
/// as a drill when the original was one.
pub fn follow_up(
    original: &AnnouncementRow,
    channels: Vec<String>,
    f: &FollowUp,
) -> Result<(Submission, AlertKind), Refusal> {
    let kind = match f.kind.as_deref().unwrap_or("all_clear") {
        "all_clear" => AlertKind::AllClear,
        "correction" => AlertKind::Correction,
        other => {
            return Err(Refusal::invalid(
                "kind",
                format!("`{other}` is not one of all_clear, correction"),
            ))
        }
    };
    let title = match (&f.title, kind) {
        (Some(t), _) => t.clone(),
        (None, AlertKind::Correction) => format!("【訂正】{}", original.title),
        (None, _) => format!("【解除】{}", original.title),
    };
    let body = match (&f.body, kind) {
        (Some(b), _) => b.clone(),
        (None, AlertKind::Correction) => {
            return Err(Refusal::invalid(
                "body",
                "a correction needs the corrected text",
            ))
        }
        (None, _) => format!(
            "{}を解除しました。引き続き身の回りの安全に注意してください。",
            original.title
        ),
    };
    let submission = Submission {
        title,
        body,
        link: f.link.clone().or_else(|| original.link.clone()),
        priority: Some(noroshi_channel_core::Priority::Disaster),
        channels: Some(channels),
        scheduled_at: None,
        overrides: Default::default(),
        lang: Some(original.lang.clone()),
        variants: Default::default(),
        tags: Vec::new(),
        template: None,
        params: Default::default(),
        exercise: original.exercise,
        images: Vec::new(),
    };
    Ok((submission, kind))
}

//! Plain data that crosses the channel boundary.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Clock;

/// The lane an announcement travels in. Ordered: `Disaster` outranks `Urgent` outranks
/// `Normal`, everywhere (queue claim order, reserved workers, rate-limit reserve).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    #[default]
    Normal,
    Urgent,
    Disaster,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Normal => "normal",
            Priority::Urgent => "urgent",
            Priority::Disaster => "disaster",
        }
    }
    /// The number stored in the queue: higher is claimed first.
    pub fn lane(self) -> i32 {
        match self {
            Priority::Normal => 0,
            Priority::Urgent => 1,
            Priority::Disaster => 2,
        }
    }
    pub fn from_lane(lane: i32) -> Priority {
        match lane {
            2.. => Priority::Disaster,
            1 => Priority::Urgent,
            _ => Priority::Normal,
        }
    }
    pub fn parse(s: &str) -> Option<Priority> {
        match s {
            "normal" => Some(Priority::Normal),
            "urgent" => Some(Priority::Urgent),
            "disaster" => Some(Priority::Disaster),
            _ => None,
        }
    }
}

/// What an adapter renders: the announcement as accepted, with the per-channel override
/// already picked for this channel. A drill's marker (`【訓練】`) is already in `title`
/// and `text_override` when `exercise` is true.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Announcement {
    /// UUIDv7, as text.
    pub id: String,
    pub title: String,
    pub body: String,
    /// A link the announcement points at (the city's own page about it).
    pub link: Option<String>,
    pub priority: Priority,
    /// BCP 47 language tag of `title`/`body` (`ja` by default).
    pub lang: String,
    pub tags: Vec<String>,
    /// A drill (訓練): adapters may route it to their test target.
    pub exercise: bool,
    /// `overrides.{channel}.text` of the submission, for this channel.
    pub text_override: Option<String>,
    /// HTTPS image URLs to attach where the channel can.
    pub images: Vec<String>,
    /// Each image's alternative text, in the order of `images` (empty: none given). Where
    /// a channel can carry it, it does (the website's `alt`); the website shows no image
    /// that lacks it.
    #[serde(default)]
    pub image_alts: Vec<String>,
    /// This announcement's page on the city website channel, when that channel is
    /// configured: the target of "shorten and link".
    pub page_url: Option<String>,
    /// When it is published (the scheduled time, or acceptance).
    pub published_at: DateTime<Utc>,
    /// The same announcement in other languages (`en`, `ja-easy` = やさしい日本語, …), in a
    /// stable order; a drill's marker is already in each title. Each adapter delivers them
    /// as its configuration says (email: the subscriber's language; LINE: extra messages;
    /// the website: a page per language; X and Facebook: the languages configured for them).
    #[serde(default)]
    pub variants: Vec<LangText>,
    /// A disaster announcement's CAP 1.2 message, for channels that publish CAP (the
    /// website's `cap/` folder and alert feed).
    #[serde(default)]
    pub cap: Option<CapMessage>,
    /// The announcement whose page this one updates in place (a CAP `Update`, a
    /// correction): channels that can edit (the website) edit that page; the others post.
    #[serde(default)]
    pub replaces: Option<String>,
}

/// A CAP 1.2 message as a publishing channel needs it: the document and what its feed
/// entry shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapMessage {
    /// The CAP 1.2 document (`application/cap+xml`), never changed after publication.
    pub xml: String,
    /// A stable, path-safe file name ending `.xml`.
    pub file_name: String,
    pub identifier: String,
    pub sender: String,
    /// `senderName`, the feed entry's author.
    pub sender_name: String,
    /// `headline`, the feed entry's title.
    pub headline: String,
    /// The start of `description`.
    pub summary: String,
    pub sent: DateTime<Utc>,
    /// When it leaves the feed of active alerts; none = when it is superseded.
    pub expires: Option<DateTime<Utc>>,
    /// File names of the earlier messages it replaces (an Update, a Cancel).
    pub supersedes: Vec<String>,
    /// `status`: Actual, Exercise, Test.
    pub status: String,
}
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LangText {
    /// BCP 47 tag (`en`, `ja-easy`).
    pub lang: String,
    pub title: String,
    pub body: String,
}

impl Announcement {
    /// This announcement in `variant`'s words (its own override and other variants left
    /// out): what a channel renders to post that language too.
    pub fn as_variant(&self, variant: &LangText) -> Announcement {
        Announcement {
            title: variant.title.clone(),
            body: variant.body.clone(),
            lang: variant.lang.clone(),
            text_override: None,
            variants: Vec::new(),
            ..self.clone()
        }
    }

    /// Renders the announcement with `render`, then each variant whose language is in
    /// `languages` the same way, as more units (their own posts) after the first's. For
    /// channels that post each language separately (X, a Facebook Page).
    pub fn render_in_languages(
        &self,
        languages: &[String],
        render: impl Fn(&Announcement) -> Result<Rendering, crate::RenderError>,
    ) -> Result<Rendering, crate::RenderError> {
        let mut rendering = render(self)?;
        for v in &self.variants {
            if !languages.iter().any(|l| l.eq_ignore_ascii_case(&v.lang)) {
                continue;
            }
            let other = render(&self.as_variant(v)).map_err(|mut e| {
                e.message = format!("the {} version: {}", v.lang, e.message);
                e
            })?;
            rendering.units.extend(other.units);
            rendering.preview.text.push_str("\n\n");
            rendering.preview.text.push_str(&other.preview.text);
            rendering
                .preview
                .warnings
                .push(format!("the {} version is posted separately", v.lang));
        }
        Ok(rendering)
    }

    /// The text for `lang`: the variant of that language, or of its primary subtag (`en`
    /// for `en-US`), else the announcement's own.
    pub fn in_language(&self, lang: &str) -> (&str, &str) {
        let primary = lang.split('-').next().unwrap_or(lang);
        self.variants
            .iter()
            .find(|v| v.lang.eq_ignore_ascii_case(lang))
            .or_else(|| {
                self.variants
                    .iter()
                    .find(|v| v.lang.eq_ignore_ascii_case(primary))
            })
            .map(|v| (v.title.as_str(), v.body.as_str()))
            .unwrap_or((self.title.as_str(), self.body.as_str()))
    }
}

/// The result of rendering: the units to deliver and what a person previewing sees.
#[derive(Clone, Debug, Serialize)]
pub struct Rendering {
    /// One payload per delivery, stored at accept time and handed back to `deliver`.
    pub units: Vec<serde_json::Value>,
    pub preview: Preview,
}

/// What the preview API shows for one channel.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Preview {
    /// The text as the platform will show it (for a thread, the posts joined by a blank
    /// line; for email, the plain-text part).
    pub text: String,
    /// Length of `text` by the channel's own rule.
    pub length: usize,
    pub limit: Option<usize>,
    /// How `length` was counted: `twitter-text weighted`, `UTF-16 code units`, `characters`.
    pub length_rule: String,
    /// Something the author should know: shortened, split into a thread, image dropped.
    pub warnings: Vec<String>,
}

/// Who a channel's units go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    /// Each rendered unit is one delivery.
    Fixed,
    /// Each rendered unit is sent to every active email subscriber, one delivery each.
    EmailSubscribers,
}

/// A channel's default pacing. The daemon builds its rate limiter and worker pool from it.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Sustained requests per second.
    pub rate_per_second: f64,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
    /// Attempts in flight at once.
    pub concurrency: usize,
}

/// `[channels.NAME.delivery]`: per-channel queue and pacing settings, common to every
/// adapter. Unset fields fall back to the adapter's [`Limits`] and the daemon's defaults.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// Sustained requests per second to this platform.
    pub rate_per_second: Option<f64>,
    /// Burst above the sustained rate.
    pub burst: Option<u32>,
    /// Share of the rate and of the workers kept free for disaster deliveries (0.0 – 0.9).
    pub disaster_reserve: Option<f64>,
    /// Disaster sends that may go at once, whatever normal work has used (default 5).
    pub disaster_burst: Option<u32>,
    /// Attempts in flight at once.
    pub concurrency: Option<usize>,
    /// Attempts before a delivery is `failed` (rate-limit waits do not count).
    pub max_attempts: Option<u32>,
}

/// One queued unit handed to `deliver`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeliveryUnit {
    /// The payload `render` produced.
    pub payload: serde_json::Value,
    /// For `Audience::EmailSubscribers`, the subscriber this copy goes to.
    pub recipient: Option<Recipient>,
}

/// An email subscriber as the adapter needs it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Recipient {
    pub address: String,
    pub lang: String,
    /// The HTTPS one-click unsubscribe URL (RFC 8058), carrying the subscriber's token.
    pub unsubscribe_url: String,
    /// The subscriber's opaque unsubscribe token, for a `mailto:` variant.
    pub unsubscribe_token: String,
}

/// Everything an attempt needs besides the unit.
#[derive(Clone, Debug)]
pub struct DeliveryContext {
    pub delivery_id: String,
    pub announcement_id: String,
    /// Stable across every attempt of this delivery (a UUID): LINE's `X-Line-Retry-Key`.
    pub idempotency_key: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub priority: Priority,
    pub exercise: bool,
    /// The API request that accepted the announcement, for log correlation.
    pub request_id: Option<String>,
    /// When this delivery's first attempt started (kept by the daemon across restarts):
    /// how far back a reconcile must look, and how old a retry key is. On a first attempt,
    /// this attempt's start; `None` only when the caller does not know.
    pub first_attempt_at: Option<DateTime<Utc>>,
}

/// A successful attempt.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Receipt {
    /// The platform's id for what was created (post id, request id, SMTP queue id, URL).
    pub remote_id: Option<String>,
    /// The platform said this exact request was accepted before (LINE 409 with retry key).
    pub already_sent: bool,
    /// A short note for the delivery log.
    pub note: Option<String>,
}

/// One reach measurement, named as the platform names it (lineage for KPIs).
#[derive(Clone, Debug, Serialize)]
pub struct ReachSample {
    /// `followers`, `followers_count`, `page_media_view`, `impression_count`, …
    pub metric: String,
    pub value: i64,
    /// The platform API version the value came from (`v25.0`, `2`), when it has one.
    pub api_version: Option<String>,
    /// The post or message the value is about; `None` for the whole account.
    pub subject: Option<String>,
    pub collected_at: DateTime<Utc>,
}

/// What an adapter has observed of its platform, shown in `GET /api/v1/channels`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AdapterStatus {
    pub budgets: Vec<Budget>,
    /// Something an operator should act on soon (low quota, a token expiring in 5 days).
    pub warnings: Vec<String>,
}

/// A platform budget: requests left in a window, messages left this month.
#[derive(Clone, Debug, Serialize)]
pub struct Budget {
    pub name: String,
    pub remaining: Option<i64>,
    pub limit: Option<i64>,
    pub resets_at: Option<DateTime<Utc>>,
}

/// What adapters get when they are built.
#[derive(Clone)]
pub struct BuildEnv {
    /// One shared HTTP client (rustls with ring, connect and request timeouts set).
    pub http: reqwest::Client,
    /// The daemon's data directory (`data/`).
    pub data_dir: PathBuf,
    /// The daemon's public base URL (`http://127.0.0.1:8080/`), for links back to it.
    pub public_base_url: String,
    /// Where adapters read the time: the daemon's own clock ([`crate::system_clock`]
    /// outside it, a controlled one in tests).
    pub clock: Clock,
}

impl std::fmt::Debug for BuildEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildEnv")
            .field("http", &self.http)
            .field("data_dir", &self.data_dir)
            .field("public_base_url", &self.public_base_url)
            .finish_non_exhaustive()
    }
}

/// The timeout the daemon's shared HTTP client uses for a whole request.
pub const HTTP_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

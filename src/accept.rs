//! Accepting an announcement: validate the submission, render it for every selected
//! channel, and plan its deliveries. Shared by submission (which stores the plan) and
//! preview (which only shows it). Nothing is stored here.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use noroshi_channel_core::{Announcement, Audience, Channel, Preview, Priority};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::announcements::{NewAnnouncement, NewChannelPlan};

/// The body of `POST /api/v1/announcements` and `POST /api/v1/preview`.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "title": "年末年始のごみ収集について",
    "body": "12月31日（木）から1月3日（日）まではごみ収集を休みます。1月4日（月）から通常どおり収集します。",
    "link": "https://www.city.example.lg.jp/kurashi/gomi/nenmatsu.html",
    "channels": ["website", "line", "x", "facebook", "email"],
    "tags": ["環境課"],
    "variants": {"en": {"title": "Garbage collection over the New Year holidays", "body": "There is no collection from 31 December to 3 January. Collection resumes on 4 January."}}
}))]
pub struct Submission {
    /// Headline (required unless a template gives it; at most 200 characters).
    #[serde(default)]
    pub title: String,
    /// The announcement's text (required unless a template gives it).
    #[serde(default)]
    pub body: String,
    /// An http(s) link the announcement points at.
    #[serde(default)]
    pub link: Option<String>,
    /// normal | urgent | disaster (disaster needs the disaster or admin role).
    #[serde(default)]
    #[schema(schema_with = crate::api::schema::priority, required = false)]
    pub priority: Option<Priority>,
    /// Channel names; default every enabled channel.
    #[serde(default)]
    pub channels: Option<Vec<String>>,
    /// RFC 3339 with an offset; absent = now.
    #[serde(default)]
    pub scheduled_at: Option<String>,
    /// Per-channel text: `{ "x": { "text": "…" } }`.
    #[serde(default)]
    pub overrides: BTreeMap<String, ChannelOverride>,
    /// BCP 47 language of title and body (default `ja`).
    #[serde(default)]
    pub lang: Option<String>,
    /// Other languages: `{ "en": { "title": "…", "body": "…" } }` (`ja-easy` = やさしい日本語).
    #[serde(default)]
    pub variants: BTreeMap<String, Variant>,
    /// Departments and campaigns (KPIs count by tag).
    #[serde(default)]
    pub tags: Vec<String>,
    /// A named template (`config/templates/NAME.toml`): it gives the title, the body, the
    /// language variants and the priority; leave `title` and `body` out.
    #[serde(default)]
    #[schema(example = "evacuation_level4")]
    pub template: Option<String>,
    /// The template's placeholders, e.g. `{"area": "井上地区", "shelter": "須坂市役所"}`.
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// true = a drill (訓練): every output is marked.
    #[serde(default)]
    pub exercise: bool,
    /// Images to attach where a channel can: an https URL, or `{"url": …, "alt": …}` with
    /// its alternative text for screen-reader users (the website shows only images that
    /// have it).
    #[serde(default)]
    pub images: Vec<Image>,
}

/// An image of a submission: its URL alone, or with its alternative text.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Image {
    Url(String),
    Described {
        url: String,
        /// What the image shows, for people who cannot see it (at most 1,000 characters).
        #[serde(default)]
        alt: String,
    },
}

/// X's limit for an image's description, the strictest of the channels.
const MAX_ALT: usize = 1000;

impl Image {
    pub fn url(&self) -> &str {
        match self {
            Image::Url(u) | Image::Described { url: u, .. } => u,
        }
    }
    pub fn alt(&self) -> &str {
        match self {
            Image::Url(_) => "",
            Image::Described { alt, .. } => alt.trim(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelOverride {
    pub text: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub title: String,
    pub body: String,
}

/// Why a submission was not accepted: a domain answer, no HTTP in it. The API maps it to
/// problem+json (`422` naming the field, `403` for a role); CAP intake, schedules,
/// templates and the console will map it their own way.
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    /// A field's value is not acceptable.
    Invalid { field: String, detail: String },
    /// The caller's role may not do this.
    NotAllowed { field: String, detail: String },
    /// One or more channels cannot carry it, each with its rule.
    Channels(Vec<ChannelRefusal>),
}

/// One channel's refusal.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelRefusal {
    /// The submission field to change (`body`, `overrides.x.text`, `channels.line`).
    pub field: String,
    pub detail: String,
    pub channel: Option<String>,
    /// The channel's rule (`max_weighted_length`, …).
    pub rule: Option<String>,
}

impl Refusal {
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Refusal {
        let field = field.into();
        let detail = format!("{field}: {}", detail.into());
        Refusal::Invalid { field, detail }
    }
}

pub type Accepted<T> = Result<T, Refusal>;

/// What acceptance needs to know of the daemon.
pub struct AcceptContext<'a> {
    /// Enabled channels by name.
    pub channels: &'a [Arc<dyn Channel>],
    /// Every channel name that exists (enabled or not).
    pub known: &'a [String],
    /// The website's base URL when that channel is enabled ("shorten and link" target).
    pub website_base_url: Option<&'a str>,
    pub exercise_marker: &'a str,
    pub can_send_disaster: bool,
    /// `[security] allow_private_fetch`: images on literal loopback, private, … addresses
    /// are accepted (test setups with local fakes). Off: refused, naming `images[i]`.
    pub allow_private_fetch: bool,
    /// The named templates a submission may use.
    pub templates: &'a crate::desk::templates::Templates,
    /// This announcement's CAP 1.2 message, for the channels that publish CAP.
    pub cap_message: Option<&'a noroshi_channel_core::CapMessage>,
    /// The announcement whose page this one updates in place (an update, a correction).
    pub replaces: Option<&'a str>,
}

/// A drill's marker in another language: `[EXERCISE]` in English, 【くんれん】 in やさしい
/// 日本語, the configured marker (【訓練】) elsewhere, so a drill is unmistakable in every
/// language.
fn variant_marker(marker: &str, lang: &str) -> String {
    if marker.is_empty() {
        String::new()
    } else if lang == "en" || lang.starts_with("en-") {
        "[EXERCISE] ".to_string()
    } else if lang == "ja-easy" {
        "【くんれん】".to_string()
    } else {
        marker.to_string()
    }
}

/// A submission that names a template, with the template's title, body, variants and
/// priority filled in (the submission's own variants and priority win).
fn with_template(
    s: &Submission,
    templates: &crate::desk::templates::Templates,
) -> Accepted<Submission> {
    let name = s.template.as_deref().unwrap_or_default();
    if templates.get(name).is_none() {
        return Err(Refusal::invalid(
            "template",
            if templates.is_empty() {
                format!("no template named `{name}`: this daemon has no templates ([disaster] templates_dir)")
            } else {
                format!(
                    "no template named `{name}` (there are: {})",
                    templates.names().join(", ")
                )
            },
        ));
    }
    if !s.title.trim().is_empty() {
        return Err(Refusal::invalid(
            "title",
            format!("comes from template `{name}`; leave it out"),
        ));
    }
    if !s.body.trim().is_empty() {
        return Err(Refusal::invalid(
            "body",
            format!("comes from template `{name}`; leave it out"),
        ));
    }
    let r = templates.render(name, &s.params)?;
    let mut filled = s.clone();
    filled.title = r.title;
    filled.body = r.body;
    filled.priority = Some(s.priority.unwrap_or(r.priority));
    let mut variants = r.variants;
    variants.extend(s.variants.clone());
    filled.variants = variants;
    filled.template = None;
    filled.params = Default::default();
    Ok(filled)
}

/// One channel's part of the plan.
pub struct ChannelPlan {
    pub channel: String,
    pub preview: Preview,
    pub units: Vec<serde_json::Value>,
    pub audience: Audience,
}

pub struct Plan {
    pub announcement: NewAnnouncement,
    pub channels: Vec<ChannelPlan>,
    pub priority: Priority,
    /// The other languages, as accepted (a template's, or the submission's).
    pub variants: BTreeMap<String, Variant>,
}

const MAX_TITLE: usize = 200;
const MAX_BODY: usize = 100_000;
const MAX_TAGS: usize = 20;

/// The request's canonical hash: the same JSON (whatever its key order or spacing) gives
/// the same hash, for `Idempotency-Key`.
pub fn request_hash(s: &Submission) -> String {
    let canonical = serde_json::to_value(s)
        .map(|v| v.to_string())
        .unwrap_or_default();
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

fn check_url(field: &str, value: &str, https_only: bool) -> Accepted<()> {
    match url::Url::parse(value) {
        Ok(u) if u.scheme() == "https" || (!https_only && u.scheme() == "http") => Ok(()),
        Ok(_) => Err(Refusal::invalid(
            field,
            if https_only {
                "must be an https URL"
            } else {
                "must be an http or https URL"
            },
        )),
        Err(e) => Err(Refusal::invalid(field, format!("is not a URL ({e})"))),
    }
}

pub fn check_lang(field: &str, lang: &str) -> Accepted<()> {
    let ok = !lang.is_empty()
        && lang.len() <= 35
        && lang
            .split('-')
            .all(|p| !p.is_empty() && p.len() <= 8 && p.chars().all(|c| c.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(Refusal::invalid(
            field,
            format!("`{lang}` is not a language tag such as ja, en, ja-easy"),
        ))
    }
}

/// Validates and renders. Every refusal names its field; rendering refusals name the
/// channel and its rule, all of them at once.
pub fn plan(
    s: &Submission,
    ctx: &AcceptContext<'_>,
    id: String,
    created_by: &str,
    idempotency_key: Option<String>,
    request_id: Option<String>,
    now: DateTime<Utc>,
) -> Accepted<Plan> {
    let original = s;
    let filled;
    let s = if s.template.is_some() {
        filled = with_template(s, ctx.templates)?;
        &filled
    } else if !s.params.is_empty() {
        return Err(Refusal::invalid("params", "only used with a template"));
    } else {
        s
    };
    let title = s.title.trim();
    if title.is_empty() {
        return Err(Refusal::invalid("title", "must not be empty"));
    }
    if title.chars().count() > MAX_TITLE {
        return Err(Refusal::invalid(
            "title",
            format!("must be at most {MAX_TITLE} characters"),
        ));
    }
    if s.body.trim().is_empty() {
        return Err(Refusal::invalid("body", "must not be empty"));
    }
    if s.body.chars().count() > MAX_BODY {
        return Err(Refusal::invalid(
            "body",
            format!("must be at most {MAX_BODY} characters"),
        ));
    }
    if let Some(link) = &s.link {
        check_url("link", link, false)?;
    }
    for (i, image) in s.images.iter().enumerate() {
        let field = format!("images[{i}]");
        if image.alt().chars().count() > MAX_ALT {
            return Err(Refusal::invalid(
                format!("{field}.alt"),
                format!("must be at most {MAX_ALT} characters"),
            ));
        }
        let image = image.url();
        check_url(&field, image, true)?;
        // Adapters fetch images: a submitter's URL must not make them probe the city's
        // network. Names are checked where they are resolved, when the image is fetched.
        if !ctx.allow_private_fetch {
            if let Some(refused) = noroshi_channel_core::fetch::literal_host_refusal(image) {
                return Err(Refusal::invalid(
                    field,
                    format!("must be on a public host: {refused}"),
                ));
            }
        }
    }
    let priority = s.priority.unwrap_or_default();
    if priority == Priority::Disaster && !ctx.can_send_disaster {
        return Err(Refusal::NotAllowed {
            field: "priority".into(),
            detail: "priority: only the disaster or admin role may send disaster announcements"
                .into(),
        });
    }
    let lang = s.lang.clone().unwrap_or_else(|| "ja".to_string());
    check_lang("lang", &lang)?;
    for (code, v) in &s.variants {
        check_lang(&format!("variants.{code}"), code)?;
        if v.title.trim().is_empty() {
            return Err(Refusal::invalid(
                format!("variants.{code}.title"),
                "must not be empty",
            ));
        }
        if v.body.trim().is_empty() {
            return Err(Refusal::invalid(
                format!("variants.{code}.body"),
                "must not be empty",
            ));
        }
    }
    if s.tags.len() > MAX_TAGS {
        return Err(Refusal::invalid("tags", format!("at most {MAX_TAGS} tags")));
    }
    for (i, t) in s.tags.iter().enumerate() {
        if t.trim().is_empty() || t.chars().count() > 64 {
            return Err(Refusal::invalid(
                format!("tags[{i}]"),
                "must be 1 to 64 characters",
            ));
        }
    }
    let scheduled_at = match &s.scheduled_at {
        None => None,
        Some(text) => {
            let at = DateTime::parse_from_rfc3339(text)
                .map_err(|_| {
                    Refusal::invalid(
                        "scheduled_at",
                        "must be RFC 3339 with an offset, e.g. 2026-12-01T09:00:00+09:00",
                    )
                })?
                .with_timezone(&Utc);
            // A time already past means "now"; a future time holds the deliveries.
            Some(at).filter(|at| *at > now)
        }
    };
    // Which channels.
    let selected: Vec<String> = match &s.channels {
        None => ctx.channels.iter().map(|c| c.name().to_string()).collect(),
        Some(list) => {
            if list.is_empty() {
                return Err(Refusal::invalid(
                    "channels",
                    "must name at least one channel",
                ));
            }
            let mut seen = Vec::new();
            for (i, name) in list.iter().enumerate() {
                let field = format!("channels[{i}]");
                if !ctx.known.contains(name) {
                    return Err(Refusal::invalid(
                        field,
                        format!("unknown channel `{name}` (known: {})", ctx.known.join(", ")),
                    ));
                }
                if !ctx.channels.iter().any(|c| c.name() == name) {
                    return Err(Refusal::invalid(
                        field,
                        format!("channel `{name}` is not enabled in this daemon's configuration"),
                    ));
                }
                if seen.contains(name) {
                    return Err(Refusal::invalid(
                        field,
                        format!("channel `{name}` is listed twice"),
                    ));
                }
                seen.push(name.clone());
            }
            seen
        }
    };
    if selected.is_empty() {
        return Err(Refusal::invalid(
            "channels",
            "no channel is enabled in this daemon's configuration",
        ));
    }
    for (name, o) in &s.overrides {
        let field = format!("overrides.{name}");
        if !selected.contains(name) {
            return Err(Refusal::invalid(
                field,
                format!("channel `{name}` is not selected"),
            ));
        }
        if o.text.trim().is_empty() {
            return Err(Refusal::invalid(
                format!("{field}.text"),
                "must not be empty",
            ));
        }
    }
    let marker = if s.exercise { ctx.exercise_marker } else { "" };
    let published_at = scheduled_at.unwrap_or(now);
    let page_url = ctx
        .website_base_url
        .map(|base| noroshi_website::page_url(base, ctx.replaces.unwrap_or(&id)));
    let mut channels = Vec::new();
    let mut refusals = Vec::new();
    for name in &selected {
        let channel = ctx
            .channels
            .iter()
            .find(|c| c.name() == name)
            .expect("selected channels are enabled");
        let a = Announcement {
            id: id.clone(),
            title: format!("{marker}{title}"),
            body: s.body.clone(),
            link: s.link.clone(),
            priority,
            lang: lang.clone(),
            tags: s.tags.clone(),
            exercise: s.exercise,
            text_override: s.overrides.get(name).map(|o| format!("{marker}{}", o.text)),
            images: s.images.iter().map(|i| i.url().to_string()).collect(),
            image_alts: s.images.iter().map(|i| i.alt().to_string()).collect(),
            page_url: page_url.clone(),
            published_at,
            variants: s
                .variants
                .iter()
                .map(|(lang, v)| noroshi_channel_core::LangText {
                    lang: lang.clone(),
                    title: format!("{}{}", variant_marker(marker, lang), v.title),
                    body: v.body.clone(),
                })
                .collect(),
            cap: ctx.cap_message.cloned(),
            replaces: ctx.replaces.map(str::to_string),
        };
        match channel.render(&a) {
            Ok(r) if r.units.is_empty() => refusals.push(ChannelRefusal {
                field: format!("channels.{name}"),
                detail: format!("channel {name} rendered nothing to send"),
                channel: Some(name.clone()),
                rule: Some("empty".into()),
            }),
            Ok(r) => channels.push(ChannelPlan {
                channel: name.clone(),
                preview: r.preview,
                units: r.units,
                audience: channel.audience_for(&a),
            }),
            Err(e) => refusals.push(ChannelRefusal {
                field: if s.overrides.contains_key(name) {
                    format!("overrides.{name}.text")
                } else {
                    "body".to_string()
                },
                detail: format!("channel {name} refuses it ({}): {}", e.rule, e.message),
                channel: Some(name.clone()),
                rule: Some(e.rule.clone()),
            }),
        }
    }
    if !refusals.is_empty() {
        return Err(Refusal::Channels(refusals));
    }
    // Stored as submitted (a template and its parameters, not the words they gave).
    let request = serde_json::to_string(original).unwrap_or_default();
    let announcement = NewAnnouncement {
        id,
        title: title.to_string(),
        body: s.body.clone(),
        link: s.link.clone(),
        priority: priority.as_str().to_string(),
        lane: priority.lane(),
        lang,
        exercise: s.exercise,
        status: if scheduled_at.is_some() {
            "scheduled"
        } else {
            "queued"
        }
        .to_string(),
        request,
        created_by: created_by.to_string(),
        idempotency_key,
        request_hash: request_hash(original),
        request_id,
        scheduled_at: scheduled_at.map(|t| t.timestamp_millis()),
        created_at: now.timestamp_millis(),
        // Every disaster announcement is an alert (a drill's is never live); the disaster
        // desk sets what it follows and its CAP identity.
        alert: (priority == Priority::Disaster)
            .then(|| crate::store::alerts::NewAlert::alert(!s.exercise)),
    };
    Ok(Plan {
        announcement,
        channels,
        priority,
        variants: s.variants.clone(),
    })
}

impl ChannelPlan {
    /// The stored form: units plus the preview, so the API can show what was sent.
    pub fn to_store(&self) -> NewChannelPlan {
        let rendering = serde_json::json!({ "units": self.units, "preview": self.preview });
        NewChannelPlan {
            channel: self.channel.clone(),
            rendering: rendering.to_string(),
            audience: match self.audience {
                Audience::Fixed => "fixed",
                Audience::EmailSubscribers => "email_subscribers",
            }
            .to_string(),
            units: self.units.len(),
        }
    }
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::problem::{ApiResult, Problem};
    use noroshi_channel_core::BuildEnv;

    fn website() -> Arc<dyn Channel> {
        let dir = tempfile::tempdir().unwrap();
        let cfg = noroshi_website::Config {
            output_dir: dir.path().join("site"),
            ..Default::default()
        };
        let env = BuildEnv {
            http: reqwest::Client::new(),
            data_dir: dir.path().to_path_buf(),
            public_base_url: "http://127.0.0.1:8080/".into(),
            clock: noroshi_channel_core::system_clock(),
        };
        noroshi_website::build(&cfg, &env).unwrap()
    }

    fn submission(json: serde_json::Value) -> Submission {
        serde_json::from_value(json).unwrap()
    }

    fn plan_of(s: &Submission, can_send_disaster: bool) -> ApiResult<Plan> {
        plan_with(s, can_send_disaster, false)
    }

    fn plan_with(
        s: &Submission,
        can_send_disaster: bool,
        allow_private_fetch: bool,
    ) -> ApiResult<Plan> {
        let channels = vec![website()];
        let known = vec!["website".to_string(), "line".to_string()];
        let templates = crate::desk::templates::Templates::default();
        let ctx = AcceptContext {
            channels: &channels,
            known: &known,
            website_base_url: Some("https://city.example.jp/site/"),
            exercise_marker: "【訓練】",
            can_send_disaster,
            allow_private_fetch,
            templates: &templates,
            cap_message: None,
            replaces: None,
        };
        // Through the API's mapping, so the tests see what a client sees.
        plan(s, &ctx, "0193-test".into(), "desk", None, None, Utc::now()).map_err(Problem::from)
    }

    #[test]
    fn images_on_literal_private_addresses_are_refused_unless_allowed() {
        for (images, field) in [
            (serde_json::json!(["https://127.0.0.1/a.png"]), "images[0]"),
            (
                serde_json::json!(["https://city.example.jp/a.png", "https://[::1]/x.png"]),
                "images[1]",
            ),
            (serde_json::json!(["https://10.0.0.5/x"]), "images[0]"),
            (
                serde_json::json!(["https://169.254.169.254/latest"]),
                "images[0]",
            ),
            (
                serde_json::json!(["https://[::ffff:172.16.0.1]/x"]),
                "images[0]",
            ),
        ] {
            let s = submission(serde_json::json!({"title": "t", "body": "b", "images": images}));
            let p = plan_of(&s, false).err().expect("refused");
            assert_eq!(
                (p.status, p.field.as_deref()),
                (422, Some(field)),
                "{images}"
            );
            assert!(plan_with(&s, false, true).is_ok(), "allowed: {images}");
        }
        // Names are not resolved here: the adapters check them when they fetch.
        let s = submission(serde_json::json!({
            "title": "t", "body": "b",
            "images": ["https://city.example.jp/a.png", "https://localhost/a.png"]
        }));
        assert!(plan_of(&s, false).is_ok());
    }

    #[test]
    fn the_same_body_in_any_key_order_hashes_the_same() {
        let a = submission(serde_json::json!({"title": "t", "body": "b", "tags": ["x"]}));
        let b: Submission =
            serde_json::from_str(r#"{ "tags":["x"],  "body":"b","title":"t" }"#).unwrap();
        assert_eq!(request_hash(&a), request_hash(&b));
        let c = submission(serde_json::json!({"title": "t", "body": "b2", "tags": ["x"]}));
        assert_ne!(request_hash(&a), request_hash(&c));
    }

    #[test]
    fn refusals_name_their_field() {
        let cases = [
            (serde_json::json!({"title": " ", "body": "b"}), "title"),
            (
                serde_json::json!({"title": "t", "body": "b", "channels": ["line"]}),
                "channels[0]",
            ),
            (
                serde_json::json!({"title": "t", "body": "b", "link": "ftp://x"}),
                "link",
            ),
            (
                serde_json::json!({"title": "t", "body": "b", "lang": "ja_JP"}),
                "lang",
            ),
            (
                serde_json::json!({"title": "t", "body": "b", "overrides": {"line": {"text": "x"}}}),
                "overrides.line",
            ),
        ];
        for (json, field) in cases {
            let p = plan_of(&submission(json.clone()), false)
                .err()
                .expect("refused");
            assert_eq!(p.field.as_deref(), Some(field), "{json}");
            assert_eq!(p.status, 422);
        }
        let p = plan_of(
            &submission(serde_json::json!({"title": "t", "body": "b", "priority": "disaster"})),
            false,
        )
        .err()
        .unwrap();
        assert_eq!((p.status, p.field.as_deref()), (403, Some("priority")));
        assert!(plan_of(
            &submission(serde_json::json!({"title": "t", "body": "b", "priority": "disaster"})),
            true
        )
        .is_ok());
    }

    #[test]
    fn a_drill_is_marked_and_a_past_schedule_means_now() {
        let s = submission(serde_json::json!({
            "title": "避難訓練", "body": "本文", "exercise": true, "scheduled_at": "2020-01-01T09:00:00+09:00"
        }));
        let plan = plan_of(&s, false).unwrap();
        assert_eq!(plan.announcement.status, "queued");
        assert!(plan.announcement.scheduled_at.is_none());
        assert!(
            plan.channels[0].preview.text.contains("【訓練】"),
            "{}",
            plan.channels[0].preview.text
        );
        let s = submission(
            serde_json::json!({"title": "t", "body": "b", "scheduled_at": "2999-01-01T09:00:00+09:00"}),
        );
        assert_eq!(plan_of(&s, false).unwrap().announcement.status, "scheduled");
    }
}

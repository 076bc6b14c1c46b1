//! `[channels.line]`: the LINE channel's settings and their pure validation.

use noroshi_channel_core::config::{check_api_base, is_blank, required_secret};
use noroshi_channel_core::{ConfigProblem, DeliverySettings, ExposeSecret, SecretString};
use serde::Deserialize;

/// How announcements reach the account's friends (CHANNELS.md §1.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every friend of the account, one request (60 requests/hour).
    #[default]
    Broadcast,
    /// The user ids in `to`, in chunks of 500 (one delivery per chunk).
    Multicast,
    /// An audience or demographic filter, asynchronous (`202`, progress polled later).
    Narrowcast,
    /// One request per id in `to` (a user, group or room id).
    Push,
}

impl Mode {
    /// The path segment of the sending endpoint: `/v2/bot/message/{endpoint}`.
    pub fn endpoint(self) -> &'static str {
        match self {
            Mode::Broadcast => "broadcast",
            Mode::Multicast => "multicast",
            Mode::Narrowcast => "narrowcast",
            Mode::Push => "push",
        }
    }
}

/// `[channels.line.narrowcast]`: who a narrowcast reaches. Both set = the audience AND the
/// areas.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NarrowcastSettings {
    /// An audience group made in LINE Official Account Manager or the audience API
    /// (`recipient: {"type":"audience","audienceGroupId":…}`).
    pub audience_group_id: Option<i64>,
    /// Friends whose estimated area is one of these (LINE's codes, e.g. `jp_20` for Nagano):
    /// `filter.demographic = {"type":"area","oneOf":[…]}`.
    pub areas: Vec<String>,
    /// At most this many recipients (`limit.max`), chosen at random by LINE.
    pub max: Option<u32>,
}

/// `[channels.line]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Whether the channel is used at all.
    pub enabled: bool,
    /// Messaging API host (`https://api.line.me`); a loopback fake in tests.
    pub api_base: String,
    /// Content host (`https://api-data.line.me`); kept for media uploads, unused for sending.
    pub data_api_base: String,
    /// Long-lived (or otherwise issued) channel access token, sent as `Authorization: Bearer`.
    /// Set through `channel_access_token_env` / `channel_access_token_file`.
    pub channel_access_token: Option<SecretString>,
    /// Channel secret: the key of the webhook signature (`x-line-signature`).
    pub channel_secret: Option<SecretString>,
    /// `broadcast` (default), `multicast`, `narrowcast` or `push`.
    pub mode: Mode,
    /// User ids for `multicast` (chunked by 500) or the targets of `push`.
    pub to: Vec<String>,
    /// Audience and filter for `narrowcast`.
    pub narrowcast: NarrowcastSettings,
    /// LINE's per-channel limit on broadcast (and narrowcast) requests per hour.
    pub broadcast_per_hour: u32,
    /// Of those, requests per hour kept for disaster announcements: normal and urgent work
    /// is rate-limited once only the reserve is left.
    pub disaster_reserve_per_hour: u32,
    /// Messages left this month below which `GET /api/v1/channels` shows a warning.
    pub quota_warning_below: i64,
    /// How long a quota reading is reused before a broadcast checks it again, in seconds.
    pub quota_cache_seconds: u64,
    /// A drill's test target: a LINE user id that exercises are pushed to.
    pub exercise_target: Option<String>,
    /// An announcement's other languages: `together` (default: each variant as one more
    /// message in the same request, up to LINE's five), `audiences` (each variant to the
    /// audience group of its language in `language_audiences`, by narrowcast) or
    /// `primary_only`.
    pub variants: VariantMode,
    /// Audience group ids by language for `variants = "audiences"` (friends who chose
    /// English, やさしい日本語, …): `{ en = 1234567890123, "ja-easy" = 1234567890124 }`.
    pub language_audiences: std::collections::BTreeMap<String, i64>,
    /// Queue and pacing settings for this channel.
    #[serde(default)]
    pub delivery: DeliverySettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: false,
            api_base: "https://api.line.me".into(),
            data_api_base: "https://api-data.line.me".into(),
            channel_access_token: None,
            channel_secret: None,
            mode: Mode::Broadcast,
            to: Vec::new(),
            narrowcast: NarrowcastSettings::default(),
            broadcast_per_hour: 60,
            disaster_reserve_per_hour: 10,
            quota_warning_below: 1000,
            quota_cache_seconds: 60,
            exercise_target: None,
            variants: VariantMode::Together,
            language_audiences: Default::default(),
            delivery: DeliverySettings::default(),
        }
    }
}

/// How an announcement's other languages reach LINE friends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VariantMode {
    #[default]
    Together,
    Audiences,
    PrimaryOnly,
}

/// LINE's user id shape: `U` and 32 lowercase hex digits. Groups start with `C`, rooms `R`.
pub(crate) fn is_line_id(id: &str, prefixes: &[char]) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if prefixes.contains(&c))
        && id.len() == 33
        && chars.all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

/// The area codes the OpenAPI document's `AreaDemographic` enum lists.
pub(crate) fn is_area_code(code: &str) -> bool {
    let Some((country, n)) = code.split_once('_') else {
        return false;
    };
    let max = match country {
        "jp" => 47,
        "tw" => 22,
        "th" => 8,
        "id" => 12,
        _ => return false,
    };
    n.len() == 2 && n.parse::<u32>().is_ok_and(|n| (1..=max).contains(&n))
}

fn check_base(key: &str, value: &str, problems: &mut Vec<ConfigProblem>) {
    problems.extend(check_api_base(key, value, || {
        format!("must be an http(s) URL such as https://api.line.me, got {value:?}")
    }));
}

impl Config {
    /// Every problem with this section, each naming its key. Pure: no I/O.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        check_base("api_base", &self.api_base, &mut problems);
        check_base("data_api_base", &self.data_api_base, &mut problems);
        let token = self.channel_access_token.as_ref();
        if let Some(p) = required_secret("channel_access_token", token, None) {
            problems.push(p);
        } else if token.is_some_and(|t| {
            t.expose_secret()
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        }) {
            problems.push(ConfigProblem::new(
                "channel_access_token",
                "contains whitespace (a stray newline in the file?)",
            ));
        }
        if self.channel_secret.as_ref().is_some_and(is_blank) {
            problems.push(ConfigProblem::new("channel_secret", "is empty"));
        }
        match self.mode {
            Mode::Multicast => {
                if self.to.is_empty() {
                    problems.push(ConfigProblem::new(
                        "to",
                        "multicast needs at least one user id",
                    ));
                }
                for (i, id) in self.to.iter().enumerate() {
                    if !is_line_id(id, &['U']) {
                        problems.push(ConfigProblem::new(
                            format!("to[{i}]"),
                            "multicast takes user ids only (U followed by 32 hex digits)",
                        ));
                    }
                }
            }
            Mode::Push => {
                if self.to.is_empty() {
                    problems.push(ConfigProblem::new(
                        "to",
                        "push needs at least one target id",
                    ));
                }
                for (i, id) in self.to.iter().enumerate() {
                    if !is_line_id(id, &['U', 'C', 'R']) {
                        problems.push(ConfigProblem::new(
                            format!("to[{i}]"),
                            "not a user, group or room id (U/C/R followed by 32 hex digits)",
                        ));
                    }
                }
            }
            Mode::Narrowcast => {
                let n = &self.narrowcast;
                if n.audience_group_id.is_none() && n.areas.is_empty() {
                    problems.push(ConfigProblem::new(
                        "narrowcast",
                        "narrowcast needs audience_group_id or areas (use mode = \"broadcast\" for every friend)",
                    ));
                }
                for (i, area) in n.areas.iter().enumerate() {
                    if !is_area_code(area) {
                        problems.push(ConfigProblem::new(
                            format!("narrowcast.areas[{i}]"),
                            format!("{area:?} is not a LINE area code such as jp_20"),
                        ));
                    }
                }
                if n.max == Some(0) {
                    problems.push(ConfigProblem::new("narrowcast.max", "must be at least 1"));
                }
            }
            Mode::Broadcast => {}
        }
        if !self.to.is_empty() && matches!(self.mode, Mode::Broadcast | Mode::Narrowcast) {
            problems.push(ConfigProblem::new(
                "to",
                "only used with mode = \"multicast\" or \"push\"",
            ));
        }
        if self.broadcast_per_hour == 0 {
            problems.push(ConfigProblem::new(
                "broadcast_per_hour",
                "must be at least 1",
            ));
        }
        if self.disaster_reserve_per_hour >= self.broadcast_per_hour.max(1) {
            problems.push(ConfigProblem::new(
                "disaster_reserve_per_hour",
                format!(
                    "must be below broadcast_per_hour ({}), or normal announcements could never broadcast",
                    self.broadcast_per_hour
                ),
            ));
        }
        if self.quota_warning_below < 0 {
            problems.push(ConfigProblem::new(
                "quota_warning_below",
                "must not be negative",
            ));
        }
        if let Some(target) = &self.exercise_target {
            if !is_line_id(target, &['U', 'C', 'R']) {
                problems.push(ConfigProblem::new(
                    "exercise_target",
                    "not a user, group or room id (U/C/R followed by 32 hex digits)",
                ));
            }
        }
        problems
    }
}

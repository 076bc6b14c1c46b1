//! The Facebook Page adapter: posts through the Graph API, reconciles through `/posts`,
//! checks its token with `debug_token`, and watches Graph's usage headers.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use noroshi_channel_core::http::{retry_after, transport_error};
use noroshi_channel_core::{
    AdapterStatus, Announcement, Channel, Clock, DeliveryContext, DeliveryError, DeliveryUnit,
    ExposeSecret, Limits, Priority, Receipt, RenderError, Rendering, SecretString,
};
use reqwest::header::{HeaderMap, AUTHORIZATION};
use serde::Deserialize;
use sha2::Sha256;

use crate::config::{parse_version, Config, VERSION_EXPIRY};
use crate::error::{classify, GraphError};
use crate::reach;
use crate::render::{render, PostKind, PostPayload};
use crate::usage::Usage;

/// Warn this long before the Page token stops working (CHANNELS.md §3.1).
const TOKEN_WARNING: chrono::Duration = chrono::Duration::days(7);
/// Warn this long before the configured Graph version stops being served.
const VERSION_WARNING: chrono::Duration = chrono::Duration::days(90);
/// Reconcile looks this far back when the attempt time was lost (a restart).
const RECONCILE_FALLBACK: chrono::Duration = chrono::Duration::hours(1);

/// What `debug_token` said about the Page token.
#[derive(Clone, Copy, Debug, Default)]
struct TokenInfo {
    /// Unix seconds; 0 = never.
    expires_at: i64,
    /// Unix seconds; 0 = never.
    data_access_expires_at: i64,
}

#[derive(Default)]
struct Observed {
    usage: Usage,
    token: Option<TokenInfo>,
    /// When each delivery's latest attempt started, for the reconcile window.
    attempts: HashMap<String, DateTime<Utc>>,
}

/// The `facebook` channel.
pub struct FacebookChannel {
    http: reqwest::Client,
    /// `{graph_base}/{api_version}`.
    base: String,
    version: String,
    page_id: String,
    token: SecretString,
    app_secret: Option<SecretString>,
    app_token: Option<SecretString>,
    slowdown_percent: u8,
    /// `[channels.facebook] languages`: other languages posted as their own posts.
    languages: Vec<String>,
    /// A drill's test Page id.
    exercise_target: Option<String>,
    clock: Clock,
    observed: Mutex<Observed>,
}

impl fmt::Debug for FacebookChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FacebookChannel")
            .field("base", &self.base)
            .field("page_id", &self.page_id)
            .field("token", &"**REDACTED**")
            .finish_non_exhaustive()
    }
}

/// A read or a write; reads may be retried freely, a write that timed out is uncertain.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verb {
    Read,
    Write,
}

struct Answer {
    status: u16,
    body: String,
}

/// A failed call, with Graph's error code kept for the few callers that look at it.
struct Failed {
    error: DeliveryError,
    graph_code: Option<i64>,
}

impl From<Failed> for DeliveryError {
    fn from(f: Failed) -> DeliveryError {
        f.error
    }
}

impl From<DeliveryError> for Failed {
    fn from(error: DeliveryError) -> Failed {
        Failed {
            error,
            graph_code: None,
        }
    }
}

impl FacebookChannel {
    /// `config` must have passed `validate()`.
    pub(crate) fn new(config: &Config, http: reqwest::Client, clock: Clock) -> Self {
        FacebookChannel {
            http,
            base: format!(
                "{}/{}",
                config.graph_base.trim_end_matches('/'),
                config.api_version
            ),
            version: config.api_version.clone(),
            page_id: config.page_id.clone(),
            languages: config.languages.clone(),
            exercise_target: config.exercise_target.clone(),
            token: config
                .page_access_token
                .clone()
                .unwrap_or_else(|| SecretString::from("")),
            app_secret: config.app_secret.clone(),
            app_token: config.app_token.clone(),
            slowdown_percent: config.usage_slowdown_percent,
            clock,
            observed: Mutex::new(Observed::default()),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Removes every credential from text the platform (or a proxy) sent back.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in [
            Some(&self.token),
            self.app_secret.as_ref(),
            self.app_token.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            let s = secret.expose_secret();
            if !s.is_empty() {
                out = out.replace(s, "[redacted]");
            }
        }
        out
    }

    /// `hex(HMAC-SHA256(app secret, access token))`.
    fn appsecret_proof(&self, access_token: &SecretString) -> Option<String> {
        let secret = self.app_secret.as_ref()?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
            .expect("HMAC takes any key length");
        mac.update(access_token.expose_secret().as_bytes());
        Some(hex::encode(mac.finalize().into_bytes()))
    }

    /// One Graph call. The access token rides in `Authorization: Bearer`; anything else
    /// secret (`appsecret_proof`, `debug_token`'s `input_token`) rides in a form body. A read
    /// carrying such a parameter is sent as `POST` with Graph's `method=GET` override (the
    /// way Facebook's own PHP SDK sent every call), so no credential is ever in a URL,
    /// where proxies and client errors would print it.
    async fn call(
        &self,
        verb: Verb,
        path: &str,
        params: &[(&str, String)],
        secret_params: &[(&str, &str)],
        access_token: &SecretString,
    ) -> Result<Answer, Failed> {
        let url = format!("{}/{}", self.base, path.trim_start_matches('/'));
        let proof = self.appsecret_proof(access_token);
        let mut secret: Vec<(&str, &str)> = secret_params.to_vec();
        if let Some(p) = proof.as_deref() {
            secret.push(("appsecret_proof", p));
        }
        let bearer = format!("Bearer {}", access_token.expose_secret());
        let request = if verb == Verb::Read && secret.is_empty() {
            self.http.get(&url).query(params)
        } else {
            let mut form: Vec<(&str, &str)> =
                params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            form.extend(secret);
            if verb == Verb::Read {
                form.push(("method", "GET"));
            }
            self.http.post(&url).form(&form)
        };
        let response = request
            .header(AUTHORIZATION, bearer)
            .send()
            .await
            .map_err(|e| Failed::from(self.scrubbed(transport_error(e, verb == Verb::Write))))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let now = self.now();
        self.observed.lock().unwrap().usage.observe(&headers, now);
        let body = response
            .text()
            .await
            .map_err(|e| Failed::from(self.scrubbed(transport_error(e, verb == Verb::Write))))?;
        if (200..300).contains(&status) {
            return Ok(Answer { status, body });
        }
        Err(Failed {
            error: self.graph_error(status, &headers, &body),
            graph_code: GraphError::parse(&body).and_then(|e| e.code),
        })
    }

    fn scrubbed(&self, mut err: DeliveryError) -> DeliveryError {
        err.message = self.scrub(&err.message);
        err
    }

    fn graph_error(&self, status: u16, headers: &HeaderMap, body: &str) -> DeliveryError {
        let now = self.now();
        let wait = self
            .observed
            .lock()
            .unwrap()
            .usage
            .regain_wait(now)
            .or_else(|| retry_after(headers, now));
        classify(status, body, wait, &|s| self.scrub(s))
    }

    /// Refuses to send while Graph's usage gauges are above the threshold.
    fn usage_gate(&self, priority: Priority) -> Result<(), DeliveryError> {
        let now = self.now();
        let hold = self.observed.lock().unwrap().usage.hold(
            now,
            self.slowdown_percent,
            priority == Priority::Disaster,
        );
        match hold {
            None => Ok(()),
            Some(h) => Err(DeliveryError::rate_limited(
                Some(h.retry_after),
                format!("not sent: {}", h.reason),
            )),
        }
    }

    fn version_warning(&self, now: DateTime<Utc>) -> Option<String> {
        let major = parse_version(&self.version)?;
        let (_, day) = VERSION_EXPIRY.iter().find(|(v, _)| *v == major)?;
        let expires = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
            .ok()?
            .and_hms_opt(0, 0, 0)?
            .and_utc();
        (expires - now <= VERSION_WARNING).then(|| {
            format!(
                "Graph API {} expires on {day}: raise api_version before then",
                self.version
            )
        })
    }

    async fn find_post(
        &self,
        payload: &PostPayload,
        since: DateTime<Utc>,
    ) -> Result<Option<String>, DeliveryError> {
        #[derive(Deserialize)]
        struct Posts {
            #[serde(default)]
            data: Vec<Post>,
        }
        #[derive(Deserialize)]
        struct Post {
            id: String,
            #[serde(default)]
            message: Option<String>,
        }
        let answer = self
            .call(
                Verb::Read,
                &format!("{}/posts", self.page_id),
                &[
                    ("fields", "id,message,created_time".to_string()),
                    ("since", since.timestamp().to_string()),
                    ("limit", "10".to_string()),
                ],
                &[],
                &self.token,
            )
            .await
            .map_err(DeliveryError::from)?;
        let posts: Posts = serde_json::from_str(&answer.body).map_err(|e| {
            DeliveryError::transient(format!("unreadable /posts answer: {e}"))
                .with_status(answer.status)
        })?;
        let wanted = normalise(&payload.message);
        Ok(posts
            .data
            .into_iter()
            .find(|p| p.message.as_deref().map(normalise).as_deref() == Some(wanted.as_str()))
            .map(|p| p.id))
    }

    async fn insight(&self, node: &str, metric: &str) -> Result<Option<i64>, DeliveryError> {
        let mut params = vec![("metric", metric.to_string())];
        if !node.contains('_') {
            params.push(("period", "day".to_string()));
        }
        let answer = self
            .call(
                Verb::Read,
                &format!("{node}/insights"),
                &params,
                &[],
                &self.token,
            )
            .await
            .map_err(DeliveryError::from)?;
        crate::reach::last_value(&answer.body, metric)
            .map_err(|e| DeliveryError::transient(format!("unreadable insights answer: {e}")))
    }

    fn sample(
        &self,
        metric: &str,
        value: i64,
        subject: Option<String>,
    ) -> noroshi_channel_core::ReachSample {
        noroshi_channel_core::ReachSample {
            metric: metric.to_string(),
            value,
            api_version: Some(self.version.clone()),
            subject,
            collected_at: self.now(),
        }
    }
}

/// Whitespace differences (CRLF, trailing blanks) do not make a different post.
fn normalise(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn unix(ts: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(ts, 0).single()
}

fn day(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

#[async_trait]
impl Channel for FacebookChannel {
    fn name(&self) -> &str {
        "facebook"
    }

    fn render(&self, announcement: &Announcement) -> Result<Rendering, RenderError> {
        announcement.render_in_languages(&self.languages, render)
    }

    fn limits(&self) -> Limits {
        // Posting is rare and the Pages BUC budget (4,800 × engaged users a day) is shared
        // with reach collection; one post at a time also keeps reconcile unambiguous.
        Limits {
            rate_per_second: 0.5,
            burst: 3,
            concurrency: 1,
        }
    }

    async fn deliver(
        &self,
        unit: &DeliveryUnit,
        ctx: &DeliveryContext,
    ) -> Result<Receipt, DeliveryError> {
        let payload: PostPayload = serde_json::from_value(unit.payload.clone()).map_err(|e| {
            DeliveryError::permanent(format!("the stored unit is not a Facebook post: {e}"))
        })?;
        self.usage_gate(ctx.priority)?;
        {
            let mut observed = self.observed.lock().unwrap();
            let now = self.now();
            // Bounded: the map only serves reconcile right after an ambiguous attempt.
            if observed.attempts.len() > 1000 {
                observed
                    .attempts
                    .retain(|_, t| now - *t < RECONCILE_FALLBACK);
            }
            observed.attempts.insert(ctx.delivery_id.clone(), now);
        }
        let (edge, params) = match payload.kind {
            PostKind::Feed => {
                let mut params = vec![("message", payload.message.clone())];
                if let Some(link) = &payload.link {
                    params.push(("link", link.clone()));
                }
                ("feed", params)
            }
            PostKind::Photo => {
                let url = payload.image_url.clone().ok_or_else(|| {
                    DeliveryError::permanent("the stored photo post has no image URL")
                })?;
                (
                    "photos",
                    vec![("url", url), ("caption", payload.message.clone())],
                )
            }
        };
        // A drill goes to the test Page when one is configured, never to the city's Page.
        let page = match (&self.exercise_target, ctx.exercise) {
            (Some(test_page), true) => test_page,
            _ => &self.page_id,
        };
        let path = format!("{page}/{edge}");
        match self
            .call(Verb::Write, &path, &params, &[], &self.token)
            .await
        {
            Ok(answer) => {
                #[derive(Deserialize)]
                struct Created {
                    id: Option<String>,
                    post_id: Option<String>,
                }
                let created: Option<Created> = serde_json::from_str(&answer.body).ok();
                let remote_id = created.and_then(|c| c.post_id.or(c.id));
                Ok(Receipt {
                    note: remote_id
                        .is_none()
                        .then(|| "Graph accepted the post but returned no id".to_string()),
                    remote_id,
                    already_sent: false,
                })
            }
            // §3.6: a duplicate (506) on a resend means an earlier attempt was posted.
            Err(f) if ctx.attempt > 1 && f.graph_code == Some(506) => Ok(Receipt {
                remote_id: None,
                already_sent: true,
                note: Some(format!(
                    "Graph refused a resend as a duplicate post, so an earlier attempt was \
                     posted: {}",
                    f.error.message
                )),
            }),
            Err(f) => Err(f.error),
        }
    }

    async fn reconcile(
        &self,
        unit: &DeliveryUnit,
        ctx: &DeliveryContext,
    ) -> Result<Option<Receipt>, DeliveryError> {
        let payload: PostPayload = serde_json::from_value(unit.payload.clone()).map_err(|e| {
            DeliveryError::permanent(format!("the stored unit is not a Facebook post: {e}"))
        })?;
        // Over the delivery's whole age: from its first attempt (the daemon keeps that across
        // restarts), else this process's memory of it, else a fixed look-back.
        let now = self.now();
        let remembered = self
            .observed
            .lock()
            .unwrap()
            .attempts
            .get(&ctx.delivery_id)
            .copied();
        let attempted = match (ctx.first_attempt_at, remembered) {
            (Some(first), Some(seen)) => first.min(seen),
            (Some(first), None) => first,
            (None, Some(seen)) => seen,
            (None, None) => now - RECONCILE_FALLBACK,
        };
        let since = attempted - chrono::Duration::seconds(60);
        Ok(self.find_post(&payload, since).await?.map(|id| Receipt {
            remote_id: Some(id),
            already_sent: true,
            note: Some("found on the Page after an ambiguous attempt".to_string()),
        }))
    }

    async fn fetch_reach(&self) -> Result<Vec<noroshi_channel_core::ReachSample>, DeliveryError> {
        self.usage_gate(Priority::Normal)?;
        let mut samples = Vec::new();
        let mut first_error: Option<DeliveryError> = None;
        let note = |metric: &str, err: DeliveryError, first: &mut Option<DeliveryError>| {
            tracing::warn!(metric, error = %err, "Facebook reach metric not collected");
            if first.is_none() {
                *first = Some(err);
            }
        };

        match self
            .call(
                Verb::Read,
                &self.page_id,
                &[("fields", "followers_count".to_string())],
                &[],
                &self.token,
            )
            .await
        {
            Ok(a) => {
                if let Some(n) = reach::followers_count(&a.body) {
                    samples.push(self.sample("followers_count", n, None));
                }
            }
            Err(e) => note("followers_count", e.into(), &mut first_error),
        }

        // One metric per call: a retired name fails the whole call with code 100, and
        // must not blank the others.
        for metric in reach::PAGE_METRICS {
            match self.insight(&self.page_id, metric).await {
                Ok(Some(v)) => samples.push(self.sample(metric, v, None)),
                Ok(None) => {}
                Err(e) => note(metric, e, &mut first_error),
            }
        }

        match self
            .call(
                Verb::Read,
                &format!("{}/posts", self.page_id),
                &[
                    ("fields", "id".to_string()),
                    ("limit", reach::RECENT_POSTS.to_string()),
                ],
                &[],
                &self.token,
            )
            .await
        {
            Ok(a) => {
                for id in reach::post_ids(&a.body) {
                    match self.insight(&id, reach::POST_METRIC).await {
                        Ok(Some(v)) => samples.push(self.sample(reach::POST_METRIC, v, Some(id))),
                        Ok(None) => {}
                        Err(e) => note(reach::POST_METRIC, e, &mut first_error),
                    }
                }
            }
            Err(e) => note("posts", e.into(), &mut first_error),
        }

        match (samples.is_empty(), first_error) {
            (true, Some(err)) => Err(err),
            _ => Ok(samples),
        }
    }

    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        #[derive(Deserialize)]
        struct Debug {
            data: TokenData,
        }
        #[derive(Deserialize)]
        struct TokenData {
            #[serde(default)]
            is_valid: bool,
            #[serde(default)]
            expires_at: i64,
            #[serde(default)]
            data_access_expires_at: i64,
            #[serde(default)]
            scopes: Vec<String>,
            #[serde(default, rename = "type")]
            kind: Option<String>,
            #[serde(default)]
            profile_id: Option<String>,
            #[serde(default)]
            error: Option<TokenError>,
        }
        #[derive(Deserialize)]
        struct TokenError {
            #[serde(default)]
            code: Option<i64>,
            #[serde(default)]
            subcode: Option<i64>,
            #[serde(default)]
            message: String,
        }
        // The app token, when configured, inspects the Page token; otherwise the Page token
        // inspects itself. Either way `input_token` travels in the form body.
        let inspector = self.app_token.as_ref().unwrap_or(&self.token);
        let answer = self
            .call(
                Verb::Read,
                "debug_token",
                &[],
                &[("input_token", self.token.expose_secret())],
                inspector,
            )
            .await
            .map_err(DeliveryError::from)?;
        let debug: Debug = serde_json::from_str(&answer.body)
            .map_err(|e| DeliveryError::transient(format!("unreadable debug_token answer: {e}")))?;
        let data = debug.data;
        let now = self.now();
        self.observed.lock().unwrap().token = Some(TokenInfo {
            expires_at: data.expires_at,
            data_access_expires_at: data.data_access_expires_at,
        });
        if !data.is_valid {
            let detail = match data.error {
                Some(e) => format!(
                    " ({}{}): {}",
                    e.code.map(|c| c.to_string()).unwrap_or_default(),
                    e.subcode.map(|s| format!("/{s}")).unwrap_or_default(),
                    self.scrub(&e.message)
                ),
                None => String::new(),
            };
            return Err(DeliveryError::auth(format!(
                "page token is not valid according to debug_token{detail}"
            )));
        }
        if data.expires_at != 0 {
            if let Some(at) = unix(data.expires_at).filter(|at| *at <= now) {
                return Err(DeliveryError::auth(format!(
                    "page token expired on {}",
                    day(at)
                )));
            }
        }
        if !data.scopes.iter().any(|s| s == "pages_manage_posts") {
            return Err(DeliveryError::auth(
                "page token lacks the pages_manage_posts permission",
            ));
        }
        if data.kind.as_deref() == Some("PAGE") {
            if let Some(profile) = data.profile_id.filter(|p| *p != self.page_id) {
                return Err(DeliveryError::auth(format!(
                    "page token belongs to Page {profile}, not to page_id {}",
                    self.page_id
                )));
            }
        }
        Ok(())
    }

    fn status(&self) -> AdapterStatus {
        let now = self.now();
        let observed = self.observed.lock().unwrap();
        let mut warnings = Vec::new();
        if let Some(token) = observed.token {
            for (what, ts) in [
                ("page token expires", token.expires_at),
                (
                    "page token data access expires",
                    token.data_access_expires_at,
                ),
            ] {
                if let Some(at) = (ts != 0).then(|| unix(ts)).flatten() {
                    if at <= now {
                        warnings.push(format!(
                            "{} on {} (already passed)",
                            what.replace("expires", "expired"),
                            day(at)
                        ));
                    } else if at - now <= TOKEN_WARNING {
                        warnings.push(format!(
                            "{what} on {}: replace it before posts start failing",
                            day(at)
                        ));
                    }
                }
            }
        }
        warnings.extend(self.version_warning(now));
        warnings.extend(observed.usage.warnings(self.slowdown_percent));
        AdapterStatus {
            budgets: observed.usage.budgets(),
            warnings,
        }
    }
}

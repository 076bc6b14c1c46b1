//! The X [`Channel`]: signed calls, posting (images, threads), reconcile, healthcheck, status.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use base64::Engine;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use noroshi_channel_core::fetch::{FetchError, Fetcher};
use noroshi_channel_core::http::{header_i64, snippet, transport_error};
use noroshi_channel_core::{
    system_clock, AdapterStatus, Announcement, Budget, Channel, Clock, ConfigProblem,
    DeliveryContext, DeliveryError, DeliveryUnit, ExposeSecret, Limits, ReachSample, Receipt,
    RenderError, Rendering, SecretString,
};
use reqwest::header::{HeaderMap, AUTHORIZATION};
use reqwest::Method;
use serde_json::{json, Value};
use url::Url;

use crate::config::{AuthMode, Config, LongText};
use crate::error::{classify, is_duplicate, is_reply_refused, reset_header, Call, Problem};
use crate::oauth;
use crate::render::{self, ThreadFallback, XPayload, MAX_IMAGES};

/// X's image limit for one-shot upload (CHANNELS.md §2.6).
pub const MAX_IMAGE_BYTES: usize = 5 * 1024 * 1024;

/// The OAuth 2.0 token pair currently in use. Refresh tokens rotate: after a refresh the
/// configured refresh token is dead, so the daemon should persist this pair.
#[derive(Clone, Debug)]
pub struct OAuth2Tokens {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    /// When the pair was last rotated by a refresh (`None`: still the configured pair).
    pub rotated_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

enum Auth {
    OAuth1 {
        consumer_key: SecretString,
        consumer_secret: SecretString,
        token: SecretString,
        token_secret: SecretString,
    },
    OAuth2 {
        client_id: SecretString,
        client_secret: Option<SecretString>,
    },
}

/// What `deliver` remembers of a delivery between attempts (in memory only: after a
/// restart the duplicate-content rule and `reconcile` recover the same facts from X).
#[derive(Clone, Debug)]
struct Progress {
    first_attempt_at: DateTime<Utc>,
    /// Ids of the posts of this unit already created, in order.
    posted: Vec<String>,
    /// Whether any of them was created by this process (not found as already there).
    created_any: bool,
}

#[derive(Default)]
struct State {
    budgets: BTreeMap<String, Budget>,
    user_id: Option<String>,
    progress: HashMap<String, Progress>,
    oauth2: Option<OAuth2Tokens>,
}

/// The X adapter. Build it with [`crate::build`] or [`crate::build_x`].
pub struct XChannel {
    http: reqwest::Client,
    /// Fetches announcement images: public addresses only (unless the daemon's
    /// `[security] allow_private_fetch`), at most [`MAX_IMAGE_BYTES`] read.
    images: Fetcher,
    api_base: String,
    upload_base: String,
    auth: Auth,
    long_text: LongText,
    exercise_target: Option<String>,
    /// `[channels.x] languages`: other languages posted as their own posts.
    languages: Vec<String>,
    state: Mutex<State>,
    /// SHA-256 (hex) of the configured OAuth 2.0 refresh token: a saved rotated pair is
    /// only restored while the configuration still names the token it replaced.
    configured_refresh: Option<String>,
    /// Serialises OAuth 2.0 refreshes: two concurrent refreshes with a rotating token
    /// would log the city out (the loser presents a dead refresh token).
    refresh_lock: tokio::sync::Mutex<()>,
    /// Where the adapter reads the time (OAuth 1.0a timestamps, reconcile windows,
    /// rate-limit resets).
    clock: Clock,
}

/// A request body, kept so a request can be sent again after an OAuth 2.0 refresh.
pub(crate) enum ReqBody<'a> {
    Empty,
    Json(&'a Value),
    Media {
        bytes: &'a [u8],
        media_type: &'a str,
    },
}

/// What `POST /2/tweets` answered, short of an error the queue acts on.
enum Created {
    Id(String),
    /// 403 duplicate content: the same text is already on the account.
    Duplicate,
    /// 403 on a reply: X refuses replies from self-serve apps (since 2026-02-23) unless the
    /// author mentioned or quoted the account. Carries X's `detail`.
    ReplyRefused(String),
}

/// An HTTP answer, fully read.
pub(crate) struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

fn secret(v: &Option<SecretString>, key: &str) -> Result<SecretString, Vec<ConfigProblem>> {
    v.clone()
        .ok_or_else(|| vec![ConfigProblem::new(key, "required")])
}

fn trim_base(s: &str) -> String {
    s.trim_end_matches('/').to_string()
}

/// Text compared for "is this the same post": NFC, X's HTML escapes undone, every URL
/// masked (X returns them as t.co links, and appends one for attached media), whitespace
/// collapsed.
pub fn match_key(text: &str) -> String {
    let text = render::nfc(text)
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let mut masked = String::with_capacity(text.len());
    let mut last = 0;
    for (s, e) in render::url_spans(&text) {
        masked.push_str(&text[last..s]);
        masked.push_str(" \u{1} ");
        last = e;
    }
    masked.push_str(&text[last..]);
    let mut words: Vec<&str> = masked.split_whitespace().collect();
    while words.last() == Some(&"\u{1}") {
        words.pop();
    }
    words.join(" ")
}

impl XChannel {
    /// Builds the adapter from a validated config.
    pub fn new(config: &Config, http: reqwest::Client) -> Result<XChannel, Vec<ConfigProblem>> {
        let mut state = State::default();
        let auth = match config.auth {
            AuthMode::Oauth1 => Auth::OAuth1 {
                consumer_key: secret(&config.consumer_key, "consumer_key")?,
                consumer_secret: secret(&config.consumer_secret, "consumer_secret")?,
                token: secret(&config.access_token, "access_token")?,
                token_secret: secret(&config.access_token_secret, "access_token_secret")?,
            },
            AuthMode::Oauth2 => {
                state.oauth2 = Some(OAuth2Tokens {
                    access_token: secret(&config.oauth2_access_token, "oauth2_access_token")?,
                    refresh_token: config.oauth2_refresh_token.clone(),
                    rotated_at: None,
                    expires_at: None,
                });
                Auth::OAuth2 {
                    client_id: secret(&config.oauth2_client_id, "oauth2_client_id")?,
                    client_secret: config.oauth2_client_secret.clone(),
                }
            }
        };
        let images = Fetcher::new(&config.image_fetch).map_err(|e| {
            vec![ConfigProblem::new(
                "image_fetch",
                format!("cannot build the image fetch client: {e}"),
            )]
        })?;
        Ok(XChannel {
            http,
            images,
            api_base: trim_base(&config.api_base),
            upload_base: trim_base(&config.upload_base),
            auth,
            long_text: config.long_text,
            exercise_target: config.exercise_target.clone(),
            languages: config.languages.clone(),
            state: Mutex::new(state),
            configured_refresh: config
                .oauth2_refresh_token
                .as_ref()
                .map(|t| fingerprint(t.expose_secret())),
            refresh_lock: tokio::sync::Mutex::new(()),
            clock: system_clock(),
        })
    }

    /// Replaces the clock (the daemon's own, or a test's).
    pub fn with_clock(mut self, clock: Clock) -> XChannel {
        self.clock = clock;
        self
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// The OAuth 2.0 pair in use (rotated by refreshes), for the daemon to persist.
    pub fn oauth2_tokens(&self) -> Option<OAuth2Tokens> {
        self.state.lock().unwrap().oauth2.clone()
    }

    /// A drill's test target from config (kept for drill routing).
    pub fn exercise_target(&self) -> Option<&str> {
        self.exercise_target.as_deref()
    }

    pub(crate) fn api_url(&self, path_and_query: &str) -> Result<Url, DeliveryError> {
        Url::parse(&format!("{}{path_and_query}", self.api_base))
            .map_err(|_| DeliveryError::permanent("api_base does not form a valid URL"))
    }

    fn remember_limits(&self, label: &str, headers: &HeaderMap) {
        let mut found = Vec::new();
        if header_i64(headers, "x-rate-limit-limit").is_some() {
            found.push((format!("{label} (15 min window)"), "x-rate-limit"));
        }
        for (name, prefix) in [
            ("posts per 24 h (user)", "x-user-limit-24hour"),
            ("posts per 24 h (app)", "x-app-limit-24hour"),
        ] {
            if header_i64(headers, &format!("{prefix}-limit")).is_some() {
                found.push((name.to_string(), prefix));
            }
        }
        if found.is_empty() {
            return;
        }
        let mut state = self.state.lock().unwrap();
        for (name, prefix) in found {
            let budget = Budget {
                name: name.clone(),
                remaining: header_i64(headers, &format!("{prefix}-remaining")),
                limit: header_i64(headers, &format!("{prefix}-limit")),
                resets_at: reset_header(headers, &format!("{prefix}-reset")),
            };
            state.budgets.insert(name, budget);
        }
    }

    fn current_bearer(&self) -> Option<String> {
        let state = self.state.lock().unwrap();
        state
            .oauth2
            .as_ref()
            .map(|t| t.access_token.expose_secret().to_string())
    }

    /// One signed request; with OAuth 2.0 a 401 triggers one refresh and one resend (the
    /// 401 proves the first copy was not applied).
    pub(crate) async fn call(
        &self,
        method: Method,
        url: Url,
        body: ReqBody<'_>,
        call: Call,
        label: &str,
    ) -> Result<Reply, DeliveryError> {
        let (reply, bearer) = self.send_once(&method, &url, &body, call, label).await?;
        if reply.status == 401 {
            if let Some(stale) = bearer {
                self.refresh(&stale).await?;
                let (reply, _) = self.send_once(&method, &url, &body, call, label).await?;
                return Ok(reply);
            }
        }
        Ok(reply)
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &Url,
        body: &ReqBody<'_>,
        call: Call,
        label: &str,
    ) -> Result<(Reply, Option<String>), DeliveryError> {
        let mut rb = self.http.request(method.clone(), url.clone());
        let mut bearer = None;
        match &self.auth {
            Auth::OAuth1 {
                consumer_key,
                consumer_secret,
                token,
                token_secret,
            } => {
                let creds = oauth::Credentials {
                    consumer_key: consumer_key.expose_secret(),
                    consumer_secret: consumer_secret.expose_secret(),
                    token: token.expose_secret(),
                    token_secret: token_secret.expose_secret(),
                };
                // JSON and multipart bodies are not part of the signature (RFC 5849 §3.4.1.3.1).
                let header = oauth::authorization_header(
                    &creds,
                    method.as_str(),
                    url,
                    &[],
                    &oauth::new_nonce(),
                    self.now().timestamp(),
                );
                rb = rb.header(AUTHORIZATION, header);
            }
            Auth::OAuth2 { .. } => {
                let token = self
                    .current_bearer()
                    .ok_or_else(|| DeliveryError::auth("no OAuth 2.0 access token"))?;
                rb = rb.bearer_auth(&token);
                bearer = Some(token);
            }
        }
        rb = match body {
            ReqBody::Empty => rb,
            ReqBody::Json(v) => rb.json(v),
            ReqBody::Media { bytes, media_type } => {
                let part = reqwest::multipart::Part::bytes(bytes.to_vec())
                    .file_name("media")
                    .mime_str(media_type)
                    .map_err(|_| DeliveryError::permanent("unusable image media type"))?;
                let form = reqwest::multipart::Form::new()
                    .part("media", part)
                    .text("media_category", "tweet_image")
                    .text("media_type", media_type.to_string());
                rb.multipart(form)
            }
        };
        let write = call == Call::CreatePost;
        let response = rb.send().await.map_err(|e| transport_error(e, write))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .text()
            .await
            .map_err(|e| transport_error(e, write))?;
        self.remember_limits(label, &headers);
        Ok((
            Reply {
                status,
                headers,
                body,
            },
            bearer,
        ))
    }

    /// `POST /2/oauth2/token` with the refresh token; keeps the rotated pair.
    async fn refresh(&self, stale_access: &str) -> Result<(), DeliveryError> {
        let Auth::OAuth2 {
            client_id,
            client_secret,
        } = &self.auth
        else {
            return Err(DeliveryError::auth("X answered 401"));
        };
        let _guard = self.refresh_lock.lock().await;
        if self.current_bearer().as_deref() != Some(stale_access) {
            return Ok(()); // another attempt refreshed while this one waited
        }
        let refresh_token = self
            .state
            .lock()
            .unwrap()
            .oauth2
            .as_ref()
            .and_then(|t| t.refresh_token.clone())
            .ok_or_else(|| {
                DeliveryError::auth("X answered 401 and there is no OAuth 2.0 refresh token")
            })?;
        let mut form = vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", refresh_token.expose_secret().to_string()),
        ];
        let mut rb = self.http.post(self.api_url("/2/oauth2/token")?);
        match client_secret {
            Some(secret) => {
                let basic = base64::engine::general_purpose::STANDARD.encode(format!(
                    "{}:{}",
                    client_id.expose_secret(),
                    secret.expose_secret()
                ));
                rb = rb.header(AUTHORIZATION, format!("Basic {basic}"));
            }
            None => form.push(("client_id", client_id.expose_secret().to_string())),
        }
        let response = rb
            .form(&form)
            .send()
            .await
            .map_err(|e| transport_error(e, false))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .text()
            .await
            .map_err(|e| transport_error(e, false))?;
        if status == 400 || status == 401 {
            let p = Problem::parse(&body);
            return Err(DeliveryError::auth(format!(
                "OAuth 2.0 refresh refused ({status} {}: {}); re-authorise the account",
                p.error.as_deref().unwrap_or("?"),
                p.error_description.as_deref().unwrap_or("")
            ))
            .with_status(status));
        }
        if !(200..300).contains(&status) {
            return Err(classify(Call::Read, status, &headers, &body, self.now()));
        }
        let v: Value = serde_json::from_str(&body)
            .map_err(|_| DeliveryError::transient("OAuth 2.0 token answer is not JSON"))?;
        let access = v["access_token"]
            .as_str()
            .ok_or_else(|| DeliveryError::auth("OAuth 2.0 token answer has no access_token"))?;
        let now = self.now();
        let mut state = self.state.lock().unwrap();
        let tokens = state.oauth2.get_or_insert(OAuth2Tokens {
            access_token: SecretString::from(String::new()),
            refresh_token: None,
            rotated_at: None,
            expires_at: None,
        });
        tokens.access_token = SecretString::from(access.to_string());
        if let Some(r) = v["refresh_token"].as_str() {
            tokens.refresh_token = Some(SecretString::from(r.to_string()));
        }
        tokens.rotated_at = Some(now);
        tokens.expires_at = v["expires_in"]
            .as_i64()
            .map(|s| now + ChronoDuration::seconds(s));
        tracing::info!(
            channel = "x",
            "Refreshed the OAuth 2.0 access token; the refresh token rotated"
        );
        Ok(())
    }

    /// `GET /2/users/me`, the account behind the credentials (the signed auth path).
    pub(crate) async fn users_me(&self, fields: bool) -> Result<Value, DeliveryError> {
        let q = if fields {
            "/2/users/me?user.fields=public_metrics"
        } else {
            "/2/users/me"
        };
        let v = self.get_json(self.api_url(q)?, "GET /2/users/me").await?;
        if let Some(id) = v["data"]["id"].as_str() {
            self.state.lock().unwrap().user_id = Some(id.to_string());
        }
        Ok(v)
    }

    /// One signed `GET`; a non-2xx answer becomes its classified error.
    pub(crate) async fn get_json(&self, url: Url, what: &str) -> Result<Value, DeliveryError> {
        let reply = self
            .call(Method::GET, url, ReqBody::Empty, Call::Read, what)
            .await?;
        if !reply.ok() {
            return Err(classify(
                Call::Read,
                reply.status,
                &reply.headers,
                &reply.body,
                self.now(),
            ));
        }
        Ok(reply.json())
    }

    pub(crate) async fn own_user_id(&self) -> Result<String, DeliveryError> {
        if let Some(id) = self.state.lock().unwrap().user_id.clone() {
            return Ok(id);
        }
        let v = self.users_me(false).await?;
        v["data"]["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| DeliveryError::transient("GET /2/users/me returned no id"))
    }

    /// The account's own recent posts, newest first: `(id, text)`.
    pub(crate) async fn own_recent_posts(
        &self,
        since: Option<DateTime<Utc>>,
        max_results: u32,
    ) -> Result<Vec<(String, String)>, DeliveryError> {
        let id = self.own_user_id().await?;
        let mut url = self.api_url(&format!("/2/users/{id}/tweets"))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(since) = since {
                q.append_pair(
                    "start_time",
                    &since.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                );
            }
            q.append_pair("max_results", &max_results.clamp(5, 100).to_string());
            q.append_pair("tweet.fields", "created_at,text");
        }
        let v = self.get_json(url, "GET /2/users/:id/tweets").await?;
        Ok(v["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| {
                        Some((
                            t["id"].as_str()?.to_string(),
                            t["text"].as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Fetches an image over HTTP (no credentials) and checks X's limits. Only public
    /// addresses are reached (unless allowed by `[security]`), and the download stops as soon
    /// as it passes X's 5 MB.
    async fn fetch_image(&self, url: &str) -> Result<(Vec<u8>, String), DeliveryError> {
        let fetched = self
            .images
            .get(url, MAX_IMAGE_BYTES)
            .await
            .map_err(|e| match e {
                FetchError::Status(status) if status >= 500 || status == 429 => {
                    DeliveryError::transient(format!("fetching image {url} failed with {status}"))
                }
                FetchError::Status(status) => {
                    DeliveryError::permanent(format!("fetching image {url} failed with {status}"))
                }
                FetchError::TooLarge { .. } => too_big(url),
                FetchError::Transport(e) => transport_error(e, false),
                e @ (FetchError::NotPublic { .. } | FetchError::BadUrl(_)) => {
                    DeliveryError::permanent(format!("image {url} is not fetched: {e}"))
                }
            })?;
        let media_type = fetched
            .content_type
            .filter(|t| IMAGE_TYPES.contains(&t.as_str()))
            .or_else(|| sniff(&fetched.bytes).map(str::to_string))
            .ok_or_else(|| {
                DeliveryError::permanent(format!(
                    "image {url} is not JPEG, PNG, GIF or WEBP, which X accepts"
                ))
            })?;
        Ok((fetched.bytes, media_type))
    }

    /// One-shot `POST /2/media/upload` (images ≤ 5 MB); returns the media id.
    async fn upload_image(&self, bytes: &[u8], media_type: &str) -> Result<String, DeliveryError> {
        let url = Url::parse(&format!("{}/2/media/upload", self.upload_base))
            .map_err(|_| DeliveryError::permanent("upload_base does not form a valid URL"))?;
        let reply = self
            .call(
                Method::POST,
                url,
                ReqBody::Media { bytes, media_type },
                Call::Upload,
                "POST /2/media/upload",
            )
            .await?;
        if !reply.ok() {
            return Err(classify(
                Call::Upload,
                reply.status,
                &reply.headers,
                &reply.body,
                self.now(),
            ));
        }
        reply.json()["data"]["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| DeliveryError::transient("media upload answer has no data.id"))
    }

    /// `POST /2/tweets`: created, a duplicate, a refused reply, or a classified error.
    async fn create_post(&self, body: &Value) -> Result<Created, DeliveryError> {
        let reply = self
            .call(
                Method::POST,
                self.api_url("/2/tweets")?,
                ReqBody::Json(body),
                Call::CreatePost,
                "POST /2/tweets",
            )
            .await?;
        if reply.ok() {
            let v = reply.json();
            return v["data"]["id"]
                .as_str()
                .map(|id| Created::Id(id.to_string()))
                .ok_or_else(|| {
                    DeliveryError::uncertain(format!(
                        "X answered {} without data.id: {}",
                        reply.status,
                        snippet(&reply.body)
                    ))
                });
        }
        if is_duplicate(reply.status, &reply.body) {
            return Ok(Created::Duplicate);
        }
        if body.get("reply").is_some() && is_reply_refused(reply.status, &reply.body) {
            let p = Problem::parse(&reply.body);
            return Ok(Created::ReplyRefused(
                p.detail.unwrap_or_else(|| snippet(&reply.body)),
            ));
        }
        Err(classify(
            Call::CreatePost,
            reply.status,
            &reply.headers,
            &reply.body,
            self.now(),
        ))
    }

    fn progress(&self, delivery_id: &str) -> Option<Progress> {
        self.state
            .lock()
            .unwrap()
            .progress
            .get(delivery_id)
            .cloned()
    }

    fn save_progress(&self, delivery_id: &str, p: Progress) {
        self.state
            .lock()
            .unwrap()
            .progress
            .insert(delivery_id.to_string(), p);
    }

    fn forget_progress(&self, delivery_id: &str) {
        self.state.lock().unwrap().progress.remove(delivery_id);
    }

    /// Finds, in the own timeline since `since`, the posts of `posts` in order; returns the
    /// ids of the longest prefix found.
    async fn find_posted(
        &self,
        posts: &[String],
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<String>, DeliveryError> {
        let max = if since.is_some() {
            (posts.len() as u32 * 2 + 3).max(5)
        } else {
            100
        };
        let mut timeline = self.own_recent_posts(since, max).await?;
        timeline.reverse(); // oldest first, the order a thread was posted in
        let mut found = Vec::new();
        let mut from = 0;
        for post in posts {
            let key = match_key(post);
            match timeline[from..]
                .iter()
                .position(|(_, t)| match_key(t) == key)
            {
                Some(i) => {
                    found.push(timeline[from + i].0.clone());
                    from += i + 1;
                }
                None => break,
            }
        }
        Ok(found)
    }

    fn reconcile_since(&self, delivery_id: &str) -> Option<DateTime<Utc>> {
        // CHANNELS.md §2.8: from one minute before the attempt. After a restart the attempt
        // time is lost; a day back still covers any lease expiry.
        Some(
            self.progress(delivery_id)
                .map(|p| p.first_attempt_at)
                .unwrap_or_else(|| self.now() - ChronoDuration::hours(23))
                - ChronoDuration::minutes(1),
        )
    }

    async fn deliver_payload(
        &self,
        payload: &XPayload,
        ctx: &DeliveryContext,
    ) -> Result<Receipt, DeliveryError> {
        let mut progress = self.progress(&ctx.delivery_id).unwrap_or(Progress {
            first_attempt_at: self.now(),
            posted: Vec::new(),
            created_any: false,
        });
        self.save_progress(&ctx.delivery_id, progress.clone());
        let mut media_ids = Vec::new();
        if progress.posted.is_empty() {
            for image in payload.images.iter().take(MAX_IMAGES) {
                let (bytes, media_type) = self.fetch_image(image).await?;
                media_ids.push(self.upload_image(&bytes, &media_type).await?);
            }
        }
        let mut notes = Vec::new();
        for (i, text) in payload.posts.iter().enumerate().skip(progress.posted.len()) {
            let mut body = json!({ "text": text });
            if i == 0 && !media_ids.is_empty() {
                body["media"] = json!({ "media_ids": media_ids });
            }
            if let Some(prev) = progress.posted.last() {
                body["reply"] = json!({ "in_reply_to_tweet_id": prev });
            }
            match self.create_post(&body).await? {
                Created::Id(id) => {
                    progress.posted.push(id);
                    progress.created_any = true;
                }
                Created::ReplyRefused(detail) => {
                    return self
                        .fall_back(payload, ctx, progress, notes, i, &detail)
                        .await;
                }
                Created::Duplicate => {
                    // Duplicate content: an earlier attempt (or a crash before the answer was
                    // recorded) probably posted it. Look for it from just before the first
                    // attempt; a first attempt that finds nothing is a genuine repeat of an
                    // older post, which X refuses for good (CHANNELS.md §2.4).
                    let since = duplicate_since(&progress, ctx, self.now());
                    let found = self.find_posted(&payload.posts, Some(since)).await?;
                    match found.get(i) {
                        Some(id) => {
                            notes.push(format!("post {} was already on X", i + 1));
                            progress.posted.push(id.clone());
                        }
                        None if payload.posts.len() == 1 && ctx.attempt > 1 => {
                            self.forget_progress(&ctx.delivery_id);
                            return Ok(Receipt {
                                remote_id: None,
                                already_sent: true,
                                note: Some(
                                    "X refused duplicate content after an earlier attempt: \
                                     treated as already posted (id not found)"
                                        .into(),
                                ),
                            });
                        }
                        None => {
                            self.forget_progress(&ctx.delivery_id);
                            return Err(DeliveryError::permanent(format!(
                                "X answered 403 duplicate content for post {} of {}, and no \
                                 matching recent post was found: the same text was posted \
                                 before (recurring texts must vary, e.g. carry the date)",
                                i + 1,
                                payload.posts.len()
                            ))
                            .with_status(403));
                        }
                    }
                }
            }
            self.save_progress(&ctx.delivery_id, progress.clone());
        }
        self.forget_progress(&ctx.delivery_id);
        if payload.posts.len() > 1 {
            notes.push(format!("thread: {}", progress.posted.join(", ")));
        }
        Ok(Receipt {
            remote_id: progress.posted.first().cloned(),
            already_sent: !progress.created_any,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
        })
    }

    /// X refused post `i + 1` of a thread as a reply (403; self-serve apps may reply only
    /// where the author mentioned or quoted the account, since 2026-02-23, CHANNELS.md §9).
    ///
    /// A thread must never stop half-way with nothing pointing at the full text, and posts
    /// already on X cannot be edited or withdrawn here. So the thread falls back to
    /// shorten-and-link ([`ThreadFallback`], stored with the unit at accept time): no further
    /// reply is tried; if the first post already contains the page link nothing more is
    /// posted, otherwise one standalone post (not a reply) carries the text shortened to fit
    /// with `… {page URL}`. The delivery is sent, and its note says that the thread fell back
    /// to shorten-and-link and why. With no page URL or link to point at, the delivery fails
    /// visibly instead, naming the posts that are on X.
    async fn fall_back(
        &self,
        payload: &XPayload,
        ctx: &DeliveryContext,
        mut progress: Progress,
        mut notes: Vec<String>,
        i: usize,
        detail: &str,
    ) -> Result<Receipt, DeliveryError> {
        let n = payload.posts.len();
        let why = format!(
            "X refused a reply (403 \"{}\") for post {} of {n}",
            snippet(detail),
            i + 1
        );
        let Some(ThreadFallback { url, text }) = &payload.fallback else {
            self.forget_progress(&ctx.delivery_id);
            return Err(DeliveryError::permanent(format!(
                "{why}: the thread stopped after {i} of {n} posts ({}), and there is no page \
                 URL or link to fall back to; post the rest by hand",
                progress.posted.join(", ")
            ))
            .with_status(403));
        };
        if payload.posts[0].contains(url.as_str()) {
            notes.push(format!(
                "thread fell back to shorten-and-link: {why}; the first post already links \
                 {url}, so nothing more was posted"
            ));
        } else {
            match self.create_post(&json!({ "text": text })).await? {
                Created::Id(id) => {
                    progress.created_any = true;
                    notes.push(format!(
                        "thread fell back to shorten-and-link: {why}; posted {id} on its own, \
                         the text shortened with a link to {url}"
                    ));
                }
                Created::Duplicate => {
                    // X refuses the same text twice: an earlier attempt posted it.
                    let since = duplicate_since(&progress, ctx, self.now());
                    let found = self
                        .find_posted(std::slice::from_ref(text), Some(since))
                        .await?;
                    let id = found.first().map_or("id not found", String::as_str);
                    notes.push(format!(
                        "thread fell back to shorten-and-link: {why}; the shortened post \
                         linking {url} was already on X ({id})"
                    ));
                }
                // Not sent as a reply, so never answered as one; kept total all the same.
                Created::ReplyRefused(detail) => {
                    return Err(DeliveryError::permanent(format!(
                        "{why}, and X refused the shortened post too: {}",
                        snippet(&detail)
                    ))
                    .with_status(403));
                }
            }
        }
        self.forget_progress(&ctx.delivery_id);
        notes.push(format!("thread: {}", progress.posted.join(", ")));
        Ok(Receipt {
            remote_id: progress.posted.first().cloned(),
            already_sent: !progress.created_any,
            note: Some(notes.join("; ")),
        })
    }
}

/// Where the duplicate rule looks for an earlier copy: from just before the first attempt,
/// or a day back when this process may have lost that time (a retry after a restart).
fn duplicate_since(
    progress: &Progress,
    ctx: &DeliveryContext,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    let since = progress.first_attempt_at - ChronoDuration::minutes(1);
    if ctx.attempt > 1 {
        since.min(now - ChronoDuration::hours(23))
    } else {
        since
    }
}

const IMAGE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

fn too_big(url: &str) -> DeliveryError {
    DeliveryError::permanent(format!("image {url} is over X's 5 MB limit for images"))
}

fn parse_payload(unit: &DeliveryUnit) -> Result<XPayload, DeliveryError> {
    let payload: XPayload = serde_json::from_value(unit.payload.clone())
        .map_err(|e| DeliveryError::permanent(format!("unreadable X payload: {e}")))?;
    if payload.posts.is_empty() {
        return Err(DeliveryError::permanent("X payload has no posts"));
    }
    Ok(payload)
}

#[async_trait]
impl Channel for XChannel {
    fn name(&self) -> &str {
        "x"
    }

    fn render(&self, announcement: &Announcement) -> Result<Rendering, RenderError> {
        announcement.render_in_languages(&self.languages, |a| render::render(a, self.long_text))
    }

    fn limits(&self) -> Limits {
        // 100 posts per 15 minutes per user (CHANNELS.md §2.7); one at a time keeps a
        // thread's replies and the duplicate rule simple.
        Limits {
            rate_per_second: 100.0 / 900.0,
            burst: 10,
            concurrency: 1,
        }
    }

    async fn deliver(
        &self,
        unit: &DeliveryUnit,
        ctx: &DeliveryContext,
    ) -> Result<Receipt, DeliveryError> {
        let payload = parse_payload(unit)?;
        if let (Some(target), true) = (&self.exercise_target, ctx.exercise) {
            // One set of credentials posts as one account: a drill is never posted to the
            // city's live account when a test target is configured. It is recorded, not
            // posted; a test account is driven by its own daemon configuration.
            return Ok(Receipt {
                remote_id: None,
                already_sent: false,
                note: Some(format!(
                    "a drill: not posted to the live account (exercise_target {target} is set)"
                )),
            });
        }
        let result = self.deliver_payload(&payload, ctx).await;
        if let Err(e) = &result {
            if e.class == noroshi_channel_core::ErrorClass::Permanent {
                self.forget_progress(&ctx.delivery_id);
            }
        }
        result
    }

    async fn reconcile(
        &self,
        unit: &DeliveryUnit,
        ctx: &DeliveryContext,
    ) -> Result<Option<Receipt>, DeliveryError> {
        let payload = parse_payload(unit)?;
        let since = self.reconcile_since(&ctx.delivery_id);
        let found = self.find_posted(&payload.posts, since).await?;
        if found.len() == payload.posts.len() {
            self.forget_progress(&ctx.delivery_id);
            let note = if found.len() > 1 {
                format!("reconciled: thread found on X ({})", found.join(", "))
            } else {
                "reconciled: the post was found on X".to_string()
            };
            return Ok(Some(Receipt {
                remote_id: found.first().cloned(),
                already_sent: true,
                note: Some(note),
            }));
        }
        // Part of a thread landed. If a reply was refused and the thread fell back to
        // shorten-and-link, its standalone shortened post is the proof that it is complete.
        if let (Some(fb), false) = (&payload.fallback, found.is_empty()) {
            let short = self
                .find_posted(std::slice::from_ref(&fb.text), since)
                .await?;
            if let Some(id) = short.first() {
                self.forget_progress(&ctx.delivery_id);
                return Ok(Some(Receipt {
                    remote_id: found.first().cloned(),
                    already_sent: true,
                    note: Some(format!(
                        "reconciled: the thread fell back to shorten-and-link after X refused \
                         a reply; posts found on X: {} and the shortened post {id} linking {}",
                        found.join(", "),
                        fb.url
                    )),
                }));
            }
        }
        // Otherwise remember what landed so the next attempt continues after it.
        let mut progress = self.progress(&ctx.delivery_id).unwrap_or(Progress {
            first_attempt_at: since.unwrap_or_else(|| self.now()) + ChronoDuration::minutes(1),
            posted: Vec::new(),
            created_any: false,
        });
        if found.len() > progress.posted.len() {
            progress.posted = found;
        }
        self.save_progress(&ctx.delivery_id, progress);
        Ok(None)
    }

    async fn fetch_reach(&self) -> Result<Vec<ReachSample>, DeliveryError> {
        self.collect_reach().await
    }

    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        self.users_me(false).await.map(|_| ())
    }

    fn status(&self) -> AdapterStatus {
        let state = self.state.lock().unwrap();
        let budgets: Vec<Budget> = state.budgets.values().cloned().collect();
        let mut warnings = Vec::new();
        for b in &budgets {
            if b.remaining == Some(0) {
                let until = b
                    .resets_at
                    .map(|t| format!(" until {}", t.to_rfc3339()))
                    .unwrap_or_default();
                warnings.push(format!("X budget exhausted: {}{until}", b.name));
            }
        }
        AdapterStatus { budgets, warnings }
    }

    fn rotated_credentials(&self) -> Option<SecretString> {
        let state = self.state.lock().unwrap();
        let t = state.oauth2.as_ref()?;
        let rotated_at = t.rotated_at?;
        let saved = serde_json::json!({
            "access_token": t.access_token.expose_secret(),
            "refresh_token": t.refresh_token.as_ref().map(|r| r.expose_secret().to_string()),
            "rotated_at": rotated_at.to_rfc3339(),
            "expires_at": t.expires_at.map(|e| e.to_rfc3339()),
            "replaces": self.configured_refresh,
        });
        Some(SecretString::from(saved.to_string()))
    }

    fn restore_credentials(&self, saved: &SecretString) -> bool {
        let Ok(v) = serde_json::from_str::<Value>(saved.expose_secret()) else {
            return false;
        };
        // New credentials in the config win over a pair saved for the old ones.
        if v["replaces"].as_str() != self.configured_refresh.as_deref() {
            return false;
        }
        let Some(access) = v["access_token"].as_str() else {
            return false;
        };
        let parse = |k: &str| {
            v[k].as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        let mut state = self.state.lock().unwrap();
        if state.oauth2.is_none() {
            return false;
        }
        state.oauth2 = Some(OAuth2Tokens {
            access_token: SecretString::from(access.to_string()),
            refresh_token: v["refresh_token"]
                .as_str()
                .map(|r| SecretString::from(r.to_string())),
            rotated_at: parse("rotated_at"),
            expires_at: parse("expires_at"),
        });
        true
    }
}

/// A stable, non-reversible name for a secret (SHA-256, hex).
fn fingerprint(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

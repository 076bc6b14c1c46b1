//! The `Channel` impl: one send per attempt under LINE's retry key, the broadcast budget
//! with its disaster reserve, the quota check, health check and status.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, TimeZone, Utc};
use noroshi_channel_core::http::{retry_after, snippet, transport_error};
use noroshi_channel_core::{
    jst, system_clock, AdapterStatus, Announcement, Budget, Channel, DeliveryContext,
    DeliveryError, DeliveryUnit, ExposeSecret, Limits, Priority, ReachSample, Receipt, RenderError,
    Rendering, SecretString,
};
use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;
use serde_json::Value;

use crate::config::{Config, Mode};
use crate::error::{self, Outcome, RETRY_KEY_ACCEPTED};
use crate::render::{self, Unit};

/// Where the adapter reads the time: injectable so tests can move through an hour.
pub use noroshi_channel_core::Clock;

const HOUR: chrono::TimeDelta = chrono::TimeDelta::hours(1);
/// Request ids kept for per-message reach (views) and narrowcast progress.
const TRACKED_REQUESTS: usize = 20;

/// 00:00 JST on the first of next month: when LINE's monthly message count resets.
pub(crate) fn next_month_start(now: DateTime<Utc>) -> DateTime<Utc> {
    let local = now.with_timezone(&jst());
    let (y, m) = if local.month() == 12 {
        (local.year() + 1, 1)
    } else {
        (local.year(), local.month() + 1)
    };
    jst()
        .with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now + chrono::TimeDelta::days(31))
}

/// A sliding one-hour window of requests to an endpoint LINE limits per hour.
#[derive(Default)]
pub(crate) struct HourWindow {
    sent: VecDeque<DateTime<Utc>>,
}

impl HourWindow {
    fn prune(&mut self, now: DateTime<Utc>) {
        while self.sent.front().is_some_and(|t| *t + HOUR <= now) {
            self.sent.pop_front();
        }
    }

    /// Takes a slot, or says how long until one frees. Normal and urgent work may use
    /// `limit - reserve` slots; disaster work may use all of them.
    fn take(
        &mut self,
        now: DateTime<Utc>,
        limit: u32,
        reserve: u32,
        priority: Priority,
    ) -> Result<(), Duration> {
        self.prune(now);
        let allowed = if priority == Priority::Disaster {
            limit
        } else {
            limit.saturating_sub(reserve)
        } as usize;
        if self.sent.len() < allowed {
            self.sent.push_back(now);
            return Ok(());
        }
        // Slots free in send order: the one that lets this lane in is the
        // (len - allowed)-th oldest.
        let wait = self
            .sent
            .get(self.sent.len() - allowed)
            .map(|t| (*t + HOUR - now).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::from_secs(3600));
        Err(wait.max(Duration::from_secs(1)))
    }

    /// Gives back a slot taken for a request that was never sent.
    fn give_back(&mut self, at: DateTime<Utc>) {
        if let Some(pos) = self.sent.iter().rposition(|t| *t == at) {
            self.sent.remove(pos);
        }
    }

    fn used(&mut self, now: DateTime<Utc>) -> usize {
        self.prune(now);
        self.sent.len()
    }

    fn next_free(&self) -> Option<DateTime<Utc>> {
        self.sent.front().map(|t| *t + HOUR)
    }
}

/// The month's message budget as last read from `/v2/bot/message/quota{,/consumption}`.
#[derive(Clone, Debug)]
pub(crate) struct QuotaReading {
    /// `None` when the plan sets no target limit (`{"type":"none"}`).
    pub limit: Option<i64>,
    pub used: i64,
    pub read_at: DateTime<Utc>,
    /// Set after a send: the next check reads again, while `status()` keeps showing this.
    pub stale: bool,
}

impl QuotaReading {
    pub fn remaining(&self) -> Option<i64> {
        self.limit.map(|l| (l - self.used).max(0))
    }
}

/// A broadcast or narrowcast LINE accepted, kept for views and progress.
#[derive(Clone, Debug)]
pub(crate) struct Tracked {
    pub request_id: String,
    pub endpoint: String,
    pub accepted_at: DateTime<Utc>,
    /// Narrowcast only: the last phase seen (`waiting`, `sending`, `succeeded`, `failed`).
    pub phase: Option<String>,
    pub progress_note: Option<String>,
}

#[derive(Default)]
pub(crate) struct State {
    pub broadcast: HourWindow,
    pub narrowcast: HourWindow,
    pub quota: Option<QuotaReading>,
    pub tracked: VecDeque<Tracked>,
    /// Notes from the last reach collection (`unready` statistics and the like).
    pub reach_warnings: Vec<String>,
}

/// `GET /v2/bot/message/progress/narrowcast`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NarrowcastProgress {
    /// `waiting`, `sending`, `succeeded` or `failed`.
    pub phase: String,
    pub success_count: Option<i64>,
    pub failure_count: Option<i64>,
    pub target_count: Option<i64>,
    pub failed_description: Option<String>,
    pub error_code: Option<i64>,
    pub accepted_time: Option<String>,
    pub completed_time: Option<String>,
}

/// The LINE channel.
pub struct LineChannel {
    pub(crate) config: Config,
    token: SecretString,
    pub(crate) http: reqwest::Client,
    pub(crate) clock: Clock,
    pub(crate) state: Mutex<State>,
}

impl std::fmt::Debug for LineChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineChannel")
            .field("api_base", &self.config.api_base)
            .field("mode", &self.config.mode)
            .finish_non_exhaustive()
    }
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)?
        .to_str()
        .ok()
        .map(str::to_string)
}

impl LineChannel {
    /// Builds the adapter from a validated config (see [`crate::build`]).
    pub fn new(config: Config, http: reqwest::Client) -> Result<Self, String> {
        let token = config
            .channel_access_token
            .clone()
            .ok_or("channel_access_token is not set")?;
        Ok(LineChannel {
            config,
            token,
            http,
            clock: system_clock(),
            state: Mutex::new(State::default()),
        })
    }

    /// Replaces the clock (tests walk through the broadcast hour with it).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.api_base.trim_end_matches('/'))
    }

    /// Turns a non-2xx answer into the delivery error its class calls for.
    fn failure(
        &self,
        status: u16,
        headers: &reqwest::header::HeaderMap,
        raw: &[u8],
    ) -> DeliveryError {
        let body = error::parse_body(raw);
        let message = error::describe(status, &body);
        let err = match error::classify(status, &body) {
            Outcome::Quota => DeliveryError::quota(Some(next_month_start(self.now())), message),
            // LINE sends no Retry-After; honour one should a proxy add it.
            Outcome::RateLimited => {
                DeliveryError::rate_limited(retry_after(headers, self.now()), message)
            }
            Outcome::Auth => DeliveryError::auth(message),
            Outcome::Transient => DeliveryError::transient(message),
            Outcome::Permanent | Outcome::AlreadySent => DeliveryError::permanent(message),
        };
        err.with_status(status)
    }

    /// A read call: JSON on 2xx, a classified error otherwise.
    pub(crate) async fn get_json(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Value, DeliveryError> {
        let response = self
            .http
            .get(self.url(path))
            .query(query)
            .bearer_auth(self.token.expose_secret())
            .send()
            .await
            .map_err(|e| transport_error(e, false))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let raw = response
            .bytes()
            .await
            .map_err(|e| transport_error(e, false))?;
        if !(200..300).contains(&status) {
            return Err(self.failure(status, &headers, &raw));
        }
        serde_json::from_slice(&raw).map_err(|_| {
            DeliveryError::transient(format!(
                "LINE answered {status} with a body that is not JSON: {}",
                snippet(&String::from_utf8_lossy(&raw))
            ))
            .with_status(status)
        })
    }

    /// Reads the month's quota, reusing a fresh reading. `Ok(None)` when LINE could not
    /// say (a 5xx, a timeout): the send itself is then the judge.
    async fn quota(&self) -> Result<Option<QuotaReading>, DeliveryError> {
        let now = self.now();
        let ttl = chrono::TimeDelta::seconds(self.config.quota_cache_seconds as i64);
        if let Some(q) = &self.state.lock().unwrap().quota {
            if !q.stale && now - q.read_at < ttl {
                return Ok(Some(q.clone()));
            }
        }
        let read = async {
            let quota = self.get_json("/v2/bot/message/quota", &[]).await?;
            let limit = match quota.get("type").and_then(Value::as_str) {
                Some("limited") => quota.get("value").and_then(Value::as_i64),
                _ => None,
            };
            let used = match limit {
                // Without a target limit the consumption does not decide anything.
                None => 0,
                Some(_) => self
                    .get_json("/v2/bot/message/quota/consumption", &[])
                    .await?
                    .get("totalUsage")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
            };
            Ok::<_, DeliveryError>(QuotaReading {
                limit,
                used,
                read_at: now,
                stale: false,
            })
        };
        match read.await {
            Ok(reading) => {
                self.state.lock().unwrap().quota = Some(reading.clone());
                Ok(Some(reading))
            }
            Err(e) if e.class == noroshi_channel_core::ErrorClass::Auth => Err(e),
            Err(e) => {
                tracing::warn!(channel = "line", error = %e, "Could not read the LINE message quota; sending without the check");
                Ok(None)
            }
        }
    }

    /// Messages this body costs when LINE knows it in advance (multicast, push);
    /// a broadcast's cost is the number of reachable friends, which only LINE knows.
    fn known_cost(unit: &Unit) -> i64 {
        match unit.endpoint.as_str() {
            "multicast" => unit.body["to"].as_array().map_or(1, |a| a.len() as i64),
            _ => 1,
        }
    }

    /// Polls a narrowcast's progress (`GET /v2/bot/message/progress/narrowcast`), the way
    /// to learn whether an accepted (`202`) narrowcast was actually sent.
    pub async fn narrowcast_progress(
        &self,
        request_id: &str,
    ) -> Result<NarrowcastProgress, DeliveryError> {
        let v = self
            .get_json(
                "/v2/bot/message/progress/narrowcast",
                &[("requestId", request_id)],
            )
            .await?;
        let progress: NarrowcastProgress = serde_json::from_value(v).map_err(|e| {
            DeliveryError::transient(format!("unexpected narrowcast progress body: {e}"))
        })?;
        let note = progress_note(&progress);
        let mut state = self.state.lock().unwrap();
        if let Some(t) = state
            .tracked
            .iter_mut()
            .find(|t| t.request_id == request_id)
        {
            t.phase = Some(progress.phase.clone());
            t.progress_note = Some(note);
        }
        Ok(progress)
    }

    fn track(&self, request_id: &str, endpoint: &str) {
        if !matches!(endpoint, "broadcast" | "narrowcast") {
            return;
        }
        let mut state = self.state.lock().unwrap();
        if state.tracked.iter().any(|t| t.request_id == request_id) {
            return;
        }
        state.tracked.push_back(Tracked {
            request_id: request_id.to_string(),
            endpoint: endpoint.to_string(),
            accepted_at: self.now(),
            phase: (endpoint == "narrowcast").then(|| "waiting".to_string()),
            progress_note: None,
        });
        while state.tracked.len() > TRACKED_REQUESTS {
            state.tracked.pop_front();
        }
    }

    fn window_for<'a>(state: &'a mut State, endpoint: &str) -> Option<&'a mut HourWindow> {
        match endpoint {
            "broadcast" => Some(&mut state.broadcast),
            "narrowcast" => Some(&mut state.narrowcast),
            _ => None,
        }
    }
}

pub(crate) fn progress_note(p: &NarrowcastProgress) -> String {
    let mut note = format!("narrowcast {}", p.phase);
    if let (Some(s), Some(t)) = (p.success_count, p.target_count) {
        note.push_str(&format!(": {s} of {t} sent"));
    }
    if let Some(f) = p.failure_count.filter(|f| *f > 0) {
        note.push_str(&format!(", {f} failed"));
    }
    if let Some(d) = &p.failed_description {
        note.push_str(&format!(" ({d}, error code {})", p.error_code.unwrap_or(0)));
    }
    note
}

fn sent_message_ids(raw: &[u8]) -> Vec<String> {
    serde_json::from_slice::<Value>(raw)
        .ok()
        .and_then(|v| v.get("sentMessages").cloned())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_string))
        .collect()
}

#[async_trait]
impl Channel for LineChannel {
    fn name(&self) -> &str {
        "line"
    }

    fn render(&self, announcement: &Announcement) -> Result<Rendering, RenderError> {
        render::render(&self.config, announcement)
    }

    fn limits(&self) -> Limits {
        // Push and multicast allow 2,000 requests a second; broadcast and narrowcast are
        // held to their hourly budget by the adapter itself (`status().budgets`).
        Limits {
            rate_per_second: 100.0,
            burst: 20,
            concurrency: 4,
        }
    }

    async fn deliver(
        &self,
        unit: &DeliveryUnit,
        ctx: &DeliveryContext,
    ) -> Result<Receipt, DeliveryError> {
        let unit: Unit = serde_json::from_value(unit.payload.clone())
            .map_err(|e| DeliveryError::permanent(format!("not a LINE delivery unit: {e}")))?;
        if !matches!(
            unit.endpoint.as_str(),
            "broadcast" | "multicast" | "narrowcast" | "push"
        ) {
            return Err(DeliveryError::permanent(format!(
                "unknown LINE endpoint {:?} in the delivery unit",
                unit.endpoint
            )));
        }
        // Serialised once: a retry under the same key must be byte-for-byte the same
        // request, and serde_json's map is ordered, so the stored unit always gives these
        // same bytes.
        let body = serde_json::to_vec(&unit.body)
            .map_err(|e| DeliveryError::permanent(format!("unit body: {e}")))?;

        let now = self.now();
        let reserved = {
            let mut state = self.state.lock().unwrap();
            match Self::window_for(&mut state, &unit.endpoint) {
                None => None,
                Some(window) => match window.take(
                    now,
                    self.config.broadcast_per_hour,
                    self.config.disaster_reserve_per_hour,
                    // A drill never spends the hourly requests kept for live alerts.
                    if ctx.exercise && ctx.priority == Priority::Disaster {
                        Priority::Urgent
                    } else {
                        ctx.priority
                    },
                ) {
                    Ok(()) => Some(now),
                    Err(wait) => {
                        let why = if ctx.priority == Priority::Disaster && !ctx.exercise {
                            format!(
                                "LINE {} budget of {} requests an hour is used up",
                                unit.endpoint, self.config.broadcast_per_hour
                            )
                        } else {
                            format!(
                                "LINE {} budget: only the {} requests an hour reserved for disasters are left",
                                unit.endpoint, self.config.disaster_reserve_per_hour
                            )
                        };
                        return Err(DeliveryError::rate_limited(Some(wait), why));
                    }
                },
            }
        };
        let give_back = || {
            if let Some(at) = reserved {
                let mut state = self.state.lock().unwrap();
                if let Some(w) = Self::window_for(&mut state, &unit.endpoint) {
                    w.give_back(at);
                }
            }
        };

        // The quota as last read in the background ([`Channel::refresh`]): never a request
        // on the send's path, so a disaster alert waits for nothing but its own send.
        let cached = self.state.lock().unwrap().quota.clone();
        if let Some(q) = cached {
            if let Some(remaining) = q.remaining() {
                let cost = Self::known_cost(&unit);
                if remaining <= 0 || remaining < cost {
                    give_back();
                    let until = next_month_start(now);
                    let message = if ctx.priority == Priority::Disaster {
                        format!(
                            "DISASTER ALERT NOT SENT on LINE: the monthly message quota is exhausted ({} of {} used); raise the plan's limit in LINE Official Account Manager",
                            q.used,
                            q.limit.unwrap_or(0)
                        )
                    } else {
                        format!(
                            "LINE monthly message quota exhausted ({} of {} used, {cost} needed); resets {}",
                            q.used,
                            q.limit.unwrap_or(0),
                            until.with_timezone(&jst()).format("%Y-%m-%d %H:%M JST")
                        )
                    };
                    return Err(DeliveryError::quota(Some(until), message));
                }
            }
        }

        let response = self
            .http
            .post(self.url(&format!("/v2/bot/message/{}", unit.endpoint)))
            .bearer_auth(self.token.expose_secret())
            .header(CONTENT_TYPE, "application/json")
            .header("X-Line-Retry-Key", &ctx.idempotency_key)
            .body(body)
            .send()
            .await;
        // Any attempt that may have reached LINE changes the month's count: read it again.
        if let Some(q) = self.state.lock().unwrap().quota.as_mut() {
            q.stale = true;
        }
        // With a retry key a resend is safe, so a timeout after sending is transient, not
        // uncertain (CHANNELS.md §1.5: "500 or timeout → retry").
        let response = response.map_err(|e| transport_error(e, false))?;
        let status = response.status().as_u16();
        let request_id = header(&response, "x-line-request-id");
        let accepted_id = header(&response, "x-line-accepted-request-id");
        let headers = response.headers().clone();
        let raw = response.bytes().await.unwrap_or_default();

        if (200..300).contains(&status) {
            let mut note = format!("{} accepted ({status})", unit.endpoint);
            let ids = sent_message_ids(&raw);
            if !ids.is_empty() {
                note.push_str(&format!("; sentMessages {}", ids.join(",")));
            }
            if let Some(id) = &request_id {
                self.track(id, &unit.endpoint);
                if unit.endpoint == "narrowcast" {
                    note.push_str(
                        "; sending asynchronously, progress is polled with the reach collection",
                    );
                }
            }
            tracing::info!(channel = "line", endpoint = %unit.endpoint, request_id = request_id.as_deref().unwrap_or(""), delivery_id = %ctx.delivery_id, "LINE accepted the message");
            return Ok(Receipt {
                remote_id: request_id,
                already_sent: false,
                note: Some(note),
            });
        }
        let parsed = error::parse_body(&raw);
        if status == 409
            && (accepted_id.is_some() || parsed.message.starts_with(RETRY_KEY_ACCEPTED))
        {
            let mut note = format!(
                "retry key already accepted (this attempt's request id {})",
                request_id.as_deref().unwrap_or("?")
            );
            let ids = sent_message_ids(&raw);
            if !ids.is_empty() {
                note.push_str(&format!("; sentMessages {}", ids.join(",")));
            }
            if let Some(id) = &accepted_id {
                self.track(id, &unit.endpoint);
            }
            tracing::info!(channel = "line", endpoint = %unit.endpoint, accepted_request_id = accepted_id.as_deref().unwrap_or(""), delivery_id = %ctx.delivery_id, "LINE had already accepted this delivery");
            return Ok(Receipt {
                remote_id: accepted_id,
                already_sent: true,
                note: Some(note),
            });
        }
        let mut err = self.failure(status, &headers, &raw);
        if status == 409 {
            err = DeliveryError::permanent(err.message).with_status(status);
        }
        if let Some(id) = request_id {
            err.message.push_str(&format!(" [x-line-request-id {id}]"));
        }
        Err(err)
    }

    // No `reconcile`: within the retry key's 24 hours, resending under the same key *is*
    // the reconciliation (LINE answers 409 with the accepted request id).

    async fn fetch_reach(&self) -> Result<Vec<ReachSample>, DeliveryError> {
        crate::reach::collect(self).await
    }

    /// `X-Line-Retry-Key` is honoured for 24 hours (CHANNELS.md §1).
    fn retry_key_lifetime(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(24 * 3600))
    }

    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        self.get_json("/v2/bot/info", &[]).await.map(|_| ())
    }

    /// Every few seconds; `quota` reads LINE only when its reading is older than
    /// `quota_cache_seconds` or a send has changed the month's count since.
    fn refresh_interval(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(5))
    }

    /// Reads the month's quota in the background (and again soon after a send changed it),
    /// so sends only ever consult the cached reading.
    async fn refresh(&self) -> Result<(), DeliveryError> {
        self.quota().await.map(|_| ())
    }

    fn status(&self) -> AdapterStatus {
        let now = self.now();
        let mut state = self.state.lock().unwrap();
        let mut status = AdapterStatus::default();
        let limit = self.config.broadcast_per_hour as i64;
        let reserve = self.config.disaster_reserve_per_hour as i64;
        let mut windows = vec![("broadcast", &mut state.broadcast)];
        if self.config.mode == Mode::Narrowcast {
            windows = vec![("narrowcast", &mut state.narrowcast)];
        }
        for (name, window) in windows {
            let used = window.used(now) as i64;
            let resets_at = window.next_free();
            status.budgets.push(Budget {
                name: format!("{name}_requests_per_hour"),
                remaining: Some((limit - used).max(0)),
                limit: Some(limit),
                resets_at,
            });
            status.budgets.push(Budget {
                name: format!("{name}_requests_per_hour_non_disaster"),
                remaining: Some((limit - reserve - used).max(0)),
                limit: Some(limit - reserve),
                resets_at,
            });
            if used >= limit - reserve && used < limit {
                status.warnings.push(format!(
                    "LINE {name} budget: only the disaster reserve ({} of {limit} an hour) is left",
                    limit - used
                ));
            }
        }
        if let Some(q) = &state.quota {
            if let (Some(l), Some(remaining)) = (q.limit, q.remaining()) {
                status.budgets.push(Budget {
                    name: "monthly_messages".into(),
                    remaining: Some(remaining),
                    limit: Some(l),
                    resets_at: Some(next_month_start(now)),
                });
                if remaining <= 0 {
                    status.warnings.push(format!(
                        "LINE monthly message quota exhausted ({} of {l} used): only new month or a higher limit will send",
                        q.used
                    ));
                } else if remaining < self.config.quota_warning_below {
                    status.warnings.push(format!(
                        "LINE monthly message quota low: {remaining} of {l} messages left"
                    ));
                }
            }
        }
        for t in &state.tracked {
            if t.phase.as_deref() == Some("failed") {
                status.warnings.push(format!(
                    "LINE narrowcast {} failed: {}",
                    t.request_id,
                    t.progress_note.as_deref().unwrap_or("no detail")
                ));
            }
        }
        status.warnings.extend(state.reach_warnings.iter().cloned());
        status
    }
}

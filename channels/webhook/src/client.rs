//! The webhook adapter: one signed request per delivery, classified by HTTP status.

use std::fmt;

use async_trait::async_trait;
use noroshi_channel_core::http::{retry_after, transport_error};
use noroshi_channel_core::{
    Announcement, Channel, Clock, DeliveryContext, DeliveryError, DeliveryUnit, ExposeSecret,
    Limits, Receipt, RenderError, Rendering, SecretString,
};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, LOCATION};
use reqwest::Method;

use crate::config::Config;
use crate::error::classify;
use crate::render::{render, WebhookPayload};
use crate::sign::{signature, timestamped};

/// One `[channels.webhook.NAME]` instance.
pub struct WebhookChannel {
    name: String,
    http: reqwest::Client,
    url: String,
    method: Method,
    /// Plain and secret headers together; secret values are marked sensitive so reqwest
    /// hides them from its own `Debug`.
    headers: HeaderMap,
    secrets: Vec<SecretString>,
    template: String,
    max_length: Option<usize>,
    /// A drill's test endpoint.
    exercise_target: Option<String>,
    signing_secret: Option<SecretString>,
    signature_header: HeaderName,
    timestamp_header: HeaderName,
    timestamp_signature_header: HeaderName,
    clock: Clock,
}

impl fmt::Debug for WebhookChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookChannel")
            .field("name", &self.name)
            .field("method", &self.method)
            .field("signed", &self.signing_secret.is_some())
            .finish_non_exhaustive()
    }
}

impl WebhookChannel {
    /// `config` must have passed `validate()`.
    pub(crate) fn new(name: &str, config: &Config, http: reqwest::Client, clock: Clock) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (k, v) in &config.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                headers.insert(k, v);
            }
        }
        for (k, v) in &config.secret_headers {
            if let (Ok(k), Ok(mut v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v.expose_secret()),
            ) {
                v.set_sensitive(true);
                headers.insert(k, v);
            }
        }
        let header =
            |name: &str| HeaderName::from_bytes(name.as_bytes()).expect("validated header name");
        WebhookChannel {
            name: format!("webhook.{name}"),
            http,
            // Normalised as reqwest prints it, so a redirect is recognisable.
            url: url::Url::parse(&config.url)
                .map(String::from)
                .unwrap_or_else(|_| config.url.clone()),
            method: Method::from_bytes(config.method.as_bytes()).unwrap_or(Method::POST),
            headers,
            secrets: config
                .secret_headers
                .values()
                .chain(config.signing_secret.iter())
                .cloned()
                .collect(),
            template: config.template().to_string(),
            max_length: config.max_length,
            exercise_target: config.exercise_target.clone(),
            signing_secret: config.signing_secret.clone(),
            signature_header: header(&config.signature_header),
            timestamp_header: header(&config.timestamp_header),
            timestamp_signature_header: header(&format!("{}-Signature", config.timestamp_header)),
            clock,
        }
    }

    fn scrub(&self, text: &str) -> String {
        self.secrets.iter().fold(text.to_string(), |acc, s| {
            let s = s.expose_secret();
            if s.is_empty() {
                acc
            } else {
                acc.replace(s, "[redacted]")
            }
        })
    }

    fn scrubbed(&self, mut err: DeliveryError) -> DeliveryError {
        err.message = self.scrub(&err.message);
        err
    }
}

#[async_trait]
impl Channel for WebhookChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn render(&self, announcement: &Announcement) -> Result<Rendering, RenderError> {
        render(&self.template, self.max_length, announcement)
    }

    fn limits(&self) -> Limits {
        Limits {
            rate_per_second: 5.0,
            burst: 10,
            concurrency: 2,
        }
    }

    async fn deliver(
        &self,
        unit: &DeliveryUnit,
        ctx: &DeliveryContext,
    ) -> Result<Receipt, DeliveryError> {
        let payload: WebhookPayload =
            serde_json::from_value(unit.payload.clone()).map_err(|e| {
                DeliveryError::permanent(format!("the stored unit is not a webhook body: {e}"))
            })?;
        let body = payload.body.into_bytes();
        let mut headers = self.headers.clone();
        let key = HeaderValue::from_str(&ctx.idempotency_key)
            .map_err(|_| DeliveryError::permanent("the idempotency key is not a header value"))?;
        headers.insert("idempotency-key", key);
        if let Some(secret) = &self.signing_secret {
            let secret = secret.expose_secret().as_bytes();
            // Signed at send time, not render time: each attempt carries a fresh timestamp.
            let now = (self.clock)().timestamp();
            let sig = |s: String| HeaderValue::from_str(&s).expect("hex is a header value");
            headers.insert(self.signature_header.clone(), sig(signature(secret, &body)));
            headers.insert(self.timestamp_header.clone(), sig(now.to_string()));
            headers.insert(
                self.timestamp_signature_header.clone(),
                sig(signature(secret, &timestamped(now, &body))),
            );
        }
        // A drill goes to the test endpoint when one is configured, never to the live one.
        let url = match (&self.exercise_target, ctx.exercise) {
            (Some(target), true) => target,
            _ => &self.url,
        };
        let response = self
            .http
            .request(self.method.clone(), url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| self.scrubbed(transport_error(e, true)))?;
        let status = response.status().as_u16();
        if response.url().as_str() != url.as_str() {
            // The shared client follows redirects, and a 301/302/303 turns the POST into a
            // bodiless GET whose 200 would read as "delivered". Only the query-less target
            // is named: a redirect may carry a token in its query.
            let mut target = response.url().clone();
            target.set_query(None);
            return Err(DeliveryError::permanent(format!(
                "the endpoint redirected to {target} (HTTP {status} there): set `url` to the \
                 final address (a 307/308 redirect may already have delivered this request)"
            ))
            .with_status(status));
        }
        let wait = retry_after(response.headers(), (self.clock)());
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // A body that cannot be read after a 2xx still means "accepted".
        let text = response.text().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(self.scrubbed(classify(status, wait, &text)));
        }
        let id = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| match v.get("id")? {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            });
        Ok(Receipt {
            remote_id: id.or(location),
            already_sent: false,
            note: None,
        })
    }

    // `reconcile` keeps the default (`None`, send again): a generic endpoint offers no way
    // to look, and the resend carries the same `Idempotency-Key` for it to deduplicate.

    /// A `HEAD` to the endpoint with the configured headers: proves it is reachable and
    /// that it does not refuse the credentials, without posting anything.
    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        let response = self
            .http
            .head(&self.url)
            .headers(self.headers.clone())
            .send()
            .await
            .map_err(|e| self.scrubbed(transport_error(e, false)))?;
        let status = response.status().as_u16();
        match status {
            401 | 403 | 500..=599 => Err(self.scrubbed(classify(status, None, ""))),
            // 404/405 on HEAD only say the endpoint takes POST; it answered.
            _ => Ok(()),
        }
    }
}

//! Bearer tokens and roles. Tokens are kept as SHA-256 digests and compared in constant
//! time; the first start with no token configured creates an admin token.

use axum::http::HeaderMap;
use axum::response::IntoResponse;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::problem::Problem;

/// Roles, each including the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Staff,
    Disaster,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "staff" => Some(Role::Staff),
            "disaster" => Some(Role::Disaster),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Staff => "staff",
            Role::Disaster => "disaster",
            Role::Admin => "admin",
        }
    }
}

/// How a caller proved who they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// `Authorization: Bearer …` with a configured (or first-start) API token.
    BearerToken,
    /// A console session (signed in with a password).
    Session,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::BearerToken => "bearer_token",
            Via::Session => "session",
        }
    }
}

/// Who made a request: extracted once per request (by [`identify_caller`] or as a handler
/// argument), and the one place roles are checked ([`Caller::require`]).
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    pub via: Via,
    /// The client's address: the socket's, or the one a trusted proxy forwarded.
    pub client: Option<std::net::IpAddr>,
}

impl Caller {
    /// Refuses (403) a caller below `min`.
    pub fn require(&self, min: Role) -> Result<(), Problem> {
        if self.role < min {
            return Err(Problem::forbidden(format!(
                "this needs the {} role; token `{}` has {}",
                min.as_str(),
                self.name,
                self.role.as_str()
            )));
        }
        Ok(())
    }
}

impl axum::extract::FromRequestParts<super::SharedState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &super::SharedState,
    ) -> Result<Caller, Problem> {
        if let Some(c) = parts.extensions.get::<Caller>() {
            return Ok(c.clone());
        }
        let c = identify(state, parts).ok_or_else(Problem::unauthorized)?;
        parts.extensions.insert(c.clone());
        Ok(c)
    }
}

/// The caller of a request, if its credentials are valid.
fn identify(state: &super::SharedState, parts: &axum::http::request::Parts) -> Option<Caller> {
    let client = connect_ip(parts)
        .map(|peer| super::client_address(peer, &parts.headers, &state.trusted_proxies));
    state.tokens.identify(&parts.headers).map(|mut c| {
        c.client = client;
        c
    })
}

pub(crate) fn connect_ip(parts: &axum::http::request::Parts) -> Option<std::net::IpAddr> {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Middleware on the API: identifies the caller once (handlers take it from the request),
/// and hands every successful write to the audit log.
pub async fn identify_caller(
    axum::extract::State(state): axum::extract::State<super::SharedState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (mut parts, body) = request.into_parts();
    let caller = identify(&state, &parts);
    if let Some(c) = &caller {
        parts.extensions.insert(c.clone());
    }
    // Each token has its share of requests; callers without one share their address's.
    let key = match &caller {
        Some(c) => super::ApiKey::Token(c.name.clone()),
        None => super::ApiKey::Address(super::client_address(
            connect_ip(&parts).unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()),
            &parts.headers,
            &state.trusted_proxies,
        )),
    };
    if let Err(wait) = state.limits.api.check(&key) {
        let who = match &key {
            super::ApiKey::Token(name) => format!("token `{name}`"),
            super::ApiKey::Address(_) => "this address".to_string(),
        };
        return Problem::too_many_requests(
            format!(
                "{who} has made more requests than server.api_per_minute allows; \
                 nothing was done; try again in {wait} s"
            ),
            wait,
        )
        .into_response();
    }
    let write = !matches!(
        parts.method,
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    let route = parts
        .extensions
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_string());
    // The path as the client sent it (a nested router sees it without its prefix).
    let path = parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map(|u| u.0.path().to_string())
        .unwrap_or_else(|| parts.uri.path().to_string());
    let method = parts.method.to_string();
    let response = next
        .run(axum::extract::Request::from_parts(parts, body))
        .await;
    if let (true, Some(c)) = (write && response.status().is_success(), caller) {
        state.audit.record(super::audit::Entry {
            at: crate::clock::now_ms(),
            who: c.name,
            role: c.role.as_str(),
            via: c.via.as_str(),
            client: c.client.map(|ip| ip.to_string()),
            method,
            route: route.unwrap_or_else(|| path.clone()),
            path,
            status: response.status().as_u16(),
        });
    }
    response
}

/// Where a token comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `[[auth.tokens]]` in the config file: fixed at start, never revoked at runtime.
    Config,
    /// The `api_tokens` table: the first-start admin token, and tokens an admin created on
    /// the console. Added and revoked while the daemon runs.
    Stored,
}

#[derive(Clone)]
struct Entry {
    name: String,
    role: Role,
    digest: [u8; 32],
    source: Source,
}

#[derive(Default)]
struct Inner {
    entries: Vec<Entry>,
    /// Bumped by every change made here, so a reload read before a change cannot undo it.
    generation: u64,
}

/// The known tokens (digests only). Clones share one set: a token added or revoked on the
/// console opens (or stops opening) the API at once, without a restart.
#[derive(Clone, Default)]
pub struct Tokens(std::sync::Arc<std::sync::RwLock<Inner>>);

pub fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn digest_of(name: &str, hex_digest: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(hex_digest).map_err(|_| format!("token {name}: digest is not hex"))?;
    bytes
        .try_into()
        .map_err(|_| format!("token {name}: digest is not 32 bytes"))
}

impl Tokens {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the list half-written (every change
        // is one push, retain or swap), so a poisoned lock is still a good one.
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
    fn push(&self, name: &str, role: Role, digest: [u8; 32], source: Source) {
        let mut inner = self.write();
        inner.generation += 1;
        if source == Source::Stored {
            inner
                .entries
                .retain(|e| !(e.source == Source::Stored && e.name == name));
        }
        inner.entries.push(Entry {
            name: name.to_string(),
            role,
            digest,
            source,
        });
    }

    /// A configured token, by its SHA-256 (hex).
    pub fn add_digest_hex(
        &mut self,
        name: &str,
        role: Role,
        hex_digest: &str,
    ) -> Result<(), String> {
        self.push(name, role, digest_of(name, hex_digest)?, Source::Config);
        Ok(())
    }
    /// A configured token, in plain text (only its digest is kept).
    pub fn add_plain(&mut self, name: &str, role: Role, token: &str) {
        self.push(name, role, sha256(token), Source::Config);
    }
    /// A token from the `api_tokens` table (revocable at runtime). Replaces a stored one of
    /// the same name (a reload may have brought it in already).
    pub fn add_stored(&self, name: &str, role: Role, hex_digest: &str) -> Result<(), String> {
        self.push(name, role, digest_of(name, hex_digest)?, Source::Stored);
        Ok(())
    }
    /// Revokes a stored token: it opens nothing from now on. False if none had that name.
    pub fn remove_stored(&self, name: &str) -> bool {
        let mut inner = self.write();
        let before = inner.entries.len();
        inner
            .entries
            .retain(|e| !(e.source == Source::Stored && e.name == name));
        inner.generation += 1;
        inner.entries.len() < before
    }
    /// Replaces the stored tokens with the table's rows (another instance on the same
    /// database may have added or revoked some), unless this set changed since `generation`
    /// was read. With configured tokens, the first-start token (no `created_by`) opens
    /// nothing, as at start.
    pub fn reload_stored(
        &self,
        generation: u64,
        rows: &[crate::store::people::StoredToken],
    ) -> bool {
        let mut inner = self.write();
        if inner.generation != generation {
            return false;
        }
        let configured = inner.entries.iter().any(|e| e.source == Source::Config);
        inner.entries.retain(|e| e.source == Source::Config);
        for r in rows {
            if configured && r.created_by.is_none() {
                continue;
            }
            let (Some(role), Ok(digest)) =
                (Role::parse(&r.role), digest_of(&r.name, &r.sha256_hex))
            else {
                tracing::warn!(token = %r.name, "A stored API token has an unknown role or a bad digest; it opens nothing");
                continue;
            };
            inner.entries.push(Entry {
                name: r.name.clone(),
                role,
                digest,
                source: Source::Stored,
            });
        }
        inner.generation += 1;
        true
    }
    /// The set's version: pass it to [`Tokens::reload_stored`].
    pub fn generation(&self) -> u64 {
        self.read().generation
    }
    pub fn is_empty(&self) -> bool {
        self.read().entries.is_empty()
    }
    /// The tokens that open the API now: name, role, source (never the digest).
    pub fn list(&self) -> Vec<(String, Role, Source)> {
        self.read()
            .entries
            .iter()
            .map(|e| (e.name.clone(), e.role, e.source))
            .collect()
    }

    /// Finds the caller. Every entry is compared (in constant time each), so the time taken
    /// does not tell which token was close.
    pub fn identify(&self, headers: &HeaderMap) -> Option<Caller> {
        let value = headers
            .get(axum::http::header::AUTHORIZATION)?
            .to_str()
            .ok()?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))?
            .trim();
        if token.is_empty() {
            return None;
        }
        let digest = sha256(token);
        let mut found: Option<Caller> = None;
        for e in &self.read().entries {
            if bool::from(e.digest.ct_eq(&digest)) && found.is_none() {
                found = Some(Caller {
                    name: e.name.clone(),
                    role: e.role,
                    via: Via::BearerToken,
                    client: None,
                });
            }
        }
        found
    }
}

/// How often an instance re-reads the stored tokens (PostgreSQL: other instances on the
/// same database create and revoke them too). This instance's own changes apply at once.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Keeps the stored tokens in step with the `api_tokens` table, for as long as it runs.
pub async fn follow_stored_tokens(state: super::SharedState) {
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        let generation = state.tokens.generation();
        match crate::store::people::stored_tokens(&state.db).await {
            Ok(rows) => {
                state.tokens.reload_stored(generation, &rows);
            }
            Err(e) => tracing::warn!(error = %e, "Could not re-read the stored API tokens"),
        }
    }
}

/// A new random token: 32 bytes, URL-safe base64 (43 characters), prefixed for grep-ability
/// in secret scanners.
pub fn new_token() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!(
        "nrs_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// What every handler does: identify the caller, then check the role.
    fn require(t: &Tokens, h: &HeaderMap, min: Role) -> Result<Caller, Problem> {
        let caller = t.identify(h).ok_or_else(Problem::unauthorized)?;
        caller.require(min)?;
        Ok(caller)
    }

    #[test]
    fn roles_include_lower_roles_and_tokens_are_matched_by_digest() {
        let mut t = Tokens::default();
        t.add_plain("desk", Role::Staff, "s3cret");
        t.add_digest_hex("boss", Role::Admin, &hex::encode(sha256("other")))
            .unwrap();
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer s3cret"));
        assert_eq!(require(&t, &h, Role::Viewer).unwrap().name, "desk");
        assert_eq!(require(&t, &h, Role::Admin).unwrap_err().status, 403);
        h.insert("authorization", HeaderValue::from_static("Bearer other"));
        assert_eq!(require(&t, &h, Role::Admin).unwrap().name, "boss");
        h.insert("authorization", HeaderValue::from_static("Bearer nope"));
        assert_eq!(require(&t, &h, Role::Viewer).unwrap_err().status, 401);
        assert!(new_token().starts_with("nrs_") && new_token().len() == 47);
    }

    #[test]
    fn stored_tokens_are_added_and_revoked_at_runtime_and_configured_ones_stay() {
        let mut t = Tokens::default();
        t.add_plain("desk", Role::Staff, "s3cret");
        let shared = t.clone();
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer console"));
        assert!(shared.identify(&h).is_none());
        t.add_stored("bot", Role::Viewer, &hex::encode(sha256("console")))
            .unwrap();
        t.add_stored("bot", Role::Viewer, &hex::encode(sha256("console")))
            .unwrap();
        assert_eq!(t.list().len(), 2, "one entry per name");
        assert_eq!(
            shared.identify(&h).unwrap().role,
            Role::Viewer,
            "clones share"
        );
        assert!(
            !t.remove_stored("desk"),
            "a configured token is not revoked"
        );
        assert!(t.remove_stored("bot"));
        assert!(shared.identify(&h).is_none());
        // A reload: the first-start token (no creator) opens nothing beside configured ones,
        // and a reload read before a change made here is dropped.
        let row = |name: &str, token: &str, by: Option<&str>| crate::store::people::StoredToken {
            name: name.into(),
            role: "admin".into(),
            sha256_hex: hex::encode(sha256(token)),
            created_by: by.map(str::to_string),
            created_at: 0,
        };
        let rows = [
            row("admin", "first", None),
            row("ops", "console", Some("kanri")),
        ];
        let stale = t.generation();
        t.add_stored("x", Role::Viewer, &hex::encode(sha256("x")))
            .unwrap();
        assert!(!t.reload_stored(stale, &rows));
        assert!(t.reload_stored(t.generation(), &rows));
        let names: Vec<String> = t.list().into_iter().map(|(n, _, _)| n).collect();
        assert_eq!(names, ["desk", "ops"]);
        assert_eq!(shared.identify(&h).unwrap().name, "ops");
    }
}

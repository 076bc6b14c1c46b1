//! Bearer tokens and roles. Tokens are kept as SHA-256 digests and compared in constant
//! time; the first start with no token configured creates an admin token.

use axum::http::HeaderMap;
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

/// Who made a request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

#[derive(Clone)]
struct Entry {
    name: String,
    role: Role,
    digest: [u8; 32],
}

/// The known tokens (digests only).
#[derive(Clone, Default)]
pub struct Tokens(Vec<Entry>);

pub fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    pub fn add_digest_hex(
        &mut self,
        name: &str,
        role: Role,
        hex_digest: &str,
    ) -> Result<(), String> {
        let bytes =
            hex::decode(hex_digest).map_err(|_| format!("token {name}: digest is not hex"))?;
        let digest: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("token {name}: digest is not 32 bytes"))?;
        self.0.push(Entry {
            name: name.to_string(),
            role,
            digest,
        });
        Ok(())
    }
    pub fn add_plain(&mut self, name: &str, role: Role, token: &str) {
        self.0.push(Entry {
            name: name.to_string(),
            role,
            digest: sha256(token),
        });
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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
        for e in &self.0 {
            if bool::from(e.digest.ct_eq(&digest)) && found.is_none() {
                found = Some(Caller {
                    name: e.name.clone(),
                    role: e.role,
                });
            }
        }
        found
    }

    /// The caller, if they hold at least `min`.
    pub fn require(&self, headers: &HeaderMap, min: Role) -> Result<Caller, Problem> {
        let caller = self.identify(headers).ok_or_else(Problem::unauthorized)?;
        if caller.role < min {
            return Err(Problem::forbidden(format!(
                "this needs the {} role; token `{}` has {}",
                min.as_str(),
                caller.name,
                caller.role.as_str()
            )));
        }
        Ok(caller)
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

    #[test]
    fn roles_include_lower_roles_and_tokens_are_matched_by_digest() {
        let mut t = Tokens::default();
        t.add_plain("desk", Role::Staff, "s3cret");
        t.add_digest_hex("boss", Role::Admin, &hex::encode(sha256("other")))
            .unwrap();
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer s3cret"));
        assert_eq!(t.require(&h, Role::Viewer).unwrap().name, "desk");
        assert_eq!(t.require(&h, Role::Admin).unwrap_err().status, 403);
        h.insert("authorization", HeaderValue::from_static("Bearer other"));
        assert_eq!(t.require(&h, Role::Admin).unwrap().name, "boss");
        h.insert("authorization", HeaderValue::from_static("Bearer nope"));
        assert_eq!(t.require(&h, Role::Viewer).unwrap_err().status, 401);
        assert!(new_token().starts_with("nrs_") && new_token().len() == 47);
    }
}

//! OAuth 1.0a HMAC-SHA1 signing (RFC 5849 §3.4, X "Creating a signature"), shared by the
//! adapter and the fake so both compute the same base string.

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha1::Sha1;
use url::Url;

/// RFC 3986 percent-encoding with only `A–Z a–z 0–9 - . _ ~` unreserved (space is `%20`).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reverses [`percent_encode`] (for the values of a received `Authorization` header).
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The base string URI (RFC 5849 §3.4.1.2): scheme and host lowercase, default port
/// dropped, no query or fragment.
pub fn base_string_uri(url: &Url) -> String {
    let scheme = url.scheme().to_ascii_lowercase();
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let port = match (url.port(), scheme.as_str()) {
        (Some(80), "http") | (Some(443), "https") | (None, _) => String::new(),
        (Some(p), _) => format!(":{p}"),
    };
    format!("{scheme}://{host}{port}{}", url.path())
}

/// The signature base string from decoded parameters (query, form body, `oauth_*` except
/// the signature): encode each, sort by key then value, join, then
/// `METHOD&enc(uri)&enc(params)`.
pub fn signature_base_string(method: &str, base_uri: &str, params: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (percent_encode(k), percent_encode(v)))
        .collect();
    encoded.sort();
    let joined = encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        percent_encode(base_uri),
        percent_encode(&joined)
    )
}

/// base64(HMAC-SHA1(`enc(consumer_secret)&enc(token_secret)`, base string)).
pub fn sign(base_string: &str, consumer_secret: &str, token_secret: &str) -> String {
    let key = format!(
        "{}&{}",
        percent_encode(consumer_secret),
        percent_encode(token_secret)
    );
    let mut mac = Hmac::<Sha1>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(base_string.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The query of `url`, decoded as `application/x-www-form-urlencoded` (RFC 5849 §3.4.1.3.1).
pub fn query_params(url: &Url) -> Vec<(String, String)> {
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A form body's parameters (only `application/x-www-form-urlencoded` bodies are signed).
pub fn form_params(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The four OAuth 1.0a secrets, borrowed for one signature.
pub struct Credentials<'a> {
    pub consumer_key: &'a str,
    pub consumer_secret: &'a str,
    pub token: &'a str,
    pub token_secret: &'a str,
}

/// A 32-character alphanumeric nonce, unique per request.
pub fn new_nonce() -> String {
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// The `Authorization: OAuth …` header for a request to `url` (its query is signed) with
/// `form` body parameters (empty for JSON and multipart bodies, which are not signed).
pub fn authorization_header(
    creds: &Credentials<'_>,
    method: &str,
    url: &Url,
    form: &[(String, String)],
    nonce: &str,
    timestamp: i64,
) -> String {
    let timestamp = timestamp.to_string();
    let oauth: Vec<(String, String)> = [
        ("oauth_consumer_key", creds.consumer_key),
        ("oauth_nonce", nonce),
        ("oauth_signature_method", "HMAC-SHA1"),
        ("oauth_timestamp", timestamp.as_str()),
        ("oauth_token", creds.token),
        ("oauth_version", "1.0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut params = query_params(url);
    params.extend_from_slice(form);
    params.extend(oauth.iter().cloned());
    let base = signature_base_string(method, &base_string_uri(url), &params);
    let signature = sign(&base, creds.consumer_secret, creds.token_secret);
    let mut header: Vec<(String, String)> = oauth;
    header.push(("oauth_signature".into(), signature));
    header.sort();
    let fields = header
        .iter()
        .map(|(k, v)| format!("{}=\"{}\"", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join(", ");
    format!("OAuth {fields}")
}

/// The decoded parameters of an `Authorization: OAuth …` header (`realm` dropped).
pub fn parse_authorization_header(header: &str) -> Option<Vec<(String, String)>> {
    let rest = header.trim().strip_prefix("OAuth ")?;
    let mut out = Vec::new();
    for field in rest.split(',') {
        let (k, v) = field.trim().split_once('=')?;
        let v = v.trim().strip_prefix('"')?.strip_suffix('"')?;
        let (k, v) = (percent_decode(k.trim())?, percent_decode(v)?);
        if k != "realm" {
            out.push((k, v));
        }
    }
    Some(out)
}

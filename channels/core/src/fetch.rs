//! Fetching what a submitter pointed at (an announcement's `images`) without letting that
//! URL probe the city's own network, and without reading more than a cap.
//!
//! Two checks, one address rule ([`check_ip`]):
//!
//! - at accept time, [`literal_host_refusal`]: an image URL whose host is a literal address
//!   that is not public (`https://127.0.0.1/…`, `https://[::1]/…`, `https://10.0.0.5/…`,
//!   `https://169.254.169.254/…`) is refused with the field named; no DNS there;
//! - at fetch time, [`Fetcher`]: a literal host is checked again, and a name is resolved by
//!   the fetch client's own resolver, which refuses it when any address it resolves to is
//!   not public. The connection is made only to the addresses that resolver returned, so a
//!   name that changes its answer between a check and the connect (DNS rebinding) cannot
//!   reach a private address. No proxy is used (a proxy would resolve the name itself) and
//!   redirects are not followed.
//!
//! `[security] allow_private_fetch = true` ([`FetchPolicy::allow_private`]) turns both
//! checks off: test setups whose fakes live on 127.0.0.1.
//!
//! The body is streamed and the download stops as soon as it passes the cap, whether or not
//! the server sent a `Content-Length`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::CONTENT_TYPE;
use reqwest::Url;

use crate::HTTP_REQUEST_TIMEOUT;

/// How an adapter may fetch URLs that submitters gave. The daemon fills it from
/// `[security] allow_private_fetch` and `[server] platform_timeout_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchPolicy {
    /// Fetch from loopback, private, link-local, … addresses too. Off by default; test
    /// setups turn it on for their fakes on 127.0.0.1.
    pub allow_private: bool,
    /// The longest one fetch may take, from connect to the last byte.
    pub timeout: Duration,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        FetchPolicy {
            allow_private: false,
            timeout: HTTP_REQUEST_TIMEOUT,
        }
    }
}

/// An address that is not on the public Internet, and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NonPublic {
    pub addr: IpAddr,
    /// `loopback`, `private (RFC 1918)`, `link-local`, …
    pub kind: &'static str,
}

impl fmt::Display for NonPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is not a public address ({})", self.addr, self.kind)
    }
}

impl std::error::Error for NonPublic {}

/// `Ok` when `ip` is a public unicast address; else what kind of address it is. IPv6 forms
/// that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4
/// `2002:…`) are judged by that IPv4 address.
pub fn check_ip(ip: IpAddr) -> Result<(), NonPublic> {
    let kind = match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => v6_kind(v6),
    };
    match kind {
        None => Ok(()),
        Some(kind) => Err(NonPublic { addr: ip, kind }),
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() => "unspecified",
        (0, _, _) => "\"this network\" (0.0.0.0/8)",
        (10, _, _) => "private (RFC 1918)",
        (100, _, _) if b & 0xC0 == 64 => "shared address space (CGNAT, 100.64.0.0/10)",
        (127, _, _) => "loopback",
        (169, 254, _) => "link-local",
        (172, _, _) if b & 0xF0 == 16 => "private (RFC 1918)",
        (192, 0, 0) => "IETF protocol assignment (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 88, 99) => "6to4 relay anycast (192.88.99.0/24)",
        (192, 168, _) => "private (RFC 1918)",
        (198, _, _) if b & 0xFE == 18 => "benchmarking (198.18.0.0/15)",
        (224..=239, _, _) => "multicast",
        _ if ip.is_broadcast() => "broadcast",
        (240..=255, _, _) => "reserved (240.0.0.0/4)",
        _ => return None,
    })
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let embedded =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_kind(v4);
    }
    if s[..6] == [0; 6] {
        return Some("IPv4-compatible (deprecated, ::/96)");
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64 (RFC 6052): reaches the IPv4 address it carries.
        return v4_kind(embedded(s[6], s[7]));
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        return Some("local-use NAT64 (64:ff9b:1::/48)");
    }
    if s[0] == 0x2002 {
        // 6to4: reaches the IPv4 address in bits 16–47.
        return v4_kind(embedded(s[1], s[2]));
    }
    Some(match s[0] {
        0x2001 if s[1] == 0x0db8 => "documentation",
        0x2001 if s[1] < 0x0200 => "IETF protocol assignment (2001::/23, Teredo included)",
        0x3fff if s[1] < 0x1000 => "documentation",
        0x2000..=0x3fff => return None,
        0x0100 if s[1..4] == [0, 0, 0] => "discard-only (100::/64)",
        0xfc00..=0xfdff => "unique-local (fc00::/7)",
        0xfe80..=0xfebf => "link-local",
        0xfec0..=0xfeff => "site-local (deprecated)",
        0xff00..=0xffff => "multicast",
        _ => "reserved (outside 2000::/3)",
    })
}

/// Accept-time check of an http(s) URL whose host is a literal address: the reason it may
/// not be fetched, or `None` (a name, a public address, or not a URL at all: that is for the
/// caller's own URL check). No DNS.
pub fn literal_host_refusal(url: &str) -> Option<NonPublic> {
    let url = Url::parse(url).ok()?;
    literal_ip(&url).and_then(|ip| check_ip(ip).err())
}

fn literal_ip(url: &Url) -> Option<IpAddr> {
    // The URL parser has already turned every IPv4 spelling (`2130706433`, `0x7f.1`,
    // `127.1`) into dotted form; IPv6 comes in brackets. A name never parses as an address.
    let host = url.host_str()?;
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse()
        .ok()
}

/// What a fetch brought back: a 2xx answer's body, at most the cap.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// The declared media type, lowercased, without parameters (`image/png`).
    pub content_type: Option<String>,
    pub bytes: Vec<u8>,
}

/// Why a fetch failed.
#[derive(Debug)]
pub enum FetchError {
    /// Not an http(s) URL with a host.
    BadUrl(String),
    /// The host is, or resolves to, an address that is not public. `host` is the name as
    /// written when it had to be resolved.
    NotPublic {
        host: Option<String>,
        reason: NonPublic,
    },
    /// A non-2xx answer (redirects are not followed).
    Status(u16),
    /// The body is larger than the cap (declared, or found while streaming it).
    TooLarge { limit: usize },
    /// Connect, TLS, timeout or a broken body (the URL left out of the message).
    Transport(reqwest::Error),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::BadUrl(why) => write!(f, "not a fetchable URL: {why}"),
            FetchError::NotPublic {
                host: Some(host),
                reason,
            } => write!(
                f,
                "{host} resolves to {}, which is not a public address ({})",
                reason.addr, reason.kind
            ),
            FetchError::NotPublic { host: None, reason } => write!(f, "{reason}"),
            FetchError::Status(status) => write!(f, "the server answered {status}"),
            FetchError::TooLarge { limit } => write!(f, "larger than {limit} bytes"),
            FetchError::Transport(e) => write!(f, "request failed: {e}"),
        }
    }
}

impl std::error::Error for FetchError {}

/// The resolver of a [`Fetcher`] that may not reach private addresses: resolves like the
/// system does, then refuses the name when any of its addresses is not public. Only the
/// addresses it returns are connected to.
struct PublicOnly;

/// A name refused by [`PublicOnly`], found again in the transport error's sources.
#[derive(Debug)]
struct Refused {
    host: String,
    reason: NonPublic,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} resolves to {}", self.host, self.reason)
    }
}

impl std::error::Error for Refused {}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(reason) = addrs.iter().find_map(|a| check_ip(a.ip()).err()) {
                return Err(Box::new(Refused { host, reason }) as _);
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// An HTTP client for submitted URLs under a [`FetchPolicy`]. Build one per adapter.
#[derive(Clone, Debug)]
pub struct Fetcher {
    client: reqwest::Client,
    allow_private: bool,
}

impl Fetcher {
    pub fn new(policy: &FetchPolicy) -> Result<Fetcher, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("noroshi/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(policy.timeout.min(Duration::from_secs(10)))
            .timeout(policy.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if !policy.allow_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(Fetcher {
            client: builder.build()?,
            allow_private: policy.allow_private,
        })
    }

    /// `GET url` (no credentials): a 2xx body of at most `max_bytes`. Stops reading as soon
    /// as the body passes `max_bytes`.
    pub async fn get(&self, url: &str, max_bytes: usize) -> Result<Fetched, FetchError> {
        let parsed = Url::parse(url).map_err(|e| FetchError::BadUrl(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(FetchError::BadUrl(
                "must be an http(s) URL with a host".into(),
            ));
        }
        if !self.allow_private {
            // Literal addresses are connected to without resolving: check them here.
            if let Some(reason) = literal_ip(&parsed).and_then(|ip| check_ip(ip).err()) {
                return Err(FetchError::NotPublic { host: None, reason });
            }
        }
        let mut response = self.client.get(parsed).send().await.map_err(transport)?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(FetchError::Status(status));
        }
        if response
            .content_length()
            .is_some_and(|n| n > max_bytes as u64)
        {
            return Err(FetchError::TooLarge { limit: max_bytes });
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let mut bytes = Vec::with_capacity(
            response
                .content_length()
                .map_or(64 * 1024, |n| n as usize)
                .min(max_bytes),
        );
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if chunk.len() > max_bytes - bytes.len() {
                // Dropping the response closes the connection: nothing more is read.
                return Err(FetchError::TooLarge { limit: max_bytes });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Fetched {
            content_type,
            bytes,
        })
    }
}

/// A transport error, unless its cause is a name the resolver refused.
fn transport(e: reqwest::Error) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<Refused>() {
            return FetchError::NotPublic {
                host: Some(r.host.clone()),
                reason: r.reason,
            };
        }
        source = s.source();
    }
    FetchError::Transport(e.without_url())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_public_or_named() {
        let table: &[(&str, Option<&str>)] = &[
            // IPv4: public.
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("133.242.0.1", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("192.169.0.1", None),
            ("198.20.0.1", None),
            ("223.255.255.255", None),
            // IPv4: not public.
            ("0.0.0.0", Some("unspecified")),
            ("0.1.2.3", Some("\"this network\" (0.0.0.0/8)")),
            ("10.0.0.5", Some("private (RFC 1918)")),
            ("172.16.0.1", Some("private (RFC 1918)")),
            ("172.31.255.255", Some("private (RFC 1918)")),
            ("192.168.1.1", Some("private (RFC 1918)")),
            (
                "100.64.0.1",
                Some("shared address space (CGNAT, 100.64.0.0/10)"),
            ),
            (
                "100.127.255.255",
                Some("shared address space (CGNAT, 100.64.0.0/10)"),
            ),
            ("127.0.0.1", Some("loopback")),
            ("127.255.255.254", Some("loopback")),
            ("169.254.169.254", Some("link-local")),
            ("192.0.0.8", Some("IETF protocol assignment (192.0.0.0/24)")),
            ("192.0.2.1", Some("documentation")),
            ("198.51.100.7", Some("documentation")),
            ("203.0.113.9", Some("documentation")),
            ("192.88.99.1", Some("6to4 relay anycast (192.88.99.0/24)")),
            ("198.18.0.1", Some("benchmarking (198.18.0.0/15)")),
            ("198.19.255.255", Some("benchmarking (198.18.0.0/15)")),
            ("224.0.0.1", Some("multicast")),
            ("239.255.255.250", Some("multicast")),
            ("240.0.0.1", Some("reserved (240.0.0.0/4)")),
            ("255.255.255.255", Some("broadcast")),
            // IPv6: public.
            ("2001:4860:4860::8888", None),
            ("2404:6800:4004:80a::2004", None),
            ("2606:4700:4700::1111", None),
            ("64:ff9b::808:808", None),
            ("2002:808:808::1", None),
            ("::ffff:8.8.8.8", None),
            // IPv6: not public.
            ("::", Some("unspecified")),
            ("::1", Some("loopback")),
            ("fe80::1", Some("link-local")),
            ("febf::1", Some("link-local")),
            ("fec0::1", Some("site-local (deprecated)")),
            ("fc00::1", Some("unique-local (fc00::/7)")),
            ("fd12:3456:789a::1", Some("unique-local (fc00::/7)")),
            ("ff02::1", Some("multicast")),
            ("2001:db8::1", Some("documentation")),
            ("3fff::1", Some("documentation")),
            (
                "2001::1",
                Some("IETF protocol assignment (2001::/23, Teredo included)"),
            ),
            ("100::1", Some("discard-only (100::/64)")),
            ("64:ff9b:1::1", Some("local-use NAT64 (64:ff9b:1::/48)")),
            ("4000::1", Some("reserved (outside 2000::/3)")),
            ("::7f00:1", Some("IPv4-compatible (deprecated, ::/96)")),
            // IPv6 forms that carry a non-public IPv4 address.
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:10.1.2.3", Some("private (RFC 1918)")),
            ("::ffff:169.254.169.254", Some("link-local")),
            (
                "::ffff:100.64.0.1",
                Some("shared address space (CGNAT, 100.64.0.0/10)"),
            ),
            ("::ffff:0.0.0.0", Some("unspecified")),
            ("64:ff9b::7f00:1", Some("loopback")),
            ("64:ff9b::a9fe:a9fe", Some("link-local")),
            ("2002:c0a8:101::1", Some("private (RFC 1918)")),
            ("2002:7f00:1::", Some("loopback")),
        ];
        for (text, want) in table {
            let ip: IpAddr = text.parse().unwrap();
            let got = check_ip(ip).err().map(|r| r.kind);
            assert_eq!(got, *want, "{text}");
        }
    }

    #[test]
    fn literal_hosts_are_judged_without_dns() {
        for url in [
            "https://127.0.0.1/a.png",
            "https://[::1]/x.png",
            "https://10.0.0.5/x",
            "https://169.254.169.254/latest",
            "https://[::ffff:127.0.0.1]/a.png",
            "https://[::ffff:7f00:1]/a.png",
            "https://2130706433/a.png",
            "https://0x7f.1/a.png",
            "https://127.1/a.png",
            "http://[fe80::1]:8080/a.png",
        ] {
            assert!(literal_host_refusal(url).is_some(), "{url}");
        }
        for url in [
            "https://www.city.suzaka.nagano.jp/a.png",
            "https://localhost/a.png",
            "https://8.8.8.8/a.png",
            "https://[2001:4860:4860::8888]/a.png",
            "not a url",
        ] {
            assert!(literal_host_refusal(url).is_none(), "{url}");
        }
        let r = literal_host_refusal("https://169.254.169.254/latest").unwrap();
        assert_eq!(
            r.to_string(),
            "169.254.169.254 is not a public address (link-local)"
        );
    }

    #[tokio::test]
    async fn the_fetcher_refuses_private_names_and_literals_before_connecting() {
        let fetcher = Fetcher::new(&FetchPolicy::default()).unwrap();
        // Port 9 (discard): nothing listens there; a refusal comes before any connect.
        match fetcher.get("http://localhost:9/a.png", 1024).await {
            Err(FetchError::NotPublic {
                host: Some(host),
                reason,
            }) => {
                assert_eq!(host, "localhost");
                assert_eq!(reason.kind, "loopback");
            }
            other => panic!("localhost must be refused: {other:?}"),
        }
        match fetcher.get("https://[::ffff:10.0.0.1]/a.png", 1024).await {
            Err(FetchError::NotPublic { host: None, reason }) => {
                assert_eq!(reason.kind, "private (RFC 1918)")
            }
            other => panic!("a mapped private literal must be refused: {other:?}"),
        }
        assert!(matches!(
            fetcher.get("ftp://example.jp/a.png", 1024).await,
            Err(FetchError::BadUrl(_))
        ));
    }
}

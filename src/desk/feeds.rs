//! `[cap] feeds`: polls CAP Atom feeds (a prefecture's, a weather service's) with
//! conditional GETs and ingests their new alerts exactly as `POST /api/v1/cap` does. A
//! feed's failure is recorded and shown (`GET /api/v1/channels`, as `cap-feed:<url>`); it
//! never stops the daemon or the queue.
//!
//! An entry's alert is read from the entry itself when the feed embeds it (`<content>`
//! holding an `<alert>`), else fetched from the entry's CAP link (`type=
//! "application/cap+xml"`, else the `alternate` link, else any link). A feed with a DTD is
//! refused as CAP documents are.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quick_xml::events::Event;
use quick_xml::Reader;
use serde::Serialize;

use crate::api::SharedState;

/// What a feed last did, for the channel view.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FeedState {
    pub url: String,
    pub last_poll_at: Option<i64>,
    pub last_success_at: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    /// Alerts taken from it since the start.
    pub ingested: u64,
}

/// Every configured feed's state.
#[derive(Clone, Default)]
pub struct Feeds(Arc<Mutex<HashMap<String, FeedState>>>);

impl Feeds {
    pub fn states(&self) -> Vec<FeedState> {
        let mut v: Vec<FeedState> = self.0.lock().unwrap().values().cloned().collect();
        v.sort_by(|a, b| a.url.cmp(&b.url));
        v
    }
    fn update(&self, url: &str, f: impl FnOnce(&mut FeedState)) {
        let mut map = self.0.lock().unwrap();
        let s = map.entry(url.to_string()).or_insert_with(|| FeedState {
            url: url.to_string(),
            ..FeedState::default()
        });
        f(s);
    }
}

/// One entry: its embedded alert, or where to fetch it.
#[derive(Debug, PartialEq)]
pub enum EntryAlert {
    Embedded(String),
    Link(String),
}

/// Reads an Atom feed's entries. A DOCTYPE (an entity trick, XXE) refuses the whole feed.
pub fn entries(feed: &[u8]) -> Result<Vec<EntryAlert>, String> {
    let mut reader = Reader::from_reader(feed);
    reader.config_mut().trim_text(true);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut in_entry = false;
    let mut links: Vec<(String, String, String)> = Vec::new();
    let mut entry_id: Option<String> = None;
    let mut in_id = false;
    loop {
        let pos = reader.buffer_position() as usize;
        match reader.read_event_into(&mut buf) {
            Err(e) => return Err(format!("not a readable feed: {e}")),
            Ok(Event::Eof) => break,
            Ok(Event::DocType(_)) => {
                return Err("the feed declares a DOCTYPE; refused (no DTDs, no entities)".into())
            }
            Ok(Event::Start(e)) => {
                let name = e.local_name();
                match name.as_ref() {
                    b"entry" => {
                        in_entry = true;
                        links.clear();
                        entry_id = None;
                    }
                    b"id" if in_entry => in_id = true,
                    b"alert" if in_entry => {
                        // The embedded alert, as written: from this tag to its end tag.
                        let start = pos;
                        let mut depth = 1;
                        let mut inner = Vec::new();
                        loop {
                            match reader.read_event_into(&mut inner) {
                                Ok(Event::Start(s)) if s.local_name().as_ref() == b"alert" => {
                                    depth += 1
                                }
                                Ok(Event::End(s)) if s.local_name().as_ref() == b"alert" => {
                                    depth -= 1;
                                    if depth == 0 {
                                        break;
                                    }
                                }
                                Ok(Event::Eof) => return Err("an embedded alert is cut off".into()),
                                Err(e) => return Err(format!("not a readable feed: {e}")),
                                _ => {}
                            }
                            inner.clear();
                        }
                        let end = reader.buffer_position() as usize;
                        let xml = String::from_utf8_lossy(&feed[start..end])
                            .trim()
                            .to_string();
                        out.push(EntryAlert::Embedded(xml));
                        in_entry = false;
                    }
                    b"link" if in_entry => links.push(link_of(&e)),
                    _ => {}
                }
            }
            Ok(Event::Empty(e)) if in_entry && e.local_name().as_ref() == b"link" => {
                links.push(link_of(&e))
            }
            Ok(Event::Text(t)) if in_id => {
                entry_id = t.unescape().ok().map(|s| s.trim().to_string());
                in_id = false;
            }
            Ok(Event::End(e)) => match e.local_name().as_ref() {
                b"id" => in_id = false,
                b"entry" if in_entry => {
                    in_entry = false;
                    let pick = links
                        .iter()
                        .find(|(_, ty, _)| ty.contains("cap+xml"))
                        .or_else(|| {
                            links
                                .iter()
                                .find(|(rel, _, _)| rel.is_empty() || rel == "alternate")
                        })
                        .or_else(|| links.first())
                        .map(|(_, _, href)| href.clone())
                        .or_else(|| entry_id.clone().filter(|i| i.starts_with("http")));
                    if let Some(href) = pick {
                        out.push(EntryAlert::Link(href));
                    }
                }
                _ => {}
            },
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

fn link_of(e: &quick_xml::events::BytesStart<'_>) -> (String, String, String) {
    let attr = |name: &[u8]| {
        e.attributes()
            .flatten()
            .find(|a| a.key.local_name().as_ref() == name)
            .and_then(|a| a.unescape_value().ok())
            .map(|v| v.to_string())
            .unwrap_or_default()
    };
    (attr(b"rel"), attr(b"type"), attr(b"href"))
}

/// Polls `url` every `every`, for as long as the daemon runs.
pub async fn poll(state: SharedState, feeds: Feeds, url: String, every: Duration) {
    let mut etag: Option<String> = None;
    let mut last_modified: Option<String> = None;
    let caller = crate::api::auth::Caller {
        name: "cap-feed".into(),
        role: crate::api::auth::Role::Disaster,
        via: crate::api::auth::Via::BearerToken,
        client: None,
    };
    loop {
        let now = crate::clock::now_ms();
        feeds.update(&url, |s| s.last_poll_at = Some(now));
        match poll_once(&state, &caller, &url, &mut etag, &mut last_modified).await {
            Ok(n) => feeds.update(&url, |s| {
                s.last_success_at = Some(now);
                s.last_error = None;
                s.ingested += n;
            }),
            Err(e) => {
                tracing::warn!(feed = %url, error = %e, "CAP feed poll failed");
                feeds.update(&url, |s| {
                    s.last_error = Some(e);
                    s.last_error_at = Some(now);
                });
            }
        }
        tokio::time::sleep(every).await;
    }
}

async fn poll_once(
    state: &SharedState,
    caller: &crate::api::auth::Caller,
    url: &str,
    etag: &mut Option<String>,
    last_modified: &mut Option<String>,
) -> Result<u64, String> {
    let mut req = state.http.get(url);
    if let Some(t) = etag.as_deref() {
        req = req.header(reqwest::header::IF_NONE_MATCH, t);
    }
    if let Some(m) = last_modified.as_deref() {
        req = req.header(reqwest::header::IF_MODIFIED_SINCE, m);
    }
    let r = req
        .send()
        .await
        .map_err(|e| format!("could not fetch the feed: {e}"))?;
    if r.status() == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(0);
    }
    if !r.status().is_success() {
        return Err(format!("the feed answered HTTP {}", r.status().as_u16()));
    }
    let header = |name| {
        r.headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let (new_etag, new_modified) = (
        header(reqwest::header::ETAG),
        header(reqwest::header::LAST_MODIFIED),
    );
    let body = r
        .bytes()
        .await
        .map_err(|e| format!("could not read the feed: {e}"))?;
    if body.len() > noroshi_cap::MAX_BYTES * 4 {
        return Err("the feed is larger than 4 MiB".into());
    }
    let mut ingested = 0;
    for entry in entries(&body)? {
        let xml = match entry {
            EntryAlert::Embedded(xml) => xml.into_bytes(),
            EntryAlert::Link(href) => {
                let href = url::Url::parse(url)
                    .and_then(|base| base.join(&href))
                    .map_err(|e| format!("an entry's link `{href}` is not a URL: {e}"))?;
                let r = state
                    .http
                    .get(href.clone())
                    .send()
                    .await
                    .map_err(|e| format!("could not fetch {href}: {e}"))?;
                if !r.status().is_success() {
                    return Err(format!("{href} answered HTTP {}", r.status().as_u16()));
                }
                r.bytes()
                    .await
                    .map_err(|e| format!("could not read {href}: {e}"))?
                    .to_vec()
            }
        };
        let answer = crate::desk::cap::receive(state, caller, &xml, &format!("feed:{url}"), None)
            .await
            .map_err(|p| format!("an entry was refused: {}", p.detail))?;
        if answer.status() == axum::http::StatusCode::ACCEPTED {
            ingested += 1;
        }
    }
    // Only after every entry was taken: a failure polls the whole feed again next time.
    *etag = new_etag;
    *last_modified = new_modified;
    Ok(ingested)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conformance(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/conformance/oasis-cap-1.2/feeds")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn the_conformance_feeds_are_read_or_refused() {
        let index = entries(&conformance("weather_index.atom.xml")).unwrap();
        assert!(!index.is_empty());
        assert!(
            index
                .iter()
                .all(|e| matches!(e, EntryAlert::Link(h) if h.starts_with("http"))),
            "{index:?}"
        );
        let fat = entries(&conformance("canada_signed.atom.xml")).unwrap();
        assert!(
            matches!(&fat[0], EntryAlert::Embedded(x) if x.starts_with("<alert") && x.ends_with("</alert>")),
            "{fat:?}"
        );
        assert!(entries(&conformance("no_entries.atom.xml"))
            .unwrap()
            .is_empty());
        let err = entries(&conformance("xee.atom.xml")).unwrap_err();
        assert!(err.contains("DOCTYPE"), "{err}");
    }
}

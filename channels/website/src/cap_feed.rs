//! CAP on the website (CHANNELS.md §5.4): each disaster announcement's CAP 1.2 message at a
//! stable address (`cap/{file}.xml`, never changed after publication), and a thin Atom
//! index of the active alerts (`cap/alerts.atom`) that public alert readers poll.
//!
//! - An Update or Cancel replaces the entries it supersedes; a Cancel stays listed until
//!   the original's expiry, so readers learn of it.
//! - Expired messages leave the feed (at each publication, and on the channel's refresh).
//! - The feed's `updated` moves only when its entry set changes.
//!
//! The record of what is listed is `cap/.alerts.json`, written like every other file here
//! (temp, fsync, rename) under the site's lock.

use std::fs;
use std::io;
use std::path::Path;

use chrono::{DateTime, Utc};
use noroshi_channel_core::CapMessage;
use quick_xml::events::{BytesDecl, BytesText, Event};
use quick_xml::Writer;
use serde::{Deserialize, Serialize};

use crate::config::Site;
use crate::entries::write_if_changed;
use crate::render::rfc3339;

const ATOM_NS: &str = "http://www.w3.org/2005/Atom";
/// The folder under `output_dir`.
pub(crate) const CAP_DIR: &str = "cap";
const INDEX_FILE: &str = ".alerts.json";
pub(crate) const FEED_FILE: &str = "alerts.atom";

/// One listed message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Listed {
    file_name: String,
    headline: String,
    sender_name: String,
    summary: String,
    sent: DateTime<Utc>,
    expires: Option<DateTime<Utc>>,
    status: String,
    /// The announcement's page, relative to the site.
    page_path: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    /// When the listed set last changed: the feed's `updated`.
    changed_at: Option<DateTime<Utc>>,
    listed: Vec<Listed>,
}

/// A path-safe file name: letters, digits, `-`, `_`, `.`, ending `.xml`, no leading dot.
pub(crate) fn is_safe_file_name(name: &str) -> bool {
    name.len() <= 200
        && name.ends_with(".xml")
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn load(dir: &Path) -> io::Result<Index> {
    match fs::read(dir.join(INDEX_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{INDEX_FILE}: {e}"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Index::default()),
        Err(e) => Err(e),
    }
}

/// Publishes one message: its document (once), then the index and the feed.
pub(crate) fn publish(
    site: &Site,
    site_dir: &Path,
    cap: &CapMessage,
    page_path: &str,
    now: DateTime<Utc>,
) -> io::Result<()> {
    if !is_safe_file_name(&cap.file_name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{}` is not a safe CAP file name", cap.file_name),
        ));
    }
    let dir = site_dir.join(CAP_DIR);
    fs::create_dir_all(&dir)?;
    let path = dir.join(&cap.file_name);
    // A CAP message never changes after publication: an update is a new message.
    if !path.exists() {
        write_if_changed(&path, cap.xml.as_bytes())?;
    }
    let mut index = load(&dir)?;
    let before = index.listed.clone();
    index
        .listed
        .retain(|l| !cap.supersedes.contains(&l.file_name) && l.file_name != cap.file_name);
    index.listed.push(Listed {
        file_name: cap.file_name.clone(),
        headline: cap.headline.clone(),
        sender_name: cap.sender_name.clone(),
        summary: cap.summary.clone(),
        sent: cap.sent,
        expires: cap.expires,
        status: cap.status.clone(),
        page_path: page_path.to_string(),
    });
    write_feed(site, &dir, index, &before, now)
}

/// Drops expired messages from the feed (the channel's refresh calls it).
pub(crate) fn prune(site: &Site, site_dir: &Path, now: DateTime<Utc>) -> io::Result<()> {
    let dir = site_dir.join(CAP_DIR);
    if !dir.join(INDEX_FILE).exists() {
        return Ok(());
    }
    let index = load(&dir)?;
    let before = index.listed.clone();
    write_feed(site, &dir, index, &before, now)
}

fn write_feed(
    site: &Site,
    dir: &Path,
    mut index: Index,
    before: &[Listed],
    now: DateTime<Utc>,
) -> io::Result<()> {
    index.listed.retain(|l| l.expires.is_none_or(|e| e > now));
    index
        .listed
        .sort_by(|a, b| b.sent.cmp(&a.sent).then(a.file_name.cmp(&b.file_name)));
    if index.listed != before || index.changed_at.is_none() {
        index.changed_at = Some(now);
    }
    let json = serde_json::to_vec_pretty(&index).map_err(io::Error::other)?;
    write_if_changed(&dir.join(INDEX_FILE), &json)?;
    write_if_changed(&dir.join(FEED_FILE), &atom(site, &index)?)?;
    Ok(())
}

fn text(w: &mut Writer<Vec<u8>>, name: &str, value: &str) -> io::Result<()> {
    w.create_element(name)
        .write_text_content(BytesText::new(value))?;
    Ok(())
}

fn atom(site: &Site, index: &Index) -> io::Result<Vec<u8>> {
    let feed_url = format!("{}{CAP_DIR}/{FEED_FILE}", site.base_url);
    let updated = index.changed_at.unwrap_or_default();
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    w.create_element("feed")
        .with_attribute(("xmlns", ATOM_NS))
        .with_attribute(("xml:lang", site.lang.as_str()))
        .write_inner_content(|w| {
            text(w, "id", &feed_url)?;
            text(
                w,
                "title",
                &format!("{}：発令中の緊急情報（CAP）", site.title),
            )?;
            text(w, "updated", &rfc3339(updated))?;
            w.create_element("author")
                .write_inner_content(|w| text(w, "name", &site.author))?;
            w.create_element("link")
                .with_attributes([
                    ("rel", "self"),
                    ("type", "application/atom+xml"),
                    ("href", feed_url.as_str()),
                ])
                .write_empty()?;
            text(w, "generator", "Noroshi")?;
            for l in &index.listed {
                let cap_url = format!("{}{CAP_DIR}/{}", site.base_url, l.file_name);
                let page_url = format!("{}{}", site.base_url, l.page_path);
                w.create_element("entry").write_inner_content(|w| {
                    text(w, "id", &cap_url)?;
                    text(w, "title", &l.headline)?;
                    text(w, "updated", &rfc3339(l.sent))?;
                    text(w, "published", &rfc3339(l.sent))?;
                    w.create_element("author")
                        .write_inner_content(|w| text(w, "name", &l.sender_name))?;
                    text(w, "summary", &l.summary)?;
                    w.create_element("link")
                        .with_attributes([
                            ("rel", "alternate"),
                            ("type", "application/cap+xml"),
                            ("href", cap_url.as_str()),
                        ])
                        .write_empty()?;
                    w.create_element("link")
                        .with_attributes([
                            ("rel", "related"),
                            ("type", "text/html"),
                            ("href", page_url.as_str()),
                        ])
                        .write_empty()?;
                    if l.status != "Actual" {
                        w.create_element("category")
                            .with_attribute(("term", l.status.as_str()))
                            .write_empty()?;
                    }
                    Ok(())
                })?;
            }
            Ok(())
        })?;
    let mut bytes = w.into_inner();
    bytes.push(b'\n');
    Ok(bytes)
}

//! Atom (RFC 4287) and RSS 2.0 feeds of the newest entries, written with quick-xml.
//!
//! quick-xml escapes every text node and attribute value; the text itself was cleaned of
//! characters XML 1.0 forbids when the unit was rendered. Both feeds are a pure function of
//! the entries, so a redelivery rewrites them byte for byte the same.

use std::io;

use chrono::{DateTime, Utc};
use quick_xml::events::{BytesDecl, BytesText, Event};
use quick_xml::Writer;

use crate::config::Site;
use crate::entries::Entry;
use crate::render::{page_path, rfc3339, rfc822};

const ATOM_NS: &str = "http://www.w3.org/2005/Atom";

/// The feed's `updated`: the newest change among its entries, so it only moves when the
/// entry set changes. `fallback` is for an empty feed.
fn feed_updated(entries: &[Entry], fallback: DateTime<Utc>) -> DateTime<Utc> {
    entries
        .iter()
        .map(|e| e.updated_at)
        .max()
        .unwrap_or(fallback)
}

fn entry_uri(id: &str) -> String {
    format!("urn:uuid:{id}")
}

fn text(writer: &mut Writer<Vec<u8>>, name: &str, value: &str) -> io::Result<()> {
    writer
        .create_element(name)
        .write_text_content(BytesText::new(value))?;
    Ok(())
}

fn new_writer() -> io::Result<Writer<Vec<u8>>> {
    let mut writer = Writer::new_with_indent(Vec::new(), b' ', 2);
    writer.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    Ok(writer)
}

fn finish(writer: Writer<Vec<u8>>) -> Vec<u8> {
    let mut bytes = writer.into_inner();
    bytes.push(b'\n');
    bytes
}

/// `feed.atom`.
pub(crate) fn atom(site: &Site, entries: &[Entry], now: DateTime<Utc>) -> io::Result<Vec<u8>> {
    let mut w = new_writer()?;
    w.create_element("feed")
        .with_attribute(("xmlns", ATOM_NS))
        .with_attribute(("xml:lang", site.lang.as_str()))
        .write_inner_content(|w| {
            text(w, "id", &site.feed_id)?;
            text(w, "title", &site.title)?;
            text(w, "subtitle", &site.description)?;
            text(w, "updated", &rfc3339(feed_updated(entries, now)))?;
            w.create_element("author")
                .write_inner_content(|w| text(w, "name", &site.author))?;
            w.create_element("link")
                .with_attributes([
                    ("rel", "self"),
                    ("type", "application/atom+xml"),
                    ("href", site.atom_url.as_str()),
                ])
                .write_empty()?;
            w.create_element("link")
                .with_attributes([
                    ("rel", "alternate"),
                    ("type", "text/html"),
                    ("href", site.base_url.as_str()),
                ])
                .write_empty()?;
            text(w, "generator", "Noroshi")?;
            for entry in entries {
                atom_entry(w, site, entry)?;
            }
            Ok(())
        })?;
    Ok(finish(w))
}

fn atom_entry(w: &mut Writer<Vec<u8>>, site: &Site, entry: &Entry) -> io::Result<()> {
    let href = format!("{}{}", site.base_url, page_path(&entry.id));
    let mut element = w.create_element("entry");
    if entry.lang != site.lang {
        element = element.with_attribute(("xml:lang", entry.lang.as_str()));
    }
    element.write_inner_content(|w| {
        // Never changes for the life of the entry, even when its page is updated.
        text(w, "id", &entry_uri(&entry.id))?;
        text(w, "title", &entry.title)?;
        text(w, "updated", &rfc3339(entry.updated_at))?;
        text(w, "published", &rfc3339(entry.published_at))?;
        w.create_element("link")
            .with_attributes([
                ("rel", "alternate"),
                ("type", "text/html"),
                ("href", href.as_str()),
            ])
            .write_empty()?;
        for variant in &entry.variants {
            let href = format!("{}{}", site.base_url, variant.path);
            w.create_element("link")
                .with_attributes([
                    ("rel", "alternate"),
                    ("type", "text/html"),
                    ("hreflang", variant.lang.as_str()),
                    ("href", href.as_str()),
                ])
                .write_empty()?;
        }
        // Plain text (`type` defaults to "text"): readers show it verbatim, never as markup.
        text(w, "summary", &entry.body)?;
        for tag in &entry.tags {
            w.create_element("category")
                .with_attribute(("term", tag.as_str()))
                .write_empty()?;
        }
        Ok(())
    })?;
    Ok(())
}

/// `feed.rss`.
pub(crate) fn rss(site: &Site, entries: &[Entry], now: DateTime<Utc>) -> io::Result<Vec<u8>> {
    let mut w = new_writer()?;
    w.create_element("rss")
        .with_attributes([("version", "2.0"), ("xmlns:atom", ATOM_NS)])
        .write_inner_content(|w| {
            w.create_element("channel").write_inner_content(|w| {
                text(w, "title", &site.title)?;
                text(w, "link", &site.base_url)?;
                text(w, "description", &site.description)?;
                text(w, "language", &site.lang)?;
                text(w, "lastBuildDate", &rfc822(feed_updated(entries, now)))?;
                text(w, "generator", "Noroshi")?;
                w.create_element("atom:link")
                    .with_attributes([
                        ("href", site.rss_url.as_str()),
                        ("rel", "self"),
                        ("type", "application/rss+xml"),
                    ])
                    .write_empty()?;
                for entry in entries {
                    rss_item(w, site, entry)?;
                }
                Ok(())
            })?;
            Ok(())
        })?;
    Ok(finish(w))
}

fn rss_item(w: &mut Writer<Vec<u8>>, site: &Site, entry: &Entry) -> io::Result<()> {
    let href = format!("{}{}", site.base_url, page_path(&entry.id));
    w.create_element("item").write_inner_content(|w| {
        text(w, "title", &entry.title)?;
        text(w, "link", &href)?;
        // RSS readers treat `description` as HTML: the plain text is turned into HTML
        // (escaped, paragraphs kept) and quick-xml escapes that HTML again for XML.
        text(w, "description", &body_as_html(&entry.body))?;
        w.create_element("guid")
            .with_attribute(("isPermaLink", "false"))
            .write_text_content(BytesText::new(&entry_uri(&entry.id)))?;
        text(w, "pubDate", &rfc822(entry.published_at))?;
        for tag in &entry.tags {
            text(w, "category", tag)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Plain text as an HTML fragment: escaped, one `<p>` per paragraph, `<br>` per line.
fn body_as_html(body: &str) -> String {
    crate::page::paragraphs(body)
        .iter()
        .map(|lines| {
            let lines: Vec<String> = lines
                .iter()
                .map(|l| quick_xml::escape::escape(l.as_str()).into_owned())
                .collect();
            format!("<p>{}</p>", lines.join("<br>"))
        })
        .collect()
}

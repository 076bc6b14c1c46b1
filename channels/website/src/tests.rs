//! Tests: pages, index, feeds (parsed back, and schema-validated when jing / xmllint exist), idempotency, atomicity, concurrency.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use noroshi_channel_core::{
    Announcement, BuildEnv, Channel, DeliveryContext, DeliveryUnit, ErrorClass, Priority,
};
use quick_xml::events::Event;
use quick_xml::Reader;

use crate::config::Site;
use crate::entries::{Entry, EntryIndex, Variant, ENTRIES_FILE, TEMP_PREFIX};
use crate::{build, page_url, Config, Published, Website};

const BASE: &str = "https://www.city.example.jp/site/";

fn conformance() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance")
}

fn config(dir: &Path) -> Config {
    Config {
        output_dir: dir.to_path_buf(),
        base_url: BASE.to_string(),
        site_title: "須坂市 お知らせ".to_string(),
        site_description: "須坂市からのお知らせ".to_string(),
        site_author: "須坂市".to_string(),
        ..Config::default()
    }
}

/// 2026-11-23T06:00:00Z = 15:00 in Tokyo, plus `minutes`.
fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 6, 0, 0).unwrap() + chrono::Duration::minutes(minutes)
}

fn uuid(n: u32) -> String {
    format!("0193c2f4-0000-7000-8000-{n:012}")
}

fn announcement(n: u32, title: &str, body: &str) -> Announcement {
    Announcement {
        id: uuid(n),
        title: title.to_string(),
        body: body.to_string(),
        link: None,
        priority: Priority::Normal,
        lang: "ja".to_string(),
        tags: Vec::new(),
        exercise: false,
        text_override: None,
        images: Vec::new(),
        image_alts: Vec::new(),
        page_url: None,
        published_at: at(n as i64),
        variants: Vec::new(),
        cap: None,
        replaces: None,
    }
}

fn ctx(id: &str) -> DeliveryContext {
    DeliveryContext {
        delivery_id: format!("d-{id}"),
        announcement_id: id.to_string(),
        idempotency_key: format!("k-{id}"),
        attempt: 1,
        priority: Priority::Normal,
        exercise: false,
        request_id: None,
        first_attempt_at: None,
    }
}

fn unit_of(site: &Website, a: &Announcement) -> DeliveryUnit {
    let rendering = site.render(a).expect("renders");
    assert_eq!(rendering.units.len(), 1, "one page per announcement");
    DeliveryUnit {
        payload: rendering.units[0].clone(),
        recipient: None,
    }
}

async fn deliver(site: &Website, a: &Announcement) -> noroshi_channel_core::Receipt {
    site.deliver(&unit_of(site, a), &ctx(&a.id))
        .await
        .expect("delivered")
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["", "a"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for entry in entries {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                let name = entry.file_name().to_string_lossy().into_owned();
                out.push(if sub.is_empty() {
                    name
                } else {
                    format!("{sub}/{name}")
                });
            }
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------
// A minimal XML tree, parsed with quick-xml: proves well-formedness and lets tests walk it.

#[derive(Debug, Default)]
struct Element {
    name: String,
    attrs: BTreeMap<String, String>,
    children: Vec<Element>,
    text: String,
}

impl Element {
    fn all<'a>(&'a self, name: &str) -> Vec<&'a Element> {
        self.children.iter().filter(|c| c.name == name).collect()
    }
    fn one(&self, name: &str) -> &Element {
        let found = self.all(name);
        assert_eq!(found.len(), 1, "exactly one <{name}> in <{}>", self.name);
        found[0]
    }
    fn text_of(&self, name: &str) -> &str {
        &self.one(name).text
    }
    fn attr(&self, name: &str) -> &str {
        self.attrs
            .get(name)
            .unwrap_or_else(|| panic!("<{}> has no {name}", self.name))
    }
}

fn parse_xml(xml: &str) -> Element {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut stack: Vec<Element> = vec![Element::default()];
    let mut saw_decl = false;
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Decl(d) => {
                saw_decl = true;
                assert_eq!(&*d.version().unwrap(), b"1.0");
                assert_eq!(&*d.encoding().unwrap().unwrap(), b"UTF-8");
            }
            Event::DocType(_) => panic!("feeds carry no DTD"),
            Event::Start(e) => {
                stack.push(element_of(&e));
            }
            Event::Empty(e) => {
                let el = element_of(&e);
                stack.last_mut().unwrap().children.push(el);
            }
            Event::End(_) => {
                let el = stack.pop().unwrap();
                stack.last_mut().unwrap().children.push(el);
            }
            Event::Text(t) => stack
                .last_mut()
                .unwrap()
                .text
                .push_str(&t.unescape().expect("valid entities")),
            Event::CData(c) => stack
                .last_mut()
                .unwrap()
                .text
                .push_str(std::str::from_utf8(&c).unwrap()),
            Event::Eof => break,
            _ => {}
        }
    }
    assert!(saw_decl, "XML declaration present");
    assert_eq!(stack.len(), 1, "every element closed");
    let mut doc = stack.pop().unwrap();
    assert_eq!(doc.children.len(), 1, "one root element");
    doc.children.pop().unwrap()
}

fn element_of(e: &quick_xml::events::BytesStart) -> Element {
    let mut el = Element {
        name: String::from_utf8(e.name().as_ref().to_vec()).unwrap(),
        ..Element::default()
    };
    for attr in e.attributes() {
        let attr = attr.expect("well-formed attribute");
        el.attrs.insert(
            String::from_utf8(attr.key.as_ref().to_vec()).unwrap(),
            attr.unescape_value().unwrap().into_owned(),
        );
    }
    el
}

// ---------------------------------------------------------------------------------------
// HTML checks: tag balance and the accessibility basics.

const VOID: [&str; 6] = ["meta", "link", "br", "img", "input", "hr"];

/// Every non-void element closed in order; returns (attributes, inner HTML) of every `<a>`.
fn check_html_structure(html: &str) -> Vec<(String, String)> {
    let mut stack: Vec<String> = Vec::new();
    let mut links = Vec::new();
    let mut rest = html;
    let mut open_link: Option<(String, usize)> = None;
    let mut consumed = 0;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').expect("tag closed") + start;
        let tag = &rest[start + 1..end];
        let abs_end = consumed + end + 1;
        if tag.starts_with('!') {
            // <!DOCTYPE html>
        } else if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().unwrap_or_else(|| panic!("stray </{name}>"));
            assert_eq!(open, name, "</{name}> closes <{open}>");
            if name == "a" {
                let (attrs, from) = open_link.take().unwrap();
                let inner = &html[from..consumed + start];
                links.push((attrs, inner.to_string()));
            }
        } else {
            let name = tag.split_whitespace().next().unwrap().to_string();
            if name == "a" {
                open_link = Some((tag.to_string(), abs_end));
            }
            if !VOID.contains(&name.as_str()) {
                stack.push(name);
            }
        }
        consumed += end + 1;
        rest = &rest[end + 1..];
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
    links
}

fn check_accessible(html: &str, lang: &str) {
    assert!(html.starts_with("<!DOCTYPE html>\n"), "doctype first");
    assert!(
        html.contains(&format!("<html lang=\"{lang}\">")),
        "lang={lang}"
    );
    assert!(html.contains("<meta charset=\"utf-8\">"));
    assert!(
        html.contains("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
    );
    assert_eq!(html.matches("<title>").count(), 1);
    assert_eq!(html.matches("<h1").count(), 1, "exactly one h1");
    assert!(!html.contains("<table"), "no layout tables");
    for landmark in ["<header", "<main id=\"main\"", "<footer"] {
        assert!(html.contains(landmark), "landmark {landmark}");
    }
    assert!(
        html.find("<a class=\"skip-link\" href=\"#main\">").unwrap()
            < html.find("<header").unwrap(),
        "skip link comes first"
    );
    assert!(html.contains("rel=\"alternate\" type=\"application/atom+xml\""));
    assert!(html.contains("rel=\"alternate\" type=\"application/rss+xml\""));
    let links = check_html_structure(html);
    assert!(!links.is_empty());
    for (attrs, text) in links {
        let text = text.trim();
        assert!(!text.is_empty(), "link {attrs} has text");
        for vague in ["こちら", "ここ", "click here", "here", "more"] {
            assert!(
                !text.eq_ignore_ascii_case(vague),
                "vague link text {text:?}"
            );
        }
        assert!(attrs.contains("href=\""), "link {attrs} has an href");
    }
}

/// WCAG 2.1 relative luminance contrast of two `#rrggbb` colours.
fn contrast(a: &str, b: &str) -> f64 {
    fn lum(hex: &str) -> f64 {
        let c = |i: usize| {
            let v = u8::from_str_radix(&hex[i..i + 2], 16).unwrap() as f64 / 255.0;
            if v <= 0.03928 {
                v / 12.92
            } else {
                ((v + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * c(1) + 0.7152 * c(3) + 0.0722 * c(5)
    }
    let (x, y) = (lum(a), lum(b));
    (x.max(y) + 0.05) / (x.min(y) + 0.05)
}

// ---------------------------------------------------------------------------------------
// Rendering

#[test]
fn render_makes_one_unit_with_the_page_text_as_preview() {
    let site = Website::new(&config(Path::new("/nonexistent")));
    let mut a = announcement(
        1,
        "避難所開設のお知らせ",
        "本日15時、\n須坂市役所に避難所を開設しました。",
    );
    a.link = Some("https://www.city.suzaka.nagano.jp/hinan".to_string());
    a.tags = vec![
        "防災".into(),
        " 防災 ".into(),
        "".into(),
        "危機管理課".into(),
    ];
    a.images = vec!["https://example.jp/a.png".into()];
    let r = site.render(&a).unwrap();
    let unit: crate::PageUnit = serde_json::from_value(r.units[0].clone()).unwrap();
    assert_eq!(unit.id, a.id);
    assert_eq!(
        unit.tags,
        vec!["防災", "危機管理課"],
        "tags trimmed, deduplicated"
    );
    assert_eq!(unit.published_at, a.published_at);
    assert_eq!(
        r.preview.text,
        "避難所開設のお知らせ\n\n本日15時、\n須坂市役所に避難所を開設しました。\n\nhttps://www.city.suzaka.nagano.jp/hinan"
    );
    assert_eq!(r.preview.length, r.preview.text.chars().count());
    assert_eq!(r.preview.limit, None);
    assert!(r
        .preview
        .warnings
        .iter()
        .any(|w| w.contains("alternative text")));
}

#[test]
fn render_refuses_what_the_page_cannot_carry() {
    let site = Website::new(&config(Path::new("/nonexistent")));
    let empty = announcement(1, "  \u{1} ", "本文");
    assert_eq!(site.render(&empty).unwrap_err().rule, "empty_title");
    let mut bad_id = announcement(1, "題", "本文");
    bad_id.id = "../../etc/passwd".into();
    assert_eq!(site.render(&bad_id).unwrap_err().rule, "invalid_id");
    let mut js = announcement(1, "題", "本文");
    js.link = Some("javascript:alert(1)".into());
    assert_eq!(site.render(&js).unwrap_err().rule, "invalid_link");
    let mut over = announcement(1, "題", "本文");
    over.text_override = Some("上書き本文".into());
    let unit: crate::PageUnit =
        serde_json::from_value(site.render(&over).unwrap().units[0].clone()).unwrap();
    assert_eq!(
        unit.body, "上書き本文",
        "overrides.website.text replaces the body"
    );
}

#[test]
fn page_url_is_base_a_id_html() {
    assert_eq!(
        page_url(BASE, "0193c2f4"),
        "https://www.city.example.jp/site/a/0193c2f4.html"
    );
    assert_eq!(
        page_url("https://www.city.example.jp/site", "x1"),
        "https://www.city.example.jp/site/a/x1.html"
    );
}

#[test]
fn banner_and_text_colours_meet_wcag_aa_contrast() {
    for (what, fg, bg) in crate::page::COLOURS {
        let ratio = contrast(fg, bg);
        assert!(ratio >= 4.5, "{what}: {fg} on {bg} is {ratio:.2}:1");
    }
    // The checker itself: black on white is 21:1, mid grey on white fails.
    assert!((contrast("#000000", "#ffffff") - 21.0).abs() < 0.01);
    assert!(contrast("#999999", "#ffffff") < 4.5);
}

// ---------------------------------------------------------------------------------------
// Pages

#[tokio::test]
async fn page_is_accessible_html_with_tokyo_times() {
    let dir = tempfile::tempdir().unwrap();
    let site = Website::new(&config(dir.path()));
    let mut a = announcement(
        0,
        "避難所開設のお知らせ",
        "本日15時、須坂市役所に避難所を開設しました。\n持ち物は各自でご用意ください。\n\n詳しくは危機管理課まで。",
    );
    a.link = Some("https://www.city.suzaka.nagano.jp/hinan?a=1&b=2".into());
    a.tags = vec!["防災".into()];
    let receipt = deliver(&site, &a).await;
    assert_eq!(
        receipt.remote_id.as_deref(),
        Some(page_url(BASE, &a.id).as_str()),
        "the remote id is the page URL"
    );
    let html = read(dir.path(), &format!("a/{}.html", a.id));
    check_accessible(&html, "ja");
    assert!(html.contains("<title>避難所開設のお知らせ | 須坂市 お知らせ</title>"));
    assert!(html.contains("<h1>避難所開設のお知らせ</h1>"));
    assert!(html.contains(
        "<time datetime=\"2026-11-23T15:00:00+09:00\">2026年11月23日（月）15時00分</time>"
    ));
    assert!(
        html.contains("<p>本日15時、須坂市役所に避難所を開設しました。<br>\n持ち物は各自でご用意ください。</p>\n<p>詳しくは危機管理課まで。</p>"),
        "paragraphs split on blank lines, line breaks kept: {html}"
    );
    assert!(html.contains(
        "<a href=\"https://www.city.suzaka.nagano.jp/hinan?a=1&amp;b=2\">「避難所開設のお知らせ」の詳しい情報（関連ページ）</a>"
    ));
    assert!(html.contains(
        "<link rel=\"alternate\" type=\"application/atom+xml\" title=\"須坂市 お知らせ（Atom）\" href=\"https://www.city.example.jp/site/feed.atom\">"
    ));
    assert!(html.contains(&format!(
        "<link rel=\"canonical\" href=\"{}\">",
        page_url(BASE, &a.id)
    )));
    assert!(
        !html.contains("class=\"banner"),
        "no banner for a normal announcement"
    );
    assert!(!html.contains("更新日時"), "not updated");
}

#[tokio::test]
async fn script_in_title_and_body_is_escaped_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let site = Website::new(&config(dir.path()));
    let mut a = announcement(
        0,
        "<script>alert('t')</script> & \"お知らせ\"",
        "<script>alert(\"b\")</script>\n<img src=x onerror=alert(1)>",
    );
    a.tags = vec!["<b>tag</b>".into()];
    deliver(&site, &a).await;
    let html = read(dir.path(), &format!("a/{}.html", a.id));
    check_accessible(&html, "ja");
    let index = read(dir.path(), "index.html");
    check_accessible(&index, "ja");
    for doc in [&html, &index] {
        assert!(!doc.contains("<script"), "no live script: {doc}");
        assert!(!doc.contains("<img"), "no live img");
        assert!(!doc.contains("<b>"));
        assert!(doc.contains(
            "&lt;script&gt;alert(&#39;t&#39;)&lt;/script&gt; &amp; &quot;お知らせ&quot;"
        ));
    }
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));

    let atom = parse_xml(&read(dir.path(), "feed.atom"));
    let entry = atom.one("entry");
    assert_eq!(
        entry.text_of("title"),
        a.title,
        "Atom text round-trips exactly"
    );
    assert_eq!(entry.text_of("summary"), a.body);
    assert_eq!(entry.one("category").attr("term"), "<b>tag</b>");

    let rss_text = read(dir.path(), "feed.rss");
    let rss = parse_xml(&rss_text);
    let item = rss.one("channel").one("item");
    assert_eq!(item.text_of("title"), a.title);
    let description = item.text_of("description");
    // Readers treat description as HTML: after XML decoding it must still be escaped HTML.
    assert!(!description.contains("<script"), "{description}");
    assert!(description.contains("&lt;script&gt;alert(&quot;b&quot;)&lt;/script&gt;"));
    assert!(description.starts_with("<p>") && description.contains("<br>"));
    assert!(!rss_text.contains("<script"));
}

#[tokio::test]
async fn banners_mark_disaster_urgent_and_drills() {
    let dir = tempfile::tempdir().unwrap();
    let site = Website::new(&config(dir.path()));
    let mut disaster = announcement(1, "避難指示", "避難してください。");
    disaster.priority = Priority::Disaster;
    let mut urgent = announcement(2, "断水", "断水しています。");
    urgent.priority = Priority::Urgent;
    let mut drill = announcement(3, "【訓練】避難指示", "訓練です。");
    drill.priority = Priority::Disaster;
    drill.exercise = true;
    for a in [&disaster, &urgent, &drill] {
        deliver(&site, a).await;
    }
    let page = |a: &Announcement| read(dir.path(), &format!("a/{}.html", a.id));
    let d = page(&disaster);
    assert!(d.contains("<p class=\"banner banner-disaster\"><strong>災害情報</strong></p>"));
    assert!(!d.contains("class=\"banner banner-exercise"));
    let u = page(&urgent);
    assert!(u.contains("<p class=\"banner banner-urgent\"><strong>緊急のお知らせ</strong></p>"));
    let x = page(&drill);
    assert!(x.contains("<p class=\"banner banner-exercise\"><strong>【訓練】これは訓練です。"));
    assert!(
        x.find("class=\"banner banner-exercise").unwrap()
            < x.find("class=\"banner banner-disaster").unwrap(),
        "the drill marker comes before the disaster banner"
    );
    let index = read(dir.path(), "index.html");
    assert!(index.contains("mark mark-exercise"));
    assert!(index.contains("mark mark-disaster"));
}

#[tokio::test]
async fn page_language_follows_the_announcement() {
    let dir = tempfile::tempdir().unwrap();
    let site = Website::new(&config(dir.path()));
    let mut a = announcement(0, "Shelter open", "The shelter at City Hall is open.");
    a.lang = "en".into();
    a.link = Some("https://www.city.example.jp/en/shelter".into());
    deliver(&site, &a).await;
    let html = read(dir.path(), &format!("a/{}.html", a.id));
    check_accessible(&html, "en");
    assert!(html.contains("Skip to main content"));
    assert!(html.contains(
        "<time datetime=\"2026-11-23T15:00:00+09:00\">23 November 2026, 15:00 (JST)</time>"
    ));
    assert!(html.contains("More about “Shelter open” (related page)"));
    let index = read(dir.path(), "index.html");
    assert!(
        index.contains(&format!(
            "<a href=\"a/{}.html\" lang=\"en\">Shelter open</a>",
            a.id
        )),
        "language of parts on the Japanese index"
    );
    let atom = parse_xml(&read(dir.path(), "feed.atom"));
    assert_eq!(atom.one("entry").attr("xml:lang"), "en");
}

#[test]
fn variants_are_linked_with_hreflang() {
    // No issue writes variants yet; the page must already link them when the index has them.
    let site = Site::from_config(&config(Path::new("/x")));
    let entry = Entry {
        id: uuid(1),
        title: "避難所".into(),
        body: "本文".into(),
        link: None,
        priority: Priority::Normal,
        lang: "ja".into(),
        tags: vec![],
        exercise: false,
        published_at: at(0),
        updated_at: at(0),
        variants: vec![Variant {
            lang: "en".into(),
            title: "Shelter".into(),
            body: "Body".into(),
            path: format!("a/{}.en.html", uuid(1)),
        }],
        images: vec![],
    };
    let html = crate::page::render_page(&site, &entry).unwrap();
    assert!(html.contains(&format!(
        "<link rel=\"alternate\" hreflang=\"en\" href=\"{BASE}a/{}.en.html\">",
        uuid(1)
    )));
    let atom = parse_xml(
        std::str::from_utf8(&crate::feed::atom(&site, &[entry], at(0)).unwrap()).unwrap(),
    );
    let links = atom.one("entry").all("link");
    assert_eq!(links.len(), 2);
    assert_eq!(links[1].attr("hreflang"), "en");
}

#[tokio::test]
async fn images_are_shown_with_their_alternative_text_and_only_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let site = Website::new(&config(dir.path()));
    let mut a = announcement(7, "避難所の地図", "地図をご覧ください。");
    a.images = vec![
        "https://www.city.example.jp/map.png".into(),
        "https://www.city.example.jp/photo.jpg".into(),
    ];
    a.image_alts = vec![
        "須坂市役所から避難所までの地図。国道406号を北へ約500メートル".into(),
        "".into(),
    ];
    let r = site.render(&a).unwrap();
    assert!(
        r.preview
            .warnings
            .iter()
            .any(|w| w.contains("image 2") && w.contains("alternative text")),
        "{:?}",
        r.preview.warnings
    );
    deliver(&site, &a).await;
    let page = read(dir.path(), &format!("a/{}.html", a.id));
    check_accessible(&page, "ja");
    assert!(page.contains(
        "<img src=\"https://www.city.example.jp/map.png\" alt=\"須坂市役所から避難所までの地図。国道406号を北へ約500メートル\""
    ), "{page}");
    assert!(
        !page.contains("photo.jpg"),
        "an image without words is not shown: {page}"
    );
}

// ---------------------------------------------------------------------------------------
// Index and feeds

#[tokio::test]
async fn index_and_feeds_list_the_newest_first_up_to_feed_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.feed_entries = 3;
    let site = Website::new(&cfg);
    // Delivered out of order: the listing order is by publication time, not arrival.
    for n in [3, 1, 5, 2, 4] {
        deliver(&site, &announcement(n, &format!("お知らせ{n}"), "本文")).await;
    }
    let index = read(dir.path(), "index.html");
    check_accessible(&index, "ja");
    let positions: Vec<usize> = [5, 4, 3]
        .iter()
        .map(|n| index.find(&format!(">お知らせ{n}</a>")).expect("listed"))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "newest first");
    for n in [1, 2] {
        assert!(
            !index.contains(&format!("お知らせ{n}<")),
            "older ones drop out"
        );
    }
    assert!(index.contains(&format!("<a href=\"a/{}.html\">お知らせ5</a>", uuid(5))));
    assert!(index.contains("<time datetime=\"2026-11-23T15:05:00+09:00\">"));

    let atom = parse_xml(&read(dir.path(), "feed.atom"));
    let titles: Vec<&str> = atom
        .all("entry")
        .iter()
        .map(|e| e.text_of("title"))
        .collect();
    assert_eq!(titles, ["お知らせ5", "お知らせ4", "お知らせ3"]);
    assert_eq!(atom.text_of("updated"), "2026-11-23T15:05:00+09:00");
    let rss = parse_xml(&read(dir.path(), "feed.rss"));
    let titles: Vec<&str> = rss
        .one("channel")
        .all("item")
        .iter()
        .map(|e| e.text_of("title"))
        .collect();
    assert_eq!(titles, ["お知らせ5", "お知らせ4", "お知らせ3"]);
    // Every page is still on disk and in the entry index.
    let entries = EntryIndex::load(dir.path()).unwrap();
    assert_eq!(entries.entries.len(), 5);
    for n in 1..=5 {
        assert!(dir.path().join(format!("a/{}.html", uuid(n))).is_file());
    }
}

#[tokio::test]
async fn atom_feed_has_rfc4287_required_elements() {
    let dir = tempfile::tempdir().unwrap();
    let site = Website::new(&config(dir.path()));
    let mut a = announcement(
        0,
        "避難所開設のお知らせ",
        "本日15時、須坂市役所に避難所を開設しました。",
    );
    a.tags = vec!["防災".into(), "危機管理課".into()];
    deliver(&site, &a).await;
    let feed = parse_xml(&read(dir.path(), "feed.atom"));
    assert_eq!(feed.name, "feed");
    assert_eq!(feed.attr("xmlns"), "http://www.w3.org/2005/Atom");
    assert_eq!(feed.attr("xml:lang"), "ja");
    assert_eq!(
        feed.text_of("id"),
        "tag:www.city.example.jp,2026:noroshi/announcements"
    );
    assert_eq!(feed.text_of("title"), "須坂市 お知らせ");
    assert_eq!(feed.text_of("updated"), "2026-11-23T15:00:00+09:00");
    assert_eq!(feed.one("author").text_of("name"), "須坂市");
    let links = feed.all("link");
    let self_link = links.iter().find(|l| l.attr("rel") == "self").unwrap();
    assert_eq!(
        self_link.attr("href"),
        "https://www.city.example.jp/site/feed.atom"
    );
    assert_eq!(self_link.attr("type"), "application/atom+xml");
    let alt = links.iter().find(|l| l.attr("rel") == "alternate").unwrap();
    assert_eq!(alt.attr("href"), BASE);
    assert_eq!(alt.attr("type"), "text/html");

    let entry = feed.one("entry");
    assert_eq!(entry.text_of("id"), format!("urn:uuid:{}", a.id));
    assert_eq!(entry.text_of("title"), a.title);
    assert_eq!(entry.text_of("updated"), "2026-11-23T15:00:00+09:00");
    assert_eq!(entry.text_of("published"), "2026-11-23T15:00:00+09:00");
    for date in [entry.text_of("updated"), entry.text_of("published")] {
        assert_eq!(
            DateTime::parse_from_rfc3339(date)
                .unwrap()
                .with_timezone(&Utc),
            a.published_at
        );
    }
    let link = entry.one("link");
    assert_eq!(link.attr("rel"), "alternate");
    assert_eq!(link.attr("type"), "text/html");
    assert_eq!(link.attr("href"), page_url(BASE, &a.id));
    assert_eq!(entry.text_of("summary"), a.body);
    let terms: Vec<&str> = entry
        .all("category")
        .iter()
        .map(|c| c.attr("term"))
        .collect();
    assert_eq!(terms, ["防災", "危機管理課"]);
}

#[tokio::test]
async fn rss_feed_has_rss2_required_elements_and_rfc822_dates() {
    let dir = tempfile::tempdir().unwrap();
    let site = Website::new(&config(dir.path()));
    let mut a = announcement(
        0,
        "避難所開設のお知らせ",
        "本日15時、須坂市役所に避難所を開設しました。",
    );
    a.tags = vec!["防災".into()];
    deliver(&site, &a).await;
    let rss = parse_xml(&read(dir.path(), "feed.rss"));
    assert_eq!(rss.name, "rss");
    assert_eq!(rss.attr("version"), "2.0");
    assert_eq!(rss.attr("xmlns:atom"), "http://www.w3.org/2005/Atom");
    let channel = rss.one("channel");
    assert_eq!(channel.text_of("title"), "須坂市 お知らせ");
    assert_eq!(channel.text_of("link"), BASE);
    assert_eq!(channel.text_of("description"), "須坂市からのお知らせ");
    assert_eq!(channel.text_of("language"), "ja");
    assert_eq!(
        channel.text_of("lastBuildDate"),
        "Mon, 23 Nov 2026 15:00:00 +0900"
    );
    let self_link = channel.one("atom:link");
    assert_eq!(
        self_link.attr("href"),
        "https://www.city.example.jp/site/feed.rss"
    );
    assert_eq!(self_link.attr("rel"), "self");
    assert_eq!(self_link.attr("type"), "application/rss+xml");

    let item = channel.one("item");
    assert_eq!(item.text_of("title"), a.title);
    assert_eq!(item.text_of("link"), page_url(BASE, &a.id));
    assert_eq!(
        item.text_of("description"),
        "<p>本日15時、須坂市役所に避難所を開設しました。</p>"
    );
    let guid = item.one("guid");
    assert_eq!(guid.attr("isPermaLink"), "false");
    assert_eq!(guid.text, format!("urn:uuid:{}", a.id));
    let pub_date = item.text_of("pubDate");
    assert_eq!(pub_date, "Mon, 23 Nov 2026 15:00:00 +0900");
    assert_eq!(
        DateTime::parse_from_rfc2822(pub_date)
            .unwrap()
            .with_timezone(&Utc),
        a.published_at
    );
    assert_eq!(
        pub_date.split(' ').nth(3).unwrap().len(),
        4,
        "four-digit year"
    );
    assert_eq!(item.text_of("category"), "防災");
}

#[tokio::test]
async fn control_characters_never_break_the_feeds() {
    let dir = tempfile::tempdir().unwrap();
    let site = Website::new(&config(dir.path()));
    let a = announcement(0, "題\u{1}名\u{0}", "本文\u{8}\u{FFFF}\r\n次の行");
    deliver(&site, &a).await;
    let atom = parse_xml(&read(dir.path(), "feed.atom"));
    assert_eq!(atom.one("entry").text_of("title"), "題名");
    assert_eq!(atom.one("entry").text_of("summary"), "本文\n次の行");
    parse_xml(&read(dir.path(), "feed.rss"));
    let html = read(dir.path(), &format!("a/{}.html", a.id));
    assert!(!html.chars().any(|c| c.is_control() && c != '\n'));
}

#[tokio::test]
async fn guids_are_stable_across_other_deliveries_and_updates() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(at(100).timestamp()));
    let clock_now = now.clone();
    let site = Website::new(&config(dir.path())).with_clock(Arc::new(move || {
        Utc.timestamp_opt(clock_now.load(Ordering::SeqCst), 0)
            .unwrap()
    }));
    let a = announcement(1, "お知らせA", "最初の本文");
    deliver(&site, &a).await;
    let guid_of = |dir: &Path, id: &str| -> (String, String, String, String) {
        let rss = parse_xml(&read(dir, "feed.rss"));
        let item = rss
            .one("channel")
            .all("item")
            .into_iter()
            .find(|i| i.text_of("link").contains(id))
            .expect("item listed")
            .one("guid")
            .text
            .clone();
        let atom = parse_xml(&read(dir, "feed.atom"));
        let entry = atom
            .all("entry")
            .into_iter()
            .find(|e| e.one("link").attr("href").contains(id))
            .expect("entry listed");
        (
            item,
            entry.text_of("id").to_string(),
            entry.text_of("published").to_string(),
            entry.text_of("updated").to_string(),
        )
    };
    let first = guid_of(dir.path(), &a.id);
    deliver(&site, &announcement(2, "お知らせB", "別の本文")).await;
    assert_eq!(
        guid_of(dir.path(), &a.id),
        first,
        "another delivery changes nothing of A"
    );

    // A correction of A: same id, new text. The page is updated in place.
    let mut corrected = a.clone();
    corrected.body = "訂正した本文".into();
    let outcome = site.publish(&unit_of(&site, &corrected)).await.unwrap();
    assert_eq!(outcome, Published::Updated);
    let (rss_guid, atom_id, published, updated) = guid_of(dir.path(), &a.id);
    assert_eq!(rss_guid, first.0);
    assert_eq!(atom_id, first.1);
    assert_eq!(published, first.2, "publication time stays");
    assert_eq!(
        updated, "2026-11-23T16:40:00+09:00",
        "updated moves to the clock"
    );
    let html = read(dir.path(), &format!("a/{}.html", a.id));
    assert!(html.contains("訂正した本文") && !html.contains("最初の本文"));
    assert!(html.contains("更新日時: <time datetime=\"2026-11-23T16:40:00+09:00\">"));
    let atom = parse_xml(&read(dir.path(), "feed.atom"));
    assert_eq!(atom.text_of("updated"), "2026-11-23T16:40:00+09:00");
    assert_eq!(EntryIndex::load(dir.path()).unwrap().entries.len(), 2);
}

// ---------------------------------------------------------------------------------------
// Idempotency, atomicity, concurrency

#[tokio::test]
async fn redelivery_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let site = Website::new(&config(dir.path()));
    let a = announcement(1, "お知らせ", "本文");
    deliver(&site, &announcement(0, "前のお知らせ", "本文")).await;
    let first = site.publish(&unit_of(&site, &a)).await.unwrap();
    assert_eq!(first, Published::Created);
    let snapshot = |dir: &Path| -> Vec<(String, Vec<u8>, std::time::SystemTime)> {
        files_under(dir)
            .into_iter()
            .map(|name| {
                let path = dir.join(&name);
                let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
                (name, std::fs::read(path).unwrap(), modified)
            })
            .collect()
    };
    let before = snapshot(dir.path());
    for _ in 0..3 {
        let receipt = deliver(&site, &a).await;
        assert_eq!(
            receipt.remote_id.as_deref(),
            Some(page_url(BASE, &a.id).as_str())
        );
        assert_eq!(
            site.publish(&unit_of(&site, &a)).await.unwrap(),
            Published::Unchanged
        );
    }
    assert_eq!(
        snapshot(dir.path()),
        before,
        "same files, same bytes, untouched"
    );
    let names: Vec<String> = before.iter().map(|(n, _, _)| n.clone()).collect();
    assert_eq!(
        names,
        [
            ENTRIES_FILE.to_string(),
            ".lock".to_string(),
            format!("a/{}.html", uuid(0)),
            format!("a/{}.html", uuid(1)),
            "feed.atom".into(),
            "feed.rss".into(),
            "index.html".into()
        ]
    );
    let entries = EntryIndex::load(dir.path()).unwrap();
    assert_eq!(entries.entries.len(), 2, "no duplicate entry");
    let atom = parse_xml(&read(dir.path(), "feed.atom"));
    assert_eq!(atom.all("entry").len(), 2);

    // Reconcile after an ambiguous attempt finds the page.
    let found = site
        .reconcile(&unit_of(&site, &a), &ctx(&a.id))
        .await
        .unwrap();
    assert_eq!(
        found.unwrap().remote_id.as_deref(),
        Some(page_url(BASE, &a.id).as_str())
    );
    let missing = announcement(9, "未配信", "本文");
    assert!(site
        .reconcile(&unit_of(&site, &missing), &ctx(&missing.id))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn files_are_replaced_by_rename_never_rewritten_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let site = Website::new(&config(dir.path()));
    let a = announcement(1, "お知らせ", "古い本文");
    deliver(&site, &a).await;
    let names = ["index.html", "feed.atom", "feed.rss", ENTRIES_FILE];
    let page = format!("a/{}.html", a.id);
    // Handles opened on the old files: a rename leaves them on the old, complete inode;
    // truncate-and-write would show them the new or a partial content.
    let mut handles: Vec<(String, std::fs::File, Vec<u8>)> = names
        .iter()
        .map(|n| n.to_string())
        .chain([page.clone()])
        .map(|n| {
            let path = dir.path().join(&n);
            let bytes = std::fs::read(&path).unwrap();
            (n, std::fs::File::open(path).unwrap(), bytes)
        })
        .collect();
    let mut b = a.clone();
    b.title = "お知らせ（訂正）".into();
    b.body = "新しい本文".into();
    deliver(&site, &b).await;
    for (name, file, old) in &mut handles {
        let mut through_handle = Vec::new();
        std::io::Read::read_to_end(file, &mut through_handle).unwrap();
        assert_eq!(
            &through_handle, old,
            "{name}: old handle still sees the whole old file"
        );
        assert_ne!(
            &std::fs::read(dir.path().join(&*name)).unwrap(),
            old,
            "{name}: the path shows the new file"
        );
    }
    assert!(read(dir.path(), &page).contains("新しい本文"));
    assert!(
        files_under(dir.path())
            .iter()
            .all(|f| !f.contains(TEMP_PREFIX)),
        "no temporary files left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_never_sees_a_partial_page() {
    let dir = tempfile::tempdir().unwrap();
    let site = Arc::new(Website::new(&config(dir.path())));
    // About 1 MB of HTML, so a non-atomic write would be caught half-way.
    let big =
        |fill: &str| "本文".repeat(200) + &format!("\n\n{fill}{}", "文".repeat(10)).repeat(20_000);
    let a = announcement(1, "大きなお知らせ", &big("あ"));
    deliver(&site, &a).await;
    let path = dir.path().join(format!("a/{}.html", a.id));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(Ordering::SeqCst) {
                let html = std::fs::read_to_string(&path).expect("the page always exists");
                assert!(html.starts_with("<!DOCTYPE html>"), "partial page: start");
                assert!(
                    html.ends_with("</html>\n"),
                    "partial page: {} bytes",
                    html.len()
                );
                let (a, b) = (html.contains("<p>あ文"), html.contains("<p>い文"));
                assert!(a ^ b, "a page is one version, never a mix");
                reads += 1;
            }
            reads
        })
    };
    for i in 0..6 {
        let mut next = a.clone();
        next.body = big(if i % 2 == 0 { "い" } else { "あ" });
        deliver(&site, &next).await;
    }
    stop.store(true, Ordering::SeqCst);
    let reads = reader.join().expect("reader saw only whole pages");
    assert!(reads > 0);
    assert!(files_under(dir.path())
        .iter()
        .all(|f| !f.contains(TEMP_PREFIX)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_deliveries_at_once_produce_fifty_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.feed_entries = 100;
    let site = Arc::new(Website::new(&cfg));
    let mut tasks = Vec::new();
    for n in 0..50 {
        let site = site.clone();
        tasks.push(tokio::spawn(async move {
            let a = announcement(n, &format!("同時{n}"), &format!("本文{n}"));
            site.deliver(&unit_of(&site, &a), &ctx(&a.id)).await
        }));
    }
    for task in tasks {
        task.await.unwrap().expect("delivered");
    }
    let entries = EntryIndex::load(dir.path()).unwrap();
    assert_eq!(entries.entries.len(), 50);
    let atom = parse_xml(&read(dir.path(), "feed.atom"));
    assert_eq!(atom.all("entry").len(), 50);
    let rss = parse_xml(&read(dir.path(), "feed.rss"));
    assert_eq!(rss.one("channel").all("item").len(), 50);
    let index = read(dir.path(), "index.html");
    assert_eq!(index.matches("<li>").count(), 50);
    let files = files_under(dir.path());
    assert_eq!(files.iter().filter(|f| f.starts_with("a/")).count(), 50);
    assert!(files.iter().all(|f| !f.contains(TEMP_PREFIX)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_publishers_sharing_a_directory_lose_no_entry() {
    // Two adapters on one directory stand for two daemons on a shared volume: their
    // in-process locks know nothing of each other, only the lock file orders them.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.feed_entries = 100;
    let sites = [Arc::new(Website::new(&cfg)), Arc::new(Website::new(&cfg))];
    let mut tasks = Vec::new();
    for n in 0..40 {
        let site = sites[n % 2].clone();
        tasks.push(tokio::spawn(async move {
            let a = announcement(n as u32, &format!("共有{n}"), &format!("本文{n}"));
            site.deliver(&unit_of(&site, &a), &ctx(&a.id)).await
        }));
    }
    for task in tasks {
        task.await.unwrap().expect("delivered");
    }
    assert_eq!(EntryIndex::load(dir.path()).unwrap().entries.len(), 40);
    let atom = parse_xml(&read(dir.path(), "feed.atom"));
    assert_eq!(atom.all("entry").len(), 40);
}

// ---------------------------------------------------------------------------------------
// Healthcheck, errors, config

#[tokio::test]
async fn healthcheck_creates_the_site_and_clears_crash_leftovers() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data/site");
    let site = Website::new(&config(&dir));
    site.healthcheck().await.expect("healthy");
    assert!(dir.join("a").is_dir());
    // The stable addresses answer before the first announcement.
    check_accessible(&read(&dir, "index.html"), "ja");
    assert!(read(&dir, "index.html").contains("お知らせはまだありません。"));
    let atom = parse_xml(&read(&dir, "feed.atom"));
    assert!(atom.all("entry").is_empty());
    parse_xml(&read(&dir, "feed.rss"));
    // A crash's temporary file is removed; nothing of the probe stays.
    std::fs::write(dir.join(format!("{TEMP_PREFIX}crashed")), b"half").unwrap();
    std::fs::write(dir.join("a").join(format!("{TEMP_PREFIX}x")), b"half").unwrap();
    site.healthcheck().await.expect("healthy");
    assert!(files_under(&dir).iter().all(|f| !f.contains(TEMP_PREFIX)));
    // An existing site is left as it is.
    let before = read(&dir, "feed.atom");
    site.healthcheck().await.unwrap();
    assert_eq!(read(&dir, "feed.atom"), before);
}

#[tokio::test]
async fn healthcheck_and_delivery_fail_when_output_dir_cannot_be_written() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let site = Website::new(&config(&file.join("site")));
    let err = site.healthcheck().await.unwrap_err();
    assert!(err.message.contains("not-a-dir"), "{err}");
    let a = announcement(1, "題", "本文");
    let err = site
        .deliver(&unit_of(&site, &a), &ctx(&a.id))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient, "{err}");
}

#[tokio::test]
async fn a_damaged_entry_index_is_reported_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let site = Website::new(&config(dir.path()));
    std::fs::write(dir.path().join(ENTRIES_FILE), b"{not json").unwrap();
    let a = announcement(1, "題", "本文");
    let err = site
        .deliver(&unit_of(&site, &a), &ctx(&a.id))
        .await
        .unwrap_err();
    assert!(err.message.contains(ENTRIES_FILE), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join(ENTRIES_FILE)).unwrap(),
        b"{not json"
    );
    assert!(site.healthcheck().await.is_err());
}

#[tokio::test]
async fn malformed_units_fail_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let site = Website::new(&config(dir.path()));
    let bad = DeliveryUnit {
        payload: serde_json::json!({"id": "x"}),
        recipient: None,
    };
    let err = site.deliver(&bad, &ctx("x")).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    let a = announcement(1, "題", "本文");
    let mut unit = unit_of(&site, &a);
    unit.payload["id"] = "../../escape".into();
    let err = site.deliver(&unit, &ctx("x")).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(!dir.path().join("../escape.html").exists());
}

#[test]
fn config_defaults_match_the_contract() {
    let c = Config::default();
    assert!(c.enabled, "the website is enabled by default");
    assert_eq!(c.output_dir, PathBuf::from("data/site"));
    assert_eq!(c.base_url, "http://127.0.0.1:8080/site/");
    assert_eq!(c.feed_entries, 50);
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    assert_eq!(c.feed_id(), "tag:127.0.0.1,2026:noroshi/announcements");
    let parsed: Config = toml::from_str("").unwrap();
    assert_eq!(parsed.base_url, c.base_url);
}

#[test]
fn config_parses_every_key_and_refuses_unknown_ones() {
    let c: Config = toml::from_str(
        r#"
        enabled = true
        output_dir = "/srv/site"
        base_url = "https://www.city.example.jp/site/"
        site_title = "須坂市 お知らせ"
        site_description = "須坂市からのお知らせ"
        site_author = "須坂市"
        feed_id = "tag:city.example.jp,2026:announcements"
        feed_entries = 20
        exercise_target = "drill"
        [delivery]
        concurrency = 1
        "#,
    )
    .unwrap();
    assert!(c.validate().is_empty());
    assert_eq!(c.feed_id(), "tag:city.example.jp,2026:announcements");
    assert_eq!(c.exercise_target.as_deref(), Some("drill"));
    assert_eq!(c.delivery.concurrency, Some(1));
    let err = toml::from_str::<Config>("outputdir = \"x\"").unwrap_err();
    assert!(err.to_string().contains("outputdir"), "{err}");
}

#[test]
fn validate_names_each_bad_key() {
    let c = Config {
        output_dir: PathBuf::new(),
        base_url: "ftp://example.jp/site/".into(),
        site_title: " ".into(),
        feed_id: Some("no scheme".into()),
        feed_entries: 0,
        exercise_target: Some("../escape".into()),
        ..Config::default()
    };
    let keys: Vec<String> = c.validate().into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        [
            "output_dir",
            "base_url",
            "site_title",
            "feed_id",
            "feed_entries",
            "exercise_target"
        ]
    );
    let slash = Config {
        base_url: "https://www.city.example.jp/site".into(),
        feed_entries: crate::MAX_FEED_ENTRIES + 1,
        exercise_target: Some("a".into()),
        ..Config::default()
    };
    let keys: Vec<String> = slash.validate().into_iter().map(|p| p.key).collect();
    assert_eq!(keys, ["base_url", "feed_entries", "exercise_target"]);
    let env = BuildEnv {
        http: reqwest_client(),
        data_dir: PathBuf::from("data"),
        public_base_url: "http://127.0.0.1:8080/".into(),
        clock: noroshi_channel_core::system_clock(),
    };
    assert_eq!(build(&c, &env).err().unwrap().len(), 6);
    let channel = build(&Config::default(), &env).unwrap();
    assert_eq!(channel.name(), "website");
}

#[test]
fn the_registry_drives_the_section_through_channel_config() {
    use noroshi_channel_core::ChannelConfig;
    let env = BuildEnv {
        http: reqwest_client(),
        data_dir: PathBuf::from("data"),
        public_base_url: "http://127.0.0.1:8080/".into(),
        clock: noroshi_channel_core::system_clock(),
    };
    let mut c = Config::default();
    c.delivery.concurrency = Some(1);
    let section: &dyn ChannelConfig = &c;
    assert!(section.enabled(), "the website is enabled by default");
    assert_eq!(section.delivery().concurrency, Some(1));
    assert!(section.validate().is_empty());
    assert_eq!(section.build("website", &env).unwrap().name(), "website");
    c.feed_entries = 0;
    let section: &dyn ChannelConfig = &c;
    assert_eq!(section.validate()[0].key, "feed_entries");
    assert_eq!(
        section.build("website", &env).err().unwrap()[0].key,
        "feed_entries"
    );
}

/// B.2: the adapter stamps updates with the clock the daemon hands it at build.
#[tokio::test]
async fn build_takes_its_clock_from_the_build_env() {
    let dir = tempfile::tempdir().unwrap();
    let env = BuildEnv {
        http: reqwest_client(),
        data_dir: PathBuf::from("data"),
        public_base_url: "http://127.0.0.1:8080/".into(),
        clock: Arc::new(|| at(100)),
    };
    let site = build(&config(dir.path()), &env).unwrap();
    for body in ["最初の本文", "訂正した本文"] {
        let a = announcement(1, "お知らせ", body);
        let unit = DeliveryUnit {
            payload: site.render(&a).unwrap().units[0].clone(),
            recipient: None,
        };
        site.deliver(&unit, &ctx(&a.id)).await.unwrap();
    }
    let atom = parse_xml(&read(dir.path(), "feed.atom"));
    let entry = atom.one("entry");
    assert_eq!(entry.text_of("published"), "2026-11-23T15:01:00+09:00");
    assert_eq!(entry.text_of("updated"), "2026-11-23T16:40:00+09:00");
}

fn reqwest_client() -> reqwest::Client {
    reqwest::Client::new()
}

// ---------------------------------------------------------------------------------------
// External validators (Debian: `jing`, `libxml2-utils`); skipped with a message when absent.

fn tool_available(tool: &str, arg: &str) -> bool {
    Command::new(tool).arg(arg).output().is_ok()
}

async fn sample_site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let site = Website::new(&config(dir.path()));
    let mut a = announcement(
        1,
        "避難所開設のお知らせ <&>",
        "本日15時、避難所を開設しました。\n\n<b>持ち物</b>",
    );
    a.tags = vec!["防災".into(), "危機管理課".into()];
    a.priority = Priority::Disaster;
    deliver(&site, &a).await;
    let mut b = announcement(2, "Shelter open", "Open now.");
    b.lang = "en".into();
    deliver(&site, &b).await;
    dir
}

#[tokio::test]
async fn atom_feed_validates_against_the_rfc4287_relax_ng_schema() {
    if !tool_available("jing", "-h") {
        eprintln!(
            "SKIPPED: `jing` not found (Debian package `jing`); Atom RELAX NG validation not run"
        );
        return;
    }
    let dir = sample_site().await;
    let schema = conformance().join("oasis-cap-1.2/schema/atom_rfc4287.rnc");
    let out = Command::new("jing")
        .arg("-c")
        .arg(&schema)
        .arg(dir.path().join("feed.atom"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "jing: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The validator can fail: an entry without its required id does not pass.
    let broken = read(dir.path(), "feed.atom").replacen("<id>urn:uuid:", "<xid>urn:uuid:", 1);
    let broken = broken.replacen("</id>\n    <title>", "</xid>\n    <title>", 1);
    let path = dir.path().join("broken.atom");
    std::fs::write(&path, broken).unwrap();
    let out = Command::new("jing")
        .arg("-c")
        .arg(&schema)
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "jing accepted a broken feed");
}

#[tokio::test]
async fn rss_feed_validates_against_the_rss2_schema() {
    if !tool_available("xmllint", "--version") {
        eprintln!("SKIPPED: `xmllint` not found (Debian package `libxml2-utils`); RSS XSD validation not run");
        return;
    }
    let dir = sample_site().await;
    let schema = conformance().join("oasis-cap-1.2/schema/rss-2_0.xsd");
    let run = |file: &Path| {
        Command::new("xmllint")
            .arg("--noout")
            .arg("--nonet")
            .arg("--schema")
            .arg(&schema)
            .arg(file)
            .output()
            .unwrap()
    };
    let out = run(&dir.path().join("feed.rss"));
    assert!(
        out.status.success(),
        "xmllint: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let broken = read(dir.path(), "feed.rss").replace("+0900</pubDate>", "+09:00</pubDate>");
    let path = dir.path().join("broken.rss");
    std::fs::write(&path, broken).unwrap();
    assert!(!run(&path).status.success(), "xmllint accepted a bad date");
}

/// Each language version is its own page with the right `lang`, every version links the
/// others with `hreflang` and a visible, labelled list; やさしい日本語 is `ja-x-easy`.
#[tokio::test]
async fn each_language_gets_its_own_linked_page() {
    let dir = tempfile::tempdir().unwrap();
    let site = Website::new(&config(dir.path()));
    let mut a = announcement(
        1,
        "避難所開設のお知らせ",
        "須坂市役所を避難所として開設しました。",
    );
    a.variants = vec![
        noroshi_channel_core::LangText {
            lang: "en".into(),
            title: "Shelter opened".into(),
            body: "Suzaka City Hall is open as a shelter.".into(),
        },
        noroshi_channel_core::LangText {
            lang: "ja-easy".into(),
            title: "ひなんじょを あけました".into(),
            body: "しやくしょに にげて ください。".into(),
        },
    ];
    deliver(&site, &a).await;
    let id = uuid(1);
    let main = read(dir.path(), &format!("a/{id}.html"));
    let en = read(dir.path(), &format!("a/{id}.en.html"));
    let easy = read(dir.path(), &format!("a/{id}.ja-x-easy.html"));
    check_accessible(&main, "ja");
    check_accessible(&en, "en");
    check_accessible(&easy, "ja-x-easy");
    assert!(en.contains("<h1>Shelter opened</h1>"), "{en}");
    assert!(
        en.contains("Skip to main content"),
        "English labels on the English page"
    );
    assert!(easy.contains("ひなんじょを あけました"));
    for (page, links) in [
        (&main, [("en", "en"), ("ja-x-easy", "ja-x-easy")]),
        (&en, [("ja", ""), ("ja-x-easy", "ja-x-easy")]),
        (&easy, [("ja", ""), ("en", "en")]),
    ] {
        for (lang, suffix) in links {
            let path = if suffix.is_empty() {
                format!("a/{id}.html")
            } else {
                format!("a/{id}.{suffix}.html")
            };
            assert!(
                page.contains(&format!(
                    "<link rel=\"alternate\" hreflang=\"{lang}\" href=\"{BASE}{path}\">"
                )),
                "{lang} not linked in head:\n{page}"
            );
            assert!(
                page.contains(&format!("hreflang=\"{lang}\" lang=\"{lang}\"")),
                "{lang} not in the visible list"
            );
        }
    }
    assert!(main.contains(">English</a>") && main.contains(">やさしい日本語</a>"));
    // A redelivery changes nothing; the feeds list the announcement once.
    deliver(&site, &a).await;
    let atom = read(dir.path(), "feed.atom");
    assert_eq!(atom.matches("<entry").count(), 1);
}

/// A CAP message as the daemon hands it: the CHANNELS.md §5.3 example, with its identity
/// and times swapped for the test's.
fn cap_message(
    n: u32,
    supersedes: &[String],
    expires_minutes: i64,
) -> noroshi_channel_core::CapMessage {
    let sent = at(n as i64);
    let expires = at(expires_minutes);
    let xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>urn:uuid:test-{n}</identifier>
  <sender>bousai@city.suzaka.nagano.jp</sender>
  <sent>{sent}</sent>
  <status>Actual</status>
  <msgType>{kind}</msgType>
  <scope>Public</scope>{refs}
  <info>
    <language>ja-JP</language>
    <category>Met</category>
    <event>避難指示</event>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Likely</certainty>
    <expires>{expires}</expires>
    <senderName>須坂市</senderName>
    <headline>【警戒レベル4】避難指示 井上地区 {n}</headline>
    <description>千曲川の水位が上昇しています。</description>
    <area>
      <areaDesc>須坂市 井上地区</areaDesc>
    </area>
  </info>
</alert>
"#,
        sent = crate::render::rfc3339(sent),
        expires = crate::render::rfc3339(expires),
        kind = if supersedes.is_empty() {
            "Alert"
        } else {
            "Update"
        },
        refs = if supersedes.is_empty() {
            String::new()
        } else {
            format!(
                "\n  <references>bousai@city.suzaka.nagano.jp,urn:uuid:test-{},{}</references>",
                n - 1,
                crate::render::rfc3339(at(n as i64 - 1))
            )
        },
    );
    noroshi_channel_core::CapMessage {
        xml,
        file_name: format!("test-{n}.xml"),
        identifier: format!("urn:uuid:test-{n}"),
        sender: "bousai@city.suzaka.nagano.jp".into(),
        sender_name: "須坂市".into(),
        headline: format!("【警戒レベル4】避難指示 井上地区 {n}"),
        summary: "千曲川の水位が上昇しています。".into(),
        sent,
        expires: Some(expires),
        supersedes: supersedes.to_vec(),
        status: "Actual".into(),
    }
}

/// CHANNELS.md §5.4: each alert's CAP document at a stable address, never rewritten; an
/// Atom index of the active ones, valid against RFC 4287's schema (and each document
/// against cap12.xsd), where an update replaces what it supersedes and expired alerts
/// drop out, on the next publication or the channel's refresh.
#[tokio::test]
async fn cap_messages_and_the_active_alert_feed() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(std::sync::Mutex::new(at(1)));
    let clock = now.clone();
    let site =
        Website::new(&config(dir.path())).with_clock(Arc::new(move || *clock.lock().unwrap()));
    let mut a = announcement(
        1,
        "【警戒レベル4】避難指示 井上地区 1",
        "千曲川の水位が上昇しています。",
    );
    a.priority = Priority::Disaster;
    a.cap = Some(cap_message(1, &[], 600));
    deliver(&site, &a).await;
    let first = read(dir.path(), "cap/test-1.xml");
    assert!(first.contains("<identifier>urn:uuid:test-1</identifier>"));
    let feed = read(dir.path(), "cap/alerts.atom");
    assert_eq!(feed.matches("<entry>").count(), 1, "{feed}");
    assert!(feed.contains(&format!("{BASE}cap/test-1.xml")));
    assert!(feed.contains("type=\"application/cap+xml\""));
    assert!(feed.contains(&format!("{BASE}a/{}.html", uuid(1))));
    // The update replaces it in the feed; the first document stays as it was.
    *now.lock().unwrap() = at(2);
    let mut b = announcement(
        2,
        "【更新】【警戒レベル4】避難指示 井上地区 2",
        "対象地区を拡大しました。",
    );
    b.priority = Priority::Disaster;
    b.cap = Some(cap_message(2, &["test-1.xml".to_string()], 30));
    deliver(&site, &b).await;
    let feed = read(dir.path(), "cap/alerts.atom");
    assert_eq!(feed.matches("<entry>").count(), 1, "{feed}");
    assert!(feed.contains("cap/test-2.xml") && !feed.contains("cap/test-1.xml"));
    assert_eq!(read(dir.path(), "cap/test-1.xml"), first);
    // Validators, when installed.
    let conformance = conformance();
    if tool_available("jing", "-h") {
        let out = Command::new("jing")
            .arg("-c")
            .arg(conformance.join("oasis-cap-1.2/schema/atom_rfc4287.rnc"))
            .arg(dir.path().join("cap/alerts.atom"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "jing: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    } else {
        eprintln!("SKIPPED: `jing` not found; the CAP feed's RELAX NG validation not run");
    }
    if tool_available("xmllint", "--version") {
        for file in ["cap/test-1.xml", "cap/test-2.xml"] {
            let out = Command::new("xmllint")
                .args(["--noout", "--nonet", "--schema"])
                .arg(conformance.join("oasis-cap-1.2/schema/cap12.xsd"))
                .arg(dir.path().join(file))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{file}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    } else {
        eprintln!("SKIPPED: `xmllint` not found; the CAP documents' XSD validation not run");
    }
    // Expired: gone from the feed at the next refresh, with nothing new published.
    *now.lock().unwrap() = at(31);
    site.refresh().await.unwrap();
    let feed = read(dir.path(), "cap/alerts.atom");
    assert_eq!(feed.matches("<entry>").count(), 0, "{feed}");
    assert!(dir.path().join("cap/test-2.xml").exists(), "documents stay");
}

//! Accessible HTML for one announcement's page and for the index (JIS X 8341-3 / WCAG 2.1 AA basics).
//!
//! Templates are minijinja with HTML autoescaping, so nothing an author types can become
//! markup. What the templates guarantee, and the tests check: the announcement's `lang`,
//! exactly one `h1`, dates as `<time datetime>` shown in Asia/Tokyo, a skip link, landmarks,
//! descriptive link text, no layout tables, banners whose colours pass 4.5:1.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use minijinja::{context, AutoEscape, Environment, UndefinedBehavior, Value};
use noroshi_channel_core::text::escape_html;
use serde::Serialize;

use crate::config::Site;
use crate::entries::Entry;
use crate::render::{display_date, is_japanese, is_web_link, page_path, rfc3339};

/// Foreground and background of every coloured thing on the pages: (what, text, background).
/// The tests hold each pair to WCAG 2.1 AA contrast (4.5:1 for normal text).
pub(crate) const COLOURS: [(&str, &str, &str); 7] = [
    ("text", "#1a1a1a", "#ffffff"),
    ("muted text", "#4a4a4a", "#ffffff"),
    ("link", "#0b4fa8", "#ffffff"),
    ("disaster banner", "#ffffff", "#b00020"),
    ("urgent banner", "#ffffff", "#8a4600"),
    ("exercise banner", "#1a1a1a", "#ffe14d"),
    ("skip link", "#ffffff", "#1a1a1a"),
];

fn colour(name: &str) -> (&'static str, &'static str) {
    let (_, fg, bg) = COLOURS
        .iter()
        .find(|(n, _, _)| *n == name)
        .expect("colour is listed");
    (fg, bg)
}

fn css() -> String {
    let (text, page) = colour("text");
    let (muted, _) = colour("muted text");
    let (link, _) = colour("link");
    let (dis_fg, dis_bg) = colour("disaster banner");
    let (urg_fg, urg_bg) = colour("urgent banner");
    let (ex_fg, ex_bg) = colour("exercise banner");
    let (skip_fg, skip_bg) = colour("skip link");
    format!(
        "body{{margin:0 auto;max-width:46em;padding:0 1em;font-family:sans-serif;font-size:100%;line-height:1.8;color:{text};background:{page}}}\
a{{color:{link};text-decoration:underline}}\
a:focus,a:focus-visible{{outline:3px solid {text};outline-offset:2px}}\
.skip-link{{position:absolute;left:-999em;top:0;padding:.5em 1em;color:{skip_fg};background:{skip_bg}}}\
.skip-link:focus{{left:1em}}\
.site-header,footer{{padding:.5em 0;color:{muted}}}\
.dates,.tags{{color:{muted}}}\
.banner{{padding:.75em 1em;font-size:1.1em;border:3px solid {text}}}\
.banner-disaster,.mark-disaster{{color:{dis_fg};background:{dis_bg}}}\
.banner-urgent,.mark-urgent{{color:{urg_fg};background:{urg_bg}}}\
.banner-exercise,.mark-exercise{{color:{ex_fg};background:{ex_bg}}}\
.mark{{padding:0 .4em;margin-right:.4em;font-weight:bold}}\
.entries{{padding-left:1.2em}}\
.entries time{{margin-right:.5em}}"
    )
}

/// Words the page itself says, in the announcement's language (Japanese or English).
#[derive(Serialize)]
struct Labels {
    skip: &'static str,
    published: &'static str,
    updated: &'static str,
    disaster: &'static str,
    urgent: &'static str,
    exercise: &'static str,
    exercise_mark: &'static str,
    tags: &'static str,
    nav: &'static str,
    back: &'static str,
    feeds: &'static str,
    atom: &'static str,
    rss: &'static str,
    latest: &'static str,
    empty: &'static str,
    languages: &'static str,
}

const LABELS_JA: Labels = Labels {
    skip: "本文へ移動",
    published: "掲載日時",
    updated: "更新日時",
    disaster: "災害情報",
    urgent: "緊急のお知らせ",
    exercise: "【訓練】これは訓練です。実際の災害や避難の情報ではありません。",
    exercise_mark: "訓練",
    tags: "分類",
    nav: "サイト内の移動",
    back: "お知らせの一覧に戻る",
    feeds: "更新情報の配信",
    atom: "Atom形式のフィード",
    rss: "RSS形式のフィード",
    latest: "新着のお知らせ",
    empty: "お知らせはまだありません。",
    languages: "ほかの言語",
};

const LABELS_EN: Labels = Labels {
    skip: "Skip to main content",
    published: "Published",
    updated: "Updated",
    disaster: "Disaster information",
    urgent: "Urgent notice",
    exercise: "[EXERCISE] This is a drill. It is not real disaster or evacuation information.",
    exercise_mark: "Drill",
    tags: "Topics",
    nav: "Site navigation",
    back: "Back to all announcements",
    feeds: "Subscribe",
    atom: "Atom feed",
    rss: "RSS feed",
    latest: "Latest announcements",
    empty: "No announcements yet.",
    languages: "Other languages",
};

fn labels(lang: &str) -> &'static Labels {
    if is_japanese(lang) {
        &LABELS_JA
    } else {
        &LABELS_EN
    }
}

#[derive(Serialize)]
struct When {
    datetime: String,
    display: String,
}

fn when(at: DateTime<Utc>, lang: &str) -> When {
    When {
        datetime: rfc3339(at),
        display: display_date(at, lang),
    }
}

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        // minijinja's HTML escaping also turns `/` into `&#x2f;`; valid, but it makes every
        // URL unreadable in the source. Escaping `& < > " '` is what HTML needs.
        env.set_formatter(|out, state, value| match value.as_str() {
            Some(s) if state.auto_escape() == AutoEscape::Html && !value.is_safe() => {
                out.write_str(&escape_html(s))?;
                Ok(())
            }
            _ => minijinja::escape_formatter(out, state, value),
        });
        env.add_template("page.html", include_str!("templates/page.html"))
            .expect("page template parses");
        env.add_template("index.html", include_str!("templates/index.html"))
            .expect("index template parses");
        env
    })
}

/// Paragraphs split on blank lines; each paragraph's lines kept (shown with `<br>`).
pub(crate) fn paragraphs(body: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut current: Vec<String> = Vec::new();
    for line in body.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        } else {
            current.push(line.trim_end().to_string());
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The first sentence or so of the body, for `<meta name="description">`.
fn description(body: &str) -> String {
    let flat = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = flat.chars().take(120).collect();
    if flat.chars().count() > 120 {
        out.push('…');
    }
    out
}

/// A language's name in that language, for the links between versions.
fn language_name(lang: &str) -> String {
    match lang {
        "ja" => "日本語".into(),
        "ja-x-easy" => "やさしい日本語".into(),
        "en" => "English".into(),
        "zh-Hans" | "zh-CN" => "简体中文".into(),
        "zh-Hant" | "zh-TW" => "繁體中文".into(),
        "ko" => "한국어".into(),
        "pt" | "pt-BR" => "Português".into(),
        "vi" => "Tiếng Việt".into(),
        other => other.to_string(),
    }
}

/// One announcement's page (`a/{id}.html`).
pub(crate) fn render_page(site: &Site, entry: &Entry) -> Result<String, minijinja::Error> {
    let others: Vec<(String, String)> = entry
        .variants
        .iter()
        .map(|v| (v.lang.clone(), v.path.clone()))
        .collect();
    render_version(
        site,
        entry,
        &entry.lang,
        &entry.title,
        &entry.body,
        &page_path(&entry.id),
        &others,
    )
}

/// The page of one other-language version (`a/{id}.{lang}.html`), linked to the main page
/// and every other version.
pub(crate) fn render_variant_page(
    site: &Site,
    entry: &Entry,
    variant: &crate::entries::Variant,
) -> Result<String, minijinja::Error> {
    let mut others = vec![(entry.lang.clone(), page_path(&entry.id))];
    others.extend(
        entry
            .variants
            .iter()
            .filter(|v| v.lang != variant.lang)
            .map(|v| (v.lang.clone(), v.path.clone())),
    );
    render_version(
        site,
        entry,
        &variant.lang,
        &variant.title,
        &variant.body,
        &variant.path,
        &others,
    )
}

#[allow(clippy::too_many_arguments)]
fn render_version(
    site: &Site,
    entry: &Entry,
    lang: &str,
    title: &str,
    body: &str,
    path: &str,
    others: &[(String, String)],
) -> Result<String, minijinja::Error> {
    let labels = labels(lang);
    let link_text = if is_japanese(lang) {
        format!("「{title}」の詳しい情報（関連ページ）")
    } else {
        format!("More about “{title}” (related page)")
    };
    let alternates: Vec<Value> = others
        .iter()
        .map(|(lang, path)| {
            context! {
                lang => lang,
                name => language_name(lang),
                href => format!("{}{}", site.base_url, path),
            }
        })
        .collect();
    let updated = (entry.updated_at > entry.published_at).then(|| when(entry.updated_at, lang));
    environment().get_template("page.html")?.render(context! {
        site => site,
        lang => lang,
        title => title,
        description => description(body),
        page_url => format!("{}{}", site.base_url, path),
        alternates => alternates,
        css => Value::from_safe_string(css()),
        labels => labels,
        exercise => entry.exercise,
        priority => entry.priority.as_str(),
        published => when(entry.published_at, lang),
        updated => updated,
        paragraphs => paragraphs(body),
        // Checked at render time too; an entry index edited by hand must not inject an href.
        link => entry.link.as_deref().filter(|l| is_web_link(l)),
        link_text => link_text,
        tags => entry.tags,
        images => entry.images.iter().filter(|i| i.url.starts_with("https://")).map(|i| context! { url => i.url, alt => i.alt }).collect::<Vec<_>>(),
    })
}

/// `index.html`: the given entries (already the newest `feed_entries`), newest first.
pub(crate) fn render_index(site: &Site, entries: &[Entry]) -> Result<String, minijinja::Error> {
    let items: Vec<Value> = entries
        .iter()
        .map(|e| {
            context! {
                lang => e.lang,
                title => e.title,
                href => page_path(&e.id),
                exercise => e.exercise,
                priority => e.priority.as_str(),
                published => when(e.published_at, &site.lang),
            }
        })
        .collect();
    environment().get_template("index.html")?.render(context! {
        site => site,
        items => items,
        css => Value::from_safe_string(css()),
        labels => labels(&site.lang),
    })
}

//! The WHOLE twitter-text conformance suite (../shared/conformance/twitter-text): every
//! section and every case of `validate.yml`, `extract.yml` and `tlds.yml`.
//!
//! * Counter sections of `validate.yml` go through Noroshi's own counter
//!   ([`noroshi_x::render::count_with`]) with the config each section names (SOURCE.md,
//!   CHANNELS.md §2.5): v2 for `WeightedTweetsCounterTest`, v3 for the emoji and
//!   directional-marker counters.
//! * The legacy `tweets` validity section is the 140-character v1 rule set (`config/v1.json`),
//!   checked through Noroshi's counter (`count_with(.., v1).valid`) and through the crate's
//!   `Validator::is_valid_tweet` (two allow-listed crate bugs, see [`KNOWN_CRATE_BUGS`]).
//! * `usernames`, `lists`, `hashtags`, `urls`, `urls_without_protocol` use the twitter-text
//!   `Validator`.
//! * `extract.yml` and `tlds.yml` use the twitter-text `Extractor` (URLs without a protocol
//!   are extracted, as in the reference implementations). Every URL case is checked a second
//!   time on the path that decides which spans weigh 23 in Noroshi's length: the
//!   `ValidatingExtractor` that `twitter_text::parse` runs (config v3, NFC input), and for
//!   plain URL lists also [`noroshi_x::render::url_spans`].
//!
//! A section present in a YAML file but not handled here fails the test, so does any failing
//! case that is not in [`KNOWN_CRATE_BUGS`], and so does an entry of that list that passes
//! (or no longer exists). Per-section pass counts are printed (`--nocapture` to see them when
//! everything passes).

use std::path::PathBuf;

use serde_yaml::{Mapping, Value};
use twitter_text::entity::Entity;
use twitter_text::extractor::{Extract, Extractor, ValidatingExtractor};
use twitter_text::validator::Validator;
use twitter_text_config::Configuration;

use noroshi_x::render;

/// A case that fails because of a bug in the `twitter-text` crate, in an API Noroshi does not
/// use (the same case passes through the API Noroshi does use, see `reason`).
struct KnownBug {
    file: &'static str,
    section: &'static str,
    /// The check label in [`PLAN`].
    check: &'static str,
    description: &'static str,
    reason: &'static str,
}

/// Keep it small; the test asserts that every entry matches a case and that it still fails.
const KNOWN_CRATE_BUGS: &[KnownBug] = &[
    // twitter-text 0.3.1 `Validator::is_valid_tweet` calls `parse(text, config, false)`, i.e.
    // without URL extraction, so `http://bit.ly/dJpywL` weighs its raw 20 characters instead of
    // transformedURLLength (23) and a 143-weight tweet passes as valid. The reference
    // implementations (Java `Validator.isValidTweet`, JS `isValidTweetText`) go through
    // `parseTweet`, which always weighs URLs at 23. Noroshi never calls `is_valid_tweet`: it
    // counts with `render::count_with` (`parse(.., true)`), and the "noroshi count_with v1"
    // check passes every case of this section.
    KnownBug {
        file: "validate.yml",
        section: "tweets",
        check: CRATE_IS_VALID_TWEET,
        description: "Invalid Tweet: 141 characters",
        reason:
            "Validator::is_valid_tweet does not weigh URLs at 23 (parse without URL extraction)",
    },
    KnownBug {
        file: "validate.yml",
        section: "tweets",
        check: CRATE_IS_VALID_TWEET,
        description: "Invalid Tweet: 141 characters (due to newline)",
        reason:
            "Validator::is_valid_tweet does not weigh URLs at 23 (parse without URL extraction)",
    },
];

const CRATE_IS_VALID_TWEET: &str = "twitter-text Validator::is_valid_tweet v1";

fn conformance(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/conformance/twitter-text")
        .join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(conformance(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn load(rel: &str) -> Value {
    serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn config(rel: &str) -> Configuration {
    Configuration::configuration_from_json(&read(rel))
}

/// Compact one-line rendering of a YAML value for failure messages.
fn show(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| format!("{v:?}"))
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

fn strings(v: impl IntoIterator<Item = String>) -> Value {
    Value::Sequence(v.into_iter().map(Value::String).collect())
}

fn indices(start: i32, end: i32) -> Value {
    Value::Sequence(vec![
        Value::from(i64::from(start)),
        Value::from(i64::from(end)),
    ])
}

/// Entities as the conformance suite writes them: `{<key>: value, indices: [start, end]}`.
fn with_indices(key: &str, entities: &[Entity<'_>]) -> Value {
    Value::Sequence(
        entities
            .iter()
            .map(|e| {
                let mut m = Mapping::new();
                m.insert(s(key), s(e.get_value()));
                m.insert(s("indices"), indices(e.get_start(), e.get_end()));
                Value::Mapping(m)
            })
            .collect(),
    )
}

fn mentions_or_lists(entities: &[Entity<'_>]) -> Value {
    Value::Sequence(
        entities
            .iter()
            .map(|e| {
                let mut m = Mapping::new();
                m.insert(s("screen_name"), s(e.get_value()));
                m.insert(s("list_slug"), s(e.get_list_slug()));
                m.insert(s("indices"), indices(e.get_start(), e.get_end()));
                Value::Mapping(m)
            })
            .collect(),
    )
}

/// What Noroshi's counter reports, in the field names of the counter sections.
fn counted(text: &str, config: &Configuration) -> Value {
    let c = render::count_with(text, config);
    let mut m = Mapping::new();
    m.insert(s("weightedLength"), Value::from(c.weighted_length as u64));
    m.insert(s("valid"), Value::Bool(c.valid));
    m.insert(s("permillage"), Value::from(c.permillage as u64));
    m.insert(
        s("displayRangeStart"),
        Value::from(i64::from(c.display_range.0)),
    );
    m.insert(
        s("displayRangeEnd"),
        Value::from(i64::from(c.display_range.1)),
    );
    m.insert(
        s("validRangeStart"),
        Value::from(i64::from(c.valid_range.0)),
    );
    m.insert(s("validRangeEnd"), Value::from(i64::from(c.valid_range.1)));
    Value::Mapping(m)
}

/// The URLs the weighting path sees: `twitter_text::parse` runs a `ValidatingExtractor` on
/// the NFC form of the text; these are the spans that count 23 each.
fn weighting_urls(text: &str, cfg: &Configuration, indexed: bool) -> Value {
    let mut ve = ValidatingExtractor::new(cfg);
    let input = ve.prep_input(text);
    let r = ve.extract_urls_with_indices(&input);
    if indexed {
        with_indices("url", &r.entities)
    } else {
        strings(r.entities.iter().map(|e| e.get_value().to_string()))
    }
}

/// The URLs Noroshi's own `render::url_spans` finds (used by the shorten policy).
fn noroshi_url_spans(text: &str) -> Value {
    strings(
        render::url_spans(text)
            .into_iter()
            .map(|(a, b)| text[a..b].to_string()),
    )
}

/// Everything the checks run with.
struct Ctx {
    v1: Configuration,
    v2: Configuration,
    v3: Configuration,
    /// The legacy `tweets` section: 140 characters, config v1.
    legacy: Validator,
    validator: Validator,
    extractor: Extractor,
}

/// One check of a section: what it exercises, and the value to compare with `expected`.
type Check = (&'static str, fn(&Ctx, &str) -> Value);

const URL_LIST: &[Check] = &[
    ("extract_urls", |c, t| strings(c.extractor.extract_urls(t))),
    ("weighting path (parse, v3)", |c, t| {
        weighting_urls(t, &c.v3, false)
    }),
    ("noroshi url_spans", |_, t| noroshi_url_spans(t)),
];

const URL_INDEXED: &[Check] = &[
    ("extract_urls_with_indices", |c, t| {
        with_indices("url", &c.extractor.extract_urls_with_indices(t))
    }),
    ("weighting path (parse, v3)", |c, t| {
        weighting_urls(t, &c.v3, true)
    }),
];

/// Every section of every file, and how it is run. A section in a file but not here, or
/// here but not in the file, fails the test.
const PLAN: &[(&str, &str, &[Check])] = &[
    // validate.yml
    // The legacy 140-character rule: validity as Noroshi computes it (URLs weigh 23), and
    // the crate's own `Validator`, which has a known bug here (see KNOWN_CRATE_BUGS).
    (
        "validate.yml",
        "tweets",
        &[
            ("noroshi count_with v1 (valid)", |c, t| {
                Value::Bool(render::count_with(t, &c.v1).valid)
            }),
            (CRATE_IS_VALID_TWEET, |c, t| {
                Value::Bool(c.legacy.is_valid_tweet(t))
            }),
        ],
    ),
    (
        "validate.yml",
        "usernames",
        &[("is_valid_username", |c, t| {
            Value::Bool(c.validator.is_valid_username(t))
        })],
    ),
    (
        "validate.yml",
        "lists",
        &[("is_valid_list", |c, t| {
            Value::Bool(c.validator.is_valid_list(t))
        })],
    ),
    (
        "validate.yml",
        "hashtags",
        &[("is_valid_hashtag", |c, t| {
            Value::Bool(c.validator.is_valid_hashtag(t))
        })],
    ),
    (
        "validate.yml",
        "urls",
        &[("is_valid_url", |c, t| {
            Value::Bool(c.validator.is_valid_url(t))
        })],
    ),
    (
        "validate.yml",
        "urls_without_protocol",
        &[("is_valid_url_without_protocol", |c, t| {
            Value::Bool(c.validator.is_valid_url_without_protocol(t))
        })],
    ),
    (
        "validate.yml",
        "WeightedTweetsCounterTest",
        &[("noroshi count_with v2", |c, t| counted(t, &c.v2))],
    ),
    (
        "validate.yml",
        "WeightedTweetsWithDiscountedEmojiCounterTest",
        &[("noroshi count_with v3", |c, t| counted(t, &c.v3))],
    ),
    (
        "validate.yml",
        "UnicodeDirectionalMarkerCounterTest",
        &[("noroshi count_with v3", |c, t| counted(t, &c.v3))],
    ),
    // extract.yml
    (
        "extract.yml",
        "mentions",
        &[("extract_mentioned_screennames", |c, t| {
            strings(c.extractor.extract_mentioned_screennames(t))
        })],
    ),
    (
        "extract.yml",
        "mentions_with_indices",
        &[("extract_mentioned_screennames_with_indices", |c, t| {
            with_indices(
                "screen_name",
                &c.extractor.extract_mentioned_screennames_with_indices(t),
            )
        })],
    ),
    (
        "extract.yml",
        "mentions_or_lists_with_indices",
        &[("extract_mentions_or_lists_with_indices", |c, t| {
            mentions_or_lists(&c.extractor.extract_mentions_or_lists_with_indices(t))
        })],
    ),
    (
        "extract.yml",
        "replies",
        &[("extract_reply_username", |c, t| {
            match c.extractor.extract_reply_username(t) {
                Some(e) => s(e.get_value()),
                None => Value::Null,
            }
        })],
    ),
    ("extract.yml", "urls", URL_LIST),
    ("extract.yml", "urls_with_indices", URL_INDEXED),
    ("extract.yml", "urls_with_directional_markers", URL_INDEXED),
    ("extract.yml", "tco_urls_with_params", URL_LIST),
    (
        "extract.yml",
        "hashtags",
        &[("extract_hashtags", |c, t| {
            strings(c.extractor.extract_hashtags(t))
        })],
    ),
    (
        "extract.yml",
        "hashtags_from_astral",
        &[("extract_hashtags", |c, t| {
            strings(c.extractor.extract_hashtags(t))
        })],
    ),
    (
        "extract.yml",
        "hashtags_with_indices",
        &[("extract_hashtags_with_indices", |c, t| {
            with_indices("hashtag", &c.extractor.extract_hashtags_with_indices(t))
        })],
    ),
    (
        "extract.yml",
        "cashtags",
        &[("extract_cashtags", |c, t| {
            strings(c.extractor.extract_cashtags(t))
        })],
    ),
    (
        "extract.yml",
        "cashtags_with_indices",
        &[("extract_cashtags_with_indices", |c, t| {
            with_indices("cashtag", &c.extractor.extract_cashtags_with_indices(t))
        })],
    ),
    // tlds.yml: every TLD must be recognised in a URL (it decides what weighs 23).
    ("tlds.yml", "country", URL_LIST),
    ("tlds.yml", "generic", URL_LIST),
];

struct Tally {
    passed: usize,
    total: usize,
    allowed: usize,
}

#[test]
fn whole_twitter_text_conformance_suite() {
    let v1 = config("config/v1.json");
    let v2 = config("config/v2.json");
    let v3 = config("config/v3.json");
    // Sanity: the file configs are the crate's built-in ones, and v3 is what Noroshi uses.
    assert_eq!(&v1, twitter_text_config::config_v1());
    assert_eq!(&v2, twitter_text_config::config_v2());
    assert_eq!(&v3, render::config());
    let ctx = Ctx {
        legacy: Validator::with_config(v1.clone()),
        v1,
        validator: Validator::with_config(v3.clone()),
        extractor: Extractor::new(),
        v2,
        v3,
    };
    // Like the reference implementations, URLs without a protocol are extracted.
    assert!(ctx.extractor.get_extract_url_without_protocol());
    let mut unplanned: Vec<(&str, &str)> = PLAN.iter().map(|(f, s, _)| (*f, *s)).collect();

    // (file, its parsed YAML, how many cases it holds in the snapshot of SOURCE.md).
    let suites = [
        ("validate.yml", load("validate.yml"), 97),
        ("extract.yml", load("extract.yml"), 238),
        ("tlds.yml", load("tlds.yml"), 1574),
    ];

    let mut failures: Vec<String> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut allow_seen = vec![0usize; KNOWN_CRATE_BUGS.len()];
    let mut tallies: Vec<(String, Tally)> = Vec::new();
    let mut cases_total = 0;

    for (file, suite, want_cases) in &suites {
        let mut file_cases = 0;
        let sections = suite["tests"]
            .as_mapping()
            .unwrap_or_else(|| panic!("{file}: no `tests` mapping"));
        for (name, cases) in sections {
            let section = name.as_str().expect("section name");
            let Some(&(_, _, checks)) = PLAN.iter().find(|(f, s, _)| f == file && *s == section)
            else {
                problems.push(format!(
                    "{file}: section `{section}` is not run by this test"
                ));
                continue;
            };
            let cases = cases
                .as_sequence()
                .unwrap_or_else(|| panic!("{file}/{section}: not a list"));
            if cases.is_empty() {
                problems.push(format!("{file}/{section}: no cases"));
            }
            cases_total += cases.len();
            file_cases += cases.len();
            unplanned.retain(|p| *p != (*file, section));
            for (label, check) in checks {
                let mut tally = Tally {
                    passed: 0,
                    total: 0,
                    allowed: 0,
                };
                for case in cases {
                    let description = case["description"].as_str().expect("description");
                    let text = case["text"].as_str().expect("text");
                    let expected = &case["expected"];
                    tally.total += 1;
                    let got = check(&ctx, text);
                    let ok = &got == expected;
                    let allowed = KNOWN_CRATE_BUGS.iter().position(|b| {
                        b.file == *file
                            && b.section == section
                            && b.check == *label
                            && b.description == description
                    });
                    match (ok, allowed) {
                        (true, None) => tally.passed += 1,
                        (true, Some(i)) => {
                            tally.passed += 1;
                            allow_seen[i] += 1;
                            problems.push(format!(
                                "{file}/{section} [{label}]: allow-listed case {description:?} now \
                                 passes; remove it from KNOWN_CRATE_BUGS"
                            ));
                        }
                        (false, Some(i)) => {
                            tally.allowed += 1;
                            allow_seen[i] += 1;
                            println!(
                                "  allow-listed crate bug: {file}/{section} [{label}] \
                                 {description:?}: expected {}, got {} ({})",
                                show(expected),
                                show(&got),
                                KNOWN_CRATE_BUGS[i].reason
                            );
                        }
                        (false, None) => failures.push(format!(
                            "{file}/{section} [{label}]: {description:?}\n    text:     {}\n    \
                             expected: {}\n    got:      {}",
                            show(&s(text)),
                            show(expected),
                            show(&got)
                        )),
                    }
                }
                tallies.push((format!("{file}/{section} [{label}]"), tally));
            }
        }
        if file_cases != *want_cases {
            problems.push(format!("{file}: {file_cases} cases, expected {want_cases}"));
        }
    }
    for (file, section) in unplanned {
        problems.push(format!("{file}: expected section `{section}` is missing"));
    }
    for (b, seen) in KNOWN_CRATE_BUGS.iter().zip(&allow_seen) {
        if *seen != 1 {
            problems.push(format!(
                "KNOWN_CRATE_BUGS entry {}/{} [{}] {:?} matches {seen} cases, not 1",
                b.file, b.section, b.check, b.description
            ));
        }
    }

    println!("twitter-text conformance: {cases_total} cases");
    for (name, t) in &tallies {
        let allowed = if t.allowed > 0 {
            format!(" ({} allow-listed crate bugs)", t.allowed)
        } else {
            String::new()
        };
        println!("  {name}: {}/{} passed{allowed}", t.passed, t.total);
    }

    assert!(
        problems.is_empty() && failures.is_empty(),
        "{} structural problems, {} failing cases\n{}\n{}",
        problems.len(),
        failures.len(),
        problems.join("\n"),
        failures.join("\n")
    );
}

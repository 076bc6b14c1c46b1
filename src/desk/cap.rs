//! CAP 1.2 intake: an alert (validated by `noroshi-cap`) becomes a disaster announcement.
//!
//! - `headline` → title; `description`, `instruction`, the areas and the expiry → body;
//!   `web` → link; the `ja` info block is the primary, the others language variants.
//! - `status`: Actual is live; Exercise and Test are drills; System and Draft (and `Ack`,
//!   `Error` messages) are stored and shown, never sent.
//! - `msgType`: Alert posts; Update follows the alert it references (marked 【更新】) and
//!   takes its place; Cancel sends its all-clear. An unknown reference is accepted and
//!   flagged, never silently turned into a second alert.
//! - The same message twice (sender, identifier, sent) is the same announcement.

use chrono::{DateTime, FixedOffset};
use noroshi_cap::{Alert, Info, MsgType, Status};

use crate::accept::{Submission, Variant};
use crate::store::alerts::{AlertKind, CapIdentity};

/// What an alert becomes (built once per message; its size does not matter).
#[allow(clippy::large_enum_variant)]
pub enum Intake {
    /// Sent as a disaster announcement.
    Announce {
        submission: Submission,
        kind: AlertKind,
        /// The referenced CAP messages, newest first, to find the announcement it follows.
        references: Vec<CapIdentity>,
        expires_at: Option<i64>,
    },
    /// Stored and shown, never sent, and why.
    StoreOnly(String),
}

pub fn identity(a: &Alert) -> CapIdentity {
    CapIdentity {
        sender: a.sender.clone(),
        identifier: a.identifier.clone(),
        sent: a.sent.as_str().to_string(),
    }
}

/// The info block read first: Japanese, else the first one.
fn primary(a: &Alert) -> Option<&Info> {
    a.infos
        .iter()
        .find(|i| i.language.to_ascii_lowercase().starts_with("ja"))
        .or_else(|| a.infos.first())
}

/// `en-US` → `en`, `ja-JP` → `ja`: the languages the channels know.
fn short_lang(tag: &str) -> String {
    tag.split('-').next().unwrap_or(tag).to_ascii_lowercase()
}

/// An expiry as a reader sees it, in Asia/Tokyo.
fn expiry_text(expires: DateTime<FixedOffset>, japanese: bool) -> String {
    let local = expires.with_timezone(&noroshi_channel_core::jst());
    if japanese {
        local.format("%-m月%-d日%-H時%M分まで").to_string()
    } else {
        local.format("until %-d %B %Y, %H:%M (JST)").to_string()
    }
}

/// Title and body of one info block.
fn words(info: &Info, update: bool) -> (String, String) {
    let japanese = info.language.to_ascii_lowercase().starts_with("ja");
    let mut title = info
        .headline
        .clone()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| info.event.clone());
    if update {
        title = if japanese {
            format!("【更新】{title}")
        } else {
            format!("[Update] {title}")
        };
    }
    let mut parts = Vec::new();
    for p in [&info.description, &info.instruction].into_iter().flatten() {
        if !p.trim().is_empty() {
            parts.push(p.trim().to_string());
        }
    }
    let areas: Vec<&str> = info.areas.iter().map(|a| a.area_desc.as_str()).collect();
    if !areas.is_empty() {
        parts.push(if japanese {
            format!("対象地域：{}", areas.join("、"))
        } else {
            format!("Area: {}", areas.join(", "))
        });
    }
    if let Some(expires) = &info.expires {
        parts.push(if japanese {
            format!("有効期限：{}", expiry_text(expires.value(), true))
        } else {
            format!("Valid {}", expiry_text(expires.value(), false))
        });
    }
    if parts.is_empty() {
        parts.push(info.event.clone());
    }
    (title, parts.join("\n\n"))
}

/// `変更点：…`: which parts of an update differ from what it updates (the headline, the
/// area, the expiry, the description or instruction), so a reader of a new post sees what is
/// new without comparing two posts.
pub fn what_changed(old_title: &str, old_body: &str, new: &Submission) -> Option<String> {
    let section = |body: &str, prefix: &str| -> Option<String> {
        body.split("\n\n")
            .find(|p| p.starts_with(prefix))
            .map(str::to_string)
    };
    let rest = |body: &str| -> Vec<String> {
        body.split("\n\n")
            .filter(|p| {
                !p.starts_with("対象地域：")
                    && !p.starts_with("有効期限：")
                    && !p.starts_with("変更点：")
            })
            .map(str::to_string)
            .collect()
    };
    let old_headline = old_title.trim_start_matches("【更新】");
    let new_headline = new.title.trim_start_matches("【更新】");
    let mut changed = Vec::new();
    if old_headline != new_headline {
        changed.push("見出し");
    }
    if section(old_body, "対象地域：") != section(&new.body, "対象地域：") {
        changed.push("対象地域");
    }
    if section(old_body, "有効期限：") != section(&new.body, "有効期限：") {
        changed.push("有効期限");
    }
    if rest(old_body) != rest(&new.body) {
        changed.push("本文");
    }
    (!changed.is_empty()).then(|| format!("変更点：{}", changed.join("、")))
}

/// Maps a validated alert.
pub fn intake(a: &Alert) -> Intake {
    let exercise = match a.status {
        Status::Actual => false,
        Status::Exercise | Status::Test => true,
        Status::System | Status::Draft => {
            return Intake::StoreOnly(format!(
                "CAP status {} is stored and shown, never sent",
                a.status.as_str()
            ))
        }
    };
    let kind = match a.msg_type {
        MsgType::Alert => AlertKind::Alert,
        MsgType::Update => AlertKind::Update,
        MsgType::Cancel => AlertKind::AllClear,
        MsgType::Ack | MsgType::Error => {
            return Intake::StoreOnly(format!(
                "CAP msgType {} is stored and shown, never sent",
                a.msg_type.as_str()
            ))
        }
    };
    let Some(info) = primary(a) else {
        return Intake::StoreOnly(
            "the alert has no info block: nothing to say to residents; stored only".into(),
        );
    };
    let update = kind == AlertKind::Update;
    let (mut title, body) = words(info, update);
    if kind == AlertKind::AllClear && !title.starts_with("【解除】") {
        title = format!("【解除】{title}");
    }
    let mut variants = std::collections::BTreeMap::new();
    for other in a.infos.iter().filter(|i| !std::ptr::eq(*i, info)) {
        let lang = short_lang(&other.language);
        if lang == short_lang(&info.language) || variants.contains_key(&lang) {
            continue;
        }
        let (t, b) = words(other, update);
        variants.insert(lang, Variant { title: t, body: b });
    }
    let expires_at = a
        .infos
        .iter()
        .filter_map(|i| i.expires.as_ref())
        .map(|t| t.value().timestamp_millis())
        .max();
    let submission = Submission {
        title: title.chars().take(200).collect(),
        body,
        link: info.web.clone().filter(|w| w.starts_with("http")),
        priority: Some(noroshi_channel_core::Priority::Disaster),
        channels: None,
        scheduled_at: None,
        overrides: Default::default(),
        lang: Some(short_lang(&info.language)),
        variants,
        tags: vec!["CAP".to_string()],
        template: None,
        params: Default::default(),
        exercise,
        images: Vec::new(),
    };
    let references = a
        .references
        .iter()
        .rev()
        .map(|r| CapIdentity {
            sender: r.sender.clone(),
            identifier: r.identifier.clone(),
            sent: r.sent.as_str().to_string(),
        })
        .collect();
    Intake::Announce {
        submission,
        kind,
        references,
        expires_at,
    }
}

/// The file a CAP message is published as: stable, path-safe, the same for the message and
/// for any later message that references it (`{sent}-{identifier}-{hash}.xml`).
pub fn file_name(id: &CapIdentity) -> String {
    use sha2::Digest;
    let digits: String = id
        .sent
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(20)
        .collect();
    let ident: String = id
        .identifier
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    let hash = sha2::Sha256::digest(format!("{}\n{}\n{}", id.sender, id.identifier, id.sent));
    format!("{digits}-{ident}-{}.xml", &hex::encode(hash)[..8])
}

/// What the website publishes for a received message: the document as it came (when it
/// came as UTF-8; else the same message written out again), and its feed entry.
pub fn publication(
    a: &Alert,
    received: &[u8],
    supersedes: &[CapIdentity],
) -> noroshi_channel_core::CapMessage {
    let info = primary(a);
    let xml = match std::str::from_utf8(received) {
        Ok(text) if !text.contains("encoding=\"ISO") && !text.contains("encoding='ISO") => {
            text.to_string()
        }
        _ => noroshi_cap::to_xml(a),
    };
    let sent = a.sent.value().with_timezone(&chrono::Utc);
    noroshi_channel_core::CapMessage {
        xml,
        file_name: file_name(&identity(a)),
        identifier: a.identifier.clone(),
        sender: a.sender.clone(),
        sender_name: info
            .and_then(|i| i.sender_name.clone())
            .unwrap_or_else(|| a.sender.clone()),
        headline: info
            .map(|i| i.headline.clone().unwrap_or_else(|| i.event.clone()))
            .unwrap_or_default(),
        summary: info
            .and_then(|i| i.description.clone())
            .map(|d| d.chars().take(200).collect())
            .unwrap_or_default(),
        sent,
        expires: a
            .infos
            .iter()
            .filter_map(|i| i.expires.as_ref())
            .map(|t| t.value().with_timezone(&chrono::Utc))
            .max(),
        supersedes: supersedes.iter().map(file_name).collect(),
        status: a.status.as_str().to_string(),
    }
}

/// Receives one CAP message from the API or a feed: validated, recorded, and accepted as a
/// disaster announcement unless it is one that is stored only. The same message again is
/// answered as the first time.
pub async fn receive(
    state: &crate::api::SharedState,
    caller: &crate::api::auth::Caller,
    xml: &[u8],
    source: &str,
    request_id: Option<String>,
) -> crate::api::problem::ApiResult<axum::response::Response> {
    use crate::api::announcements::{accept_and_store, accepted_response, replay_of, DeskContext};
    use crate::api::problem::Problem;
    use crate::store::alerts;
    use axum::response::IntoResponse;

    let alert = noroshi_cap::parse(xml).map_err(|e| Problem::invalid(e.element, e.detail))?;
    let id = identity(&alert);
    let stored = |detail: String| {
        (
            axum::http::StatusCode::OK,
            axum::Json(crate::api::desk::CapStored {
                sent: false,
                status: alert.status.as_str().to_string(),
                msg_type: alert.msg_type.as_str().to_string(),
                detail,
            }),
        )
            .into_response()
    };
    if let Some(seen) = alerts::cap_message(&state.db, &id).await? {
        return Ok(match seen.announcement_id {
            Some(announcement) => {
                let row = crate::store::announcements::get(&state.db, &announcement).await?;
                let status = row.map(|r| r.status).unwrap_or_default();
                accepted_response(replay_of(state, &announcement, status).await?)
            }
            None => stored(seen.note.unwrap_or_default()),
        });
    }
    let text = String::from_utf8_lossy(xml).to_string();
    let record = |announcement_id: Option<String>, note: Option<String>| {
        let id = id.clone();
        let text = text.clone();
        let (status, msg_type) = (alert.status.as_str(), alert.msg_type.as_str());
        async move {
            alerts::record_cap(
                &state.db,
                &alerts::NewCapMessage {
                    identity: &id,
                    status,
                    msg_type,
                    announcement_id: announcement_id.as_deref(),
                    note: note.as_deref(),
                    source,
                    xml: &text,
                },
            )
            .await
        }
    };
    match intake(&alert) {
        Intake::StoreOnly(why) => {
            tracing::info!(sender = %id.sender, identifier = %id.identifier, status = alert.status.as_str(), "CAP message stored, not sent");
            record(None, Some(why.clone())).await?;
            Ok(stored(why))
        }
        Intake::Announce {
            mut submission,
            kind,
            references,
            expires_at,
        } => {
            submission.channels = state.cap_channels.clone();
            let mut follows = None;
            for r in &references {
                if let Some(found) =
                    alerts::by_cap(&state.db, &r.sender, &r.identifier, Some(&r.sent)).await?
                {
                    follows = Some(found);
                    break;
                }
            }
            // An alert is cleared once: a Cancel of one that has ended, or that has a
            // follow-up already, is stored and shown, not sent again.
            if let (AlertKind::AllClear, Some(f)) = (kind, &follows) {
                if let Some(why) = alerts::why_no_follow_up(&state.db, f).await? {
                    let why = format!("a Cancel of an alert that {why}: stored, not sent");
                    tracing::info!(sender = %id.sender, identifier = %id.identifier, "CAP Cancel of an alert already cleared: stored, not sent");
                    record(None, Some(why.clone())).await?;
                    return Ok(stored(why));
                }
            }
            let mut note = None;
            let mut kind = kind;
            if kind != AlertKind::Alert && follows.is_none() {
                let named: Vec<String> = references
                    .iter()
                    .map(|r| format!("{},{},{}", r.sender, r.identifier, r.sent))
                    .collect();
                note = Some(format!(
                    "a {} whose references are unknown here ({}): sent as it says, flagged; no earlier alert was changed",
                    alert.msg_type.as_str(),
                    named.join(" ")
                ));
                tracing::warn!(identifier = %id.identifier, "CAP {} references unknown messages", alert.msg_type.as_str());
                if kind == AlertKind::Update {
                    kind = AlertKind::Alert;
                }
            }
            // An update says what changed, where channels post it anew.
            if kind == AlertKind::Update {
                if let Some(previous) = match &follows {
                    Some(f) => crate::store::announcements::get(&state.db, f).await?,
                    None => None,
                } {
                    if let Some(line) = what_changed(&previous.title, &previous.body, &submission) {
                        submission.body = format!("{line}\n\n{}", submission.body);
                    }
                }
            }
            let trusted = state.trusted_cap_senders.contains(&id.sender);
            let accepted = accept_and_store(
                state,
                caller,
                &submission,
                Some(format!("cap:{}", file_name(&id))),
                request_id,
                DeskContext {
                    kind: Some(kind),
                    follows,
                    cap: Some(id.clone()),
                    cap_status: Some(alert.status.as_str().to_string()),
                    expires_at,
                    trusted,
                    cap_message: Some(publication(&alert, xml, &references)),
                    approval: false,
                },
            )
            .await?;
            record(Some(accepted.id.clone()), note).await?;
            Ok(accepted_response(accepted))
        }
    }
}

/// Who Noroshi writes CAP messages as.
#[derive(Clone, Debug)]
pub struct Author {
    pub sender: String,
    pub sender_name: String,
}

/// What a disaster announcement submitted through the API says, as CAP writes it.
pub struct Written<'a> {
    pub announcement_id: &'a str,
    pub title: &'a str,
    pub body: &'a str,
    pub lang: &'a str,
    pub link: Option<&'a str>,
    pub variants: &'a std::collections::BTreeMap<String, Variant>,
    pub exercise: bool,
    pub kind: AlertKind,
    /// The CAP identity of the alert it follows (all-clear, correction).
    pub follows: Option<CapIdentity>,
    pub sent: chrono::DateTime<chrono::Utc>,
}

/// `ja` → `ja-JP`, `en` → `en-US`: CAP's customary language tags.
fn cap_language(lang: &str) -> String {
    match lang {
        "ja" => "ja-JP".into(),
        "en" => "en-US".into(),
        "ja-easy" => "ja-JP-x-easy".into(),
        other => other.into(),
    }
}

/// The CAP 1.2 message for a disaster announcement submitted through the API, so that
/// every disaster announcement is on the website's CAP feed; its identity is stored with
/// the alert, for the all-clear's `references`.
pub fn write(author: &Author, w: &Written<'_>) -> (CapIdentity, noroshi_channel_core::CapMessage) {
    use noroshi_cap::{
        CapDateTime, Category, Certainty, Reference, ResponseType, Scope, Severity, Urgency,
    };
    let jst = noroshi_channel_core::jst();
    let sent = CapDateTime::from_datetime(w.sent.with_timezone(&jst).fixed_offset())
        .expect("the current time in JST is a CAP date-time");
    // Always an expiry (CHANNELS.md §5.3); the alert itself stays active until its all-clear.
    let expires = CapDateTime::from_datetime(
        (w.sent + chrono::Duration::hours(24))
            .with_timezone(&jst)
            .fixed_offset(),
    );
    let (msg_type, urgency, severity, certainty, response) = match w.kind {
        AlertKind::AllClear => (
            MsgType::Cancel,
            Urgency::Past,
            Severity::Minor,
            Certainty::Observed,
            ResponseType::AllClear,
        ),
        AlertKind::Correction | AlertKind::Update => (
            MsgType::Update,
            Urgency::Immediate,
            Severity::Severe,
            Certainty::Likely,
            ResponseType::Evacuate,
        ),
        AlertKind::Alert => (
            MsgType::Alert,
            Urgency::Immediate,
            Severity::Severe,
            Certainty::Likely,
            ResponseType::Evacuate,
        ),
    };
    let info = |lang: &str, title: &str, body: &str| Info {
        language: cap_language(lang),
        categories: vec![Category::Safety],
        event: if lang.starts_with("ja") {
            "避難情報".into()
        } else {
            "Evacuation information".into()
        },
        response_types: vec![response],
        urgency,
        severity,
        certainty,
        audience: None,
        event_codes: Vec::new(),
        effective: None,
        onset: None,
        expires: expires.clone(),
        sender_name: Some(author.sender_name.clone()),
        headline: Some(title.chars().take(160).collect()),
        description: Some(body.to_string()),
        instruction: None,
        web: w.link.map(str::to_string),
        contact: None,
        parameters: Vec::new(),
        resources: Vec::new(),
        areas: Vec::new(),
    };
    let mut infos = vec![info(w.lang, w.title, w.body)];
    for (lang, v) in w.variants {
        infos.push(info(lang, &v.title, &v.body));
    }
    let alert = Alert {
        identifier: format!("urn:uuid:{}", w.announcement_id),
        sender: author.sender.clone(),
        sent,
        status: if w.exercise {
            Status::Exercise
        } else {
            Status::Actual
        },
        msg_type,
        source: Some("Noroshi".into()),
        scope: Scope::Public,
        restriction: None,
        addresses: None,
        codes: Vec::new(),
        note: None,
        references: w
            .follows
            .iter()
            .filter_map(|f| {
                Some(Reference {
                    sender: f.sender.clone(),
                    identifier: f.identifier.clone(),
                    sent: CapDateTime::parse(&f.sent)?,
                })
            })
            .collect(),
        incidents: None,
        infos,
    };
    let references: Vec<CapIdentity> = w.follows.iter().cloned().collect();
    let xml = noroshi_cap::to_xml(&alert);
    (
        identity(&alert),
        publication(&alert, xml.as_bytes(), &references),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_names_what_changed() {
        let old_body =
            "水位が上昇しています。\n\n対象地域：井上地区\n\n有効期限：11月24日15時00分まで";
        let mut new: Submission = serde_json::from_value(serde_json::json!({
            "title": "【更新】避難指示",
            "body": "水位が上昇しています。\n\n対象地域：井上地区、相之島地区\n\n有効期限：11月24日15時00分まで",
        }))
        .unwrap();
        assert_eq!(
            what_changed("避難指示", old_body, &new).as_deref(),
            Some("変更点：対象地域")
        );
        new.body = old_body.to_string();
        assert_eq!(what_changed("避難指示", old_body, &new), None);
        new.title = "【更新】緊急安全確保".into();
        new.body = "氾濫しました。\n\n対象地域：井上地区".into();
        assert_eq!(
            what_changed("避難指示", old_body, &new).as_deref(),
            Some("変更点：見出し、有効期限、本文")
        );
    }
}

//! Disaster alerts: what each disaster announcement is (an alert, an update, an all-clear, a
//! correction), what it follows, its CAP identity, and whether it is still active.

use serde::Serialize;
use sqlx::Row;

use super::{now_ms, Db, Result};

/// What a disaster announcement is, beside its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertKind {
    /// A new alert: active until its all-clear, a correction, an update or its expiry.
    Alert,
    /// Replaces the alert it follows (CAP `Update`): active in its place.
    Update,
    /// Ends the alert it follows; never active itself.
    AllClear,
    /// Corrects the alert it follows (訂正): active in its place.
    Correction,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Alert => "alert",
            AlertKind::Update => "update",
            AlertKind::AllClear => "all_clear",
            AlertKind::Correction => "correction",
        }
    }
    pub fn parse(s: &str) -> Option<AlertKind> {
        match s {
            "alert" => Some(AlertKind::Alert),
            "update" => Some(AlertKind::Update),
            "all_clear" => Some(AlertKind::AllClear),
            "correction" => Some(AlertKind::Correction),
            _ => None,
        }
    }
    /// Whether an alert of this kind keeps disaster mode on while it lasts.
    pub fn stays_active(self) -> bool {
        !matches!(self, AlertKind::AllClear)
    }
}

/// A CAP message's identity: the same triple twice is the same message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CapIdentity {
    pub sender: String,
    pub identifier: String,
    pub sent: String,
}

/// The alert row written with its announcement.
#[derive(Clone, Debug)]
pub struct NewAlert {
    pub live: bool,
    pub kind: AlertKind,
    pub follows: Option<String>,
    pub cap: Option<CapIdentity>,
    pub cap_status: Option<String>,
    pub expires_at: Option<i64>,
}

impl NewAlert {
    pub fn alert(live: bool) -> NewAlert {
        NewAlert {
            live,
            kind: AlertKind::Alert,
            follows: None,
            cap: None,
            cap_status: None,
            expires_at: None,
        }
    }
}

/// The SQL that ends the alert an update, all-clear or correction follows, once it is
/// released; its values in order: the time, the new announcement, the followed one.
pub(crate) fn end_followed(p: &mut super::Params) -> String {
    let [at, by, follows] = std::array::from_fn(|_| p.next());
    format!("UPDATE alerts SET ended_at = {at}, ended_by = {by} WHERE announcement_id = {follows} AND ended_at IS NULL")
}

/// An alert with its announcement, as `/api/v1/alerts/active` shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AlertRow {
    pub announcement_id: String,
    pub title: String,
    /// The announcement's state.
    pub status: String,
    /// alert | update | all_clear | correction
    pub kind: String,
    /// false = a drill (訓練): never active, never disaster mode.
    pub live: bool,
    /// The announcement this one updates, clears or corrects.
    pub follows: Option<String>,
    pub cap: Option<CapIdentity>,
    pub cap_status: Option<String>,
    /// ms since the epoch; null = until its all-clear.
    pub expires_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub ended_by: Option<String>,
    pub confirmed_by: Option<String>,
    pub created_by: String,
    pub created_at: i64,
}

const ALERT_SELECT: &str =
    "SELECT al.announcement_id, a.title, a.status, al.kind, al.live, al.follows, al.cap_sender, \
         al.cap_identifier, al.cap_sent, al.cap_status, al.expires_at, al.ended_at, al.ended_by, \
         al.confirmed_by, a.created_by, al.created_at \
     FROM alerts al JOIN announcements a ON a.id = al.announcement_id";

/// The condition of an active alert at time `$1`.
const ACTIVE: &str = "al.live AND al.ended_at IS NULL AND al.kind <> 'all_clear' \
     AND (al.expires_at IS NULL OR al.expires_at > $1) \
     AND a.status NOT IN ('awaiting_confirmation', 'cancelled')";

macro_rules! alert_from {
    ($r:expr) => {{
        let r = $r;
        let sender: Option<String> = r.try_get("cap_sender")?;
        let identifier: Option<String> = r.try_get("cap_identifier")?;
        let sent: Option<String> = r.try_get("cap_sent")?;
        Ok::<_, super::StoreError>(AlertRow {
            announcement_id: r.try_get("announcement_id")?,
            title: r.try_get("title")?,
            status: r.try_get("status")?,
            kind: r.try_get("kind")?,
            live: r.try_get("live")?,
            follows: r.try_get("follows")?,
            cap: match (sender, identifier, sent) {
                (Some(sender), Some(identifier), Some(sent)) => Some(CapIdentity {
                    sender,
                    identifier,
                    sent,
                }),
                _ => None,
            },
            cap_status: r.try_get("cap_status")?,
            expires_at: r.try_get("expires_at")?,
            ended_at: r.try_get("ended_at")?,
            ended_by: r.try_get("ended_by")?,
            confirmed_by: r.try_get("confirmed_by")?,
            created_by: r.try_get("created_by")?,
            created_at: r.try_get("created_at")?,
        })
    }};
}

/// Live alerts in force now, newest first.
pub async fn active(db: &Db, now: i64) -> Result<Vec<AlertRow>> {
    let sql = format!("{ALERT_SELECT} WHERE {ACTIVE} ORDER BY al.created_at DESC");
    with_pool!(db, p => {
        let rows = sqlx::query(&sql).bind(now).fetch_all(p).await?;
        rows.iter().map(|r| alert_from!(r)).collect()
    })
}

/// Whether any live alert is in force (disaster mode).
pub async fn any_active(db: &Db, now: i64) -> Result<bool> {
    let sql = format!(
        "SELECT COUNT(*) AS n FROM alerts al JOIN announcements a ON a.id = al.announcement_id \
         WHERE {ACTIVE}"
    );
    with_pool!(db, p => {
        let row = sqlx::query(&sql).bind(now).fetch_one(p).await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    })
}

pub async fn get(db: &Db, announcement_id: &str) -> Result<Option<AlertRow>> {
    let sql = format!("{ALERT_SELECT} WHERE al.announcement_id = $1");
    with_pool!(db, p => {
        let row = sqlx::query(&sql).bind(announcement_id).fetch_optional(p).await?;
        row.as_ref().map(|r| alert_from!(r)).transpose()
    })
}

/// Why the alert `announcement_id` takes no other all-clear or correction, if it does not:
/// "has already ended (by …)" or "already has a follow-up (…)". An alert is cleared once.
pub async fn why_no_follow_up(db: &Db, announcement_id: &str) -> Result<Option<String>> {
    if let Some(by) = get(db, announcement_id).await?.and_then(|a| a.ended_by) {
        return Ok(Some(format!("has already ended (by {by})")));
    }
    Ok(follow_up_of(db, announcement_id).await?.map(|f| {
        format!(
            "already has a follow-up ({} {}, {})",
            f.kind, f.announcement_id, f.status
        )
    }))
}

/// On PostgreSQL, a transaction holding an advisory lock on the follow-ups of the alert
/// `announcement_id`, so that instances sharing the database check and store an alert's
/// all-clears one at a time. The lock ends with the transaction: rolled back by the caller,
/// or when it is dropped (a request that goes away). `None` on SQLite, where one process
/// owns the file (the caller's in-process lock is enough).
pub async fn lock_follow_ups(
    db: &Db,
    announcement_id: &str,
) -> Result<Option<sqlx::Transaction<'static, sqlx::Postgres>>> {
    let super::Pool::Postgres(pool) = &db.pool else {
        return Ok(None);
    };
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('noroshi.follow_ups:' || $1, 0))")
        .bind(announcement_id)
        .execute(&mut *tx)
        .await?;
    Ok(Some(tx))
}

/// The follow-up (all-clear or correction) of the alert `announcement_id` that is not
/// cancelled, released or still waiting for its second person, if there is one.
pub async fn follow_up_of(db: &Db, announcement_id: &str) -> Result<Option<AlertRow>> {
    let sql = format!(
        "{ALERT_SELECT} WHERE al.follows = $1 AND a.status <> 'cancelled' \
         ORDER BY al.created_at LIMIT 1"
    );
    with_pool!(db, p => {
        let row = sqlx::query(&sql).bind(announcement_id).fetch_optional(p).await?;
        row.as_ref().map(|r| alert_from!(r)).transpose()
    })
}

/// The announcement a CAP message became, if it was seen before.
pub async fn by_cap(
    db: &Db,
    sender: &str,
    identifier: &str,
    sent: Option<&str>,
) -> Result<Option<String>> {
    with_pool!(db, p => {
        let row = match sent {
            Some(sent) => sqlx::query(
                "SELECT announcement_id FROM alerts WHERE cap_sender = $1 AND cap_identifier = $2 AND cap_sent = $3")
                .bind(sender).bind(identifier).bind(sent).fetch_optional(p).await?,
            None => sqlx::query(
                "SELECT announcement_id FROM alerts WHERE cap_sender = $1 AND cap_identifier = $2 \
                 ORDER BY created_at DESC LIMIT 1")
                .bind(sender).bind(identifier).fetch_optional(p).await?,
        };
        row.map(|r| r.try_get::<String, _>("announcement_id")).transpose().map_err(Into::into)
    })
}

/// What a confirmation came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Confirmed {
    NotFound,
    /// The announcement is not waiting for confirmation (its state is given).
    NotWaiting(String),
    /// The caller wrote it: a second person must confirm.
    OwnAnnouncement,
    /// Released: its new state.
    Released(String),
}

/// Releases an announcement awaiting confirmation, if `by` is not its author; ends the alert
/// it follows, in the same transaction.
pub async fn confirm(db: &Db, announcement_id: &str, by: &str) -> Result<Confirmed> {
    let now = now_ms();
    let out = write_tx!(db, tx => {
        let row = sqlx::query(
            "SELECT a.status, a.created_by, a.scheduled_at, al.follows, al.kind FROM announcements a \
             LEFT JOIN alerts al ON al.announcement_id = a.id WHERE a.id = $1")
            .bind(announcement_id).fetch_optional(&mut *tx).await?;
        match row {
            None => Confirmed::NotFound,
            Some(r) => {
                let status: String = r.try_get("status")?;
                let author: String = r.try_get("created_by")?;
                let scheduled_at: Option<i64> = r.try_get("scheduled_at")?;
                let follows: Option<String> = r.try_get("follows")?;
                let kind: Option<String> = r.try_get("kind")?;
                if status != "awaiting_confirmation" {
                    Confirmed::NotWaiting(status)
                } else if author == by {
                    Confirmed::OwnAnnouncement
                } else {
                    let next = if scheduled_at.is_some_and(|t| t > now) { "scheduled" } else { "queued" };
                    sqlx::query("UPDATE announcements SET status = $1, updated_at = $2 WHERE id = $3")
                        .bind(next).bind(now).bind(announcement_id).execute(&mut *tx).await?;
                    sqlx::query("UPDATE alerts SET confirmed_by = $1, confirmed_at = $2 WHERE announcement_id = $3")
                        .bind(by).bind(now).bind(announcement_id).execute(&mut *tx).await?;
                    if let (Some(follows), Some(_)) = (follows, kind.filter(|k| k != "alert")) {
                        sqlx::query(&end_followed(&mut super::Params::new(db)))
                            .bind(now).bind(announcement_id).bind(follows).execute(&mut *tx).await?;
                    }
                    Confirmed::Released(next.to_string())
                }
            }
        }
    });
    Ok(out)
}

/// One received CAP message, as `GET /api/v1/cap` lists it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CapMessage {
    pub id: String,
    pub sender: String,
    pub identifier: String,
    pub sent: String,
    /// Actual | Exercise | System | Test | Draft
    pub status: String,
    /// Alert | Update | Cancel | Ack | Error
    pub msg_type: String,
    /// The announcement it became (null: stored only).
    pub announcement_id: Option<String>,
    /// Why it was not sent, or what was odd about it (an unknown reference).
    pub note: Option<String>,
    /// `api:<caller>` or `feed:<url>`.
    pub source: String,
    /// ms since the epoch.
    pub received_at: i64,
}

/// A received CAP message before it is stored.
pub struct NewCapMessage<'a> {
    pub identity: &'a CapIdentity,
    pub status: &'a str,
    pub msg_type: &'a str,
    pub announcement_id: Option<&'a str>,
    pub note: Option<&'a str>,
    pub source: &'a str,
    pub xml: &'a str,
}

/// Records a received message; the same (sender, identifier, sent) again changes nothing.
pub async fn record_cap(db: &Db, m: &NewCapMessage<'_>) -> Result<()> {
    let id = uuid::Uuid::now_v7().to_string();
    let now = now_ms();
    write_pool!(db, p => sqlx::query(
        "INSERT INTO cap_messages (id, sender, identifier, sent, status, msg_type, announcement_id, \
             note, source, xml, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (sender, identifier, sent) DO NOTHING")
        .bind(&id).bind(&m.identity.sender).bind(&m.identity.identifier).bind(&m.identity.sent)
        .bind(m.status).bind(m.msg_type).bind(m.announcement_id).bind(m.note).bind(m.source)
        .bind(m.xml).bind(now)
        .execute(p).await?.rows_affected());
    Ok(())
}

macro_rules! cap_message_from {
    ($r:expr) => {{
        let r = $r;
        Ok::<_, super::StoreError>(CapMessage {
            id: r.try_get("id")?,
            sender: r.try_get("sender")?,
            identifier: r.try_get("identifier")?,
            sent: r.try_get("sent")?,
            status: r.try_get("status")?,
            msg_type: r.try_get("msg_type")?,
            announcement_id: r.try_get("announcement_id")?,
            note: r.try_get("note")?,
            source: r.try_get("source")?,
            received_at: r.try_get("received_at")?,
        })
    }};
}

const CAP_COLUMNS: &str =
    "id, sender, identifier, sent, status, msg_type, announcement_id, note, source, received_at";

/// The message with this identity, if it was received before.
pub async fn cap_message(db: &Db, identity: &CapIdentity) -> Result<Option<CapMessage>> {
    let sql = format!(
        "SELECT {CAP_COLUMNS} FROM cap_messages WHERE sender = $1 AND identifier = $2 AND sent = $3"
    );
    with_pool!(db, p => {
        let row = sqlx::query(&sql)
            .bind(&identity.sender).bind(&identity.identifier).bind(&identity.sent)
            .fetch_optional(p).await?;
        row.as_ref().map(|r| cap_message_from!(r)).transpose()
    })
}

/// Received messages, newest first.
pub async fn cap_messages(db: &Db, limit: i64) -> Result<Vec<CapMessage>> {
    let sql = format!(
        "SELECT {CAP_COLUMNS} FROM cap_messages ORDER BY received_at DESC, id DESC LIMIT $1"
    );
    with_pool!(db, p => {
        let rows = sqlx::query(&sql).bind(limit).fetch_all(p).await?;
        rows.iter().map(|r| cap_message_from!(r)).collect()
    })
}

//! Channel states (ok, degraded, paused), the daemon's own API tokens, LINE followers.

use serde::Serialize;
use sqlx::Row;

use super::{now_ms, Db, Result};
use crate::status::ChannelState;

#[derive(Clone, Debug, Default, Serialize)]
pub struct ChannelRow {
    pub channel: String,
    /// ok | degraded | paused
    pub state: String,
    pub reason: Option<String>,
    pub since: i64,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    pub last_success_at: Option<i64>,
    /// The platform holds the whole channel until then (ms).
    pub hold_until: Option<i64>,
}

pub async fn all(db: &Db) -> Result<Vec<ChannelRow>> {
    with_pool!(db, p => {
        let rows = sqlx::query(
            "SELECT channel, state, reason, since, last_error, last_error_at, last_success_at, hold_until FROM channel_states")
            .fetch_all(p).await?;
        rows.iter().map(|r| Ok(ChannelRow {
            channel: r.try_get("channel")?,
            state: r.try_get("state")?,
            reason: r.try_get("reason")?,
            since: r.try_get("since")?,
            last_error: r.try_get("last_error")?,
            last_error_at: r.try_get("last_error_at")?,
            last_success_at: r.try_get("last_success_at")?,
            hold_until: r.try_get("hold_until")?,
        })).collect()
    })
}

/// Sets the channel's state (`paused` with a reason, or `ok`/`degraded`).
pub async fn set_state(
    db: &Db,
    channel: &str,
    state: ChannelState,
    reason: Option<&str>,
) -> Result<()> {
    let now = now_ms();
    let state = state.as_str();
    write_pool!(db, p => sqlx::query(
        "INSERT INTO channel_states (channel, state, reason, since) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (channel) DO UPDATE SET state = $2, reason = $3, \
             since = CASE WHEN channel_states.state = $2 THEN channel_states.since ELSE $4 END")
        .bind(channel).bind(state).bind(reason).bind(now).execute(p).await?.rows_affected());
    Ok(())
}

/// Holds the whole channel until `until_ms` for every instance (a later hold wins).
pub async fn set_hold(db: &Db, channel: &str, until_ms: i64) -> Result<()> {
    let now = now_ms();
    write_pool!(db, p => sqlx::query(
        "INSERT INTO channel_states (channel, state, since, hold_until) VALUES ($1, 'ok', $2, $3) \
         ON CONFLICT (channel) DO UPDATE SET hold_until = \
             CASE WHEN channel_states.hold_until IS NULL OR channel_states.hold_until < $3 THEN $3 \
                  ELSE channel_states.hold_until END")
        .bind(channel).bind(now).bind(until_ms).execute(p).await?.rows_affected());
    Ok(())
}

pub async fn record_error(db: &Db, channel: &str, error: &str) -> Result<()> {
    let now = now_ms();
    write_pool!(db, p => sqlx::query(
        "INSERT INTO channel_states (channel, state, since, last_error, last_error_at) VALUES ($1, 'ok', $2, $3, $2) \
         ON CONFLICT (channel) DO UPDATE SET last_error = $3, last_error_at = $2")
        .bind(channel).bind(now).bind(error).execute(p).await?.rows_affected());
    Ok(())
}

/// Records the time of the channel's last successful delivery; a success ends `degraded`.
pub async fn record_success(db: &Db, channel: &str, at_ms: i64) -> Result<()> {
    write_pool!(db, p => sqlx::query(
        "INSERT INTO channel_states (channel, state, since, last_success_at) VALUES ($1, 'ok', $2, $2) \
         ON CONFLICT (channel) DO UPDATE SET last_success_at = $2, \
             state = CASE WHEN channel_states.state = 'degraded' AND $2 > channel_states.since \
                 THEN 'ok' ELSE channel_states.state END")
        .bind(channel).bind(at_ms).execute(p).await?.rows_affected());
    Ok(())
}

pub async fn insert_api_token(db: &Db, name: &str, role: &str, sha256_hex: &str) -> Result<()> {
    write_pool!(db, p => sqlx::query(
        "INSERT INTO api_tokens (name, role, token_sha256, created_at) VALUES ($1, $2, $3, $4)")
        .bind(name).bind(role).bind(sha256_hex).bind(now_ms()).execute(p).await?.rows_affected());
    Ok(())
}

/// Records a LINE follow (true) or unfollow (false) event.
pub async fn set_line_follower(db: &Db, user_id: &str, following: bool) -> Result<()> {
    write_pool!(db, p => sqlx::query(
        "INSERT INTO line_followers (user_id, following, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO UPDATE SET following = $2, updated_at = $3")
        .bind(user_id).bind(following).bind(now_ms()).execute(p).await?.rows_affected());
    Ok(())
}

pub async fn line_follower_count(db: &Db) -> Result<i64> {
    Ok(with_pool!(db, p => sqlx::query_scalar(
        "SELECT COUNT(*) FROM line_followers WHERE following = TRUE").fetch_one(p).await?))
}

/// Saves a channel's rotated credentials (see `Channel::rotated_credentials`).
pub async fn save_credentials(db: &Db, channel: &str, credentials: &str) -> Result<()> {
    write_pool!(db, p => sqlx::query(
        "INSERT INTO channel_credentials (channel, credentials, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (channel) DO UPDATE SET credentials = $2, updated_at = $3")
        .bind(channel).bind(credentials).bind(now_ms()).execute(p).await?.rows_affected());
    Ok(())
}

/// Every channel's saved credentials: (channel, credentials).
pub async fn saved_credentials(db: &Db) -> Result<Vec<(String, String)>> {
    with_pool!(db, p => {
        let rows = sqlx::query("SELECT channel, credentials FROM channel_credentials").fetch_all(p).await?;
        rows.iter().map(|r| Ok((r.try_get("channel")?, r.try_get("credentials")?))).collect()
    })
}

/// Records that this instance is alive and returns how many instances are (heartbeats
/// newer than `live_ms`, this one included). Stale rows are removed on the way.
pub async fn instance_heartbeat(db: &Db, owner: &str, live_ms: i64) -> Result<u32> {
    // The daemon's clock follows the database server's (crate::clock), so every
    // instance's stamps compare.
    let now = now_ms();
    let n: i64 = write_tx!(db, tx => {
        sqlx::query(
            "INSERT INTO instances (owner, heartbeat_at) VALUES ($1, $2) \
             ON CONFLICT (owner) DO UPDATE SET heartbeat_at = $2")
            .bind(owner).bind(now).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM instances WHERE heartbeat_at < $1")
            .bind(now - live_ms * 10).execute(&mut *tx).await?;
        sqlx::query_scalar("SELECT COUNT(*) FROM instances WHERE heartbeat_at >= $1")
            .bind(now - live_ms).fetch_one(&mut *tx).await?
    });
    Ok(n.max(1) as u32)
}

/// This instance is stopping: the others take its share of the rate at their next beat.
pub async fn instance_gone(db: &Db, owner: &str) -> Result<()> {
    write_pool!(db, p => sqlx::query("DELETE FROM instances WHERE owner = $1")
        .bind(owner).execute(p).await?.rows_affected());
    Ok(())
}

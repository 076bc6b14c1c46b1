//! Console users, their sessions, and failed sign-ins (for the lock-out).

use sqlx::Row;

use super::{now_ms, Db, Result};

#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub role: String,
    pub password_hash: String,
    pub disabled: bool,
}

/// Adds a user, or replaces the role and password of one with that name.
pub async fn upsert_user(db: &Db, name: &str, role: &str, password_hash: &str) -> Result<()> {
    let now = now_ms();
    write_pool!(db, p => sqlx::query(
        "INSERT INTO users (name, role, password_hash, disabled, created_at, updated_at) \
         VALUES ($1, $2, $3, FALSE, $4, $4) \
         ON CONFLICT (name) DO UPDATE SET role = $2, password_hash = $3, disabled = FALSE, updated_at = $4")
        .bind(name).bind(role).bind(password_hash).bind(now)
        .execute(p).await?.rows_affected());
    Ok(())
}

pub async fn user(db: &Db, name: &str) -> Result<Option<User>> {
    with_pool!(db, p => {
        let row = sqlx::query("SELECT name, role, password_hash, disabled FROM users WHERE name = $1")
            .bind(name).fetch_optional(p).await?;
        row.map(|r| Ok(User {
            name: r.try_get("name")?,
            role: r.try_get("role")?,
            password_hash: r.try_get("password_hash")?,
            disabled: r.try_get("disabled")?,
        })).transpose()
    })
}

/// A signed-in session.
#[derive(Clone, Debug)]
pub struct Session {
    pub user: User,
    pub csrf: String,
    pub created_at: i64,
    pub last_seen_at: i64,
}

pub async fn create_session(db: &Db, token_sha256: &str, user: &str, csrf: &str) -> Result<()> {
    let now = now_ms();
    write_pool!(db, p => sqlx::query(
        "INSERT INTO sessions (token_sha256, user_name, csrf, created_at, last_seen_at) VALUES ($1, $2, $3, $4, $4)")
        .bind(token_sha256).bind(user).bind(csrf).bind(now)
        .execute(p).await?.rows_affected());
    Ok(())
}

/// The session with this token, if it is live (not idle past `idle_ms`, not older than
/// `absolute_ms`, its user not disabled); marks it seen. An expired one is deleted.
pub async fn session(
    db: &Db,
    token_sha256: &str,
    idle_ms: i64,
    absolute_ms: i64,
) -> Result<Option<Session>> {
    let now = now_ms();
    let found = with_pool!(db, p => {
        let row = sqlx::query(
            "SELECT s.csrf, s.created_at, s.last_seen_at, u.name, u.role, u.password_hash, u.disabled \
             FROM sessions s JOIN users u ON u.name = s.user_name WHERE s.token_sha256 = $1")
            .bind(token_sha256).fetch_optional(p).await?;
        row.map(|r| Ok::<_, super::StoreError>(Session {
            csrf: r.try_get("csrf")?,
            created_at: r.try_get("created_at")?,
            last_seen_at: r.try_get("last_seen_at")?,
            user: User {
                name: r.try_get("name")?,
                role: r.try_get("role")?,
                password_hash: r.try_get("password_hash")?,
                disabled: r.try_get("disabled")?,
            },
        })).transpose()?
    });
    let Some(s) = found else { return Ok(None) };
    if s.user.disabled || now - s.last_seen_at > idle_ms || now - s.created_at > absolute_ms {
        end_session(db, token_sha256).await?;
        return Ok(None);
    }
    // Seen: written at most once a minute, not on every page.
    if now - s.last_seen_at > 60_000 {
        write_pool!(db, p => sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE token_sha256 = $2")
            .bind(now).bind(token_sha256).execute(p).await?.rows_affected());
    }
    Ok(Some(s))
}

pub async fn end_session(db: &Db, token_sha256: &str) -> Result<()> {
    write_pool!(db, p => sqlx::query("DELETE FROM sessions WHERE token_sha256 = $1")
        .bind(token_sha256).execute(p).await?.rows_affected());
    Ok(())
}

/// Signs a user out everywhere.
pub async fn end_sessions_of(db: &Db, user: &str) -> Result<u64> {
    Ok(
        write_pool!(db, p => sqlx::query("DELETE FROM sessions WHERE user_name = $1")
        .bind(user).execute(p).await?.rows_affected()),
    )
}

pub async fn record_failure(db: &Db, keys: &[String]) -> Result<()> {
    let now = now_ms();
    write_tx!(db, tx => {
        for k in keys {
            sqlx::query("INSERT INTO sign_in_failures (key, at) VALUES ($1, $2)")
                .bind(k).bind(now).execute(&mut *tx).await?;
        }
    });
    Ok(())
}

/// Failures of `key` since `since`.
pub async fn failures(db: &Db, key: &str, since: i64) -> Result<i64> {
    with_pool!(db, p => {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sign_in_failures WHERE key = $1 AND at >= $2")
            .bind(key).bind(since).fetch_one(p).await?;
        Ok(n)
    })
}

/// Forgets an account's failures after a successful sign-in.
pub async fn clear_failures(db: &Db, key: &str) -> Result<()> {
    write_pool!(db, p => sqlx::query("DELETE FROM sign_in_failures WHERE key = $1")
        .bind(key).execute(p).await?.rows_affected());
    Ok(())
}

/// A user as the people page lists them.
#[derive(Clone, Debug)]
pub struct Person {
    pub name: String,
    pub role: String,
    pub disabled: bool,
    pub created_at: i64,
    /// Sessions still live (seen since `idle_since`, created since `absolute_since`).
    pub sessions: i64,
}

/// Every user, by name, with how many live sessions each has.
pub async fn people(db: &Db, idle_since: i64, absolute_since: i64) -> Result<Vec<Person>> {
    with_pool!(db, p => {
        let rows = sqlx::query(
            "SELECT u.name, u.role, u.disabled, u.created_at, \
                 (SELECT COUNT(*) FROM sessions s WHERE s.user_name = u.name \
                     AND s.last_seen_at >= $1 AND s.created_at >= $2) AS sessions \
             FROM users u ORDER BY u.name")
            .bind(idle_since).bind(absolute_since).fetch_all(p).await?;
        rows.iter().map(|r| Ok(Person {
            name: r.try_get("name")?,
            role: r.try_get("role")?,
            disabled: r.try_get("disabled")?,
            created_at: r.try_get("created_at")?,
            sessions: r.try_get("sessions")?,
        })).collect()
    })
}

/// Adds a user; false (and nothing changed) when the name is taken.
pub async fn add_user(db: &Db, name: &str, role: &str, password_hash: &str) -> Result<bool> {
    let now = now_ms();
    let n = write_pool!(db, p => sqlx::query(
        "INSERT INTO users (name, role, password_hash, disabled, created_at, updated_at) \
         VALUES ($1, $2, $3, FALSE, $4, $4) ON CONFLICT (name) DO NOTHING")
        .bind(name).bind(role).bind(password_hash).bind(now)
        .execute(p).await?.rows_affected());
    Ok(n == 1)
}

/// Changes a user's role (their sessions carry the new role from their next request);
/// false when there is no such user.
pub async fn set_role(db: &Db, name: &str, role: &str) -> Result<bool> {
    let n = write_pool!(db, p => sqlx::query(
        "UPDATE users SET role = $1, updated_at = $2 WHERE name = $3")
        .bind(role).bind(now_ms()).bind(name).execute(p).await?.rows_affected());
    Ok(n == 1)
}

/// Disables a user and ends every session of theirs in the same transaction, or enables
/// them again; false when there is no such user.
pub async fn set_disabled(db: &Db, name: &str, disabled: bool) -> Result<bool> {
    let now = now_ms();
    let n = write_tx!(db, tx => {
        let n = sqlx::query("UPDATE users SET disabled = $1, updated_at = $2 WHERE name = $3")
            .bind(disabled).bind(now).bind(name).execute(&mut *tx).await?.rows_affected();
        if disabled {
            sqlx::query("DELETE FROM sessions WHERE user_name = $1")
                .bind(name).execute(&mut *tx).await?;
        }
        n
    });
    Ok(n == 1)
}

/// An API token kept in the database (only its SHA-256): the first-start admin token
/// (`created_by` empty) or one an admin created on the console.
#[derive(Clone, Debug)]
pub struct StoredToken {
    pub name: String,
    pub role: String,
    pub sha256_hex: String,
    pub created_by: Option<String>,
    pub created_at: i64,
}

pub async fn stored_tokens(db: &Db) -> Result<Vec<StoredToken>> {
    with_pool!(db, p => {
        let rows = sqlx::query(
            "SELECT name, role, token_sha256, created_by, created_at FROM api_tokens ORDER BY name")
            .fetch_all(p).await?;
        rows.iter().map(|r| Ok(StoredToken {
            name: r.try_get("name")?,
            role: r.try_get("role")?,
            sha256_hex: r.try_get("token_sha256")?,
            created_by: r.try_get("created_by")?,
            created_at: r.try_get("created_at")?,
        })).collect()
    })
}

/// Stores a token created on the console. A name already stored is a unique violation.
pub async fn insert_token(
    db: &Db,
    name: &str,
    role: &str,
    sha256_hex: &str,
    created_by: &str,
) -> Result<()> {
    write_pool!(db, p => sqlx::query(
        "INSERT INTO api_tokens (name, role, token_sha256, created_at, created_by) VALUES ($1, $2, $3, $4, $5)")
        .bind(name).bind(role).bind(sha256_hex).bind(now_ms()).bind(created_by)
        .execute(p).await?.rows_affected());
    Ok(())
}

/// Deletes a stored token; false when none has that name.
pub async fn delete_token(db: &Db, name: &str) -> Result<bool> {
    let n = write_pool!(db, p => sqlx::query("DELETE FROM api_tokens WHERE name = $1")
        .bind(name).execute(p).await?.rows_affected());
    Ok(n == 1)
}

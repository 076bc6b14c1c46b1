//! The audit log: every successful write through the API (who, how authenticated, what,
//! when, from where), recorded by one hook ([`super::auth::identify_caller`]) and written
//! in batches by a supervised task, so auditing never adds a write turn per request.

use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tokio::sync::mpsc;

use super::auth::{Caller, Role};
use super::problem::{ApiResult, Problem};
use super::SharedState;
use crate::store::{with_pool, write_tx, Db};

/// One audited write.
#[derive(Clone, Debug)]
pub struct Entry {
    pub at: i64,
    pub who: String,
    pub role: &'static str,
    pub via: &'static str,
    pub client: Option<String>,
    pub method: String,
    pub route: String,
    pub path: String,
    pub status: u16,
}

/// Where the hook sends entries.
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::Sender<Entry>,
    rx: std::sync::Arc<tokio::sync::Mutex<mpsc::Receiver<Entry>>>,
}

impl Default for Audit {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(10_000);
        Audit {
            tx,
            rx: std::sync::Arc::new(tokio::sync::Mutex::new(rx)),
        }
    }
}

impl Audit {
    /// Queues an entry; never blocks a request (a full queue is logged and dropped).
    pub fn record(&self, entry: Entry) {
        if let Err(e) = self.tx.try_send(entry) {
            tracing::error!(error = %e, "Audit queue full; an audit entry was not recorded");
        }
    }

    /// The writer: every entry waiting goes into one transaction.
    pub async fn run(&self, db: Db) {
        let mut rx = self.rx.lock().await;
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < 256 {
                match rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            if let Err(e) = insert(&db, &batch).await {
                for entry in &batch {
                    tracing::error!(error = %e, who = %entry.who, method = %entry.method, path = %entry.path,
                        "Could not record an audit entry");
                }
            }
        }
    }
}

async fn insert(db: &Db, batch: &[Entry]) -> crate::store::Result<()> {
    write_tx!(db, tx => {
        for e in batch {
            sqlx::query(
                "INSERT INTO audit_log (at, who, role, via, client, method, route, path, status) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
                .bind(e.at).bind(&e.who).bind(e.role).bind(e.via).bind(&e.client)
                .bind(&e.method).bind(&e.route).bind(&e.path).bind(e.status as i32)
                .execute(&mut *tx).await?;
        }
    });
    Ok(())
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    pub who: String,
    pub role: String,
    /// bearer_token
    pub via: String,
    pub client: Option<String>,
    pub method: String,
    /// The route as declared, e.g. `/api/v1/announcements/{id}/cancel`.
    pub route: String,
    pub path: String,
    pub status: i32,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    /// Pass as `cursor` for older entries; absent on the last page.
    pub next_cursor: Option<i64>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this token's (or user's) writes.
    pub who: Option<String>,
    /// Entries older than this id (`next_cursor` of the previous page).
    pub cursor: Option<i64>,
    /// Page size.
    #[param(minimum = 1, maximum = 500, default = 100)]
    pub limit: Option<i64>,
}

/// The audit log, newest first (admin).
///
/// Role: admin.
#[utoipa::path(get, path = "/api/v1/audit", operation_id = "listAuditEntries", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<SharedState>,
    caller: Caller,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<AuditPage>> {
    caller.require(Role::Admin)?;
    let Query(q) = query.map_err(|e| Problem::invalid("query", e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Problem::invalid("limit", "must be between 1 and 500"));
    }
    let rows = with_pool!(state.db, p => {
        let rows = sqlx::query(
            "SELECT id, at, who, role, via, client, method, route, path, status FROM audit_log \
             WHERE ($1 IS NULL OR id < $1) AND ($2 IS NULL OR who = $2) ORDER BY id DESC LIMIT $3")
            .bind(q.cursor).bind(q.who.as_deref()).bind(limit + 1).fetch_all(p).await
            .map_err(crate::store::StoreError::from)?;
        rows.iter().map(|r| Ok(AuditEntry {
            id: r.try_get("id")?,
            at: crate::time::rfc3339_jst(r.try_get("at")?),
            who: r.try_get("who")?,
            role: r.try_get("role")?,
            via: r.try_get("via")?,
            client: r.try_get("client")?,
            method: r.try_get("method")?,
            route: r.try_get("route")?,
            path: r.try_get("path")?,
            status: r.try_get("status")?,
        })).collect::<Result<Vec<_>, sqlx::Error>>().map_err(crate::store::StoreError::from)?
    });
    let mut items = rows;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|e| e.id)
    } else {
        None
    };
    Ok(Json(AuditPage { items, next_cursor }))
}

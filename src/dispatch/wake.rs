//! Wake-ups: inserted work wakes a channel's loops here at once and, on PostgreSQL, in
//! every other instance (`NOTIFY noroshi_work`); the poll is only a fallback.

use super::*;

impl Dispatcher {
    /// Wakes every channel here and in every other instance (a schedule fired).
    pub fn wake_all(&self) {
        for c in &self.channels {
            self.wake(&c.name, Priority::Normal);
        }
    }

    /// Wakes the loops of `channel` for work just inserted in `priority`'s lane, here and,
    /// on PostgreSQL, in every other instance (`NOTIFY noroshi_work`).
    pub fn wake(&self, channel: &str, priority: Priority) {
        self.wake_local(channel, priority);
        if let crate::store::Pool::Postgres(pool) = &self.db.pool {
            let (pool, payload) = (pool.clone(), format!("{}:{channel}", priority.lane()));
            tokio::spawn(async move {
                if let Err(e) = sqlx::query("SELECT pg_notify('noroshi_work', $1)")
                    .bind(payload)
                    .execute(&pool)
                    .await
                {
                    tracing::warn!(error = %e, "Could not notify other instances; they poll");
                }
            });
        }
    }

    pub(super) fn wake_local(&self, channel: &str, priority: Priority) {
        if let Some(c) = self.channel(channel) {
            if priority == Priority::Disaster {
                c.wake_disaster.notify_one();
            }
            c.wake_general.notify_one();
        }
    }

    /// PostgreSQL: wakes this instance's loops when another instance inserts work, so the
    /// poll interval is only a fallback there too.
    pub(super) async fn listen_for_work(self: Arc<Self>, pool: sqlx::PgPool) {
        loop {
            let listener = async {
                let mut l = sqlx::postgres::PgListener::connect_with(&pool).await?;
                l.listen("noroshi_work").await?;
                Ok::<_, sqlx::Error>(l)
            };
            let mut listener = match listener.await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot listen for work notifications; polling meanwhile");
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    }
                }
            };
            loop {
                let n = tokio::select! {
                    _ = self.stop.cancelled() => return,
                    n = listener.recv() => n,
                };
                match n {
                    Ok(n) => {
                        if let Some((lane, channel)) = n.payload().split_once(':') {
                            let lane = lane.parse().unwrap_or(0);
                            self.wake_local(channel, Priority::from_lane(lane));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Work notifications interrupted; reconnecting");
                        break;
                    }
                }
            }
        }
    }
}

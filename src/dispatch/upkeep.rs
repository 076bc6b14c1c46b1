//! Upkeep: lease renewal, reclaiming expired leases, the roll-up sweep, pause sync across
//! instances, rotated credentials, last-success stamps.

use super::*;
use crate::status::ChannelState;

impl Dispatcher {
    pub(super) async fn flush_successes(&self) {
        for c in &self.channels {
            let last = c.last_success_ms.load(Ordering::SeqCst);
            if last > c.flushed_success_ms.load(Ordering::SeqCst)
                && store::channels::record_success(&self.db, &c.name, last)
                    .await
                    .is_ok()
            {
                c.flushed_success_ms.store(last, Ordering::SeqCst);
            }
        }
    }

    /// Keeps credentials a platform rotated (X's OAuth 2.0 refresh token) in the database,
    /// so the next start uses them instead of the configured ones, which no longer work.
    pub(super) async fn save_rotated_credentials(&self) {
        use noroshi_channel_core::ExposeSecret;
        use sha2::Digest;
        for c in &self.channels {
            let Some(creds) = c.channel.rotated_credentials() else {
                continue;
            };
            let digest = hex::encode(sha2::Sha256::digest(creds.expose_secret().as_bytes()));
            if self.saved_credentials.lock().unwrap().get(&c.name) == Some(&digest) {
                continue;
            }
            match store::channels::save_credentials(&self.db, &c.name, creds.expose_secret()).await
            {
                Ok(()) => {
                    tracing::info!(channel = %c.name, "Saved credentials the platform rotated");
                    self.saved_credentials
                        .lock()
                        .unwrap()
                        .insert(c.name.clone(), digest);
                }
                Err(e) => tracing::error!(channel = %c.name, error = %e,
                    "Could not save rotated credentials; a restart would use the configured ones"),
            }
        }
    }

    /// Another instance may have refreshed (and so rotated) a channel's credentials: take
    /// what it saved, or this instance would present a refresh token that no longer works.
    pub(super) async fn load_saved_credentials(&self) {
        use noroshi_channel_core::{ExposeSecret, SecretString};
        use sha2::Digest;
        let Ok(saved) = store::channels::saved_credentials(&self.db).await else {
            return;
        };
        for (name, creds) in saved {
            let Some(c) = self.channel(&name) else {
                continue;
            };
            let digest = hex::encode(sha2::Sha256::digest(creds.as_bytes()));
            let known = self.saved_credentials.lock().unwrap().get(&name) == Some(&digest);
            let ours = c
                .channel
                .rotated_credentials()
                .map(|r| hex::encode(sha2::Sha256::digest(r.expose_secret().as_bytes())))
                == Some(digest.clone());
            if known || ours {
                continue;
            }
            if c.channel.restore_credentials(&SecretString::from(creds)) {
                tracing::info!(channel = %name, "Took the credentials another instance saved");
            }
            self.saved_credentials.lock().unwrap().insert(name, digest);
        }
    }

    /// Paused flags follow the database, so a resume (or a pause) on one instance reaches
    /// every instance.
    pub(super) async fn sync_paused(&self) {
        if let Ok(states) = store::channels::all(&self.db).await {
            for c in &self.channels {
                let paused = states
                    .iter()
                    .any(|s| s.channel == c.name && s.state == ChannelState::Paused.as_str());
                // A hold another instance was answered with holds this one too.
                if let Some(until) = states
                    .iter()
                    .find(|s| s.channel == c.name)
                    .and_then(|s| s.hold_until)
                {
                    c.gate.hold(until);
                }
                if c.paused.swap(paused, Ordering::SeqCst) && !paused {
                    c.wake_disaster.notify_one();
                    c.wake_general.notify_one();
                }
            }
        }
    }

    /// Several instances on one PostgreSQL database: each paces every channel at
    /// `rate / live instances`, so the configured rate is the channel's total.
    pub(super) async fn share_rates(&self, every: Duration) {
        if !self.db.is_postgres() {
            return;
        }
        if let Err(e) = self.db.sync_clock().await {
            tracing::warn!(error = %e, "Could not read the database server's clock");
        }
        let live_ms = (every.as_millis() as i64) * 3;
        match store::channels::instance_heartbeat(&self.db, &self.owner, live_ms).await {
            Ok(n) => {
                for c in &self.channels {
                    if c.gate.instances() != n {
                        tracing::info!(channel = %c.name, instances = n, "Pacing at this instance's share of the channel's rate");
                        c.gate.set_instances(n);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "Could not record this instance's heartbeat"),
        }
    }

    pub(super) async fn heartbeat(self: Arc<Self>) {
        let every = Duration::from_millis((self.settings.lease_ms / 3).clamp(200, 2000) as u64);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if store::health::fault() == Some(store::health::Fault::Full) {
                if let Err(e) = self.db.probe_room().await {
                    tracing::warn!(error = %e, "Could not probe the database for room");
                }
            }
            let live: Vec<i64> = self.live.lock().unwrap().iter().copied().collect();
            if let Err(e) =
                queue::extend_leases(&self.db, &self.owner, &live, self.settings.lease_ms).await
            {
                tracing::warn!(error = %e, "Could not renew delivery leases");
            }
            let live: Vec<i64> = self.live.lock().unwrap().iter().copied().collect();
            let expired = queue::Reclaim::Expired {
                owner: &self.owner,
                live: &live,
            };
            match queue::reclaim(&self.db, expired).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::warn!(count = n, "Reclaimed deliveries whose lease expired");
                    for c in &self.channels {
                        c.wake_disaster.notify_one();
                        c.wake_general.notify_one();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "Could not reclaim expired leases"),
            }
            if let Err(e) = queue::sweep(&self.db).await {
                tracing::warn!(error = %e, "Could not sweep finished announcements");
            }
            if self.settings.log_retention_ms > 0 {
                let cutoff = store::now_ms() - self.settings.log_retention_ms;
                match queue::prune_attempts(&self.db, cutoff, 1_000).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(count = n, "Pruned delivery attempts past the retention")
                    }
                    Err(e) => tracing::warn!(error = %e, "Could not prune old delivery attempts"),
                }
            }
            self.sync_paused().await;
            self.sync_disaster_mode().await;
            self.share_rates(every).await;
            self.flush_successes().await;
            self.save_rotated_credentials().await;
            self.load_saved_credentials().await;
            // Keep the caches small: a few recent announcements are all that is hot.
            let mut r = self.renderings.lock().unwrap();
            if r.len() > 256 {
                r.clear();
            }
            drop(r);
            let mut a = self.announcements.lock().unwrap();
            if a.len() > 1024 {
                a.clear();
            }
        }
    }

    /// A channel's background reads ([`Channel::refresh`]), off every send's path.
    pub(super) async fn refresh_loop(self: Arc<Self>, c: Arc<ChannelRuntime>, every: Duration) {
        loop {
            match c.channel.refresh().await {
                Ok(()) => {}
                Err(e) if e.class == noroshi_channel_core::ErrorClass::Auth => {
                    let reason = format!("credentials refused: {}", e.message);
                    tracing::error!(channel = %c.name, reason = %reason, "Channel paused");
                    let _ = store::channels::set_state(
                        &self.db,
                        &c.name,
                        ChannelState::Paused,
                        Some(&reason),
                    )
                    .await;
                    c.paused.store(true, Ordering::SeqCst);
                }
                Err(e) => tracing::warn!(channel = %c.name, error = %e, "Background read failed"),
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}

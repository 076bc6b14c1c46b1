//! The worker loops: claim, pass the gate, make one attempt, hand the outcome to the
//! recorder.

use super::outcome::{self, Attempt, Effect, Phase};
use super::*;
use crate::status::ChannelState;

/// Most deliveries one claim takes.
const CLAIM_MAX: usize = 64;
/// How long a normal claim may wait for more free workers (see `run_loop`).
const GATHER: Duration = Duration::from_millis(5);
/// How long a normal claim waits at most for live-alert work to finish (see
/// `store::behind_urgent`).
const YIELD_MAX: Duration = Duration::from_millis(50);

/// Adds every free permit of `pool`, up to [`CLAIM_MAX`] in all.
fn take_free(pool: &Arc<tokio::sync::Semaphore>, permits: &mut Vec<OwnedSemaphorePermit>) {
    while permits.len() < CLAIM_MAX {
        match pool.clone().try_acquire_owned() {
            Ok(p) => permits.push(p),
            Err(_) => break,
        }
    }
}

/// The units of a stored rendering.
fn units_of(rendering: &str) -> Result<Units, String> {
    let value: serde_json::Value = serde_json::from_str(rendering).map_err(|e| e.to_string())?;
    value
        .get("units")
        .and_then(|u| u.as_array())
        .cloned()
        .map(Arc::new)
        .ok_or_else(|| "stored rendering has no units".to_string())
}

/// Workers taken for a live alert's copies to one channel before its acceptance commits
/// (see [`Dispatcher::workers_for_alert`]); dropped unused, they go back to the channel.
pub struct AlertWorkers {
    channel: Arc<ChannelRuntime>,
    permits: Vec<OwnedSemaphorePermit>,
}

impl AlertWorkers {
    pub fn channel(&self) -> &str {
        &self.channel.name
    }
}

impl Dispatcher {
    pub(super) async fn acquire(
        &self,
        c: &ChannelRuntime,
        disaster: bool,
    ) -> Option<OwnedSemaphorePermit> {
        if disaster {
            // A reserved permit, or any free general one, whichever comes first.
            tokio::select! {
                p = c.reserved.clone().acquire_owned() => p.ok(),
                p = c.general.clone().acquire_owned() => p.ok(),
                _ = self.stop.cancelled() => None,
            }
        } else {
            tokio::select! {
                p = c.general.clone().acquire_owned() => p.ok(),
                _ = self.stop.cancelled() => None,
            }
        }
    }

    pub(super) async fn run_loop(self: Arc<Self>, c: Arc<ChannelRuntime>, disaster: bool) {
        let wake = if disaster {
            &c.wake_disaster
        } else {
            &c.wake_general
        };
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            if c.is_paused() {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(self.settings.poll) => {}
                    _ = self.stop.cancelled() => return,
                }
                continue;
            }
            // The platform holds the whole channel: claim nothing until the hold lifts
            // (disaster loops first; normal loops a little later).
            if let Some(until) = c.gate.held_until(now_ms()) {
                let mut pause = Duration::from_millis((until - now_ms()).max(0) as u64);
                if !disaster {
                    pause += Duration::from_millis(200);
                }
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = self.stop.cancelled() => return,
                }
                continue;
            }
            let Some(first) = self.acquire(&c, disaster).await else {
                return;
            };
            let mut permits = vec![first];
            let pool = if disaster { &c.reserved } else { &c.general };
            take_free(pool, &mut permits);
            if !disaster {
                // A claim of one or two costs nearly what a claim of many does (a statement;
                // on SQLite a write turn, and its outcomes a commit). Under load, when few
                // workers are free, wait a moment for more: normal work only, and at most
                // `GATHER`. The disaster loop never waits.
                let want = (c.concurrency / 2).clamp(1, CLAIM_MAX);
                let deadline = tokio::time::Instant::now() + GATHER;
                while permits.len() < want {
                    match tokio::time::timeout_at(deadline, pool.clone().acquire_owned()).await {
                        Ok(Ok(p)) => permits.push(p),
                        _ => break,
                    }
                    take_free(pool, &mut permits);
                }
            }
            // The reserved disaster workers take live alerts only; drills queue in the
            // disaster lane for the general workers. In disaster mode the general workers
            // of a paused channel take live alerts only too: everything else waits.
            let live_only = disaster || c.in_disaster_mode();
            let min_lane = if live_only {
                Priority::Disaster.lane()
            } else {
                0
            };
            let claim = queue::claim(
                &self.db,
                &c.name,
                min_lane,
                live_only,
                permits.len() as i64,
                &self.owner,
                self.settings.lease_ms,
            );
            // The disaster loop's claims take the next write turn; normal claims wait while
            // a live alert is being accepted, claimed or sent, up to `YIELD_MAX`.
            let claimed = if disaster {
                store::urgent(claim).await
            } else {
                store::behind_urgent(YIELD_MAX).await;
                claim.await
            };
            let claimed = match claimed {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(channel = %c.name, error = %e, "Could not claim deliveries");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                drop(permits);
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(self.settings.poll) => {}
                    _ = self.stop.cancelled() => return,
                }
                continue;
            }
            for (d, permit) in claimed.into_iter().zip(permits) {
                self.spawn_attempt(&c, d, permit);
            }
        }
    }

    /// Starts the attempt of a delivery this process holds the lease on, on the worker
    /// `permit` taken for it.
    fn spawn_attempt(
        self: &Arc<Self>,
        c: &Arc<ChannelRuntime>,
        d: Claimed,
        permit: OwnedSemaphorePermit,
    ) {
        c.in_flight.fetch_add(1, Ordering::SeqCst);
        self.live.lock().unwrap().insert(d.id);
        let guard = LiveGuard {
            dispatcher: self.clone(),
            channel: c.clone(),
            id: d.id,
        };
        tokio::spawn(async move {
            let abort = guard.dispatcher.abort.clone();
            // After the shutdown grace an attempt still running is dropped here, and only
            // then is its lease released (as uncertain).
            let attempt = guard.dispatcher.attempt(&guard.channel, d, permit);
            tokio::select! {
                _ = attempt => {}
                _ = abort.cancelled() => {}
            }
            drop(guard);
        });
    }

    /// Workers of `channel` for the `units` copies of a live alert about to be accepted,
    /// taken now (reserved ones first, then free general ones) or not at all. None while the
    /// channel is paused, held by its platform, or the process is stopping: then the copies
    /// are queued and claimed as usual. With them, the copies are leased in the acceptance's
    /// own transaction (`store::announcements::AcceptLease`) and started by
    /// [`Dispatcher::start_leased`] after its commit: the first send waits for no claim
    /// statement, which on a busy PostgreSQL was half of an alert's way to the platform.
    pub fn workers_for_alert(&self, channel: &str, units: usize) -> Option<AlertWorkers> {
        let c = self.channel(channel)?;
        if units == 0
            || self.stop.is_cancelled()
            || c.is_paused()
            || c.gate.held_until(now_ms()).is_some()
        {
            return None;
        }
        let mut permits = Vec::with_capacity(units);
        for pool in [&c.reserved, &c.general] {
            while permits.len() < units {
                match pool.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
        }
        (permits.len() == units).then(|| AlertWorkers {
            channel: c.clone(),
            permits,
        })
    }

    /// The owner and end of a lease taken now, for copies leased at acceptance.
    pub fn lease_from_now(&self) -> (&str, i64) {
        (&self.owner, now_ms() + self.settings.lease_ms)
    }

    /// Starts the attempts of a live alert's copies leased at acceptance, on the workers
    /// taken for them. A copy without a worker (none expected) is given back to the queue.
    pub fn start_leased(
        self: &Arc<Self>,
        announcement_id: &str,
        lane: i32,
        created_at: i64,
        copies: Vec<store::announcements::LeasedCopy>,
        workers: Vec<AlertWorkers>,
    ) {
        let mut workers = workers;
        tracing::info!(announcement = %announcement_id, copies = copies.len(),
            "Live alert sent to its workers from its acceptance");
        for copy in copies {
            let d = Claimed {
                id: copy.id,
                announcement_id: announcement_id.to_string(),
                channel: copy.channel,
                kind: "send".to_string(),
                unit_index: copy.unit_index,
                subscriber_id: 0,
                lane,
                attempts: 1,
                idempotency_key: copy.idempotency_key,
                uncertain: false,
                expand_cursor: 0,
                first_attempt_at: created_at,
                recipient: None,
            };
            let taken = workers
                .iter_mut()
                .find(|w| w.channel.name == d.channel)
                .and_then(|w| w.permits.pop().map(|p| (w.channel.clone(), p)));
            match taken {
                Some((c, permit)) => self.spawn_attempt(&c, d, permit),
                None => {
                    tracing::error!(channel = %d.channel, delivery = d.id, "A copy leased at acceptance had no worker; it is queued again");
                    let dispatcher = self.clone();
                    tokio::spawn(async move {
                        let (db, owner) = (&dispatcher.db, &dispatcher.owner);
                        let _ = queue::release(db, &d, owner, now_ms()).await;
                        dispatcher.wake(&d.channel, Priority::Disaster);
                    });
                }
            }
        }
    }

    /// One info line per announcement and channel in a recorded batch: how many copies
    /// were sent, will be retried, failed or were skipped, under the announcement's request
    /// id. (Each copy has its own line at debug level, and each failure its own warning.)
    pub(super) fn log_recorded(&self, items: &[queue::Finished], recorded: &[bool]) {
        #[derive(Default)]
        struct Tally {
            sent: usize,
            retrying: usize,
            failed: usize,
            skipped: usize,
        }
        let mut groups: Vec<((&str, &str), Tally)> = Vec::new();
        for (item, _) in items.iter().zip(recorded).filter(|(_, ok)| **ok) {
            let key = (
                item.delivery.announcement_id.as_str(),
                item.delivery.channel.as_str(),
            );
            let at = match groups.iter().position(|(k, _)| *k == key) {
                Some(at) => at,
                None => {
                    groups.push((key, Tally::default()));
                    groups.len() - 1
                }
            };
            let tally = &mut groups[at].1;
            match item.outcome {
                Outcome::Sent { .. } => tally.sent += 1,
                Outcome::Retry { .. } => tally.retrying += 1,
                Outcome::Failed { .. } => tally.failed += 1,
                Outcome::Cancelled { .. } => tally.skipped += 1,
            }
        }
        for ((announcement, channel), t) in groups {
            let request_id = self
                .announcements
                .lock()
                .unwrap()
                .get(announcement)
                .and_then(|i| i.request_id.clone())
                .unwrap_or_default();
            tracing::info!(request_id = %request_id, announcement = %announcement, channel = %channel,
                sent = t.sent, retrying = t.retrying, failed = t.failed, skipped = t.skipped,
                "Deliveries recorded");
        }
    }

    pub(super) fn backoff_ms(&self, attempts: i32) -> i64 {
        let exp = self
            .settings
            .retry_base_ms
            .saturating_mul(1u64 << (attempts.clamp(1, 30) - 1) as u32)
            .min(self.settings.retry_max_ms)
            .max(1);
        // Full jitter: spread retries over the whole window so a recovering platform is not
        // hit by every failed delivery at the same instant.
        rand::thread_rng().gen_range(0..=exp) as i64
    }

    pub(super) async fn units(
        &self,
        announcement_id: &str,
        channel: &str,
    ) -> Result<Arc<Vec<serde_json::Value>>, String> {
        let key = (announcement_id.to_string(), channel.to_string());
        if let Some(u) = self.renderings.lock().unwrap().get(&key) {
            return Ok(u.clone());
        }
        let text = store::announcements::rendering(&self.db, announcement_id, channel)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "no rendering stored for this channel".to_string())?;
        let units = units_of(&text)?;
        self.renderings.lock().unwrap().insert(key, units.clone());
        Ok(units)
    }

    /// Remembers a live alert this process has just accepted, so that its first attempts
    /// read nothing back from the database (on PostgreSQL two round trips to a server a
    /// backlog keeps busy). Renderings never change once stored. Normal announcements are
    /// read when their turn comes: at thousands a second they would only crowd the caches.
    pub fn remember_alert(
        &self,
        id: &str,
        exercise: bool,
        request_id: Option<String>,
        due_at: i64,
        renderings: &[(&str, &str)],
    ) {
        // A worker that was quicker (it claimed the alert before this ran) keeps what it
        // read, with its mark that the announcement is `sending` already.
        for (channel, text) in renderings {
            if let Ok(units) = units_of(text) {
                let key = (id.to_string(), channel.to_string());
                self.renderings.lock().unwrap().entry(key).or_insert(units);
            }
        }
        self.announcements
            .lock()
            .unwrap()
            .entry(id.to_string())
            .or_insert_with(|| {
                Arc::new(AnnouncementInfo {
                    exercise,
                    request_id,
                    due_at,
                    marked_sending: AtomicBool::new(false),
                })
            });
    }

    pub(super) async fn announcement_info(
        &self,
        id: &str,
    ) -> Result<Arc<AnnouncementInfo>, String> {
        if let Some(a) = self.announcements.lock().unwrap().get(id) {
            return Ok(a.clone());
        }
        let row = store::announcements::get(&self.db, id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "announcement not found".to_string())?;
        let info = Arc::new(AnnouncementInfo {
            exercise: row.exercise,
            request_id: row.request_id,
            due_at: row.scheduled_at.unwrap_or(0).max(row.created_at),
            marked_sending: AtomicBool::new(false),
        });
        self.announcements
            .lock()
            .unwrap()
            .insert(id.to_string(), info.clone());
        Ok(info)
    }

    /// One attempt, logged under the request id of the API call that accepted the
    /// announcement, so an operator can follow one request to every delivery attempt.
    pub(super) async fn attempt(
        &self,
        c: &ChannelRuntime,
        d: Claimed,
        permit: OwnedSemaphorePermit,
    ) {
        use tracing::Instrument;
        let info = self.announcement_info(&d.announcement_id).await.ok();
        let request_id = info
            .as_ref()
            .and_then(|i| i.request_id.clone())
            .unwrap_or_default();
        // A live alert's writes (marking, releasing, its outcome) take the next write turn;
        // a drill's do not.
        let live_alert =
            d.lane == Priority::Disaster.lane() && info.as_ref().is_some_and(|i| !i.exercise);
        let span = tracing::info_span!("attempt", request_id = %request_id);
        let attempt = self.attempt_inner(c, d, permit).instrument(span);
        if live_alert {
            store::urgent(attempt).await
        } else {
            attempt.await
        }
    }

    /// One attempt of one claimed delivery, start to recorded outcome. The worker's
    /// `permit` (one of the channel's `concurrency`) goes back once the platform has answered
    /// and the outcome has a place among those waiting for their commit (at most
    /// `concurrency` more per channel; in the disaster lane it is held to the commit). Held through the
    /// commit, a worker sat idle for most of a recorder turn: on PostgreSQL that was an
    /// eighth of the fan-out's rate. The delivery stays in flight, its lease renewed, until
    /// its outcome is committed, so a crash resends at most twice `concurrency` copies.
    pub(super) async fn attempt_inner(
        &self,
        c: &ChannelRuntime,
        d: Claimed,
        permit: OwnedSemaphorePermit,
    ) {
        let started = now_ms();
        if d.kind == queue::KIND_EXPAND {
            self.expand(c, &d).await;
            return;
        }
        if let Some(until) = c.gate.held_until(now_ms()) {
            // Claimed just before the platform held the channel: give it back untouched
            // (no attempt counted or logged) until the hold lifts.
            if let Err(e) = queue::release(&self.db, &d, &self.owner, until).await {
                tracing::warn!(channel = %c.name, delivery = d.id, error = %e, "Could not give back a held delivery; its lease will expire");
            }
            return;
        }
        let outcome = self.attempt_send(c, &d).await;
        let outcome = match outcome {
            Ok(Some(o)) => o,
            Ok(None) => {
                // Stopping before the send started: give it back untouched, for another
                // instance or the next start.
                if let Err(e) = queue::release(&self.db, &d, &self.owner, now_ms()).await {
                    tracing::warn!(channel = %c.name, delivery = d.id, error = %e, "Could not give back a delivery at shutdown; its lease will expire");
                }
                return;
            }
            Err(internal) => {
                // Our own failure (database, stored data): keep the delivery, try later.
                tracing::error!(channel = %c.name, delivery = d.id, error = %internal, "Could not prepare a delivery");
                Outcome::Retry {
                    run_after: now_ms() + self.backoff_ms(d.attempts),
                    class: "internal",
                    error: internal,
                    status_code: None,
                    refund: false,
                    uncertain: d.uncertain,
                }
            }
        };
        let outcome = outcome::give_up_after_max(outcome, self.attempt_facts(c, &d, Phase::Send));
        match &outcome {
            Outcome::Sent { remote_id, how, .. } => {
                // One line per copy at debug; the recorder logs each batch at info.
                tracing::debug!(channel = %c.name, delivery = d.id, announcement = %d.announcement_id,
                    attempt = d.attempts, remote_id = remote_id.as_deref().unwrap_or(""), how = *how, "Delivered");
                c.last_success_ms.fetch_max(now_ms(), Ordering::SeqCst);
            }
            Outcome::Retry {
                class,
                error,
                run_after,
                ..
            } => {
                tracing::warn!(channel = %c.name, delivery = d.id, announcement = %d.announcement_id,
                    attempt = d.attempts, class = *class, error = %error,
                    retry_in_ms = run_after - now_ms(), "Delivery attempt failed; will retry");
                let _ = store::channels::record_error(&self.db, &c.name, error).await;
            }
            Outcome::Failed { class, error, .. } => {
                tracing::error!(channel = %c.name, delivery = d.id, announcement = %d.announcement_id,
                    attempt = d.attempts, class = *class, error = %error, "Delivery failed");
                let _ = store::channels::record_error(&self.db, &c.name, error).await;
            }
            Outcome::Cancelled { reason } => {
                tracing::info!(channel = %c.name, delivery = d.id, reason = %reason, "Delivery skipped");
            }
        }
        let id = d.id;
        // The disaster lane keeps its worker through the commit, as all work did before: its
        // outcomes never wait for a place behind normal ones, and its fan-outs stay bounded
        // by its workers.
        let (permit, committing) = if d.lane == Priority::Disaster.lane() {
            (Some(permit), None)
        } else {
            let place = c.committing.clone().acquire_owned().await.ok();
            drop(permit);
            (None, place)
        };
        let recorded = self.record(d, started, outcome).await;
        drop((permit, committing));
        match recorded {
            Ok(true) => {}
            Ok(false) => tracing::warn!(channel = %c.name, delivery = id,
                "Lease was lost before the outcome was recorded; another worker owns this delivery now"),
            Err(e) => tracing::error!(channel = %c.name, delivery = id, error = %e,
                "Could not record a delivery outcome; the lease will expire and the delivery will be reconciled"),
        }
    }

    /// Multiplies an email unit by the subscribers, batch after batch, keeping the row and
    /// this worker until the list is done. (Handing the row back after each batch let a send
    /// take the worker whenever a claim skipped the row — PostgreSQL's claims skip a row
    /// locked at that moment — and with every worker hung on a server that does not answer,
    /// the rest of the list then waited for the server's timeout.) Between batches live-alert
    /// work goes first; the row is handed back at shutdown, when the channel is paused, or
    /// when disaster mode holds the channel's other work.
    async fn expand(&self, c: &ChannelRuntime, d: &Claimed) {
        let live_alert = d.lane == Priority::Disaster.lane()
            && self
                .announcement_info(&d.announcement_id)
                .await
                .is_ok_and(|i| !i.exercise);
        loop {
            // Subscribers per turn: `expand_batch`, fewer when a turn would be long.
            let batch = queue::EXPAND_TURN.get(&self.db, self.settings.expand_batch as usize);
            match queue::expand_batch(&self.db, d, &self.owner, batch as i64).await {
                Ok(Some((n, finished))) => {
                    tracing::debug!(channel = %c.name, announcement = %d.announcement_id, inserted = n, "Expanded subscribers");
                    // The new copies are due now, for every instance.
                    self.wake(&c.name, Priority::from_lane(d.lane));
                    if finished {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(channel = %c.name, error = %e, "Could not expand subscribers");
                    let _ = queue::release(&self.db, d, &self.owner, now_ms() + 1000).await;
                    return;
                }
            }
            if self.stop.is_cancelled() || c.is_paused() || (!live_alert && c.in_disaster_mode()) {
                if let Err(e) = queue::release(&self.db, d, &self.owner, now_ms()).await {
                    tracing::warn!(channel = %c.name, delivery = d.id, error = %e, "Could not give back an expansion; its lease will expire");
                }
                return;
            }
            if !live_alert {
                store::behind_urgent(YIELD_MAX).await;
            }
        }
    }

    pub(super) async fn attempt_send(
        &self,
        c: &ChannelRuntime,
        d: &Claimed,
    ) -> Result<Option<Outcome>, String> {
        let units = self.units(&d.announcement_id, &c.name).await?;
        let payload = units
            .get(d.unit_index as usize)
            .cloned()
            .ok_or_else(|| format!("unit {} missing from the stored rendering", d.unit_index))?;
        let recipient = if d.subscriber_id > 0 {
            match &d.recipient {
                Some(s) => Some(Recipient {
                    address: s.email.clone(),
                    lang: s.lang.clone(),
                    unsubscribe_url: format!(
                        "{}unsubscribe?t={}",
                        self.settings.public_base_url, s.token
                    ),
                    unsubscribe_token: s.token.clone(),
                }),
                None => {
                    return Ok(Some(Outcome::Cancelled {
                        reason: "the subscriber unsubscribed or was removed".into(),
                    }))
                }
            }
        } else {
            None
        };
        let info = self.announcement_info(&d.announcement_id).await?;
        if !info.marked_sending.swap(true, Ordering::SeqCst) {
            // Off the send's path: only the status shown waits for it.
            let (db, id, info) = (self.db.clone(), d.announcement_id.clone(), info.clone());
            tokio::spawn(async move {
                if let Err(e) = queue::mark_sending(&db, &id).await {
                    // Only the status shown is late; the sweep puts it right.
                    tracing::warn!(announcement = %id, error = %e, "Could not mark the announcement as sending");
                    info.marked_sending.store(false, Ordering::SeqCst);
                }
            });
        }
        let unit = DeliveryUnit { payload, recipient };
        let mut ctx = DeliveryContext {
            delivery_id: d.id.to_string(),
            announcement_id: d.announcement_id.clone(),
            idempotency_key: d.idempotency_key.clone(),
            attempt: d.attempts.max(1) as u32,
            priority: Priority::from_lane(d.lane),
            exercise: info.exercise,
            request_id: info.request_id.clone(),
            first_attempt_at: chrono::DateTime::from_timestamp_millis(d.first_attempt_at),
        };
        if d.uncertain {
            match c.channel.reconcile(&unit, &ctx).await {
                Ok(Some(receipt)) => {
                    return Ok(Some(Outcome::Sent {
                        remote_id: receipt.remote_id,
                        note: receipt.note,
                        how: "reconciled",
                    }))
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(channel = %c.name, delivery = d.id, error = %e,
                        "Could not check whether an earlier attempt landed; the delivery stays uncertain");
                    return Ok(Some(self.after_error(c, d, e, Phase::Reconcile).await));
                }
            }
        }
        let key_note = match self.check_retry_key(c, d, &mut ctx).await? {
            KeyCheck::Fresh => None,
            KeyCheck::Renewed(note) => Some(note),
            KeyCheck::Expired(outcome) => return Ok(Some(outcome)),
        };
        c.gate
            .wait(GateLane::of(Priority::from_lane(d.lane), info.exercise))
            .await;
        if self.stop.is_cancelled() {
            // SIGTERM came while this attempt waited at the gate: it never starts.
            return Ok(None);
        }
        if c.is_paused() {
            // Paused while waiting at the gate (another attempt hit an auth error).
            return Ok(Some(Outcome::Retry {
                run_after: now_ms(),
                class: "paused",
                error: "channel paused".into(),
                status_code: None,
                refund: true,
                uncertain: d.uncertain,
            }));
        }
        let outcome = match c.channel.deliver(&unit, &ctx).await {
            Ok(receipt) => Outcome::Sent {
                remote_id: receipt.remote_id,
                note: match (&key_note, receipt.note) {
                    (Some(k), Some(n)) => Some(format!("{k}; {n}")),
                    (Some(k), None) => Some(k.clone()),
                    (None, n) => n,
                },
                how: if receipt.already_sent {
                    "already_sent"
                } else {
                    "sent"
                },
            },
            Err(mut e) => {
                if let Some(k) = &key_note {
                    e.message = format!("{k}; {}", e.message);
                }
                self.after_error(c, d, e, Phase::Send).await
            }
        };
        Ok(Some(outcome))
    }

    /// A platform's idempotency key lives only so long (LINE's retry key: 24 h). Past an
    /// hour before that, the key is renewed when no earlier attempt can have been accepted;
    /// when one may have been, the delivery fails visibly instead of risking a second
    /// broadcast, and says why.
    async fn check_retry_key(
        &self,
        c: &ChannelRuntime,
        d: &Claimed,
        ctx: &mut DeliveryContext,
    ) -> Result<KeyCheck, String> {
        const MARGIN: chrono::Duration = chrono::Duration::hours(1);
        let Some(lifetime) = c.channel.retry_key_lifetime() else {
            return Ok(KeyCheck::Fresh);
        };
        let lifetime = chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::MAX);
        let age = chrono::Duration::milliseconds(now_ms() - d.first_attempt_at);
        if age < lifetime - MARGIN {
            return Ok(KeyCheck::Fresh);
        }
        let hours = age.num_hours();
        if queue::may_have_landed(&self.db, d)
            .await
            .map_err(|e| e.to_string())?
        {
            tracing::error!(channel = %c.name, delivery = d.id, key_age_hours = hours,
                "Not resending: an earlier attempt may have been accepted and its retry key has expired");
            return Ok(KeyCheck::Expired(Outcome::Failed {
                class: "retry_key_expired",
                error: format!(
                    "not sent again: an earlier attempt (a timeout or server error) may have reached the                      platform, and its retry key is {hours} h old, past the platform's {} h, so a resend                      could deliver the message twice. Check the account (e.g. LINE Official Account                      Manager) and send a new announcement if it did not arrive",
                    lifetime.num_hours()
                ),
                status_code: None,
            }));
        }
        let key = uuid::Uuid::new_v4().to_string();
        if !queue::renew_key(&self.db, d, &self.owner, &key)
            .await
            .map_err(|e| e.to_string())?
        {
            return Err("the lease was lost while renewing the retry key".into());
        }
        tracing::info!(channel = %c.name, delivery = d.id, key_age_hours = hours, "Retry key renewed");
        ctx.idempotency_key = key;
        ctx.first_attempt_at = Some(crate::clock::now());
        Ok(KeyCheck::Renewed(format!(
            "retry key renewed: the old one was {hours} h old (the platform keeps it {} h) and no              earlier attempt can have been accepted",
            lifetime.num_hours()
        )))
    }

    pub(super) fn attempt_facts(&self, c: &ChannelRuntime, d: &Claimed, phase: Phase) -> Attempt {
        Attempt {
            lane: Priority::from_lane(d.lane),
            attempts: d.attempts,
            max_attempts: c.max_attempts,
            uncertain: d.uncertain,
            phase,
            now_ms: now_ms(),
            backoff_ms: self.backoff_ms(d.attempts),
        }
    }

    /// The delivery's next step after an adapter error, and what it means for the channel.
    pub(super) async fn after_error(
        &self,
        c: &ChannelRuntime,
        d: &Claimed,
        e: DeliveryError,
        phase: Phase,
    ) -> Outcome {
        let (outcome, effect) = outcome::next_step(&e, self.attempt_facts(c, d, phase));
        match effect {
            None => {}
            Some(Effect::Degrade(reason)) => {
                let _ = store::channels::set_state(
                    &self.db,
                    &c.name,
                    ChannelState::Degraded,
                    Some(&reason),
                )
                .await;
            }
            Some(Effect::Pause(reason)) => {
                tracing::error!(channel = %c.name, reason = %reason,
                    "Channel paused: fix its credentials, then POST /api/v1/channels/{}/resume", c.name);
                let _ = store::channels::set_state(
                    &self.db,
                    &c.name,
                    ChannelState::Paused,
                    Some(&reason),
                )
                .await;
                c.paused.store(true, Ordering::SeqCst);
            }
            Some(Effect::Hold(until)) => {
                // The limit is the account's, not this delivery's: hold the whole channel,
                // here and (through the database) in every other instance.
                c.gate.hold(until);
                tracing::warn!(channel = %c.name, hold_ms = until - now_ms(),
                    "The platform rate-limited the channel; holding every delivery until it resets");
                if let Err(e) = store::channels::set_hold(&self.db, &c.name, until).await {
                    tracing::warn!(channel = %c.name, error = %e, "Could not share the channel's hold with other instances");
                }
            }
        }
        outcome
    }
}

/// What [`Dispatcher::check_retry_key`] decided.
enum KeyCheck {
    Fresh,
    /// A new key, with the note for the delivery log.
    Renewed(String),
    /// Not sent: this outcome says why.
    Expired(Outcome),
}

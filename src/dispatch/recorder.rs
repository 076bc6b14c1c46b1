//! The recorder: outcomes committed in batches, one transaction for many deliveries.

use super::*;

impl Dispatcher {
    /// Hands an outcome to the recorder and waits until it is committed, so the worker's
    /// slot (and the lease renewal) lasts until the outcome is durable.
    pub(super) async fn record(
        &self,
        d: Claimed,
        started_at: i64,
        outcome: Outcome,
    ) -> Result<bool, String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let item = queue::Finished {
            delivery: d,
            started_at,
            outcome: outcome.sanitized(),
        };
        if let Err(tokio::sync::mpsc::error::SendError((item, _))) =
            self.recorder.send((item, reply)).await
        {
            // The recorder is gone (shutting down): record this one directly.
            return queue::finish_batch(&self.db, &self.owner, std::slice::from_ref(&item))
                .await
                .map(|r| r[0])
                .map_err(|e| e.to_string());
        }
        answer
            .await
            .map_err(|_| "the recorder stopped".to_string())?
    }

    /// Counts a committed batch for `/metrics` (atomics, no statement).
    fn count_recorded(&self, items: &[queue::Finished], results: &[bool]) {
        let announcements = self.announcements.lock().unwrap();
        crate::metrics::recorded(items, results, |id| announcements.get(id).map(|a| a.due_at));
    }

    /// Commits outcomes in batches: whatever has arrived while the previous batch was being
    /// written goes into the next transaction. Under load this turns a commit (an fsync on
    /// SQLite) per delivery into one per batch; when idle a batch is a single outcome and
    /// nothing waits.
    pub(super) async fn run_recorder(&self, rx: &mut RecorderRx) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            // Outcomes per transaction: at most 128, fewer when a turn would be long.
            let max = queue::RECORD_TURN.get(&self.db, 128);
            while batch.len() < max {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let (items, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            // A batch with a disaster outcome takes the next write turn.
            let urgent = items
                .iter()
                .any(|i| i.delivery.lane == Priority::Disaster.lane());
            let mut wait = Duration::from_millis(500);
            let recorded = loop {
                let record = queue::finish_batch(&self.db, &self.owner, &items);
                let recorded = if urgent {
                    store::urgent(record).await
                } else {
                    record.await
                };
                match recorded {
                    // Storage is full or gone: these outcomes are kept here (bounded: one
                    // batch, and behind it at most `concurrency` outcomes per channel, whose
                    // deliveries keep their leases) and written once it returns. A delivery already on the wire is recorded as sent then,
                    // never sent again blindly.
                    Err(e) if e.is_unavailable() && !self.abort.is_cancelled() => {
                        tracing::debug!(error = %e, items = items.len(), "Outcomes wait for storage");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(5));
                    }
                    other => break other,
                }
            };
            match recorded {
                Ok(results) => {
                    self.log_recorded(&items, &results);
                    self.count_recorded(&items, &results);
                    for (reply, ok) in replies.into_iter().zip(results) {
                        let _ = reply.send(Ok(ok));
                    }
                }
                Err(e) => {
                    // One item (or a passing database error) must not cost the others their
                    // record: write them one by one, each in its own transaction.
                    tracing::warn!(error = %e, items = items.len(), "Recording a batch failed; recording one by one");
                    for (item, reply) in items.iter().zip(replies) {
                        let one =
                            queue::finish_batch(&self.db, &self.owner, std::slice::from_ref(item))
                                .await
                                .map(|r| r[0])
                                .map_err(|e| e.to_string());
                        let _ = reply.send(one);
                    }
                }
            }
        }
    }
}

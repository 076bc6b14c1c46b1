//! One home for background work: every long-running task (worker loops, recorder, upkeep,
//! wake-ups, health checks, and later the scheduler, reach collector and disaster mode) is
//! started here, under a shared shutdown signal and a supervisor.
//!
//! A task that returns while the daemon is not stopping, or panics, is logged at error
//! level and started again after a backoff (1 s, doubling to 60 s). While it is down,
//! [`Tasks::down`] names it and `/readyz` answers 503.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// The daemon's stop signal: once given, every loop winds down.
#[derive(Clone, Default)]
pub struct Shutdown(Arc<(AtomicBool, Notify)>);

impl Shutdown {
    pub fn cancel(&self) {
        self.0 .0.store(true, Ordering::SeqCst);
        self.0 .1.notify_waiters();
    }
    pub fn is_cancelled(&self) -> bool {
        self.0 .0.load(Ordering::SeqCst)
    }
    /// Resolves once the stop signal is given.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.0 .1.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// A task that is not running, and why.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Down {
    pub task: String,
    pub reason: String,
    /// Restarts so far.
    pub restarts: u32,
}

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A task that ran this long before dying starts again from the first backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// The supervisor of the daemon's background tasks.
#[derive(Clone, Default)]
pub struct Tasks {
    pub shutdown: Shutdown,
    down: Arc<Mutex<BTreeMap<String, Down>>>,
    handles: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Tasks {
    pub fn new(shutdown: Shutdown) -> Tasks {
        Tasks {
            shutdown,
            ..Default::default()
        }
    }

    /// Runs `make()` under supervision until shutdown: restarted with backoff whenever it
    /// ends or panics before the stop signal.
    pub fn spawn<F, Fut>(&self, name: impl Into<String>, make: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let name = name.into();
        let (shutdown, down) = (self.shutdown.clone(), self.down.clone());
        let handle = tokio::spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            let mut restarts = 0u32;
            loop {
                let started = tokio::time::Instant::now();
                let result = tokio::spawn(make()).await;
                if shutdown.is_cancelled() {
                    return;
                }
                let reason = match result {
                    Ok(()) => "it stopped on its own".to_string(),
                    Err(e) if e.is_panic() => {
                        let payload = e.into_panic();
                        let text = payload
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| payload.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "a panic".into());
                        format!("it panicked: {text}")
                    }
                    Err(e) => format!("it was cancelled: {e}"),
                };
                if started.elapsed() >= HEALTHY_RUN {
                    backoff = FIRST_BACKOFF;
                }
                restarts += 1;
                tracing::error!(task = %name, reason = %reason, restart_in_ms = backoff.as_millis() as u64,
                    "A background task died; restarting it");
                down.lock().unwrap().insert(
                    name.clone(),
                    Down {
                        task: name.clone(),
                        reason,
                        restarts,
                    },
                );
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                down.lock().unwrap().remove(&name);
                tracing::info!(task = %name, restarts, "Background task restarted");
            }
        });
        self.handles.lock().unwrap().push(handle);
    }

    /// Tasks not running now (waiting for their restart).
    pub fn down(&self) -> Vec<Down> {
        self.down.lock().unwrap().values().cloned().collect()
    }

    /// Gives the stop signal and aborts whatever has not ended within `grace`.
    pub async fn stop(&self, grace: Duration) {
        self.shutdown.cancel();
        let handles: Vec<_> = std::mem::take(&mut *self.handles.lock().unwrap());
        let deadline = tokio::time::Instant::now() + grace;
        for h in handles {
            let abort = h.abort_handle();
            if tokio::time::timeout_at(deadline, h).await.is_err() {
                abort.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[tokio::test(start_paused = true)]
    async fn a_dying_task_is_reported_and_restarted_with_backoff() {
        let tasks = Tasks::default();
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        tasks.spawn("flaky", move || {
            let r = r.clone();
            async move {
                let n = r.fetch_add(1, Ordering::SeqCst);
                if n < 2 {
                    panic!("boom {n}");
                }
                std::future::pending::<()>().await
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let down = tasks.down();
        assert_eq!(down.len(), 1, "{down:?}");
        assert_eq!(down[0].task, "flaky");
        assert!(down[0].reason.contains("panicked: boom 0"), "{down:?}");
        // First restart after 1 s, the second after 2 s more.
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(tasks.down()[0].restarts, 2);
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert!(tasks.down().is_empty(), "running again");
        tasks.stop(Duration::from_millis(10)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_ending_at_shutdown_is_not_restarted() {
        let tasks = Tasks::default();
        let runs = Arc::new(AtomicU32::new(0));
        let (r, s) = (runs.clone(), tasks.shutdown.clone());
        tasks.spawn("loop", move || {
            let (r, s) = (r.clone(), s.clone());
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                s.cancelled().await
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        tasks.stop(Duration::from_secs(1)).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(tasks.down().is_empty());
    }
}

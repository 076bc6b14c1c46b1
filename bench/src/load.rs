//! The load the alerts compete with, besides the email fan-out itself: subscriber imports
//! back to back, one-click unsubscribe POSTs at a steady pace, and a record of how many
//! mails the sink had received when.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::task::JoinHandle;

/// A subscriber CSV of `n` addresses `{prefix}{i}@example.jp`, `i` from `from`.
pub fn csv(prefix: &str, from: usize, n: usize) -> String {
    let mut s = String::with_capacity(32 * (n + 1));
    s.push_str("email,lang,topics\n");
    for i in from..from + n {
        let _ = writeln!(s, "{prefix}{i}@example.jp,ja,");
    }
    s
}

/// `POST /api/v1/subscribers/import`: the answer's status.
pub async fn import(http: &reqwest::Client, base: &str, admin: &str, body: String) -> Result<u16> {
    let r = http
        .post(format!("{base}/api/v1/subscribers/import"))
        .bearer_auth(admin)
        .header("content-type", "text/csv")
        .body(body)
        .send()
        .await?;
    Ok(r.status().as_u16())
}

/// Answers by status (or error), counted.
#[derive(Default)]
pub struct Codes(Mutex<BTreeMap<String, u64>>);

impl Codes {
    pub fn add(&self, code: String) {
        *self.0.lock().unwrap().entry(code).or_default() += 1;
    }
    /// Answers with this code.
    pub fn count(&self, code: &str) -> u64 {
        self.0.lock().unwrap().get(code).copied().unwrap_or(0)
    }
    pub fn total(&self) -> u64 {
        self.0.lock().unwrap().values().sum()
    }
    /// `200: 12, 429: 3`.
    pub fn show(&self) -> String {
        let m = self.0.lock().unwrap();
        m.iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub fn code_of(r: reqwest::Result<reqwest::Response>) -> String {
    match r {
        Ok(r) => r.status().as_u16().to_string(),
        Err(e) => format!("error ({e})"),
    }
}

/// Clients whose connections leave from 127.0.0.2, 127.0.0.3, … (all loopback); `http`
/// alone when `sources` is 0.
fn source_clients(http: &reqwest::Client, sources: u8) -> Vec<reqwest::Client> {
    let clients: Vec<reqwest::Client> = (0..sources.min(250))
        .filter_map(|i| {
            reqwest::Client::builder()
                .local_address(std::net::IpAddr::from([127, 0, 0, 2 + i]))
                .timeout(Duration::from_secs(60))
                .no_proxy()
                .build()
                .ok()
        })
        .collect();
    if clients.is_empty() {
        vec![http.clone()]
    } else {
        clients
    }
}

/// What the load generators were given.
pub struct LoadPlan {
    pub base: String,
    pub admin: String,
    /// Distinguishes this run's imported addresses.
    pub tag: String,
    pub import_rows: usize,
    pub import_pause: Duration,
    /// The tokens to unsubscribe, in order.
    pub unsubscribe_tokens: Vec<String>,
    /// Over how long the unsubscribe POSTs are spread.
    pub unsubscribe_over: Duration,
    /// From how many loopback source addresses (127.0.0.2, 127.0.0.3, …) they come, as
    /// residents' mail providers would send them from many addresses; 0: the default one.
    pub unsubscribe_sources: u8,
}

/// The running load generators and what they saw.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<(Duration, JoinHandle<()>)>,
    samples: Arc<Mutex<Vec<(Instant, u64)>>>,
    pub imports: Arc<Codes>,
    import_secs: Arc<Mutex<Vec<f64>>>,
    pub unsubscribes: Arc<Codes>,
}

impl Load {
    pub fn start(plan: LoadPlan, http: &reqwest::Client, mails: Arc<AtomicU64>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let imports = Arc::new(Codes::default());
        let import_secs = Arc::new(Mutex::new(Vec::new()));
        let unsubscribes = Arc::new(Codes::default());

        let sampler = {
            let (stop, samples) = (stop.clone(), samples.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let n = mails.load(Ordering::SeqCst);
                    samples.lock().unwrap().push((Instant::now(), n));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };

        let importer = {
            let (stop, codes, secs) = (stop.clone(), imports.clone(), import_secs.clone());
            let (http, base, admin) = (http.clone(), plan.base.clone(), plan.admin.clone());
            let (rows, tag, pause) = (plan.import_rows, plan.tag.clone(), plan.import_pause);
            tokio::spawn(async move {
                let mut k = 0;
                while !stop.load(Ordering::SeqCst) {
                    let body = csv(&format!("imp{tag}-{k}-"), 0, rows);
                    let t = Instant::now();
                    let code = match import(&http, &base, &admin, body).await {
                        Ok(c) => c.to_string(),
                        Err(e) => format!("error ({e})"),
                    };
                    secs.lock().unwrap().push(t.elapsed().as_secs_f64());
                    codes.add(code);
                    k += 1;
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
            })
        };

        // One POST every `every`, each in its own task (at most 16 in flight), as many mail
        // clients would send them: `List-Unsubscribe=One-Click` (RFC 8058). Every request
        // still goes to the daemon on 127.0.0.1.
        let unsubscriber = {
            let codes = unsubscribes.clone();
            let clients = source_clients(http, plan.unsubscribe_sources);
            let base = plan.base.clone();
            let tokens = plan.unsubscribe_tokens;
            let every =
                (plan.unsubscribe_over / tokens.len().max(1) as u32).max(Duration::from_millis(1));
            tokio::spawn(async move {
                let limit = Arc::new(tokio::sync::Semaphore::new(16));
                let mut tick = tokio::time::interval(every);
                let mut posts = Vec::with_capacity(tokens.len());
                for (i, t) in tokens.into_iter().enumerate() {
                    tick.tick().await;
                    let permit = limit.clone().acquire_owned().await.expect("never closed");
                    let http = clients[i % clients.len()].clone();
                    let (base, codes) = (base.clone(), codes.clone());
                    posts.push(tokio::spawn(async move {
                        let r = http
                            .post(format!("{base}/unsubscribe?t={t}"))
                            .header("content-type", "application/x-www-form-urlencoded")
                            .body("List-Unsubscribe=One-Click")
                            .send()
                            .await;
                        codes.add(code_of(r));
                        drop(permit);
                    }));
                }
                for p in posts {
                    let _ = p.await;
                }
            })
        };

        Load {
            stop,
            tasks: vec![
                (Duration::from_secs(5), sampler),
                (Duration::from_secs(120), importer),
                (Duration::from_secs(60), unsubscriber),
            ],
            samples,
            imports,
            import_secs,
            unsubscribes,
        }
    }

    /// Stops the generators; an import or unsubscribe in flight is waited for.
    pub async fn finish(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for (limit, task) in self.tasks.drain(..) {
            let abort = task.abort_handle();
            if tokio::time::timeout(limit, task).await.is_err() {
                abort.abort();
            }
        }
    }

    /// Mails the sink had received at `t` (as last sampled before it).
    pub fn mails_at(&self, t: Instant) -> u64 {
        let v = self.samples.lock().unwrap();
        v.iter()
            .take_while(|(at, _)| *at <= t)
            .last()
            .map(|(_, n)| *n)
            .unwrap_or(0)
    }

    /// Mean duration of one import, in seconds.
    pub fn mean_import_secs(&self) -> f64 {
        let v = self.import_secs.lock().unwrap();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }
}

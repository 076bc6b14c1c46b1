//! The figures: per platform and overall, count, p50, p99 and max (nearest rank), the 202's
//! own latency, and the load that ran meanwhile.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::fakes::PLATFORMS;

/// One alert's request: when it was sent, when its answer came, and the status (0: none).
pub struct Sent {
    pub sent: Instant,
    pub answered: Instant,
    pub status: u16,
}

/// When each alert reached each platform (`None`: never), per platform of [`PLATFORMS`].
pub struct Arrivals {
    pub at: [Vec<Option<Instant>>; 3],
    /// Posts sent again for an alert already received (a retry).
    pub resends: [usize; 3],
    /// Alerts each platform accepted as posts.
    pub accepted: [usize; 3],
}

impl Arrivals {
    pub fn missing(&self) -> usize {
        self.at
            .iter()
            .map(|v| v.iter().filter(|a| a.is_none()).count())
            .sum()
    }
    pub fn last(&self) -> Option<Instant> {
        self.at
            .iter()
            .flat_map(|v| v.iter().flatten())
            .max()
            .copied()
    }
}

/// One platform's latency over the alerts that reached it (ms).
pub struct PlatformLatency {
    pub platform: &'static str,
    pub arrived: usize,
    pub expected: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn since(later: Instant, earlier: Instant) -> f64 {
    ms(later.saturating_duration_since(earlier))
}

fn row(name: &str, sorted: &[f64], expected: usize) -> String {
    let count = if sorted.len() == expected {
        sorted.len().to_string()
    } else {
        format!("{}/{expected}", sorted.len())
    };
    if sorted.is_empty() {
        return format!("  {name:<10}{count:>7}{:>9}{:>9}{:>9}", "-", "-", "-");
    }
    let p99 = percentile(sorted, 0.99);
    format!(
        "  {name:<10}{count:>7}{:>9.1}{:>9.1}{:>9.1}   {}",
        percentile(sorted, 0.50),
        p99,
        sorted[sorted.len() - 1],
        if p99 < 50.0 { "yes" } else { "NO" }
    )
}

/// Prints the latency table (and, with `per_alert`, every alert) and returns it per platform;
/// false when an alert was refused, never arrived, or a platform did not accept it.
pub fn latency(
    sent: &[Sent],
    arrivals: &Arrivals,
    per_alert: bool,
    timeout_secs: u64,
) -> (bool, Vec<PlatformLatency>) {
    let alerts = sent.len();
    let mut ok = true;
    let refused = sent.iter().filter(|s| s.status != 202).count();
    if refused > 0 {
        ok = false;
        println!("FAILED: {refused} alert(s) were not accepted with 202");
    }
    println!();
    println!(
        "disaster latency, request sent → the platform's fake received the post \
         (ms; p50/p99 nearest rank):"
    );
    println!(
        "  {:<10}{:>7}{:>9}{:>9}{:>9}   p99 < 50 ms",
        "platform", "alerts", "p50", "p99", "max"
    );
    let mut all = Vec::new();
    let mut per_platform = Vec::new();
    for (platform, slots) in PLATFORMS.iter().zip(&arrivals.at) {
        let mut lat: Vec<f64> = slots
            .iter()
            .zip(sent)
            .filter_map(|(a, s)| a.map(|a| since(a, s.sent)))
            .collect();
        lat.sort_by(f64::total_cmp);
        all.extend_from_slice(&lat);
        println!("{}", row(platform, &lat, alerts));
        if !lat.is_empty() {
            per_platform.push(PlatformLatency {
                platform,
                arrived: lat.len(),
                expected: alerts,
                p50: percentile(&lat, 0.50),
                p99: percentile(&lat, 0.99),
                max: lat[lat.len() - 1],
            });
        }
    }
    all.sort_by(f64::total_cmp);
    println!("{}", row("all", &all, alerts * PLATFORMS.len()));
    let mut accept: Vec<f64> = sent.iter().map(|s| since(s.answered, s.sent)).collect();
    accept.sort_by(f64::total_cmp);
    println!(
        "  (the 202 itself: p50 {:.1}, p99 {:.1}, max {:.1} ms)",
        percentile(&accept, 0.50),
        percentile(&accept, 0.99),
        accept.last().copied().unwrap_or(0.0)
    );
    if per_alert {
        println!("  per alert, ms after its request was sent:");
        println!(
            "    {:>4} {:>8} {:>8} {:>8} {:>8}",
            "#", "202", "line", "x", "facebook"
        );
        for (k, s) in sent.iter().enumerate() {
            let mut line = format!("    {k:>4} {:>8.1}", since(s.answered, s.sent));
            for slots in &arrivals.at {
                match slots[k] {
                    Some(a) => {
                        let _ = write!(line, " {:>8.1}", since(a, s.sent));
                    }
                    None => line.push_str(&format!(" {:>8}", "-")),
                }
            }
            println!("{line}");
        }
    }
    for (i, platform) in PLATFORMS.iter().enumerate() {
        let missing = arrivals.at[i].iter().filter(|a| a.is_none()).count();
        if missing > 0 {
            ok = false;
            println!(
                "FAILED: {missing} alert(s) never reached {platform} within {timeout_secs} s \
                 of the last send"
            );
        } else if arrivals.accepted[i] != alerts {
            ok = false;
            println!(
                "FAILED: {platform} accepted {} of the {alerts} alerts as posts",
                arrivals.accepted[i]
            );
        }
        if arrivals.resends[i] > 0 {
            println!(
                "note: {platform} received {} post(s) again for an alert it had already \
                 received; the latency counts to the last",
                arrivals.resends[i]
            );
        }
    }
    (ok, per_platform)
}

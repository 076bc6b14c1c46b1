//! What the kernel says about a process: CPU time (`/proc/<pid>/stat`), resident memory
//! (`/proc/<pid>/status`), the CPUs it may run on.

use std::time::Duration;

use anyhow::{Context, Result};

/// Clock ticks per second of `utime`/`stime` (`getconf CLK_TCK`; 100 on Linux unless told).
fn ticks_per_second() -> u64 {
    static TCK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(100)
    })
}

/// User + system CPU time of every thread of a process (or of one thread, with a
/// `/proc/<pid>/task/<tid>` path), from its `stat` file.
pub fn cpu_time_at(dir: &str) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("{dir}/stat"))
        .with_context(|| format!("read {dir}/stat"))?;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let rest = &stat[stat.rfind(')').context("no ')' in stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(Duration::from_secs_f64(
        (utime + stime) as f64 / ticks_per_second() as f64,
    ))
}

/// User + system CPU time of process `pid` so far.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    cpu_time_at(&format!("/proc/{pid}"))
}

/// Context switches so far (voluntary and not) summed over the threads of process `pid`
/// (`/proc/<pid>/task/*/status`): each hand-off between the runtime and a database thread
/// shows here. Threads that already ended are not counted.
pub fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks.flatten().map(|t| task_switches(&t.path())).sum()
}

/// One thread's voluntary and involuntary context switches (`/proc/PID/task/TID`).
fn task_switches(task: &std::path::Path) -> u64 {
    let Ok(status) = std::fs::read_to_string(task.join("status")) else {
        return 0;
    };
    status
        .lines()
        .filter(|l| {
            l.starts_with("voluntary_ctxt_switches:")
                || l.starts_with("nonvoluntary_ctxt_switches:")
        })
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// CPU time of this process's threads whose name starts with `prefix` (e.g. the sink's
/// runtime, `bench-smtp`).
pub fn own_threads_cpu(prefix: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let dir = t.path().display().to_string();
            let comm = std::fs::read_to_string(format!("{dir}/comm")).ok()?;
            comm.starts_with(prefix).then(|| cpu_time_at(&dir).ok())?
        })
        .sum()
}

/// CPU time of the PostgreSQL backends serving database `name` (their command line reads
/// `postgres: … user name host(port) …`): the server's share of the work, which runs on
/// whichever CPU is free, not pinned.
pub fn postgres_backends_cpu(name: &str) -> Duration {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    let needle = format!(" {name} ");
    procs
        .flatten()
        .filter(|p| {
            p.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|p| {
            let dir = p.path().display().to_string();
            let cmdline = std::fs::read(format!("{dir}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            (cmdline.starts_with("postgres: ") && cmdline.contains(&needle))
                .then(|| cpu_time_at(&dir).ok())?
        })
        .sum()
}

/// (VmRSS, VmHWM) of process `pid`, in kB.
pub fn memory_kb(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        Ok(line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// The machine's online CPUs (`0-1`), whatever this process is pinned to.
pub fn cpus_online() -> String {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map_or_else(|_| "?".into(), |s| s.trim().to_string())
}

/// The CPUs a process may run on (`Cpus_allowed_list`), `self` for this one.
pub fn cpus_allowed(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This thread's own count (the whole process's sum drops when another test's thread
    /// exits meanwhile: its task leaves /proc, which made this test flaky in CI).
    #[test]
    fn context_switches_count_this_threads_sleeps() {
        let me = std::path::Path::new("/proc/thread-self");
        let before = task_switches(me);
        // Each sleep gives the CPU up: one voluntary switch of this thread at least.
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let after = task_switches(me);
        assert!(after >= before + 5, "{before} → {after}");
        assert!(context_switches(std::process::id()) >= after);
    }
}

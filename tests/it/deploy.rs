//! The deployment files in `deploy/` and the operator's commands that go with them: the
//! systemd unit passes `systemd-analyze verify`; the container, compose and Kubernetes
//! files parse and agree with the daemon (every secret they mount reaches a key the daemon
//! reads, the probes answer on a real daemon, non-root throughout); `noroshi healthcheck`
//! and `noroshi backup` run against a real daemon.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use reqwest::StatusCode;

use crate::helpers::*;
use crate::on_both;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn noroshi(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_noroshi"));
    cmd.args(args).env("NO_COLOR", "1");
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A tool CI installs: `None` (the test says SKIPPED) when it is missing here, a failure
/// when `NOROSHI_TEST_DEPLOY=required` (as `.ci/run` sets it).
fn required_tool(path: &str) -> Option<&str> {
    if Path::new(path).exists() {
        return Some(path);
    }
    assert!(
        std::env::var("NOROSHI_TEST_DEPLOY").as_deref() != Ok("required"),
        "NOROSHI_TEST_DEPLOY=required, but {path} is missing"
    );
    None
}

// ---------------------------------------------------------------------------------------
// systemd

/// `systemd-analyze verify` on the shipped unit, its `ExecStart` pointed at the built binary
/// and its commented `LoadCredential=` lines switched on, so they are checked too. verify
/// only warns about an unknown or misspelt directive (and still exits 0), so any line on
/// stderr about the unit fails the test.
#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = required_tool("/usr/bin/systemd-analyze") else {
        eprintln!("SKIPPED: systemd-analyze is not installed (Debian package systemd)");
        return;
    };
    let shipped = read("deploy/systemd/noroshi.service");
    assert!(shipped
        .contains("ExecStart=/usr/local/bin/noroshi serve --config /etc/noroshi/noroshi.toml"));
    let unit = shipped
        .replace("/usr/local/bin/noroshi", env!("CARGO_BIN_EXE_noroshi"))
        .replace("\n#LoadCredential=", "\nLoadCredential=");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("noroshi.service");
    std::fs::write(&path, &unit).unwrap();
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("noroshi.service"))
        .collect();
    assert!(
        about_unit.is_empty(),
        "systemd-analyze verify warned:\n{stderr}"
    );

    // What the unit promises, as systemd reads it.
    let directives = unit_directives(&unit);
    for (key, value) in [
        ("Type", "simple"),
        ("DynamicUser", "yes"),
        ("StateDirectory", "noroshi"),
        ("ConfigurationDirectory", "noroshi"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallFilter", "@system-service"),
        ("MemoryDenyWriteExecute", "yes"),
        ("LockPersonality", "yes"),
        ("RestrictNamespaces", "yes"),
        ("UMask", "0077"),
        ("Restart", "on-failure"),
    ] {
        assert!(
            directives.iter().any(|(k, v)| k == key && v == value),
            "the unit lacks {key}={value}"
        );
    }
    // Every credential the unit loads is a file the config can name with KEY_file.
    for (_, v) in directives.iter().filter(|(k, _)| k == "LoadCredential") {
        let (id, source) = v.split_once(':').unwrap();
        assert_eq!(source, format!("/etc/noroshi/credentials/{id}"), "{v}");
    }
    // TimeoutStopSec covers the daemon's longest orderly stop with the default grace.
    let stop = directives
        .iter()
        .find(|(k, _)| k == "TimeoutStopSec")
        .map(|(_, v)| v.trim_end_matches('s').parse::<u64>().unwrap())
        .expect("TimeoutStopSec");
    assert!(stop >= longest_stop_secs(30), "TimeoutStopSec={stop}");
}

/// `Key=value` lines of a unit file (comments left out).
fn unit_directives(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The longest an orderly stop takes after SIGTERM (src/server.rs): requests in progress
/// up to 10 s, sends on the wire `grace`, stopped sends 5 s, background tasks 2 s, plus a
/// few seconds for giving leases back and closing the database.
fn longest_stop_secs(grace: u64) -> u64 {
    10 + grace + 5 + 2 + 3
}

//! Records the commit the daemon is built from, for `noroshi --version` and the
//! `noroshi_build_info` metric: `NOROSHI_COMMIT` when it is set (a container build copies no
//! `.git`; pass `--build-arg NOROSHI_COMMIT=…`), else what `git rev-parse` says of this
//! checkout, else `unknown`. Uncommitted changes are not marked: the commit is `HEAD`'s.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=NOROSHI_COMMIT");
    let commit = std::env::var("NOROSHI_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(head)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=NOROSHI_COMMIT={}", commit.trim());
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    out.status.success().then(|| text.trim().to_string())
}

/// `HEAD`'s short id; the script runs again when `HEAD` or the branch it names moves (its
/// loose ref, the packed refs, and `HEAD`'s reflog, which every commit, checkout and reset
/// appends to even when the branch's ref was packed before).
fn head() -> Option<String> {
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    let mut watched = vec![
        "HEAD".to_string(),
        "packed-refs".to_string(),
        "logs/HEAD".to_string(),
    ];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        // Only files that exist: a missing one would make Cargo run the script every build.
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    commit
        .chars()
        .all(|c| c.is_ascii_hexdigit())
        .then_some(commit)
}

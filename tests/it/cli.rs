//! The `noroshi` command as operators use it: check-config, migrate, send --wait, status.

use std::process::Command;
use std::time::Duration;

use crate::helpers::*;

fn noroshi() -> Command {
    Command::new(env!("CARGO_BIN_EXE_noroshi"))
}

/// `noroshi check-config --config CONFIG`, run in `cwd`.
fn check_config(config: &std::path::Path, cwd: &std::path::Path) -> std::process::Output {
    noroshi()
        .args(["check-config", "--config"])
        .arg(config)
        .current_dir(cwd)
        .output()
        .unwrap()
}

#[test]
fn check_config_names_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[channels.line]\nenabeld = true\n").unwrap();
    let out = noroshi()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("channels.line") && err.contains("enabeld"),
        "{err}"
    );

    std::fs::write(&path, "[server]\nbind = \"nowhere\"\n[channels.line]\nenabled = true\n[channels.facebook]\nenabled = true\n").unwrap();
    let out = noroshi()
        .args(["check-config", "--config"])
        .arg(&path)
        .env_remove("LINE_CHANNEL_ACCESS_TOKEN")
        .env_remove("FACEBOOK_PAGE_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.bind"), "{err}");
    assert!(err.contains("LINE_CHANNEL_ACCESS_TOKEN"), "{err}");
    assert!(err.contains("channels.facebook.page_id"), "{err}");

    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/noroshi.example.toml");
    let out = check_config(&example, dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("website"));
}

/// What `serve` would refuse at its start, `check-config` refuses too, every problem named:
/// the reach schedule, the holiday list, the disaster templates.
#[test]
fn check_config_refuses_what_serve_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("noroshi.toml");
    let config = format!(
        "[reach]\nschedule = \"every hour\"\n\
         [schedules]\nholidays_file = \"{holidays}\"\n\
         [disaster]\ntemplates_dir = \"{templates}\"\n",
        holidays = dir.path().join("no-holidays.csv").display(),
        templates = dir.path().join("no-templates").display(),
    );
    std::fs::write(&path, config).unwrap();
    let out = check_config(&path, dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for key in [
        "reach.schedule",
        "schedules.holidays_file",
        "disaster.templates_dir",
    ] {
        assert!(err.contains(key), "{key} is not named:\n{err}");
    }
}

/// A PostgreSQL password in the URL's query (`?password=…`, which the driver accepts like
/// the one before `@`) never reaches the output either.
#[test]
fn check_config_hides_every_form_of_the_database_password() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "postgres://noroshi:hunter2-secret@db.example:5432/noroshi",
        "postgres://noroshi@db.example:5432/noroshi?sslmode=require&password=hunter2-secret",
    ] {
        let path = dir.path().join("noroshi.toml");
        std::fs::write(&path, format!("[database]\nurl = \"{url}\"\n")).unwrap();
        let out = check_config(&path, dir.path());
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{all}");
        assert!(all.contains("Database: postgres://noroshi"), "{all}");
        assert!(!all.contains("hunter2-secret"), "{url}: {all}");
    }
}

/// `noroshi --version` names the commit the binary was built from (build.rs), so an operator
/// during a rollout, and a benchmark's figures, can tell which build runs: in a git checkout
/// built without `NOROSHI_COMMIT`, `HEAD`'s short id.
#[test]
fn version_names_the_commit_it_was_built_from() {
    let out = noroshi().arg("--version").output().unwrap();
    assert!(out.status.success());
    let commit = env!("NOROSHI_COMMIT");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("noroshi {} ({commit})", env!("CARGO_PKG_VERSION"))
    );
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match head {
        Ok(head) if head.status.success() && std::env::var_os("NOROSHI_COMMIT").is_none() => {
            assert_eq!(commit, String::from_utf8_lossy(&head.stdout).trim());
        }
        _ => println!(
            "SKIPPED: the commit against git (no git checkout here, or NOROSHI_COMMIT is set)"
        ),
    }
}

#[test]
fn migrate_creates_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = noroshi()
        .arg("migrate")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("data/noroshi.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_wait_follows_progress_and_fails_loudly() {
    let d = Daemon::builder(Backend::Sqlite).start().await;
    let base = d.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        noroshi()
            .args([
                "send",
                "--server",
                &base,
                "--token",
                STAFF,
                "--title",
                "ごみ収集日の変更",
                "--body",
                "年末年始の収集日が変わります。",
                "--tag",
                "生活環境課",
                "--wait",
                "--timeout",
                "30",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("website") && stdout.contains("every channel sent"),
        "{stdout}"
    );
    let id = stdout.split_whitespace().nth(1).unwrap().to_string();
    let base = d.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        noroshi()
            .args(["status", "--server", &base, "--token", VIEWER, &id])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("sent"));
    // Without an id: every channel's state.
    let base = d.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        noroshi()
            .args(["status", "--server", &base, "--token", VIEWER])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("website") && l.contains("enabled") && l.contains("ok")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("line") && l.contains("disabled")),
        "{stdout}"
    );

    // A refusal: exit code ≠ 0 and the server's message.
    let base = d.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        noroshi()
            .args([
                "send", "--server", &base, "--token", STAFF, "--title", "", "--body", "x",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("title"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_wait_exits_non_zero_when_a_channel_fails() {
    // An SMTP server that refuses every recipient for good.
    let smtp = noroshi_email::fake::FakeSmtp::start(Default::default()).await;
    let d = Daemon::builder(Backend::Sqlite)
        .config(&email_config(smtp.port()))
        .start()
        .await;
    let csv = "email,lang,topics\nbounce-a@example.jp,ja,\n";
    let (s, _) = d.import("text/csv", csv).await;
    assert_eq!(s, reqwest::StatusCode::OK);
    let base = d.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        noroshi()
            .args([
                "send",
                "--server",
                &base,
                "--token",
                STAFF,
                "--title",
                "t",
                "--body",
                "b",
                "--channel",
                "email",
                "--wait",
                "--timeout",
                "30",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("failed"), "{stdout}");
    let _ = Duration::from_secs(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_creates_an_admin_token_once() {
    let dir = tempfile::tempdir().unwrap();
    // Each start binds a free port itself and says which in its log (stdout, to a file).
    let spawn = |run: &str| {
        let out = std::fs::File::create(dir.path().join(format!("{run}.out"))).unwrap();
        noroshi()
            .arg("serve")
            .current_dir(dir.path())
            .env("NOROSHI__SERVER__BIND", "127.0.0.1:0")
            .env("NOROSHI__LOG__FORMAT", "human")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::from(out))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let http = reqwest::Client::new();
    let wait_ready = |run: &'static str| {
        let (http, path) = (&http, dir.path().join(format!("{run}.out")));
        async move {
            for _ in 0..400 {
                let out = std::fs::read_to_string(&path).unwrap_or_default();
                if let Some(addr) = out
                    .split("Noroshi is listening bind=")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                {
                    let base = format!("http://{addr}");
                    if http
                        .get(format!("{base}/readyz"))
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false)
                    {
                        return (base, out);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("not ready");
        }
    };
    let mut child = spawn("first");
    let (base, first_out) = wait_ready("first").await;
    let token_path = dir.path().join("data/admin.token");
    let token = std::fs::read_to_string(&token_path)
        .unwrap()
        .trim()
        .to_string();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(first_out.contains(&token), "printed once on the console");
    let r = http
        .post(format!("{base}/api/v1/announcements"))
        .bearer_auth(&token)
        .json(&notice())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);
    child.kill().unwrap();
    child.wait().unwrap();
    // Only the hash is stored.
    let db = std::fs::read(dir.path().join("data/noroshi.db")).unwrap();
    assert!(!String::from_utf8_lossy(&db).contains(&token));
    // The second start prints no new token and the first still works.
    let mut child = spawn("second");
    let (base, second_out) = wait_ready("second").await;
    let r = http
        .get(format!("{base}/api/v1/announcements"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!second_out.contains("admin token was created"));
    assert!(!second_out.contains(&token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_sqlite_file_is_refused() {
    let d = Daemon::builder(Backend::Sqlite).start().await;
    let config = d.config_path.clone();
    let out = tokio::task::spawn_blocking(move || {
        noroshi()
            .args(["serve", "--config"])
            .arg(&config)
            .env("NOROSHI__SERVER__BIND", "127.0.0.1:0")
            .env("IT_ADMIN_TOKEN", ADMIN)
            .env("IT_STAFF_TOKEN", STAFF)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another Noroshi process"), "{err}");
    // The first one is unharmed.
    let (s, _) = d.get("/api/v1/announcements").await;
    assert_eq!(s, reqwest::StatusCode::OK);
}

//! Issue 15: the served OpenAPI document is valid OpenAPI 3.1 by an independent validator,
//! and a client generated from it by a tool from PyPI drives every operation of the daemon,
//! each answer checked against the document (`tests/openapi/drive.py`). Needs the tools
//! `scripts/python-tools` installs (`NOROSHI_TEST_PYTHON`); without them the test says so and
//! passes without running.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::helpers::*;
use crate::on_both;

fn python() -> Option<PathBuf> {
    std::env::var_os("NOROSHI_TEST_PYTHON")
        .map(PathBuf::from)
        .filter(|p| p.exists())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// What the document promises about itself, checked here without any OpenAPI library.
fn structure(doc: &Value) -> BTreeSet<String> {
    assert_eq!(doc["openapi"].as_str().unwrap_or(""), "3.1.0");
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let in_template: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap_or_default().to_string();
            let at = format!("{method} {path}");
            assert!(!id.is_empty(), "{at}: no operationId");
            assert!(
                ids.insert(id.clone()),
                "{at}: operationId {id} is used twice"
            );
            assert!(op["tags"][0].is_string(), "{at}: no tag");
            assert!(op["summary"].is_string(), "{at}: no description");
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let in_path: BTreeSet<&str> = params
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            assert_eq!(in_path, in_template, "{at}: path parameters");
            for p in &params {
                assert!(
                    p["schema"]["type"].is_string() || p["schema"]["type"].is_array(),
                    "{at}: {p}"
                );
            }
            if op.get("security").is_some() {
                let desc = op["description"].as_str().unwrap_or_default();
                assert!(desc.contains("Role: "), "{at}: says no role");
                for status in ["401", "403", "429", "503"] {
                    assert!(
                        op["responses"][status]["content"]["application/problem+json"].is_object(),
                        "{at}: {status} is not declared as problem+json"
                    );
                }
            }
            for (status, r) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    assert!(
                        r["content"].get("application/json").is_none(),
                        "{at}: {status} says application/json, not problem+json"
                    );
                }
            }
        }
    }
    ids
}

async fn a_client_generated_from_the_document_drives_the_daemon(backend: Backend) {
    let Some(python) = python() else {
        eprintln!("NOTE: NOROSHI_TEST_PYTHON is not set: the OpenAPI validation and generated-client test is SKIPPED (scripts/python-tools)");
        return;
    };
    let bin = python.parent().unwrap();
    let d = Daemon::builder(backend).start().await;
    let text = d
        .http
        .get(format!("{}/api/v1/openapi.json", d.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let ids = structure(&doc);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &text).unwrap();
    // An independent validator.
    let verdict = run(Command::new(bin.join("openapi-spec-validator")).arg(&file));
    assert!(verdict.contains("OK"), "{verdict}");
    // A client generated from it, by a tool that knows nothing of Noroshi.
    std::fs::write(dir.path().join("generator.yaml"), "post_hooks: []\n").unwrap();
    run(Command::new(bin.join("openapi-python-client"))
        .args(["generate", "--meta", "none", "--path"])
        .arg(&file)
        .arg("--config")
        .arg(dir.path().join("generator.yaml"))
        .arg("--output-path")
        .arg(dir.path().join("noroshi_client")));
    let drive = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi/drive.py");
    let out = run(Command::new(&python)
        .arg(drive)
        .env("PYTHONPATH", dir.path())
        .env("NOROSHI_BASE", &d.base)
        .env("NOROSHI_OPENAPI", &file)
        .env("NOROSHI_ADMIN", ADMIN)
        .env("NOROSHI_STAFF", STAFF)
        .env("NOROSHI_VIEWER", VIEWER));
    let covered: BTreeSet<String> =
        serde_json::from_str(out.lines().last().unwrap_or("[]")).unwrap();
    let missing: Vec<_> = ids.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "operations the driver never called: {missing:?}"
    );
}
on_both!(a_client_generated_from_the_document_drives_the_daemon);

/// The reference page is served by the daemon from the same document: every operation and
/// every schema is on it, its stylesheet comes from the daemon, nothing from elsewhere, and
/// it carries the same strict content security policy as every HTML page.
async fn the_reference_page_is_drawn_from_the_served_document(backend: Backend) {
    let d = Daemon::builder(backend).start().await;
    let doc: Value = d
        .http
        .get(format!("{}/api/v1/openapi.json", d.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = d
        .http
        .get(format!("{}/api/v1/docs", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let page = r.text().await.unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        assert!(
            page.contains(&format!("<code>{path}</code>")),
            "{path} is not on the page"
        );
        for op in item.as_object().unwrap().values() {
            let id = op["operationId"].as_str().unwrap();
            assert!(
                page.contains(&format!("id=\"op-{id}\"")),
                "{id} is not on the page"
            );
        }
    }
    for name in doc["components"]["schemas"].as_object().unwrap().keys() {
        assert!(
            page.contains(&format!("id=\"schema-{name}\"")),
            "schema {name}"
        );
    }
    // The Japanese example travels from the schema to the page.
    assert!(page.contains("年末年始のごみ収集について"));
    // Nothing from another host: no script at all, styles from the daemon.
    assert!(!page.contains("<script"));
    for attr in ["src=\"http", "href=\"http"] {
        assert!(
            !page.contains(attr),
            "the page loads something from elsewhere ({attr})"
        );
    }
    let css = d
        .http
        .get(format!("{}/api/v1/docs.css", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), 200);
    assert!(css.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
}
on_both!(the_reference_page_is_drawn_from_the_served_document);

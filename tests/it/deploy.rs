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

// ---------------------------------------------------------------------------------------
// Container, compose and Kubernetes

/// Every YAML document in a file.
fn yaml_docs(path: &str) -> Vec<serde_yaml::Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(&read(path))
        .map(|d| {
            let mut v = serde_yaml::Value::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}"));
            // `<<: *anchor` merges, as compose reads them.
            v.apply_merge().unwrap_or_else(|e| panic!("{path}: {e}"));
            v
        })
        .collect()
}

fn yaml_files(dir: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .map(|n| format!("{dir}/{n}"))
        .collect();
    files.sort();
    files
}

fn s(v: &serde_yaml::Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

/// Every `KEY_env` (value: a variable's name) and `KEY_file` (a path) in a TOML table, with
/// its dotted path: the secrets a config reads.
fn secret_refs(table: &toml::Table, prefix: &str, out: &mut Vec<(String, String)>) {
    for (k, v) in table {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => secret_refs(t, &path, out),
            toml::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let toml::Value::Table(t) = item {
                        secret_refs(t, &format!("{path}[{i}]"), out);
                    }
                }
            }
            toml::Value::String(s) if k.ends_with("_env") || k.ends_with("_file") => {
                out.push((path, s.clone()))
            }
            _ => {}
        }
    }
}

/// The credential keys each channel's config has, read from its source: every
/// `Option<SecretString>` field, and `secret_headers` (webhook). A credential added to a
/// channel fails this test until the manifests carry it too.
fn channel_credential_keys() -> Vec<(String, String)> {
    let mut keys = Vec::new();
    for dir in std::fs::read_dir(repo("channels")).unwrap() {
        let dir = dir.unwrap().path();
        let Ok(src) = std::fs::read_to_string(dir.join("src/config.rs")) else {
            continue;
        };
        let channel = dir.file_name().unwrap().to_string_lossy().into_owned();
        for line in src.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("pub ") {
                if let Some((name, ty)) = rest.split_once(": ") {
                    if ty.contains("SecretString>") {
                        keys.push((channel.clone(), name.to_string()));
                    }
                }
            }
        }
    }
    keys.sort();
    assert!(keys.len() >= 15, "too few credential keys found: {keys:?}");
    keys
}

fn containerfile_instruction<'a>(file: &'a str, name: &str) -> Vec<&'a str> {
    // Continuation lines joined by the caller's reading: instructions here fit one line
    // after `\` joins, so join them first.
    file.lines()
        .filter_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .collect()
}

fn joined_containerfile() -> String {
    read("deploy/container/Containerfile")
        .replace("\\\n", " ")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

fn check_config(config: &Path, env: &[(String, String)]) -> Output {
    let mut cmd = noroshi(&["check-config", "--config"]);
    cmd.arg(config);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("NOROSHI__")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_and_kubernetes_files_hold_together() {
    let tmp = tempfile::tempdir().unwrap();

    // --- The Containerfile: two stages, a fixed non-root user, the volume, the port, and a
    // HEALTHCHECK that is a real subcommand of the binary it runs.
    let cf = joined_containerfile();
    assert!(
        containerfile_instruction(&cf, "FROM").len() >= 2,
        "not multi-stage"
    );
    let user = containerfile_instruction(&cf, "USER");
    assert_eq!(user.len(), 1, "{user:?}");
    let (uid, gid) = user[0].trim().split_once(':').expect("USER uid:gid");
    let uid: u32 = uid
        .parse()
        .expect("numeric uid (Kubernetes' runAsNonRoot needs it)");
    assert!(uid != 0 && gid.parse::<u32>().unwrap() != 0);
    assert!(containerfile_instruction(&cf, "VOLUME")[0].contains("\"/var/lib/noroshi\""));
    assert_eq!(containerfile_instruction(&cf, "EXPOSE"), ["8080"]);
    let entrypoint: Vec<String> =
        serde_json::from_str(containerfile_instruction(&cf, "ENTRYPOINT")[0]).unwrap();
    let health = containerfile_instruction(&cf, "HEALTHCHECK")[0];
    let health: Vec<String> = serde_json::from_str(health.split_once("CMD ").unwrap().1).unwrap();
    assert_eq!(health[0], entrypoint[0], "HEALTHCHECK runs another program");
    assert_eq!(health[1], "healthcheck");
    let out = noroshi(&[&health[1], "--help"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // Every COPY from the build context names something that exists, and the build script
    // the daemon's build runs is among them.
    let copied: Vec<&str> = containerfile_instruction(&cf, "COPY")
        .into_iter()
        .filter(|c| !c.starts_with("--from"))
        .flat_map(|c| {
            let parts: Vec<&str> = c.split_whitespace().collect();
            parts[..parts.len() - 1].to_vec()
        })
        .collect();
    assert!(
        !repo("build.rs").exists() || copied.contains(&"build.rs"),
        "the Containerfile does not copy build.rs: {copied:?}"
    );
    for copy in containerfile_instruction(&cf, "COPY") {
        if copy.starts_with("--from") {
            continue;
        }
        let parts: Vec<&str> = copy.split_whitespace().collect();
        for src in &parts[..parts.len() - 1] {
            assert!(repo(src).exists(), "COPY {src}: not in the repository");
        }
    }
    // The image's own config is valid as it is.
    let image_config = repo("deploy/container/noroshi.toml");
    let out = check_config(&image_config, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let image_bind = toml::from_str::<toml::Table>(&read("deploy/container/noroshi.toml")).unwrap()
        ["server"]["bind"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(image_bind.ends_with(":8080"), "{image_bind}");

    // --- compose: PostgreSQL with a health check, two Noroshi instances on it, one front.
    let compose = &yaml_docs("deploy/container/compose.yaml")[0];
    let services = compose["services"].as_mapping().unwrap();
    let postgres = &compose["services"]["postgres"];
    assert!(s(&postgres["image"]).contains("postgres"));
    assert!(postgres["healthcheck"]["test"].is_sequence());
    assert!(postgres["volumes"].is_sequence());
    let pg_env = &postgres["environment"];
    let instances: Vec<&str> = services
        .iter()
        .filter(|(_, v)| {
            v["volumes"].as_sequence().is_some_and(|vs| {
                vs.iter()
                    .any(|m| m.as_str() == Some("./compose.toml:/etc/noroshi/noroshi.toml:ro"))
            })
        })
        .map(|(k, _)| s(k))
        .collect();
    assert_eq!(instances, ["noroshi-1", "noroshi-2"]);
    let compose_config = read("deploy/container/compose.toml");
    for name in &instances {
        let svc = &compose["services"][*name];
        assert_eq!(
            s(&svc["depends_on"]["postgres"]["condition"]),
            "service_healthy"
        );
        assert!(svc["user"].is_null(), "{name} overrides the image's user");
        let stop = s(&svc["stop_grace_period"]).trim_end_matches('s');
        assert!(stop.parse::<u64>().unwrap() >= longest_stop_secs(30));
        assert!(svc["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|v| s(v) == "site:/var/lib/noroshi/site"));
        // The instance's environment with each /run/secrets/NAME swapped for a file here:
        // check-config on the image's config must pass and say PostgreSQL.
        let granted: Vec<&str> = svc["secrets"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(s)
            .collect();
        let secrets_dir = tmp.path().join(format!("{name}-secrets"));
        std::fs::create_dir_all(&secrets_dir).unwrap();
        for secret in &granted {
            assert!(
                compose["secrets"][*secret]["file"].is_string(),
                "secret {secret} is not declared"
            );
            let value = if *secret == "database-url" {
                format!(
                    "postgres://{}:pw-3d9f@postgres:5432/{}",
                    s(&pg_env["POSTGRES_USER"]),
                    s(&pg_env["POSTGRES_DB"])
                )
            } else {
                format!("{secret}-value-42")
            };
            std::fs::write(secrets_dir.join(secret), value).unwrap();
        }
        let mut env = Vec::new();
        for (k, v) in svc["environment"].as_mapping().unwrap() {
            let (k, v) = (s(k).to_string(), s(v).to_string());
            for named in v.split("/run/secrets/").skip(1) {
                let secret: String = named
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                assert!(
                    granted.contains(&secret.as_str()),
                    "{name}: {k} names {secret}, not granted"
                );
            }
            let v = v.replace("/run/secrets/", &format!("{}/", secrets_dir.display()));
            env.push((k, v));
        }
        let config = tmp.path().join(format!("{name}.toml"));
        for named in compose_config.split("/run/secrets/").skip(1) {
            let secret: String = named.chars().take_while(|c| *c != '"').collect();
            assert!(
                granted.contains(&secret.as_str()),
                "{name}: compose.toml names {secret}, not granted"
            );
        }
        std::fs::write(
            &config,
            compose_config.replace("/run/secrets/", &format!("{}/", secrets_dir.display())),
        )
        .unwrap();
        let out = check_config(&config, &env);
        let said = text(&out);
        assert!(out.status.success(), "{name}: {said}");
        assert!(
            said.contains("Database: postgres://noroshi:REDACTED@postgres:5432/noroshi"),
            "{name}: {said}"
        );
        assert!(!said.contains("pw-3d9f"), "{said}");
    }
    let front = &compose["services"]["front"];
    assert_eq!(
        front["ports"].as_sequence().unwrap().len(),
        1,
        "one address"
    );
    for name in &instances {
        assert_eq!(
            s(&front["depends_on"][*name]["condition"]),
            "service_healthy"
        );
        assert!(
            read("deploy/container/front.conf").contains(&format!("server {name}:8080")),
            "the front does not forward to {name}"
        );
    }
    let front_ip = s(&front["networks"]["noroshi"]["ipv4_address"]);
    let trusted = toml::from_str::<toml::Table>(&compose_config).unwrap()["server"]
        ["trusted_proxies"]
        .to_string();
    assert!(
        trusted.contains(front_ip),
        "the front's address is not trusted"
    );

    // --- Kubernetes: every manifest parses; pick them by kind.
    let mut by_kind = std::collections::BTreeMap::<String, serde_yaml::Value>::new();
    for file in yaml_files("deploy/kubernetes") {
        for doc in yaml_docs(&file) {
            let kind = s(&doc["kind"]).to_string();
            assert!(by_kind.insert(kind.clone(), doc).is_none(), "two {kind}s");
        }
    }
    let kustomization = &by_kind["Kustomization"];
    let listed: Vec<&str> = kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(s)
        .collect();
    for file in yaml_files("deploy/kubernetes") {
        let name = file.rsplit('/').next().unwrap();
        let expected = !matches!(name, "kustomization.yaml" | "secret.example.yaml");
        assert_eq!(listed.contains(&name), expected, "{name} in kustomization");
    }
    let deployment = &by_kind["Deployment"];
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(2));
    let pod = &deployment["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    for selector in [
        &deployment["spec"]["selector"]["matchLabels"],
        &by_kind["Service"]["spec"]["selector"],
        &by_kind["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ] {
        for (k, v) in selector.as_mapping().unwrap() {
            assert_eq!(&labels[s(k)], v, "selector {k:?} does not match the pods");
        }
    }
    assert!(by_kind["PodDisruptionBudget"]["spec"]["minAvailable"].as_u64() >= Some(1));
    let security = &pod["spec"]["securityContext"];
    assert_eq!(security["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        security["runAsUser"].as_u64(),
        Some(uid as u64),
        "the image's uid"
    );
    let containers = pod["spec"]["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(
        c["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    assert_eq!(
        c["securityContext"]["allowPrivilegeEscalation"].as_bool(),
        Some(false)
    );
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    let port_of = |name: &str| -> u64 {
        c["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no container port {name}"))
    };
    for p in by_kind["Service"]["spec"]["ports"].as_sequence().unwrap() {
        port_of(s(&p["targetPort"]));
    }
    // The config the pods run: the ConfigMap, mounted where the args say.
    let config_text = s(&by_kind["ConfigMap"]["data"]["noroshi.toml"]).to_string();
    let args: Vec<&str> = c["args"].as_sequence().unwrap().iter().map(s).collect();
    assert_eq!(args, ["serve", "--config", "/etc/noroshi/noroshi.toml"]);
    assert!(c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|m| s(&m["mountPath"]) == "/etc/noroshi/noroshi.toml"
            && s(&m["subPath"]) == "noroshi.toml"));
    let config: toml::Table = toml::from_str(&config_text).unwrap();
    let bind_port: u64 = config["server"]["bind"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let probes: Vec<(String, String)> = ["startupProbe", "livenessProbe", "readinessProbe"]
        .iter()
        .map(|p| {
            let get = &c[*p]["httpGet"];
            assert_eq!(port_of(s(&get["port"])), bind_port, "{p} asks another port");
            (p.to_string(), s(&get["path"]).to_string())
        })
        .collect();
    assert_eq!(probes[1].1, "/healthz");
    assert_eq!(probes[2].1, "/readyz");
    // Termination: the preStop pause and the daemon's longest orderly stop fit.
    let grace = config["server"]["shutdown_grace_secs"]
        .as_integer()
        .unwrap() as u64;
    let pre_stop: u64 = c["lifecycle"]["preStop"]["exec"]["command"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let termination = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        termination >= pre_stop + longest_stop_secs(grace),
        "{termination}"
    );

    // Secrets: the config's KEY_env variables are exactly the Secret-fed variables, every
    // Secret key is used, and every credential of every channel is among them.
    let mut refs = Vec::new();
    secret_refs(&config, "", &mut refs);
    assert!(
        refs.iter()
            .all(|(k, _)| k.ends_with("_env") || k.contains("file")),
        "{refs:?}"
    );
    let secret_example = &by_kind["Secret"];
    let secret_name = s(&secret_example["metadata"]["name"]);
    let secret_keys: Vec<&str> = secret_example["stringData"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(s)
        .collect();
    let mut fed = Vec::new(); // (variable, Secret key, optional)
    for e in c["env"].as_sequence().unwrap() {
        let r = &e["valueFrom"]["secretKeyRef"];
        assert!(
            r.is_mapping(),
            "{e:?}: not from the Secret (no literal values here)"
        );
        assert_eq!(s(&r["name"]), secret_name);
        assert!(
            secret_keys.contains(&s(&r["key"])),
            "{:?}: no such key",
            r["key"]
        );
        fed.push((
            s(&e["name"]).to_string(),
            s(&r["key"]).to_string(),
            r["optional"].as_bool().unwrap_or(false),
        ));
    }
    let named: Vec<&str> = refs
        .iter()
        .filter(|(k, _)| k.ends_with("_env"))
        .map(|(_, v)| v.as_str())
        .collect();
    for (var, _, _) in &fed {
        assert!(
            named.contains(&var.as_str()),
            "{var} is fed but no key names it"
        );
    }
    for var in &named {
        assert!(
            fed.iter().any(|(v, _, _)| v == var),
            "{var} is named but not fed"
        );
    }
    for key in &secret_keys {
        assert!(
            fed.iter().any(|(_, k, _)| k == key),
            "Secret key {key} is unused"
        );
    }
    for (channel, key) in channel_credential_keys() {
        let env = format!("{key}_env");
        let found = refs.iter().any(|(path, _)| {
            path.starts_with(&format!("channels.{channel}."))
                && (path.ends_with(&format!(".{env}"))
                    || (key == "secret_headers" && path.contains(".secret_headers.")))
        });
        assert!(
            found,
            "channels.{channel}.{key} is not read from the Secret"
        );
    }
    for key in ["database.url_env", "auth.tokens[0].token_env"] {
        assert!(refs.iter().any(|(k, _)| k == key), "{key}");
    }

    // The daemon agrees: with every variable set, check-config passes with every channel
    // on (a key it does not read would be refused by name); with the required ones
    // missing, it names each of their variables.
    let config_path = tmp.path().join("noroshi.toml");
    std::fs::write(&config_path, &config_text).unwrap();
    let all: Vec<(String, String)> = fed
        .iter()
        .map(|(v, _, _)| {
            let value = if v == "DATABASE_URL" {
                "postgres://noroshi:pw-5c1e@postgres.example:5432/noroshi".to_string()
            } else {
                format!("{}-value-7f3a", v.to_lowercase())
            };
            (v.clone(), value)
        })
        .collect();
    let out = check_config(&config_path, &all);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    for channel in ["line", "x", "facebook", "email", "website", "cms"] {
        let line = said
            .lines()
            .find(|l| l.starts_with("Channels enabled:"))
            .unwrap();
        assert!(line.contains(channel), "{channel} not enabled: {said}");
    }
    assert!(
        said.contains("Database: postgres://noroshi:REDACTED@"),
        "{said}"
    );
    assert!(
        !said.contains("value-7f3a") && !said.contains("pw-5c1e"),
        "{said}"
    );
    let optional_only: Vec<(String, String)> = all
        .iter()
        .filter(|(v, _)| fed.iter().any(|(f, _, opt)| f == v && *opt))
        .cloned()
        .collect();
    let out = check_config(&config_path, &optional_only);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    for (var, _, optional) in &fed {
        if !optional && var != "DATABASE_URL" {
            assert!(
                said.contains(&format!("environment variable {var} is not set")),
                "{var} is required by the manifest but the daemon does not ask for it:\n{said}"
            );
        }
    }

    // --- The probes and the image's health check answer on a real daemon.
    let d = Daemon::builder(Backend::Sqlite).start().await;
    for (probe, path) in &probes {
        let (status, _) = d.request(reqwest::Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{probe} {path}");
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_noroshi"));
    for arg in &health[1..] {
        let arg = arg.replace(
            "/etc/noroshi/noroshi.toml",
            &d.config_path.display().to_string(),
        );
        cmd.arg(arg);
    }
    // The container's bind (0.0.0.0:8080) asked on loopback; here the daemon's own port.
    let port = d.base.rsplit(':').next().unwrap();
    let out = cmd
        .env("NOROSHI__SERVER__BIND", format!("0.0.0.0:{port}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the image's HEALTHCHECK failed: {}",
        text(&out)
    );
}

// ---------------------------------------------------------------------------------------
// Scheduling

/// The scheduling policy of each thread of `pid`, by thread name (`/proc/<pid>/task/*/stat`,
/// field 41; 0 is SCHED_OTHER, 3 SCHED_BATCH).
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
            let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            // `rest` starts at field 3: field 41 is its 39th.
            let policy = rest.split_whitespace().nth(38)?.parse().ok()?;
            Some((name.to_string(), policy))
        })
        .collect()
}

/// The runtime's threads run as SCHED_BATCH (src/cli.rs says why: a woken runtime thread
/// no longer preempts a SQLite thread inside sqlx's channel lock); SQLite's threads and the
/// main thread keep the default policy.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_threads_are_scheduled_as_batch() {
    let d = Daemon::builder(Backend::Sqlite).start().await;
    let threads = thread_policies(d.pid());
    let runtime: Vec<_> = threads
        .iter()
        .filter(|(name, _)| name.starts_with("tokio-runtime") || name.starts_with("tokio-rt"))
        .collect();
    assert!(!runtime.is_empty(), "no runtime thread among {threads:?}");
    assert!(runtime.iter().all(|(_, p)| *p == 3), "{threads:?}");
    let sqlite: Vec<_> = threads
        .iter()
        .filter(|(name, _)| name.starts_with("sqlx-sqlite"))
        .collect();
    assert!(!sqlite.is_empty(), "no SQLite thread among {threads:?}");
    assert!(sqlite.iter().all(|(_, p)| *p == 0), "{threads:?}");
}

// ---------------------------------------------------------------------------------------
// noroshi healthcheck

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_command_reports_readiness() {
    // A daemon on a known port, so the command can find it from the same configuration.
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let d = Daemon::builder(Backend::Sqlite)
        .env("NOROSHI__SERVER__BIND", &bind)
        .start()
        .await;
    assert_eq!(d.base, format!("http://{bind}"));
    let config = d.config_path.display().to_string();

    let out = noroshi(&["healthcheck", "--config", &config])
        .env("NOROSHI__SERVER__BIND", &bind)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&format!("ready (http://{bind}/readyz)")));
    // An unspecified bind address (a container's 0.0.0.0) is asked on loopback.
    let out = noroshi(&["healthcheck", "--config", &config])
        .env("NOROSHI__SERVER__BIND", format!("0.0.0.0:{port}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let url = format!("{}/readyz", d.base);
    let out = noroshi(&["healthcheck", "--url", &url]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));

    // Not 200: the answer is named.
    let wrong = format!("{}/no-such-route", d.base);
    let out = noroshi(&["healthcheck", "--url", &wrong]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("not ready: {wrong} answered 404")),
        "{}",
        text(&out)
    );
    // Nobody listening: a failure that says so.
    let closed = format!("http://127.0.0.1:{}/readyz", free_port());
    let out = noroshi(&["healthcheck", "--url", &closed])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("not ready: cannot reach {closed}")),
        "{}",
        text(&out)
    );
    // The daemon stopped: the same command now fails.
    let mut d = d;
    d.terminate().await;
    let out = noroshi(&["healthcheck", "--url", &url]).output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
}

// ---------------------------------------------------------------------------------------
// noroshi backup

/// What a restore must bring back of an announcement: its view (status, each channel's
/// counts) and its delivery log.
async fn record(d: &Daemon, id: &str) -> (serde_json::Value, serde_json::Value) {
    let mut view = d.announcement(id).await;
    view.as_object_mut().unwrap().remove("updated_at");
    let (status, log) = d
        .get(&format!(
            "/api/v1/deliveries?announcement_id={id}&limit=100"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    (view, log)
}

/// `noroshi backup --to FILE` with the daemon's configuration and environment.
fn backup(d: &Daemon, to: &Path) -> Command {
    let mut cmd = noroshi(&["backup", "--to"]);
    cmd.arg(to).arg("--config").arg(&d.config_path);
    cmd.envs(d.env.iter().map(|(k, v)| (k, v)));
    cmd
}

async fn sqlite_backup_restores_every_announcement(backend: Backend) {
    let mut d = Daemon::builder(backend).start().await;
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("noroshi-backup.db");
    if backend == Backend::Postgres {
        let out = backup(&d, &copy).output().unwrap();
        assert!(!out.status.success());
        let said = text(&out);
        assert!(
            said.contains("pg_dump") && said.contains("PostgreSQL"),
            "{said}"
        );
        assert!(!copy.exists());
        return;
    }

    let mut ids = Vec::new();
    for i in 0..12 {
        let mut n = notice();
        n["title"] = format!("お知らせ {i}").into();
        ids.push(d.submit(n).await);
    }
    for id in &ids {
        d.wait_status(id, &["sent"], std::time::Duration::from_secs(30))
            .await;
    }
    let mut before = Vec::new();
    for id in &ids {
        before.push(record(&d, id).await);
    }

    // The backup runs while announcements keep arriving.
    let submitting = {
        let (base, http) = (d.base.clone(), d.http.clone());
        tokio::spawn(async move {
            let mut accepted = 0;
            for i in 0..30 {
                let mut n = notice();
                n["title"] = format!("バックアップ中 {i}").into();
                let r = http
                    .post(format!("{base}/api/v1/announcements"))
                    .bearer_auth(STAFF)
                    .json(&n)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::ACCEPTED);
                accepted += 1;
            }
            accepted
        })
    };
    let mut running = backup(&d, &copy);
    let out = tokio::task::spawn_blocking(move || running.output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("announcements)"), "{}", text(&out));
    assert_eq!(submitting.await.unwrap(), 30);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the copy holds subscribers' addresses");
    }
    // An existing file is never replaced.
    let size = std::fs::metadata(&copy).unwrap().len();
    let out = backup(&d, &copy).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("exists"), "{}", text(&out));
    assert_eq!(std::fs::metadata(&copy).unwrap().len(), size);
    d.terminate().await;

    // Restore: a daemon started on the copy has every announcement and its log.
    let restored = Daemon::builder(Backend::Sqlite)
        .database(&format!("sqlite://{}", copy.display()))
        .start()
        .await;
    for (id, (view, log)) in ids.iter().zip(&before) {
        let (v, l) = record(&restored, id).await;
        assert_eq!(&v, view, "announcement {id} after restore");
        assert_eq!(&l, log, "delivery log of {id} after restore");
        assert!(!l["items"].as_array().unwrap().is_empty());
    }
    assert!(restored.count_announcements().await >= ids.len());
}

on_both!(sqlite_backup_restores_every_announcement);

// ---------------------------------------------------------------------------------------
// Upgrades

/// What docs/deployment.md says about a rollout: a binary refuses a database that a newer
/// one migrated (it finds an applied migration it does not have) rather than run on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_binary_refuses_a_database_a_newer_one_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("noroshi.db");
    let config = dir.path().join("noroshi.toml");
    std::fs::write(
        &config,
        format!("[database]\nurl = \"sqlite://{}\"\n", db.display()),
    )
    .unwrap();
    let migrate = || {
        let mut cmd = noroshi(&["migrate", "--config"]);
        cmd.arg(&config).current_dir(dir.path());
        cmd.output().unwrap()
    };
    let out = migrate();
    assert!(out.status.success(), "{}", text(&out));
    // A migration from a later version, as its binary would have recorded it.
    {
        use sqlx::{ConnectOptions, Connection};
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .connect()
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from a later version', TRUE, X'00', 1)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    }
    let out = migrate();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("migration 9999 was previously applied but is missing"),
        "{}",
        text(&out)
    );
}

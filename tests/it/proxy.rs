//! The reverse-proxy set-up shipped in `deploy/nginx/noroshi.conf`, run as it is (only its
//! ports and file paths swapped for the test's) with a real nginx in front of a real daemon:
//! TLS ends at nginx, only the public routes pass, and the daemon counts each resident by the
//! address nginx forwards. Needs `nginx` and `openssl` (`.ci/run` installs nginx); without
//! them the test says so and passes without running.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::*;
use crate::on_both;

const HOST: &str = "noroshi.city.example.jp";

fn tool(name: &str) -> Option<String> {
    [format!("/usr/sbin/{name}"), format!("/usr/bin/{name}")]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA and a certificate for [`HOST`] signed by it.
fn certificates(dir: &Path, openssl: &str) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(Command::new(openssl)
        .current_dir(dir)
        .args(["req", "-x509", "-days", "2", "-subj", "/CN=Noroshi test CA"])
        .args(ec)
        .args(["-keyout", "ca.key", "-out", "ca.pem"]));
    run(Command::new(openssl)
        .current_dir(dir)
        .args(["req", "-subj", &format!("/CN={HOST}")])
        .args(ec)
        .args(["-keyout", "key.pem", "-out", "leaf.csr"]));
    std::fs::write(
        dir.join("leaf.ext"),
        format!(
            "subjectAltName=DNS:{HOST}\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    run(Command::new(openssl).current_dir(dir).args([
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-extfile",
        "leaf.ext",
        "-out",
        "cert.pem",
    ]));
}

/// The shipped file with each of `swaps` replaced; every one must be found, so the test
/// notices when the example changes under it.
fn swapped(text: &str, swaps: &[(&str, String)]) -> String {
    let mut out = text.to_string();
    for (from, to) in swaps {
        assert!(
            out.contains(from),
            "deploy/nginx/noroshi.conf no longer has `{from}`"
        );
        out = out.replace(from, to);
    }
    out
}

struct Nginx(std::process::Child);
impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn nginx_in_front_ends_tls_and_names_each_resident(backend: Backend) {
    let (Some(nginx), Some(openssl)) = (tool("nginx"), tool("openssl")) else {
        eprintln!("NOTE: nginx or openssl is not installed: the reverse-proxy test is SKIPPED");
        return;
    };
    let d = Daemon::builder(backend)
        .env("NOROSHI__SERVER__ADMIN_BIND", "127.0.0.1:0")
        .env("NOROSHI__SERVER__TRUSTED_PROXIES", "[\"127.0.0.1\"]")
        .env("NOROSHI__SERVER__UNSUBSCRIBE_PER_MINUTE", "2")
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    certificates(p, &openssl);
    std::fs::create_dir_all(p.join("webroot")).unwrap();
    let (tls_port, http_port) = (free_port(), free_port());
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/noroshi.conf"),
    )
    .unwrap();
    let site = swapped(
        &shipped,
        &[
            (
                "server 127.0.0.1:8080;",
                format!("server {};", d.base.trim_start_matches("http://")),
            ),
            ("listen 80;", format!("listen 127.0.0.1:{http_port};")),
            ("listen [::]:80;", String::new()),
            (
                "listen 443 ssl http2;",
                format!("listen 127.0.0.1:{tls_port} ssl http2;"),
            ),
            ("listen [::]:443 ssl http2;", String::new()),
            (
                "/etc/letsencrypt/live/noroshi.city.example.jp/fullchain.pem",
                p.join("cert.pem").display().to_string(),
            ),
            (
                "/etc/letsencrypt/live/noroshi.city.example.jp/privkey.pem",
                p.join("key.pem").display().to_string(),
            ),
            (
                "/var/www/letsencrypt",
                p.join("webroot").display().to_string(),
            ),
        ],
    );
    std::fs::write(p.join("noroshi.conf"), site).unwrap();
    // The surrounding nginx.conf a distribution provides, reduced to one process.
    let temp = |name: &str| format!("{name}_temp_path {};", p.join(name).display());
    std::fs::write(
        p.join("nginx.conf"),
        format!(
            "daemon off;\nmaster_process off;\npid {pid};\nerror_log {log} warn;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n access_log off;\n {a} {b} {c} {e} {f}\n include {site};\n}}\n",
            pid = p.join("nginx.pid").display(),
            log = p.join("error.log").display(),
            a = temp("client_body"),
            b = temp("proxy"),
            c = temp("fastcgi"),
            e = temp("uwsgi"),
            f = temp("scgi"),
            site = p.join("noroshi.conf").display(),
        ),
    )
    .unwrap();
    let _nginx = Nginx(
        Command::new(&nginx)
            .arg("-p")
            .arg(p)
            .arg("-c")
            .arg(p.join("nginx.conf"))
            .arg("-e")
            .arg(p.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", tls_port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "nginx did not start: {}",
            std::fs::read_to_string(p.join("error.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ca = reqwest::Certificate::from_pem(&std::fs::read(p.join("ca.pem")).unwrap()).unwrap();
    let resident = |from: &str| {
        reqwest::Client::builder()
            .add_root_certificate(ca.clone())
            .resolve(HOST, ([127, 0, 0, 1], tls_port).into())
            .local_address(from.parse::<std::net::IpAddr>().unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    };
    let url = |path: &str| format!("https://{HOST}:{tls_port}{path}");
    let a = resident("127.0.0.2");

    // TLS ends at nginx; the daemon's headers come through (HSTS: the public URL is HTTPS).
    let r = a.get(url("/site/index.html")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().contains_key("strict-transport-security"));
    assert!(r.headers().contains_key("content-security-policy"));
    // The API is not reachable through the proxy, whatever the token.
    let r = a
        .get(url("/api/v1/channels"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        a.get(url("/metrics")).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    // Each resident is counted by the address nginx forwards: 127.0.0.2 is throttled, and
    // naming another address itself does not help; 127.0.0.3 is still served.
    let unsubscribe = |c: &reqwest::Client, forged: Option<&str>| {
        let mut r = c.post(url("/unsubscribe?t=unknown"));
        if let Some(f) = forged {
            r = r.header("x-forwarded-for", f);
        }
        r.send()
    };
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(unsubscribe(&a, None).await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [404, 404, 429]);
    let forged = unsubscribe(&a, Some("203.0.113.1")).await.unwrap();
    assert_eq!(forged.status(), StatusCode::TOO_MANY_REQUESTS);
    let b = resident("127.0.0.3");
    assert_eq!(
        unsubscribe(&b, None).await.unwrap().status(),
        StatusCode::NOT_FOUND,
        "another resident behind the same proxy is served"
    );
    // Plain HTTP is redirected to HTTPS.
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{http_port}/site/"))
        .header("host", HOST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.headers()["location"], format!("https://{HOST}/site/"));
    // The API is on the admin address, for the city's network.
    let r = d
        .http
        .get(format!("{}/api/v1/channels", d.admin_base()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
on_both!(nginx_in_front_ends_tls_and_names_each_resident);

//! Audit trail API end to end: real `nxaudit serve` processes — a Portal and
//! Engines — on loopback ports with certificates generated here, called
//! with a Rust client (reqwest over rustls, trusting only the test CA) and
//! with curl; tokens minted here (right scope, wrong scope, expired, wrong
//! key, `alg: none`); time windows checked against a brute-force filter of
//! a generated multi-file log set (plain, zstd, gzip, active).
//!
//! The helpers are `pub(crate)` so `query.rs` can compare the CLI with the
//! API on the same data (the log sets themselves are in `logsets.rs`).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use nxaudit::record;
use serde_json::{json, Value};

use super::logsets::{brute, same, standard_logset, t, write_logset_regular, Rng};

/// The scope the API requires.
pub(crate) const SCOPE: &str = "service:audit-trail";

/// Path of the CLI binary under test.
pub(crate) fn cli() -> &'static str {
    env!("CARGO_BIN_EXE_nxaudit")
}

/// Waits for a predicate, polling with back-off; panics after `timeout`.
pub(crate) fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

// ----------------------------------------------------------- certificates

/// A test CA issuing server certificates for 127.0.0.1/localhost.
pub(crate) struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    pub(crate) fn new() -> Ca {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "nxaudit test CA");
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    pub(crate) fn pem(&self) -> String {
        self.cert.pem()
    }

    /// (certificate PEM, key PEM) for loopback.
    pub(crate) fn issue(&self) -> (String, String) {
        let p =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A self-signed loopback certificate, as an appliance ships.
pub(crate) fn self_signed() -> (String, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    (ck.cert.pem(), ck.key_pair.serialize_pem())
}

// ----------------------------------------------------------------- tokens

/// An ES256 signing key and its public key PEM.
pub(crate) struct Signer {
    key: EncodingKey,
    pub(crate) public_pem: String,
}

impl Signer {
    pub(crate) fn new() -> Signer {
        let kp = rcgen::KeyPair::generate().unwrap();
        Signer {
            key: EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
            public_pem: kp.public_key_pem(),
        }
    }

    pub(crate) fn mint(&self, claims: Value) -> String {
        encode(&Header::new(Algorithm::ES256), &claims, &self.key).unwrap()
    }

    /// A token from raw header and claims JSON, signed with ES256 as
    /// written (for claims and headers `mint` cannot express).
    pub(crate) fn mint_raw(&self, header: &str, claims: &str) -> String {
        let signing = format!(
            "{}.{}",
            b64url(header.as_bytes()),
            b64url(claims.as_bytes())
        );
        let sig =
            jsonwebtoken::crypto::sign(signing.as_bytes(), &self.key, Algorithm::ES256).unwrap();
        format!("{signing}.{sig}")
    }

    /// A valid token with the scope.
    pub(crate) fn good(&self) -> String {
        self.mint(json!({"sub": "tester", "exp": now() + 600, "scope": format!("openid {SCOPE}")}))
    }
}

pub(crate) fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn b64url(b: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..=c.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// An unsigned token (`alg: none`) with otherwise perfect claims.
pub(crate) fn alg_none_token() -> String {
    let claims = json!({"exp": now() + 600, "scope": SCOPE});
    format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(claims.to_string().as_bytes())
    )
}

// ---------------------------------------------------------------- servers

/// One `nxaudit serve` process in its own directory.
pub(crate) struct Server {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub(crate) addr: String,
    /// Its directory (config, certificates, `log/`).
    pub(crate) base: PathBuf,
    /// Its config file.
    pub(crate) config: PathBuf,
    stderr: PathBuf,
}

/// What a server is started with.
pub(crate) struct ServerSpec<'a> {
    pub(crate) role: &'a str,
    pub(crate) hostname: &'a str,
    /// `(name, url, host)` entries of `[api] engines`.
    pub(crate) engines: Vec<(String, String, Option<String>)>,
    pub(crate) cert: (String, String),
    pub(crate) jwt_public_pem: &'a str,
    /// Content of the `.env` file, if any.
    pub(crate) env: Option<&'a str>,
    pub(crate) engine_timeout: &'a str,
    pub(crate) extra_args: Vec<String>,
}

impl<'a> ServerSpec<'a> {
    /// A Portal named `portal` without Engines, `.env` or extra arguments,
    /// with a 2 s engine timeout; a test changes what it needs with
    /// `ServerSpec { engines, ..ServerSpec::portal(cert, pem) }`.
    pub(crate) fn portal(cert: (String, String), jwt_public_pem: &'a str) -> ServerSpec<'a> {
        ServerSpec {
            role: "portal",
            hostname: "portal",
            engines: Vec::new(),
            cert,
            jwt_public_pem,
            env: None,
            engine_timeout: "2s",
            extra_args: Vec::new(),
        }
    }
}

/// A Portal in its own temp dir serving the standard log set generated
/// from `seed`, with the CA and the token signer to talk to it.
pub(crate) struct LogPortal {
    pub(crate) server: Server,
    pub(crate) lines: Vec<String>,
    pub(crate) ca: Ca,
    pub(crate) signer: Signer,
    // Last, so the server stops before its directory goes.
    pub(crate) dir: tempfile::TempDir,
}

impl LogPortal {
    /// Without Engines.
    pub(crate) fn start(seed: u64) -> LogPortal {
        LogPortal::with_engines(seed, Vec::new())
    }

    /// With `engines` as `[api] engines` (see [`ServerSpec::engines`]).
    pub(crate) fn with_engines(
        seed: u64,
        engines: Vec<(String, String, Option<String>)>,
    ) -> LogPortal {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("portal");
        let lines = standard_logset(&base.join("log"), "portal", seed);
        LogPortal::in_dir(dir, lines, engines, "")
    }

    /// Serving the log set already written under `dir/portal/log`, with
    /// `api_extra` appended to its `[api]` section.
    pub(crate) fn in_dir(
        dir: tempfile::TempDir,
        lines: Vec<String>,
        engines: Vec<(String, String, Option<String>)>,
        api_extra: &str,
    ) -> LogPortal {
        let ca = Ca::new();
        let signer = Signer::new();
        let base = dir.path().join("portal");
        let server = Server::start_with(
            &base,
            ServerSpec {
                engines,
                ..ServerSpec::portal(ca.issue(), &signer.public_pem)
            },
            api_extra,
        );
        LogPortal {
            server,
            lines,
            ca,
            signer,
            dir,
        }
    }

    /// A client trusting the test CA.
    pub(crate) fn client(&self) -> Client {
        Client::new(&self.ca.pem())
    }
}

impl Server {
    /// Starts a server whose log directory is `base/log` (fill it first).
    pub(crate) fn start(base: &Path, spec: ServerSpec<'_>) -> Server {
        Server::start_with(base, spec, "")
    }

    /// Like [`Server::start`], with `api_extra` (TOML lines) appended to
    /// the `[api]` section.
    pub(crate) fn start_with(base: &Path, spec: ServerSpec<'_>, api_extra: &str) -> Server {
        std::fs::create_dir_all(base.join("log")).unwrap();
        std::fs::write(base.join("cert.pem"), &spec.cert.0).unwrap();
        std::fs::write(base.join("key.pem"), &spec.cert.1).unwrap();
        std::fs::write(base.join("jwt.pem"), spec.jwt_public_pem).unwrap();
        if let Some(env) = spec.env {
            std::fs::write(base.join(".env"), env).unwrap();
        }
        let engines: Vec<String> = spec
            .engines
            .iter()
            .map(|(n, u, h)| match h {
                Some(h) => format!("{{ name = {n:?}, url = {u:?}, host = {h:?} }}"),
                None => format!("{{ name = {n:?}, url = {u:?} }}"),
            })
            .collect();
        let b = base.display();
        let config = format!(
            r#"socket = "{b}/audit.sock"
syslog_socket = "{b}/syslog.sock"
log_dir = "{b}/log"
state_dir = "{b}/state"
hostname = "{host}"

[api]
listen = "127.0.0.1:0"
role = "{role}"
tls_cert = "{b}/cert.pem"
tls_key = "{b}/key.pem"
jwt_key_file = "{b}/jwt.pem"
jwt_algorithms = ["ES256"]
env_file = "{b}/.env"
engine_timeout = "{timeout}"
request_timeout = "60s"
engines = [{engines}]
{api_extra}
"#,
            host = spec.hostname,
            role = spec.role,
            timeout = spec.engine_timeout,
            engines = engines.join(", "),
        );
        let config_path = base.join("nxauditd.toml");
        std::fs::write(&config_path, config).unwrap();
        let stderr = base.join("serve.stderr");
        let mut child = Command::new(cli())
            .arg("--config")
            .arg(&config_path)
            .arg("serve")
            .arg("--spool-dir")
            .arg(base)
            .args(&spec.extra_args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            // Keep draining so the server never blocks on stdout.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "nxaudit serve did not start; stderr:\n{}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
        };
        let addr = line
            .split("https://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Server {
            child,
            addr,
            base: base.to_path_buf(),
            config: config_path,
            stderr,
        }
    }

    /// Process id of `nxaudit serve`.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `https://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Stops with SIGTERM and returns whether it exited 0 in time.
    pub(crate) fn stop(&mut self) -> bool {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let mut status = None;
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        status.is_some_and(|s| s.success())
    }

    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------- clients

/// A response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// The Rust client: reqwest over rustls trusting only the test CA.
pub(crate) struct Client {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl Client {
    pub(crate) fn new(ca_pem: &str) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .no_proxy()
            .build()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Client { rt, http }
    }

    pub(crate) fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        self.rt.block_on(async {
            let mut req = self.http.request(method, url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.body(b.to_string());
            }
            let resp = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"));
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = resp.bytes().await.unwrap().to_vec();
            Reply {
                status,
                content_type,
                body,
            }
        })
    }

    /// GET whose body may fail: `Err` when the transfer breaks.
    pub(crate) fn try_get(&self, url: &str, token: &str) -> Result<Reply, String> {
        self.rt.block_on(async {
            let resp = self
                .http
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let body = resp.bytes().await.map_err(|e| format!("body: {e}"))?;
            Ok(Reply {
                status,
                content_type: String::new(),
                body: body.to_vec(),
            })
        })
    }

    pub(crate) fn get(&self, url: &str, token: Option<&str>) -> Reply {
        self.request(reqwest::Method::GET, url, token, None)
    }
}

/// GET with curl (`--cacert`), returning status and body.
pub(crate) fn curl(url: &str, token: &str, ca_file: &Path) -> (u16, Vec<u8>) {
    let out_dir = tempfile::tempdir().unwrap();
    let body_path = out_dir.path().join("body");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "--cacert"])
        .arg(ca_file)
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .arg("-o")
        .arg(&body_path)
        .args(["-w", "%{http_code}"])
        .arg(url)
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (status, std::fs::read(body_path).unwrap_or_default())
}

pub(crate) const PORTAL: &str = "/audit-trail/api/v1/portal/type/auditlog";
pub(crate) const ENGINES: &str = "/audit-trail/api/v1/engines/type/auditlog";

pub(crate) fn engine_path(name: &str) -> String {
    format!("/audit-trail/api/v1/engine/{name}/type/auditlog")
}

/// A Portal with two Engines, all with certificates of one test CA except
/// where the test says otherwise.
pub(crate) struct Platform {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) ca: Ca,
    pub(crate) ca_file: PathBuf,
    pub(crate) signer: Signer,
    pub(crate) portal: Server,
    pub(crate) e1: Server,
    pub(crate) e2: Server,
    pub(crate) portal_lines: Vec<String>,
    pub(crate) e1_lines: Vec<String>,
    pub(crate) e2_lines: Vec<String>,
}

/// Starts an Engine server with its own log set.
pub(crate) fn start_engine(
    base: &Path,
    name: &str,
    by_hostname: bool,
    cert: (String, String),
    signer: &Signer,
    seed: u64,
) -> (Server, Vec<String>) {
    let lines = standard_logset(&base.join("log"), name, seed);
    let engines = if by_hostname {
        Vec::new()
    } else {
        vec![(name.to_string(), "https://itself.invalid".to_string(), None)]
    };
    let server = Server::start(
        base,
        ServerSpec {
            role: "engine",
            hostname: if by_hostname { name } else { "engine-host" },
            engines,
            cert,
            jwt_public_pem: &signer.public_pem,
            env: None,
            engine_timeout: "5s",
            extra_args: Vec::new(),
        },
    );
    (server, lines)
}

/// `Engine-01` in `dir/e1`, named by its `[api] engines`, with a
/// self-signed certificate.
pub(crate) fn self_signed_engine_01(
    dir: &Path,
    signer: &Signer,
    seed: u64,
) -> (Server, Vec<String>) {
    start_engine(
        &dir.join("e1"),
        "Engine-01",
        false,
        self_signed(),
        signer,
        seed,
    )
}

impl Platform {
    /// Engines with self-signed certificates, the Portal accepting them
    /// through `nginxSelfSignedCertificate=true`.
    pub(crate) fn start() -> Platform {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let signer = Signer::new();
        // Engine-01 knows its name from [api] engines, Engine-02 from hostname.
        let (e1, e1_lines) = self_signed_engine_01(dir.path(), &signer, 11);
        let (e2, e2_lines) = start_engine(
            &dir.path().join("e2"),
            "Engine-02",
            true,
            self_signed(),
            &signer,
            22,
        );
        let pbase = dir.path().join("portal");
        let portal_lines = standard_logset(&pbase.join("log"), "portal", 33);
        let portal = Server::start(
            &pbase,
            ServerSpec {
                engines: vec![
                    ("Engine-01".into(), e1.url(), None),
                    ("Engine-02".into(), e2.url(), Some("engine02.test".into())),
                ],
                env: Some("# appliance defaults\nnginxSelfSignedCertificate=true\n"),
                engine_timeout: "5s",
                ..ServerSpec::portal(ca.issue(), &signer.public_pem)
            },
        );
        Platform {
            dir,
            ca,
            ca_file,
            signer,
            portal,
            e1,
            e2,
            portal_lines,
            e1_lines,
            e2_lines,
        }
    }
}

fn all(lines: &[String]) -> String {
    brute(lines, None, None)
}

// ------------------------------------------------------------------ tests

#[test]
fn portal_engine_and_all_engines_over_https() {
    let p = Platform::start();
    let c = Client::new(&p.ca.pem());
    let tok = p.signer.good();
    let portal = p.portal.url();

    // The Portal's whole log, as on disk, rotated and compressed included.
    let r = c.get(&format!("{portal}{PORTAL}"), Some(&tok));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.content_type.starts_with("text/plain"),
        "{}",
        r.content_type
    );
    same(&r.text(), &all(&p.portal_lines), "whole Portal log");

    // One Engine, by configured name and by host name; a window.
    let q = "before_date=2026-03-04T12:00:00&elapsed_hours=30";
    let (since, until) = (
        Some(t("2026-03-03T06:00:00Z")),
        Some(t("2026-03-04T12:00:00Z")),
    );
    let r = c.get(
        &format!("{portal}{}?{q}", engine_path("Engine-01")),
        Some(&tok),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let expect_e1 = brute(&p.e1_lines, since, until);
    assert!(!expect_e1.is_empty());
    same(&r.text(), &expect_e1, "Engine-01 window");
    let r = c.get(
        &format!("{portal}{}?{q}", engine_path("engine02.test")),
        Some(&tok),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let expect_e2 = brute(&p.e2_lines, since, until);
    same(&r.text(), &expect_e2, "Engine-02 by host name");

    // All Engines: concatenated in configured order.
    let r = c.get(&format!("{portal}{ENGINES}?{q}"), Some(&tok));
    assert_eq!(r.status, 200, "{}", r.text());
    same(
        &r.text(),
        &format!("{expect_e1}{expect_e2}"),
        "all Engines window",
    );
    let r = c.get(&format!("{portal}{ENGINES}"), Some(&tok));
    same(
        &r.text(),
        &format!("{}{}", all(&p.e1_lines), all(&p.e2_lines)),
        "all Engines, whole logs",
    );

    // curl agrees with the Rust client.
    let (status, body) = curl(&format!("{portal}{ENGINES}?{q}"), &tok, &p.ca_file);
    assert_eq!(status, 200);
    same(
        &String::from_utf8(body).unwrap(),
        &format!("{expect_e1}{expect_e2}"),
        "curl, all Engines",
    );
    let (status, body) = curl(
        &format!("{portal}{PORTAL}?before_date=2026-03-02"),
        &tok,
        &p.ca_file,
    );
    assert_eq!(status, 200);
    same(
        &String::from_utf8(body).unwrap(),
        &brute(&p.portal_lines, None, Some(t("2026-03-02T00:00:00Z"))),
        "curl, Portal before a date",
    );

    // Unknown Engine: the documented error.
    let r = c.get(&format!("{portal}{}", engine_path("Engine-09")), Some(&tok));
    assert_eq!(r.status, 500);
    assert!(r.content_type.starts_with("application/json"));
    assert_eq!(
        r.json(),
        json!([{"error": "Engine error", "engine": "Engine-09", "cause": "Unknown Engine name"}])
    );
    // Names are looked up, never joined into paths.
    let r = c.get(
        &format!("{portal}{}", engine_path("..%2F..%2Fetc%2Fpasswd")),
        Some(&tok),
    );
    assert_eq!(r.status, 500);
    assert_eq!(r.json()[0]["cause"], "Unknown Engine name");
}

#[test]
fn engine_serves_itself_and_refuses_other_names() {
    // A client that accepts the Engine's self-signed certificate, as the
    // Portal does with nginxSelfSignedCertificate=true: curl -k.
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::new();
    let (e1, lines) = self_signed_engine_01(dir.path(), &signer, 5);
    let tok = signer.good();
    let get = |path: &str| {
        let out = Command::new("curl")
            .args(["-sS", "-k", "--max-time", "30", "-H"])
            .arg(format!("Authorization: Bearer {tok}"))
            .args(["-w", "\n%{http_code}"])
            .arg(format!("{}{path}", e1.url()))
            .output()
            .unwrap();
        let s = String::from_utf8(out.stdout).unwrap();
        let (body, code) = s.rsplit_once('\n').unwrap();
        (code.parse::<u16>().unwrap(), body.to_string())
    };
    let (code, body) = get(&engine_path("Engine-01"));
    assert_eq!(code, 200);
    same(&body, &all(&lines), "Engine-01 on itself");
    let (code, body) = get(&engine_path("engine-01"));
    assert_eq!(code, 200, "names compare without case: {body}");
    let (code, body) = get(&engine_path("Engine-02"));
    assert_eq!(code, 500);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!([{"error": "Engine error", "engine": "Engine-02", "cause": "Unknown Engine name"}])
    );
    let (code, body) = get(PORTAL);
    assert_eq!(code, 404, "{body}");
}

#[test]
fn tokens_scopes_and_request_limits() {
    let p = LogPortal::with_engines(
        7,
        vec![("Engine-01".into(), "https://127.0.0.1:9".into(), None)],
    );
    let (portal, signer) = (&p.server, &p.signer);
    let c = p.client();
    let url = format!("{}{PORTAL}", portal.url());
    same(
        &c.get(&url, Some(&signer.good())).text(),
        &all(&p.lines),
        "whole Portal log",
    );

    let other = Signer::new();
    let cases: Vec<(&str, Option<String>, u16)> = vec![
        ("no token", None, 401),
        (
            "wrong scope",
            Some(signer.mint(json!({"exp": now() + 600, "scope": "service:other"}))),
            403,
        ),
        (
            "no scope",
            Some(signer.mint(json!({"exp": now() + 600}))),
            403,
        ),
        (
            "expired",
            Some(signer.mint(json!({"exp": now() - 3600, "scope": SCOPE}))),
            401,
        ),
        (
            "not yet valid",
            Some(signer.mint(json!({"exp": now() + 7200, "nbf": now() + 3600, "scope": SCOPE}))),
            401,
        ),
        ("no exp", Some(signer.mint(json!({"scope": SCOPE}))), 401),
        ("wrong key", Some(other.good()), 401),
        ("alg none", Some(alg_none_token()), 401),
        ("garbage", Some("not.a.jwt".into()), 401),
    ];
    for path in [
        PORTAL.to_string(),
        ENGINES.to_string(),
        engine_path("Engine-01"),
    ] {
        for (what, tok, status) in &cases {
            let r = c.get(&format!("{}{path}", portal.url()), tok.as_deref());
            assert_eq!(r.status, *status, "{what} on {path}: {}", r.text());
            let v = r.json();
            let arr = v.as_array().unwrap();
            assert_eq!(arr.len(), 1, "{what}");
            assert!(arr[0]["error"].is_string() && arr[0]["cause"].is_string());
            assert!(!r.text().contains("seq="), "{what}: no data on errors");
        }
    }

    let tok = signer.good();
    // Bad parameters are 400 and name the problem.
    for q in [
        "before_date=yesterday",
        "elapsed_hours=0",
        "elapsed_hours=-2",
        "elapsed_hours=abc",
        "foo=1",
        "elapsed_hours=1&elapsed_hours=2",
    ] {
        let r = c.get(&format!("{url}?{q}"), Some(&tok));
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(r.json()[0]["error"], "Bad parameter", "{q}");
    }
    // No request body, GET only, unknown routes.
    let r = c.request(reqwest::Method::GET, &url, Some(&tok), Some("x"));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()[0]["cause"], "Request body not accepted");
    let r = c.request(reqwest::Method::POST, &url, Some(&tok), None);
    assert_eq!(r.status, 405);
    let r = c.get(
        &format!("{}/audit-trail/api/v1/../../etc/passwd", portal.url()),
        Some(&tok),
    );
    assert_eq!(r.status, 404);
    // Errors never carry paths or internals.
    let server_paths = portal.base.display().to_string();
    for q in ["before_date=yesterday", "foo=1"] {
        assert!(!c
            .get(&format!("{url}?{q}"), Some(&tok))
            .text()
            .contains(&server_paths));
    }
    // A connection that never sends its request head is closed by the
    // header timeout and does not hold the server.
    let mut idle = std::net::TcpStream::connect(&portal.addr).unwrap();
    idle.write_all(b"\x16\x03\x01").unwrap();
    assert_eq!(c.get(&url, Some(&tok)).status, 200);
}

#[test]
fn failing_engines_give_an_error_array_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let signer = Signer::new();
    let (e1, _e1_lines) = self_signed_engine_01(dir.path(), &signer, 3);
    // Down: a port nobody listens on.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // Slow: accepts connections (kernel backlog) but never answers.
    let slow = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let slow_addr = slow.local_addr().unwrap();
    let portal = Server::start(
        &dir.path().join("portal"),
        ServerSpec {
            engines: vec![
                ("Engine-01".into(), e1.url(), None),
                ("Engine-Down".into(), format!("https://{down}"), None),
                ("Engine-Slow".into(), format!("https://{slow_addr}"), None),
                // Configured on the Portal, unknown to the Engine behind the URL.
                ("Engine-Alias".into(), e1.url(), None),
            ],
            env: Some("nginxSelfSignedCertificate=true"),
            // Long enough that the healthy Engine answers on a busy machine;
            // the Slow one never does.
            engine_timeout: "5s",
            ..ServerSpec::portal(ca.issue(), &signer.public_pem)
        },
    );
    let c = Client::new(&ca.pem());
    let tok = signer.good();

    // The request returns although one Engine never answers: the answer
    // itself names the timeout ("no answer within …"), no clock is read.
    let r = c.get(&format!("{}{ENGINES}", portal.url()), Some(&tok));
    assert_eq!(r.status, 500, "{}", r.text());
    let v = r.json();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 3, "{v}");
    assert_eq!(arr[0]["engine"], "Engine-Down");
    assert_eq!(arr[0]["cause"], "Unreachable Engine");
    assert_eq!(arr[1]["engine"], "Engine-Slow");
    assert_eq!(arr[1]["cause"], "Unreachable Engine");
    assert_eq!(arr[2]["engine"], "Engine-Alias");
    assert_eq!(arr[2]["cause"], "Engine answered with an error");
    assert!(
        arr[2]["detail"]
            .as_str()
            .unwrap()
            .contains("Unknown Engine name"),
        "{v}"
    );
    for e in arr {
        assert_eq!(e["error"], "Engine error");
    }
    assert!(!r.text().contains("seq="), "no partial body");

    let r = c.get(
        &format!("{}{}", portal.url(), engine_path("Engine-Slow")),
        Some(&tok),
    );
    assert_eq!(r.status, 500);
    assert_eq!(
        r.json(),
        json!([{"error": "Engine error", "engine": "Engine-Slow", "cause": "Unreachable Engine", "detail": "no answer within 5 s"}])
    );
    let r = c.get(
        &format!("{}{}", portal.url(), engine_path("Engine-Down")),
        Some(&tok),
    );
    assert_eq!(r.status, 500);
    assert_eq!(r.json()[0]["cause"], "Unreachable Engine");
    // The healthy Engine still answers through the Portal.
    let r = c.get(
        &format!("{}{}", portal.url(), engine_path("Engine-01")),
        Some(&tok),
    );
    assert_eq!(r.status, 200);
    drop(slow);
}

/// An Engine that answers 200 and then breaks its body: a TLS server that
/// promises 1 MB and closes after a few bytes. Returns its address.
fn breaking_engine() -> std::net::SocketAddr {
    use std::io::Read;
    let (cert, key) = self_signed();
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut key.as_bytes())
        .unwrap()
        .unwrap();
    let cfg = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            let cfg = cfg.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(cfg).unwrap();
                let mut s = rustls::StreamOwned::new(conn, tcp);
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1000000\r\n\r\n2026-03-01T00:00:00.000000Z partial",
                );
                let _ = s.flush();
                // Dropped: the connection closes 999 965 bytes short.
            });
        }
    });
    addr
}

#[test]
fn an_engine_failing_mid_body_is_never_a_success() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let signer = Signer::new();
    let (e1, _) = self_signed_engine_01(dir.path(), &signer, 8);
    let broken = breaking_engine();
    let portal = Server::start(
        &dir.path().join("portal"),
        ServerSpec {
            engines: vec![
                ("Engine-01".into(), e1.url(), None),
                ("Engine-Broken".into(), format!("https://{broken}"), None),
            ],
            env: Some("nginxSelfSignedCertificate=true"),
            ..ServerSpec::portal(ca.issue(), &signer.public_pem)
        },
    );
    let c = Client::new(&ca.pem());
    let tok = signer.good();
    // All Engines: spooled first, so the failure is a 500, not a 200.
    let r = c.get(&format!("{}{ENGINES}", portal.url()), Some(&tok));
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(
        r.json(),
        json!([{"error": "Engine error", "engine": "Engine-Broken", "cause": "Unreachable Engine", "detail": "connection lost while receiving the log"}])
    );
    // One Engine: relayed as it comes, so the break aborts the transfer
    // and the client cannot take it for a complete answer.
    match c.try_get(
        &format!("{}{}", portal.url(), engine_path("Engine-Broken")),
        &tok,
    ) {
        Err(e) => assert!(e.starts_with("body"), "{e}"),
        Ok(r) => panic!(
            "a broken relay looked complete: {} {:?}",
            r.status,
            r.text()
        ),
    }
}

#[test]
fn engine_certificates_are_verified_unless_self_signed_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let signer = Signer::new();
    // One Engine with a self-signed certificate, one with a CA-issued one.
    let (e_self, _) = self_signed_engine_01(dir.path(), &signer, 1);
    let (e_ca, e_ca_lines) = start_engine(
        &dir.path().join("e2"),
        "Engine-02",
        false,
        ca.issue(),
        &signer,
        2,
    );
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let portal = Server::start(
        &dir.path().join("portal"),
        ServerSpec {
            engines: vec![
                ("Engine-01".into(), e_self.url(), None),
                ("Engine-02".into(), e_ca.url(), None),
            ],
            // The documented way to require real certificates.
            env: Some("nginxSelfSignedCertificate=true\nnginxSelfSignedCertificate=false\n"),
            engine_timeout: "5s",
            extra_args: vec!["--engine-ca".into(), ca_file.display().to_string()],
            ..ServerSpec::portal(ca.issue(), &signer.public_pem)
        },
    );
    let c = Client::new(&ca.pem());
    let tok = signer.good();
    let r = c.get(
        &format!("{}{}", portal.url(), engine_path("Engine-01")),
        Some(&tok),
    );
    assert_eq!(r.status, 500);
    assert_eq!(r.json()[0]["cause"], "Unreachable Engine");
    assert_eq!(
        r.json()[0]["detail"],
        "TLS certificate of the Engine not trusted"
    );
    let r = c.get(
        &format!("{}{}", portal.url(), engine_path("Engine-02")),
        Some(&tok),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    same(&r.text(), &all(&e_ca_lines), "verified Engine");
}

/// `before_date` in the forms the seed documents, `elapsed_hours` whole and
/// fractional: the API returns exactly the brute-force selection.
#[test]
fn random_windows_match_brute_force() {
    let p = LogPortal::start(99);
    let (portal, lines) = (&p.server, &p.lines);
    let c = p.client();
    let tok = p.signer.good();
    let first = record::line_timestamp(&lines[0]).unwrap();
    let last = record::line_timestamp(lines.last().unwrap()).unwrap();
    let span = (last - first).num_seconds();
    let mut rng = Rng::new(2026);
    for i in 0..60 {
        // A bound sometimes exactly on a record's time, sometimes between.
        let before = if i % 4 == 0 {
            record::line_timestamp(&lines[rng.below(lines.len() as u64) as usize]).unwrap()
        } else {
            first + chrono::Duration::seconds(rng.below(span as u64 + 7200) as i64 - 3600)
        };
        let (before_param, before_t) = match i % 5 {
            0 => {
                let d = before.date_naive();
                (
                    d.format("%Y-%m-%d").to_string(),
                    d.and_hms_opt(0, 0, 0).unwrap().and_utc(),
                )
            }
            1 => (
                before.format("%Y-%m-%dT%H:%M:%S").to_string(),
                before.with_nanosecond0(),
            ),
            2 => (before.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(), before),
            3 => {
                // The same instant written in +02:00.
                let local = before + chrono::Duration::hours(2);
                (
                    format!("{}%2B02:00", local.format("%Y-%m-%dT%H:%M:%S%.3f")),
                    before.with_millis(),
                )
            }
            _ => (
                before.format("%Y-%m-%dT%H:%M:%S").to_string(),
                before.with_nanosecond0(),
            ),
        };
        let hours: Option<(String, chrono::Duration)> = match rng.below(4) {
            0 => None,
            1 => {
                let h = 1 + rng.below(48);
                Some((h.to_string(), chrono::Duration::hours(h as i64)))
            }
            _ => {
                let quarter = 1 + rng.below(200);
                Some((
                    format!("{}.{:02}", quarter / 4, (quarter % 4) * 25),
                    chrono::Duration::minutes(quarter as i64 * 15),
                ))
            }
        };
        let mut q = format!("before_date={before_param}");
        let since = hours.as_ref().map(|(s, d)| {
            q.push_str(&format!("&elapsed_hours={s}"));
            before_t - *d
        });
        let r = c.get(&format!("{}{PORTAL}?{q}", portal.url()), Some(&tok));
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        same(
            &r.text(),
            &brute(lines, since, Some(before_t)),
            &format!("window {q}"),
        );
    }
}

/// `elapsed_hours` alone counts back from now.
#[test]
fn elapsed_hours_counts_back_from_now() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let signer = Signer::new();
    let base = dir.path().join("portal");
    // One record a minute over the last five hours, on whole minutes
    // relative to `anchor`: a 2.99-hour window ends 24 s away from the
    // nearest record, so the request may take that long without changing
    // the answer.
    let anchor = Utc::now();
    let start = anchor - chrono::Duration::minutes(300);
    let lines = write_logset_regular(&base.join("log"), start, 300);
    let portal = Server::start(&base, ServerSpec::portal(ca.issue(), &signer.public_pem));
    let c = Client::new(&ca.pem());
    let r = c.get(
        &format!("{}{PORTAL}?elapsed_hours=2.99", portal.url()),
        Some(&signer.good()),
    );
    assert_eq!(r.status, 200);
    let boundary = anchor - chrono::Duration::seconds(10764);
    assert!(
        Utc::now() - anchor < chrono::Duration::seconds(20),
        "test too slow to be exact"
    );
    same(
        &r.text(),
        &brute(&lines, Some(boundary), None),
        "elapsed_hours from now",
    );
    assert_eq!(r.text().lines().count(), 179);
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let signer = Signer::new();
    let mut s = Server::start(
        &dir.path().join("p"),
        ServerSpec::portal(ca.issue(), &signer.public_pem),
    );
    assert!(s.stop(), "exit 0 after SIGTERM; stderr:\n{}", s.stderr());
}

#[test]
fn bad_configuration_fails_at_start_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    std::fs::write(
        base.join("c.toml"),
        format!(
            "log_dir = \"{0}/log\"\n[api]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"{0}/missing.pem\"\ntls_key = \"{0}/missing.key\"\njwt_key_file = \"{0}/missing.jwt\"\n",
            base.display()
        ),
    )
    .unwrap();
    let out = Command::new(cli())
        .arg("--config")
        .arg(base.join("c.toml"))
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("jwt_key_file"), "{err}");
}

trait Trunc {
    fn with_nanosecond0(self) -> Self;
    fn with_millis(self) -> Self;
}

impl Trunc for DateTime<Utc> {
    fn with_nanosecond0(self) -> Self {
        use chrono::Timelike;
        self.with_nanosecond(0).unwrap()
    }
    fn with_millis(self) -> Self {
        use chrono::Timelike;
        let ms = self.nanosecond() / 1_000_000 * 1_000_000;
        self.with_nanosecond(ms).unwrap()
    }
}

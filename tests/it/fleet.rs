//! The fleet copy: appliances' records over RELP with TLS to a central
//! collector that writes one file of record lines per appliance, checked
//! with `nxaudit verify --replica … --against …`.
//!
//! Real parts only: per appliance a daemon and its own `rsyslogd -n`
//! (private config, socket and work directory) with the shipped
//! `30-nxaudit.conf` and `nxaudit-fleet-appliance.conf`; one collector
//! `rsyslogd` with the shipped `nxaudit-fleet-collector.conf` on a private
//! port; certificates (a CA, the collector's, one per appliance) made with
//! the `openssl` command. The drop-ins are the packaged files with their
//! paths, port and names rewritten.

use std::io::BufReader;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nxaudit::record::{self, Chain};

use crate::syslog::{records, rsyslogd_available};
use crate::util::{ev, run, wait_for, TestDaemon};

const T: Duration = Duration::from_secs(60);
const FORWARDED: &str = include_str!("../../packaging/rsyslog/30-nxaudit.conf");
const APPLIANCE: &str = include_str!("../../packaging/rsyslog/nxaudit-fleet-appliance.conf");
const COLLECTOR: &str = include_str!("../../packaging/rsyslog/nxaudit-fleet-collector.conf");

/// Whether rsyslog's RELP modules and openssl are here (fails instead of
/// skipping when skipping is not allowed).
pub(crate) fn fleet_available() -> bool {
    if !rsyslogd_available() {
        return false;
    }
    let relp = ["/usr/lib/x86_64-linux-gnu/rsyslog", "/usr/lib/rsyslog"]
        .iter()
        .any(|d| Path::new(d).join("omrelp.so").exists());
    let openssl = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !(relp && openssl) {
        assert!(
            !crate::util::must_not_skip(),
            "rsyslog-relp (omrelp.so: {relp}) and openssl ({openssl}) are needed"
        );
        eprintln!("SKIP: rsyslog-relp or openssl is not installed");
        return false;
    }
    true
}

/// A test PKI made with the `openssl` command: a CA, the collector's
/// certificate, and one client certificate per appliance.
pub(crate) struct Pki {
    dir: PathBuf,
}

pub(crate) const COLLECTOR_NAME: &str = "collector.fleet.test";

impl Pki {
    pub(crate) fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=nxaudit fleet test CA",
        ]);
        pki.issue("collector", COLLECTOR_NAME);
        pki
    }

    fn openssl(&self, args: &[&str]) {
        let (cmd, out) = run(Command::new("openssl").args(args).current_dir(&self.dir));
        assert!(out.status.success(), "{}", crate::util::explain(&cmd, &out));
    }

    /// Issues `<name>.pem`/`<name>.key` for DNS name `dns`, signed by the CA.
    pub(crate) fn issue(&self, name: &str, dns: &str) {
        std::fs::write(
            self.dir.join(format!("{name}.ext")),
            format!("subjectAltName=DNS:{dns}\nextendedKeyUsage=serverAuth,clientAuth\n"),
        )
        .expect("ext");
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={dns}"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }

    pub(crate) fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}

/// A private `rsyslogd -n` on a config in its own directory.
pub(crate) struct Rsyslog {
    pub(crate) dir: PathBuf,
    child: Option<Child>,
    /// Ready when this holds (its sockets or port are up).
    ready: Box<dyn Fn(&Path) -> bool + Send + Sync>,
}

impl Rsyslog {
    fn new(dir: PathBuf, conf: String, ready: Box<dyn Fn(&Path) -> bool + Send + Sync>) -> Rsyslog {
        std::fs::create_dir_all(dir.join("work")).expect("work dir");
        std::fs::write(dir.join("rsyslogd.conf"), conf).expect("write conf");
        let (cmd, out) = run(Command::new("rsyslogd")
            .arg("-N1")
            .arg("-f")
            .arg(dir.join("rsyslogd.conf")));
        assert!(out.status.success(), "{}", crate::util::explain(&cmd, &out));
        let mut r = Rsyslog {
            dir,
            child: None,
            ready,
        };
        r.spawn();
        r
    }

    pub(crate) fn spawn(&mut self) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("rsyslogd.stderr"))
            .expect("stderr");
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(self.dir.join("rsyslogd.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn rsyslogd");
        let mut c = Some(child);
        let dir = self.dir.clone();
        wait_for("rsyslogd ready", T, || {
            if let Some(Ok(Some(st))) = c.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "rsyslogd exited ({st}):\n{}",
                    std::fs::read_to_string(dir.join("rsyslogd.stderr")).unwrap_or_default()
                );
            }
            dir.join("rsyslogd.pid").exists() && (self.ready)(&dir)
        });
        self.child = c;
    }

    /// SIGTERM (rsyslog saves its disk queues) and wait for the exit.
    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let start = Instant::now();
            while !matches!(c.try_wait(), Ok(Some(_))) {
                if start.elapsed() > T {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = std::fs::remove_file(self.dir.join("rsyslogd.pid"));
        let _ = std::fs::remove_file(self.dir.join("forward.sock"));
    }

    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("rsyslogd.stderr")).unwrap_or_default()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released for rsyslogd).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The collector: imrelp with TLS on a private port, files under `out/`.
pub(crate) fn collector(dir: &Path, pki: &Pki) -> (Rsyslog, u16) {
    let port = free_port();
    let out = dir.join("out");
    let conf = COLLECTOR
        .replace("/etc/nxaudit/fleet/ca.pem", &pki.path("ca.pem"))
        .replace(
            "/etc/nxaudit/fleet/collector.pem",
            &pki.path("collector.pem"),
        )
        .replace(
            "/etc/nxaudit/fleet/collector.key",
            &pki.path("collector.key"),
        )
        .replace("/var/log/nexthink-fleet/", &format!("{}/", out.display()))
        .replace("port=\"2514\"", &format!("port=\"{port}\""))
        .replace("*.appliances.example.net", "*.appliances.fleet.test");
    assert!(
        conf.contains(&format!("port=\"{port}\"")),
        "port not rewritten"
    );
    let main = format!("global(workDirectory=\"{}/work\")\n{conf}", dir.display());
    let r = Rsyslog::new(
        dir.to_path_buf(),
        main,
        Box::new(move |_| TcpStream::connect(("127.0.0.1", port)).is_ok()),
    );
    (r, port)
}

/// An appliance's rsyslogd: nxauditd's forwarded records in on
/// `<dir>/forward.sock`, out over RELP/TLS to the collector's `port`.
pub(crate) fn appliance_rsyslog(dir: &Path, pki: &Pki, name: &str, port: u16) -> Rsyslog {
    pki.issue(name, &format!("{name}.appliances.fleet.test"));
    appliance_rsyslog_with(dir, pki, name, port)
}

/// [`appliance_rsyslog`] with the certificate `<cert>.pem`/`<cert>.key`
/// already in the PKI directory.
fn appliance_rsyslog_with(dir: &Path, pki: &Pki, name: &str, port: u16) -> Rsyslog {
    let forwarded = FORWARDED.replace(
        "/run/nxaudit/rsyslog.sock",
        &dir.join("forward.sock").display().to_string(),
    );
    let fleet = APPLIANCE
        .replace("/etc/nxaudit/fleet/ca.pem", &pki.path("ca.pem"))
        .replace(
            "/etc/nxaudit/fleet/appliance.pem",
            &pki.path(&format!("{name}.pem")),
        )
        .replace(
            "/etc/nxaudit/fleet/appliance.key",
            &pki.path(&format!("{name}.key")),
        )
        .replace("target=\"collector.example.net\"", "target=\"127.0.0.1\"")
        .replace("collector.example.net", COLLECTOR_NAME)
        .replace("port=\"2514\"", &format!("port=\"{port}\""));
    assert!(
        fleet.contains("target=\"127.0.0.1\""),
        "target not rewritten"
    );
    let main = format!(
        "global(workDirectory=\"{}/work\")\nmodule(load=\"imuxsock\" SysSock.Use=\"off\")\n{forwarded}\n{fleet}",
        dir.display()
    );
    Rsyslog::new(
        dir.to_path_buf(),
        main,
        Box::new(|d| d.join("forward.sock").exists()),
    )
}

/// One appliance: its daemon (host name `name`) and its rsyslogd.
pub(crate) struct Appliance {
    pub(crate) name: String,
    pub(crate) rsyslog: Rsyslog,
    pub(crate) daemon: TestDaemon,
}

pub(crate) fn appliance(base: &Path, pki: &Pki, name: &str, port: u16) -> Appliance {
    let rsyslog = appliance_rsyslog(&base.join(format!("{name}-rsyslog")), pki, name, port);
    let daemon = TestDaemon::start_in(
        &base.join(format!("{name}-daemon")),
        &format!(
            "hostname = \"{name}\"\n[forward]\nenabled = true\ntarget = \"{}\"\n",
            rsyslog.dir.join("forward.sock").display()
        ),
    );
    // The forwarder starts at the end of the log: wait until it has looked.
    let pos = daemon.state_dir().join("forward.pos");
    wait_for("forwarder position", T, || pos.exists());
    Appliance {
        name: name.to_string(),
        rsyslog,
        daemon,
    }
}

/// The seqs of a collector file's complete lines (duplicates kept).
pub(crate) fn replica_seqs(path: &Path) -> Vec<u64> {
    let Ok(f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    nxaudit::logset::Lines::new(BufReader::new(f))
        .map_while(Result::ok)
        .filter_map(|l| record::parse_line(&l).ok().map(|r| r.seq))
        .collect()
}

/// The last seq of an appliance's log.
fn last_seq(a: &Appliance) -> u64 {
    records(&a.daemon).last().map(|r| r.seq).expect("records")
}

/// Sends `n` events of appliance `a` in one connection, acknowledged.
fn send_batch(a: &Appliance, tag: &str, n: usize) {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            ev(
                20206,
                &format!("\"user\":\"u{tag}\",\"message\":\"{tag} ev {i} \\\"q\\\" ] é\",\"details\":{{\"k\":\"v]\\\\\"}}"),
            )
        })
        .collect();
    for r in a.daemon.send(&lines) {
        assert!(r.ok, "event refused: {r:?}");
    }
}

/// `nxaudit verify --replica FILE --against DIR --json` with the
/// appliance's config: (exit code, JSON, text).
fn verify_replica(a: &Appliance, replica: &Path, against: &Path) -> (i32, serde_json::Value) {
    let out = a.daemon.cli(&[
        "verify",
        "--replica",
        &replica.display().to_string(),
        "--against",
        &against.display().to_string(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify --json output: {e}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

fn verify_text(a: &Appliance, replica: &Path, against: &Path) -> (i32, String) {
    let out = a.daemon.cli(&[
        "verify",
        "--replica",
        &replica.display().to_string(),
        "--against",
        &against.display().to_string(),
    ]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Three appliances forwarding under load; the collector goes away for
/// 10 s and comes back: every record of every appliance arrives, each copy
/// verifies by itself and against its appliance's log, duplicates counted.
#[test]
fn fleet_copy_survives_collector_outage() {
    if !fleet_available() {
        return;
    }
    let base = tempfile::Builder::new()
        .prefix("nxaudit-fleet-")
        .tempdir()
        .expect("temp dir");
    let pki = Pki::new(&base.path().join("pki"));
    let (mut coll, port) = collector(&base.path().join("collector"), &pki);
    let out = base.path().join("collector/out");
    let apps: Vec<Appliance> = ["app1", "app2", "app3"]
        .iter()
        .map(|n| appliance(base.path(), &pki, n, port))
        .collect();
    let replica = |a: &Appliance| out.join(format!("{}.log", a.name));

    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for a in &apps {
            let stop = &stop;
            s.spawn(move || {
                let mut b = 0;
                while !stop.load(Ordering::Relaxed) || b < 20 {
                    send_batch(a, &format!("{}-{b}", a.name), 40);
                    b += 1;
                    // Paced load, so that it spans the outage.
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        }
        wait_for("records at the collector from every appliance", T, || {
            apps.iter().all(|a| replica_seqs(&replica(a)).len() > 100)
        });
        coll.stop();
        let down = Instant::now();
        // The outage is a deliberate duration.
        std::thread::sleep(Duration::from_secs(10));
        let at_restart: Vec<usize> = apps
            .iter()
            .map(|a| replica_seqs(&replica(a)).len())
            .collect();
        coll.spawn();
        eprintln!("collector down for {:?}", down.elapsed());
        wait_for("records arriving again from every appliance", T, || {
            apps.iter()
                .zip(&at_restart)
                .all(|(a, n)| replica_seqs(&replica(a)).len() > *n + 100)
        });
        stop.store(true, Ordering::Relaxed);
    });

    for a in &apps {
        let last = last_seq(a);
        let r = replica(a);
        wait_for(
            &format!("{} complete at the collector", a.name),
            Duration::from_secs(120),
            || replica_seqs(&r).contains(&last),
        );
        let (code, v) = verify_replica(a, &r, &a.daemon.log_dir());
        let rep = &v["replica"];
        let cmp = &v["against"]["comparison"];
        eprintln!(
            "{}: {} records at the collector (seq {}..{}), {} duplicates, {} out of order; appliance seq {}..{}; {} identical, {} before forwarding began",
            a.name,
            rep["records"],
            rep["first_seq"],
            rep["last_seq"],
            rep["duplicates"],
            rep["out_of_order"],
            cmp["local_first_seq"],
            cmp["local_last_seq"],
            cmp["identical"],
            cmp["before_replica"],
        );
        assert_eq!(
            code,
            0,
            "{} replica does not verify: {v:#}\ncollector:\n{}\nappliance rsyslogd:\n{}",
            a.name,
            coll.stderr(),
            a.rsyslog.stderr()
        );
        assert_eq!(rep["missing"], 0, "{v:#}");
        assert_eq!(cmp["missing_on_replica"]["count"], 0, "{v:#}");
        assert_eq!(cmp["missing_locally"]["count"], 0, "{v:#}");
        assert_eq!(cmp["differing"], 0, "{v:#}");
        assert_eq!(cmp["not_yet_forwarded"], 0, "{v:#}");
        assert_eq!(rep["last_seq"], last, "{v:#}");
        // Everything the appliance wrote after its forwarder began is there.
        assert_eq!(
            cmp["identical"].as_u64().unwrap() + cmp["before_replica"].as_u64().unwrap(),
            records(&a.daemon).len() as u64
        );
    }
}

/// Rewrites record `seq` of a log file and recomputes the chain from there
/// on, as root on the appliance could (no chain key): the set verifies by
/// itself afterwards.
fn rewrite_and_rechain(file: &Path, seq: u64, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).expect("read log");
    let chain = Chain::sha256();
    let mut out = String::new();
    let mut prev_h: Option<String> = None;
    let mut rewriting = false;
    for l in text.lines() {
        let r = record::parse_line(l).expect("record");
        let line = if r.seq == seq || rewriting {
            rewriting = true;
            let body = if r.seq == seq {
                r.body.replacen(from, to, 1)
            } else {
                r.body.clone()
            };
            let h = chain.next(prev_h.as_deref().expect("not the first line"), &body);
            prev_h = Some(h.clone());
            record::seal(record::Format::Text, &body, &h)
        } else {
            prev_h = Some(r.h.clone());
            l.to_string()
        };
        out.push_str(&line);
        out.push('\n');
    }
    std::fs::write(file, out).expect("write log");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

/// A log rewritten on the appliance after its records were forwarded is
/// caught by the collector's copy: an edited record (chain recomputed, so
/// the set verifies by itself), the last lines deleted, and the whole set
/// truncated and the daemon restarted.
#[test]
fn replica_catches_a_rewritten_appliance_log() {
    if !fleet_available() {
        return;
    }
    let base = tempfile::Builder::new()
        .prefix("nxaudit-fleet-")
        .tempdir()
        .expect("temp dir");
    let pki = Pki::new(&base.path().join("pki"));
    let (_coll, port) = collector(&base.path().join("collector"), &pki);
    let mut a = appliance(base.path(), &pki, "tamper1", port);
    let r = base.path().join("collector/out/tamper1.log");
    for b in 0..5 {
        send_batch(&a, &format!("b{b}"), 60);
    }
    let last = last_seq(&a);
    wait_for("all forwarded", T, || replica_seqs(&r).contains(&last));
    let (code, v) = verify_replica(&a, &r, &a.daemon.log_dir());
    assert_eq!(code, 0, "{v:#}");
    let first = v["replica"]["first_seq"].as_u64().expect("first seq");

    // 1. One record edited ("ub2" → "mallory"), the chain recomputed.
    let edited = base.path().join("edited");
    copy_dir(&a.daemon.log_dir(), &edited);
    let target = records(&a.daemon)
        .into_iter()
        .find(|r| r.account == "ub2")
        .expect("a record of batch b2")
        .seq;
    rewrite_and_rechain(&edited.join("audit.log"), target, "|ub2]", "|mallory]");
    nxaudit::verify::verify_dir(&edited, &Chain::sha256(), &())
        .expect("the rewritten set verifies by itself");
    let (code, text) = verify_text(&a, &r, &edited);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!("{} records differ", last - target + 1))
            && text.contains(&format!("seq {target}: ")),
        "the edited record is named:\n{text}"
    );

    // 2. The last 25 lines deleted.
    let cut = base.path().join("cut");
    copy_dir(&a.daemon.log_dir(), &cut);
    let text = std::fs::read_to_string(cut.join("audit.log")).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(
        cut.join("audit.log"),
        lines[..lines.len() - 25].join("\n") + "\n",
    )
    .expect("write");
    nxaudit::verify::verify_dir(&cut, &Chain::sha256(), &())
        .expect("a shortened set verifies by itself");
    let (code, text) = verify_text(&a, &r, &cut);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!(
            "25 records on the replica are missing from {}: seq {}..={}",
            cut.display(),
            last - 24,
            last
        )),
        "the deleted tail is named:\n{text}"
    );

    // 3. The set truncated and the daemon restarted.
    a.daemon.term();
    for f in nxaudit::logset::list(&a.daemon.log_dir()).expect("list") {
        if f.active {
            std::fs::write(&f.path, "").expect("truncate");
        } else {
            std::fs::remove_file(&f.path).expect("remove");
        }
    }
    a.daemon.restart();
    send_batch(&a, "after", 10);
    let (code, v) = verify_replica(&a, &r, &a.daemon.log_dir());
    assert_eq!(code, 1, "{v:#}");
    let cmp = &v["against"]["comparison"];
    let missing = cmp["missing_locally"]["count"].as_u64().unwrap_or(0);
    let differing = cmp["differing"].as_u64().unwrap_or(0);
    assert!(
        missing + differing >= last - first + 1 - 10,
        "every forwarded record is missing or different: {v:#}"
    );
    let (_, text) = verify_text(&a, &r, &a.daemon.log_dir());
    eprintln!("truncated and restarted:\n{text}");
}

/// Follows a collector file, noting when each seq first appears.
struct Arrivals {
    seen: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u64, Instant>>>,
    stop: std::sync::Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Arrivals {
    fn follow(path: PathBuf) -> Arrivals {
        use std::io::Read;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (s2, st2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut file = None;
            let mut pending = Vec::new();
            let mut buf = vec![0u8; 1 << 20];
            while !st2.load(Ordering::Relaxed) {
                if file.is_none() {
                    file = std::fs::File::open(&path).ok();
                }
                let n = file.as_mut().map_or(0, |f| f.read(&mut buf).unwrap_or(0));
                if n == 0 {
                    std::thread::sleep(Duration::from_micros(500));
                    continue;
                }
                let now = Instant::now();
                pending.extend_from_slice(&buf[..n]);
                let mut m = s2.lock().expect("lock");
                while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=i).collect();
                    if let Ok(r) = record::parse_line(String::from_utf8_lossy(&line).trim_end()) {
                        m.entry(r.seq).or_insert(now);
                    }
                }
            }
        });
        Arrivals {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn has(&self, seq: u64) -> bool {
        self.seen.lock().expect("lock").contains_key(&seq)
    }

    fn at(&self, seq: u64) -> Option<Instant> {
        self.seen.lock().expect("lock").get(&seq).copied()
    }
}

impl Drop for Arrivals {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Saturating load: `conns` connections each sending `per_conn` events in
/// pipelined batches of 200. Returns the elapsed time.
fn saturate(d: &TestDaemon, conns: usize, per_conn: usize) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for c in 0..conns {
            s.spawn(move || {
                let mut left = per_conn;
                while left > 0 {
                    let n = left.min(200);
                    let lines: Vec<String> = (0..n)
                        .map(|i| ev(20206, &format!("\"user\":\"bench{c}\",\"message\":\"bench event {i} of connection {c}\"")))
                        .collect();
                    for r in d.send(&lines) {
                        assert!(r.ok, "{r:?}");
                    }
                    left -= n;
                }
            });
        }
    });
    start.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Benchmark (not a timed test; run by `benches/fleet.sh` on a release
/// build): records/s from the appliance's log to the collector's file with
/// one and with three appliances, against the rate the daemon alone
/// appends the same load in the same run; and the time from an event's
/// acknowledgement to its line in the collector's file (p50/p99) at a
/// paced load.
#[test]
#[ignore]
fn bench_fleet() {
    if !fleet_available() {
        return;
    }
    let events: usize = std::env::var("NXAUDIT_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40_000);
    let conns = 4;
    let per_conn = events / conns;
    let base = tempfile::Builder::new()
        .prefix("nxaudit-fleet-bench-")
        .tempdir()
        .expect("temp dir");
    let pki = Pki::new(&base.path().join("pki"));

    // Baseline: the daemon alone, no forwarding, same load.
    let alone = TestDaemon::start_in(&base.path().join("alone"), "");
    let t = saturate(&alone, conns, per_conn);
    let baseline = (conns * per_conn) as f64 / t.as_secs_f64();
    drop(alone);
    println!("BENCH baseline daemon alone: {baseline:.0} records/s appended ({} events, {conns} connections)", conns * per_conn);

    let (_coll, port) = collector(&base.path().join("collector"), &pki);
    let out = base.path().join("collector/out");
    for n in [1usize, 3] {
        let apps: Vec<Appliance> = (0..n)
            .map(|i| appliance(base.path(), &pki, &format!("b{n}x{i}"), port))
            .collect();
        let firsts: Vec<u64> = apps.iter().map(last_seq).collect();
        let start = Instant::now();
        std::thread::scope(|s| {
            for a in &apps {
                s.spawn(move || saturate(&a.daemon, conns, per_conn));
            }
        });
        let appended = start.elapsed();
        let lasts: Vec<u64> = apps.iter().map(last_seq).collect();
        // Handed to the appliance's rsyslogd (the forwarder's last send).
        for (a, last) in apps.iter().zip(&lasts) {
            wait_for("forwarder done", Duration::from_secs(600), || {
                crate::syslog::status(&a.daemon)["forwarder"]["last_seq"]
                    .as_u64()
                    .is_some_and(|s| s >= *last)
            });
        }
        let forwarded = start.elapsed();
        for (a, last) in apps.iter().zip(&lasts) {
            let r = out.join(format!("{}.log", a.name));
            wait_for("collector complete", Duration::from_secs(600), || {
                replica_seqs_tail_has(&r, *last)
            });
        }
        let total = start.elapsed();
        let recs: u64 = apps.iter().zip(&firsts).map(|(a, f)| last_seq(a) - f).sum();
        let rate = recs as f64 / total.as_secs_f64();
        println!(
            "BENCH {n} appliance(s): {recs} records log->collector in {:.2} s = {rate:.0} records/s ({:.2}x the baseline); appended in {:.2} s ({:.0} records/s); handed to the appliance rsyslogd(s) after {:.2} s ({:.0} records/s)",
            total.as_secs_f64(),
            rate / baseline,
            appended.as_secs_f64(),
            recs as f64 / appended.as_secs_f64(),
            forwarded.as_secs_f64(),
            recs as f64 / forwarded.as_secs_f64()
        );
        for a in &apps {
            let (code, v) =
                verify_replica(a, &out.join(format!("{}.log", a.name)), &a.daemon.log_dir());
            assert_eq!(code, 0, "{v:#}");
        }
    }

    // Latency: one event at a time, paced, ack -> line in the collector file.
    let a = appliance(base.path(), &pki, "lat", port);
    let arrivals = Arrivals::follow(out.join("lat.log"));
    let n_lat: usize = 2000;
    let mut acks = Vec::with_capacity(n_lat);
    let mut conn = BufReader::new(a.daemon.connect());
    let paced = Instant::now();
    for i in 0..n_lat {
        use std::io::{BufRead as _, Write as _};
        let line = ev(
            20206,
            &format!("\"user\":\"lat\",\"message\":\"latency probe {i}\""),
        );
        conn.get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .expect("write");
        let mut reply = String::new();
        conn.read_line(&mut reply).expect("reply");
        let now = Instant::now();
        let r: nxaudit::protocol::Reply = serde_json::from_str(&reply).expect("reply json");
        acks.push((r.seq.expect("seq"), now));
        std::thread::sleep(Duration::from_millis(2));
    }
    let offered = n_lat as f64 / paced.elapsed().as_secs_f64();
    let last = acks.last().map(|a| a.0).expect("acks");
    wait_for(
        "latency probes at the collector",
        Duration::from_secs(120),
        || arrivals.has(last),
    );
    let mut lat: Vec<Duration> = acks
        .iter()
        .filter_map(|(s, t)| arrivals.at(*s).map(|a| a.saturating_duration_since(*t)))
        .collect();
    lat.sort();
    println!(
        "BENCH ack -> collector file ({} events, one at a time, {offered:.0} events/s): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.len(),
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}

/// Whether the collector file's last complete lines include `seq` (reads
/// only the end of the file: cheap enough to poll on a large copy).
fn replica_seqs_tail_has(path: &Path, seq: u64) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(256 << 10);
    if f.seek(SeekFrom::Start(from)).is_err() {
        return false;
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return false;
    }
    String::from_utf8_lossy(&buf)
        .lines()
        .filter_map(|l| record::parse_line(l).ok())
        .any(|r| r.seq == seq)
}

/// The collector takes only appliances whose client certificate its CA
/// signed: a self-signed certificate with a permitted name gets nothing in.
#[test]
fn collector_refuses_an_appliance_certificate_it_did_not_sign() {
    if !fleet_available() {
        return;
    }
    let base = tempfile::Builder::new()
        .prefix("nxaudit-fleet-")
        .tempdir()
        .expect("temp dir");
    let pki = Pki::new(&base.path().join("pki"));
    let (coll, port) = collector(&base.path().join("collector"), &pki);
    pki.openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "rogue.key",
        "-out",
        "rogue.pem",
        "-days",
        "2",
        "-subj",
        "/CN=rogue.appliances.fleet.test",
        "-addext",
        "subjectAltName=DNS:rogue.appliances.fleet.test",
    ]);
    let rogue = appliance_rsyslog_with(&base.path().join("rogue"), &pki, "rogue", port);
    let msg = "<86>1 2026-11-25T15:08:39.123456Z rogue nxauditd 1 60001 [nxaudit@32473 seq=\"1\"] 2026-11-25T15:08:39.123456Z rogue [Appliance|SSH|60001|nexthink] SSH logon | seq=1 h=00";
    let s = std::os::unix::net::UnixDatagram::unbound().expect("socket");
    s.send_to(msg.as_bytes(), rogue.dir.join("forward.sock"))
        .expect("send");
    wait_for("the collector refusing the handshake", T, || {
        coll.stderr().contains("authentication error")
    });
    assert!(
        !base.path().join("collector/out/rogue.log").exists(),
        "a rogue appliance's record reached the collector"
    );
}

//! SSH logons and sudo through rsyslog, and forwarding records out through
//! rsyslog (docs/operations.md, SSH and sudo), against a real, private `rsyslogd`.
//!
//! Each test starts the daemon (`util::TestDaemon`) and an `rsyslogd -n`
//! of its own in a temp dir, configured with `packaging/rsyslog/
//! test-rsyslogd.conf.in` and the shipped drop-in `30-nxaudit.conf` with its
//! two socket paths rewritten: what is tested is the file the package
//! installs. rsyslog writes everything it receives to `all.log` as
//! `programname \t msgid \t facility \t structured-data \t msg`.
//! Tests needing rsyslogd print a skip notice when it is not installed.

use std::collections::BTreeSet;
use std::io::{BufReader, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nxaudit::record::ParsedRecord;
use nxaudit::sources::syslog_msg;

use crate::util::{ev, wait_for, TestDaemon};

const T: Duration = Duration::from_secs(30);
const DROP_IN: &str = include_str!("../../packaging/rsyslog/30-nxaudit.conf");
const INTAKE: &str = include_str!("../../packaging/rsyslog/nxaudit-intake.conf");
const MAIN_CONF: &str = include_str!("../../packaging/rsyslog/test-rsyslogd.conf.in");
const FIXTURE: &str = include_str!("../fixtures/auth/cases.jsonl");

pub(crate) fn rsyslogd_available() -> bool {
    let ok = Command::new("rsyslogd")
        .arg("-v")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(!crate::util::must_not_skip(), "rsyslogd is not installed");
        eprintln!("SKIP: rsyslogd is not installed");
    }
    ok
}

/// A private rsyslogd with the shipped drop-in.
pub(crate) struct Rsyslogd {
    dir: PathBuf,
    child: Option<Child>,
    _tmp: tempfile::TempDir,
}

impl Rsyslogd {
    /// Starts rsyslogd forwarding sshd/sudo to `intake` (the daemon's
    /// syslog.sock).
    pub(crate) fn start(intake: &Path) -> Rsyslogd {
        let tmp = tempfile::Builder::new()
            .prefix("nxaudit-rsyslog-")
            .tempdir()
            .expect("temp dir");
        let dir = tmp.path().to_path_buf();
        std::fs::create_dir_all(dir.join("work")).expect("work dir");
        let drop_in = [DROP_IN, INTAKE]
            .concat()
            .replace("/run/nxaudit/syslog.sock", &intake.display().to_string())
            .replace(
                "/run/nxaudit/rsyslog.sock",
                &dir.join("forward.sock").display().to_string(),
            );
        std::fs::write(dir.join("30-nxaudit.conf"), drop_in).expect("write drop-in");
        let main = MAIN_CONF.replace("@DIR@", &dir.display().to_string());
        std::fs::write(dir.join("rsyslogd.conf"), main).expect("write conf");
        let mut r = Rsyslogd {
            dir,
            child: None,
            _tmp: tmp,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let stderr = std::fs::File::create(self.dir.join("rsyslogd.stderr")).expect("stderr");
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
        self.child = Some(child);
        let (log, fwd) = (self.log_sock(), self.forward_sock());
        let mut c = self.child.take();
        wait_for("rsyslogd sockets", T, || {
            if let Some(Ok(Some(st))) = c.as_mut().map(|c| c.try_wait()) {
                panic!("rsyslogd exited ({st}):\n{}", self.stderr());
            }
            log.exists() && fwd.exists() && self.dir.join("rsyslogd.pid").exists()
        });
        self.child = c;
    }

    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("rsyslogd.stderr")).unwrap_or_default()
    }

    /// Stops with SIGTERM (rsyslog drains its queues and saves the disk
    /// queue) and waits for the exit.
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
        // A restarted rsyslogd must be seen binding its sockets anew.
        for f in ["rsyslogd.pid", "log.sock", "forward.sock"] {
            let _ = std::fs::remove_file(self.dir.join(f));
        }
    }

    /// The socket standing in for /dev/log.
    pub(crate) fn log_sock(&self) -> PathBuf {
        self.dir.join("log.sock")
    }

    /// The input for nxauditd's forwarded records.
    pub(crate) fn forward_sock(&self) -> PathBuf {
        self.dir.join("forward.sock")
    }

    /// Sends one datagram to the /dev/log stand-in.
    pub(crate) fn log(&self, datagram: &[u8]) {
        let s = UnixDatagram::unbound().expect("socket");
        s.send_to(datagram, self.log_sock())
            .expect("send to rsyslog");
    }

    /// Lines of `all.log`: (programname, msgid, facility, sd, msg).
    pub(crate) fn lines(&self) -> Vec<[String; 5]> {
        let text = std::fs::read_to_string(self.dir.join("all.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let v: Vec<&str> = l.splitn(5, '\t').collect();
                (v.len() == 5).then(|| [0, 1, 2, 3, 4].map(|i| v[i].to_string()))
            })
            .collect()
    }
}

impl Drop for Rsyslogd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// rsyslogd and a daemon sharing a base dir: rsyslogd first (it forwards
/// to `<base>/syslog.sock`), then the daemon with the config `cfg` builds
/// from the running rsyslogd (e.g. its forward socket).
pub(crate) fn with_rsyslogd(
    cfg: impl Fn(&Rsyslogd) -> String,
) -> (tempfile::TempDir, Rsyslogd, TestDaemon) {
    let base = tempfile::Builder::new()
        .prefix("nxaudit-it-")
        .tempdir()
        .expect("temp dir");
    let r = Rsyslogd::start(&base.path().join("syslog.sock"));
    let d = TestDaemon::start_in(base.path(), &cfg(&r));
    (base, r, d)
}

/// Complete records written so far (a line being written is left out).
pub(crate) fn records(d: &TestDaemon) -> Vec<ParsedRecord> {
    let mut out = Vec::new();
    for f in nxaudit::logset::list(&d.log_dir()).unwrap_or_default() {
        let Ok(r) = nxaudit::logset::open(&f) else {
            continue;
        };
        for l in nxaudit::logset::Lines::new(BufReader::new(r)).flatten() {
            if let Ok(p) = nxaudit::record::parse_line(&l) {
                out.push(p);
            }
        }
    }
    out
}

pub(crate) fn auth_records(d: &TestDaemon) -> Vec<ParsedRecord> {
    records(d)
        .into_iter()
        .filter(|r| (60001..=60109).contains(&r.code))
        .collect()
}

/// An `[auth]` section taking rsyslog's messages with this test process
/// (root, running the test binary) as the proven sshd and sudo: the tests
/// send the fixture's lines themselves.
pub(crate) fn auth_trusting_tests(accounts: &str) -> String {
    let me = std::env::current_exe().expect("test binary path");
    format!(
        "[auth]\nsource = \"rsyslog\"\naccounts = {accounts}\nsshd_exes = [{me:?}]\nsudo_exes = [{me:?}]\n"
    )
}

/// `nxaudit status --json`.
pub(crate) fn status(d: &TestDaemon) -> serde_json::Value {
    let out = d.cli(&["status", "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

pub(crate) fn wait_listening(d: &TestDaemon) {
    // The path exists from bind(); its mode and group are set after, and the
    // intake says "listening" only then (a test that opens the socket to
    // other users before that would see the daemon's chmod undo it).
    let sock = d.base.join("syslog.sock");
    wait_for("syslog intake socket", T, || {
        sock.exists() && status(d)["syslog_intake"]["state"] == "listening"
    });
}

/// The fixture: (datagram in the local /dev/log form, expected record).
fn fixture() -> Vec<(Vec<u8>, serde_json::Value)> {
    let mut out = Vec::new();
    for l in FIXTURE.lines() {
        let v: serde_json::Value = serde_json::from_str(l).expect("fixture json");
        let Some(line) = v.get("line").and_then(|x| x.as_str()) else {
            continue;
        };
        let m = syslog_msg::parse(line.as_bytes()).expect("fixture line");
        let Some(app) = m.app_name.clone() else {
            continue;
        };
        // What a local program writes to /dev/log: no host name, BSD time.
        let pid = m
            .procid
            .as_ref()
            .map(|p| format!("[{p}]"))
            .unwrap_or_default();
        let pri = m.facility as u32 * 8 + m.severity as u32;
        let local = format!("<{pri}>Nov 25 15:08:39 {app}{pid}: {}", m.message);
        out.push((local.into_bytes(), v["expect"].clone()));
    }
    out
}

fn check_record(r: &ParsedRecord, want: &serde_json::Value) -> Result<(), String> {
    let mismatch = |what: &str, got: &dyn std::fmt::Debug| {
        Err(format!(
            "{what}: got {got:?}, want {want}\n  record: {}",
            r.body
        ))
    };
    if want["code"].as_u64() != Some(r.code as u64) {
        return mismatch("code", &r.code);
    }
    let account = want["user"]
        .as_str()
        .filter(|u| !u.is_empty())
        .unwrap_or("-");
    if r.account != account {
        return mismatch("account", &r.account);
    }
    if r.field("client") != want["client"].as_str() {
        return mismatch("client", &r.field("client"));
    }
    if let Some(m) = want["message"].as_str() {
        if r.text != m {
            return mismatch("text", &r.text);
        }
    }
    if let Some(fields) = want["fields"].as_object() {
        for (k, v) in fields {
            if r.field(k) != v.as_str() {
                return mismatch(k, &r.field(k));
            }
        }
    }
    Ok(())
}

/// Every sshd/sudo line of the fixture, sent through rsyslog with the
/// shipped drop-in, gives exactly the records the fixture expects.
#[test]
fn fixture_through_rsyslog() {
    if !rsyslogd_available() {
        return;
    }
    let d = TestDaemon::start(&auth_trusting_tests("[]"));
    wait_listening(&d);
    let r = Rsyslogd::start(&d.base.join("syslog.sock"));
    let cases = fixture();
    let expected: Vec<&serde_json::Value> = cases
        .iter()
        .map(|(_, e)| e)
        .filter(|e| !e.is_null())
        .collect();
    assert!(cases.len() >= 60, "fixture has {} lines", cases.len());
    for (dgram, _) in &cases {
        r.log(dgram);
    }
    wait_for("all fixture records", T, || {
        auth_records(&d).len() >= expected.len()
    });
    let got = auth_records(&d);
    let errors: Vec<String> = got
        .iter()
        .zip(&expected)
        .enumerate()
        .filter_map(|(i, (rec, want))| check_record(rec, want).err().map(|e| format!("#{i}: {e}")))
        .collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert_eq!(got.len(), expected.len());
    // rsyslog passes the original time on; the intake records it.
    assert!(got.iter().all(|r| r.field("time").is_some()));
    let st = status(&d);
    wait_for("intake status", T, || {
        status(&d)["syslog_intake"]["appended"].as_u64() == Some(expected.len() as u64)
    });
    let st2 = status(&d);
    let s = &st2["syslog_intake"];
    assert_eq!(s["looped"], 0, "{st}");
    assert_eq!(s["raw"], 10, "{s}");
    assert_eq!(s["unverified"], 0, "{s}");
    assert_eq!(
        s["other_program"], 0,
        "rsyslog forwarded a non-sshd/sudo line: {s}"
    );
}

/// Forwarded records reach rsyslog as RFC 5424 with MSGID and structured
/// data intact; rsyslog stopped under load and restarted: none missing.
#[test]
fn forwarding_survives_rsyslog_restart_under_load() {
    if !rsyslogd_available() {
        return;
    }
    let (_base, mut r, d) = with_rsyslogd(|r| {
        format!(
            "[forward]\nenabled = true\ntarget = \"{}\"\n",
            r.forward_sock().display()
        )
    });
    // The forwarder starts at the end of the log: wait until it has looked.
    let pos = d.state_dir().join("forward.pos");
    wait_for("forwarder position", T, || pos.exists());
    let first = records(&d).last().map(|r| r.seq).unwrap_or(0);

    // Load: events in batches from a thread while rsyslog goes away.
    let batches = 60;
    let per = 50;
    let base = d.base.clone();
    let sender = std::thread::spawn(move || {
        let sock = base.join("audit.sock");
        for b in 0..batches {
            let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
            let mut buf = Vec::new();
            for i in 0..per {
                let line = ev(
                    20206,
                    &format!("\"user\":\"u{b}\",\"message\":\"batch {b} ev {i} \\\"q\\\" ] é\",\"details\":{{\"k\":\"v]\\\\\"}}"),
                );
                buf.extend_from_slice(line.as_bytes());
                buf.push(b'\n');
            }
            s.write_all(&buf).expect("write");
            let mut replies = String::new();
            let mut rd = BufReader::new(s);
            for _ in 0..per {
                replies.clear();
                std::io::BufRead::read_line(&mut rd, &mut replies).expect("reply");
                assert!(replies.contains("\"ok\":true"), "{replies}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    wait_for("some forwarded", T, || {
        r.lines().iter().filter(|l| l[0] == "nxauditd").count() > 100
    });
    r.stop();
    let down = Instant::now();
    wait_for("forwarder notices the outage", T, || {
        status(&d)["forwarder"]["state"] == "waiting for target"
    });
    // The rest of the load lands while rsyslog is down.
    sender.join().expect("sender");
    let last = records(&d).last().map(|r| r.seq).expect("records");
    let before = status(&d)["forwarder"]["last_seq"]
        .as_u64()
        .unwrap_or(first);
    let forwarded_line = |l: &[String; 5], seq: u64| {
        l[0] == "nxauditd" && l[3].contains(&format!(" seq=\"{seq}\" "))
    };
    r.spawn();
    let restarted = Instant::now();
    wait_for("forwarding resumes", T, || {
        r.lines().iter().any(|l| forwarded_line(l, before + 1))
    });
    let resumed = Instant::now();
    wait_for("every record forwarded", Duration::from_secs(60), || {
        r.lines().iter().any(|l| forwarded_line(l, last))
    });
    let catch_up = resumed.elapsed();
    let backlog_at_restart = last - before;
    let want: BTreeSet<u64> = records(&d)
        .iter()
        .filter(|r| r.seq > first && r.seq <= last)
        .map(|r| r.seq)
        .collect();
    let by_seq: std::collections::BTreeMap<u64, ParsedRecord> =
        records(&d).into_iter().map(|r| (r.seq, r)).collect();
    let mut seen = BTreeSet::new();
    let mut dups = 0;
    for l in r.lines().iter().filter(|l| l[0] == "nxauditd") {
        let p = syslog_msg::parse(format!("<85>1 - h a - {} {} {}", l[1], l[3], l[4]).as_bytes())
            .expect("sd");
        let sd = p
            .sd("nxaudit@32473")
            .unwrap_or_else(|| panic!("no SD in {l:?}"));
        let seq: u64 = sd.param("seq").expect("seq").parse().expect("seq number");
        let rec = by_seq
            .get(&seq)
            .unwrap_or_else(|| panic!("unknown seq {seq}"));
        assert_eq!(l[1], rec.code.to_string(), "MSGID is the code");
        assert_eq!(sd.param("code"), Some(rec.code.to_string().as_str()));
        assert_eq!(l[2], "authpriv");
        assert_eq!(sd.param("account"), Some(rec.account.as_str()));
        // Values and text arrive escaped as in the log (`]` as `\x5d`); the
        // SD-PARAM decoding undoes the doubled `\\` only.
        let log_escaped = |v: &str| {
            let mut e = String::new();
            nxaudit::record::escape_unquoted(v, &mut e);
            e
        };
        assert_eq!(
            sd.param("details.k").map(str::to_string),
            rec.field("details.k")
                .map(|v| log_escaped(v).replace("\\\\", "\\"))
        );
        // MSG is the record line exactly as in the audit log.
        assert_eq!(
            p.message,
            nxaudit::sinks::syslog::record_line(rec),
            "MSG of seq {seq}"
        );
        assert!(p.message.contains(&log_escaped(&rec.text)));
        if !seen.insert(seq) {
            dups += 1;
        }
    }
    let missing: Vec<u64> = want.difference(&seen).copied().collect();
    assert!(
        missing.is_empty(),
        "{} records missing after catch-up: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    eprintln!(
        "forwarded {} records; rsyslog down {:?}; backlog at restart {}; resumed {:?} after the restart; caught up in {:?} ({:.0} records/s); {} duplicates",
        want.len(),
        restarted - down,
        backlog_at_restart,
        resumed - restarted,
        catch_up,
        backlog_at_restart as f64 / catch_up.as_secs_f64().max(0.001),
        dups
    );
    let fw = &status(&d)["forwarder"];
    assert!(
        fw["errors"].as_u64().unwrap_or(0) > 0,
        "the outage shows in status: {fw}"
    );
}

/// With both directions through one rsyslogd, an SSH logon gives exactly
/// one 60001 record: the forwarded copy does not come back.
#[test]
fn no_loop_through_one_rsyslogd() {
    if !rsyslogd_available() {
        return;
    }
    let (_base, r, d) = with_rsyslogd(|r| {
        format!(
            "{}[forward]\nenabled = true\ntarget = \"{}\"\n",
            auth_trusting_tests("[]"),
            r.forward_sock().display()
        )
    });
    wait_listening(&d);
    r.log(b"<86>Nov 25 15:08:39 sshd[777]: Accepted publickey for nexthink from 10.9.8.7 port 40000 ssh2: ED25519 SHA256:loop");
    wait_for("forwarded copy of the 60001 record in rsyslog", T, || {
        r.lines()
            .iter()
            .any(|l| l[0] == "nxauditd" && l[1] == "60001")
    });
    // A second message behind the first: once its record is forwarded too,
    // everything the first could have caused has gone through.
    r.log(
        b"<85>Nov 25 15:08:40 sudo: nexthink : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/true",
    );
    wait_for("forwarded copy of the 60101 record", T, || {
        r.lines()
            .iter()
            .any(|l| l[0] == "nxauditd" && l[1] == "60101")
    });
    wait_for("status published", T, || {
        status(&d)["syslog_intake"]["appended"].as_u64() == Some(2)
    });
    let logons: Vec<_> = records(&d)
        .into_iter()
        .filter(|r| r.code == 60001)
        .collect();
    assert_eq!(logons.len(), 1, "{logons:#?}");
    let st = status(&d);
    assert_eq!(st["syslog_intake"]["received"], 2, "{st}");
    assert_eq!(st["syslog_intake"]["looped"], 0, "{st}");
    assert_eq!(
        r.lines()
            .iter()
            .filter(|l| l[0] == "nxauditd" && l[1] == "60001")
            .count(),
        1
    );
}

/// Garbage, empty, oversize and near-miss datagrams straight into the
/// intake: counted, never a crash; the daemon's own APP-NAME is dropped.
#[test]
fn intake_survives_garbage() {
    let mut d = TestDaemon::start(&auth_trusting_tests("[\"nexthink\"]"));
    wait_listening(&d);
    let sock = d.base.join("syslog.sock");
    let tx = UnixDatagram::unbound().expect("socket");
    // A deterministic generator: the same run every time.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let shapes: [&[u8]; 6] = [
        b"<86>Nov 25 15:08:39 sshd[1]: Accepted ",
        b"<85>1 2026-11-25T15:08:39Z h sudo - - [x",
        b"<38>sshd[",
        b"<13>",
        b"sudo: nexthink : ",
        b"",
    ];
    let mut sent = 0u64;
    for i in 0..600 {
        let mut buf = shapes[i % shapes.len()].to_vec();
        let n = (next() % 300) as usize;
        buf.extend((0..n).map(|_| next() as u8));
        tx.send_to(&buf, &sock).expect("send");
        sent += 1;
    }
    let mut big =
        b"<86>Nov 25 15:08:39 sshd[2]: Accepted password for nexthink from 10.0.0.1 port 1 ssh2 "
            .to_vec();
    big.resize(100_000, b'A');
    tx.send_to(&big, &sock).expect("send big");
    tx.send_to(
        b"<85>1 2026-11-25T15:08:39Z h nxauditd 1 60001 [nxaudit@32473 seq=\"1\"] SSH logon",
        &sock,
    )
    .expect("send own");
    // As rsyslog's template sends it: with the proven sender (this test).
    let valid = format!(
        "<86>1 2026-11-25T15:08:39Z h sshd 3 - [sender@32473 uid=\"0\" pid=\"3\" exe={:?}] Accepted password for nexthink from 10.0.0.2 port 2 ssh2",
        std::env::current_exe().expect("exe").display().to_string()
    );
    tx.send_to(valid.as_bytes(), &sock).expect("send valid");
    sent += 3;
    wait_for("valid record after the garbage", T, || {
        records(&d)
            .iter()
            .any(|r| r.code == 60001 && r.field("client") == Some("10.0.0.2"))
    });
    wait_for("everything counted", T, || {
        status(&d)["syslog_intake"]["received"].as_u64() == Some(sent)
    });
    assert!(d.alive(), "{}", d.stderr());
    let st = status(&d);
    let s = &st["syslog_intake"];
    assert_eq!(s["looped"], 1, "{s}");
    assert_eq!(s["oversize"], 1, "{s}");
    assert_eq!(s["errors"], 0, "{s}");
    let out = d.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("syslog_intake"), "{text}");
    assert!(d.term().success());
}

/// The forwarder resumes from its saved position after kill -9 and across
/// rotation: every record reaches the target at least once.
#[test]
fn forwarder_resumes_after_kill9_and_rotation() {
    let tmp = tempfile::tempdir().expect("tmp");
    let target = tmp.path().join("target.sock");
    let rx = UnixDatagram::bind(&target).expect("bind target");
    rx.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let mut d = TestDaemon::start(&format!(
        "[forward]\nenabled = true\ntarget = \"{}\"\ncomponents = [\"Portal\"]\n",
        target.display()
    ));
    let pos = d.state_dir().join("forward.pos");
    wait_for("position file", T, || pos.exists());
    let mut seen = BTreeSet::new();
    let drain = |seen: &mut BTreeSet<u64>| {
        let mut buf = vec![0u8; 70_000];
        while let Ok(n) = rx.recv(&mut buf) {
            let p = syslog_msg::parse(&buf[..n]).expect("parse");
            assert_eq!(p.app_name.as_deref(), Some("nxauditd"));
            let sd = p.sd("nxaudit@32473").expect("sd");
            assert_eq!(sd.param("component"), Some("Portal"), "filter by component");
            seen.insert(sd.param("seq").expect("seq").parse::<u64>().expect("n"));
        }
    };
    let lines: Vec<String> = (0..300)
        .map(|i| ev(20206, &format!("\"message\":\"m{i}\"")))
        .collect();
    d.send(&lines[..150]);
    assert!(d.cli(&["rotate"]).status.success());
    d.send(&lines[150..200]);
    drain(&mut seen);
    d.kill9();
    d.restart();
    d.send(&lines[200..]);
    let want: BTreeSet<u64> = records(&d)
        .iter()
        .filter(|r| r.code == 20206)
        .map(|r| r.seq)
        .collect();
    assert_eq!(want.len(), 300);
    let last = *want.iter().last().expect("last");
    wait_for("all forwarded", T, || {
        drain(&mut seen);
        seen.contains(&last)
    });
    drain(&mut seen);
    let missing: Vec<_> = want.difference(&seen).collect();
    assert!(missing.is_empty(), "missing {missing:?}");
    assert!(
        seen.iter().all(|s| want.contains(s)),
        "only Portal records: {seen:?}"
    );
    wait_for("position saved", T, || {
        nxaudit::reader::Checkpoint::in_state_dir(
            &d.state_dir(),
            nxaudit::sinks::syslog::POSITION_FILE,
        )
        .load_seq()
        .ok()
        .flatten()
        .is_some_and(|p| p >= last)
    });
    assert!(d.term().success());
}

/// sshd's logging through rsyslog never waits for nxauditd: with the intake
/// socket present but never read (a hung daemon, or the socket held by
/// systemd during a restart) and with no socket at all (daemon down), every
/// line still reaches rsyslog's other outputs.
#[test]
fn ssh_logging_not_blocked_by_the_intake() {
    if !rsyslogd_available() {
        return;
    }
    let base = tempfile::tempdir().expect("tmp");
    let intake = base.path().join("syslog.sock");
    let stuck = UnixDatagram::bind(&intake).expect("bind");
    let r = Rsyslogd::start(&intake);
    let n = 3000;
    let send_all = |tag: &str| {
        let start = Instant::now();
        for i in 0..n {
            r.log(format!("<86>Nov 25 15:08:39 sshd[{i}]: Accepted password for {tag}{i} from 10.0.0.1 port 22 ssh2").as_bytes());
        }
        wait_for("every line in rsyslog's file", T, || {
            r.lines()
                .iter()
                .filter(|l| l[4].contains(&format!(" for {tag}")))
                .count()
                >= n
        });
        start.elapsed()
    };
    let t_stuck = send_all("stuck");
    drop(stuck);
    let _ = std::fs::remove_file(&intake);
    let t_down = send_all("down");
    eprintln!(
        "{n} sshd lines through rsyslog: {t_stuck:?} with a stuck intake, {t_down:?} with none"
    );
}

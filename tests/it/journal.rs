//! The journal follower against real journals (docs/operations.md, Engine starts and stops, issue 4).
//!
//! Journals are built the way systemd writes them: entries in journal
//! export format, with the fields PID 1 logs for unit jobs (MESSAGE_ID,
//! UNIT, JOB_TYPE, JOB_RESULT, UNIT_RESULT, _PID=1, _SYSTEMD_UNIT=init.scope,
//! timestamps, boot id, …), turned into journal files by
//! `systemd-journal-remote --output=FILE.journal` (which appends when the
//! file exists), and followed by the real `journalctl --directory`. Every
//! Engine entry has a unique timestamp, so `time=` identifies the record it
//! must produce; "exactly once" is checked entry by entry.
//!
//! Tests skip (with a message) when journalctl or systemd-journal-remote is
//! not installed. The 100,000-entry catch-up measurement is `#[ignore]`d:
//! `cargo test --release --test it journal::catch_up_100k -- --ignored --nocapture`.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nxaudit::record::ParsedRecord;

use crate::util::{assert_ok, ev, try_wait_for, TestDaemon};

/// Where Debian puts systemd-journal-remote (usrmerged or not).
fn journal_remote() -> &'static str {
    [
        "/lib/systemd/systemd-journal-remote",
        "/usr/lib/systemd/systemd-journal-remote",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .unwrap_or("/lib/systemd/systemd-journal-remote")
}
const MID_STARTING: &str = "7d4958e842da4a758f6c1cdc7b36dcc5";
const MID_STARTED: &str = "39f53479d3a045ac8e11786248231fbf";
const MID_START_FAILED: &str = "be02cf6855d2428ba40df7e9d022f03d";
const MID_STOPPING: &str = "de5b426a63be47a7b6ac3eaac82e2f6f";
const MID_STOPPED: &str = "9d1aaa27d60140bd96365438aad20286";
const MID_UNIT_FAILED: &str = "d9b373ed55a64feb8242e02dbe79a49c";
const MID_UNIT_SUCCEEDED: &str = "7ad2d189f7e94e70a38c781354912448";
const MID_PROCESS_EXIT: &str = "98e322203f7a4ed290d09fe03c09fe15";
const LONG: Duration = Duration::from_secs(150);

/// Whether the tools are here; prints why a test is skipped otherwise.
fn tools() -> bool {
    let ok = Path::new(journal_remote()).exists()
        && Command::new("journalctl")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            !crate::util::must_not_skip(),
            "journalctl or systemd-journal-remote is not installed"
        );
        eprintln!("skipped: journalctl or systemd-journal-remote not installed");
    }
    ok
}

/// A new journal in a temp dir, or `None` (test skipped) without the tools.
fn journal_or_skip() -> Option<(tempfile::TempDir, Journal)> {
    if !tools() {
        return None;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let j = Journal::new(&tmp.path().join("journal"));
    Some((tmp, j))
}

/// One journal entry: field name → raw value.
type Fields = Vec<(String, Vec<u8>)>;

/// Serializes entries in journal export format (binary-safe fields for
/// values with newlines or non-UTF-8 bytes).
fn export(entries: &[Fields]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        for (k, v) in e {
            if v.contains(&b'\n') || std::str::from_utf8(v).is_err() {
                out.extend_from_slice(k.as_bytes());
                out.push(b'\n');
                out.extend_from_slice(&(v.len() as u64).to_le_bytes());
                out.extend_from_slice(v);
                out.push(b'\n');
            } else {
                out.extend_from_slice(k.as_bytes());
                out.push(b'=');
                out.extend_from_slice(v);
                out.push(b'\n');
            }
        }
        out.push(b'\n');
    }
    out
}

/// A record the follower must write exactly once.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Expect {
    time: String,
    code: u32,
    unit: String,
    result: String,
}

/// A journal directory that grows as a test goes, plus the records its
/// Engine entries must produce.
struct Journal {
    dir: PathBuf,
    boot_id: String,
    machine_id: String,
    realtime_us: u64,
    monotonic_us: u64,
    job_id: u64,
    pending: Vec<Fields>,
    pending_expect: Vec<Expect>,
    expect: Vec<Expect>,
}

impl Journal {
    fn new(dir: &Path) -> Journal {
        std::fs::create_dir_all(dir).expect("journal dir");
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().replace('-', ""))
            .unwrap_or_else(|_| "0123456789abcdef0123456789abcdef".into());
        // Starts an hour ago, one millisecond per entry: unique, increasing.
        let now_us = chrono::Utc::now().timestamp_micros() as u64;
        Journal {
            dir: dir.to_path_buf(),
            boot_id,
            machine_id: "a1b2c3d4e5f60718293a4b5c6d7e8f90".into(),
            realtime_us: now_us - 3_600_000_000,
            monotonic_us: 5_000_000,
            job_id: 100,
            pending: Vec::new(),
            pending_expect: Vec::new(),
            expect: Vec::new(),
        }
    }

    /// Switches to another boot (for first_start tests).
    fn boot(&mut self, boot_id: &str) {
        self.boot_id = boot_id.into();
        self.monotonic_us = 5_000_000;
    }

    fn tick(&mut self) -> u64 {
        self.realtime_us += 1000;
        self.monotonic_us += 1000;
        self.realtime_us
    }

    fn base(&mut self, pid: &str, comm: &str, unit: &str) -> Fields {
        let t = self.tick();
        let mut f: Fields = Vec::new();
        let mut add = |k: &str, v: String| f.push((k.to_string(), v.into_bytes()));
        add("__REALTIME_TIMESTAMP", t.to_string());
        add("__MONOTONIC_TIMESTAMP", self.monotonic_us.to_string());
        add("_BOOT_ID", self.boot_id.clone());
        add("_MACHINE_ID", self.machine_id.clone());
        add("_HOSTNAME", "appliance1".into());
        add("_PID", pid.into());
        add("_UID", "0".into());
        add("_GID", "0".into());
        add("_COMM", comm.into());
        add("_SYSTEMD_UNIT", unit.into());
        add("_SOURCE_REALTIME_TIMESTAMP", (t - 3).to_string());
        f
    }

    /// An entry of systemd (PID 1) about `unit`.
    fn systemd(
        &mut self,
        unit: Option<&str>,
        mid: Option<&str>,
        message: &[u8],
        extra: &[(&str, &str)],
    ) -> u64 {
        let mut f = self.base("1", "systemd", "init.scope");
        let t = self.realtime_us;
        let mut add = |k: &str, v: &[u8]| f.push((k.to_string(), v.to_vec()));
        add("_EXE", b"/usr/lib/systemd/systemd");
        add("_CMDLINE", b"/sbin/init");
        add("_CAP_EFFECTIVE", b"1ffffffffff");
        add("_SYSTEMD_CGROUP", b"/init.scope");
        add("_SYSTEMD_SLICE", b"-.slice");
        add("_TRANSPORT", b"journal");
        add("PRIORITY", b"6");
        add("SYSLOG_FACILITY", b"3");
        add("SYSLOG_IDENTIFIER", b"systemd");
        add("TID", b"1");
        add("CODE_FILE", b"src/core/job.c");
        add("CODE_LINE", b"768");
        add("CODE_FUNC", b"job_emit_done_message");
        if let Some(u) = unit {
            add("UNIT", u.as_bytes());
            add("INVOCATION_ID", b"0f1e2d3c4b5a69788796a5b4c3d2e1f0");
        }
        if let Some(m) = mid {
            add("MESSAGE_ID", m.as_bytes());
        }
        for (k, v) in extra {
            add(k, v.as_bytes());
        }
        add("MESSAGE", message);
        self.pending.push(f);
        t
    }

    fn job(&mut self, unit: &str, mid: &str, msg: &str, job: &str, result: &str) -> u64 {
        self.job_id += 1;
        let id = self.job_id.to_string();
        self.systemd(
            Some(unit),
            Some(mid),
            msg.as_bytes(),
            &[("JOB_ID", &id), ("JOB_TYPE", job), ("JOB_RESULT", result)],
        )
    }

    fn expect(&mut self, t: u64, code: u32, unit: &str, result: &str) {
        self.pending_expect.push(Expect {
            time: time_of(t),
            code,
            unit: unit.into(),
            result: result.into(),
        });
    }

    fn desc(unit: &str) -> String {
        format!("Nexthink Engine {}", engine_of(unit))
    }

    /// The "Starting …"/"Stopping …" line of a job of `job_type` beginning.
    fn job_begins(&mut self, unit: &str, mid: &str, verb: &str, job_type: &str) {
        self.systemd(
            Some(unit),
            Some(mid),
            format!("{verb} {}...", Self::desc(unit)).as_bytes(),
            &[("JOB_TYPE", job_type)],
        );
    }

    /// The main process exits (`code=CODE, status=N/NAME`) and the unit
    /// fails with `result` → 60203.
    fn main_process_fails(&mut self, unit: &str, code: &str, status: &str, result: &str) {
        let (number, _) = status.split_once('/').expect("N/NAME");
        self.systemd(
            Some(unit),
            Some(MID_PROCESS_EXIT),
            format!("{unit}: Main process exited, code={code}, status={status}").as_bytes(),
            &[("EXIT_CODE", code), ("EXIT_STATUS", number)],
        );
        let t = self.systemd(
            Some(unit),
            Some(MID_UNIT_FAILED),
            format!("{unit}: Failed with result '{result}'.").as_bytes(),
            &[("UNIT_RESULT", result)],
        );
        self.expect(t, 60203, unit, result);
    }

    /// `systemctl start`: Starting…, Started… → 60201.
    fn start(&mut self, unit: &str) {
        let d = Self::desc(unit);
        self.job_begins(unit, MID_STARTING, "Starting", "start");
        let t = self.job(unit, MID_STARTED, &format!("Started {d}."), "start", "done");
        self.expect(t, 60201, unit, "done");
    }

    /// `systemctl stop`: Stopping…, Deactivated, Stopped… → 60202.
    fn stop(&mut self, unit: &str) {
        let d = Self::desc(unit);
        self.job_begins(unit, MID_STOPPING, "Stopping", "stop");
        self.systemd(
            Some(unit),
            Some(MID_UNIT_SUCCEEDED),
            format!("{unit}: Deactivated successfully.").as_bytes(),
            &[],
        );
        let t = self.job(unit, MID_STOPPED, &format!("Stopped {d}."), "stop", "done");
        self.expect(t, 60202, unit, "done");
    }

    /// `systemctl restart`: the stop half (JOB_TYPE=restart) → 60202, then
    /// the start → 60201.
    fn restart(&mut self, unit: &str) {
        let d = Self::desc(unit);
        self.job_begins(unit, MID_STOPPING, "Stopping", "restart");
        let t = self.job(
            unit,
            MID_STOPPED,
            &format!("Stopped {d}."),
            "restart",
            "done",
        );
        self.expect(t, 60202, unit, "done");
        self.start(unit);
    }

    /// A start that fails: process exit, "Failed with result" (→ 60203),
    /// and the start job's JOB_RESULT=failed (not a second record).
    fn fail_start(&mut self, unit: &str) {
        self.job_begins(unit, MID_STARTING, "Starting", "start");
        self.main_process_fails(unit, "exited", "1/FAILURE", "exit-code");
        self.job(
            unit,
            MID_START_FAILED,
            &format!("Failed to start {}.", Self::desc(unit)),
            "start",
            "failed",
        );
    }

    /// A running Engine killed by a signal: 60203 result=signal.
    fn crash(&mut self, unit: &str) {
        self.main_process_fails(unit, "killed", "9/KILL", "signal");
    }

    /// A start job failed on a dependency (the unit does not enter the
    /// failed state): 60203 result=dependency.
    fn dependency_failed(&mut self, unit: &str) {
        let t = self.job(
            unit,
            MID_START_FAILED,
            &format!("Dependency failed for {}.", Self::desc(unit)),
            "start",
            "dependency",
        );
        self.expect(t, 60203, unit, "dependency");
    }

    /// Old systemd: no message ids, no job fields; the text decides.
    fn legacy_start_and_failure(&mut self, unit: &str) {
        let t = self.systemd(
            Some(unit),
            None,
            format!("Started {}.", Self::desc(unit)).as_bytes(),
            &[],
        );
        self.expect(t, 60201, unit, "done");
        let t = self.systemd(
            None,
            None,
            format!("{unit}: Failed with result 'timeout'.").as_bytes(),
            &[],
        );
        self.expect(t, 60203, unit, "timeout");
    }

    /// Messages that must not produce records: other units, other
    /// processes (including the Engine's own output), binary messages.
    fn noise(&mut self, n: usize) {
        for i in 0..n {
            match i % 5 {
                0 => self.ssh_started(),
                1 => {
                    let mut f = self.base("4242", "nxengine", "nxengine@Engine-01.service");
                    f.push(("SYSLOG_IDENTIFIER".into(), b"nxengine".to_vec()));
                    f.push((
                        "MESSAGE".into(),
                        format!("Started collector {i}").into_bytes(),
                    ));
                    self.pending.push(f);
                }
                2 => self.cron_line(i),
                3 => {
                    self.systemd(
                        Some("nxengine@Engine-01.service"),
                        None,
                        b"nxengine@Engine-01.service: Consumed 1.5s CPU time.\n\xff binary",
                        &[],
                    );
                }
                _ => {
                    self.systemd(
                        Some("logrotate.service"),
                        Some(MID_UNIT_FAILED),
                        b"logrotate.service: Failed with result 'exit-code'.",
                        &[("UNIT_RESULT", "exit-code")],
                    );
                }
            }
        }
    }

    /// systemd starting another unit (ssh): a job record of no interest.
    fn ssh_started(&mut self) {
        self.job(
            "ssh.service",
            MID_STARTED,
            "Started OpenBSD Secure Shell server.",
            "start",
            "done",
        );
    }

    /// A line of another process (cron), numbered `i`.
    fn cron_line(&mut self, i: usize) {
        let mut f = self.base("777", "cron", "cron.service");
        f.push((
            "MESSAGE".into(),
            format!("(root) CMD (run-parts /etc/cron.hourly) {i}").into_bytes(),
        ));
        self.pending.push(f);
    }

    /// Writes the pending entries into `file` (appending when it exists).
    fn flush(&mut self, file: &str) {
        let entries = std::mem::take(&mut self.pending);
        write_journal(&self.dir.join(file), &entries);
        self.expect.append(&mut self.pending_expect);
    }
}

/// Runs systemd-journal-remote to write (or extend) a journal file.
fn write_journal(path: &Path, entries: &[Fields]) {
    let data = export(entries);
    let mut child = Command::new(journal_remote())
        .arg(format!("--output={}", path.display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run systemd-journal-remote");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child
        .wait_with_output()
        .expect("wait systemd-journal-remote");
    writer
        .join()
        .expect("writer thread")
        .expect("write export data");
    assert_ok("systemd-journal-remote", &out);
}

fn time_of(us: u64) -> String {
    nxaudit::record::format_ts(chrono::DateTime::from_timestamp_micros(us as i64).expect("time"))
}

fn engine_of(unit: &str) -> &str {
    unit.split_once('@')
        .map_or(unit, |(_, r)| r.trim_end_matches(".service"))
}

/// Every complete record of the log: unlike `TestDaemon::records`, a last
/// line still being written (no newline yet) is left out, since these tests
/// read while the daemon writes.
fn complete_records(d: &TestDaemon) -> Vec<ParsedRecord> {
    let mut out = Vec::new();
    for f in nxaudit::logset::list(&d.log_dir()).expect("list logs") {
        let Ok(r) = nxaudit::logset::open(&f) else {
            continue; // rotated away meanwhile
        };
        for line in nxaudit::logset::Lines::new(r) {
            let line = line.expect("read log");
            out.push(nxaudit::record::parse_line(&line).unwrap_or_else(|e| {
                panic!("unparsable line in {}: {e}\n{line}", f.path.display())
            }));
        }
    }
    out
}

fn engine_records(d: &TestDaemon) -> Vec<ParsedRecord> {
    complete_records(d)
        .into_iter()
        .filter(|r| r.field("jsrc") == Some("engine"))
        .collect()
}

fn as_expect(r: &ParsedRecord) -> Expect {
    Expect {
        time: r.field("time").unwrap_or_default().into(),
        code: r.code,
        unit: r.field("unit").unwrap_or_default().into(),
        result: r.field("result").unwrap_or_default().into(),
    }
}

/// Waits for `f`; on timeout fails with the daemon's stderr and journal
/// status, which is where the reason is.
fn wait_d(d: &TestDaemon, what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    if !try_wait_for(timeout, f) {
        panic!(
            "timed out after {timeout:?} waiting for: {what}\njournal status: {}\n{} Engine records\ndaemon stderr:\n{}",
            status(d)["journal"],
            engine_records(d).len(),
            d.stderr()
        );
    }
}

/// Asserts that the Engine records are exactly the expected ones, each
/// once, with consistent fields.
fn assert_exactly_once(d: &TestDaemon, expect: &[Expect]) {
    let recs = engine_records(d);
    let mut cursors = BTreeMap::new();
    for r in &recs {
        let c = r
            .field("cursor")
            .unwrap_or_else(|| panic!("no cursor: {r:?}"));
        if let Some(prev) = cursors.insert(c.to_string(), r.seq) {
            panic!("cursor {c} recorded twice (seq {prev} and {})", r.seq);
        }
        let unit = r.field("unit").expect("unit");
        assert_eq!(r.field("engine"), Some(engine_of(unit)), "{r:?}");
        assert_eq!(r.source, "Appliance");
        assert!((60201..=60203).contains(&r.code), "{r:?}");
    }
    let mut got: Vec<Expect> = recs.iter().map(as_expect).collect();
    let mut want = expect.to_vec();
    got.sort();
    want.sort();
    if got != want {
        let missing: Vec<_> = want.iter().filter(|w| !got.contains(w)).collect();
        let extra: Vec<_> = got.iter().filter(|g| !want.contains(g)).collect();
        let mut dups = got.clone();
        dups.dedup();
        panic!(
            "Engine records differ: {} got, {} expected\nmissing: {missing:#?}\nextra: {extra:#?}\nduplicates: {}\nstderr:\n{}",
            got.len(),
            want.len(),
            got.len() - dups.len(),
            d.stderr()
        );
    }
}

/// Waits until every expected record is there, then proves nothing more
/// is coming by appending a sentinel and waiting for it.
fn settle(d: &TestDaemon, j: &mut Journal, file: &str) {
    let want = j.expect.len();
    wait_d(d, &format!("{want} Engine records"), LONG, || {
        engine_records(d).len() >= want
    });
    j.start("nxengine@sentinel.service");
    j.flush(file);
    let want = j.expect.len();
    wait_d(d, "the sentinel record", LONG, || {
        engine_records(d).iter().any(|r| {
            r.field("unit") == Some("nxengine@sentinel.service")
                && as_expect(r) == j.expect[want - 1]
        })
    });
    assert_exactly_once(d, &j.expect);
}

fn config(jdir: &Path, first_start: &str, journalctl: &str) -> String {
    format!(
        "[journal]\nenabled = true\njournalctl = {journalctl:?}\nextra_args = [\"--directory\", {:?}]\nfirst_start = {first_start:?}\n",
        jdir.display().to_string()
    )
}

fn status(d: &TestDaemon) -> serde_json::Value {
    std::fs::read(d.state_dir().join("status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Live (non-zombie) journalctl processes reading `dir`.
fn journalctl_procs(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(") ")
            .is_some_and(|(_, s)| s.starts_with('Z'));
        // `--lines=1` are the follower's one-shot look-ups (the newest
        // entry, the tail cursor), not the run this helper is after.
        if cmd.contains("--output=json")
            && cmd.contains(&needle)
            && !cmd.contains("--lines=1")
            && !zombie
        {
            out.push(pid);
        }
    }
    out
}

#[test]
fn engine_starts_stops_and_failures_from_a_real_journal() {
    let Some((_tmp, mut j)) = journal_or_skip() else {
        return;
    };
    // A previous boot: not recorded with first_start = "boot".
    let current = j.boot_id.clone();
    j.boot("11111111111111111111111111111111");
    j.start("nxengine@old.service");
    j.pending_expect.clear();
    j.flush("system.journal");
    j.boot(&current);
    j.noise(20);
    j.start("nxengine@Engine-01.service");
    j.start("nxengine@Engine-02.service");
    j.noise(7);
    j.restart("nxengine@Engine-01.service");
    j.fail_start("nxengine@e3.service");
    j.crash("nxengine@Engine-02.service");
    j.dependency_failed("nxengine@e4.service");
    j.legacy_start_and_failure("nxengine@legacy.service");
    j.stop("nxengine@Engine-01.service");
    j.flush("system.journal");
    let d = TestDaemon::start(&config(&j.dir, "boot", "journalctl"));
    // More while it follows, in a second file (another journal sequence).
    j.start("nxengine@Engine-01.service");
    j.noise(5);
    j.flush("remote-1.journal");
    settle(&d, &mut j, "system.journal");
    let recs = engine_records(&d);
    assert!(recs
        .iter()
        .all(|r| r.field("unit") != Some("nxengine@old.service")));
    let fail = recs
        .iter()
        .find(|r| r.code == 60203 && r.field("unit") == Some("nxengine@e3.service"))
        .expect("60203");
    assert_eq!(fail.text, "Engine service failed");
    assert_eq!(
        recs.iter()
            .filter(|r| r.field("unit") == Some("nxengine@e3.service"))
            .count(),
        1
    );
    let restart = recs
        .iter()
        .find(|r| r.field("job") == Some("restart"))
        .expect("restart record");
    assert_eq!(restart.code, 60202);
    // Status: running, ignored messages counted by reason.
    wait_d(&d, "journal status", LONG, || {
        status(&d)["journal"]["records"].as_u64() == Some(j.expect.len() as u64)
    });
    let s = status(&d)["journal"].clone();
    assert_eq!(s["state"], "running", "{s}");
    assert_eq!(s["mode"], "follow", "{s}");
    for reason in ["start_failed_job", "other_unit", "other_message"] {
        assert!(s["ignored"][reason].as_u64() > Some(0), "{reason}: {s}");
    }
    let out = d.cli(&["status", "--json"]);
    assert_ok("nxaudit status", &out);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(doc["journal"]["state"], "running");
}

#[test]
fn kill9_at_many_points_while_following_a_growing_journal() {
    let Some((_tmp, mut j)) = journal_or_skip() else {
        return;
    };
    j.noise(10);
    j.flush("system.journal");
    let mut d = TestDaemon::start(&config(&j.dir, "boot", "journalctl"));
    let units = [
        "nxengine@Engine-01.service",
        "nxengine@Engine-02.service",
        "nxengine@Engine-03.service",
    ];
    for round in 0..12usize {
        let before = engine_records(&d).len();
        for k in 0..8 {
            let u = units[(round + k) % units.len()];
            match (round + k) % 4 {
                0 => j.start(u),
                1 => j.restart(u),
                2 => j.fail_start(u),
                _ => j.stop(u),
            }
            j.noise(3);
        }
        // Every third round opens a new file: another journal sequence.
        let file = if round % 3 == 2 {
            format!("part-{round}.journal")
        } else {
            "system.journal".into()
        };
        j.flush(&file);
        let want = j.expect.len();
        match round % 4 {
            // Right after the entries land: mid-read.
            0 => {}
            // After the first new record: between a durable record and
            // the cursor save.
            1 => wait_d(&d, "a first new record", LONG, || {
                engine_records(&d).len() > before
            }),
            // Half-way.
            2 => wait_d(&d, "half the new records", LONG, || {
                engine_records(&d).len() >= (before + want) / 2
            }),
            // Caught up.
            // Caught up and the cursor file saved: resumes from the file.
            _ => {
                wait_d(&d, "all records", LONG, || engine_records(&d).len() >= want);
                let last = engine_records(&d).last().map(|r| r.seq);
                wait_d(&d, "the cursor saved", LONG, || {
                    let s = status(&d)["journal"].clone();
                    s["last_record_seq"].as_u64() == last && s["saved_cursor"] == s["cursor"]
                });
            }
        }
        d.kill9();
        // journalctl dies with the daemon (PR_SET_PDEATHSIG).
        wait_d(&d, "journalctl to die with the daemon", LONG, || {
            journalctl_procs(&j.dir).is_empty()
        });
        d.restart();
        if round % 5 == 4 {
            // Killed again at once, before it can catch up.
            d.kill9();
            d.restart();
        }
    }
    settle(&d, &mut j, "system.journal");
    // The crash window between a durable record and the cursor save was
    // hit (the log's cursor was newer than the file's), and survived.
    let log = d.stderr();
    let from_log = log
        .matches("resumes from the audit log, newer than the cursor file")
        .count();
    let from_file = log.matches("resumes from the cursor file").count();
    eprintln!("resumes: {from_log} from the audit log, {from_file} from the cursor file");
    assert!(from_log >= 1, "the crash window was never hit:\n{log}");
    assert!(from_file >= 1, "never resumed from the cursor file:\n{log}");
}

#[test]
fn journalctl_killed_repeatedly_loses_and_duplicates_nothing() {
    let Some((_tmp, mut j)) = journal_or_skip() else {
        return;
    };
    j.start("nxengine@a.service");
    j.flush("system.journal");
    let d = TestDaemon::start(&config(&j.dir, "boot", "journalctl"));
    let mut last_pid = 0;
    for round in 0..10 {
        let u = if round % 2 == 0 {
            "nxengine@a.service"
        } else {
            "nxengine@b.service"
        };
        j.restart(u);
        j.fail_start(u);
        j.noise(5);
        j.flush("system.journal");
        let pids = {
            let mut p = Vec::new();
            wait_d(&d, "a new journalctl child", LONG, || {
                p = journalctl_procs(&j.dir);
                p.len() == 1 && p[0] != last_pid
            });
            p
        };
        last_pid = pids[0];
        if round % 2 == 1 {
            wait_d(&d, "some records", LONG, || !engine_records(&d).is_empty());
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(last_pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill journalctl");
    }
    settle(&d, &mut j, "system.journal");
    wait_d(&d, "10 restarts after SIGKILL in the status", LONG, || {
        let s = status(&d)["journal"].clone();
        s["restarts"].as_u64() >= Some(10)
            && s["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("signal"))
    });
}

#[test]
fn journalctl_missing_keeps_the_daemon_up_and_says_why() {
    let d = TestDaemon::start(
        "[journal]\nenabled = true\njournalctl = \"/nonexistent/journalctl\"\nextra_args = []\n",
    );
    wait_d(&d, "back-off in status", LONG, || {
        let s = status(&d)["journal"].clone();
        s["state"] == "backoff"
            && s["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("cannot run"))
    });
    let replies = d.send(&[ev(50000, "\"user\":\"x\"")]);
    assert!(replies[0].ok, "{replies:?}");
    wait_d(&d, "growing back-off", LONG, || {
        status(&d)["journal"]["backoff_ms"].as_u64() >= Some(4000)
    });
}

/// A journalctl stand-in that prints garbage, an over-long line and a
/// binary-field line before handing over to the real journalctl.
fn garbage_journalctl(dir: &Path, flood: bool) -> PathBuf {
    let path = dir.join("journalctl-garbage");
    let huge = dir.join("huge.line");
    let mut h = b"{\"MESSAGE\":\"".to_vec();
    h.extend(std::iter::repeat(b'x').take(3 << 20));
    h.extend_from_slice(b"\"}\n");
    std::fs::write(&huge, h).expect("huge line");
    let body = if flood {
        "while :; do echo 'garbage garbage'; done".to_string()
    } else {
        format!(
            "echo 'not json at all'\nprintf '\\377\\376 binary junk\\n'\ncat {huge}\n\
             echo '{{\"__CURSOR\":[1,2,3],\"MESSAGE\":[0,1,2]}}'\necho '[[[[[[[[[['\n\
             exec journalctl \"$@\"",
            huge = huge.display()
        )
    };
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn garbage_huge_lines_and_binary_fields_are_survived() {
    let Some((tmp, mut j)) = journal_or_skip() else {
        return;
    };
    j.start("nxengine@a.service");
    j.noise(10);
    j.fail_start("nxengine@a.service");
    j.flush("system.journal");
    let jc = garbage_journalctl(tmp.path(), false);
    let d = TestDaemon::start(&config(&j.dir, "all", &jc.display().to_string()));
    settle(&d, &mut j, "system.journal");
    wait_d(&d, "bad, over-long and binary lines counted", LONG, || {
        let s = status(&d)["journal"].clone();
        s["bad_lines"].as_u64() >= Some(4)
            && s["oversized_lines"].as_u64() >= Some(1)
            && s["array_fields"].as_u64() >= Some(1)
    });

    // A journalctl that prints nothing but garbage is restarted with back-off.
    let jc = garbage_journalctl(tmp.path(), true);
    let d2 = TestDaemon::start(&config(&j.dir, "all", &jc.display().to_string()));
    wait_d(&d2, "garbage restarts", LONG, || {
        let s = status(&d2)["journal"].clone();
        s["restarts"].as_u64() >= Some(2)
            && s["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("not journal entries"))
    });
    assert!(d2.send(&[ev(50000, "")])[0].ok);
}

#[test]
fn poll_mode_with_a_journal_file() {
    let Some((_tmp, mut j)) = journal_or_skip() else {
        return;
    };
    j.start("nxengine@a.service");
    j.noise(5);
    j.flush("one.journal");
    let file = j.dir.join("one.journal");
    let d = TestDaemon::start(&format!(
        "[journal]\nenabled = true\nextra_args = [\"--file\", {:?}]\nfirst_start = \"all\"\n",
        file.display().to_string()
    ));
    wait_d(&d, "first record", LONG, || engine_records(&d).len() == 1);
    j.stop("nxengine@a.service");
    j.crash("nxengine@a.service");
    settle(&d, &mut j, "one.journal");
    assert_eq!(status(&d)["journal"]["mode"], "poll");
}

#[test]
fn first_start_now_skips_history_but_not_entries_written_while_down() {
    let Some((_tmp, mut j)) = journal_or_skip() else {
        return;
    };
    j.start("nxengine@history.service");
    j.pending_expect.clear();
    j.flush("system.journal");
    let mut d = TestDaemon::start(&config(&j.dir, "now", "journalctl"));
    wait_d(&d, "the tail cursor saved", LONG, || {
        d.state_dir().join("journal-engine.cursor").exists()
    });
    d.kill9();
    // Written while the daemon is down, before it ever saw an entry.
    j.start("nxengine@a.service");
    j.flush("system.journal");
    d.restart();
    j.stop("nxengine@a.service");
    j.flush("system.journal");
    settle(&d, &mut j, "system.journal");
}

#[test]
fn first_start_all_includes_previous_boots() {
    let Some((_tmp, mut j)) = journal_or_skip() else {
        return;
    };
    let current = j.boot_id.clone();
    j.boot("22222222222222222222222222222222");
    j.start("nxengine@old.service");
    j.flush("system.journal");
    j.boot(&current);
    j.start("nxengine@new.service");
    j.flush("system.journal");
    let d = TestDaemon::start(&config(&j.dir, "all", "journalctl"));
    settle(&d, &mut j, "system.journal");
}

impl Journal {
    /// A syslog-style message of `program` (sshd, sudo, …) with `pid`.
    fn syslog(&mut self, program: &str, pid: u32, message: &str) -> u64 {
        let unit = if program == "sudo" {
            "session-4.scope"
        } else {
            "ssh.service"
        };
        let mut f = self.base(&pid.to_string(), program, unit);
        // What journald records for the real programs (the origin proof).
        let exe = if program == "sudo" {
            "/usr/bin/sudo"
        } else {
            "/usr/sbin/sshd"
        };
        f.push(("_EXE".into(), exe.as_bytes().to_vec()));
        f.push(("SYSLOG_IDENTIFIER".into(), program.as_bytes().to_vec()));
        f.push(("SYSLOG_PID".into(), pid.to_string().into_bytes()));
        f.push(("SYSLOG_FACILITY".into(), b"10".to_vec()));
        f.push(("_TRANSPORT".into(), b"syslog".to_vec()));
        f.push(("MESSAGE".into(), message.as_bytes().to_vec()));
        self.pending.push(f);
        self.realtime_us
    }
}

#[test]
fn ssh_and_sudo_from_the_journal_exactly_once() {
    let Some((_tmp, mut j)) = journal_or_skip() else {
        return;
    };
    let mut want = Vec::new();
    let mut add = |j: &mut Journal, program: &str, pid: u32, msg: &str, code: Option<u32>| {
        let t = j.syslog(program, pid, msg);
        if let Some(c) = code {
            want.push((c, time_of(t)));
        }
        j.noise(2);
    };
    add(&mut j, "sshd", 1201, "Accepted publickey for nexthink from 10.0.0.5 port 51234 ssh2: ED25519 SHA256:Uh3f9cQmXwJ0m3y6GzOC8V2iH0p4t3mEYvZzqYq3fFk", Some(60001));
    add(
        &mut j,
        "sshd",
        3001,
        "Failed password for nexthink from 192.0.2.44 port 40122 ssh2",
        Some(60002),
    );
    add(&mut j, "sudo", 5001, "nexthink : TTY=pts/0 ; PWD=/home/nexthink ; USER=root ; COMMAND=/usr/bin/systemctl restart nxengine@1.service", Some(60101));
    // Another account (filtered by `accounts`) and another program.
    add(
        &mut j,
        "sshd",
        1301,
        "Accepted publickey for alice from 10.0.0.9 port 50000 ssh2: ED25519 SHA256:x",
        None,
    );
    add(
        &mut j,
        "cron",
        777,
        "Accepted publickey for nexthink from 10.0.0.5 port 1 ssh2: ED25519 SHA256:x",
        None,
    );
    j.flush("system.journal");
    let config = format!(
        "[journal]\nenabled = false\nextra_args = [\"--directory\", {:?}]\nfirst_start = \"all\"\n\
         [auth]\nsource = \"journal\"\naccounts = [\"nexthink\"]\n",
        j.dir.display().to_string()
    );
    let mut d = TestDaemon::start(&config);
    let auth = |d: &TestDaemon| -> Vec<(u32, String)> {
        complete_records(d)
            .iter()
            .filter(|r| r.field("jsrc") == Some("auth"))
            .map(|r| (r.code, r.field("time").unwrap_or_default().to_string()))
            .collect()
    };
    wait_d(&d, "three auth records", LONG, || auth(&d).len() >= 3);
    // A crash and more messages: still exactly once.
    d.kill9();
    add(
        &mut j,
        "sshd",
        1215,
        "Disconnected from user nexthink 10.0.0.5 port 51234",
        Some(60003),
    );
    j.flush("system.journal");
    d.restart();
    wait_d(&d, "four auth records", LONG, || auth(&d).len() >= 4);
    let sentinel = j.syslog(
        "sudo",
        5002,
        "nexthink : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/true",
    );
    want.push((60101, time_of(sentinel)));
    j.flush("system.journal");
    wait_d(&d, "the sentinel", LONG, || auth(&d).len() >= want.len());
    assert_eq!(auth(&d), want, "stderr:\n{}", d.stderr());
    let recs = complete_records(&d);
    let first = recs
        .iter()
        .find(|r| r.field("jsrc") == Some("auth"))
        .expect("auth record");
    assert_eq!(first.account, "nexthink");
    assert!(first.field("cursor").is_some());
    wait_d(&d, "auth_journal status", LONG, || {
        status(&d)["auth_journal"]["state"] == "running"
    });
    let engine = status(&d)["journal"].clone();
    assert!(
        engine.is_null() || engine["state"] == "disabled",
        "the Engine follower is off: {engine}"
    );
}

#[test]
fn resumes_across_a_reboot() {
    let Some((_tmp, mut j)) = journal_or_skip() else {
        return;
    };
    j.boot("33333333333333333333333333333333");
    j.start("nxengine@a.service");
    j.flush("system.journal");
    let mut d = TestDaemon::start(&config(&j.dir, "boot", "journalctl"));
    wait_d(&d, "the first record", LONG, || {
        engine_records(&d).len() == 1
    });
    d.kill9();
    // The appliance shuts down (the Engine stops) and boots again while
    // the daemon is not running.
    j.stop("nxengine@a.service");
    j.noise(3);
    j.boot("44444444444444444444444444444444");
    j.noise(3);
    j.start("nxengine@a.service");
    j.flush("system.journal");
    d.restart();
    settle(&d, &mut j, "system.journal");
}

#[test]
fn sighup_changes_the_units_followed() {
    let Some((_tmp, mut j)) = journal_or_skip() else {
        return;
    };
    j.start("nxengine@a.service");
    j.start("nxengine@b.service");
    j.pending_expect.pop(); // b is not followed yet
                            // a's stop comes after b's start in the journal: once it is recorded,
                            // b's start was read under the old units (a reload applies from the
                            // next entry read, so without this marker the test raced the follower).
    j.stop("nxengine@a.service");
    j.flush("system.journal");
    let only_a = format!(
        "{}units = [\"nxengine@a.service\"]\n",
        config(&j.dir, "all", "journalctl")
    );
    let d = TestDaemon::start(&only_a);
    wait_d(&d, "a's start and stop", LONG, || {
        engine_records(&d).len() == 2
    });
    d.write_config(&config(&j.dir, "all", "journalctl"));
    d.signal(nix::sys::signal::Signal::SIGHUP);
    wait_d(&d, "the reload record", LONG, || {
        complete_records(&d).iter().any(|r| r.code == 60904)
    });
    j.start("nxengine@b.service");
    j.flush("system.journal");
    settle(&d, &mut j, "system.journal");
}

#[test]
fn exactly_once_with_a_json_log() {
    let Some((_tmp, mut j)) = journal_or_skip() else {
        return;
    };
    j.start("nxengine@a.service");
    j.flush("system.journal");
    let cfg = format!(
        "[log]\nformat = \"json\"\n{}",
        config(&j.dir, "all", "journalctl")
    );
    let mut d = TestDaemon::start(&cfg);
    for round in 0..4 {
        let before = engine_records(&d).len();
        j.restart("nxengine@a.service");
        j.fail_start("nxengine@b.service");
        j.flush("system.journal");
        wait_d(&d, "a new record", LONG, || {
            engine_records(&d).len() > before
        });
        d.kill9();
        if round == 2 {
            j.stop("nxengine@a.service");
            j.flush("system.journal");
        }
        d.restart();
    }
    settle(&d, &mut j, "system.journal");
    assert!(std::fs::read_to_string(d.active_log())
        .expect("log")
        .starts_with('{'));
    let log = d.stderr();
    assert!(
        log.contains("resumes from the audit log, newer than the cursor file"),
        "the JSON log's cursor= was never the newer one:\n{log}"
    );
}

/// Builds `unrelated` entries (every `systemd_every`-th one from systemd
/// about another unit, which journalctl's `_PID=1` match lets through; the
/// rest from other processes, which it filters out) with a few Engine
/// events spread through them, starts the daemon, and returns how long it
/// took to record them all.
fn catch_up(unrelated: usize, systemd_every: usize) -> Duration {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut j = Journal::new(&tmp.path().join("journal"));
    let chunk = 5000.min(unrelated);
    let mut written = 0;
    let mut n = 0;
    while written < unrelated {
        for i in 0..chunk {
            if i % systemd_every == 0 {
                j.ssh_started();
            } else {
                j.cron_line(i);
            }
        }
        written += chunk;
        n += 1;
        j.start(&format!("nxengine@e{n}.service"));
        j.flush("system.journal");
    }
    let built = Instant::now();
    let d = TestDaemon::start(&config(&j.dir, "boot", "journalctl"));
    let want = j.expect.len();
    wait_d(&d, "catch-up", Duration::from_secs(600), || {
        engine_records(&d).len() >= want
    });
    let took = built.elapsed();
    assert_exactly_once(&d, &j.expect);
    wait_d(&d, "the status", LONG, || {
        status(&d)["journal"]["records"].as_u64() == Some(want as u64)
    });
    let s = status(&d)["journal"].clone();
    eprintln!(
        "catch-up of {unrelated} unrelated entries (1 in {systemd_every} from systemd) + {want} Engine entries: \
         {took:?} (daemon start included); journalctl delivered {} entries",
        s["entries"]
    );
    took
}

#[test]
fn catch_up_5000_unrelated_entries() {
    if !tools() {
        return;
    }
    // The figure is printed, not asserted: timings belong in benchmarks.
    catch_up(5000, 5);
}

#[test]
#[ignore = "benchmark: 100,000 entries; run with --ignored --nocapture"]
fn catch_up_100k() {
    if !tools() {
        return;
    }
    catch_up(100_000, 5);
}

#[test]
#[ignore = "benchmark: 100,000 entries all from systemd; run with --ignored --nocapture"]
fn catch_up_100k_all_from_systemd() {
    if !tools() {
        return;
    }
    catch_up(100_000, 1);
}

/// The boot ID the sandboxed journalctl reads from /proc (the host's, in
/// the kernel's format).
const KERNEL_BOOT_ID: &str = "f00dfeed-0000-4000-8000-00000000beef";

/// A journalctl that reads `jroot` as this machine's system journal
/// (`/var/log/journal`) and sees a kernel boot ID the journal does not
/// have: what the daemon's journalctl sees in a systemd-nspawn container,
/// where the unit's `ProtectProc=`/`ProtectKernelTunables=` mount a fresh
/// `/proc` without nspawn's boot-ID overmount (issue 12). Needs root (a
/// private mount namespace).
fn sandboxed_journalctl(dir: &Path, jroot: &Path) -> PathBuf {
    let boot_file = dir.join("kernel-boot-id");
    std::fs::write(&boot_file, format!("{KERNEL_BOOT_ID}\n")).expect("boot id");
    let path = dir.join("journalctl-sandboxed");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nexec unshare --mount sh -c 'mount --bind \"$1\" /proc/sys/kernel/random/boot_id && \
             mount --bind \"$2\" /var/log/journal && shift 2 && exec journalctl \"$@\"' sh {} {} \"$@\"\n",
            boot_file.display(),
            jroot.display()
        ),
    )
    .expect("script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn first_start_from_boot_in_a_container_sandbox_follows_the_journals_boot() {
    if !crate::util::require_root("first_start_from_boot_in_a_container_sandbox") {
        return;
    }
    let Some((tmp, _)) = journal_or_skip() else {
        return;
    };
    std::fs::create_dir_all("/var/log/journal").expect("/var/log/journal");
    let machine_id = std::fs::read_to_string("/etc/machine-id").expect("/etc/machine-id");
    let machine_id = machine_id.trim();
    let jroot = tmp.path().join("var-log-journal");
    let mut j = Journal::new(&jroot.join(machine_id));
    j.machine_id = machine_id.to_string();
    // An earlier boot, then the container's own boot: neither is the boot
    // ID journalctl reads from /proc.
    j.boot("0badb0070badb0070badb0070badb007");
    j.start("nxengine@old.service");
    j.pending_expect.clear();
    j.flush("system.journal");
    j.boot("c0a7a1e4c0a7a1e4c0a7a1e4c0a7a1e4");
    j.noise(5);
    j.start("nxengine@Engine-01.service");
    j.flush("system.journal");
    let jc = sandboxed_journalctl(tmp.path(), &jroot);
    let d = TestDaemon::start(&format!(
        "[journal]\nenabled = true\njournalctl = {:?}\nextra_args = []\nfirst_start = \"boot\"\n",
        jc.display().to_string()
    ));
    // More while it follows.
    j.stop("nxengine@Engine-01.service");
    j.flush("system.journal");
    settle(&d, &mut j, "system.journal");
    assert!(engine_records(&d)
        .iter()
        .all(|r| r.field("unit") != Some("nxengine@old.service")));
    wait_d(&d, "the status after the records", LONG, || {
        status(&d)["journal"]["records"].as_u64() == Some(j.expect.len() as u64)
    });
    let s = status(&d)["journal"].clone();
    assert_eq!(s["boot_id"], "c0a7a1e4c0a7a1e4c0a7a1e4c0a7a1e4", "{s}");
    // The daemon itself is not in the sandbox here: it names the boot ID
    // it reads, which the journal does not have.
    let kernel = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot_id");
    assert_eq!(
        s["kernel_boot_id"].as_str(),
        Some(kernel.trim().replace('-', "").as_str()),
        "{s}"
    );
    assert_eq!(s["warning"], serde_json::Value::Null, "{s}");
}

#[test]
fn a_follower_that_reads_nothing_says_so_in_the_status() {
    let Some((_tmp, mut j)) = journal_or_skip() else {
        return;
    };
    j.start("nxengine@a.service");
    j.flush("system.journal");
    // "now": the history is skipped, so nothing is read until an entry comes.
    let d = TestDaemon::start(&format!(
        "{}quiet_warning = \"1s\"\n",
        config(&j.dir, "now", "journalctl")
    ));
    wait_d(&d, "the quiet warning", LONG, || {
        status(&d)["journal"]["warning"]
            .as_str()
            .is_some_and(|w| w.starts_with("no journal entry for ") && w.ends_with(" since start"))
    });
    j.pending_expect.clear();
    j.expect.clear();
    j.stop("nxengine@a.service");
    j.flush("system.journal");
    wait_d(&d, "the record", LONG, || engine_records(&d).len() == 1);
    // Read something: never "since start" again (it may say "since the
    // last one" once a second has passed).
    wait_d(&d, "the status after the entry", LONG, || {
        let s = status(&d)["journal"].clone();
        s["entries"].as_u64() >= Some(1)
            && !s["warning"]
                .as_str()
                .is_some_and(|w| w.ends_with("since start"))
    });
}

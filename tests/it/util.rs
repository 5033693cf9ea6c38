//! Test harness: start the real `nxauditd` in a private temp dir, talk to
//! it over its socket, read its log back, run the real `nxaudit` CLI.
//!
//! Everything waits on predicates with a timeout (`wait_for`), never on
//! fixed sleeps. Children are killed when the harness is dropped, and a
//! failing wait prints the daemon's stderr so the cause is visible.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nxaudit::protocol::Reply;
use nxaudit::record::ParsedRecord;

/// Path of the daemon binary under test.
pub fn daemon_bin() -> &'static str {
    env!("CARGO_BIN_EXE_nxauditd")
}

/// Path of the CLI binary under test.
pub fn cli_bin() -> &'static str {
    env!("CARGO_BIN_EXE_nxaudit")
}

/// Waits until `f` is true; panics with `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    while !f() {
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Like [`wait_for`] but returns false instead of panicking.
pub fn try_wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    while !f() {
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    true
}

/// Whether we run as root (some tests need it and skip otherwise).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A daemon in its own temp dir.
pub struct TestDaemon {
    /// The `--base-dir`.
    pub base: PathBuf,
    /// The config file used.
    pub config_path: PathBuf,
    child: Option<Child>,
    stderr_path: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

/// Adds disabled `[journal]`, `[auth]`, `[forward]` sections unless the
/// test's config mentions them, so tests never touch the host's journal
/// or syslog by accident.
pub fn test_config(config_toml: &str) -> String {
    let mut text = config_toml.to_string();
    if !text.contains("[journal]") {
        text.push_str("\n[journal]\nenabled = false\n");
    }
    if !text.contains("[auth]") {
        text.push_str("\n[auth]\nsource = \"off\"\n");
    }
    if !text.contains("[forward]") {
        text.push_str("\n[forward]\nenabled = false\n");
    }
    text
}

impl TestDaemon {
    /// Starts a daemon in a new temp dir with `config_toml` (see [`test_config`]).
    pub fn start(config_toml: &str) -> TestDaemon {
        let dir = tempfile::Builder::new()
            .prefix("nxaudit-it-")
            .tempdir()
            .expect("temp dir");
        let base = dir.path().to_path_buf();
        let mut d = TestDaemon::prepare(&base, config_toml);
        d._dir = Some(dir);
        d.spawn();
        d
    }

    /// Starts a daemon in an existing directory (kept after the test).
    pub fn start_in(base: &Path, config_toml: &str) -> TestDaemon {
        let mut d = TestDaemon::prepare(base, config_toml);
        d.spawn();
        d
    }

    fn prepare(base: &Path, config_toml: &str) -> TestDaemon {
        std::fs::create_dir_all(base).expect("base dir");
        let config_path = base.join("nxauditd.toml");
        std::fs::write(&config_path, test_config(config_toml)).expect("write config");
        TestDaemon {
            base: base.to_path_buf(),
            config_path,
            child: None,
            stderr_path: base.join("nxauditd.stderr"),
            _dir: None,
        }
    }

    /// Rewrites the config file (for SIGHUP tests).
    pub fn write_config(&self, config_toml: &str) {
        std::fs::write(&self.config_path, test_config(config_toml)).expect("write config");
    }

    /// The daemon's command line, for tests that spawn it themselves.
    pub fn command(&self) -> Command {
        let mut c = Command::new(daemon_bin());
        c.arg("--base-dir")
            .arg(&self.base)
            .arg("--config")
            .arg(&self.config_path)
            .env("NXAUDIT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        c
    }

    fn spawn(&mut self) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .expect("stderr file");
        let child = self
            .command()
            .stderr(stderr)
            .spawn()
            .expect("spawn nxauditd");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until the socket accepts connections (or the daemon died).
    pub fn wait_ready(&mut self) {
        let sock = self.socket();
        let start = Instant::now();
        loop {
            if UnixStream::connect(&sock).is_ok() {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("nxauditd exited early ({st}):\n{}", self.stderr());
                }
            }
            if start.elapsed() > Duration::from_secs(20) {
                panic!("nxauditd not ready after 20 s:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts again in the same dir with the same config.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart while running");
        self.spawn();
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, sig).expect("signal");
    }

    /// SIGTERM and wait (at most 10 s) for the exit status.
    pub fn term(&mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.term_reap()
    }

    /// Waits (at most 10 s) for an exit already requested by a signal.
    pub fn term_reap(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st;
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = c.kill();
                panic!("nxauditd did not exit within 10 s:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether the process is still alive.
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// What the daemon wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The event socket.
    pub fn socket(&self) -> PathBuf {
        self.base.join("audit.sock")
    }

    /// The log directory.
    pub fn log_dir(&self) -> PathBuf {
        self.base.join("log")
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.base.join("state")
    }

    /// The active log file.
    pub fn active_log(&self) -> PathBuf {
        self.log_dir().join("audit.log")
    }

    /// A new client connection.
    pub fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(self.socket()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        s
    }

    /// Sends `lines` pipelined on one connection; returns one reply per line.
    pub fn send(&self, lines: &[String]) -> Vec<Reply> {
        let mut raw = Vec::new();
        for l in lines {
            raw.extend_from_slice(l.as_bytes());
            raw.push(b'\n');
        }
        self.send_raw(&raw, lines.len())
    }

    /// Sends raw bytes and reads `n` replies.
    pub fn send_raw(&self, bytes: &[u8], n: usize) -> Vec<Reply> {
        let s = self.connect();
        let mut w = s.try_clone().expect("clone");
        let data = bytes.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&data);
        });
        let mut r = BufReader::new(s);
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let mut line = String::new();
            let got = r.read_line(&mut line).expect("read reply");
            assert!(got > 0, "connection closed after {i} of {n} replies");
            out.push(
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad reply {line:?}: {e}")),
            );
        }
        let _ = writer.join();
        out
    }

    /// Every record of every file (compressed too), in order.
    pub fn records(&self) -> Vec<ParsedRecord> {
        read_records(&self.log_dir())
    }

    /// Runs `nxaudit --base-dir BASE --config CONFIG <args>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(cli_bin())
            .arg("--base-dir")
            .arg(&self.base)
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .output()
            .expect("run nxaudit")
    }

    /// Runs the CLI with `stdin` piped in.
    pub fn cli_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut c = Command::new(cli_bin())
            .arg("--base-dir")
            .arg(&self.base)
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nxaudit");
        let mut i = c.stdin.take().expect("stdin");
        let data = stdin.to_vec();
        let t = std::thread::spawn(move || {
            let _ = i.write_all(&data);
        });
        let out = c.wait_with_output().expect("wait nxaudit");
        let _ = t.join();
        out
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Reads every record of a log dir, in file order (compressed files too);
/// a last line still being written is not returned.
pub fn read_records(dir: &Path) -> Vec<ParsedRecord> {
    let mut out = Vec::new();
    for f in nxaudit::logset::list(dir).expect("list logs") {
        let reader = nxaudit::logset::open(&f).expect("open log");
        for line in nxaudit::logset::Lines::new(reader) {
            let line = line.expect("read log");
            out.push(nxaudit::record::parse_line(&line).unwrap_or_else(|e| {
                panic!("unparsable line in {}: {e}\n{line}", f.path.display())
            }));
        }
    }
    out
}

/// Formats an event line.
pub fn ev(code: u32, extra: &str) -> String {
    if extra.is_empty() {
        format!("{{\"code\":{code}}}")
    } else {
        format!("{{\"code\":{code},{extra}}}")
    }
}

/// Asserts a process output succeeded, printing everything if not.
pub fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `cmd` and returns (printable command line, output).
pub fn run(cmd: &mut Command) -> (String, Output) {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    (shown, out)
}

/// Everything a failing assertion about `cmd`'s output should show.
pub fn explain(cmd: &str, out: &Output) -> String {
    format!(
        "command: {cmd}\nstatus: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether a missing tool or missing root must fail the test instead of
/// skipping it: set by `.ci/run` (and on by default as root, which is how
/// CI runs), so CI can never pass by skipping.
pub fn must_not_skip() -> bool {
    std::env::var_os("NXAUDIT_REQUIRE_ALL").is_some_and(|v| v != "0") || is_root()
}

/// Root-only test guard: returns false (skip) for a non-root developer
/// run, panics when skipping is not allowed (CI).
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        !must_not_skip(),
        "{test} needs root and NXAUDIT_REQUIRE_ALL is set"
    );
    eprintln!("{test}: skipped (needs root)");
    false
}

/// A real local account for attack tests: created with `useradd` the first
/// time (needs root), reused afterwards. Returns `(uid, gid)`.
pub fn test_user(name: &str) -> (u32, u32) {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let lookup = || {
        nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
    };
    if let Some(ids) = lookup() {
        return ids;
    }
    let out = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ])
        .output()
        .expect("run useradd");
    // Another test process may have created it meanwhile (exit 9).
    if let Some(ids) = lookup() {
        return ids;
    }
    panic!("useradd {name} failed: {}", explain("useradd", &out));
}

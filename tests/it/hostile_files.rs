//! Attacks on the daemon's files (docs/record-format.md "Start-up" and "Files", §9): links
//! planted in the log and state directories, directories other users can
//! write, a careless umask, a planted pid, a second instance. Each test
//! attacks the real binaries and checks that no file outside the two
//! directories is written or echoed.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use nxaudit::logset;

use crate::util::{
    assert_ok, cli_bin, daemon_bin, ev, require_root, test_config, test_user, try_wait_for,
    wait_for, TestDaemon,
};

const SECRET: &str = "SECRET-content-of-a-root-file\n";

/// A daemon started by the test itself (own command line, own config);
/// killed on drop.
struct Spawned {
    child: Child,
    stderr: PathBuf,
}

impl Spawned {
    fn start(mut cmd: Command, stderr: PathBuf) -> Spawned {
        let f = std::fs::File::create(&stderr).expect("stderr file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f)
            .env("NXAUDIT_LOG", "info")
            .spawn()
            .expect("spawn nxauditd");
        Spawned { child, stderr }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The exit status if it exits within 20 s (None: still running).
    fn exit_within_20s(&mut self) -> Option<ExitStatus> {
        let mut st = None;
        try_wait_for(Duration::from_secs(20), || {
            st = self.child.try_wait().ok().flatten();
            st.is_some()
        });
        st
    }

    fn wait_socket(&mut self, sock: &Path) {
        wait_for("daemon ready", Duration::from_secs(20), || {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("nxauditd exited early ({st}):\n{}", self.stderr());
            }
            std::os::unix::net::UnixStream::connect(sock).is_ok()
        });
    }

    fn term(&mut self) -> ExitStatus {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        self.exit_within_20s().expect("nxauditd exits on SIGTERM")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config with explicit paths under `base` (no `--base-dir`, which clears
/// the log group) and `extra` appended.
fn explicit_config(base: &Path, extra: &str) -> PathBuf {
    let b = base.display();
    let text = format!(
        "socket = \"{b}/audit.sock\"\nsyslog_socket = \"{b}/syslog.sock\"\n\
         log_dir = \"{b}/log\"\nstate_dir = \"{b}/state\"\n{extra}"
    );
    let path = base.join("nxauditd.toml");
    std::fs::write(&path, test_config(&text)).expect("write config");
    path
}

/// A root-owned 0640 file outside the daemon's directories.
fn victim(base: &Path, name: &str) -> PathBuf {
    let p = base.join(name);
    std::fs::write(&p, SECRET).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    p
}

fn assert_untouched(p: &Path) {
    assert_eq!(
        std::fs::read_to_string(p).unwrap(),
        SECRET,
        "{} was written through a link",
        p.display()
    );
    let m = std::fs::metadata(p).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (0, 0, 0o640),
        "owner, group or mode of {} changed",
        p.display()
    );
}

fn daemon_with(config: &Path) -> Command {
    let mut c = Command::new(daemon_bin());
    c.arg("--config").arg(config);
    c
}

#[test]
fn symlinked_audit_log_is_refused_and_its_target_untouched() {
    if !require_root("symlinked_audit_log_is_refused_and_its_target_untouched") {
        return;
    }
    // The readers' group the daemon gives its files: a real account's group.
    test_user("nxa-reader");
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let target = victim(base, "shadow-like");
    let log = base.join("log");
    std::fs::create_dir(&log).unwrap();
    std::os::unix::fs::symlink(&target, log.join("audit.log")).unwrap();
    let cfg = explicit_config(
        base,
        "[listener]\ngroup = \"\"\n[log]\ngroup = \"nxa-reader\"\n",
    );
    let mut d = Spawned::start(daemon_with(&cfg), base.join("err"));
    let st = d.exit_within_20s();
    assert!(
        st.is_some_and(|s| !s.success()),
        "a linked audit.log must stop the daemon ({st:?}):\n{}",
        d.stderr()
    );
    let err = d.stderr();
    assert!(
        err.contains("audit.log is a symbolic link"),
        "clear error expected:\n{err}"
    );
    assert!(!err.contains("SECRET"), "content echoed:\n{err}");
    assert_untouched(&target);
}

#[test]
fn planted_state_links_are_never_written_nor_echoed() {
    if !require_root("planted_state_links_are_never_written_nor_echoed") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let state = base.join("state");
    std::fs::create_dir(&state).unwrap();
    let pos_target = victim(base, "pos-target");
    let pos_tmp_target = victim(base, "pos-tmp-target");
    let status_tmp_target = victim(base, "status-tmp-target");
    let link = |t: &Path, name: &str| std::os::unix::fs::symlink(t, state.join(name)).unwrap();
    link(&pos_target, "forward.pos");
    link(&pos_tmp_target, "forward.pos.tmp");
    link(&status_tmp_target, "status.tmp");
    // Forwarding on (to a socket nobody listens on): it reads and saves
    // forward.pos at start.
    let cfg = explicit_config(
        base,
        &format!(
            "[listener]\ngroup = \"\"\n[forward]\nenabled = true\ntarget = \"{}\"\n",
            base.join("nobody.sock").display()
        ),
    );
    let mut d = Spawned::start(daemon_with(&cfg), base.join("err"));
    d.wait_socket(&base.join("audit.sock"));
    // The forwarder has replaced the link with its own position file, and
    // the status file has been published once.
    wait_for("forward.pos replaced", Duration::from_secs(20), || {
        std::fs::symlink_metadata(state.join("forward.pos")).is_ok_and(|m| m.file_type().is_file())
    });
    wait_for("status.json written", Duration::from_secs(20), || {
        state.join("status.json").exists()
    });
    assert!(d.term().success(), "{}", d.stderr());
    let err = d.stderr();
    assert!(
        !err.contains("SECRET"),
        "a link's content was echoed:\n{err}"
    );
    assert!(
        err.contains("forward.pos is a symbolic link"),
        "the refused link is reported:\n{err}"
    );
    for t in [&pos_target, &pos_tmp_target, &status_tmp_target] {
        assert_untouched(t);
    }

    // The journal cursor, through its own store.
    let cursor_target = victim(base, "cursor-target");
    let cursor_tmp_target = victim(base, "cursor-tmp-target");
    link(&cursor_target, "engine.cursor");
    link(&cursor_tmp_target, "engine.cursor.tmp");
    let store = nxaudit::sources::journal::cursor::CursorStore::new(state.join("engine.cursor"));
    let e = store.load().expect_err("a linked cursor file is refused");
    assert!(!e.to_string().contains("SECRET"), "echoed: {e}");
    store
        .save(&nxaudit::sources::journal::cursor::Position {
            cursor: None,
            log_seq: 7,
        })
        .unwrap();
    assert_untouched(&cursor_target);
    assert_untouched(&cursor_tmp_target);
    assert_eq!(store.load().unwrap().unwrap().log_seq, 7);
}

#[test]
fn predictable_compression_temp_link_is_not_followed() {
    if !require_root("predictable_compression_temp_link_is_not_followed") {
        return;
    }
    let mut d = TestDaemon::start("[log]\ncompress = \"zstd\"\n");
    d.send(&[ev(20101, "\"user\":\"a\"")]);
    assert!(d.term().success());
    d.restart();
    // After a restart the active file is renamed after its first record:
    // the compression temp name of old was fully predictable from it.
    let first = crate::util::read_records(&d.log_dir())
        .into_iter()
        .next()
        .unwrap();
    let name = logset::rotated_name(first.ts, first.seq);
    let target = victim(&d.base, "compress-target");
    std::os::unix::fs::symlink(&target, d.log_dir().join(format!("{name}.zst.tmp"))).unwrap();
    assert_ok("rotate", &d.cli(&["rotate"]));
    wait_for("compressed", Duration::from_secs(30), || {
        d.log_dir().join(format!("{name}.zst")).exists() && !d.log_dir().join(&name).exists()
    });
    assert_untouched(&target);
    assert_ok("verify", &d.cli(&["verify"]));
}

fn refused_dir(which: &str, mode: u32, gid: Option<u32>) {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let p = base.join(which);
    std::fs::create_dir(&p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    if let Some(g) = gid {
        nix::unistd::chown(&p, None, Some(nix::unistd::Gid::from_raw(g))).unwrap();
    }
    std::fs::write(base.join("c.toml"), test_config("")).unwrap();
    let mut cmd = Command::new(daemon_bin());
    cmd.arg("--base-dir")
        .arg(base)
        .arg("--config")
        .arg(base.join("c.toml"));
    let mut d = Spawned::start(cmd, base.join("err"));
    let st = d.exit_within_20s();
    let err = d.stderr();
    assert!(
        st.is_some_and(|s| !s.success()),
        "{which} {mode:o} accepted ({st:?}):\n{err}"
    );
    assert!(
        err.contains(&format!("directory {}", p.display())) && err.contains(&format!("{mode:04o}")),
        "the error names the directory and its mode:\n{err}"
    );
    assert!(
        !base.join("log/audit.log").exists(),
        "nothing written before refusing"
    );
}

#[test]
fn directories_writable_by_other_users_are_refused() {
    if !require_root("directories_writable_by_other_users_are_refused") {
        return;
    }
    let (_, gid) = test_user("nxa-intruder");
    refused_dir("log", 0o777, None);
    refused_dir("log", 0o1777, None);
    refused_dir("state", 0o777, None);
    // Group-writable by another account's group.
    refused_dir("log", 0o770, Some(gid));
    refused_dir("state", 0o770, Some(gid));
}

#[test]
fn umask_000_start_still_creates_private_files() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    std::fs::write(
        base.join("c.toml"),
        test_config("[log]\ncompress = \"zstd\"\n[forward]\nenabled = true\ntarget = \"/nonexistent/fwd.sock\"\n"),
    )
    .unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(daemon_bin())
        .arg("--base-dir")
        .arg(base)
        .arg("--config")
        .arg(base.join("c.toml"));
    let mut d = Spawned::start(cmd, base.join("err"));
    d.wait_socket(&base.join("audit.sock"));
    let cli = |args: &[&str]| {
        Command::new(cli_bin())
            .arg("--base-dir")
            .arg(base)
            .arg("--config")
            .arg(base.join("c.toml"))
            .args(args)
            .output()
            .unwrap()
    };
    assert_ok("send", &cli(&["send", "--code", "20101", "--user", "u"]));
    assert_ok("rotate", &cli(&["rotate"]));
    let state = base.join("state");
    wait_for(
        "compressed, status and position written",
        Duration::from_secs(30),
        || {
            let zst = std::fs::read_dir(base.join("log"))
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".log.zst"));
            zst && state.join("status.json").exists() && state.join("forward.pos").exists()
        },
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&base.join("log")), 0o750, "log dir");
    assert_eq!(mode(&state), 0o750, "state dir");
    let mut files: Vec<PathBuf> = std::fs::read_dir(base.join("log"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.extend(
        std::fs::read_dir(&state)
            .unwrap()
            .flatten()
            .map(|e| e.path()),
    );
    assert!(files.len() >= 6, "{files:?}");
    for f in files {
        let m = mode(&f);
        assert_eq!(m & !0o640, 0, "{} has mode {m:04o}", f.display());
    }
    assert!(d.term().success(), "{}", d.stderr());
}

/// Whether `child` ended by `sig`. It is sent SIGTERM first: a SIGUSR1
/// sent earlier is either fatal already or pending, and a pending SIGUSR1
/// (10) is delivered before SIGTERM (15).
fn ended_by_term(child: &mut Child) -> bool {
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let st = waitpid(pid, None).expect("reap");
    matches!(st, WaitStatus::Signaled(_, Signal::SIGTERM, _))
}

#[test]
fn rotate_never_signals_a_planted_pid() {
    if !require_root("rotate_never_signals_a_planted_pid") {
        return;
    }
    let (uid, gid) = test_user("nxa-bystander");
    let mut d = TestDaemon::start("");
    // An unrelated process of another user; its pid planted in the pid file.
    let mut bystander = {
        use std::os::unix::process::CommandExt;
        Command::new("sleep")
            .arg("1000")
            .uid(uid)
            .gid(gid)
            .spawn()
            .unwrap()
    };
    let pidf = d.state_dir().join("nxauditd.pid");
    std::fs::write(&pidf, format!("{}\n", bystander.id())).unwrap();
    // Running: rotate reaches the daemon, not the planted pid.
    assert_ok("rotate (running)", &d.cli(&["rotate"]));
    assert!(d.term().success());
    std::fs::write(&pidf, format!("{}\n", bystander.id())).unwrap();
    let out = d.cli(&["rotate", "--timeout", "1"]);
    assert!(!out.status.success(), "rotate without a daemon succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not running"), "{err}");
    let status = d.cli(&["status"]);
    assert_eq!(status.status.code(), Some(3), "status says not running");
    assert!(
        ended_by_term(&mut bystander),
        "the planted process was signalled"
    );
}

#[test]
fn status_is_not_fooled_by_a_zombie_after_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    std::fs::write(base.join("c.toml"), test_config("")).unwrap();
    let args = |c: &mut Command| {
        c.arg("--base-dir")
            .arg(base)
            .arg("--config")
            .arg(base.join("c.toml"));
    };
    let mut cmd = Command::new(daemon_bin());
    args(&mut cmd);
    let mut d = Spawned::start(cmd, base.join("err"));
    d.wait_socket(&base.join("audit.sock"));
    let status = || {
        let mut c = Command::new(cli_bin());
        args(&mut c);
        c.arg("status").output().unwrap().status.code()
    };
    assert_eq!(status(), Some(0), "running");
    // SIGKILL without reaping: the daemon is a zombie whose pid still exists.
    kill(Pid::from_raw(d.child.id() as i32), Signal::SIGKILL).unwrap();
    wait_for("status says not running", Duration::from_secs(20), || {
        status() == Some(3)
    });
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn second_instance_exits_naming_the_pid_and_writes_nothing() {
    let mut d = TestDaemon::start("");
    for r in d.send(&[ev(20101, "\"user\":\"a\""), ev(20101, "\"user\":\"b\"")]) {
        assert!(r.ok, "{r:?}");
    }
    let log_before = snapshot(&d.log_dir());
    let lock = d.state_dir().join("nxauditd.lock");
    let lock_before = std::fs::read(&lock).unwrap();
    let out = d.command().output().expect("second nxauditd");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second instance exit: {err}");
    assert!(
        err.contains(&format!("already running, pid {}", d.pid())),
        "names the running pid:\n{err}"
    );
    assert_eq!(snapshot(&d.log_dir()), log_before, "the log changed");
    assert_eq!(std::fs::read(&lock).unwrap(), lock_before);
    // The running daemon goes on with the next seq.
    for r in d.send(&[ev(20101, "\"user\":\"c\"")]) {
        assert!(r.ok, "{r:?}");
    }
    assert!(d.term().success());
    assert_ok("verify", &d.cli(&["verify"]));
}

/// `seal init` run by root before the daemon ever ran (no state directory
/// yet): the key must not stay root's, or the daemon, running as its own
/// user, could not read it and would refuse to start. It is owned like the
/// directory the operator made for it, mode 0600, and the operator is told.
#[test]
fn seal_init_before_the_first_start_gives_the_key_to_its_directorys_owner() {
    if !require_root("seal_init_before_the_first_start_gives_the_key_to_its_directorys_owner") {
        return;
    }
    let (uid, gid) = test_user("nxa-t-sealer");
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("keys dir");
    std::os::unix::fs::chown(&keys, Some(uid), Some(gid)).expect("chown keys dir");
    let base = dir.path().join("never-started");
    let key = keys.join("seal.key");
    let out = Command::new(cli_bin())
        .arg("--base-dir")
        .arg(&base)
        .args(["seal", "init", "--key-file"])
        .arg(&key)
        .output()
        .expect("run seal init");
    assert_ok("seal init", &out);
    let m = std::fs::symlink_metadata(&key).expect("key made");
    assert_eq!(
        (m.uid(), m.gid()),
        (uid, gid),
        "key owned like its directory"
    );
    assert_eq!(m.mode() & 0o777, 0o600);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist yet"), "{err}");
    assert!(!base.exists(), "seal init made the base directory");
}

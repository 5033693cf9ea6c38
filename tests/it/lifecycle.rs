//! Operating it for years: rotation under load, compression, crashes at
//! any point of a rotation, retention, a real full disk, SIGHUP, socket
//! activation, status, and `tail -f` across rotations.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use nxaudit::logset::{self, Compression};

use crate::util::*;

/// Sends `n` events with ids `{tag}-{i}` from `clients` connections;
/// returns seq → id of every ack.
fn load(d: &TestDaemon, clients: usize, n: usize, tag: &str) -> HashMap<u64, String> {
    let acked = Arc::new(Mutex::new(HashMap::new()));
    std::thread::scope(|s| {
        for c in 0..clients {
            let acked = acked.clone();
            s.spawn(move || {
                let ids: Vec<String> = (0..n).map(|i| format!("{tag}-{c}-{i}")).collect();
                let lines: Vec<String> = ids
                    .iter()
                    .map(|id| ev(20101, &format!("\"user\":\"u{c}\",\"id\":\"{id}\"")))
                    .collect();
                let replies = d.send(&lines);
                let mut a = acked.lock().unwrap();
                for (r, id) in replies.into_iter().zip(ids) {
                    a.insert(r.seq.expect("acked"), id);
                }
            });
        }
    });
    Arc::try_unwrap(acked).unwrap().into_inner().unwrap()
}

fn assert_exactly_once(d: &TestDaemon, acked: &HashMap<u64, String>) {
    let recs = d.records();
    let mut count: HashMap<u64, usize> = HashMap::new();
    for r in &recs {
        *count.entry(r.seq).or_default() += 1;
    }
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.seq, recs[0].seq + i as u64, "gap-free seq");
    }
    for (seq, id) in acked {
        assert_eq!(count.get(seq), Some(&1), "seq {seq} exactly once");
        let r = recs.iter().find(|r| r.seq == *seq).unwrap();
        assert_eq!(r.field("id"), Some(id.as_str()));
    }
}

fn compressed_all(d: &TestDaemon) -> bool {
    logset::list(&d.log_dir())
        .unwrap()
        .iter()
        .all(|f| f.active || f.compression != Compression::Plain)
}

#[test]
fn rotation_under_64_client_load_keeps_every_record_once() {
    let d = TestDaemon::start(
        "[log]\nrotate_size = \"64KiB\"\nmax_files = 0\nmax_total_bytes = 0\nmin_free_bytes = 0\n",
    );
    let acked = std::thread::scope(|s| {
        let h = s.spawn(|| load(&d, 64, 100, "rot"));
        // Explicit rotations too, while the load runs.
        for _ in 0..3 {
            d.signal(Signal::SIGUSR1);
        }
        assert_ok("nxaudit rotate", &d.cli(&["rotate"]));
        h.join().unwrap()
    });
    assert_eq!(acked.len(), 6400);
    wait_for(
        "compression of rotated files",
        Duration::from_secs(60),
        || compressed_all(&d),
    );
    let files = logset::list(&d.log_dir()).unwrap();
    // Size rotation happens between group commits, so big batches make
    // fewer, larger files; the point is that it happened under load.
    assert!(files.len() > 4, "rotated: {} files", files.len());
    assert_exactly_once(&d, &acked);
    // Each file after the first starts with 60903 naming its predecessor.
    for w in files.windows(2) {
        let first = read_records_of(&w[1])
            .into_iter()
            .next()
            .expect("non-empty file");
        assert_eq!(
            first.code,
            60903,
            "{} starts with 60903",
            w[1].path.display()
        );
        let prev_name = w[0]
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            prev_name.starts_with(first.field("previous").unwrap()),
            "{prev_name}"
        );
    }
    let out = d.cli(&["verify"]);
    assert_ok("verify over compressed files", &out);
}

fn read_records_of(f: &logset::LogFile) -> Vec<nxaudit::record::ParsedRecord> {
    logset::Lines::new(logset::open(f).unwrap())
        .map(|l| nxaudit::record::parse_line(&l.unwrap()).unwrap())
        .collect()
}

#[test]
fn gzip_compression_is_read_back() {
    let d = TestDaemon::start("[log]\ncompress = \"gzip\"\n");
    d.send(&[ev(50000, "")]);
    assert_ok("rotate", &d.cli(&["rotate"]));
    wait_for("gzip file", Duration::from_secs(30), || {
        logset::list(&d.log_dir())
            .unwrap()
            .iter()
            .any(|f| f.compression == Compression::Gzip)
    });
    assert_ok("verify", &d.cli(&["verify"]));
}

#[test]
fn kill9_during_rotation_and_compression() {
    let mut d = TestDaemon::start(
        "[log]\nrotate_size = \"8KiB\"\nmax_files = 0\nmax_total_bytes = 0\nmin_free_bytes = 0\n",
    );
    let mut acked = HashMap::new();
    for round in 0..8 {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let got = Arc::new(Mutex::new(HashMap::new()));
        let sock = d.socket();
        let h = {
            let stop = stop.clone();
            let got = got.clone();
            std::thread::spawn(move || {
                let Ok(s) = std::os::unix::net::UnixStream::connect(&sock) else {
                    return;
                };
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = format!("k{round}-{i}");
                    i += 1;
                    if w.write_all(
                        format!("{}\n", ev(20101, &format!("\"id\":\"{id}\""))).as_bytes(),
                    )
                    .is_err()
                    {
                        return;
                    }
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                        if let Some(seq) = v["seq"].as_u64() {
                            got.lock().unwrap().insert(seq, id);
                        }
                    }
                }
            })
        };
        // Kill at a different point of each round: after more and more acks.
        let target = 20 + round * 37;
        wait_for("acks", Duration::from_secs(30), || {
            got.lock().unwrap().len() >= target
        });
        for _ in 0..round % 3 {
            d.signal(Signal::SIGUSR1);
        }
        d.kill9();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = h.join();
        acked.extend(got.lock().unwrap().drain());
        d.restart();
    }
    wait_for("compression settles", Duration::from_secs(60), || {
        compressed_all(&d)
    });
    assert!(d.term().success());
    assert_exactly_once(&d, &acked);
    assert_ok("verify", &d.cli(&["verify"]));
    let leftovers: Vec<_> = std::fs::read_dir(d.log_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[test]
fn retention_keeps_newest_and_active_files() {
    let d = TestDaemon::start("[log]\nmax_files = 3\nmax_total_bytes = 0\nmin_free_bytes = 0\n");
    for i in 0..6 {
        load(&d, 1, 20, &format!("ret{i}"));
        assert_ok("rotate", &d.cli(&["rotate"]));
    }
    wait_for(
        "retention to 3 rotated files",
        Duration::from_secs(30),
        || {
            let fs = logset::list(&d.log_dir()).unwrap();
            fs.iter().filter(|f| !f.active).count() == 3 && compressed_all(&d)
        },
    );
    let fs = logset::list(&d.log_dir()).unwrap();
    assert!(fs.last().unwrap().active, "the active file is kept");
    // The newest ones were kept: the verify anchors on the oldest kept file.
    let out = d.cli(&["verify"]);
    assert_ok("verify after retention", &out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("anchored"));
}

#[test]
fn retention_never_deletes_unforwarded_files() {
    // The forwarder cannot deliver (no syslog socket there), so its saved
    // position stays where the test put it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(dir.path().join("state/forward.pos"), "3\n").unwrap();
    let d = TestDaemon::start_in(
        dir.path(),
        &format!(
            "[log]\nrotate_size = \"4KiB\"\nmax_files = 1\nmax_total_bytes = 0\nmin_free_bytes = 0\n[forward]\nenabled = true\ntarget = {:?}\n",
            dir.path().join("no-such-syslog.sock").display().to_string()
        ),
    );
    for i in 0..4 {
        load(&d, 1, 20, &format!("fwd{i}"));
        assert_ok("rotate", &d.cli(&["rotate"]));
    }
    wait_for("compression", Duration::from_secs(30), || {
        compressed_all(&d)
    });
    let rotated = logset::list(&d.log_dir())
        .unwrap()
        .into_iter()
        .filter(|f| !f.active)
        .count();
    assert!(
        rotated > 1,
        "max_files = 1 but unforwarded files are kept ({rotated})"
    );
    let recs = d.records();
    assert_eq!(
        recs[0].seq, 1,
        "nothing after the forwarder's position was deleted"
    );
}

#[test]
fn sighup_reloads_or_keeps_the_old_config() {
    let d = TestDaemon::start("[log]\nmax_files = 30\n");
    d.write_config("[log]\nmax_files = 5\nstrict_codes = true\n");
    d.signal(Signal::SIGHUP);
    wait_for("60904", Duration::from_secs(10), || {
        d.records().iter().any(|r| r.code == 60904)
    });
    let rec = d.records().into_iter().find(|r| r.code == 60904).unwrap();
    let changed = rec.field("changed").unwrap();
    assert!(
        changed.contains("max_files") && changed.contains("strict_codes"),
        "{changed}"
    );
    // strict_codes is live now.
    assert_eq!(
        d.send(&[ev(50999, "")])[0].error,
        Some(nxaudit::protocol::ErrorKind::UnknownCode)
    );
    // An invalid file is refused, logged with the key, and changes nothing.
    d.write_config("[log]\nmax_filez = 1\n");
    d.signal(Signal::SIGHUP);
    wait_for("reload refusal logged", Duration::from_secs(10), || {
        d.stderr().contains("max_filez")
    });
    assert_eq!(d.records().iter().filter(|r| r.code == 60904).count(), 1);
    assert!(d.send(&[ev(50000, "")])[0].ok, "still serving");
}

#[test]
fn socket_activation_through_listen_fds() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("audit.sock");
    let cfg = dir.path().join("nxauditd.toml");
    std::fs::write(&cfg, test_config("")).unwrap();
    if Command::new("systemd-socket-activate")
        .arg("--help")
        .output()
        .is_err()
    {
        assert!(
            !must_not_skip(),
            "systemd-socket-activate is not installed (package systemd)"
        );
        eprintln!(
            "SKIP socket_activation_through_listen_fds: systemd-socket-activate not installed"
        );
        return;
    }
    let mut child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&sock)
        .arg(daemon_bin())
        .arg("--base-dir")
        .arg(dir.path())
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // systemd-socket-activate binds first and starts the daemon on the
    // first connection; the daemon must then serve that very socket.
    // The path appears at bind(), before listen(): a connect in between is
    // refused, so the predicate is a connect that succeeds.
    let mut conn = None;
    wait_for("socket listening", Duration::from_secs(10), || {
        conn = std::os::unix::net::UnixStream::connect(&sock).ok();
        conn.is_some()
    });
    let s = conn.unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    w.write_all(format!("{}\n", ev(50000, "")).as_bytes())
        .unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    assert!(line.contains("\"ok\":true"), "{line}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    let st = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("using the socket passed by systemd"), "{err}");
    assert!(
        sock.exists(),
        "the daemon leaves a socket it did not create"
    );
    assert!(st.success(), "{st}: {err}");
}

#[test]
fn status_reports_running_and_stopped() {
    let mut d = TestDaemon::start("");
    d.send(&[ev(50000, ""), ev(50001, "")]);
    wait_for("status shows seq 3", Duration::from_secs(10), || {
        let out = d.cli(&["status", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .map(|v| v["writer"]["last_seq"] == 3 && v["running"] == true)
            .unwrap_or(false)
    });
    let out = d.cli(&["status"]);
    assert_ok("status", &out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("running (pid"));
    assert!(d.term().success());
    assert_eq!(d.cli(&["status"]).status.code(), Some(3));
}

#[test]
fn tail_follows_across_rotations_without_loss_or_repeat() {
    let d = TestDaemon::start("[log]\nrotate_size = \"16KiB\"\n");
    let mut tail = Command::new(cli_bin())
        .arg("--base-dir")
        .arg(&d.base)
        .arg("--config")
        .arg(&d.config_path)
        .args(["tail", "-f", "-n", "0", "--code", "20101"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = tail.stdout.take().unwrap();
    // Kill the follower even when an assertion fails.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let tail = KillOnDrop(tail);
    let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let r = nxaudit::record::parse_line(&line).expect("tail prints whole records");
                seen.lock().unwrap().push(r.seq);
            }
        })
    };
    // tail prints nothing until it has opened the file; give it a record to
    // prove it is following before the load starts.
    wait_for("tail running", Duration::from_secs(10), || {
        d.send(&[ev(20101, "\"user\":\"probe\"")]);
        !seen.lock().unwrap().is_empty()
    });
    let acked = std::thread::scope(|s| {
        let h = s.spawn(|| load(&d, 4, 500, "tail"));
        for _ in 0..3 {
            assert_ok("rotate", &d.cli(&["rotate"]));
        }
        h.join().unwrap()
    });
    wait_for("tail saw every record", Duration::from_secs(30), || {
        let s = seen.lock().unwrap();
        acked.keys().all(|k| s.contains(k))
    });
    drop(tail);
    let _ = reader.join();
    let s = seen.lock().unwrap();
    let uniq: HashSet<_> = s.iter().collect();
    assert_eq!(uniq.len(), s.len(), "no line repeated");
    assert!(s.windows(2).all(|w| w[0] < w[1]), "in order");
    let rotated = logset::list(&d.log_dir()).unwrap().len();
    assert!(rotated > 3, "the load crossed rotations ({rotated} files)");
}

/// A real full disk: a 2 MiB tmpfs under the log dir (root only).
#[test]
fn disk_full_refuses_then_recovers_with_60905() {
    if !crate::util::require_root("disk_full_refuses_then_recovers_with_60905") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    std::fs::create_dir_all(&log).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m,mode=0755", "nxaudit-test"])
        .arg(&log)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("SKIP disk_full_refuses_then_recovers_with_60905: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Unmount(log.clone());
    // min_free_bytes: the low-space warning fires below twice this.
    let mut d = TestDaemon::start_in(
        dir.path(),
        "[log]\nrotate_size = 0\nmin_free_bytes = \"256KiB\"\n",
    );
    // Fill the tmpfs, leaving a little room.
    let filler = log.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    let mut acked = HashMap::new();
    let mut refused = 0u64;
    let mut i = 0;
    while refused < 50 {
        let id = format!("full-{i}");
        i += 1;
        let r = d.send(&[ev(
            20101,
            &format!("\"id\":\"{id}\",\"message\":\"{}\"", "p".repeat(300)),
        )]);
        match (r[0].ok, r[0].error) {
            (true, _) => {
                acked.insert(r[0].seq.unwrap(), id);
            }
            (false, Some(nxaudit::protocol::ErrorKind::DiskFull)) => refused += 1,
            other => panic!("unexpected reply {other:?}"),
        }
        assert!(i < 10_000, "the disk never filled up");
    }
    // The same id twice in one pipelined batch on a full disk: the second
    // must not be acknowledged as a duplicate of the refused first.
    let line = ev(
        20101,
        &format!("\"id\":\"full-dup\",\"message\":\"{}\"", "p".repeat(300)),
    );
    for r in d.send(&[line.clone(), line]) {
        match (r.ok, r.error) {
            (true, _) => {
                acked.insert(r.seq.unwrap(), "full-dup".to_string());
            }
            (false, Some(nxaudit::protocol::ErrorKind::DiskFull)) => refused += 1,
            other => panic!("unexpected reply {other:?}"),
        }
    }
    assert!(d.alive(), "the daemon stays up on a full disk");
    // The operator was warned before it happened: tracing and status.
    wait_for("low-space warning", Duration::from_secs(10), || {
        d.stderr().contains("low disk space")
            && d.cli(&["status", "--json"])
                .stdout
                .windows(17)
                .any(|w| w == b"\"low_space\": true")
    });
    // Free space: the daemon writes 60905 on its own.
    std::fs::remove_file(&filler).unwrap();
    wait_for("60905 after space returns", Duration::from_secs(10), || {
        d.records().iter().any(|r| r.code == 60905)
    });
    let r = d.send(&[ev(20101, "\"id\":\"after\"")]);
    assert!(r[0].ok, "{:?}", r[0]);
    acked.insert(r[0].seq.unwrap(), "after".into());
    let recs = d.records();
    let full = recs.iter().find(|r| r.code == 60905).unwrap();
    assert_eq!(full.field("refused"), Some(refused.to_string().as_str()));
    assert_exactly_once(&d, &acked);
    assert!(d.term().success());
    assert_ok("verify", &d.cli(&["verify"]));
}

#[test]
fn sd_notify_ready_watchdog_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut d = TestDaemon::start_in(&dir.path().join("d"), "");
    // Restart under a fake systemd: the harness's daemon first goes away.
    assert!(d.term().success());
    let mut cmd = d.command();
    cmd.env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "2000000")
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let mut got = |want: &str, seen: &mut Vec<String>| {
        while !seen.iter().any(|m| m.contains(want)) {
            let n = notify
                .recv(&mut buf)
                .expect("a notification before the timeout");
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    };
    got("READY=1", &mut seen);
    // Ready means the socket accepts.
    assert!(std::os::unix::net::UnixStream::connect(d.socket()).is_ok());
    got("WATCHDOG=1", &mut seen);
    got("STATUS=last seq", &mut seen);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    got("STOPPING=1", &mut seen);
    assert!(child.wait().unwrap().success());
}

#[test]
fn rust_client_reconnects_and_retries_idempotent_events() {
    let mut d = TestDaemon::start("");
    let sock = d.socket();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut c = nxaudit::client::Client::new(&sock);
    let ev1 = serde_json::json!({"code": 20101, "user": "a", "id": "client-1"});
    let s1 = rt.block_on(c.send(&ev1)).unwrap();
    // A refusal is an error with its kind.
    let bad = rt
        .block_on(c.send(&serde_json::json!({"code": 1})))
        .unwrap_err();
    assert!(bad.to_string().contains("unknown_code"), "{bad}");
    // The daemon restarts under the client: the next event with an id is
    // retried on a new connection, and the same id gives the same seq.
    d.kill9();
    d.restart();
    let again = rt.block_on(c.send(&ev1)).unwrap();
    assert_eq!(again, s1);
    let ev2 = serde_json::json!({"code": 20102, "user": "a", "id": "client-2"});
    assert!(rt.block_on(c.send(&ev2)).unwrap() > s1);
}

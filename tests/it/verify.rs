//! `nxaudit verify`: fails honestly (missing or empty directory, a file cut
//! inside a line, a tampered record named by its line), says how far back
//! the set is anchored, and never reports a false failure while the daemon
//! rotates, compresses and retains under load — while still catching a
//! real tamper in the same conditions.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nxaudit::logset::{self, Compression};

use crate::util::*;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn explain_verify(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A stopped daemon's directory holding `n` events.
fn stopped_with(config: &str, n: usize) -> TestDaemon {
    let mut d = TestDaemon::start(config);
    let lines: Vec<String> = (0..n)
        .map(|i| ev(50000, &format!("\"user\":\"u{i}\"")))
        .collect();
    d.send(&lines);
    assert!(d.term().success());
    d
}

fn rotated(d: &TestDaemon) -> Vec<logset::LogFile> {
    logset::list(&d.log_dir())
        .unwrap()
        .into_iter()
        .filter(|f| !f.active)
        .collect()
}

#[test]
fn verify_fails_on_a_missing_log_dir() {
    let d = stopped_with("", 1);
    std::fs::remove_dir_all(d.log_dir()).unwrap();
    let out = d.cli(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", explain_verify(&out));
    assert!(
        stdout(&out).contains("does not exist"),
        "{}",
        explain_verify(&out)
    );
}

#[test]
fn verify_fails_on_an_empty_log_dir() {
    let d = stopped_with("", 1);
    for f in std::fs::read_dir(d.log_dir()).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let out = d.cli(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", explain_verify(&out));
    assert!(
        stdout(&out).contains("no audit log files"),
        "{}",
        explain_verify(&out)
    );
}

#[test]
fn verify_fails_on_a_rotated_file_cut_inside_a_line() {
    let mut d = TestDaemon::start("[log]\ncompress = \"none\"\n");
    d.send(&[ev(50000, ""), ev(50001, "")]);
    assert_ok("rotate", &d.cli(&["rotate"]));
    d.send(&[ev(50000, "")]);
    assert!(d.term().success());
    assert_ok("verify before the cut", &d.cli(&["verify"]));
    let files = rotated(&d);
    assert_eq!(files.len(), 1);
    let path = &files[0].path;
    let text = std::fs::read(path).unwrap();
    let lines = text.iter().filter(|b| **b == b'\n').count();
    // Cut the last line in its middle: every earlier line is intact.
    std::fs::write(path, &text[..text.len() - 20]).unwrap();
    let out = d.cli(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", explain_verify(&out));
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let msg = stdout(&out);
    assert!(
        msg.contains(&format!("{name}:{lines}: partial line")),
        "{}",
        explain_verify(&out)
    );
}

#[test]
fn a_partial_tail_of_the_active_file_is_reported_not_failed() {
    // The daemon writes whole lines; a reader can still catch a write half
    // copied, and a crash leaves a torn tail that the next start cuts off.
    let d = stopped_with("", 3);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(d.active_log())
        .unwrap();
    f.write_all(b"2026-11-25T15:08:39.123456Z host [Console|Lo")
        .unwrap();
    let out = d.cli(&["verify"]);
    assert_ok("verify with a torn active tail", &out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a complete line") && err.contains("44 bytes"),
        "{}",
        explain_verify(&out)
    );
}

#[test]
fn a_tampered_middle_record_is_named_by_its_line() {
    let d = stopped_with("", 8);
    let p = d.active_log();
    let text = std::fs::read_to_string(&p).unwrap();
    let tampered = text.replacen("|50000|u4]", "|50000|mallory]", 1);
    assert_ne!(tampered, text);
    std::fs::write(&p, &tampered).unwrap();
    let line = tampered
        .lines()
        .position(|l| l.contains("mallory"))
        .unwrap()
        + 1;
    let out = d.cli(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", explain_verify(&out));
    assert!(
        stdout(&out).contains(&format!("audit.log:{line}: chain broken")),
        "{}",
        explain_verify(&out)
    );
}

/// Rewrites record `line` (1-based) of a compressed file with `edit`,
/// the way an attacker would: decompress, alter, recompress, rename over.
fn tamper_zst(path: &Path, line: usize, edit: impl Fn(&str) -> String) {
    let raw = zstd::decode_all(std::fs::File::open(path).unwrap()).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let mut out = String::new();
    for (i, l) in text.lines().enumerate() {
        if i + 1 == line {
            let e = edit(l);
            assert_ne!(e, l, "the edit changes the line");
            out.push_str(&e);
        } else {
            out.push_str(l);
        }
        out.push('\n');
    }
    let tmp = path.with_extension("tamper");
    std::fs::write(&tmp, zstd::encode_all(out.as_bytes(), 3).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn a_tampered_record_in_a_compressed_file_is_named() {
    let mut d = TestDaemon::start("");
    d.send(&(0..5).map(|_| ev(50000, "")).collect::<Vec<_>>());
    assert_ok("rotate", &d.cli(&["rotate"]));
    d.send(&[ev(50000, "")]);
    wait_for("compression", Duration::from_secs(30), || {
        rotated(&d)
            .iter()
            .all(|f| f.compression == Compression::Zstd)
    });
    assert!(d.term().success());
    let zst = rotated(&d).remove(0).path;
    tamper_zst(&zst, 3, |l| l.replacen("Login", "Logon", 1));
    let out = d.cli(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", explain_verify(&out));
    let name = zst.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        stdout(&out).contains(&format!("{name}:3: chain broken")),
        "{}",
        explain_verify(&out)
    );
}

#[test]
fn anchor_is_genesis_for_a_full_set_and_the_oldest_kept_file_after_retention() {
    let d = TestDaemon::start("[log]\nmax_files = 2\nmax_total_bytes = 0\nmin_free_bytes = 0\n");
    d.send(&[ev(50000, "")]);
    let out = d.cli(&["verify"]);
    assert_ok("verify full set", &out);
    assert!(
        stdout(&out).contains("anchored at genesis (seq 1)"),
        "{}",
        explain_verify(&out)
    );
    for _ in 0..4 {
        d.send(&[ev(50000, ""), ev(50001, "")]);
        assert_ok("rotate", &d.cli(&["rotate"]));
    }
    wait_for("retention to 2 files", Duration::from_secs(30), || {
        let r = rotated(&d);
        r.len() == 2 && r.iter().all(|f| f.compression != Compression::Plain)
    });
    let first = rotated(&d)[0].first_seq.unwrap();
    assert!(first > 1);
    let out = d.cli(&["verify"]);
    assert_ok("verify after retention", &out);
    assert!(
        stdout(&out).contains(&format!(
            "anchored at the oldest kept file (seq {first}, chain continues from an unverifiable h)"
        )),
        "{}",
        explain_verify(&out)
    );
}

/// Number of rotations so far: the highest first seq among rotated files.
fn newest_rotated_seq(dir: &Path) -> u64 {
    logset::list(dir)
        .map(|fs| fs.iter().filter_map(|f| f.first_seq).max().unwrap_or(0))
        .unwrap_or(0)
}

#[test]
fn verify_beside_a_daemon_rotating_under_load_never_fails_falsely() {
    let d = TestDaemon::start(
        "[log]\nflush = \"none\"\nrotate_size = \"128KiB\"\ncompress = \"zstd\"\n\
         max_files = 0\nmax_total_bytes = 0\nmin_free_bytes = 0\n",
    );
    let stop = AtomicBool::new(false);
    let dir: PathBuf = d.log_dir();
    std::thread::scope(|s| {
        let loader = s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let lines: Vec<String> = (0..300)
                    .map(|i| {
                        ev(
                            20101,
                            &format!("\"user\":\"load\",\"message\":\"event {n}-{i} with some padding to make lines longer\""),
                        )
                    })
                    .collect();
                d.send(&lines);
                n += 1;
            }
        });
        let mut retried = 0;
        for run in 0..20 {
            // Each run starts after a rotation at least, so the set changes
            // under every verify.
            let before = newest_rotated_seq(&dir);
            wait_for("a rotation", Duration::from_secs(60), || {
                newest_rotated_seq(&dir) > before
            });
            let out = d.cli(&["verify", "--json"]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|_| panic!("run {run}: {}", explain_verify(&out)));
            assert!(
                out.status.success() && v["ok"] == true,
                "run {run}: {}",
                explain_verify(&out)
            );
            if v["attempts"].as_u64() > Some(1) {
                retried += 1;
            }
        }
        eprintln!("20 verifies OK beside rotation; {retried} needed a fresh listing");
        // A real tamper, under the same load, is still caught: alter a
        // record in the middle of a compressed file.
        let zst = logset::list(&dir)
            .unwrap()
            .into_iter()
            .filter(|f| f.compression == Compression::Zstd)
            .nth(1)
            .expect("compressed files")
            .path;
        tamper_zst(&zst, 5, |l| l.replacen("event", "EVENT", 1));
        let out = d.cli(&["verify"]);
        stop.store(true, Ordering::Relaxed);
        let _ = loader.join();
        assert_eq!(out.status.code(), Some(1), "{}", explain_verify(&out));
        let name = zst.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            stdout(&out).contains(&format!("{name}:5: chain broken")),
            "{}",
            explain_verify(&out)
        );
    });
}

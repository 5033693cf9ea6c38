//! `nxaudit bench` baselines: they run end to end and print their ratio
//! lines. Tiny numbers, no timing asserted (the figures themselves are
//! measured by hand and reported in README).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::syslog::rsyslogd_available;
use crate::util::cli_bin;

#[test]
fn bench_vs_rsyslog_prints_the_ratio() {
    if !rsyslogd_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(cli_bin())
        .args(["bench", "--vs-rsyslog", "--clients", "2", "--events", "200"])
        .args(["--pairs", "2", "--dir"])
        .arg(dir.path())
        .output()
        .expect("run nxaudit bench");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.matches("rsyslog (private rsyslogd").count(),
        2,
        "one rsyslog run per pair:\n{text}"
    );
    assert!(
        text.contains("200 messages in"),
        "rsyslog's file held every message:\n{text}"
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("throughput vs rsyslog, pair by pair:"))
        .unwrap_or_else(|| panic!("no ratio line:\n{text}"));
    let ratio: f64 = line
        .rsplit("median ratio ")
        .next()
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("no median ratio in {line:?}"));
    assert!(ratio > 0.0, "{line}");
    // Nothing left behind in the bench directory.
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("read dir").collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn bench_rate_pairs_the_raw_group_commit_with_the_daemon() {
    for (alongside, threads) in [(false, false), (true, false), (true, true)] {
        rate_pairs(alongside, threads, false);
    }
}

/// `--raw-socket` serves the raw group commit over a socket to the same
/// client: every paced event is acknowledged by it too, each pair prints
/// both ratios, and nothing is left in the bench directory.
#[test]
fn bench_raw_socket_serves_the_same_client() {
    for alongside in [false, true] {
        let text = rate_pairs(alongside, false, true);
        assert_eq!(
            text.matches("raw group commit over a socket (minimal server, same client)")
                .count(),
            2,
            "{text}"
        );
        for prefix in [
            "raw socket p99 vs raw group commit, pair by pair:",
            "ack p99 vs raw socket p99, pair by pair:",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(prefix) && l.contains("median ratio")),
                "{prefix}\n{text}"
            );
        }
    }
}

/// `NXAUDITD` names the daemon under test (two builds, one client): a
/// path that does not exist must fail the run, not fall back silently.
#[test]
fn bench_starts_the_daemon_nxauditd_names() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(cli_bin())
        .args(["bench", "--clients", "1", "--events", "10", "--dir"])
        .arg(dir.path())
        .env("NXAUDITD", dir.path().join("no-such-nxauditd"))
        .output()
        .expect("run nxaudit bench");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("no-such-nxauditd"), "{err}");
}

fn rate_pairs(alongside: bool, threads: bool, socket: bool) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(cli_bin())
        .args([
            "bench",
            "--rate",
            "2000",
            "--clients",
            "2",
            "--events",
            "200",
        ])
        .args(["--pairs", "2", "--dir"])
        .arg(dir.path())
        .args(alongside.then_some("--raw-alongside"))
        .args(threads.then_some("--client-threads"))
        .args(socket.then_some("--raw-socket"))
        .output()
        .expect("run nxaudit bench");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.matches("raw group commit on this disk").count(),
        2,
        "{text}"
    );
    // Every paced event was sent and acknowledged, in both runs.
    assert_eq!(text.matches("200 events of").count(), 2, "{text}");
    assert_eq!(text.matches(" 0 refused").count(), 2, "{text}");
    assert!(
        text.lines().any(
            |l| l.starts_with("ack p99 vs raw group commit, pair by pair:")
                && l.contains("median ratio")
        ),
        "{text}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("read dir").collect();
    assert!(left.is_empty(), "{left:?}");
    text.into_owned()
}

#[test]
fn bench_attack_rounds_compare_with_no_attack() {
    if !crate::util::require_root("bench_attack_rounds_compare_with_no_attack") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    // The attacker runs as nobody and must reach the daemon's socket.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = Command::new(cli_bin())
        .args([
            "bench",
            "--attack",
            "hold",
            "--attack-secs",
            "1",
            "--pairs",
            "1",
        ])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .expect("run nxaudit bench");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for kind in ["none", "hold"] {
        assert!(
            text.contains(&format!("attack {kind}: daemon peak RSS")),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("summary {kind}: 1 runs"))
                    && l.contains("no-attack p99")),
            "{text}"
        );
    }
    assert!(text.contains("disk meanwhile: write + fdatasync"), "{text}");
}

//! Attacks on the SSH/sudo intake (docs/operations.md, SSH and sudo, §9): forged sshd and sudo lines
//! from local users, datagrams from uids other than rsyslog's, PAM notices
//! that are not refusals, and a logon right after a reload. Real
//! `rsyslogd` with the shipped drop-in (harness shared with `syslog.rs`),
//! real accounts (`util::test_user`), real `logger`.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::syslog::{
    auth_records, auth_trusting_tests, records, rsyslogd_available, status, wait_listening,
    with_rsyslogd, Rsyslogd,
};
use crate::util::{assert_ok, must_not_skip, require_root, test_user, wait_for, TestDaemon};

const T: Duration = Duration::from_secs(30);
const FORGED_LOGON: &str = "Accepted password for nexthink from 6.6.6.6 port 1 ssh2";
const FORGED_SUDO: &str = "nexthink : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/true";

fn have_rsyslogd() -> bool {
    let ok = rsyslogd_available();
    assert!(
        ok || !must_not_skip(),
        "rsyslogd is needed (scripts/test installs it)"
    );
    ok
}

/// Lets an unprivileged user reach `sock` (as a member of the socket group
/// could): every directory on the way searchable, the socket writable.
fn open_to_all(sock: &Path) {
    let mut p = sock.parent();
    while let Some(d) = p {
        if d.as_os_str().len() <= 1 || d == Path::new("/tmp") {
            break;
        }
        let mode = std::fs::metadata(d).expect("dir").permissions().mode();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o711)).expect("chmod");
        p = d.parent();
    }
    std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o666)).expect("chmod sock");
}

/// Runs `logger -u SOCK -t TAG MSG` as `(uid, gid)`.
fn logger_as(ids: (u32, u32), sock: &Path, tag: &str, msg: &str) {
    let out = Command::new("logger")
        .arg("-u")
        .arg(sock)
        .args(["-p", "authpriv.info", "-t", tag, msg])
        .uid(ids.0)
        .gid(ids.1)
        .output()
        .expect("run logger");
    assert_ok("logger", &out);
}

fn codes(d: &TestDaemon) -> Vec<u32> {
    auth_records(d).iter().map(|r| r.code).collect()
}

/// Finding 1: a member of the socket group sends a well-formed sshd logon
/// straight to syslog.sock: dropped by the uid check, counted, no record.
#[test]
fn hostile_datagram_from_foreign_uid_is_dropped() {
    if !require_root("hostile_datagram_from_foreign_uid_is_dropped") {
        return;
    }
    let ids = test_user("nxit_forger");
    let d = TestDaemon::start("[auth]\nsource = \"rsyslog\"\naccounts = []\n");
    wait_listening(&d);
    let sock = d.base.join("syslog.sock");
    open_to_all(&sock);
    let line = format!(
        "<86>1 2026-01-01T00:00:00Z h sshd 1 - [sender@32473 uid=\"0\" pid=\"1\" exe=\"/usr/sbin/sshd\"] {FORGED_LOGON}"
    );
    logger_as(ids, &sock, "sshd", FORGED_LOGON);
    // A raw datagram with a forged proof, sent with logger's --rfc5424 off:
    // the uid check comes before any parsing.
    let out = Command::new("sh")
        .arg("-c")
        .arg("printf '%s' \"$1\" | logger -u \"$2\" --socket-errors=on --prio-prefix -t x")
        .args(["sh", &line, &sock.display().to_string()])
        .uid(ids.0)
        .gid(ids.1)
        .output()
        .expect("logger");
    assert_ok("logger raw", &out);
    wait_for("two foreign datagrams counted", T, || {
        status(&d)["syslog_intake"]["foreign"].as_u64() == Some(2)
    });
    let st = status(&d);
    assert_eq!(st["syslog_intake"]["last_foreign_uid"], ids.0, "{st}");
    assert_eq!(st["syslog_intake"]["appended"], 0, "{st}");
    assert!(codes(&d).is_empty(), "{:?}", auth_records(&d));
    assert!(
        d.stderr().contains("intake_uids"),
        "warned:\n{}",
        d.stderr()
    );
}

/// `logger -t sshd` / `-t sudo` by a local user through the real rsyslogd
/// and the shipped template: at most 60009/60109 naming that uid.
#[test]
fn hostile_logger_through_rsyslog_is_unverified() {
    if !require_root("hostile_logger_through_rsyslog_is_unverified") || !have_rsyslogd() {
        return;
    }
    let ids = test_user("nxit_forger");
    let (_base, r, d) = with_rsyslogd(|_| "[auth]\nsource = \"rsyslog\"\naccounts = []\n".into());
    wait_listening(&d);
    open_to_all(&r.log_sock());
    logger_as(ids, &r.log_sock(), "sshd", FORGED_LOGON);
    logger_as(ids, &r.log_sock(), "sudo", FORGED_SUDO);
    wait_for("two records", T, || auth_records(&d).len() >= 2);
    let recs = auth_records(&d);
    assert_eq!(codes(&d), vec![60009, 60109], "{recs:#?}");
    for rec in &recs {
        assert_eq!(rec.field("verified"), Some("false"), "{}", rec.body);
        assert_eq!(
            rec.field("sender_uid"),
            Some(ids.0.to_string().as_str()),
            "{}",
            rec.body
        );
        assert_eq!(rec.account, "-");
    }
    assert_eq!(recs[0].text, FORGED_LOGON);
    wait_for("unverified count in status", T, || {
        status(&d)["syslog_intake"]["unverified"].as_u64() == Some(2)
    });
}

/// The proven sshd (uid 0, the configured executable, here this test
/// binary) through the same path: a 60001. Its PAM and host notices, and
/// sudo's, are 60009/60109, never 60102.
#[test]
fn hostile_genuine_sender_and_notices() {
    if !require_root("hostile_genuine_sender_and_notices") || !have_rsyslogd() {
        return;
    }
    let (_base, r, d) = with_rsyslogd(|_| auth_trusting_tests("[]"));
    wait_listening(&d);
    // Sent by this process: uid 0, exe = the test binary (in sshd_exes).
    r.log(format!("<86>Jan  1 00:00:00 sshd[4242]: {FORGED_LOGON}").as_bytes());
    r.log(
        b"<83>Jan  1 00:00:00 sudo: unable to resolve host appliance1: Name or service not known",
    );
    r.log(b"<86>Jan  1 00:00:00 sudo: pam_limits(sudo:session): Could not set limit for 'core' to soft=0, hard=-1: Operation not permitted; uid=999,euid=0");
    wait_for("three records", T, || auth_records(&d).len() >= 3);
    let recs = auth_records(&d);
    assert_eq!(codes(&d), vec![60001, 60109, 60109], "{recs:#?}");
    assert_eq!(recs[0].account, "nexthink");
    assert_eq!(recs[0].field("client"), Some("6.6.6.6"));
    for rec in &recs[1..] {
        assert_eq!(rec.field("parsed"), Some("false"), "{}", rec.body);
        assert_eq!(rec.account, "-");
    }
}

/// Finding 12: after SIGHUP changes `accounts`, a logon sent as soon as
/// 60904 is in the log is judged by the new list.
#[test]
fn hostile_logon_right_after_reload_uses_new_accounts() {
    if !have_rsyslogd() {
        return;
    }
    let before = format!("{}\n", auth_trusting_tests("[\"nexthink\"]"));
    let (_base, r, d) = with_rsyslogd(|_| before.clone());
    wait_listening(&d);
    let _: &Rsyslogd = &r;
    for round in 0..3 {
        let (old, new) = if round % 2 == 0 {
            ("nexthink", "alice")
        } else {
            ("alice", "nexthink")
        };
        d.write_config(&auth_trusting_tests(&format!("[\"{new}\"]")));
        let reloads = |d: &TestDaemon| records(d).iter().filter(|r| r.code == 60904).count();
        let n = reloads(&d);
        d.signal(nix::sys::signal::Signal::SIGHUP);
        wait_for("60904", T, || reloads(&d) > n);
        // Straight into the intake, no rsyslog queue in between.
        let tx = std::os::unix::net::UnixDatagram::unbound().expect("socket");
        let me = std::env::current_exe().expect("exe");
        for user in [old, new] {
            let line = format!(
                "<86>1 2026-01-01T00:00:00Z h sshd 9 - [sender@32473 uid=\"0\" pid=\"9\" exe=\"{}\"] Accepted password for {user} from 10.0.0.{round} port 22 ssh2",
                me.display()
            );
            tx.send_to(line.as_bytes(), d.base.join("syslog.sock"))
                .expect("send");
        }
        let want = round + 1;
        wait_for("logon recorded", T, || {
            records(&d).iter().filter(|r| r.code == 60001).count() >= want
        });
        wait_for("both datagrams classified", T, || {
            let s = &status(&d)["syslog_intake"];
            s["parsed"].as_u64().unwrap_or(0) + s["filtered"].as_u64().unwrap_or(0)
                >= 2 * want as u64
        });
        let logons: Vec<_> = records(&d)
            .into_iter()
            .filter(|r| r.code == 60001)
            .collect();
        assert_eq!(logons.len(), want, "{logons:#?}");
        assert_eq!(logons[round].account, new, "round {round}: {logons:#?}");
    }
}

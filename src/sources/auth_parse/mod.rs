//! SSH logons and sudo: turns one sshd or sudo log message into an audit
//! record (docs/operations.md, SSH and sudo). Pure: no I/O, no clock except the raw-line rate limit,
//! so both the syslog intake and the journal follower call the same
//! [`AuthClassifier`], and every rule is tested on the message shapes that
//! OpenSSH 8/9 (`sshd`, `sshd-session`, `sshd-auth`) and sudo 1.8/1.9 write
//! (`tests/fixtures/auth/`).
//!
//! Codes: 60001 SSH logon, 60002 SSH logon failed, 60003 SSH logoff, 60101
//! sudo command run, 60102 sudo command refused. Fields: `user` and `client`
//! on the entry; `port`, `method`, `key` (key type and fingerprint, with the
//! certificate ID and CA for certificates), `reason`, `invalid_user`; for
//! sudo `tty`, `cwd`, `target_user`, `target_group`, `env`, `command`
//! (`continued="true"` on the rest of a command sudo split over two lines);
//! and always `program` and `program_pid` (not `pid`: the record trailer
//! already has `pid=`, the sender's; a second `pid` key would make the line
//! ambiguous).
//!
//! One event, one record. sshd and PAM often log the same event twice; the
//! classifier keeps a little bounded state (per sshd process id) to record
//! it once:
//! - a logon is `Accepted …` only (PAM's `session opened` is a duplicate);
//! - a logoff is the first of `Disconnected from user …` / `Connection
//!   closed by user …` (the session's own process) and PAM's `session closed
//!   for user …` (the monitor process, matched to the logon by pid); the
//!   other one is a duplicate;
//! - a failed attempt is sshd's `Failed <method> for …` line; PAM's
//!   `pam_unix(sshd:auth): authentication failure` always precedes an sshd
//!   line for the same attempt and is a duplicate; `error: PAM: <reason> for
//!   … from …` is recorded (at the default LogLevel it is the only line for a
//!   failed keyboard-interactive attempt) and the `Failed
//!   keyboard-interactive/pam` line that may follow it is its duplicate;
//! - `Invalid user …`, `maximum authentication attempts exceeded`, `User …
//!   not allowed because …` and `ROOT LOGIN REFUSED` are failures in their
//!   own right;
//! - closing lines of a connection that failed to authenticate (`Connection
//!   closed by authenticating user … [preauth]`, `Disconnecting … Too many
//!   authentication failures`, `PAM n more authentication failures`) are
//!   recorded only when nothing else recorded a failure for that process: a
//!   client that offers keys nobody accepts leaves no other trace at INFO.
//!
//! Known sshd lines that are not audit events (listening, key exchange noise
//! of scanners, `Received disconnect`, PAM lines that duplicate an sshd line)
//! match an ignore rule and are counted as `ignored`.
//!
//! Proven sender. A message is taken as sshd's only when its [`Sender`] (what
//! rsyslog's trusted properties or the journal's `_UID`/`_EXE` say about the
//! sending process, never the tag the sender chose) is uid 0 running one of
//! `sshd_exes`, and as sudo's only when it runs one of `sudo_exes` (measured
//! with sudo 1.9 under rsyslog: sudo logs with the invoking user's real uid,
//! so for sudo the set-uid executable is the proof, not the uid). Any other
//! sender of an sshd or sudo tag (`logger -t sshd …`) gets 60009/60109 with
//! `verified="false"` and the sender's uid, pid, exe and command name as
//! proven, under a rate limit per claimed program and sender uid, so one
//! local user cannot use up the budget of the real programs.
//!
//! Raw lines. A line of a proven sshd or sudo that no rule matches, or that
//! is not an SSH or sudo event (PAM module notices, `unable to resolve host`,
//! …), is recorded raw as 60009 (sshd) or 60109 (sudo), never as a logon, a
//! refusal or a command, and never dropped silently: its text is the message
//! as received, with `parsed="false"`, the sender fields and no account. Raw
//! records are limited to `raw_per_minute` per program (per sender uid for
//! unverified ones); the next raw record after a suppressed stretch carries
//! `suppressed="N"`, and the counts are in `nxaudit status`. The accounts
//! filter does not apply to raw lines (their account is unknown).
//!
//! Accounts filter: `accounts` (empty = all) is matched against the acting
//! account: the user logging on (also an invalid one), the user running
//! sudo (not the target user).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::AuthConfig;
use crate::record::Entry;

mod sshd;
mod sudo;

pub use crate::catalog::appliance::{
    SSH_LOGOFF, SSH_LOGON, SSH_LOGON_FAILED, SSH_UNVERIFIED, SUDO_COMMAND, SUDO_REFUSED,
    SUDO_UNVERIFIED,
};

/// How many sessions and per-process marks are remembered for deduplication.
const STATE_CAP: usize = 4096;
/// Longest raw line recorded; the rest is cut (`truncated="true"`).
const RAW_MAX: usize = 8 * 1024;
/// Window of the raw-line rate limit.
const RAW_WINDOW: Duration = Duration::from_secs(60);
/// Most rate-limit windows kept (one per program and unverified sender uid).
const RAW_KEYS: usize = 1024;

/// What is known for certain about the process that sent a message: the
/// peer credentials rsyslog (imuxsock's trusted properties) or journald
/// (`_UID`, `_PID`, `_EXE`, `_COMM`) recorded, never what the message says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sender {
    /// Uid of the sending process.
    pub uid: Option<u32>,
    /// Its process id.
    pub pid: Option<u32>,
    /// Its executable (absent when it exited before it could be read).
    pub exe: Option<String>,
    /// Its command name (the process can change it; shown, never trusted).
    pub comm: Option<String>,
}

/// Program families the classifier knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// OpenSSH's `sshd`, `sshd-session` (9.8+) and `sshd-auth` (10.0+).
    Ssh,
    /// `sudo`.
    Sudo,
}

impl Family {
    /// The program names (syslog tags, process names) of the family.
    pub fn programs(self) -> &'static [&'static str] {
        match self {
            Family::Ssh => &["sshd", "sshd-session", "sshd-auth"],
            Family::Sudo => &["sudo"],
        }
    }
}

/// The family of a syslog tag / journal `SYSLOG_IDENTIFIER`.
pub fn family(program: &str) -> Option<Family> {
    [Family::Ssh, Family::Sudo]
        .into_iter()
        .find(|f| f.programs().contains(&program))
}

/// Counters of what the classifier did, for `nxaudit status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AuthStats {
    /// Lines turned into a 600xx record by a rule.
    pub parsed: u64,
    /// Lines recorded raw.
    pub raw: u64,
    /// Lines that matched a rule recording nothing (duplicates, noise).
    pub ignored: u64,
    /// Records left out by the accounts filter.
    pub filtered: u64,
    /// Raw lines over `raw_per_minute`, not recorded.
    pub suppressed: u64,
    /// Lines of programs other than sshd and sudo.
    pub other_program: u64,
    /// Lines tagged sshd or sudo whose sender was not proven to be them.
    pub unverified: u64,
}

/// What a rule made of a line. Short-lived (one per line), so the size of
/// the `Record` variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Verdict {
    /// A record (the filter still applies).
    Record(Entry),
    /// Matched a rule that records nothing.
    Known,
    /// No rule matched.
    Unknown,
}

#[derive(Debug, Clone)]
struct Session {
    pid: Option<u32>,
    user: String,
    client: Option<String>,
    port: Option<String>,
    method: Option<String>,
    logged_off: bool,
}

#[derive(Debug, Clone, Copy)]
struct RawWindow {
    start: Instant,
    used: u32,
    suppressed: u64,
}

/// Bounded FIFO set of process ids.
#[derive(Debug, Default)]
struct PidMarks(VecDeque<u32>);

impl PidMarks {
    fn insert(&mut self, pid: Option<u32>) {
        if let Some(p) = pid {
            if !self.0.contains(&p) {
                if self.0.len() >= STATE_CAP {
                    self.0.pop_front();
                }
                self.0.push_back(p);
            }
        }
    }
    fn contains(&self, pid: Option<u32>) -> bool {
        pid.is_some_and(|p| self.0.contains(&p))
    }
    fn remove(&mut self, pid: Option<u32>) -> bool {
        match pid.and_then(|p| self.0.iter().position(|x| *x == p)) {
            Some(i) => {
                self.0.remove(i);
                true
            }
            None => false,
        }
    }
}

/// Classifies sshd and sudo messages into Appliance records.
#[derive(Debug)]
pub struct AuthClassifier {
    accounts: Vec<String>,
    raw_per_minute: u32,
    sshd_exes: Vec<String>,
    sudo_exes: Vec<String>,
    raw: HashMap<String, RawWindow>,
    sessions: VecDeque<Session>,
    /// sshd processes for which a failure was recorded.
    failed: PidMarks,
    /// sshd processes whose `error: PAM: …` line was recorded and whose
    /// `Failed keyboard-interactive/pam` line is therefore a duplicate.
    pam_errors: PidMarks,
    /// Code of the last sudo record per (pid), for `(command continued)`.
    sudo_last: HashMap<u32, (u32, String)>,
    stats: AuthStats,
}

impl AuthClassifier {
    /// A classifier with the `[auth]` settings.
    pub fn new(cfg: &AuthConfig) -> Self {
        AuthClassifier {
            accounts: cfg.accounts.clone(),
            raw_per_minute: cfg.raw_per_minute,
            sshd_exes: cfg.sshd_exes.clone(),
            sudo_exes: cfg.sudo_exes.clone(),
            raw: HashMap::new(),
            sessions: VecDeque::new(),
            failed: PidMarks::default(),
            pam_errors: PidMarks::default(),
            sudo_last: HashMap::new(),
            stats: AuthStats::default(),
        }
    }

    /// What has been classified so far.
    pub fn stats(&self) -> AuthStats {
        self.stats
    }

    /// Applies what can change live of `[auth]` (SIGHUP): the accounts
    /// filter, the raw limit and the trusted executables.
    pub fn reload(&mut self, cfg: &AuthConfig) {
        self.accounts = cfg.accounts.clone();
        self.raw_per_minute = cfg.raw_per_minute;
        self.sshd_exes = cfg.sshd_exes.clone();
        self.sudo_exes = cfg.sudo_exes.clone();
    }

    /// Classifies one message of `program` (syslog tag or journal
    /// `SYSLOG_IDENTIFIER`) from process `pid`, sent by `sender`. `None` for
    /// other programs, for lines that record nothing (duplicates, noise),
    /// for accounts left out by the filter and for raw lines over the rate
    /// limit.
    pub fn classify(
        &mut self,
        program: &str,
        pid: Option<u32>,
        message: &str,
        sender: &Sender,
    ) -> Option<Entry> {
        self.classify_at(program, pid, message, sender, Instant::now())
    }

    /// Whether `sender` is proven to be the program of family `fam`.
    fn proven(&self, fam: Family, sender: &Sender) -> bool {
        let exe_in = |list: &[String]| {
            sender
                .exe
                .as_deref()
                .is_some_and(|e| list.iter().any(|x| x == e))
        };
        // A root process that exited before its executable could be read
        // (sshd's pre-authentication monitor, a refused sudo): the uid comes
        // from the socket credentials and cannot be faked by a local user,
        // and root can write the log anyway. A present executable must be
        // in the list (journald relaying an exited sender shows its own).
        let exited_root = sender.uid == Some(0)
            && sender.exe.is_none()
            && sender
                .comm
                .as_deref()
                .map_or(true, |c| fam.programs().contains(&c));
        match fam {
            Family::Ssh => sender.uid == Some(0) && exe_in(&self.sshd_exes) || exited_root,
            Family::Sudo => exe_in(&self.sudo_exes) || exited_root,
        }
    }

    fn classify_at(
        &mut self,
        program: &str,
        pid: Option<u32>,
        message: &str,
        sender: &Sender,
        now: Instant,
    ) -> Option<Entry> {
        let Some(fam) = family(program) else {
            self.stats.other_program += 1;
            return None;
        };
        let msg = message.trim_matches(|c: char| c.is_whitespace() || c == '\0');
        if !self.proven(fam, sender) {
            self.stats.unverified += 1;
            return self.raw_record(fam, program, pid, msg, sender, false, now);
        }
        let verdict = match fam {
            Family::Ssh => self.ssh(pid, msg),
            Family::Sudo => self.sudo(pid, msg),
        };
        match verdict {
            Verdict::Record(e) => {
                if !self.allowed(e.user.as_deref()) {
                    self.stats.filtered += 1;
                    return None;
                }
                self.stats.parsed += 1;
                Some(finish(e, program, pid))
            }
            Verdict::Known => {
                self.stats.ignored += 1;
                None
            }
            Verdict::Unknown => self.raw_record(fam, program, pid, msg, sender, true, now),
        }
    }

    fn allowed(&self, user: Option<&str>) -> bool {
        self.accounts.is_empty() || user.is_some_and(|u| self.accounts.iter().any(|a| a == u))
    }

    /// A raw 60009/60109 record: `verified` says whether the sender was
    /// proven (then the line was merely not understood).
    #[allow(clippy::too_many_arguments)]
    fn raw_record(
        &mut self,
        fam: Family,
        program: &str,
        pid: Option<u32>,
        message: &str,
        sender: &Sender,
        verified: bool,
        now: Instant,
    ) -> Option<Entry> {
        let limit = self.raw_per_minute;
        let key = if verified {
            program.to_string()
        } else {
            match sender.uid {
                Some(u) => format!("{program} unverified uid {u}"),
                None => format!("{program} unverified"),
            }
        };
        if self.raw.len() >= RAW_KEYS && !self.raw.contains_key(&key) {
            // Windows that ended lose nothing (their suppressed lines are in
            // the stats); only then is room made.
            self.raw
                .retain(|_, w| now.duration_since(w.start) < RAW_WINDOW);
            if self.raw.len() >= RAW_KEYS {
                self.stats.suppressed += 1;
                return None;
            }
        }
        let w = self.raw.entry(key).or_insert(RawWindow {
            start: now,
            used: 0,
            suppressed: 0,
        });
        if now.duration_since(w.start) >= RAW_WINDOW {
            w.start = now;
            w.used = 0;
        }
        if w.used >= limit {
            w.suppressed += 1;
            self.stats.suppressed += 1;
            return None;
        }
        w.used += 1;
        let suppressed = std::mem::take(&mut w.suppressed);
        self.stats.raw += 1;
        let code = match fam {
            Family::Ssh => SSH_UNVERIFIED,
            Family::Sudo => SUDO_UNVERIFIED,
        };
        let mut text = message.trim_end_matches(['\n', '\r', '\0']);
        let truncated = text.len() > RAW_MAX;
        if truncated {
            let mut cut = RAW_MAX;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text = &text[..cut];
        }
        let mut e = Entry::appliance(code).with_message(text);
        e = if verified {
            e.field("parsed", "false")
        } else {
            e.field("verified", "false")
        };
        if let Some(u) = sender.uid {
            e = e.field("sender_uid", u.to_string());
        }
        if let Some(p) = sender.pid {
            e = e.field("sender_pid", p.to_string());
        }
        if let Some(x) = sender.exe.as_deref() {
            e = e.field("sender_exe", x);
        }
        if let Some(c) = sender.comm.as_deref() {
            e = e.field("sender_comm", c);
        }
        if truncated {
            e = e.field("truncated", "true");
        }
        if suppressed > 0 {
            e = e.field("suppressed", suppressed.to_string());
        }
        Some(finish(e, program, pid))
    }
}

/// Adds the fields every record carries.
fn finish(mut e: Entry, program: &str, pid: Option<u32>) -> Entry {
    e = e.field("program", program);
    if let Some(p) = pid {
        e = e.field("program_pid", p.to_string());
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all() -> AuthClassifier {
        AuthClassifier::new(&AuthConfig {
            accounts: Vec::new(),
            ..AuthConfig::default()
        })
    }

    /// The sender the real program would be (sshd as root, sudo as a user).
    fn genuine(program: &str) -> Sender {
        match family(program) {
            Some(Family::Sudo) => Sender {
                uid: Some(1000),
                pid: Some(4242),
                exe: Some("/usr/bin/sudo".into()),
                comm: Some("sudo".into()),
            },
            _ => Sender {
                uid: Some(0),
                pid: Some(4242),
                exe: Some("/usr/sbin/sshd".into()),
                comm: Some("sshd".into()),
            },
        }
    }

    impl AuthClassifier {
        fn classify_trusted(
            &mut self,
            program: &str,
            pid: Option<u32>,
            msg: &str,
        ) -> Option<Entry> {
            self.classify(program, pid, msg, &genuine(program))
        }
        fn classify_at_trusted(
            &mut self,
            program: &str,
            pid: Option<u32>,
            msg: &str,
            now: Instant,
        ) -> Option<Entry> {
            self.classify_at(program, pid, msg, &genuine(program), now)
        }
    }

    fn f<'a>(e: &'a Entry, k: &str) -> Option<&'a str> {
        e.get_field(k)
    }

    #[test]
    fn accepted_publickey_ipv6() {
        let mut c = all();
        let e = c
            .classify_trusted("sshd", Some(42), "Accepted publickey for alice from 2001:db8::1 port 51234 ssh2: ED25519 SHA256:AbC+/x")
            .unwrap();
        assert_eq!(e.code, SSH_LOGON);
        assert_eq!(e.user.as_deref(), Some("alice"));
        assert_eq!(e.client.as_deref(), Some("2001:db8::1"));
        assert_eq!(f(&e, "port"), Some("51234"));
        assert_eq!(f(&e, "method"), Some("publickey"));
        assert_eq!(f(&e, "key"), Some("ED25519 SHA256:AbC+/x"));
        assert_eq!(f(&e, "program"), Some("sshd"));
        assert_eq!(f(&e, "program_pid"), Some("42"));
    }

    #[test]
    fn forged_from_in_user_name() {
        let mut c = all();
        let e = c
            .classify_trusted("sshd", Some(1), "Failed password for invalid user x from 6.6.6.6 port 1 ssh2: RSA SHA256:zz from 10.0.0.9 port 5 ssh2")
            .unwrap();
        assert_eq!(e.client.as_deref(), Some("10.0.0.9"));
        assert_eq!(
            e.user.as_deref(),
            Some("x from 6.6.6.6 port 1 ssh2: RSA SHA256:zz")
        );
        let e = c
            .classify_trusted("sshd", Some(2), "Accepted publickey for bob from 10.0.0.1 port 22 ssh2: ED25519-CERT SHA256:aa ID a from 6.6.6.6 port 1 ssh2: RSA SHA256:zz (serial 1) CA ED25519 SHA256:bb")
            .unwrap();
        assert_eq!(e.client.as_deref(), Some("10.0.0.1"));
        assert_eq!(e.user.as_deref(), Some("bob"));
    }

    #[test]
    fn logoff_once_in_either_order() {
        let mut c = all();
        assert!(c
            .classify_trusted(
                "sshd",
                Some(10),
                "Accepted password for a from 1.1.1.1 port 5 ssh2"
            )
            .is_some());
        assert!(c
            .classify_trusted(
                "sshd",
                Some(10),
                "pam_unix(sshd:session): session opened for user a(uid=1000) by (uid=0)"
            )
            .is_none());
        let e = c
            .classify_trusted("sshd", Some(11), "Disconnected from user a 1.1.1.1 port 5")
            .unwrap();
        assert_eq!((e.code, f(&e, "method")), (SSH_LOGOFF, Some("password")));
        assert!(c
            .classify_trusted(
                "sshd",
                Some(10),
                "pam_unix(sshd:session): session closed for user a"
            )
            .is_none());

        assert!(c
            .classify_trusted(
                "sshd-session",
                Some(20),
                "Accepted publickey for b from ::1 port 7 ssh2: RSA SHA256:x"
            )
            .is_some());
        let e = c
            .classify_trusted(
                "sshd-session",
                Some(20),
                "pam_unix(sshd:session): session closed for user b",
            )
            .unwrap();
        assert_eq!(
            (e.code, e.client.as_deref(), f(&e, "port")),
            (SSH_LOGOFF, Some("::1"), Some("7"))
        );
        assert!(c
            .classify_trusted(
                "sshd-session",
                Some(21),
                "Disconnected from user b ::1 port 7"
            )
            .is_none());
    }

    #[test]
    fn kbdint_pam_error_then_failed_line_is_one() {
        let mut c = all();
        assert!(c.classify_trusted("sshd", Some(5), "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=1.2.3.4  user=bob").is_none());
        let e = c
            .classify_trusted(
                "sshd",
                Some(5),
                "error: PAM: Authentication failure for bob from 1.2.3.4",
            )
            .unwrap();
        assert_eq!(
            (e.code, f(&e, "reason")),
            (SSH_LOGON_FAILED, Some("authentication failure"))
        );
        assert!(c
            .classify_trusted(
                "sshd",
                Some(5),
                "Failed keyboard-interactive/pam for bob from 1.2.3.4 port 9 ssh2"
            )
            .is_none());
        assert!(c
            .classify_trusted(
                "sshd",
                Some(5),
                "Connection closed by authenticating user bob 1.2.3.4 port 9 [preauth]"
            )
            .is_none());
    }

    #[test]
    fn preauth_close_alone_is_a_failure() {
        let mut c = all();
        let e = c
            .classify_trusted(
                "sshd",
                Some(8),
                "Connection closed by authenticating user root 1.2.3.4 port 9 [preauth]",
            )
            .unwrap();
        assert_eq!(
            (e.code, e.user.as_deref()),
            (SSH_LOGON_FAILED, Some("root"))
        );
        assert!(c
            .classify_trusted(
                "sshd",
                Some(9),
                "Connection closed by 1.2.3.4 port 9 [preauth]"
            )
            .is_none());
        assert_eq!(c.stats().ignored, 1);
    }

    #[test]
    fn sudo_command_with_semicolons() {
        let mut c = all();
        let e = c
            .classify_trusted("sudo", None, "   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/sh -c 'echo a ; echo \"é\"'")
            .unwrap();
        assert_eq!(e.code, SUDO_COMMAND);
        assert_eq!(f(&e, "tty"), Some("pts/0"));
        assert_eq!(f(&e, "cwd"), Some("/home/alice"));
        assert_eq!(f(&e, "target_user"), Some("root"));
        assert_eq!(f(&e, "command"), Some("/bin/sh -c 'echo a ; echo \"é\"'"));
        let e = c
            .classify_trusted("sudo", Some(3), "bob : 3 incorrect password attempts ; TTY=pts/1 ; PWD=/ ; USER=root ; COMMAND=/usr/bin/id")
            .unwrap();
        assert_eq!(
            (e.code, f(&e, "reason")),
            (SUDO_REFUSED, Some("3 incorrect password attempts"))
        );
    }

    #[test]
    fn accounts_filter() {
        let mut c = AuthClassifier::new(&AuthConfig::default());
        assert!(c
            .classify_trusted(
                "sshd",
                Some(1),
                "Accepted password for alice from 1.1.1.1 port 5 ssh2"
            )
            .is_none());
        assert!(c
            .classify_trusted(
                "sshd",
                Some(1),
                "Accepted password for nexthink from 1.1.1.1 port 5 ssh2"
            )
            .is_some());
        assert!(c
            .classify_trusted(
                "sudo",
                Some(1),
                "nexthink : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/true"
            )
            .is_some());
        assert!(c
            .classify_trusted(
                "sudo",
                Some(1),
                "root : TTY=pts/0 ; PWD=/ ; USER=nexthink ; COMMAND=/bin/true"
            )
            .is_none());
        assert!(c.classify_trusted("cron", Some(1), "anything").is_none());
        let s = c.stats();
        assert_eq!((s.parsed, s.filtered, s.other_program), (2, 2, 1));
        // Raw lines are recorded whatever the filter says.
        let e = c
            .classify_trusted("sshd", Some(1), "something new")
            .unwrap();
        assert_eq!((e.code, f(&e, "parsed")), (SSH_UNVERIFIED, Some("false")));
    }

    #[test]
    fn raw_rate_limit_per_program() {
        let mut c = AuthClassifier::new(&AuthConfig {
            accounts: Vec::new(),
            raw_per_minute: 2,
            ..AuthConfig::default()
        });
        let t0 = Instant::now();
        let mut n = 0;
        for _ in 0..5 {
            n += c
                .classify_at_trusted("sshd", Some(1), "weird", t0)
                .is_some() as u32;
        }
        assert_eq!(n, 2);
        let e = c
            .classify_at_trusted("sudo", Some(1), "weird sudo", t0)
            .unwrap();
        assert_eq!(
            (e.code, e.message.as_deref()),
            (SUDO_UNVERIFIED, Some("weird sudo"))
        );
        let e = c
            .classify_at_trusted("sshd", Some(1), "weird", t0 + RAW_WINDOW)
            .unwrap();
        assert_eq!(f(&e, "suppressed"), Some("3"));
        assert_eq!(c.stats().suppressed, 3);
    }

    /// The record of an entry as the fixture writes it; `program` and
    /// `program_pid` are checked against the syslog header instead.
    fn as_fixture(e: &Entry, program: &str, pid: Option<u32>) -> serde_json::Value {
        assert_eq!(e.get_field("program"), Some(program));
        assert_eq!(
            e.get_field("program_pid"),
            pid.map(|p| p.to_string()).as_deref()
        );
        let fields: serde_json::Map<String, serde_json::Value> = e
            .fields
            .iter()
            .filter(|(k, _)| k != "program" && k != "program_pid" && !k.starts_with("sender_"))
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        serde_json::json!({
            "code": e.code,
            "user": e.user,
            "client": e.client,
            "message": e.message,
            "fields": fields,
        })
    }

    #[test]
    fn fixture_cases() {
        let text = include_str!("../../../tests/fixtures/auth/cases.jsonl");
        let mut c = all();
        let mut bad = Vec::new();
        let mut lines = 0;
        for (n, l) in text.lines().enumerate() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let Some(line) = v.get("line").and_then(|x| x.as_str()) else {
                continue;
            };
            lines += 1;
            let m = crate::sources::syslog_msg::parse(line.as_bytes()).unwrap();
            let program = m.app_name.clone().unwrap_or_default();
            let got = c
                .classify_trusted(&program, m.pid(), &m.message)
                .map(|e| as_fixture(&e, &program, m.pid()))
                .unwrap_or(serde_json::Value::Null);
            if got != v["expect"] {
                bad.push(format!(
                    "line {}: {line}\n  expected {}\n  got      {got}",
                    n + 1,
                    v["expect"]
                ));
            }
        }
        assert!(lines >= 60, "only {lines} fixture lines");
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }

    #[test]
    fn an_exited_root_sender_is_proven_by_its_uid_alone() {
        let mut c = all();
        let refused = "Connection closed by authenticating user nexthink 10.0.0.9 port 5 [preauth]";
        let exited = |uid, comm: &str| Sender {
            uid: Some(uid),
            pid: Some(9),
            exe: None,
            comm: Some(comm.into()),
        };
        let e = c
            .classify("sshd", Some(9), refused, &exited(0, "sshd"))
            .unwrap();
        assert_eq!(e.code, 60002, "{e:?}");
        // A user's process that exited proves nothing, whatever its name.
        let e = c
            .classify("sshd", Some(9), refused, &exited(1000, "sshd"))
            .unwrap();
        assert_eq!(e.code, SSH_UNVERIFIED);
        let cmd =
            "nexthink : command not allowed ; PWD=/ ; USER=root ; COMMAND=/bin/cat /etc/shadow";
        let e = c
            .classify("sudo", Some(9), cmd, &exited(0, "sudo"))
            .unwrap();
        assert_eq!(e.code, 60102, "{e:?}");
        let e = c
            .classify("sudo", Some(9), cmd, &exited(1000, "sudo"))
            .unwrap();
        assert_eq!(e.code, SUDO_UNVERIFIED);
        // Gone before journald could read even its name: the uid is enough.
        let gone = Sender {
            uid: Some(0),
            pid: Some(9),
            exe: None,
            comm: None,
        };
        let refused2 =
            "Connection closed by authenticating user nexthink 10.0.0.9 port 6 [preauth]";
        let e = c.classify("sshd", Some(10), refused2, &gone).unwrap();
        assert_eq!(e.code, 60002, "{e:?}");
        // Root, but not the program it claims to be.
        let e = c
            .classify("sshd", Some(9), refused, &exited(0, "bash"))
            .unwrap();
        assert_eq!(e.code, SSH_UNVERIFIED);
    }

    #[test]
    fn unproven_senders_never_make_logons_or_commands() {
        let mut c = all();
        let logon = "Accepted password for nexthink from 6.6.6.6 port 1 ssh2";
        let cmd = "nexthink : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/true";
        let forgers = [
            // logger -t sshd run by a user: its own uid, exe logger.
            Sender {
                uid: Some(1000),
                pid: Some(9),
                exe: Some("/usr/bin/logger".into()),
                comm: Some("logger".into()),
            },
            // Root, but not sshd (or journald relaying an exited sender).
            Sender {
                uid: Some(0),
                pid: Some(9),
                exe: Some("/usr/lib/systemd/systemd-journald".into()),
                comm: Some("systemd-journal".into()),
            },
            // A user running a copy named sshd.
            Sender {
                uid: Some(1000),
                pid: Some(9),
                exe: Some("/usr/sbin/sshd".into()),
                comm: Some("sshd".into()),
            },
            // Nothing proven at all (a datagram without rsyslog's origin).
            Sender::default(),
        ];
        for s in &forgers {
            let e = c.classify("sshd", Some(1), logon, s).unwrap();
            assert_eq!(e.code, SSH_UNVERIFIED, "{s:?}");
            assert_eq!(f(&e, "verified"), Some("false"));
            assert_eq!(e.user, None);
            assert_eq!(e.message.as_deref(), Some(logon));
            assert_eq!(f(&e, "sender_uid"), s.uid.map(|u| u.to_string()).as_deref());
            let e = c.classify("sudo", Some(1), cmd, s).unwrap();
            assert_eq!(e.code, SUDO_UNVERIFIED, "{s:?}");
            assert_eq!(f(&e, "sender_exe"), s.exe.as_deref());
        }
        assert_eq!(c.stats().unverified, 8);
        assert_eq!(c.stats().parsed, 0);
        // The real ones.
        let e = c.classify_trusted("sshd", Some(1), logon).unwrap();
        assert_eq!(e.code, SSH_LOGON);
        let e = c.classify_trusted("sudo", Some(1), cmd).unwrap();
        assert_eq!(e.code, SUDO_COMMAND);
    }

    #[test]
    fn unverified_lines_are_limited_per_sender_uid() {
        let mut c = AuthClassifier::new(&AuthConfig {
            accounts: Vec::new(),
            raw_per_minute: 2,
            ..AuthConfig::default()
        });
        let t0 = Instant::now();
        let forger = Sender {
            uid: Some(1000),
            ..Sender::default()
        };
        let mut n = 0;
        for _ in 0..10 {
            n += c
                .classify_at("sshd", Some(1), "Accepted x", &forger, t0)
                .is_some() as u32;
        }
        assert_eq!(n, 2);
        // The real sshd's raw lines have their own budget.
        assert!(c
            .classify_at_trusted("sshd", Some(1), "weird", t0)
            .is_some());
        let e = c
            .classify_at("sshd", Some(1), "Accepted x", &forger, t0 + RAW_WINDOW)
            .unwrap();
        assert_eq!(f(&e, "suppressed"), Some("8"));
    }

    proptest! {
        #[test]
        fn never_panics(program in "(sshd|sudo|sshd-session|x)", pid in proptest::option::of(any::<u32>()), msg in any::<String>()) {
            let mut c = all();
            let _ = c.classify_trusted(&program, pid, &msg);
        }

        #[test]
        fn never_panics_on_near_shapes(
            pre in "(Accepted|Failed|Invalid user|Disconnected from user|Connection closed by authenticating user|error: PAM: x for|User|pam_unix\\(sshd:session\\): session closed for user|[a-z]{1,8} :) ",
            rest in "[ a-z0-9:.;=/\\[\\]\\(\\)\"-]{0,80}",
        ) {
            let mut c = all();
            for program in ["sshd", "sudo"] {
                if let Some(e) = c.classify_trusted(program, Some(7), &format!("{pre}{rest}")) {
                    prop_assert!(matches!(e.code, 60001 | 60002 | 60003 | 60009 | 60101 | 60102 | 60109));
                    for (k, _) in &e.fields {
                        prop_assert!(crate::protocol::valid_detail_key(k));
                    }
                }
            }
        }
    }
}

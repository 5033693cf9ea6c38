//! SSH logons and sudo commands read from the journal (`[auth] source =
//! "journal"`, for appliances without rsyslog).
//!
//! Only the reading is done here; parsing is shared with the rsyslog intake
//! (`crate::sources::auth_parse::AuthClassifier`), so both paths record the
//! same message the same way. journalctl is narrowed to the programs'
//! `SYSLOG_IDENTIFIER` or `_COMM`; the classifier gets the program name
//! (identifier, else command), the pid (`_PID`, else `SYSLOG_PID`) and the
//! message, and as the proven sender the fields journald itself recorded
//! at receipt (`_UID` from the socket credentials, `_PID`, `_EXE`, `_COMM`;
//! a sender cannot set `_`-prefixed fields), so `logger -t sshd` run by a
//! user yields 60009 naming that user, never a logon (docs/operations.md, SSH and sudo).

use super::entry::JournalEntry;
use super::follower::{Classifier, Verdict};
use crate::config::{AuthConfig, Config};
use crate::sources::auth_parse::{AuthClassifier, Sender};

/// Programs whose messages are read (OpenSSH ≥ 9.8 logs as `sshd-session`).
pub const PROGRAMS: [&str; 3] = ["sshd", "sshd-session", "sudo"];

/// The journal side of the SSH/sudo intake.
pub struct AuthJournalClassifier {
    inner: AuthClassifier,
}

impl AuthJournalClassifier {
    /// A classifier for the `[auth]` settings (accounts filter, raw limit).
    pub fn new(cfg: &AuthConfig) -> AuthJournalClassifier {
        AuthJournalClassifier {
            inner: AuthClassifier::new(cfg),
        }
    }
}

impl Classifier for AuthJournalClassifier {
    fn journal_matches(&self) -> Vec<String> {
        // Same field: ORed; `+` ORs the two groups.
        let mut m: Vec<String> = PROGRAMS
            .iter()
            .map(|p| format!("SYSLOG_IDENTIFIER={p}"))
            .collect();
        m.push("+".into());
        m.extend(PROGRAMS.iter().map(|p| format!("_COMM={p}")));
        m
    }

    fn reload(&mut self, config: &Config) {
        self.inner.reload(&config.auth);
    }

    fn classify(&mut self, e: &JournalEntry) -> Verdict {
        let Some(program) = e.field("SYSLOG_IDENTIFIER").or_else(|| e.field("_COMM")) else {
            return Verdict::Ignored("no_program");
        };
        if !PROGRAMS.contains(&program.as_ref()) {
            return Verdict::Ignored("other_program");
        }
        let Some(message) = e.field("MESSAGE") else {
            return Verdict::Ignored("no_message");
        };
        let pid = e
            .field("_PID")
            .or_else(|| e.field("SYSLOG_PID"))
            .and_then(|p| p.parse::<u32>().ok());
        let sender = Sender {
            uid: e.field("_UID").and_then(|u| u.parse().ok()),
            pid: e.field("_PID").and_then(|p| p.parse().ok()),
            exe: e.field("_EXE").map(|x| x.into_owned()),
            comm: e.field("_COMM").map(|x| x.into_owned()),
        };
        match self.inner.classify(&program, pid, &message, &sender) {
            Some(rec) => Verdict::Record(Box::new(rec)),
            None => Verdict::Ignored("not_recorded"),
        }
    }
}

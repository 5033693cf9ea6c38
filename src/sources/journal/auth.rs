//! SSH logons and sudo commands read from the journal (`[auth] source =
//! "journal"`, for appliances without rsyslog).
//!
//! Only the reading is done here; parsing is shared with the rsyslog intake
//! (`crate::sources::auth_parse::AuthClassifier`), so both paths record the
//! same message the same way. journalctl is narrowed to the programs'
//! `SYSLOG_IDENTIFIER` or `_COMM`; the classifier gets the program name
//! (identifier, else command), the pid (`_PID`, else `SYSLOG_PID`) and the
//! message.

use super::entry::JournalEntry;
use super::follower::{Classifier, Verdict};
use crate::config::{AuthConfig, Config};
use crate::sources::auth_parse::AuthClassifier;

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
        self.inner.set_accounts(config.auth.accounts.clone());
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
        match self.inner.classify(&program, pid, &message) {
            Some(rec) => Verdict::Record(Box::new(rec)),
            None => Verdict::Ignored("not_recorded"),
        }
    }
}

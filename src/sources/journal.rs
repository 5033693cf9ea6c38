//! The journal follower: systemd's own messages about the Engine units
//! (`nxengine@*.service`) become 60201/60202/60203 records, exactly once
//! (docs/operations.md, Engine starts and stops); with `[auth] source = "journal"` the same machinery turns sshd
//! and sudo messages into 6000x/6010x records (docs/operations.md, SSH and sudo).
//!
//! Built like Vector's journald source: a child `journalctl --output=json`
//! ([`follower`]) feeds one task that classifies each entry ([`engine`],
//! [`auth`]) and hands the record to the writer; the position in the journal
//! is a [`cursor::JournalCursor`]. What is specific here is the exactly-once
//! rule:
//!
//! - entries are processed strictly in order, one at a time; the follower
//!   never moves its position past an entry whose record is not yet durable
//!   (acknowledged by the writer);
//! - every record carries the `cursor=` of its entry and `jsrc=` naming the
//!   follower (`engine` or `auth`), so the audit log itself says how far the
//!   follower got;
//! - the saved cursor file (temp file, fsync, rename, directory fsync) is
//!   written only after the records up to it are durable; it also remembers
//!   the highest log `seq` it accounts for;
//! - on start the follower takes the newer of the saved file and the last
//!   `cursor=` record of its own in the log ([`cursor::resume_point`]), so a
//!   crash between a durable record and the cursor save neither loses nor
//!   duplicates anything.
//!
//! journalctl missing, exiting, killed, or printing garbage costs only a
//! restart with exponential back-off (capped at 30 s); the state and last
//! error are in `nxaudit status` (sections `journal` and `auth_journal`).

pub mod auth;
pub mod cursor;
pub mod engine;
pub mod entry;
pub mod follower;

use std::time::Duration;

use crate::config::{AuthConfig, Config, JournalConfig};
use crate::sources::{ReloadMode, Source, SourceContext, SourceError};
use crate::writer::WriterHandle;

pub use cursor::{JournalCursor, Position};
pub use entry::JournalEntry;
pub use follower::{Classifier, Follower, FollowerSpec, RecordSink, Verdict};

/// Status section of the Engine unit follower.
pub const ENGINE_SECTION: &str = "journal";
/// Status section of the SSH/sudo follower.
pub const AUTH_SECTION: &str = "auth_journal";
/// `jsrc=` value of the Engine unit follower's records.
pub const ENGINE_JSRC: &str = "engine";
/// `jsrc=` value of the SSH/sudo follower's records.
pub const AUTH_JSRC: &str = "auth";

/// Errors of the journal follower that are not journalctl's own.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A unit glob of `[journal] units` does not compile.
    #[error("invalid unit pattern {pattern:?}: {message}")]
    BadUnitPattern {
        /// The pattern.
        pattern: String,
        /// globset's message.
        message: String,
    },
    /// The cursor file or the log could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A cursor string is not one journalctl prints.
    #[error("invalid journal cursor {0:?}")]
    BadCursor(String),
    /// The saved cursor file does not parse.
    #[error("corrupt cursor file {path}: {message}")]
    CorruptState {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        message: String,
    },
}

/// A journal follower as a [`Source`]: the follower is made on the first
/// run, with the writer and status of the context it runs with.
pub struct JournalSource<C> {
    spec: FollowerSpec,
    classifier: Option<C>,
    follower: Option<Follower<C, WriterHandle>>,
}

impl<C: Classifier> JournalSource<C> {
    /// A source following the journal as `spec` says, classifying with
    /// `classifier`.
    pub fn new(spec: FollowerSpec, classifier: C) -> JournalSource<C> {
        JournalSource {
            spec,
            classifier: Some(classifier),
            follower: None,
        }
    }
}

impl<C: Classifier + Sync> Source for JournalSource<C> {
    fn name(&self) -> &'static str {
        self.spec.section
    }

    /// The follower reads the published configuration before each entry.
    fn reload_mode(&self) -> ReloadMode {
        ReloadMode::BeforeEachItem
    }

    fn reconfigure(&mut self, cfg: &Config) {
        // Once running, the follower takes reloads from its watch itself.
        if let Some(c) = self.classifier.as_mut() {
            c.reload(cfg);
        }
    }

    /// Follows until shutdown. Never returns an error: every failure of
    /// journalctl becomes a restart with back-off and a status entry.
    async fn run(&mut self, ctx: &mut SourceContext) -> Result<(), SourceError> {
        if self.follower.is_none() {
            if let Some(classifier) = self.classifier.take() {
                let f = Follower::new(
                    self.spec.clone(),
                    classifier,
                    ctx.writer.clone(),
                    ctx.status.clone(),
                )
                .with_reload(ctx.reloads.watch());
                self.follower = Some(f);
            }
        }
        if let Some(f) = self.follower.as_mut() {
            f.follow(ctx.shutdown.clone()).await;
        }
        Ok(())
    }
}

impl JournalConfig {
    /// The Engine unit follower (status section `journal`); `cfg` gives the
    /// state and log directories. Fails on a unit glob that does not
    /// compile.
    pub fn build(
        &self,
        cfg: &Config,
    ) -> Result<JournalSource<engine::EngineClassifier>, JournalError> {
        let classifier = engine::EngineClassifier::new(&self.units)?;
        let spec =
            FollowerSpec::from_config(cfg, ENGINE_SECTION, ENGINE_JSRC, "journal-engine.cursor");
        Ok(JournalSource::new(spec, classifier))
    }
}

impl AuthConfig {
    /// The SSH/sudo follower for `[auth] source = "journal"` (status
    /// section `auth_journal`); `cfg` gives `[journal]`'s journalctl
    /// settings and the state and log directories.
    pub fn build_journal(&self, cfg: &Config) -> JournalSource<auth::AuthJournalClassifier> {
        let classifier = auth::AuthJournalClassifier::new(self);
        let spec = FollowerSpec::from_config(cfg, AUTH_SECTION, AUTH_JSRC, "journal-auth.cursor");
        JournalSource::new(spec, classifier)
    }
}

/// Back-off of journalctl restarts: first delay.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
/// Back-off of journalctl restarts: cap.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

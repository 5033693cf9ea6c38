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

use crate::config::AuthSource;
use crate::sources::SourceContext;

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

/// Follows the journal for the Engine units and writes 60201/60202/60203
/// records until `ctx.shutdown` fires. Never returns early: every failure
/// becomes a restart with back-off and a status entry.
pub async fn run_engine(ctx: SourceContext) {
    let cfg = &ctx.config.journal;
    let mut shutdown = ctx.shutdown.clone();
    if !cfg.enabled {
        follower::publish_disabled(&ctx.status, ENGINE_SECTION, "[journal] enabled = false");
        shutdown.recv().await;
        return;
    }
    let classifier = match engine::EngineClassifier::new(&cfg.units) {
        Ok(c) => c,
        Err(e) => {
            // A bad glob is a configuration error the operator must fix;
            // the daemon stays up and says so.
            tracing::error!(error = %e, "journal follower not started");
            follower::publish_failed(&ctx.status, ENGINE_SECTION, &e.to_string());
            shutdown.recv().await;
            return;
        }
    };
    let spec = FollowerSpec::from_config(
        &ctx.config,
        ENGINE_SECTION,
        ENGINE_JSRC,
        "journal-engine.cursor",
    );
    Follower::new(spec, classifier, ctx.writer.clone(), ctx.status.clone())
        .with_reload(ctx.reloads.watch())
        .run(shutdown)
        .await;
}

/// Follows the journal for sshd and sudo messages (when `[auth] source =
/// "journal"`) and writes their records until `ctx.shutdown` fires.
pub async fn run_auth(ctx: SourceContext) {
    let mut shutdown = ctx.shutdown.clone();
    if ctx.config.auth.source != AuthSource::Journal {
        follower::publish_disabled(
            &ctx.status,
            AUTH_SECTION,
            "[auth] source is not \"journal\"",
        );
        shutdown.recv().await;
        return;
    }
    let classifier = auth::AuthJournalClassifier::new(&ctx.config.auth);
    let spec =
        FollowerSpec::from_config(&ctx.config, AUTH_SECTION, AUTH_JSRC, "journal-auth.cursor");
    Follower::new(spec, classifier, ctx.writer.clone(), ctx.status.clone())
        .with_reload(ctx.reloads.watch())
        .run(shutdown)
        .await;
}

/// Back-off of journalctl restarts: first delay.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
/// Back-off of journalctl restarts: cap.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

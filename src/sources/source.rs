//! What a source is: a plug-in that turns something outside the daemon
//! (the journal, syslog datagrams) into records for the writer. The shared
//! runner ([`super::runner`]) does what is common: the status section's
//! `state` from start to stop, restarts with back-off after an error
//! return, registering for acknowledged reloads, and shutdown.
//!
//! A source file holds a `build()` on its config section that turns it
//! into a value implementing [`Source`]; registering it is one line in
//! `sources/mod.rs`.

use std::future::Future;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::sources::SourceContext;

/// First wait before a source that returned an error is run again.
pub const RESTART_INITIAL: Duration = Duration::from_millis(200);
/// Longest wait between two runs of a failing source.
pub const RESTART_MAX: Duration = Duration::from_secs(10);

/// Why a run of a source ended early; the runner shows it as the
/// section's `last_error` and runs the source again after a back-off.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct SourceError(Box<dyn std::error::Error + Send + Sync>);

impl SourceError {
    /// Wraps the source's own error.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> SourceError {
        SourceError(Box::new(e))
    }
}

/// How a source takes a reloaded configuration (SIGHUP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadMode {
    /// Applies each reload as soon as it is published (between two items)
    /// and acknowledges it: the daemon writes 60904 only after.
    Acknowledged,
    /// Reads the published configuration before each item it handles, so
    /// nothing after 60904 can be judged by the old one; nothing to wait for.
    BeforeEachItem,
}

/// A source the runner can start, restart and stop.
pub trait Source: Send + 'static {
    /// Name of its status section (and in logs); also its reload part.
    fn name(&self) -> &'static str;

    /// How it takes reloads.
    fn reload_mode(&self) -> ReloadMode;

    /// Takes what can change live from a reloaded configuration (filters,
    /// accounts; never paths). The runner calls it for a reload published
    /// while the source is not running (waiting to restart); a running
    /// source takes reloads itself from [`SourceContext::reloads`].
    fn reconfigure(&mut self, cfg: &Config);

    /// The wait between runs after an error return.
    fn restart_backoff(&self) -> Backoff {
        Backoff::new(RESTART_INITIAL, RESTART_MAX)
    }

    /// Runs until `ctx.shutdown` fires (`Ok`), or until it cannot go on
    /// (`Err`: the runner runs it again after a back-off). Counters kept in
    /// `self` survive a restart. Publishes its own status section through
    /// `ctx.status`, with a `state` field.
    fn run(
        &mut self,
        ctx: &mut SourceContext,
    ) -> impl Future<Output = Result<(), SourceError>> + Send;
}

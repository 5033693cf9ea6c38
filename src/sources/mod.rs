//! Sources that feed the writer besides the socket: the journal follower
//! (Engine units, optionally SSH/sudo) and the syslog intake (rsyslog).
//! Sinks (`crate::sinks`) get the same context.

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::shutdown::Shutdown;
use crate::status::Registry;
use crate::writer::WriterHandle;

pub mod auth_parse;
pub mod journal;
pub mod syslog_intake;
pub mod syslog_msg;

/// What every source or sink task is started with.
#[derive(Clone)]
pub struct SourceContext {
    /// The effective configuration.
    pub config: Arc<Config>,
    /// Where records go.
    pub writer: WriterHandle,
    /// Fires when the daemon stops; a task returns soon after.
    pub shutdown: Shutdown,
    /// Where the task publishes its status section.
    pub status: Registry,
    /// The configuration after each successful SIGHUP, for what a task can
    /// change live (forwarding filters, the accounts filter).
    pub reloaded: watch::Receiver<Arc<Config>>,
}

impl SourceContext {
    /// A context whose configuration never changes (tests, tools).
    pub fn fixed(
        config: Arc<Config>,
        writer: WriterHandle,
        shutdown: Shutdown,
        status: Registry,
    ) -> SourceContext {
        // With the sender gone, `has_changed` is an error: never reloaded.
        let (_, reloaded) = watch::channel(config.clone());
        SourceContext {
            config,
            writer,
            shutdown,
            status,
            reloaded,
        }
    }

    /// The new configuration if a reload happened since the last call.
    pub fn take_reload(&mut self) -> Option<Arc<Config>> {
        if self.reloaded.has_changed().unwrap_or(false) {
            Some(self.reloaded.borrow_and_update().clone())
        } else {
            None
        }
    }
}

//! Sources that feed the writer besides the socket: the journal follower
//! (Engine units, optionally SSH/sudo) and the syslog intake (rsyslog).
//! Reloads (SIGHUP) reach them, as they reach the sinks, through
//! [`crate::reload`].

use std::sync::Arc;

use crate::config::Config;
pub use crate::reload::{Reload, Reloads};
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
    /// change live (the accounts filter, units).
    pub reloads: Reloads,
}

impl SourceContext {
    /// A context whose configuration never changes (tests, tools).
    pub fn fixed(
        config: Arc<Config>,
        writer: WriterHandle,
        shutdown: Shutdown,
        status: Registry,
    ) -> SourceContext {
        SourceContext {
            reloads: Reloads::fixed(config.clone()),
            config,
            writer,
            shutdown,
            status,
        }
    }

    /// A copy for the task `name` whose reloads the daemon waits for before
    /// it writes 60904.
    pub fn part(&self, name: &'static str) -> SourceContext {
        let mut c = self.clone();
        c.reloads = self.reloads.part(name);
        c
    }

    /// The new configuration if a reload happened since the last call;
    /// acknowledged when the returned [`Reload`] is dropped.
    pub fn take_reload(&mut self) -> Option<Reload> {
        self.reloads.take()
    }

    /// Waits for the next reload (forever when reloads are impossible).
    pub async fn next_reload(&mut self) -> Reload {
        self.reloads.next().await
    }
}

//! Sources that feed the writer besides the socket: the journal follower
//! (Engine units, optionally SSH/sudo) and the syslog intake (rsyslog).
//! Sinks (`crate::sinks`) get the same context.

use std::sync::Arc;

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
}

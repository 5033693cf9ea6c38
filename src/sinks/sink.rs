//! What a sink is: a plug-in that receives records read from the durable
//! log and hands them to a destination. The shared runner
//! ([`super::runner`]) does the rest: following the log, filtering,
//! retries with back-off, the checkpoint, status, reloads and shutdown.
//!
//! A sink file holds its config struct (serde, defaults,
//! `deny_unknown_fields`) and a `build()` that turns it into a value
//! implementing [`Sink`]; registering it is one line in `sinks/mod.rs`.

use std::future::Future;
use std::io;
use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::reader::{LogRecord, RecordFilter};
use crate::shutdown::Shutdown;
use crate::status::Registry;

/// What every sink runs with (from the daemon's configuration).
#[derive(Clone)]
pub struct SinkEnv {
    /// The audit log's directory.
    pub log_dir: PathBuf,
    /// The state directory, where checkpoints live.
    pub state_dir: PathBuf,
    /// Whether the log is synced (`flush` is not `none`): lines are then
    /// made durable before a sink sees them.
    pub sync: bool,
    /// Where the runner publishes the sink's status section.
    pub status: Registry,
    /// Fires when the daemon stops.
    pub shutdown: Shutdown,
}

/// A running sink.
///
/// Delivery is at-least-once between the runner and the sink: after a
/// crash the records after the saved checkpoint are delivered again, so a
/// sink that can tell what it already holds (the file sink reads its last
/// seq) makes it exactly-once.
pub trait Sink: Send + 'static {
    /// Its config section.
    type Config: Send + Sync + 'static;

    /// Name of its status section (and in logs).
    fn name(&self) -> &'static str;
    /// Name of its checkpoint file in the state directory.
    fn checkpoint(&self) -> &'static str;
    /// What the status calls a delivered record's count (`forwarded`, …).
    fn delivered_key(&self) -> &'static str;
    /// Which records it wants.
    fn filter(&self) -> RecordFilter;
    /// Takes what can change live from a reloaded section.
    fn reconfigure(&mut self, cfg: &Self::Config);

    /// Prepares the destination before the first record (open a file,
    /// find what it already holds). Retried with back-off on error.
    fn open(&mut self) -> impl Future<Output = io::Result<()>> + Send;

    /// Hands one record over; retried with back-off on error. The runner
    /// keeps polling the same future while it waits (it is only dropped at
    /// shutdown, after which nothing more is delivered).
    fn deliver(&mut self, rec: &LogRecord) -> impl Future<Output = io::Result<()>> + Send;

    /// Makes what was delivered so far durable or confirmed at the
    /// destination; `idle`: nothing more is coming for now.
    fn commit(&mut self, idle: bool) -> impl Future<Output = io::Result<()>> + Send;

    /// The position that may be saved once every record up to `processed`
    /// was delivered (or filtered out) and committed: at most `processed`,
    /// less while the destination may still lose some.
    fn confirmed(&self, processed: u64) -> u64 {
        processed
    }

    /// Adds its own fields to its status section.
    fn status(&self, _doc: &mut Map<String, Value>) {}
}

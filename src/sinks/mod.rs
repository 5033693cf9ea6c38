//! Sinks: plug-ins that read the durable log and copy records elsewhere
//! (the local syslog, a filtered file). Each is one file or folder with its
//! config section and a `build()`; [`runner`] runs them all the same way;
//! this file registers them.
//!
//! Building happens before the writer starts: each sink's checkpoint is
//! registered with [`Readers`] then, so retention never deletes what a
//! sink has not read yet, from the first pass after a restart.

use std::future::Future;
use std::pin::Pin;

use tracing::warn;

use crate::config::Config;
use crate::reader::{Checkpoint, Readers};
use crate::reload::Reloads;

pub mod file;
pub mod runner;
pub mod sink;
pub mod syslog;

pub use sink::{Sink, SinkEnv};

/// A sink built from its section, ready to be spawned.
pub struct BuiltSink {
    /// Its name (status section).
    pub name: &'static str,
    /// Its run until shutdown.
    pub task: Pin<Box<dyn Future<Output = ()> + Send>>,
}

fn built<S: Sink>(
    sink: S,
    env: &SinkEnv,
    reloads: &Reloads,
    readers: &Readers,
    section: fn(&Config) -> &S::Config,
) -> BuiltSink {
    let name = sink.name();
    readers.register(
        name,
        Checkpoint::in_state_dir(&env.state_dir, sink.checkpoint()),
    );
    BuiltSink {
        name,
        task: Box::pin(runner::run(sink, env.clone(), reloads.part(name), section)),
    }
}

/// Builds every enabled sink of `cfg` and registers its checkpoint.
pub fn build(cfg: &Config, env: &SinkEnv, reloads: &Reloads, readers: &Readers) -> Vec<BuiltSink> {
    let mut out = Vec::new();
    if cfg.forward.enabled {
        out.push(built(cfg.forward.build(), env, reloads, readers, |c| {
            &c.forward
        }));
    }
    if cfg.sinks.file.enabled {
        match cfg.sinks.file.build() {
            Ok(s) => out.push(built(s, env, reloads, readers, |c| &c.sinks.file)),
            // Refused at load already; kept for a config built in code.
            Err(e) => warn!(error = %e, "file sink not started"),
        }
    }
    out
}

//! Sources: plug-ins that feed the writer besides the socket: the journal
//! follower of the Engine units ([`journal`], `[journal]`), and SSH/sudo
//! logons either from rsyslog ([`syslog_intake`], `[auth] source =
//! "rsyslog"`) or from the journal (`[auth] source = "journal"`).
//!
//! Each is one file or folder with a `build()` on its config section that
//! returns a [`Source`]; [`runner`] runs them all the same way (status
//! `state`, restart with back-off, reloads, shutdown); [`build`] below is
//! the one place that registers them. A new source is one new file, its
//! config section and one registration line here. Reloads (SIGHUP) reach
//! them, as they reach the sinks, through [`crate::reload`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::{AuthSource, Config};
pub use crate::reload::{Reload, Reloads};
use crate::shutdown::Shutdown;
use crate::status::Registry;
use crate::writer::WriterHandle;

pub mod auth_parse;
pub mod journal;
pub mod runner;
pub mod source;
pub mod syslog_intake;
pub mod syslog_msg;

pub use source::{ReloadMode, Source, SourceError};

/// A source built from its section, ready to be spawned.
pub struct BuiltSource {
    /// Its name (status section).
    pub name: &'static str,
    /// Its run until shutdown.
    pub task: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// Hands `source` to the runner; a source that acknowledges reloads is
/// registered as a reload part now, before any SIGHUP is handled.
fn built<S: Source>(source: S, ctx: &SourceContext) -> BuiltSource {
    let name = source.name();
    let ctx = match source.reload_mode() {
        ReloadMode::Acknowledged => ctx.part(name),
        ReloadMode::BeforeEachItem => ctx.clone(),
    };
    BuiltSource {
        name,
        task: Box::pin(runner::run(source, ctx)),
    }
}

/// Builds every enabled source of `cfg`, each to run with `ctx`.
pub fn build(cfg: &Config, ctx: &SourceContext) -> Vec<BuiltSource> {
    let mut out = Vec::new();
    if cfg.journal.enabled {
        match cfg.journal.build(cfg) {
            Ok(s) => out.push(built(s, ctx)),
            // A bad unit glob: the daemon stays up and the status says why.
            Err(e) => {
                tracing::error!(error = %e, "journal follower not started");
                runner::publish_failed(&ctx.status, journal::ENGINE_SECTION, &e.to_string());
            }
        }
    }
    match cfg.auth.source {
        AuthSource::Rsyslog => out.push(built(cfg.auth.build_intake(cfg), ctx)),
        AuthSource::Journal => out.push(built(cfg.auth.build_journal(cfg), ctx)),
        AuthSource::Off => {}
    }
    out
}

/// What every source runs with.
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

//! Sources that feed the writer besides the socket: the journal follower
//! (Engine units, optionally SSH/sudo) and the syslog intake (rsyslog).
//! Sinks (`crate::sinks`) get the same context.
//!
//! Reloads (SIGHUP): the daemon publishes the new configuration on a watch
//! channel and writes 60904 only once every registered part has applied it
//! ([`ReloadAcks`]): a part takes the new configuration as a [`Reload`],
//! applies it, and dropping the `Reload` acknowledges it. So nothing the
//! part handles after 60904 was judged by the old configuration.

use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

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
    /// Where this task acknowledges reloads (see [`SourceContext::part`]).
    pub acks: ReloadAcks,
    /// This task's slot in `acks`, once registered.
    pub ack_slot: Option<usize>,
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
            acks: ReloadAcks::default(),
            ack_slot: None,
        }
    }

    /// A copy for the task `name` whose reloads the daemon waits for before
    /// it writes 60904.
    pub fn part(&self, name: &'static str) -> SourceContext {
        let mut c = self.clone();
        c.ack_slot = Some(self.acks.register(name, self.reloaded.borrow().clone()));
        c
    }

    /// The new configuration if a reload happened since the last call;
    /// acknowledged when the returned [`Reload`] is dropped.
    pub fn take_reload(&mut self) -> Option<Reload> {
        if self.reloaded.has_changed().unwrap_or(false) {
            Some(self.reload_now())
        } else {
            None
        }
    }

    /// Waits for the next reload (forever when reloads are impossible), for
    /// tasks that apply it as soon as it is published.
    pub async fn next_reload(&mut self) -> Reload {
        if self.reloaded.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        self.reload_now()
    }

    fn reload_now(&mut self) -> Reload {
        Reload {
            config: self.reloaded.borrow_and_update().clone(),
            ack: self.ack_slot.map(|s| (self.acks.clone(), s)),
        }
    }
}

/// A reloaded configuration being applied by a task; dropping it tells the
/// daemon the task now runs with it.
pub struct Reload {
    config: Arc<Config>,
    ack: Option<(ReloadAcks, usize)>,
}

impl Deref for Reload {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.config
    }
}

impl Drop for Reload {
    fn drop(&mut self) {
        if let Some((acks, slot)) = self.ack.take() {
            acks.applied(slot, &self.config);
        }
    }
}

/// Which configuration each registered task runs with, so the daemon can
/// wait until all run with the one it just published.
#[derive(Clone, Default)]
pub struct ReloadAcks {
    inner: Arc<AcksInner>,
}

#[derive(Default)]
struct AcksInner {
    parts: Mutex<Vec<(&'static str, Arc<Config>)>>,
    changed: Notify,
}

impl ReloadAcks {
    fn parts(&self) -> std::sync::MutexGuard<'_, Vec<(&'static str, Arc<Config>)>> {
        // A panic elsewhere while holding the lock leaves valid data.
        self.inner.parts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers task `name`, running with `current`; returns its slot.
    pub fn register(&self, name: &'static str, current: Arc<Config>) -> usize {
        let mut p = self.parts();
        p.push((name, current));
        p.len() - 1
    }

    fn applied(&self, slot: usize, config: &Arc<Config>) {
        if let Some(p) = self.parts().get_mut(slot) {
            p.1 = config.clone();
        }
        self.inner.changed.notify_waiters();
    }

    /// Tasks not yet running with `config`.
    pub fn lagging(&self, config: &Arc<Config>) -> Vec<&'static str> {
        self.parts()
            .iter()
            .filter(|(_, c)| !Arc::ptr_eq(c, config))
            .map(|(n, _)| *n)
            .collect()
    }

    /// Waits until every registered task runs with `config`, at most
    /// `timeout`; returns the tasks still lagging (empty: all applied).
    pub async fn wait(&self, config: &Arc<Config>, timeout: Duration) -> Vec<&'static str> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            // Registered before the check, so an ack in between wakes us.
            notified.as_mut().enable();
            let late = self.lagging(config);
            if late.is_empty() {
                return late;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.lagging(config);
            }
        }
    }
}

//! Reloads (SIGHUP): the single path by which every part of the daemon
//! takes a new configuration.
//!
//! 1. The daemon loads and checks the file, then publishes it on a watch
//!    channel ([`ReloadHub::publish`]).
//! 2. Every registered part ([`Reloads::part`]: the listener's ACL and
//!    `strict_codes`, the syslog intake, each sink) takes it as a
//!    [`Reload`] from its [`Reloads`] handle, applies it, and dropping the
//!    `Reload` acknowledges it ([`ReloadAcks`]). Parts that read the watch
//!    before each item (the journal followers) need no acknowledgement.
//! 3. Once every part has acknowledged (or after a timeout, logged with the
//!    lagging parts), the writer applies `[log]` and writes 60904 as the
//!    commit step (`WriterHandle::reload`).
//!
//! So nothing handled after 60904 was judged by the old configuration. No
//! part is changed any other way: a new reloadable setting belongs to a
//! part that takes it here.

use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::config::Config;

/// The daemon's end: publishes each new configuration.
pub struct ReloadHub {
    tx: watch::Sender<Arc<Config>>,
    acks: ReloadAcks,
}

impl ReloadHub {
    /// A hub whose parts start with `config`.
    pub fn new(config: Config) -> ReloadHub {
        let (tx, _) = watch::channel(Arc::new(config));
        ReloadHub {
            tx,
            acks: ReloadAcks::default(),
        }
    }

    /// A handle for a part that does not acknowledge (see [`Reloads::part`]).
    pub fn subscribe(&self) -> Reloads {
        Reloads {
            rx: self.tx.subscribe(),
            acks: self.acks.clone(),
            slot: None,
        }
    }

    /// Publishes `config` and waits until every registered part runs with
    /// it, at most `timeout`; returns the parts still lagging.
    pub async fn publish(&self, config: Config, timeout: Duration) -> Vec<&'static str> {
        let published = Arc::new(config);
        self.tx.send_replace(published.clone());
        self.acks.wait(&published, timeout).await
    }
}

/// A part's end: the configuration it started with and every reload after.
#[derive(Clone)]
pub struct Reloads {
    rx: watch::Receiver<Arc<Config>>,
    acks: ReloadAcks,
    slot: Option<usize>,
}

impl Reloads {
    /// A handle whose configuration never changes (tests, tools).
    pub fn fixed(config: Arc<Config>) -> Reloads {
        // With the sender gone, `has_changed` is an error: never reloaded.
        let (_, rx) = watch::channel(config);
        Reloads {
            rx,
            acks: ReloadAcks::default(),
            slot: None,
        }
    }

    /// A copy for the part `name`, whose reloads the daemon waits for
    /// before it writes 60904.
    pub fn part(&self, name: &'static str) -> Reloads {
        let mut r = self.clone();
        r.slot = Some(self.acks.register(name, self.rx.borrow().clone()));
        r
    }

    /// The configuration now published.
    pub fn current(&self) -> Arc<Config> {
        self.rx.borrow().clone()
    }

    /// The watch itself, for parts that read it before each item and need
    /// no acknowledgement (the journal followers).
    pub fn watch(&self) -> watch::Receiver<Arc<Config>> {
        self.rx.clone()
    }

    /// The new configuration if a reload happened since the last call;
    /// acknowledged when the returned [`Reload`] is dropped.
    pub fn take(&mut self) -> Option<Reload> {
        if self.rx.has_changed().unwrap_or(false) {
            Some(self.now())
        } else {
            None
        }
    }

    /// Waits for the next reload (forever when reloads are impossible), for
    /// parts that apply it as soon as it is published.
    pub async fn next(&mut self) -> Reload {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        self.now()
    }

    fn now(&mut self) -> Reload {
        Reload {
            config: self.rx.borrow_and_update().clone(),
            ack: self.slot.map(|s| (self.acks.clone(), s)),
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

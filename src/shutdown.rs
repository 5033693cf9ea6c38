//! One shutdown signal fanned out to every task (the mini-redis pattern).
//!
//! The daemon holds a [`ShutdownTrigger`]; every task holds a [`Shutdown`]
//! cloned from it and selects on [`Shutdown::recv`] next to its work.

use tokio::sync::watch;

/// Fires the shutdown once; every [`Shutdown`] sees it.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

/// A task's view of the shutdown signal.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

impl ShutdownTrigger {
    /// A new, unfired trigger and its first listener.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger { tx }, Shutdown { rx })
    }

    /// Fires the signal (idempotent).
    pub fn fire(&self) {
        self.tx.send_replace(true);
    }

    /// A new listener.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }
}

impl Shutdown {
    /// Whether the signal has fired.
    pub fn is_shutdown(&self) -> bool {
        *self.rx.borrow()
    }

    /// Waits until the signal fires (returns at once if it has).
    pub async fn recv(&mut self) {
        // An error means the trigger was dropped: treat it as shutdown.
        let _ = self.rx.wait_for(|v| *v).await;
    }
}

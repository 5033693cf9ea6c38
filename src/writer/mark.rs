//! Keeps the high-water mark durable off the writer thread: the writer
//! posts the latest mark and goes on; a small thread rewrites the file in
//! place (one data sync, see [`crate::slotfile`]) meanwhile. Stores are serialized and never go back, so a
//! late background store cannot overwrite a newer mark, and [`Marker::store_now`]
//! (clean stop) returns only once the mark is durable.

use std::sync::{Arc, Condvar, Mutex};

use tracing::warn;

use crate::fsutil::Dir;
use crate::seal::HighWaterMark;
use crate::slotfile::SlotFile;

#[derive(Default)]
struct Slot {
    /// The newest mark not stored yet.
    pending: Option<HighWaterMark>,
    /// The highest seq stored.
    stored: u64,
    /// The writer is gone: the thread ends.
    closed: bool,
}

struct Shared {
    state: Dir,
    slot: Mutex<Slot>,
    wake: Condvar,
    /// The mark's file, opened at the first store; held while it is
    /// written, so stores never interleave.
    io: Mutex<Option<SlotFile>>,
}

impl Shared {
    /// Stores `m` unless a mark at or above it is stored already.
    fn store(&self, m: &HighWaterMark) {
        let Ok(mut io) = self.io.lock() else { return };
        if self.slot.lock().map(|s| s.stored >= m.seq).unwrap_or(true) {
            return;
        }
        let file = match io.as_mut() {
            Some(f) => f,
            None => match HighWaterMark::open_file(&self.state) {
                Ok(f) => io.insert(f),
                Err(e) => {
                    warn!(error = %e, "cannot open the high-water mark");
                    return;
                }
            },
        };
        match m.store(file) {
            Ok(()) => {
                if let Ok(mut s) = self.slot.lock() {
                    s.stored = s.stored.max(m.seq);
                }
            }
            Err(e) => warn!(error = %e, "cannot store the high-water mark"),
        }
    }
}

/// The writer's handle on the high-water mark file.
pub(crate) struct Marker {
    shared: Arc<Shared>,
}

impl Marker {
    /// Starts the storing thread for the state directory `state`.
    pub(crate) fn start(state: Dir) -> Marker {
        let shared = Arc::new(Shared {
            state,
            slot: Mutex::new(Slot::default()),
            wake: Condvar::new(),
            io: Mutex::new(None),
        });
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("nxaudit-mark".into())
            .spawn(move || loop {
                let next = {
                    let Ok(mut slot) = s.slot.lock() else { return };
                    while slot.pending.is_none() && !slot.closed {
                        slot = match s.wake.wait(slot) {
                            Ok(g) => g,
                            Err(_) => return,
                        };
                    }
                    match slot.pending.take() {
                        Some(m) => m,
                        None => return,
                    }
                };
                s.store(&next);
            });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start the high-water mark thread; marks are stored inline");
            if let Ok(mut slot) = shared.slot.lock() {
                slot.closed = true;
            }
        }
        Marker { shared }
    }

    /// Posts a newer mark to be stored soon.
    pub(crate) fn post(&self, m: HighWaterMark) {
        let inline = match self.shared.slot.lock() {
            Ok(mut slot) if !slot.closed => {
                slot.pending = Some(m.clone());
                self.shared.wake.notify_one();
                false
            }
            _ => true,
        };
        if inline {
            self.shared.store(&m);
        }
    }

    /// Stores `m` now and returns once it is durable (or failed).
    pub(crate) fn store_now(&self, m: HighWaterMark) {
        if let Ok(mut slot) = self.shared.slot.lock() {
            // An older pending mark need not be written any more.
            if slot.pending.as_ref().is_some_and(|p| p.seq <= m.seq) {
                slot.pending = None;
            }
        }
        self.shared.store(&m);
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.shared.slot.lock() {
            slot.closed = true;
        }
        self.shared.wake.notify_one();
    }
}

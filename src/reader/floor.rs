//! The retention floor: the oldest seq some registered reader of the log
//! still needs.
//!
//! Readers that copy the log elsewhere (the syslog forwarder, the file
//! sink) register their checkpoint here when they are built, before the
//! writer starts; retention asks [`Readers::floor`] and never deletes a
//! rotated file holding a later seq. So the writer knows no reader by
//! name, and a new sink holds back retention by registering, nothing more.
//! The floor is read from the checkpoint files themselves (not from memory)
//! so it is right from the first retention pass after a restart, before
//! the readers have started.

use std::sync::{Arc, Mutex, MutexGuard};

use super::checkpoint::Checkpoint;

/// The readers whose positions hold back retention.
#[derive(Debug, Clone, Default)]
pub struct Readers {
    inner: Arc<Mutex<Vec<(String, Checkpoint)>>>,
}

impl Readers {
    fn list(&self) -> MutexGuard<'_, Vec<(String, Checkpoint)>> {
        // A panic elsewhere while holding the lock leaves valid data.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers reader `name`, whose last handled seq is saved in
    /// `checkpoint` (registering the same name again replaces it).
    pub fn register(&self, name: &str, checkpoint: Checkpoint) {
        let mut l = self.list();
        l.retain(|(n, _)| n != name);
        l.push((name.to_string(), checkpoint));
    }

    /// Names of the registered readers.
    pub fn names(&self) -> Vec<String> {
        self.list().iter().map(|(n, _)| n.clone()).collect()
    }

    /// The lowest position of the registered readers: every record after
    /// it is still needed by someone. `None` when no reader is registered.
    /// A reader that has saved nothing yet (or whose checkpoint cannot be
    /// read) holds everything back (0).
    pub fn floor(&self) -> Option<u64> {
        let list = self.list().clone();
        list.iter()
            .map(|(_, cp)| cp.load_seq().ok().flatten().unwrap_or(0))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_is_the_slowest_reader() {
        let d = tempfile::tempdir().unwrap();
        let r = Readers::default();
        assert_eq!(r.floor(), None);
        let a = Checkpoint::in_state_dir(d.path(), "a.pos");
        let b = Checkpoint::in_state_dir(d.path(), "b.pos");
        r.register("a", a.clone());
        assert_eq!(r.floor(), Some(0), "nothing saved yet: everything held");
        a.save_seq(50).unwrap();
        assert_eq!(r.floor(), Some(50));
        r.register("b", b.clone());
        b.save_seq(20).unwrap();
        assert_eq!(r.floor(), Some(20));
        b.save_seq(80).unwrap();
        assert_eq!(r.floor(), Some(50));
        assert_eq!(r.names(), vec!["a", "b"]);
    }
}

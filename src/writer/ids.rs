//! The idempotency table: which `id` was written at which seq, keyed by
//! (peer uid, component, id) so that one peer cannot suppress another's
//! event by guessing its id (docs/protocol.md "Idempotency").
//!
//! It covers the active file and the previous one, and is bounded in
//! bytes: keys are stored as salted 128-bit SHA-256 prefixes (a fixed size
//! whatever the id, and no peer can engineer a collision without the
//! per-process salt), in generations. When the table is full the oldest
//! generation is dropped and its ids counted as forgotten; an event whose
//! id was forgotten is written again (at-least-once, never lost).

use std::collections::{HashMap, VecDeque};

use sha2::{Digest, Sha256};

use crate::catalog::Component;

/// Estimated bytes one id costs in a generation map at its worst load
/// factor: a 32-byte bucket (u128 key, u64 seq, alignment) plus control
/// bytes, doubled for the half-empty table just after growth.
pub(crate) const BYTES_PER_ID: u64 = 72;
/// Generations the budget is split into; dropping one forgets a quarter.
const GENERATIONS: usize = 4;

/// One generation: ids of one file, up to a quarter of the budget.
struct Generation {
    file: u64,
    seqs: HashMap<u128, u64>,
}

/// Bounded map from (uid, component, id) to the seq it was written at.
pub(crate) struct IdTable {
    salt: [u8; 16],
    gens: VecDeque<Generation>,
    file: u64,
    per_gen: usize,
    len: usize,
    max: usize,
}

impl IdTable {
    /// An empty table holding about `budget_bytes` of ids.
    pub(crate) fn new(budget_bytes: u64) -> IdTable {
        let max = usize::try_from(budget_bytes / BYTES_PER_ID)
            .unwrap_or(usize::MAX)
            .max(GENERATIONS);
        let mut salt = [0u8; 16];
        fill_random(&mut salt);
        IdTable {
            salt,
            gens: VecDeque::new(),
            file: 0,
            per_gen: max / GENERATIONS,
            len: 0,
            max,
        }
    }

    /// The table key of an id; fixed-size whatever the id.
    pub(crate) fn key(&self, uid: u32, component: Component, id: &str) -> u128 {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(uid.to_le_bytes());
        h.update(component.as_str().as_bytes());
        h.update([0u8]);
        h.update(id.as_bytes());
        let d = h.finalize();
        let mut k = [0u8; 16];
        k.copy_from_slice(&d[..16]);
        u128::from_le_bytes(k)
    }

    /// The seq of an earlier record with this key, if still remembered.
    pub(crate) fn get(&self, key: u128) -> Option<u64> {
        self.gens
            .iter()
            .rev()
            .find_map(|g| g.seqs.get(&key).copied())
    }

    /// Remembers `key` at `seq`; returns how many ids were forgotten to
    /// make room (0 unless the table was full).
    pub(crate) fn insert(&mut self, key: u128, seq: u64) -> u64 {
        let need_gen = self.gens.back().map_or(true, |g| {
            g.file != self.file || g.seqs.len() >= self.per_gen.max(1)
        });
        if need_gen {
            self.gens.push_back(Generation {
                file: self.file,
                seqs: HashMap::new(),
            });
        }
        let mut forgotten = 0;
        if let Some(g) = self.gens.back_mut() {
            if g.seqs.insert(key, seq).is_none() {
                self.len += 1;
            }
        }
        while self.len > self.max && self.gens.len() > 1 {
            if let Some(old) = self.gens.pop_front() {
                self.len -= old.seqs.len();
                forgotten += old.seqs.len() as u64;
            }
        }
        forgotten
    }

    /// A new active file: ids of the file before the previous one are out
    /// of the window and dropped (not forgotten: they no longer count).
    pub(crate) fn rotated(&mut self) {
        self.file += 1;
        let keep_from = self.file.saturating_sub(1);
        while self.gens.front().is_some_and(|g| g.file < keep_from) {
            if let Some(old) = self.gens.pop_front() {
                self.len -= old.seqs.len();
            }
        }
    }

    /// Ids remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// Fills `buf` from the kernel's random source; a missing source leaves a
/// time- and pid-derived salt (the salt only keeps collisions from being
/// engineered, it is not a secret anyone else holds).
fn fill_random(buf: &mut [u8]) {
    use std::io::Read;
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .is_ok();
    if !ok {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let seed = Sha256::digest(format!("{t}-{}", std::process::id()));
        for (b, s) in buf.iter_mut().zip(seed.iter()) {
            *b = *s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_by_uid_and_component() {
        let t = IdTable::new(1 << 20);
        let a = t.key(1000, Component::Engine, "X");
        assert_ne!(a, t.key(1001, Component::Engine, "X"));
        assert_ne!(a, t.key(1000, Component::Portal, "X"));
        assert_eq!(a, t.key(1000, Component::Engine, "X"));
    }

    #[test]
    fn bounded_and_counts_what_it_forgets() {
        let mut t = IdTable::new(BYTES_PER_ID * 100);
        let mut forgotten = 0;
        for i in 0..1000u64 {
            let k = t.key(0, Component::Portal, &i.to_string());
            forgotten += t.insert(k, i);
        }
        assert!(t.len() <= 100, "{}", t.len());
        assert_eq!(forgotten as usize + t.len(), 1000);
        // The newest are remembered, the oldest forgotten.
        assert_eq!(t.get(t.key(0, Component::Portal, "999")), Some(999));
        assert_eq!(t.get(t.key(0, Component::Portal, "0")), None);
    }

    #[test]
    fn keeps_the_previous_file_only() {
        let mut t = IdTable::new(1 << 20);
        let k1 = t.key(0, Component::Portal, "a");
        t.insert(k1, 1);
        t.rotated();
        assert_eq!(t.get(k1), Some(1), "previous file still covered");
        let k2 = t.key(0, Component::Portal, "b");
        t.insert(k2, 2);
        t.rotated();
        assert_eq!(t.get(k1), None, "two files back: out of the window");
        assert_eq!(t.get(k2), Some(2));
    }
}

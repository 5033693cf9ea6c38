//! Per-uid lanes in front of the writer (docs/protocol.md "Limits": no one local
//! user can deny service to the others).
//!
//! Every record waits in its sender's lane, one lane per peer uid, and the
//! writer builds each group commit from the waiting lanes in turn, by
//! deficit round robin over escaped-size bytes ([`QUANTUM`] per lane per
//! turn). A uid that floods the writer with large records therefore only
//! lengthens its own lane: another uid's records go into the very next
//! batch instead of waiting behind megabytes, and one large record per turn
//! does not outweigh many small ones. Within a lane records keep their order, and a
//! connection's records all share its uid's lane, so nothing is reordered
//! within a connection.
//!
//! A group commit holds at most [`SOLO_BATCH_BYTES`] while one uid writes
//! alone, and [`SHARED_BATCH_BYTES`] once two uids have had records waiting
//! at the same time within [`SHARED_FOR`]: a record of another uid waits
//! for the batch being written and its own, so the batch size is what a
//! flood by one uid adds to everybody else's latency, while a lone writer
//! (the common case, one component at full speed) keeps the large batches
//! that give it its throughput.
//!
//! While two uids write, each is also paced: it may hand the writer at
//! most [`SHARED_UID_RATE`] escaped-size bytes per second (plus
//! [`RECORD_OVERHEAD`] per record, after a [`SHARED_BURST`]), its senders
//! waiting before admission. Without it a flood of large records keeps the
//! disk saturated (log writes, rotations, compression, retention), and
//! every other uid's sync waits behind that; deficit round robin shares
//! the writer's batches, not the disk. A uid writing alone is never paced.
//!
//! Admission is bounded in bytes (after escaping, [`super::escaped_bound`])
//! twice: a uid holds at most its share of `queue_bytes`
//! ([`UID_SHARE_DIVISOR`]), and all lanes plus the batch being written at
//! most `queue_bytes`. The share is taken first, so a uid waiting for room
//! waits behind its own records, never in front of another uid's.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Ack, AppendError, Reply};
use crate::record::Entry;

/// A uid may hold this fraction of `queue_bytes` (queued and being written).
pub(crate) const UID_SHARE_DIVISOR: u32 = 4;

/// A record's share of the byte budgets, released when the batch it is
/// written in is done.
pub(crate) struct QueuePermit {
    global: OwnedSemaphorePermit,
    _uid: OwnedSemaphorePermit,
    _slot: OwnedSemaphorePermit,
}

impl QueuePermit {
    /// The escaped-size bytes it holds.
    pub(crate) fn cost(&self) -> usize {
        self.global.num_permits()
    }
}

/// One record waiting for the writer.
pub(crate) struct Queued {
    pub(crate) entry: Box<Entry>,
    pub(crate) reply: Reply<Ack>,
    pub(crate) permit: QueuePermit,
}

/// Most escaped-size bytes taken into one group commit while one uid
/// writes alone: the rendered batch is held in memory until it is written,
/// so this bounds it whatever `queue_bytes` is.
pub(crate) const SOLO_BATCH_BYTES: usize = 1 << 20;

/// Most escaped-size bytes of one group commit while several uids write:
/// another uid's record waits for at most the batch being written and its
/// own, so this bounds what a flood costs the others (a single record
/// larger than this still goes whole, alone).
pub(crate) const SHARED_BATCH_BYTES: usize = 128 << 10;

/// How long the writer keeps batches small after two uids last had
/// records waiting at once: a client sending now and then has no record
/// waiting most of the time, and its next one must not find a large batch
/// in front of it.
pub(crate) const SHARED_FOR: Duration = Duration::from_secs(2);

/// Escaped-size bytes per second a uid may hand the writer while another
/// uid has written within [`SHARED_FOR`]: about 30,000 records of 300
/// bytes a second with [`RECORD_OVERHEAD`], far above what a component
/// writes (hundreds a second), far below what a disk can take without
/// making everybody's syncs wait.
pub(crate) const SHARED_UID_RATE: f64 = 16.0 * 1024.0 * 1024.0;

/// Bytes counted against [`SHARED_UID_RATE`] per record besides its own:
/// a record costs work whatever its size.
pub(crate) const RECORD_OVERHEAD: u64 = 256;

/// How far ahead of its paced rate a uid may send at once.
const SHARED_BURST: Duration = Duration::from_millis(100);

/// One uid's pacing state (a virtual clock: GCRA).
struct Pace {
    /// When it last asked for admission.
    last: Instant,
    /// When its admitted bytes would have been sent at the paced rate.
    free_at: Instant,
}

/// Escaped-size bytes a lane may send per round-robin turn.
const QUANTUM: usize = 64 << 10;

#[derive(Default)]
struct Lane {
    queue: VecDeque<Queued>,
    /// Bytes this lane may still take (deficit round robin).
    deficit: usize,
}

#[derive(Default)]
struct Inner {
    by_uid: HashMap<u32, Lane>,
    /// Uids whose lane is not empty, in round-robin order.
    ready: VecDeque<u32>,
    /// When two uids last had records waiting at the same time.
    shared_at: Option<Instant>,
    closed: bool,
}

impl Inner {
    /// The byte bound of the next group commit.
    fn batch_bytes(&mut self, now: Instant) -> usize {
        if self.ready.len() > 1 {
            self.shared_at = Some(now);
        }
        match self.shared_at {
            Some(t) if now.saturating_duration_since(t) < SHARED_FOR => SHARED_BATCH_BYTES,
            _ => SOLO_BATCH_BYTES,
        }
    }
}

/// The lanes and the byte budgets.
pub(crate) struct Lanes {
    inner: Mutex<Inner>,
    len: AtomicUsize,
    global: Arc<Semaphore>,
    /// Records queued or being written, at most `[log] queue`.
    slots: Arc<Semaphore>,
    cap: u32,
    share: u32,
    shares: Mutex<HashMap<u32, Arc<Semaphore>>>,
    pace: Mutex<HashMap<u32, Pace>>,
}

impl Lanes {
    pub(crate) fn new(queue_bytes: u64, queue: usize) -> Lanes {
        // Semaphore permits are counted in u32 (and tokio caps them lower still).
        let cap = queue_bytes.min(1 << 30) as u32;
        Lanes {
            inner: Mutex::default(),
            len: AtomicUsize::new(0),
            global: Arc::new(Semaphore::new(cap as usize)),
            slots: Arc::new(Semaphore::new(queue.clamp(1, Semaphore::MAX_PERMITS))),
            cap,
            share: (cap / UID_SHARE_DIVISOR).max(1),
            shares: Mutex::default(),
            pace: Mutex::default(),
        }
    }

    /// How long `uid` must wait before `cost` more bytes are admitted, as
    /// of `now`: `None` while it writes alone or stays within its paced
    /// rate. Counts the bytes as sent at the end of that wait.
    fn pace(&self, uid: u32, cost: u64, now: Instant) -> Option<Duration> {
        let mut m = self.pace.lock().unwrap_or_else(|p| p.into_inner());
        let recent = |p: &Pace| now.saturating_duration_since(p.last) < SHARED_FOR;
        if m.len() > 64 {
            m.retain(|_, p| recent(p));
        }
        let others = m.iter().any(|(u, p)| *u != uid && recent(p));
        // A full burst of credit: what was not sent recently.
        let floor = now.checked_sub(SHARED_BURST).unwrap_or(now);
        let p = m.entry(uid).or_insert(Pace {
            last: now,
            free_at: floor,
        });
        p.last = now;
        if !others {
            p.free_at = floor;
            return None;
        }
        let step = Duration::from_secs_f64((cost + RECORD_OVERHEAD) as f64 / SHARED_UID_RATE);
        p.free_at = p.free_at.max(floor) + step;
        (p.free_at > now).then(|| p.free_at - now)
    }

    fn share_of(&self, uid: u32) -> Arc<Semaphore> {
        let mut m = self.shares.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = m.get(&uid) {
            return s.clone();
        }
        // Forget idle uids so the map stays as small as the set of active ones.
        let share = self.share as usize;
        m.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < share);
        let s = Arc::new(Semaphore::new(share));
        m.insert(uid, s.clone());
        s
    }

    /// Takes `cost` bytes of `uid`'s share, then of the whole budget, then
    /// one of the `[log] queue` slots, waiting for room (back-pressure). A
    /// record larger than a share waits for all of it.
    pub(crate) async fn reserve(&self, uid: u32, cost: u64) -> Result<QueuePermit, AppendError> {
        if let Some(wait) = self.pace(uid, cost, Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let own = self.share_of(uid);
        let mine = cost.min(u64::from(self.share)).max(1) as u32;
        let uid_permit = own
            .acquire_many_owned(mine)
            .await
            .map_err(|_| AppendError::ShuttingDown)?;
        let all = cost.min(u64::from(self.cap)).max(1) as u32;
        let global = self
            .global
            .clone()
            .acquire_many_owned(all)
            .await
            .map_err(|_| AppendError::ShuttingDown)?;
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AppendError::ShuttingDown)?;
        Ok(QueuePermit {
            global,
            _uid: uid_permit,
            _slot: slot,
        })
    }

    /// Queues `q` in `uid`'s lane; gives it back when the writer has stopped.
    pub(crate) fn push(&self, uid: u32, q: Queued) -> Result<(), Queued> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.closed {
            return Err(q);
        }
        let lane = g.by_uid.entry(uid).or_default();
        lane.queue.push_back(q);
        if lane.queue.len() == 1 {
            if !g.ready.is_empty() {
                g.shared_at = Some(Instant::now());
            }
            g.ready.push_back(uid);
        }
        self.len.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Records waiting.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Fills `batch` from the waiting lanes by deficit round robin until it
    /// holds `max` records or the batch byte bound ([`SOLO_BATCH_BYTES`],
    /// or [`SHARED_BATCH_BYTES`] while uids share the writer) as of `now`.
    /// Returns whether it took any.
    pub(crate) fn take(&self, batch: &mut Vec<Queued>, max: usize, now: Instant) -> bool {
        let before = batch.len();
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut bytes: usize = batch.iter().map(|q| q.permit.cost()).sum();
        let g = &mut *g;
        let max_bytes = g.batch_bytes(now);
        while batch.len() < max && bytes < max_bytes {
            let Some(&uid) = g.ready.front() else { break };
            let Some(lane) = g.by_uid.get_mut(&uid) else {
                g.ready.pop_front();
                continue;
            };
            let Some(cost) = lane.queue.front().map(|q| q.permit.cost()) else {
                g.by_uid.remove(&uid);
                g.ready.pop_front();
                continue;
            };
            if lane.deficit < cost {
                // This lane's turn is over: the next one's.
                lane.deficit += QUANTUM;
                g.ready.rotate_left(1);
                continue;
            }
            if bytes > 0 && bytes + cost > max_bytes {
                // A record that does not fit waits for the next batch; one
                // larger than the bound goes alone.
                break;
            }
            lane.deficit -= cost;
            if let Some(q) = lane.queue.pop_front() {
                bytes += cost;
                batch.push(q);
                self.len.fetch_sub(1, Ordering::Relaxed);
            }
            if lane.queue.is_empty() {
                g.by_uid.remove(&uid);
                g.ready.pop_front();
            }
        }
        batch.len() > before
    }

    /// Stops taking records; returns those still waiting.
    pub(crate) fn close(&self) -> Vec<Queued> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.closed = true;
        g.ready.clear();
        self.global.close();
        self.slots.close();
        let left: Vec<Queued> = g.by_uid.drain().flat_map(|(_, l)| l.queue).collect();
        self.len.store(0, Ordering::Relaxed);
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Queues one record of `cost` escaped-size bytes in `uid`'s lane.
    async fn queue(lanes: &Lanes, uid: u32, cost: u64) {
        let permit = lanes.reserve(uid, cost).await.unwrap();
        let (reply, _) = tokio::sync::oneshot::channel();
        let q = Queued {
            entry: Box::new(Entry::appliance(60001)),
            reply,
            permit,
        };
        assert!(lanes.push(uid, q).is_ok());
    }

    fn batch_bytes(batch: &[Queued]) -> usize {
        batch.iter().map(|q| q.permit.cost()).sum()
    }

    #[tokio::test]
    async fn a_lone_uid_gets_large_batches_and_shared_ones_are_small() {
        let lanes = Lanes::new(64 << 20, 1 << 16);
        let now = Instant::now();
        for _ in 0..128 {
            queue(&lanes, 1000, 32 << 10).await;
        }
        let mut batch = Vec::new();
        assert!(lanes.take(&mut batch, 4096, now));
        assert_eq!(
            batch_bytes(&batch),
            SOLO_BATCH_BYTES,
            "one uid: the large bound"
        );
        batch.clear();
        // A second uid's record arrives while the first one's wait: from
        // now on batches are small, also once the second uid is served.
        queue(&lanes, 1001, 600).await;
        assert!(lanes.take(&mut batch, 4096, now));
        assert!(batch.iter().any(|q| q.permit.cost() == 600), "served next");
        assert!(batch_bytes(&batch) <= SHARED_BATCH_BYTES);
        batch.clear();
        assert!(lanes.take(&mut batch, 4096, now + SHARED_FOR / 2));
        assert_eq!(batch_bytes(&batch), SHARED_BATCH_BYTES);
        batch.clear();
        // Long after the other uid went quiet: large batches again.
        assert!(lanes.take(&mut batch, 4096, now + SHARED_FOR * 2));
        assert_eq!(batch_bytes(&batch), SOLO_BATCH_BYTES);
    }

    #[test]
    fn a_uid_is_paced_only_while_another_writes() {
        let lanes = Lanes::new(64 << 20, 1 << 16);
        let t0 = Instant::now();
        let big = 1 << 20;
        // Alone: never paced, however much.
        for i in 0..100 {
            assert_eq!(lanes.pace(1000, big, t0 + Duration::from_millis(i)), None);
        }
        // Another uid writes: the first one gets its burst, then waits so
        // that it stays at the paced rate.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(lanes.pace(1001, 300, t1), None);
        let mut waited = Duration::ZERO;
        for _ in 0..32 {
            waited = lanes.pace(1000, big, t1).unwrap_or(Duration::ZERO);
        }
        let paced = 32.0 * (big + RECORD_OVERHEAD) as f64 / SHARED_UID_RATE;
        let expect = paced - SHARED_BURST.as_secs_f64();
        assert!(
            (waited.as_secs_f64() - expect).abs() < 0.01,
            "waited {waited:?}, expected {expect}"
        );
        // The small writer is not held back by the flood.
        assert_eq!(lanes.pace(1001, 300, t1), None);
        // Once the other uid is quiet for SHARED_FOR, no pacing again.
        let later = t1 + SHARED_FOR + Duration::from_millis(1);
        assert_eq!(lanes.pace(1000, big, later), None);
    }

    #[tokio::test]
    async fn a_record_larger_than_the_bound_goes_alone() {
        let lanes = Lanes::new(64 << 20, 1 << 16);
        let now = Instant::now();
        queue(&lanes, 1001, 100).await;
        queue(&lanes, 1000, 3 << 20).await;
        queue(&lanes, 1000, 3 << 20).await;
        let mut batch = Vec::new();
        assert!(lanes.take(&mut batch, 4096, now));
        assert_eq!(batch.len(), 1);
        batch.clear();
        assert!(lanes.take(&mut batch, 4096, now));
        assert_eq!(batch.len(), 1, "{}", batch_bytes(&batch));
        batch.clear();
        assert!(lanes.take(&mut batch, 4096, now));
        assert_eq!(batch.len(), 1);
        assert_eq!(lanes.len(), 0);
    }
}

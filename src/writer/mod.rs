//! The single writer that owns the audit log.
//!
//! Every record, from the socket or a source, waits in its sender uid's
//! lane ([`lanes`]) for one dedicated OS thread (`nxaudit-writer`); other
//! requests come through one bounded channel. The thread takes what is
//! queued, one record per uid in turn (up to `max_batch`), renders and chains the records,
//! writes them with one `write`, makes them durable with one `fdatasync`
//! (group commit), and only then answers each sender. Because one thread
//! owns the file, records are never interleaved, `seq` is gap-free and the
//! chain is linear; because syncing happens on that thread, the async
//! reactor is never blocked.
//!
//! Failure rules (docs/record-format.md): a failed write or sync is truncated back to the
//! last durable length, the seq and chain are rolled back, and every event
//! of the batch gets `disk_full` or `write_failed`. The count of refused
//! events is written as 60905 as soon as a write succeeds again.

mod ids;
mod lanes;
mod logfile;
mod mark;
mod rotate;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::catalog::appliance;
use crate::config::{Config, LogConfig};
use crate::reader::Readers;
use crate::record::Entry;
use lanes::{Lanes, Queued};

pub use logfile::{OpenError, Recovery};
pub use rotate::{Compressor, Retention};

/// A durable append: the record's seq, or the earlier seq of the same `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Sequence number of the record.
    pub seq: u64,
    /// True when an earlier record with the same `id` was acknowledged instead.
    pub duplicate: bool,
}

/// Why an append was not made durable.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AppendError {
    /// ENOSPC / EDQUOT.
    #[error("disk full: {0}")]
    DiskFull(String),
    /// Any other I/O error.
    #[error("write failed: {0}")]
    WriteFailed(String),
    /// The writer is stopping.
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

type Reply<T> = oneshot::Sender<Result<T, AppendError>>;

/// What the writer thread is asked to do, in order.
pub(crate) enum Command {
    /// Records are waiting in the lanes.
    Ready,
    /// Rotate now (SIGUSR1, `nxaudit rotate`).
    Rotate(Reply<PathBuf>),
    /// Apply a reloaded config (retention, limits) and write 60904.
    Reload(Box<LogConfig>, Reply<Ack>),
    /// Periodic wake-up: interval sync, age rotation, watchdog.
    Tick,
    /// Write 60902, sync, and stop.
    Shutdown(Reply<Ack>),
}

/// Counters the writer publishes; read by status and sd-notify.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Last durable seq.
    pub last_seq: AtomicU64,
    /// Records written since start.
    pub written: AtomicU64,
    /// Group commits (syncs) since start.
    pub syncs: AtomicU64,
    /// Events refused with `disk_full` since start.
    pub refused_disk_full: AtomicU64,
    /// Events refused with `write_failed` since start.
    pub refused_write_failed: AtomicU64,
    /// Duplicate `id`s answered with the earlier seq.
    pub duplicates: AtomicU64,
    /// Ids dropped from the bounded id table while still inside the
    /// deduplication window: a repeat of one is written again.
    pub ids_forgotten: AtomicU64,
    /// Rotations since start.
    pub rotations: AtomicU64,
    /// Seals (60907) written since start.
    pub seals: AtomicU64,
    /// Microseconds the writer spent sealing (key evolution, key file
    /// replacement, the seal record, the high-water mark) since start.
    pub seal_us: AtomicU64,
    /// Whether the last write failed for lack of space.
    pub disk_full: AtomicBool,
    /// Size of the active file.
    pub active_size: AtomicU64,
    /// Milliseconds since the Unix epoch of the writer loop's last turn,
    /// for the watchdog: a hung writer stops moving it.
    pub heartbeat_ms: AtomicU64,
}

impl WriterStats {
    /// Current values as JSON, for the status file.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "last_seq": self.last_seq.load(Ordering::Relaxed),
            "written": self.written.load(Ordering::Relaxed),
            "syncs": self.syncs.load(Ordering::Relaxed),
            "refused_disk_full": self.refused_disk_full.load(Ordering::Relaxed),
            "refused_write_failed": self.refused_write_failed.load(Ordering::Relaxed),
            "duplicates": self.duplicates.load(Ordering::Relaxed),
            "ids_forgotten": self.ids_forgotten.load(Ordering::Relaxed),
            "rotations": self.rotations.load(Ordering::Relaxed),
            "seals": self.seals.load(Ordering::Relaxed),
            "seal_us": self.seal_us.load(Ordering::Relaxed),
            "disk_full": self.disk_full.load(Ordering::Relaxed),
            "active_size": self.active_size.load(Ordering::Relaxed),
            "heartbeat_ms": self.heartbeat_ms.load(Ordering::Relaxed),
        })
    }
}

/// An upper bound of the bytes `e` occupies once rendered: every input byte
/// escapes to at most 4 (`\xNN`, `\u{…}`), a `details` value may appear
/// both in the text and as `details.KEY`, and the fixed parts of a line fit
/// in 512 bytes. Queues are bounded by this, so a flood of characters that
/// escape badly costs what it will cost in the writer, not what it cost on
/// the wire.
pub fn escaped_bound(e: &Entry) -> u64 {
    let opt = |s: &Option<String>| s.as_ref().map_or(0, |s| s.len());
    let text = opt(&e.user)
        + opt(&e.client)
        + opt(&e.engine)
        + opt(&e.description)
        + opt(&e.time)
        + opt(&e.message)
        + opt(&e.id);
    let details: usize = e
        .details
        .0
        .iter()
        .map(|(k, v)| k.len() + 2 * v.to_string().len() + 16)
        .sum();
    let fields: usize = e.fields.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
    4 * (text + details + fields) as u64 + 512
}

/// Cheap, cloneable handle to the writer.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Command>,
    stats: Arc<WriterStats>,
    lanes: Arc<Lanes>,
    /// Whether a [`Command::Ready`] is on its way to the writer.
    woken: Arc<AtomicBool>,
}

impl WriterHandle {
    /// Sends one command and waits for its answer; a gone writer means the
    /// daemon is stopping.
    async fn request<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, AppendError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| AppendError::ShuttingDown)?;
        rx.await.map_err(|_| AppendError::ShuttingDown)?
    }

    /// Appends one entry and waits until it is durable under the flush policy.
    /// Waits for room in the queue (back-pressure) rather than failing.
    pub async fn append(&self, entry: Entry) -> Result<Ack, AppendError> {
        let rx = self.enqueue(entry).await?;
        rx.await.map_err(|_| AppendError::ShuttingDown)?
    }

    /// Queues one entry and returns the receiver of its outcome without
    /// waiting for durability, so a connection can pipeline many lines while
    /// keeping their order into the writer.
    pub async fn enqueue(
        &self,
        entry: Entry,
    ) -> Result<oneshot::Receiver<Result<Ack, AppendError>>, AppendError> {
        let uid = entry.origin.uid;
        let permit = self.lanes.reserve(uid, escaped_bound(&entry)).await?;
        let (tx, rx) = oneshot::channel();
        let q = Queued {
            entry: Box::new(entry),
            reply: tx,
            permit,
        };
        if self.lanes.push(uid, q).is_err() {
            return Err(AppendError::ShuttingDown);
        }
        // One wake-up at a time: the writer clears `woken` before it looks
        // at the lanes, so a record pushed after that look sends another.
        if !self.woken.swap(true, Ordering::SeqCst) {
            self.tx
                .send(Command::Ready)
                .await
                .map_err(|_| AppendError::ShuttingDown)?;
        }
        Ok(rx)
    }

    /// Records waiting for the writer (for status and metrics).
    pub fn queue_depth(&self) -> usize {
        self.lanes.len()
    }

    /// Rotates the active file; returns the rotated file's path.
    pub async fn rotate(&self) -> Result<PathBuf, AppendError> {
        self.request(Command::Rotate).await
    }

    /// Applies a reloaded `[log]` section and writes 60904.
    pub async fn reload(&self, log: LogConfig) -> Result<Ack, AppendError> {
        self.request(|r| Command::Reload(Box::new(log), r)).await
    }

    /// Writes 60902, syncs and stops the writer thread.
    pub async fn shutdown(&self) -> Result<Ack, AppendError> {
        self.request(Command::Shutdown).await
    }

    /// Wakes the writer for periodic work; never waits (a full queue means
    /// the writer is busy and will get to its periodic work anyway).
    pub fn tick(&self) {
        let _ = self.tx.try_send(Command::Tick);
    }

    /// The writer's counters.
    pub fn stats(&self) -> &Arc<WriterStats> {
        &self.stats
    }
}

/// The writer's handle, what recovery found, and the thread's join handle.
pub type Started = (WriterHandle, Recovery, std::thread::JoinHandle<()>);

/// Opens (and recovers) the log and starts the writer thread, with no
/// reader holding back retention (tools and tests).
pub fn start(cfg: &Config) -> Result<Started, OpenError> {
    start_with(cfg, Readers::default())
}

/// Opens (and recovers) the log and starts the writer thread; retention
/// keeps every file that one of `readers` has not read yet.
pub fn start_with(cfg: &Config, readers: Readers) -> Result<Started, OpenError> {
    let stats = Arc::new(WriterStats::default());
    let (mut log, recovery) = logfile::LogWriter::open(cfg, stats.clone(), readers)?;
    let (tx, rx) = mpsc::channel(cfg.log.queue);
    let lanes = Arc::new(Lanes::new(cfg.log.queue_bytes, cfg.log.queue));
    let woken = Arc::new(AtomicBool::new(false));
    let (l, w) = (lanes.clone(), woken.clone());
    let join = std::thread::Builder::new()
        .name("nxaudit-writer".into())
        .spawn(move || {
            writer_loop(&mut log, rx, &l, &w);
        })
        .map_err(|e| OpenError::Io {
            what: "spawn writer thread".into(),
            source: e,
        })?;
    Ok((
        WriterHandle {
            tx,
            stats,
            lanes,
            woken,
        },
        recovery,
        join,
    ))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Takes one group commit's worth of records from the lanes and writes it.
fn write_from_lanes(
    log: &mut logfile::LogWriter,
    lanes: &Lanes,
    queued: &mut Vec<Queued>,
    batch: &mut Vec<(Box<Entry>, Reply<Ack>)>,
) -> bool {
    if !lanes.take(queued, log.max_batch(), Instant::now()) {
        return false;
    }
    // Held until the batch is written, so lanes and batch together stay
    // within `queue_bytes`.
    let mut permits = Vec::with_capacity(queued.len());
    for q in queued.drain(..) {
        batch.push((q.entry, q.reply));
        permits.push(q.permit);
    }
    log.write_batch(batch);
    drop(permits);
    log.after_batch();
    true
}

fn writer_loop(
    log: &mut logfile::LogWriter,
    mut rx: mpsc::Receiver<Command>,
    lanes: &Lanes,
    woken: &AtomicBool,
) {
    let max_batch = log.max_batch();
    let mut queued: Vec<Queued> = Vec::with_capacity(max_batch);
    let mut batch: Vec<(Box<Entry>, Reply<Ack>)> = Vec::with_capacity(max_batch);
    // Records were left in the lanes by the last batch: keep writing, but
    // let other requests (ticks, rotation) in between batches.
    let mut more = false;
    loop {
        log.stats().heartbeat_ms.store(now_ms(), Ordering::Relaxed);
        let next = if more {
            rx.try_recv().unwrap_or(Command::Ready)
        } else {
            match rx.blocking_recv() {
                Some(c) => c,
                None => {
                    // Every handle is gone without a Shutdown: still sync.
                    log.sync_now();
                    return;
                }
            }
        };
        match next {
            Command::Ready => {
                woken.store(false, Ordering::SeqCst);
                more = write_from_lanes(log, lanes, &mut queued, &mut batch) && lanes.len() > 0;
            }
            Command::Rotate(r) => {
                let res = log.rotate("requested");
                let _ = r.send(res);
            }
            Command::Reload(cfg, r) => {
                let _ = r.send(log.reload(*cfg));
            }
            Command::Tick => log.tick(Instant::now()),
            Command::Shutdown(r) => {
                // What was queued before the request is written; what
                // races in after it is refused.
                while write_from_lanes(log, lanes, &mut queued, &mut batch) {}
                for q in lanes.close() {
                    let _ = q.reply.send(Err(AppendError::ShuttingDown));
                }
                let res = log.append_own(
                    Entry::appliance(appliance::DAEMON_STOPPED)
                        .with_message("Audit daemon stopped"),
                );
                log.close();
                let _ = r.send(res);
                rx.close();
                while let Ok(c) = rx.try_recv() {
                    refuse(c);
                }
                return;
            }
        }
    }
}

fn refuse(c: Command) {
    match c {
        Command::Rotate(r) => {
            let _ = r.send(Err(AppendError::ShuttingDown));
        }
        Command::Reload(_, r) | Command::Shutdown(r) => {
            let _ = r.send(Err(AppendError::ShuttingDown));
        }
        Command::Tick | Command::Ready => {}
    }
}

/// How often the daemon should call [`WriterHandle::tick`].
pub fn tick_period(cfg: &LogConfig) -> Duration {
    let base = Duration::from_millis(500);
    match cfg.flush {
        crate::config::FlushPolicy::Interval => {
            base.min(Duration::from_millis(cfg.flush_interval_ms.max(10)))
        }
        _ => base,
    }
}

//! The active log file and the state the writer keeps about it: next seq,
//! last chain value, last timestamp, ids seen in this file. Opening it
//! recovers that state from disk (cutting a torn tail); writing a batch is
//! all-or-nothing.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::{Ack, AppendError, Reply, WriterStats};
use crate::catalog::appliance;
use crate::config::{Config, FlushPolicy, LogConfig};
use crate::fsutil::{self, Access, Dir, FsError};
use crate::logset;
use crate::record::{self, Chain, Entry, Format, Stamp, GENESIS};
use crate::seal::{self, HighWaterMark, KeyFile, SealKey, SealRequest};

use super::ids::IdTable;

/// Errors opening the log at start-up (fatal: the daemon cannot run).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// An I/O step failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// The log directory or active file is unsafe (a link, a non-regular
    /// file, a directory other users can write).
    #[error(transparent)]
    Files(#[from] FsError),
    /// The seal key file is unusable (sealing is configured: the daemon
    /// does not run unsealed).
    #[error("{0}")]
    Seal(#[from] seal::SealError),
    /// The chain key file is unusable.
    #[error("chain key file {path}: {why}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> OpenError {
    let what = what.into();
    move |source| OpenError::Io { what, source }
}

/// What start-up recovery found.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Last seq found on disk (0 for a fresh log).
    pub last_seq: u64,
    /// Bytes cut off a torn last line.
    pub torn_bytes: u64,
    /// Records read back from the active file.
    pub records_in_active: u64,
    /// Seqs found missing against the high-water mark (first, last).
    pub missing: Option<(u64, u64)>,
}

/// The writer's sealing state: the evolving key and its file.
struct Sealer {
    key: SealKey,
    file: KeyFile,
    /// Seals whose key was retired but whose record was not written.
    lost: u64,
}

/// The writer's view of the active file.
pub(crate) struct LogWriter {
    dir: PathBuf,
    /// The log directory, opened once; every file in it is reached
    /// through this handle, never by following a path.
    dir_fd: Dir,
    active: PathBuf,
    file: File,
    size: u64,
    next_seq: u64,
    last_h: String,
    last_ts: DateTime<Utc>,
    file_start: DateTime<Utc>,
    file_first_seq: u64,
    records_in_file: u64,
    chain: Chain,
    format: Format,
    host: String,
    cfg: LogConfig,
    file_mode: u32,
    ids: IdTable,
    /// The id table while its loader still reads the log (see [`Self::ids`]).
    ids_loading: Option<std::sync::mpsc::Receiver<IdTable>>,
    refused_pending: u64,
    dirty: bool,
    last_sync: Instant,
    stats: Arc<WriterStats>,
    compressor: super::Compressor,
    sealer: Option<Sealer>,
    /// Stores the high-water mark in the state directory.
    marker: super::mark::Marker,
    /// Timestamp the next rendered record must carry (a seal's, fixed
    /// before its MAC is made).
    pin_ts: Option<DateTime<Utc>>,
    /// Scratch buffers kept across batches (record body, rendered batch):
    /// a fresh allocation per batch costs page faults for every large
    /// record, on the one thread every sender waits for.
    scratch: Scratch,
}

/// The writer's reusable buffers, dropped when they grew past
/// [`SCRATCH_KEEP`] so one huge batch does not pin its memory.
#[derive(Default)]
struct Scratch {
    body: String,
    batch: Vec<u8>,
}

/// Largest capacity a scratch buffer keeps between batches.
const SCRATCH_KEEP: usize = 2 << 20;

/// Length of `f` up to and including its last newline (0 if none), read
/// backwards in chunks so only the tail is touched.
fn complete_len(f: &mut File, len: u64) -> io::Result<u64> {
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(chunk)?;
        if let Some(p) = chunk.iter().rposition(|b| *b == b'\n') {
            return Ok(start + p as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

struct Last {
    seq: u64,
    h: String,
    ts: DateTime<Utc>,
}

/// Remembers the id of a record read back from disk, under the same key
/// the writer uses (the record carries the sender's uid; the component
/// follows from the code).
fn remember_id(ids: &mut IdTable, rec: &record::ParsedRecord, stats: &WriterStats) {
    if let (Some(id), Some(component)) = (rec.field("id"), rec.component()) {
        let key = ids.key(rec.uid, component, id);
        let forgotten = ids.insert(key, rec.seq);
        stats.ids_forgotten.fetch_add(forgotten, Ordering::Relaxed);
    }
}

/// Opens the newest rotated file (the previous one), compressed or not, so
/// a restart keeps deduplicating across the last rotation. Opened now, read
/// later by the id loader: the compressor may replace the file meanwhile,
/// and an open descriptor still reads it. A file that cannot be read only
/// weakens deduplication to at-least-once: logged, not fatal.
fn open_previous(dir: &Path) -> Option<(PathBuf, Box<dyn std::io::BufRead + Send>)> {
    let files = logset::list(dir).ok()?;
    let prev = files.iter().rev().find(|f| !f.active)?;
    match logset::open(prev) {
        Ok(r) => Some((prev.path.clone(), r)),
        Err(e) => {
            warn!(file = %prev.path.display(), error = %e, "cannot read the previous file's ids");
            None
        }
    }
}

/// Remembers every id of one file's records.
fn load_ids(ids: &mut IdTable, path: &Path, reader: impl std::io::BufRead, stats: &WriterStats) {
    for text in logset::Lines::new(reader) {
        let Ok(text) = text else {
            warn!(file = %path.display(), "reading ids stopped early");
            return;
        };
        if let Ok(rec) = record::parse_line(&text) {
            remember_id(ids, &rec, stats);
        }
    }
}

/// Builds the id table of the previous and the active file on its own
/// thread, so that start-up does not read the log: only an event that
/// carries an `id` (or a rotation) waits for it ([`LogWriter::ids`]).
fn spawn_id_loader(
    budget: u64,
    previous: Option<(PathBuf, Box<dyn std::io::BufRead + Send>)>,
    active: Option<(PathBuf, File, u64)>,
    stats: Arc<WriterStats>,
) -> std::sync::mpsc::Receiver<IdTable> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("nxaudit-ids".into())
        .spawn(move || {
            let mut ids = IdTable::new(budget);
            if let Some((path, r)) = previous {
                load_ids(&mut ids, &path, r, &stats);
            }
            ids.rotated();
            if let Some((path, mut f, len)) = active {
                // Only what was on disk at start-up, from its first byte
                // (recovery moved the offset): the writer remembers what it
                // writes itself once it holds the table.
                match f.seek(SeekFrom::Start(0)) {
                    Ok(_) => {
                        let r = BufReader::with_capacity(1 << 16, f.take(len));
                        load_ids(&mut ids, &path, r, &stats);
                    }
                    Err(e) => warn!(file = %path.display(), error = %e, "cannot read the active file's ids"),
                }
            }
            let _ = tx.send(ids);
        });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the id loader; deduplication starts empty");
    }
    rx
}

/// The last record of the first `len` bytes of `f` that parses, read
/// backwards in growing chunks: only the tail is touched unless the tail
/// holds no record at all.
fn last_record(f: &mut File, len: u64) -> io::Result<Option<record::ParsedRecord>> {
    let mut chunk = 64 * 1024u64;
    loop {
        let start = len.saturating_sub(chunk);
        let mut buf = vec![0u8; (len - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf)?;
        // The first piece may be a partial line unless we began at 0.
        let mut lines: Vec<&[u8]> = buf.split(|b| *b == b'\n').collect();
        if start > 0 {
            lines.remove(0);
        }
        for l in lines.iter().rev() {
            if let Ok(rec) = record::parse_line(&String::from_utf8_lossy(l)) {
                return Ok(Some(rec));
            }
        }
        if start == 0 {
            return Ok(None);
        }
        chunk *= 4;
    }
}

/// The first record of `f` that parses, read forwards.
fn first_record(f: &mut File, len: u64) -> io::Result<Option<record::ParsedRecord>> {
    f.seek(SeekFrom::Start(0))?;
    let lines = logset::Lines::new(BufReader::with_capacity(1 << 16, f.take(len)));
    for text in lines {
        if let Ok(rec) = record::parse_line(&text?) {
            return Ok(Some(rec));
        }
    }
    Ok(None)
}

impl LogWriter {
    /// Opens the log directory, recovers state, and writes 60906 (if a torn
    /// tail was cut) and 60901.
    pub(crate) fn open(
        cfg: &Config,
        stats: Arc<WriterStats>,
        readers: crate::reader::Readers,
    ) -> Result<(LogWriter, Recovery), OpenError> {
        let dir = cfg.log_dir.clone();
        let dir_fd = Dir::create(&dir, &cfg.log.group)?;
        dir_fd.check_private()?;
        let chain = Chain::from_key_file(&cfg.log.chain_key_file).map_err(|e| OpenError::Key {
            path: cfg.log.chain_key_file.clone(),
            why: e.to_string(),
        })?;
        let file_mode = cfg.log.mode.bits();
        let state = Dir::create(&cfg.state_dir, "")?;
        let sealer = if cfg.log.seal_key_file.as_os_str().is_empty() {
            None
        } else {
            let (file, key) = KeyFile::open(&cfg.log.seal_key_file)?;
            if key.interval() != cfg.log.seal_interval.as_secs() {
                warn!(
                    key = key.interval(),
                    config = cfg.log.seal_interval.as_secs(),
                    "seal_interval differs from the interval of the seal key; the key's is used"
                );
            }
            Some(Sealer { key, file, lost: 0 })
        };
        // Read before the log: a mark that cannot be read is reported, and
        // start-up goes on without it.
        let mark = match HighWaterMark::load(&cfg.state_dir) {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "cannot read the high-water mark");
                None
            }
        };
        let active = dir.join(logset::ACTIVE);
        let mut recovery = Recovery::default();
        let previous = open_previous(&dir);
        let mut active_for_ids = None;
        let mut first: Option<(DateTime<Utc>, u64)> = None;
        let mut last: Option<Last> = None;

        // A link or anything but a regular file at audit.log is refused
        // (the daemon does not start): nothing is written through it and
        // the operator sees what was planted.
        let existing = match dir_fd.open_file(logset::ACTIVE, Access::ReadWrite) {
            Ok(f) => Some(f),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        let existed = existing.is_some();
        if let Some(mut f) = existing {
            // Stream the file: it can be as large as rotate_size, and
            // start-up memory must stay bounded too.
            let len = f
                .metadata()
                .map_err(io_err(format!("stat {}", active.display())))?
                .len();
            let good =
                complete_len(&mut f, len).map_err(io_err(format!("read {}", active.display())))?;
            if good < len {
                recovery.torn_bytes = len - good;
                f.set_len(good).map_err(io_err(format!(
                    "truncate torn tail of {}",
                    active.display()
                )))?;
                f.sync_all()
                    .map_err(io_err(format!("sync {}", active.display())))?;
                warn!(
                    bytes = recovery.torn_bytes,
                    file = %active.display(),
                    "cut a torn last line at start-up"
                );
            }
            // Start-up does not re-read the file: its first and last
            // records give where it starts, how many it holds (seq is
            // gap-free) and where seq and chain resume; ids load meanwhile.
            let read_err = io_err(format!("read {}", active.display()));
            if let Some(rec) = last_record(&mut f, good).map_err(read_err)? {
                let read_err = io_err(format!("read {}", active.display()));
                if let Some(head) = first_record(&mut f, good).map_err(read_err)? {
                    first = Some((head.ts, head.seq));
                    recovery.records_in_active = rec.seq.saturating_sub(head.seq) + 1;
                }
                last = Some(Last {
                    seq: rec.seq,
                    h: rec.h,
                    ts: rec.ts,
                });
            }
            active_for_ids = Some((active.clone(), f, good));
        }
        if last.is_none() {
            // Fresh or empty active file: continue from the newest rotated one.
            let files = logset::list(&dir).map_err(io_err(format!("list {}", dir.display())))?;
            for f in files.iter().rev().filter(|f| !f.active) {
                match logset::last_line(f) {
                    Ok(Some(l)) => {
                        if let Ok(rec) = record::parse_line(&l) {
                            last = Some(Last {
                                seq: rec.seq,
                                h: rec.h,
                                ts: rec.ts,
                            });
                            break;
                        }
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        return Err(OpenError::Io {
                            what: format!("read {}", f.path.display()),
                            source: e,
                        })
                    }
                }
            }
        }
        let file = dir_fd.open_file(logset::ACTIVE, Access::AppendCreate(file_mode))?;
        let size = file
            .metadata()
            .map_err(io_err(format!("stat {}", active.display())))?
            .len();
        if !existed {
            dir_fd.sync()?;
        }
        fsutil::set_group(&file, &cfg.log.group, &active);
        let (mut next_seq, last_h, last_ts) = match last {
            Some(l) => (l.seq + 1, l.h, l.ts),
            None => (1, GENESIS.to_string(), DateTime::<Utc>::MIN_UTC),
        };
        recovery.last_seq = next_seq - 1;
        let mut expected_h = None;
        if let Some(m) = mark.filter(|m| m.seq >= next_seq) {
            // The log ends before what was once durable: files deleted or
            // cut. Seq goes on after the mark, never reusing one.
            warn!(
                from = next_seq,
                to = m.seq,
                "the audit log ends before its high-water mark: records are missing"
            );
            recovery.missing = Some((next_seq, m.seq));
            next_seq = m.seq + 1;
            expected_h = Some(m.h);
        }
        let now = Utc::now().max(last_ts);
        let (file_start, file_first_seq) = first.unwrap_or((now, next_seq));
        stats.last_seq.store(next_seq - 1, Ordering::Relaxed);
        stats.active_size.store(size, Ordering::Relaxed);
        let compressor = super::Compressor::start(cfg, readers);
        let mut w = LogWriter {
            dir,
            dir_fd,
            active,
            file,
            size,
            next_seq,
            last_h,
            last_ts,
            file_start,
            file_first_seq,
            records_in_file: recovery.records_in_active,
            chain,
            format: cfg.log.format,
            host: cfg.effective_hostname(),
            cfg: cfg.log.clone(),
            file_mode,
            ids: IdTable::new(0),
            ids_loading: Some(spawn_id_loader(
                cfg.log.id_table_bytes,
                previous,
                active_for_ids,
                stats.clone(),
            )),
            refused_pending: 0,
            dirty: false,
            last_sync: Instant::now(),
            stats,
            compressor,
            sealer,
            marker: super::mark::Marker::start(state),
            pin_ts: None,
            scratch: Scratch::default(),
        };
        let io_fail = |e: AppendError| OpenError::Io {
            what: "write start-up record".into(),
            source: io::Error::other(e.to_string()),
        };
        if recovery.torn_bytes > 0 {
            let e = Entry::appliance(appliance::TORN_TAIL_REPAIRED)
                .field("bytes", recovery.torn_bytes.to_string());
            w.append_own(e).map_err(io_fail)?;
        }
        if let (Some((from, to)), Some(h)) = (recovery.missing, expected_h) {
            let e = Entry::appliance(seal::MISSING_CODE)
                .field("from", from.to_string())
                .field("to", to.to_string())
                .field("expected_h", h)
                .with_message(format!(
                    "Audit records missing at start-up: seq {from} to {to} (the log ends before its high-water mark)"
                ));
            w.append_own(e).map_err(io_fail)?;
        }
        let flush = match cfg.log.flush {
            FlushPolicy::Sync => "sync",
            FlushPolicy::Interval => "interval",
            FlushPolicy::None => "none",
        };
        let start = Entry::appliance(appliance::DAEMON_STARTED)
            .field("version", env!("CARGO_PKG_VERSION"))
            .field("flush", flush)
            .field(
                "format",
                match cfg.log.format {
                    Format::Text => "text",
                    Format::Json => "json",
                },
            )
            .field(
                "chain",
                if cfg.log.chain_key_file.as_os_str().is_empty() {
                    "sha256"
                } else {
                    "hmac-sha256"
                },
            );
        w.append_own(start).map_err(io_fail)?;
        w.sync_now();
        Ok((w, recovery))
    }

    pub(crate) fn stats(&self) -> &Arc<WriterStats> {
        &self.stats
    }

    pub(crate) fn max_batch(&self) -> usize {
        self.cfg.max_batch
    }

    /// Renders one record at `seq`, advancing the chain and clock in place.
    fn render(&mut self, e: &Entry, seq: u64, buf: &mut Vec<u8>) {
        // Only the seal's own record takes the pinned time: its MAC names
        // the epoch of that time.
        let pinned = if e.code == seal::SEAL_CODE {
            self.pin_ts.take()
        } else {
            None
        };
        let ts = pinned.unwrap_or_else(Utc::now).max(self.last_ts);
        let st = Stamp {
            ts,
            host: &self.host,
            seq,
        };
        let mut body = std::mem::take(&mut self.scratch.body);
        body.clear();
        match self.format {
            Format::Text => record::text_body(e, &st, &mut body),
            Format::Json => body.push_str(&record::json_body(e, &st)),
        }
        let h = self.chain.next(&self.last_h, &body);
        record::seal_into(self.format, &body, &h, buf);
        buf.push(b'\n');
        if body.capacity() <= SCRATCH_KEEP {
            self.scratch.body = body;
        }
        self.last_h = h;
        self.last_ts = ts;
    }

    /// Writes `buf` and, under `flush = "sync"`, makes it durable. On any
    /// failure the file is cut back to `self.size`.
    fn write_durable(&mut self, buf: &[u8]) -> Result<(), AppendError> {
        let res = self.file.write_all(buf).and_then(|_| {
            if self.cfg.flush == FlushPolicy::Sync {
                self.stats.syncs.fetch_add(1, Ordering::Relaxed);
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        match res {
            Ok(()) => {
                self.size += buf.len() as u64;
                if self.cfg.flush == FlushPolicy::Sync {
                    self.last_sync = Instant::now();
                } else {
                    self.dirty = true;
                }
                self.stats.disk_full.store(false, Ordering::Relaxed);
                self.stats.active_size.store(self.size, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                // Cut back the partial write so no torn record stays behind.
                if let Err(te) = self.file.set_len(self.size) {
                    warn!(error = %te, "cannot cut back a failed write");
                }
                let _ = self.file.sync_data();
                let full = matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT));
                if full {
                    self.stats.disk_full.store(true, Ordering::Relaxed);
                    Err(AppendError::DiskFull(e.to_string()))
                } else {
                    Err(AppendError::WriteFailed(e.to_string()))
                }
            }
        }
    }

    /// Appends one record of the daemon's own, durably.
    pub(crate) fn append_own(&mut self, e: Entry) -> Result<Ack, AppendError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut batch = vec![(Box::new(e), tx)];
        self.write_batch(&mut batch);
        // write_batch answers before returning, so the reply is already there.
        let mut rx = rx;
        match rx.try_recv() {
            Ok(r) => r,
            Err(_) => Err(AppendError::WriteFailed("no reply".into())),
        }
    }

    /// The id table, waiting for its loader if start-up's is still being
    /// read: only events that carry an `id` and rotations ever wait.
    fn ids(&mut self) -> &mut IdTable {
        if let Some(rx) = self.ids_loading.take() {
            match rx.recv() {
                Ok(t) => self.ids = t,
                Err(_) => {
                    warn!("the id loader failed; deduplication starts empty");
                    self.ids = IdTable::new(self.cfg.id_table_bytes);
                }
            }
        }
        &mut self.ids
    }

    /// Writes a batch all-or-nothing and answers each sender.
    pub(crate) fn write_batch(&mut self, batch: &mut Vec<(Box<Entry>, Reply<Ack>)>) {
        if batch.iter().any(|(e, _)| e.id.is_some()) {
            self.ids();
        }
        let saved = (self.next_seq, self.last_h.clone(), self.last_ts);
        let mut buf = std::mem::take(&mut self.scratch.batch);
        buf.clear();
        let mut results: Vec<Ack> = Vec::with_capacity(batch.len());
        let mut new_ids: HashMap<u128, u64> = HashMap::new();
        let mut written = 0u64;
        let refused_before = self.refused_pending;
        if refused_before > 0 {
            let e = Entry::appliance(appliance::DISK_FULL_REFUSED)
                .field("refused", refused_before.to_string())
                .with_message(format!(
                    "Audit events refused while the disk was full: {refused_before}"
                ));
            let seq = self.next_seq;
            self.next_seq += 1;
            self.render(&e, seq, &mut buf);
            written += 1;
        }
        for (e, _) in batch.iter() {
            let key =
                e.id.as_ref()
                    .map(|id| self.ids.key(e.origin.uid, e.component, id));
            if let Some(key) = key {
                if let Some(seq) = self.ids.get(key).or_else(|| new_ids.get(&key).copied()) {
                    results.push(Ack {
                        seq,
                        duplicate: true,
                    });
                    continue;
                }
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            self.render(e, seq, &mut buf);
            written += 1;
            if let Some(key) = key {
                new_ids.insert(key, seq);
            }
            results.push(Ack {
                seq,
                duplicate: false,
            });
        }
        let outcome = if written > 0 {
            self.write_durable(&buf)
        } else {
            Ok(())
        };
        if buf.capacity() <= SCRATCH_KEEP {
            buf.clear();
            self.scratch.batch = buf;
        }
        match outcome {
            Ok(()) => {
                self.records_in_file += written;
                self.refused_pending = 0;
                if refused_before > 0 {
                    info!(refused = refused_before, "writing again after disk full");
                }
                let mut forgotten = 0;
                for (key, seq) in new_ids {
                    forgotten += self.ids.insert(key, seq);
                }
                self.stats
                    .ids_forgotten
                    .fetch_add(forgotten, Ordering::Relaxed);
                self.stats
                    .last_seq
                    .store(self.next_seq - 1, Ordering::Relaxed);
                self.stats.written.fetch_add(written, Ordering::Relaxed);
                for ((_, reply), ack) in batch.drain(..).zip(results) {
                    if ack.duplicate {
                        self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = reply.send(Ok(ack));
                }
            }
            Err(err) => {
                let first_new_seq = saved.0;
                (self.next_seq, self.last_h, self.last_ts) = saved;
                // A duplicate of a record written before this batch is
                // durable; a duplicate of one in this failed batch is not.
                let durable = |a: &Ack| a.duplicate && a.seq < first_new_seq;
                let refused = results.iter().filter(|a| !durable(a)).count() as u64;
                self.refused_pending = refused_before + refused;
                let counter = match err {
                    AppendError::DiskFull(_) => &self.stats.refused_disk_full,
                    _ => &self.stats.refused_write_failed,
                };
                counter.fetch_add(refused, Ordering::Relaxed);
                warn!(error = %err, events = refused, "batch refused");
                for ((_, reply), ack) in batch.drain(..).zip(results) {
                    let r = if durable(&ack) {
                        Ok(ack)
                    } else {
                        Err(err.clone())
                    };
                    let _ = reply.send(r);
                }
            }
        }
    }

    /// Syncs pending writes (interval/none policies, shutdown).
    pub(crate) fn sync_now(&mut self) {
        if let Err(e) = self.file.sync_data() {
            warn!(error = %e, "fdatasync failed");
        } else {
            self.stats.syncs.fetch_add(1, Ordering::Relaxed);
        }
        self.dirty = false;
        self.last_sync = Instant::now();
    }

    /// Periodic work: interval sync, retrying 60905, sealing at the end
    /// of an interval, age rotation.
    pub(crate) fn tick(&mut self, now: Instant) {
        if let Some(s) = &self.sealer {
            if s.key.epoch_of(Utc::now()) > s.key.epoch() {
                self.seal_now("interval");
            }
        }
        if self.dirty
            && self.cfg.flush == FlushPolicy::Interval
            && now.duration_since(self.last_sync).as_millis() as u64 >= self.cfg.flush_interval_ms
        {
            self.sync_now();
        }
        if self.refused_pending > 0 {
            // Retry on our own so the count is recorded even if no client
            // writes again.
            let mut empty = Vec::new();
            self.write_batch(&mut empty);
        }
        if !self.cfg.rotate_age.is_zero() && self.records_in_file > 1 {
            let age = Utc::now().signed_duration_since(self.file_start);
            if age
                .to_std()
                .map(|a| a >= self.cfg.rotate_age)
                .unwrap_or(false)
            {
                if let Err(e) = self.rotate("age") {
                    warn!(error = %e, "rotation by age failed");
                }
            }
        }
    }

    /// Size-based rotation after a batch.
    pub(crate) fn after_batch(&mut self) {
        if self.cfg.rotate_size > 0 && self.size >= self.cfg.rotate_size {
            if let Err(e) = self.rotate("size") {
                warn!(error = %e, "rotation by size failed");
            }
        }
    }

    /// Applies a reloaded `[log]` section (what can change live) and writes 60904.
    pub(crate) fn reload(&mut self, new: LogConfig) -> Result<Ack, AppendError> {
        let mut changed = Vec::new();
        macro_rules! take {
            ($($f:ident),*) => {$(
                if self.cfg.$f != new.$f {
                    changed.push(stringify!($f));
                    self.cfg.$f = new.$f.clone();
                }
            )*};
        }
        take!(
            rotate_size,
            rotate_age,
            max_files,
            max_total_bytes,
            min_free_bytes,
            strict_codes,
            flush_interval_ms
        );
        self.compressor
            .set_retention(super::Retention::from_config(&self.cfg));
        let e = Entry::appliance(appliance::RELOADED).field("changed", changed.join(","));
        self.append_own(e)
    }

    /// Writes a seal (60907) over the chain head when sealing is on: the
    /// key file moves past the sub-key first (synced), then the record is
    /// written and made durable, then the high-water mark. A seal that
    /// cannot be written is counted in the next one (`lost`).
    pub(crate) fn seal_now(&mut self, reason: &str) {
        let Some(s) = self.sealer.as_mut() else {
            return;
        };
        let started = Instant::now();
        let ts = s.key.seal_time(Utc::now().max(self.last_ts));
        let seq = self.next_seq;
        let fields = s.key.seal(&SealRequest {
            ts,
            seq,
            head: &self.last_h,
            reason,
            lost: s.lost,
        });
        if let Err(e) = s.file.store(&s.key) {
            // The used sub-key would stay on disk: no seal is published
            // with it.
            warn!(error = %e, "cannot replace the seal key; seal skipped");
            s.lost += 1;
            return;
        }
        let mut e = Entry::appliance(seal::SEAL_CODE);
        for (k, v) in fields.to_fields() {
            e = e.field(k, v);
        }
        self.pin_ts = Some(ts);
        let res = self.append_own(e);
        self.pin_ts = None;
        match res {
            Ok(_) => {
                if let Some(s) = self.sealer.as_mut() {
                    s.lost = 0;
                }
                if self.dirty {
                    self.sync_now();
                }
                self.post_mark();
                self.stats.seals.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .seal_us
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            }
            Err(err) => {
                warn!(error = %err, "cannot write the seal record");
                if let Some(s) = self.sealer.as_mut() {
                    s.lost += 1;
                }
            }
        }
    }

    /// The last durable seq and `h`; the caller has synced the log.
    fn mark(&self) -> Option<HighWaterMark> {
        (self.next_seq > 1).then(|| HighWaterMark {
            seq: self.next_seq - 1,
            h: self.last_h.clone(),
        })
    }

    /// Records the high-water mark soon, off the writer thread.
    fn post_mark(&mut self) {
        if let Some(m) = self.mark() {
            self.marker.post(m);
        }
    }

    /// The last steps of a clean stop, after 60902: seal, sync, and the
    /// mark made durable before returning.
    pub(crate) fn close(&mut self) {
        self.seal_now("shutdown");
        self.sync_now();
        if let Some(m) = self.mark() {
            self.marker.store_now(m);
        }
    }

    /// Rotates: sync, rename the active file, create a new one starting with
    /// 60903, hand the old one to the compressor.
    pub(crate) fn rotate(&mut self, reason: &str) -> Result<PathBuf, AppendError> {
        // Every rotated file ends sealed.
        self.seal_now("rotation");
        // Under flush = "sync" every batch is already durable.
        if self.dirty {
            self.sync_now();
        }
        self.post_mark();
        let name = logset::rotated_name(self.file_start, self.file_first_seq);
        let target = self.dir.join(&name);
        let fail = |what: &str, e: io::Error| AppendError::WriteFailed(format!("{what}: {e}"));
        self.dir_fd
            .rename(logset::ACTIVE, &name)
            .map_err(|e| fail("rename active file", e.into()))?;
        // Exclusive: whatever appeared under the name meanwhile is not used.
        let new_file = match self
            .dir_fd
            .open_file(logset::ACTIVE, Access::AppendCreateNew(self.file_mode))
        {
            Ok(f) => f,
            Err(e) => {
                // Put the old file back so writing can go on.
                let _ = self.dir_fd.rename(&name, logset::ACTIVE);
                return Err(fail("create new active file", e.into()));
            }
        };
        if let Err(e) = self.dir_fd.sync() {
            warn!(error = %e, "directory fsync after rotation failed");
        }
        fsutil::set_group(&new_file, &self.cfg.group, &self.active);
        self.file = new_file;
        self.size = 0;
        self.ids().rotated();
        self.records_in_file = 0;
        self.file_first_seq = self.next_seq;
        self.file_start = Utc::now().max(self.last_ts);
        let prev_h = self.last_h.clone();
        let e = Entry::appliance(appliance::ROTATED)
            .field("previous", name.clone())
            .field("previous_h", prev_h)
            .field("reason", reason);
        if let Err(err) = self.append_own(e) {
            warn!(error = %err, "cannot write the rotation record yet");
        }
        self.stats.rotations.fetch_add(1, Ordering::Relaxed);
        info!(file = %target.display(), reason, "rotated");
        self.compressor.submit(target.clone());
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> Box<Entry> {
        let mut e = Entry::appliance(60001);
        e.id = Some(id.to_string());
        Box::new(e)
    }

    fn outcomes(w: &mut LogWriter, ids: &[&str]) -> Vec<Result<Ack, AppendError>> {
        let mut rxs = Vec::new();
        let mut batch = Vec::new();
        for id in ids {
            let (tx, rx) = tokio::sync::oneshot::channel();
            batch.push((entry(id), tx));
            rxs.push(rx);
        }
        w.write_batch(&mut batch);
        rxs.into_iter()
            .map(|mut rx| rx.try_recv().expect("answered"))
            .collect()
    }

    #[test]
    fn a_failed_batch_acknowledges_only_durable_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.apply_base_dir(dir.path());
        cfg.forward.enabled = false;
        let (mut w, _) =
            LogWriter::open(&cfg, Arc::new(WriterStats::default()), Default::default()).unwrap();
        let first = outcomes(&mut w, &["old"]);
        let old_seq = first[0].as_ref().unwrap().seq;
        // /dev/full answers every write with ENOSPC: a real full disk.
        w.file = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let r = outcomes(&mut w, &["new", "new", "old"]);
        assert!(matches!(r[0], Err(AppendError::DiskFull(_))), "{:?}", r[0]);
        assert!(
            matches!(r[1], Err(AppendError::DiskFull(_))),
            "a duplicate of a refused event is refused too: {:?}",
            r[1]
        );
        assert_eq!(
            r[2],
            Ok(Ack {
                seq: old_seq,
                duplicate: true
            })
        );
        assert_eq!(w.refused_pending, 2);
    }

    #[test]
    fn a_log_cut_below_the_high_water_mark_resumes_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.apply_base_dir(dir.path());
        let (mut w, _) =
            LogWriter::open(&cfg, Arc::new(WriterStats::default()), Default::default()).unwrap();
        outcomes(&mut w, &["a", "b"]);
        w.close();
        let mark = w.next_seq - 1;
        let active = w.active.clone();
        drop(w);
        std::fs::write(&active, "").unwrap();
        let (w, rec) =
            LogWriter::open(&cfg, Arc::new(WriterStats::default()), Default::default()).unwrap();
        assert_eq!(rec.missing, Some((1, mark)));
        // 60908, then 60901, both after the mark.
        assert_eq!(w.next_seq, mark + 3);
        let text = std::fs::read_to_string(&active).unwrap();
        let first = record::parse_line(text.lines().next().unwrap()).unwrap();
        assert_eq!(first.code, seal::MISSING_CODE);
        assert_eq!(first.seq, mark + 1);
        assert_eq!(first.field("to"), Some(mark.to_string().as_str()));
    }

    #[test]
    fn other_io_errors_are_write_failed_and_roll_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.apply_base_dir(dir.path());
        let (mut w, _) =
            LogWriter::open(&cfg, Arc::new(WriterStats::default()), Default::default()).unwrap();
        let before = (w.next_seq, w.last_h.clone());
        let good = std::mem::replace(&mut w.file, File::open(&w.active).unwrap());
        // A read-only descriptor: write(2) fails with EBADF, not ENOSPC.
        let r = outcomes(&mut w, &["a"]);
        assert!(
            matches!(r[0], Err(AppendError::WriteFailed(_))),
            "{:?}",
            r[0]
        );
        assert_eq!(
            (w.next_seq, w.last_h.clone()),
            before,
            "seq and chain rolled back"
        );
        w.file = good;
        let r = outcomes(&mut w, &["b"]);
        // The refused event is counted in a 60905 written first.
        assert_eq!(r[0].as_ref().unwrap().seq, before.0 + 1);
    }
}

//! Verification of the audit log set: seq continuity, non-decreasing time
//! and the `h=` hash chain over every file (compressed ones too), naming
//! the first bad line, and saying how far back the set is anchored.
//!
//! Built to run beside a live daemon, fast:
//!
//! - **One consistent view.** The set is listed, then every file is opened
//!   by fd before any is read. A file renamed afterwards (rotation,
//!   `audit.log` → `audit-…-N.log`) stays readable through its fd, and a
//!   rotated file never changes (the writer syncs before the rename, and
//!   compression writes a new file with the same records). What a live
//!   daemon can still do between listing and opening — rotate, compress,
//!   delete by retention — shows only as a file that vanished before it was
//!   opened, or as a seq/chain break *between* two files. Both are retried
//!   on a fresh listing; a break between files is reported only when the
//!   same break, between the same files, is seen in two listings in a row
//!   (a real one always is). A break inside a file is real at once: an fd
//!   sees a file's bytes in order.
//! - **Parallel, one pass per file.** Each file is checked on its own
//!   thread from its second record on; its first record is kept and linked
//!   to the previous file's last `h` and seq afterwards, so no file waits
//!   for another. Files verified in an earlier attempt of the same run are
//!   not read again (rotated files are immutable; keyed by device and inode).
//! - **Light scan.** A text line is not fully parsed: the checks rest on the
//!   timestamp, the trailer's `seq` and `h`, and the chain input (the line
//!   without ` h=…`). Only rotation records (60903) and JSON lines are
//!   parsed in full. SHA-256 comes from `sha2`, which uses the CPU's SHA
//!   extensions when present (detected at run time).
//!
//! A partial line (no trailing newline) fails verification inside a rotated
//! file. At the end of the active file it is not a failure: the daemon
//! writes whole lines, but a reader can catch a write half-copied, and a
//! crash can leave a torn tail that the daemon cuts off (60906) at its next
//! start. Those bytes are not verified, and the report says so.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::catalog::appliance;
use crate::logset::{self, LogFile};
use crate::record::{self, Chain, ParsedRecord, GENESIS};
use crate::seal::{self, SealChecker, SealError, SealReport, VerifyKey};

pub mod replica;
mod scan;

use scan::scan_file;

/// Listings tried before a set that keeps changing under us is given up.
const MAX_ATTEMPTS: u32 = 10;

/// How far back a verified set is anchored: what its first record's chain
/// rests on. Extensible: seals and replicas are anchors too.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Anchor {
    /// The set starts at seq 1, whose `h` chains from the genesis value.
    Genesis,
    /// Older files were removed (retention): the set starts at `seq`, and
    /// the `h` its first record chains from cannot be checked.
    OldestKept {
        /// First seq of the set.
        seq: u64,
    },
}

impl std::fmt::Display for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Anchor::Genesis => write!(f, "anchored at genesis (seq 1)"),
            Anchor::OldestKept { seq } => write!(
                f,
                "anchored at the oldest kept file (seq {seq}, chain continues from an unverifiable h)"
            ),
        }
    }
}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Defect {
    /// The line is not a record.
    #[error("malformed record: {0}")]
    Malformed(String),
    /// The file ends inside a line (no newline).
    #[error("partial line (the file ends without a newline)")]
    PartialLine,
    /// Seq does not follow the previous record's.
    #[error("seq {seq} follows {after} (gap or duplicate)")]
    SeqGap {
        /// This record's seq.
        seq: u64,
        /// The previous record's seq.
        after: u64,
    },
    /// The writer's time went backwards.
    #[error("time {ts} goes back before {prev}")]
    TimeBack {
        /// This record's time.
        ts: String,
        /// The previous record's time.
        prev: String,
    },
    /// `h` is not the hash of the previous `h` and this line.
    #[error("chain broken at seq {seq} (h={h} but expected {expected})")]
    ChainBroken {
        /// This record's seq.
        seq: u64,
        /// The `h` in the line.
        h: String,
        /// The `h` the chain gives.
        expected: String,
    },
    /// Records are missing before a 60908 record: the daemon found the log
    /// ending before its high-water mark at start-up (files deleted or cut).
    #[error("seq {from} to {to} are missing (the daemon found the log cut back at start-up and wrote 60908)")]
    RecordsMissing {
        /// First missing seq.
        from: u64,
        /// Last missing seq.
        to: u64,
    },
    /// A rotation record (60903) names another `h` than its predecessor's.
    #[error("rotation record names previous h {named}, the previous record has {actual}")]
    RotationMismatch {
        /// `previous_h=` of the 60903 record.
        named: String,
        /// `h` of the record before it.
        actual: String,
    },
}

/// Why a set does not verify, or could not be verified.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The log directory is missing.
    #[error("log directory {0} does not exist")]
    MissingDir(PathBuf),
    /// The log directory holds no log file.
    #[error("no audit log files in {0}")]
    EmptyDir(PathBuf),
    /// The log files hold no record.
    #[error("the audit log files in {0} hold no record")]
    NoRecords(PathBuf),
    /// The first bad line.
    #[error("{}:{line}: {defect}", file.display())]
    Broken {
        /// File holding the line.
        file: PathBuf,
        /// Line number in the (decompressed) file, from 1.
        line: u64,
        /// What is wrong.
        defect: Defect,
    },
    /// The seals do not check (see [`crate::seal`]).
    #[error("{}: {error}", file.display())]
    Seal {
        /// File holding the seal record.
        file: PathBuf,
        /// What is wrong.
        error: SealError,
    },
    /// The set changed under every listing tried (a daemon rotating faster
    /// than the set can be read); nothing is claimed either way.
    #[error("the log set changed during each of {attempts} attempts; last seen: {last}")]
    Unsettled {
        /// Listings tried.
        attempts: u32,
        /// The last transient problem.
        last: String,
    },
    /// A file or the directory could not be read.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl VerifyError {
    /// Whether the log itself fails verification (missing, empty, altered),
    /// as opposed to verification not being possible (I/O, unsettled).
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            VerifyError::MissingDir(_)
                | VerifyError::EmptyDir(_)
                | VerifyError::NoRecords(_)
                | VerifyError::Broken { .. }
                | VerifyError::Seal { .. }
        )
    }
}

/// Bytes at the end of the active file that were not verified because they
/// do not end with a newline yet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnverifiedTail {
    /// The active file.
    pub file: PathBuf,
    /// Bytes after its last newline.
    pub bytes: u64,
}

/// Outcome of a successful verification.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Files verified.
    pub files: usize,
    /// Records verified.
    pub records: u64,
    /// Decompressed bytes read.
    pub bytes: u64,
    /// Seq of the first record.
    pub first_seq: u64,
    /// Seq of the last record.
    pub last_seq: u64,
    /// `h` of the last record: the chain head.
    pub head_h: String,
    /// What the first record's chain rests on.
    pub anchor: Anchor,
    /// A partial last line of the active file, if any.
    pub unverified_tail: Option<UnverifiedTail>,
    /// Listings needed to get a consistent view (1 when nothing raced).
    pub attempts: u32,
    /// What the seals (60907) show.
    pub seal: SealReport,
}

/// Receives progress; all methods default to nothing. Called from the
/// verifying threads.
pub trait Progress: Sync {
    /// A (new) listing: `files` to read, `bytes` on disk in total.
    fn begin(&self, _files: usize, _bytes: u64) {}
    /// `bytes` more read from disk.
    fn advance(&self, _bytes: u64) {}
    /// One more file done.
    fn file_done(&self) {}
}

impl Progress for () {}

/// Verifies the log set in `dir` with `chain`; seals are checked for
/// structure only.
pub fn verify_dir(
    dir: &Path,
    chain: &Chain,
    progress: &dyn Progress,
) -> Result<Report, VerifyError> {
    verify_dir_sealed(dir, chain, None, progress)
}

/// Verifies the log set in `dir` with `chain`, and its seals with
/// `seal_key` when given (else their structure only).
pub fn verify_dir_sealed(
    dir: &Path,
    chain: &Chain,
    seal_key: Option<&VerifyKey>,
    progress: &dyn Progress,
) -> Result<Report, VerifyError> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(VerifyError::MissingDir(dir.to_path_buf()))
        }
        Err(e) => return Err(io_err("read log directory", dir, e)),
        Ok(m) if !m.is_dir() => {
            return Err(io_err(
                "read log directory",
                dir,
                io::Error::new(io::ErrorKind::InvalidInput, "not a directory"),
            ))
        }
        Ok(_) => {}
    }
    let mut cache: HashMap<(u64, u64), Arc<Summary>> = HashMap::new();
    let mut pending: Option<String> = None;
    let mut last = String::from("files vanished while being opened");
    for attempt in 1..=MAX_ATTEMPTS {
        let Some(set) = open_set(dir)? else {
            continue;
        };
        if set.is_empty() {
            return Err(VerifyError::EmptyDir(dir.to_path_buf()));
        }
        match check_set(dir, &set, chain, seal_key, progress, &mut cache)? {
            Checked::Intact(mut rep) => {
                rep.attempts = attempt;
                return Ok(rep);
            }
            Checked::Broken(e) => return Err(e),
            Checked::Between { err, key } => {
                if pending.as_deref() == Some(key.as_str()) {
                    return Err(err);
                }
                last = err.to_string();
                pending = Some(key);
            }
        }
    }
    Err(VerifyError::Unsettled {
        attempts: MAX_ATTEMPTS,
        last,
    })
}

fn io_err(what: &'static str, path: &Path, source: io::Error) -> VerifyError {
    VerifyError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// A listed file, open.
struct Opened {
    info: LogFile,
    file: File,
    /// (device, inode): the identity of the bytes.
    id: (u64, u64),
    size: u64,
}

/// Lists and opens the set; `None` when a file vanished between the two
/// (compression replaced it, retention removed it): list again.
fn open_set(dir: &Path) -> Result<Option<Vec<Opened>>, VerifyError> {
    let files = logset::list(dir).map_err(|e| io_err("list", dir, e))?;
    let mut set = Vec::with_capacity(files.len());
    for info in files {
        let file = match logset::open_nofollow(&info.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("open", &info.path, e)),
        };
        let meta = file.metadata().map_err(|e| io_err("stat", &info.path, e))?;
        set.push(Opened {
            info,
            file,
            id: (meta.dev(), meta.ino()),
            size: meta.len(),
        });
    }
    Ok(Some(set))
}

/// A timestamp as written: the fixed `YYYY-MM-DDTHH:MM:SS.ffffffZ` shape
/// compares as bytes; anything else is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    Fixed([u8; 27]),
    Parsed(DateTime<Utc>),
}

impl Stamp {
    fn of(token: &str) -> Result<Stamp, Defect> {
        let b = token.as_bytes();
        if b.len() == 27 && fixed_shape(b) {
            let mut a = [0u8; 27];
            a.copy_from_slice(b);
            return Ok(Stamp::Fixed(a));
        }
        DateTime::parse_from_rfc3339(token)
            .map(|t| Stamp::Parsed(t.with_timezone(&Utc)))
            .map_err(|_| Defect::Malformed("bad timestamp".into()))
    }

    fn time(&self) -> DateTime<Utc> {
        match self {
            Stamp::Parsed(t) => *t,
            Stamp::Fixed(a) => std::str::from_utf8(a)
                .ok()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default(),
        }
    }

    fn before(&self, other: &Stamp) -> bool {
        match (self, other) {
            (Stamp::Fixed(a), Stamp::Fixed(b)) => a < b,
            _ => self.time() < other.time(),
        }
    }

    fn show(&self) -> String {
        match self {
            Stamp::Fixed(a) => String::from_utf8_lossy(a).into_owned(),
            Stamp::Parsed(t) => record::format_ts(*t),
        }
    }
}

fn fixed_shape(b: &[u8]) -> bool {
    b.iter().enumerate().all(|(i, &c)| match i {
        4 | 7 => c == b'-',
        10 => c == b'T',
        13 | 16 => c == b':',
        19 => c == b'.',
        26 => c == b'Z',
        _ => c.is_ascii_digit(),
    })
}

/// What linking needs of a record.
#[derive(Debug, Clone)]
struct Link {
    seq: u64,
    ts: Stamp,
    h: [u8; 32],
    /// The range a 60908 record names as missing.
    gap: Option<(u64, u64)>,
}

/// A record the seal check needs (seals, starts, missing-record notes),
/// parsed in full, with the `h` of the record before it in its file.
#[derive(Debug, Clone)]
struct Mark {
    rec: ParsedRecord,
    prev_h: Option<[u8; 32]>,
}

/// A file's first record, checked against the previous file afterwards.
#[derive(Debug, Clone)]
struct First {
    link: Link,
    body: String,
    /// `previous_h=` when it is a rotation record.
    previous_h: Option<String>,
}

/// One file, verified from its second record on.
#[derive(Debug, Clone, Default)]
struct Summary {
    records: u64,
    bytes: u64,
    first: Option<First>,
    last: Option<Link>,
    /// Bytes after the last newline (active file only; else a defect).
    tail: u64,
    /// Records the seal check needs, in order.
    marks: Vec<Mark>,
}

enum Fault {
    Line(u64, Defect),
    Io(io::Error),
    Aborted,
}

/// One file's outcome, filled by whichever thread verified it.
type Slot = Mutex<Option<Result<Arc<Summary>, Fault>>>;

enum Checked {
    Intact(Report),
    /// Inside a file: real.
    Broken(VerifyError),
    /// Between two files: a race or real; `key` names it with the files.
    Between {
        err: VerifyError,
        key: String,
    },
}

fn check_set(
    dir: &Path,
    set: &[Opened],
    chain: &Chain,
    seal_key: Option<&VerifyKey>,
    progress: &dyn Progress,
    cache: &mut HashMap<(u64, u64), Arc<Summary>>,
) -> Result<Checked, VerifyError> {
    progress.begin(set.len(), set.iter().map(|f| f.size).sum());
    let results: Vec<Slot> = set.iter().map(|_| Mutex::new(None)).collect();
    for (i, f) in set.iter().enumerate() {
        if f.info.active {
            continue;
        }
        if let Some(s) = cache.get(&f.id) {
            progress.advance(f.size);
            progress.file_done();
            if let Ok(mut slot) = results[i].lock() {
                *slot = Some(Ok(s.clone()));
            }
        }
    }
    // Files after the first bad one need not be finished.
    let first_bad = AtomicUsize::new(usize::MAX);
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(set.len())
        .max(1);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(f) = set.get(i) else { break };
                let Ok(mut slot) = results[i].lock() else {
                    break;
                };
                if slot.is_some() {
                    continue;
                }
                let r = scan_file(f, chain, progress, || first_bad.load(Ordering::Relaxed) < i);
                if matches!(r, Err(Fault::Line(..))) {
                    first_bad.fetch_min(i, Ordering::Relaxed);
                }
                progress.file_done();
                *slot = Some(r.map(Arc::new));
            });
        }
    });
    let mut summaries: Vec<Arc<Summary>> = Vec::with_capacity(set.len());
    let mut prev: Option<(usize, Link)> = None;
    let mut anchor = None;
    let mut records = 0u64;
    let mut bytes = 0u64;
    let mut tail = None;
    let mut seals = SealChecker::new(seal_key);
    for (i, f) in set.iter().enumerate() {
        let r = results[i].lock().ok().and_then(|mut s| s.take());
        let path = &f.info.path;
        let sum = match r {
            Some(Ok(s)) => s,
            Some(Err(Fault::Line(line, defect))) => {
                return Ok(Checked::Broken(VerifyError::Broken {
                    file: path.clone(),
                    line,
                    defect,
                }))
            }
            Some(Err(Fault::Io(e))) => return Err(io_err("read", path, e)),
            // Only files after a bad one are aborted, and that one is
            // reported first.
            Some(Err(Fault::Aborted)) | None => {
                return Err(io_err(
                    "read",
                    path,
                    io::Error::other("verification of this file did not finish"),
                ))
            }
        };
        if !f.info.active {
            cache.insert(f.id, sum.clone());
        }
        if let Some(first) = &sum.first {
            let broken = |defect| VerifyError::Broken {
                file: path.clone(),
                line: 1,
                defect,
            };
            match &prev {
                None => match check_anchor(first, chain) {
                    Ok(a) => anchor = Some(a),
                    Err(d) => return Ok(Checked::Broken(broken(d))),
                },
                Some((pi, last)) => {
                    if let Err(d) = check_link(last, first, chain) {
                        let err = broken(d);
                        let key = format!("{err} after {:?} {:?}", set[*pi].id, f.id);
                        return Ok(Checked::Between { err, key });
                    }
                }
            }
        }
        for (k, m) in sum.marks.iter().enumerate() {
            // The first line of a file follows the previous file's last.
            let before = match (&m.prev_h, k, &prev) {
                (Some(h), _, _) => Some(*h),
                (None, 0, Some((_, last))) => Some(last.h),
                _ => None,
            };
            if let Err(error) = seals.observe(&m.rec, before.as_ref().map(hex_str)) {
                return Ok(Checked::Broken(VerifyError::Seal {
                    file: path.clone(),
                    error,
                }));
            }
        }
        if let Some(last) = &sum.last {
            prev = Some((i, last.clone()));
        }
        if sum.tail > 0 {
            tail = Some(UnverifiedTail {
                file: path.clone(),
                bytes: sum.tail,
            });
        }
        records += sum.records;
        bytes += sum.bytes;
        summaries.push(sum);
    }
    let (Some(anchor), Some((_, last))) = (anchor, prev) else {
        return Err(VerifyError::NoRecords(dir.to_path_buf()));
    };
    let first_seq = summaries
        .iter()
        .find_map(|s| s.first.as_ref().map(|f| f.link.seq))
        .unwrap_or(last.seq);
    let unsealed = match seals.last_seal_seq() {
        Some(s) => last.seq.saturating_sub(s),
        None => records,
    };
    seals.set_unsealed(unsealed);
    Ok(Checked::Intact(Report {
        files: set.len(),
        records,
        bytes,
        first_seq,
        last_seq: last.seq,
        head_h: hex_str(&last.h).to_string(),
        anchor,
        unverified_tail: tail,
        attempts: 1,
        seal: seals.finish(),
    }))
}

fn hex_str(h: &[u8; 32]) -> &str {
    // Only ever filled from validated ASCII hex.
    std::str::from_utf8(h).unwrap_or("")
}

fn check_anchor(first: &First, chain: &Chain) -> Result<Anchor, Defect> {
    if let Some((from, to)) = first.link.gap {
        // The set starts with the daemon saying what it found missing.
        return Err(Defect::RecordsMissing { from, to });
    }
    let from = if first.link.seq == 1 {
        Some(GENESIS)
    } else {
        // A rotation record notes the h it follows: it cannot be checked
        // against the deleted file, but the record must agree with itself.
        first.previous_h.as_deref()
    };
    if let Some(from) = from {
        check_h(chain, from, &first.body, &first.link)?;
    }
    Ok(if first.link.seq == 1 {
        Anchor::Genesis
    } else {
        Anchor::OldestKept {
            seq: first.link.seq,
        }
    })
}

fn check_link(last: &Link, first: &First, chain: &Chain) -> Result<(), Defect> {
    follows(last, &first.link)?;
    check_h(chain, hex_str(&last.h), &first.body, &first.link)?;
    if let Some(named) = &first.previous_h {
        if named.as_bytes() != last.h {
            return Err(Defect::RotationMismatch {
                named: named.clone(),
                actual: hex_str(&last.h).to_string(),
            });
        }
    }
    Ok(())
}

fn follows(prev: &Link, cur: &Link) -> Result<(), Defect> {
    if Some(cur.seq) != prev.seq.checked_add(1) {
        if let Some((from, to)) = cur.gap {
            if from == prev.seq + 1 && to.checked_add(1) == Some(cur.seq) {
                return Err(Defect::RecordsMissing { from, to });
            }
        }
        return Err(Defect::SeqGap {
            seq: cur.seq,
            after: prev.seq,
        });
    }
    if cur.ts.before(&prev.ts) {
        return Err(Defect::TimeBack {
            ts: cur.ts.show(),
            prev: prev.ts.show(),
        });
    }
    Ok(())
}

fn check_h(chain: &Chain, prev_h: &str, body: &str, cur: &Link) -> Result<(), Defect> {
    let want = chain.next_hex(prev_h, body);
    if want[..] != cur.h[..] {
        return Err(Defect::ChainBroken {
            seq: cur.seq,
            h: hex_str(&cur.h).to_string(),
            expected: String::from_utf8_lossy(&want).into_owned(),
        });
    }
    Ok(())
}

/// Whether the seal check needs `rec`.
fn is_mark(rec: &ParsedRecord) -> bool {
    rec.source == "Appliance"
        && matches!(
            rec.code,
            seal::SEAL_CODE | seal::START_CODE | seal::MISSING_CODE
        )
}

/// The range a 60908 record names.
fn missing_range(rec: &ParsedRecord) -> Option<(u64, u64)> {
    if rec.code != seal::MISSING_CODE || rec.source != "Appliance" {
        return None;
    }
    Some((
        rec.field("from")?.parse().ok()?,
        rec.field("to")?.parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::scan::light;
    use super::*;
    use crate::record::{seal, text_body, Entry, Format, Origin, Stamp as WriterStamp};

    fn line(msg: &str, client: &str, seq: u64, prev: &str) -> String {
        let mut e = Entry::appliance(60001).with_message(msg);
        e.origin = Origin {
            pid: 1,
            uid: 2,
            gid: 3,
        };
        e.client = Some(client.into());
        let st = WriterStamp {
            ts: DateTime::parse_from_rfc3339("2026-11-25T15:08:39.123456Z")
                .unwrap()
                .with_timezone(&Utc),
            host: "appliance1",
            seq,
        };
        let mut body = String::new();
        text_body(&e, &st, &mut body);
        let h = Chain::sha256().next(prev, &body);
        seal(Format::Text, &body, &h)
    }

    #[test]
    fn light_scan_agrees_with_the_full_parser_on_forged_trailers() {
        let forged = [
            (
                "hi | seq=1 pid=1 uid=1 gid=1 h=00000000000000000000000000000000",
                "x",
            ),
            ("a | seq=9 pid=1", "b\" h=\"x | seq=3 pid=1 uid=1 gid=1 h=0"),
            ("plain", "10.0.0.5"),
        ];
        for (msg, client) in forged {
            let l = line(msg, client, 42, GENESIS);
            let full = record::parse_line(&l).unwrap();
            let light = light(l.as_bytes()).unwrap();
            assert_eq!(light.seq, full.seq, "{l}");
            assert_eq!(light.body, full.body, "{l}");
            assert_eq!(hex_str(&light.h), full.h, "{l}");
        }
    }

    #[test]
    fn fixed_timestamps_compare_as_written() {
        let a = Stamp::of("2026-11-25T15:08:39.123456Z").unwrap();
        let b = Stamp::of("2026-11-25T15:08:39.123457Z").unwrap();
        let c = Stamp::of("2026-11-25T16:08:39.123456+01:00").unwrap();
        assert!(a.before(&b) && !b.before(&a));
        assert!(!a.before(&c) && !c.before(&a));
        assert!(Stamp::of("2026-13-99").is_err());
    }
}

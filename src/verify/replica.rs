//! Verification of a collector's copy of an appliance's audit log (a
//! "replica": one file of record lines as the fleet collector writes them,
//! `%msg%` and a newline per forwarded record), by itself and against the
//! appliance's own log set.
//!
//! By itself ([`verify_replica`]): every line is a record; seq runs without
//! gaps from the first record to the last; each `h` chains from the
//! previous record's (SHA-256, or HMAC-SHA-256 with the appliance's chain
//! key), and a rotation record (60903) names its predecessor's `h`.
//! Delivery to the collector is at-least-once, so the same record may
//! arrive twice and out of order: a duplicate byte-identical to the first
//! copy is allowed and counted, a differing one is a failure (one of them
//! is not what the appliance wrote).
//!
//! Against the appliance's log ([`compare_with_log`]): every record present
//! on both sides must be byte-identical; records on the copy but missing
//! from the appliance's log (a deleted tail, a deleted or truncated file)
//! and records inside the copy's range missing from the copy are named.
//! Records the appliance no longer keeps (retention removed them, older than
//! its oldest file) and records not yet forwarded (after the copy's last)
//! are counted, not failures. A log rewritten or cut by someone who became
//! root on the appliance is caught by the copy they cannot reach.
//!
//! What it rests on: the copy holds every record the forwarder sent (the
//! forwarder's `[forward] codes`/`components` filters must be empty, the
//! default, for the copy to be gap-free).

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::logset;
use crate::record::{self, Chain, GENESIS};
use crate::seal;

/// How many findings of each kind are listed (all are counted).
pub const LISTED: usize = 10;

/// Why a copy could not be verified at all.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The copy does not exist.
    #[error("replica {0} does not exist")]
    Missing(PathBuf),
    /// The copy holds no record.
    #[error("replica {0} holds no record")]
    Empty(PathBuf),
    /// The appliance's log directory does not exist or holds no file.
    #[error("log directory {0} does not exist or holds no log file")]
    NoLog(PathBuf),
    /// Reading failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being read.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// What is kept of a record of the copy: where it is, a digest of its
/// line (for duplicates and the comparison) and what the next record's
/// checks need. About 100 bytes a record, whatever the line's length.
#[derive(Debug, Clone)]
struct Held {
    /// 1-based line number of its first copy.
    line_no: u64,
    /// SHA-256 of the line.
    digest: [u8; 32],
    /// Its `h`.
    h: String,
    /// Writer time.
    ts: chrono::DateTime<chrono::Utc>,
}

fn digest(line: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(line.as_bytes()).into()
}

/// One thing wrong with the copy by itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReplicaDefect {
    /// A line that is not a record.
    #[error("line {line_no}: malformed record: {reason}")]
    Malformed {
        /// Line number in the copy.
        line_no: u64,
        /// Why.
        reason: String,
    },
    /// The same seq twice with different lines.
    #[error("seq {seq}: line {line_no} differs from the copy at line {first_line_no}")]
    DifferingDuplicate {
        /// The seq.
        seq: u64,
        /// First copy.
        first_line_no: u64,
        /// The differing copy.
        line_no: u64,
    },
    /// Seqs absent from the copy between its first and last record.
    #[error("seq {from}..={to} missing from the replica ({} records)", to - from + 1)]
    Gap {
        /// First missing seq.
        from: u64,
        /// Last missing seq.
        to: u64,
    },
    /// `h` does not chain from the previous record's.
    #[error("seq {seq} (line {line_no}): chain broken (h={h}, expected {expected})")]
    ChainBroken {
        /// The seq.
        seq: u64,
        /// Line in the copy.
        line_no: u64,
        /// `h` in the line.
        h: String,
        /// `h` the chain gives.
        expected: String,
    },
    /// A rotation record names another `h` than its predecessor's.
    #[error("seq {seq} (line {line_no}): rotation record names previous h {named}, the previous record has {actual}")]
    RotationMismatch {
        /// The seq.
        seq: u64,
        /// Line in the copy.
        line_no: u64,
        /// `previous_h=` of the record.
        named: String,
        /// `h` of the record before it.
        actual: String,
    },
    /// The writer's time goes backwards from one seq to the next.
    #[error("seq {seq}: time {ts} goes back before {prev}")]
    TimeBack {
        /// The seq.
        seq: u64,
        /// Its time.
        ts: String,
        /// The previous record's time.
        prev: String,
    },
}

/// How far back the copy's chain is proven.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaAnchor {
    /// The copy starts at seq 1, chained from the genesis value.
    Genesis,
    /// The copy starts later (forwarding began after the log did): its
    /// first record's `h` is taken as given.
    FirstRecord {
        /// The copy's first seq.
        seq: u64,
    },
}

impl std::fmt::Display for ReplicaAnchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplicaAnchor::Genesis => write!(f, "anchored at genesis (seq 1)"),
            ReplicaAnchor::FirstRecord { seq } => write!(
                f,
                "anchored at the replica's first record (seq {seq}, forwarded from there on)"
            ),
        }
    }
}

/// The copy's own verdict.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplicaReport {
    /// The copy.
    pub path: PathBuf,
    /// Lines read (records, duplicates included).
    pub lines: u64,
    /// Distinct records.
    pub records: u64,
    /// First and last seq (0 when none).
    pub first_seq: u64,
    /// Last seq.
    pub last_seq: u64,
    /// Byte-identical duplicates (at-least-once delivery), allowed.
    pub duplicates: u64,
    /// Records that arrived after a later seq (allowed; informative).
    pub out_of_order: u64,
    /// Differing duplicates (failures).
    pub differing_duplicates: u64,
    /// Seqs missing between the first and last record.
    pub missing: u64,
    /// All defects (missing counted once per range).
    pub defect_count: u64,
    /// The first [`LISTED`] defects of each kind, in seq or line order.
    pub defects: Vec<ReplicaDefect>,
    /// Bytes after the last newline (a write in progress), not verified.
    pub unverified_tail: u64,
    /// What the chain rests on.
    pub anchor: ReplicaAnchor,
    /// `h` of the last record.
    pub head_h: String,
    #[serde(skip)]
    held: BTreeMap<u64, Held>,
    /// The daemon's seal (60907) and start (60901) records, by seq, for
    /// [`check_replica_seals`].
    #[serde(skip)]
    seal_points: BTreeMap<u64, record::ParsedRecord>,
}

impl ReplicaReport {
    /// Whether the copy verifies.
    pub fn ok(&self) -> bool {
        self.defect_count == 0
    }

    /// Whether the copy holds `seq`.
    pub fn holds(&self, seq: u64) -> bool {
        self.held.contains_key(&seq)
    }
}

/// Caps each kind of defect at [`LISTED`] while counting all of them.
#[derive(Default)]
struct Findings {
    listed: Vec<ReplicaDefect>,
    per_kind: std::collections::HashMap<std::mem::Discriminant<ReplicaDefect>, usize>,
    count: u64,
}

impl Findings {
    fn push(&mut self, d: ReplicaDefect) {
        self.count += 1;
        let n = self.per_kind.entry(std::mem::discriminant(&d)).or_default();
        if *n < LISTED {
            self.listed.push(d);
        }
        *n += 1;
    }
}

fn io_err<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> ReplicaError + 'p {
    move |source| ReplicaError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Verifies a copy by itself: seq continuity, chain, rotation records;
/// duplicates allowed when identical. `Err` only when it cannot be read or
/// holds nothing; a copy that does not verify is an `Ok` report with
/// defects ([`ReplicaReport::ok`]).
pub fn verify_replica(path: &Path, chain: &Chain) -> Result<ReplicaReport, ReplicaError> {
    let file = match logset::open_nofollow(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ReplicaError::Missing(path.to_path_buf()))
        }
        Err(e) => return Err(io_err("open replica", path)(e)),
    };
    let mut rd = BufReader::with_capacity(1 << 16, file);
    let mut f = Findings::default();
    let mut held: BTreeMap<u64, Held> = BTreeMap::new();
    let mut pending: BTreeMap<u64, (u64, record::ParsedRecord)> = BTreeMap::new();
    let mut seal_points: BTreeMap<u64, record::ParsedRecord> = BTreeMap::new();
    let (mut lines, mut duplicates, mut out_of_order, mut differing) = (0u64, 0u64, 0u64, 0u64);
    let mut max_seen = 0u64;
    let mut tail = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = rd
            .read_until(b'\n', &mut buf)
            .map_err(io_err("read replica", path))?;
        if n == 0 {
            break;
        }
        if buf.last() != Some(&b'\n') {
            tail = n as u64;
            break;
        }
        buf.pop();
        lines += 1;
        let line = match String::from_utf8(std::mem::take(&mut buf)) {
            Ok(s) => s,
            Err(_) => {
                f.push(ReplicaDefect::Malformed {
                    line_no: lines,
                    reason: "not UTF-8".into(),
                });
                continue;
            }
        };
        let rec = match record::parse_line(&line) {
            Ok(r) => r,
            Err(e) => {
                f.push(ReplicaDefect::Malformed {
                    line_no: lines,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let seq = rec.seq;
        if seq < max_seen {
            out_of_order += 1;
        }
        max_seen = max_seen.max(seq);
        let d = digest(&line);
        if let Some(first) = held.get(&seq) {
            if first.digest == d {
                duplicates += 1;
            } else {
                differing += 1;
                f.push(ReplicaDefect::DifferingDuplicate {
                    seq,
                    first_line_no: first.line_no,
                    line_no: lines,
                });
            }
            continue;
        }
        // The chain is checked as soon as a record and its predecessor are
        // both here, in whatever order they arrived; a record whose
        // predecessor has not arrived (yet) waits in `pending`.
        match seq.checked_sub(1).and_then(|p| held.get(&p)) {
            Some(prev) => check_pair(chain, prev, &rec, lines, &mut f),
            None => {
                pending.insert(seq, (lines, rec.clone()));
            }
        }
        if rec.source == "Appliance"
            && (rec.code == seal::SEAL_CODE || rec.code == seal::START_CODE)
        {
            seal_points.insert(seq, rec.clone());
        }
        let this = Held {
            line_no: lines,
            digest: d,
            h: rec.h,
            ts: rec.ts,
        };
        if let Some((n, next)) = pending.remove(&(seq + 1)) {
            check_pair(chain, &this, &next, n, &mut f);
        }
        held.insert(seq, this);
    }
    if held.is_empty() && f.count == 0 {
        return Err(ReplicaError::Empty(path.to_path_buf()));
    }

    // Gaps, and what the first record rests on.
    let mut missing = 0u64;
    let mut prev_seq: Option<u64> = None;
    for &seq in held.keys() {
        if let Some(p) = prev_seq {
            if seq != p + 1 {
                missing += seq - p - 1;
                f.push(ReplicaDefect::Gap {
                    from: p + 1,
                    to: seq - 1,
                });
            }
        }
        prev_seq = Some(seq);
    }
    let mut anchor = ReplicaAnchor::Genesis;
    if let Some((&seq, (n, rec))) = pending.iter().next() {
        if seq == 1 {
            check_h(chain, GENESIS, rec, *n, &mut f);
        } else {
            anchor = ReplicaAnchor::FirstRecord { seq };
            // A rotation record notes the h it follows: it must at least
            // agree with itself.
            if let Some(named) = rec.field("previous_h").filter(|_| rec.code == 60903) {
                check_h(chain, named, rec, *n, &mut f);
            }
        }
    }
    let first_seq = held.keys().next().copied().unwrap_or(0);
    let last_seq = held.keys().next_back().copied().unwrap_or(0);
    Ok(ReplicaReport {
        path: path.to_path_buf(),
        lines,
        records: held.len() as u64,
        first_seq,
        last_seq,
        duplicates,
        out_of_order,
        differing_duplicates: differing,
        missing,
        defect_count: f.count,
        defects: f.listed,
        unverified_tail: tail,
        anchor,
        head_h: held
            .values()
            .next_back()
            .map(|h| h.h.clone())
            .unwrap_or_default(),
        held,
        seal_points,
    })
}

/// Checks the seals (60907) of a copy already verified by
/// [`verify_replica`], which kept the daemon's seal and start records and
/// every record's `h`: they are fed in seq order to [`seal::SealChecker`]
/// with the `h` of the record before each. With `key`, each seal's MAC,
/// epoch and time window are proven, so a copy edited before its last seal
/// is caught even without the appliance's log.
pub fn check_replica_seals(
    rep: &ReplicaReport,
    key: Option<&seal::VerifyKey>,
) -> Result<seal::SealReport, seal::SealError> {
    let mut checker = seal::SealChecker::new(key);
    let mut last = rep.first_seq.saturating_sub(1);
    for (seq, rec) in &rep.seal_points {
        checker.skip(seq.saturating_sub(last + 1));
        let prev_h = seq
            .checked_sub(1)
            .and_then(|p| rep.held.get(&p))
            .map(|h| h.h.as_str());
        checker.observe(rec, prev_h)?;
        last = *seq;
    }
    checker.skip(rep.last_seq.saturating_sub(last));
    Ok(checker.finish())
}

/// Checks record `rec` (at `line_no`) against its predecessor `prev`: the
/// chain, a rotation record's `previous_h`, and time order.
fn check_pair(
    chain: &Chain,
    prev: &Held,
    rec: &record::ParsedRecord,
    line_no: u64,
    f: &mut Findings,
) {
    check_h(chain, &prev.h, rec, line_no, f);
    if rec.code == 60903 {
        if let Some(named) = rec.field("previous_h") {
            if named != prev.h {
                f.push(ReplicaDefect::RotationMismatch {
                    seq: rec.seq,
                    line_no,
                    named: named.to_string(),
                    actual: prev.h.clone(),
                });
            }
        }
    }
    if rec.ts < prev.ts {
        f.push(ReplicaDefect::TimeBack {
            seq: rec.seq,
            ts: record::format_ts(rec.ts),
            prev: record::format_ts(prev.ts),
        });
    }
}

fn check_h(
    chain: &Chain,
    prev_h: &str,
    rec: &record::ParsedRecord,
    line_no: u64,
    f: &mut Findings,
) {
    let want = chain.next(prev_h, &rec.body);
    if want != rec.h {
        f.push(ReplicaDefect::ChainBroken {
            seq: rec.seq,
            line_no,
            h: rec.h.clone(),
            expected: want,
        });
    }
}

/// A seq range, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SeqRange {
    /// First seq.
    pub from: u64,
    /// Last seq.
    pub to: u64,
}

impl SeqRange {
    /// Number of seqs.
    pub fn len(&self) -> u64 {
        self.to - self.from + 1
    }

    /// Never empty (kept for the `len` convention).
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl std::fmt::Display for SeqRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.from == self.to {
            write!(f, "{}", self.from)
        } else {
            write!(f, "{}..={}", self.from, self.to)
        }
    }
}

/// Collects seqs (in increasing order) into ranges, listing the first
/// [`LISTED`] and counting all.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SeqRanges {
    /// Seqs in all.
    pub count: u64,
    /// The first ranges.
    pub ranges: Vec<SeqRange>,
    /// Ranges in all.
    pub range_count: u64,
    #[serde(skip)]
    open: Option<SeqRange>,
}

impl SeqRanges {
    fn add(&mut self, seq: u64) {
        self.count += 1;
        match &mut self.open {
            Some(r) if r.to + 1 == seq => r.to = seq,
            _ => {
                self.flush();
                self.open = Some(SeqRange { from: seq, to: seq });
            }
        }
    }

    fn add_range(&mut self, from: u64, to: u64) {
        if from > to {
            return;
        }
        self.flush();
        self.count += to - from + 1;
        self.open = Some(SeqRange { from, to });
        self.flush();
    }

    fn flush(&mut self) {
        if let Some(r) = self.open.take() {
            self.range_count += 1;
            if self.ranges.len() < LISTED {
                self.ranges.push(r);
            }
        }
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

impl std::fmt::Display for SeqRanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: Vec<String> = self.ranges.iter().map(|r| r.to_string()).collect();
        write!(f, "{}", shown.join(", "))?;
        if self.range_count > self.ranges.len() as u64 {
            write!(f, ", … ({} ranges)", self.range_count)?;
        }
        Ok(())
    }
}

/// A record that is not the same on both sides.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    /// The seq.
    pub seq: u64,
    /// The appliance's file holding it.
    pub file: PathBuf,
    /// Line number in that file.
    pub local_line_no: u64,
    /// Line number in the copy.
    pub replica_line_no: u64,
}

/// A line of the appliance's log that is not a record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LocalMalformed {
    /// The file.
    pub file: PathBuf,
    /// Line number.
    pub line_no: u64,
}

/// The copy compared with the appliance's log set.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Comparison {
    /// Records on both sides, identical.
    pub identical: u64,
    /// Records on both sides that differ (count).
    pub differing: u64,
    /// The first [`LISTED`] of them.
    pub differences: Vec<Difference>,
    /// Records on the copy the appliance's log lacks, though it keeps
    /// older ones or later ones (deleted, truncated, rewritten): failures.
    pub missing_locally: SeqRanges,
    /// Records inside the copy's range that the copy lacks: failures.
    pub missing_on_replica: SeqRanges,
    /// Lines of the appliance's log that are not records: failures.
    pub local_malformed: u64,
    /// The first of them.
    pub local_malformed_lines: Vec<LocalMalformed>,
    /// The same seq twice in the appliance's log (count): failures.
    pub local_duplicates: u64,
    /// Records on the copy older than the appliance's oldest kept record
    /// (removed by retention there): the copy is their evidence now.
    pub only_on_replica_retired: u64,
    /// The appliance's records before the copy starts (forwarding began
    /// later).
    pub before_replica: u64,
    /// The appliance's records after the copy's last (not forwarded yet).
    pub not_yet_forwarded: u64,
    /// First and last seq of the appliance's log (0 when none).
    pub local_first_seq: u64,
    /// Last seq of the appliance's log.
    pub local_last_seq: u64,
}

impl Comparison {
    /// Whether both sides agree.
    pub fn ok(&self) -> bool {
        self.differing == 0
            && self.missing_locally.is_empty()
            && self.missing_on_replica.is_empty()
            && self.local_malformed == 0
            && self.local_duplicates == 0
    }
}

/// Compares a verified copy with the appliance's log directory `dir`
/// (rotated and compressed files included), record by record, byte for
/// byte.
pub fn compare_with_log(rep: &ReplicaReport, dir: &Path) -> Result<Comparison, ReplicaError> {
    let files = logset::list(dir).map_err(io_err("list log directory", dir))?;
    if files.is_empty() {
        return Err(ReplicaError::NoLog(dir.to_path_buf()));
    }
    let mut c = Comparison::default();
    // The appliance's seqs, in order (the set is in seq order).
    let mut local_seqs: Vec<u64> = Vec::new();
    // The appliance's oldest record, and the `h` it names when it is a
    // rotation record (what retention leaves: a file that starts with 60903).
    let mut first_local: Option<(u64, Option<String>)> = None;
    for lf in &files {
        let rd = match logset::open(lf) {
            Ok(r) => r,
            // Removed by retention or compression between list and open.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("open log file", &lf.path)(e)),
        };
        for (i, l) in logset::Lines::new(rd).enumerate() {
            let l = l.map_err(io_err("read log file", &lf.path))?;
            let line_no = i as u64 + 1;
            let Ok(rec) = record::parse_line(&l) else {
                c.local_malformed += 1;
                if c.local_malformed_lines.len() < LISTED {
                    c.local_malformed_lines.push(LocalMalformed {
                        file: lf.path.clone(),
                        line_no,
                    });
                }
                continue;
            };
            local_seqs.push(rec.seq);
            if first_local.as_ref().map_or(true, |(s, _)| rec.seq < *s) {
                let named = (rec.code == crate::catalog::appliance::ROTATED
                    && rec.source == "Appliance")
                    .then(|| rec.field("previous_h").map(str::to_string))
                    .flatten();
                first_local = Some((rec.seq, named));
            }
            if let Some(h) = rep.held.get(&rec.seq) {
                if h.digest == digest(&l) {
                    c.identical += 1;
                } else {
                    c.differing += 1;
                    if c.differences.len() < LISTED {
                        c.differences.push(Difference {
                            seq: rec.seq,
                            file: lf.path.clone(),
                            local_line_no: line_no,
                            replica_line_no: h.line_no,
                        });
                    }
                }
            } else if rec.seq < rep.first_seq {
                c.before_replica += 1;
            } else if rec.seq > rep.last_seq {
                c.not_yet_forwarded += 1;
            }
            // Inside the copy's range but not on it: a gap of the copy,
            // counted below from the copy's side.
        }
    }
    local_seqs.sort_unstable();
    let before = local_seqs.len();
    local_seqs.dedup();
    c.local_duplicates = (before - local_seqs.len()) as u64;
    c.local_first_seq = local_seqs.first().copied().unwrap_or(0);
    c.local_last_seq = local_seqs.last().copied().unwrap_or(0);

    // Records older than the appliance's oldest are retention's only when
    // that oldest record is a rotation record naming the copy's record
    // before it: retention removes whole files, and every file after the
    // first starts with one. A log that was emptied or cut from the start
    // (then restarted past its high-water mark) begins otherwise, and the
    // copy's older records are missing there, not retired (a 60908 at the
    // start says so itself).
    let retired_ok = match &first_local {
        Some((first, Some(named))) => first
            .checked_sub(1)
            .and_then(|p| rep.held.get(&p))
            .map_or(true, |prev| &prev.h == named),
        // Not a rotation record: nothing older can have been retired.
        Some((_, None)) => false,
        None => true,
    };
    // The copy's records the appliance lacks.
    let mut local = local_seqs.iter().peekable();
    for &seq in rep.held.keys() {
        while local.next_if(|s| **s < seq).is_some() {}
        if local.peek() == Some(&&seq) {
            continue;
        }
        if seq < c.local_first_seq && retired_ok {
            c.only_on_replica_retired += 1;
        } else {
            c.missing_locally.add(seq);
        }
    }
    c.missing_locally.flush();

    // The appliance's records inside the copy's range that the copy lacks.
    let mut it = rep.held.keys().peekable();
    let mut run: Option<(u64, u64)> = None;
    for &seq in &local_seqs {
        if seq < rep.first_seq || seq > rep.last_seq {
            continue;
        }
        while it.next_if(|s| **s < seq).is_some() {}
        if it.peek() == Some(&&seq) {
            continue;
        }
        run = match run {
            Some((a, b)) if b + 1 == seq => Some((a, seq)),
            Some((a, b)) => {
                c.missing_on_replica.add_range(a, b);
                Some((seq, seq))
            }
            None => Some((seq, seq)),
        };
    }
    if let Some((a, b)) = run {
        c.missing_on_replica.add_range(a, b);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{seal, text_body, Entry, Format, Stamp};
    use chrono::{TimeZone, Utc};
    use std::io::Write;

    /// Lines of a chained log with seqs 1..=n.
    fn log(n: u64) -> Vec<String> {
        log_rotated_at(n, None)
    }

    /// Like [`log`], with a rotation record (60903 naming the previous `h`)
    /// at seq `rot`, where a new file would start.
    fn log_rotated_at(n: u64, rot: Option<u64>) -> Vec<String> {
        let chain = Chain::sha256();
        let mut prev = GENESIS.to_string();
        let mut out = Vec::new();
        for seq in 1..=n {
            let e = if Some(seq) == rot {
                Entry::appliance(60903).field("previous_h", prev.clone())
            } else {
                Entry::appliance(60001)
                    .with_user("nexthink")
                    .with_message(format!("logon {seq}"))
            };
            let st = Stamp {
                ts: Utc.timestamp_opt(1_700_000_000 + seq as i64, 0).unwrap(),
                host: "appliance1",
                seq,
            };
            let mut body = String::new();
            text_body(&e, &st, &mut body);
            let h = chain.next(&prev, &body);
            out.push(seal(Format::Text, &body, &h));
            prev = h;
        }
        out
    }

    fn write(path: &Path, lines: &[String]) {
        let mut f = std::fs::File::create(path).unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
    }

    #[test]
    fn duplicates_identical_are_counted_differing_fail() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.log");
        let l = log(20);
        let mut lines = l.clone();
        // Resent after a lost acknowledgement, out of order.
        lines.extend_from_slice(&l[10..15]);
        write(&p, &lines);
        let rep = verify_replica(&p, &Chain::sha256()).unwrap();
        assert!(rep.ok(), "{:?}", rep.defects);
        assert_eq!(
            (rep.records, rep.duplicates, rep.first_seq, rep.last_seq),
            (20, 5, 1, 20)
        );
        assert_eq!(rep.anchor, ReplicaAnchor::Genesis);
        assert_eq!(rep.out_of_order, 5);

        lines.push(l[3].replace("logon 4", "logon X"));
        write(&p, &lines);
        let rep = verify_replica(&p, &Chain::sha256()).unwrap();
        assert!(!rep.ok());
        assert_eq!(
            rep.defects,
            vec![ReplicaDefect::DifferingDuplicate {
                seq: 4,
                first_line_no: 4,
                line_no: 26
            }]
        );
    }

    #[test]
    fn records_arriving_before_their_predecessor_are_chained() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.log");
        let l = log(6);
        let order =
            |ix: &[usize], l: &[String]| ix.iter().map(|i| l[*i].clone()).collect::<Vec<_>>();
        write(&p, &order(&[0, 1, 3, 2, 5, 4], &l));
        let rep = verify_replica(&p, &Chain::sha256()).unwrap();
        assert!(rep.ok(), "{:?}", rep.defects);
        assert_eq!((rep.records, rep.out_of_order), (6, 2));
        let mut bad = l.clone();
        bad[3] = bad[3].replace("logon 4", "logon 5");
        write(&p, &order(&[0, 1, 3, 2, 5, 4], &bad));
        let rep = verify_replica(&p, &Chain::sha256()).unwrap();
        assert!(
            matches!(
                rep.defects[..],
                [ReplicaDefect::ChainBroken {
                    seq: 4,
                    line_no: 3,
                    ..
                }]
            ),
            "{:?}",
            rep.defects
        );
    }

    #[test]
    fn gaps_edits_and_keys_are_caught() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.log");
        let l = log(30);
        let mut lines: Vec<String> = l[4..].to_vec();
        lines.remove(10); // seq 15
        lines[15] = lines[15].replace("logon 21", "logon 2l");
        write(&p, &lines);
        let rep = verify_replica(&p, &Chain::sha256()).unwrap();
        assert_eq!(rep.anchor, ReplicaAnchor::FirstRecord { seq: 5 });
        assert_eq!(rep.missing, 1);
        assert!(rep
            .defects
            .contains(&ReplicaDefect::Gap { from: 15, to: 15 }));
        assert!(rep
            .defects
            .iter()
            .any(|d| matches!(d, ReplicaDefect::ChainBroken { seq: 21, .. })));
        // The wrong key breaks the chain at every record.
        write(&p, &l);
        let rep = verify_replica(&p, &Chain::hmac(b"k".to_vec())).unwrap();
        assert!(matches!(
            rep.defects[0],
            ReplicaDefect::ChainBroken { seq: 2, .. }
        ));
        assert_eq!(rep.defect_count, 30);
        assert_eq!(rep.defects.len(), LISTED);
        // Nothing there, or nothing in it.
        std::fs::write(&p, "").unwrap();
        assert!(matches!(
            verify_replica(&p, &Chain::sha256()),
            Err(ReplicaError::Empty(_))
        ));
        assert!(matches!(
            verify_replica(&d.path().join("nope"), &Chain::sha256()),
            Err(ReplicaError::Missing(_))
        ));
        // A line being written is not verified, and said so.
        std::fs::write(&p, format!("{}\n{}", l[0], &l[1][..20])).unwrap();
        let rep = verify_replica(&p, &Chain::sha256()).unwrap();
        assert!(rep.ok());
        assert_eq!(rep.unverified_tail, 20);
    }

    /// Records older than the appliance's oldest are retention's only when
    /// that oldest record is the rotation record that follows them; a log
    /// that starts anywhere else lost them.
    #[test]
    fn retention_is_told_from_a_log_cut_at_its_start() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("log");
        std::fs::create_dir(&dir).unwrap();
        let l = log_rotated_at(20, Some(11));
        let r = d.path().join("r.log");
        write(&r, &l);
        let rep = verify_replica(&r, &Chain::sha256()).unwrap();
        assert!(rep.ok(), "{:?}", rep.defects);
        // Retention removed the file holding 1..=10: 11 is the rotation
        // record naming 10's h.
        write(&dir.join(logset::ACTIVE), &l[10..]);
        let c = compare_with_log(&rep, &dir).unwrap();
        assert!(c.ok(), "{c:?}");
        assert_eq!((c.only_on_replica_retired, c.identical), (10, 10));
        // The log cut at its start: 12 is not a rotation record.
        write(&dir.join(logset::ACTIVE), &l[11..]);
        let c = compare_with_log(&rep, &dir).unwrap();
        assert!(!c.ok());
        assert_eq!(c.only_on_replica_retired, 0);
        assert_eq!(c.missing_locally.ranges, vec![SeqRange { from: 1, to: 11 }]);
    }

    #[test]
    fn comparison_names_both_sides() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("log");
        std::fs::create_dir(&dir).unwrap();
        let l = log(50);
        let r = d.path().join("r.log");
        // The copy holds 11..=40.
        write(&r, &l[10..40]);
        let rep = verify_replica(&r, &Chain::sha256()).unwrap();
        assert!(rep.ok());
        // The appliance: retention removed 1..=5, 20 edited, 31..=34 gone
        // (a deleted stretch), up to 50 written.
        let t = Utc::now();
        write(&dir.join(logset::rotated_name(t, 6)), &l[5..25]);
        let mut active: Vec<String> = l[25..30].to_vec();
        active.extend_from_slice(&l[34..50]);
        write(&dir.join(logset::ACTIVE), &active);
        let mut edited: Vec<String> = l[5..25].to_vec();
        edited[14] = edited[14].replace("logon 20", "logon 2O");
        write(&dir.join(logset::rotated_name(t, 6)), &edited);
        let c = compare_with_log(&rep, &dir).unwrap();
        assert!(!c.ok());
        assert_eq!(c.differing, 1);
        assert_eq!(c.differences[0].seq, 20);
        assert_eq!(c.differences[0].local_line_no, 15);
        assert_eq!(
            c.missing_locally.ranges,
            vec![SeqRange { from: 31, to: 34 }]
        );
        assert_eq!(c.missing_on_replica.count, 0);
        assert_eq!((c.before_replica, c.not_yet_forwarded), (5, 10));
        assert_eq!(c.identical, 30 - 4 - 1);

        // The copy lacks 12..=13 that the appliance has.
        let mut lines = l[10..40].to_vec();
        lines.drain(1..3);
        write(&r, &lines);
        let rep = verify_replica(&r, &Chain::sha256()).unwrap();
        let c = compare_with_log(&rep, &dir).unwrap();
        assert_eq!(
            c.missing_on_replica.ranges,
            vec![SeqRange { from: 12, to: 13 }]
        );
        assert!(matches!(
            compare_with_log(&rep, &d.path().join("none")),
            Err(ReplicaError::NoLog(_))
        ));
    }
}

//! Following the durable log: records with seq ≥ a starting point, in
//! order, across rotation and compression. One follower for every reader
//! that keeps up with the writer (`nxaudit tail -f`, the syslog forwarder,
//! the file sink).
//!
//! Why it is built this way:
//! - It lists and opens the files itself (through [`crate::logset`]): the
//!   active file is read through its open descriptor until the name
//!   `audit.log` points elsewhere, then drained and left; rotated files
//!   (plain or compressed) are found by the first seq in their name, so a
//!   file compressed between two reads is read from its compressed copy.
//! - A torn last line (being written) is held back until its newline.
//! - With `sync`, lines read from the active file are `fdatasync`ed before
//!   they are returned, so nothing is handed over that a power loss could
//!   take back and give another record's seq.
//! - Blocking: run it on the blocking pool or its own thread.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::logset::{self, LogFile};
use crate::record::{parse_line, ParsedRecord};

/// A record read from the log: the line as it stands there and its parse.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// The line, without its newline.
    pub line: String,
    /// The line parsed.
    pub rec: ParsedRecord,
}

/// The seq of the last record in the log (0 for an empty log): the last
/// complete line of the newest file that has one.
pub fn last_seq(log_dir: &Path) -> io::Result<u64> {
    for f in logset::list(log_dir)?.iter().rev() {
        if let Some(line) = logset::last_line(f)? {
            if let Ok(r) = parse_line(&line) {
                return Ok(r.seq);
            }
        }
    }
    Ok(0)
}

/// What one read of the log gave.
#[derive(Debug, Default)]
pub struct Batch {
    /// The records, in seq order.
    pub records: Vec<LogRecord>,
    /// Lines that are not records.
    pub malformed: u64,
    /// Seqs skipped (missing from the log).
    pub gaps: u64,
}

/// The file being read.
struct Current {
    reader: Box<dyn BufRead + Send>,
    /// The plain file, to sync what was read from the active file.
    file: Option<File>,
    active: bool,
    /// (dev, ino) of the active file when opened.
    id: Option<(u64, u64)>,
    /// First seq in the file's name (rotated files).
    name_seq: Option<u64>,
    /// First record seq read from the file.
    first_seq: Option<u64>,
    /// The name `audit.log` was seen pointing elsewhere: drain, then leave.
    rotated: bool,
    pending: Vec<u8>,
}

/// Reads records with seq ≥ `next_seq` from the log files, in order,
/// following rotation. Blocking: run it on the blocking pool.
pub struct LogFollower {
    dir: PathBuf,
    next_seq: u64,
    cur: Option<Current>,
    /// Rotated files whose first seq is at most this are fully read.
    done: Option<u64>,
    sync: bool,
}

impl LogFollower {
    /// A follower of the log in `dir` that returns records from
    /// `next_seq` on; with `sync`, what it read from the active file is
    /// made durable before it is returned.
    pub fn new(dir: PathBuf, next_seq: u64, sync: bool) -> LogFollower {
        LogFollower {
            dir,
            next_seq,
            cur: None,
            done: None,
            sync,
        }
    }

    /// Opens `f` for reading from `next_seq` on. A plain file that ends
    /// before `next_seq` (the active file when following from the end:
    /// `tail -f`, a sink that has caught up) is entered at its last
    /// complete line instead of being read from its start.
    fn open(f: &LogFile, next_seq: u64) -> io::Result<Current> {
        let mut first_seq = None;
        let (reader, file, id): (Box<dyn BufRead + Send>, _, _) =
            if f.compression == logset::Compression::Plain {
                let mut file = File::open(&f.path)?;
                let m = file.metadata()?;
                let end = logset::end_of_last_line(&mut file, m.len())?;
                let last = logset::last_lines_before(&mut file, end, 1, &|_: &str| true)?
                    .pop()
                    .and_then(|l| parse_line(&l).ok())
                    .map(|r| r.seq);
                if last.is_some_and(|l| l < next_seq) {
                    first_seq = Self::first_seq_of(f)?;
                    file.seek(SeekFrom::Start(end))?;
                } else {
                    file.seek(SeekFrom::Start(0))?;
                }
                let sync_handle = file.try_clone()?;
                (
                    Box::new(BufReader::with_capacity(1 << 16, file)),
                    Some(sync_handle),
                    Some((m.dev(), m.ino())),
                )
            } else {
                (logset::open(f)?, None, None)
            };
        Ok(Current {
            reader,
            file,
            active: f.active,
            id,
            name_seq: f.first_seq,
            first_seq,
            rotated: false,
            pending: Vec::new(),
        })
    }

    /// First record seq of a file (None when empty or unreadable).
    fn first_seq_of(f: &LogFile) -> io::Result<Option<u64>> {
        let mut lines = logset::Lines::new(logset::open(f)?);
        Ok(match lines.next() {
            Some(Ok(l)) => parse_line(&l).ok().map(|r| r.seq),
            _ => None,
        })
    }

    /// Opens the file holding `next_seq` (or the first one after it).
    fn open_next(&mut self) -> io::Result<bool> {
        let files = logset::list(&self.dir)?;
        let done = self.done;
        let rotated: Vec<&LogFile> = files
            .iter()
            .filter(|f| !f.active && f.first_seq.is_some_and(|s| done.map_or(true, |d| s > d)))
            .collect();
        let active = files.iter().find(|f| f.active);
        let last_le = rotated
            .iter()
            .rposition(|f| f.first_seq.is_some_and(|s| s <= self.next_seq));
        let pick: Option<&LogFile> = match last_le {
            Some(i) if i + 1 < rotated.len() => Some(rotated[i]),
            Some(i) => match active {
                Some(a) if Self::first_seq_of(a)?.is_some_and(|s| s <= self.next_seq) => Some(a),
                _ => Some(rotated[i]),
            },
            None => rotated.first().copied().or(active),
        };
        match pick {
            Some(f) => {
                self.cur = Some(Self::open(f, self.next_seq)?);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// [`Self::open_next`], listing again when a file listed a moment ago
    /// is gone: the compressor has just replaced it by its compressed copy
    /// (retention never removes a file a reader still needs).
    fn open_next_retrying(&mut self) -> io::Result<bool> {
        let mut attempts = 0;
        loop {
            match self.open_next() {
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 20 => attempts += 1,
                r => return r,
            }
        }
    }

    fn active_replaced(&self, id: Option<(u64, u64)>) -> bool {
        match std::fs::metadata(self.dir.join(logset::ACTIVE)) {
            Ok(m) => Some((m.dev(), m.ino())) != id,
            Err(_) => true,
        }
    }

    /// The seq the next record returned will have at least.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Reads at most `max` records (fewer, or none, at the end of what is
    /// written so far). After an error, make a new follower from the last
    /// seq handled: a file may have gone away under it.
    pub fn read_batch(&mut self, max: usize) -> io::Result<Batch> {
        let mut out = Batch::default();
        let mut read_active = false;
        while out.records.len() < max {
            if self.cur.is_none() && !self.open_next_retrying()? {
                break;
            }
            let Some(cur) = self.cur.as_mut() else { break };
            cur.reader.read_until(b'\n', &mut cur.pending)?;
            if cur.pending.last() == Some(&b'\n') {
                cur.pending.pop();
                let line = String::from_utf8_lossy(&cur.pending).into_owned();
                cur.pending.clear();
                read_active |= cur.active;
                match parse_line(&line) {
                    Ok(rec) => {
                        cur.first_seq.get_or_insert(rec.seq);
                        if rec.seq >= self.next_seq {
                            out.gaps += rec.seq - self.next_seq;
                            self.next_seq = rec.seq + 1;
                            out.records.push(LogRecord { line, rec });
                        }
                    }
                    Err(_) => out.malformed += 1,
                }
                continue;
            }
            // No complete line: the end of what is written so far.
            if cur.active && !cur.rotated {
                let id = cur.id;
                if self.active_replaced(id) {
                    // Rotated: whatever the writer wrote before the rename
                    // is in this file; read it, then move on.
                    if let Some(c) = self.cur.as_mut() {
                        c.rotated = true;
                    }
                    continue;
                }
                break;
            }
            if !cur.pending.is_empty() {
                out.malformed += 1;
            }
            let finished = if cur.active {
                cur.first_seq
            } else {
                cur.name_seq
            };
            if let Some(s) = finished {
                self.done = Some(self.done.map_or(s, |d| d.max(s)));
            }
            self.cur = None;
        }
        if self.sync && read_active && !out.records.is_empty() {
            if let Some(f) = self.cur.as_ref().and_then(|c| c.file.as_ref()) {
                f.sync_data()?;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::{seal, text_body, Chain, Entry, Format, Stamp, GENESIS};
    use chrono::{DateTime, Utc};
    use std::io::Write;

    /// A record line with seq `seq` and code `code` (tests of readers).
    pub(crate) fn line(seq: u64, code: u32, text: &str) -> String {
        let mut e = Entry::appliance(code)
            .with_user("nexthink")
            .with_message(text);
        e.client = Some("2001:db8::1".into());
        e = e
            .field("command", "echo \"a] b\\c\"\nnext")
            .field("port", "22");
        let st = Stamp {
            ts: DateTime::parse_from_rfc3339("2026-11-25T15:08:39.123456Z")
                .unwrap()
                .with_timezone(&Utc),
            host: "appliance1",
            seq,
        };
        let mut body = String::new();
        text_body(&e, &st, &mut body);
        let h = Chain::sha256().next(GENESIS, &body);
        seal(Format::Text, &body, &h)
    }

    /// Appends records `seqs` (code 60001) to `path`.
    pub(crate) fn append(path: &Path, seqs: std::ops::RangeInclusive<u64>) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        for s in seqs {
            writeln!(f, "{}", line(s, 60001, "SSH logon")).unwrap();
        }
    }

    fn seqs(b: &Batch) -> Vec<u64> {
        b.records.iter().map(|r| r.rec.seq).collect()
    }

    #[test]
    fn follower_reads_across_rotation_and_compression() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let t = Utc::now();
        // Rotated and compressed: 1..=10; rotated plain: 11..=20; active: 21..=25.
        let r1 = dir.join(logset::rotated_name(t, 1));
        append(&r1, 1..=10);
        let data = std::fs::read(&r1).unwrap();
        std::fs::write(
            format!("{}.zst", r1.display()),
            zstd::encode_all(&data[..], 3).unwrap(),
        )
        .unwrap();
        std::fs::remove_file(&r1).unwrap();
        append(&dir.join(logset::rotated_name(t, 11)), 11..=20);
        let active = dir.join(logset::ACTIVE);
        append(&active, 21..=25);
        assert_eq!(last_seq(dir).unwrap(), 25);

        let mut f = LogFollower::new(dir.to_path_buf(), 6, true);
        let b = f.read_batch(1000).unwrap();
        assert_eq!(seqs(&b), (6..=25).collect::<Vec<_>>());
        assert_eq!(b.records[0].line, line(6, 60001, "SSH logon"));
        assert_eq!(f.read_batch(1000).unwrap().records.len(), 0);

        // A torn (unfinished) line is not returned until complete.
        let partial = line(26, 60001, "SSH logon");
        let (a, b2) = partial.split_at(20);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&active)
            .unwrap()
            .write_all(a.as_bytes())
            .unwrap();
        assert_eq!(f.read_batch(1000).unwrap().records.len(), 0);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&active)
            .unwrap()
            .write_all(format!("{b2}\n").as_bytes())
            .unwrap();
        assert_eq!(seqs(&f.read_batch(1000).unwrap()), vec![26]);

        // Rotation while following: more lines land in the old file, it is
        // renamed, a new active file starts.
        append(&active, 27..=28);
        std::fs::rename(&active, dir.join(logset::rotated_name(t, 21))).unwrap();
        append(&active, 29..=30);
        let b = f.read_batch(1000).unwrap();
        assert_eq!(seqs(&b), vec![27, 28, 29, 30]);
        assert_eq!(b.gaps, 0);

        // Starting in the middle of the plain rotated file.
        let mut f = LogFollower::new(dir.to_path_buf(), 15, false);
        let mut all = Vec::new();
        loop {
            let b = f.read_batch(3).unwrap();
            if b.records.is_empty() {
                break;
            }
            all.extend(seqs(&b));
        }
        assert_eq!(all, (15..=30).collect::<Vec<_>>());

        // Following from the end (tail -f, a sink that caught up): the
        // active file is entered at its end, then read on across rotation.
        let mut f = LogFollower::new(dir.to_path_buf(), 31, true);
        assert!(f.read_batch(1000).unwrap().records.is_empty());
        append(&active, 31..=32);
        assert_eq!(seqs(&f.read_batch(1000).unwrap()), vec![31, 32]);
        std::fs::rename(&active, dir.join(logset::rotated_name(t, 29))).unwrap();
        append(&active, 33..=33);
        let b = f.read_batch(1000).unwrap();
        assert_eq!((seqs(&b), b.gaps), (vec![33], 0));
    }
}

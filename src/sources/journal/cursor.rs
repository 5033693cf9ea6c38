//! A follower's position in the journal and how it survives a crash.
//!
//! The position is a journalctl cursor ([`JournalCursor`]) plus `log_seq`,
//! the highest audit-log `seq` the position accounts for: every record of
//! this follower with a seq up to `log_seq` was derived from an entry at or
//! before the cursor. Two copies exist:
//!
//! - the cursor file in the state directory ([`CursorStore`]), saved
//!   atomically (temp file, fsync, rename, directory fsync) only after the
//!   records up to the cursor are durable;
//! - the `cursor=` field of the follower's last record in the audit log
//!   ([`scan_log`]), durable together with the record itself.
//!
//! [`resume_point`] takes the newer one. Cursors of the same journal
//! sequence (same `s=`) are compared by their sequence number `i=`; across
//! sequences the log's record wins when its seq is above the file's
//! `log_seq` (it was written after the file was saved), else the file wins.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::JournalError;
use crate::logset;
use crate::reader::Checkpoint;
use crate::record;

/// Longest cursor accepted (journalctl's are about 130 bytes).
const MAX_CURSOR_LEN: usize = 512;

/// A journalctl cursor (`s=…;i=…;b=…;m=…;t=…;x=…`), validated so that only
/// strings journalctl itself prints are ever passed back to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalCursor {
    text: String,
    seqnum_id: String,
    seqnum: u64,
}

impl JournalCursor {
    /// Parses and validates a cursor: `;`-separated `key=hex` pairs with
    /// keys among `s i b m t x`, `s` and `i` required.
    pub fn parse(s: &str) -> Result<JournalCursor, JournalError> {
        let bad = || JournalError::BadCursor(s.chars().take(80).collect());
        if s.is_empty() || s.len() > MAX_CURSOR_LEN {
            return Err(bad());
        }
        let mut seqnum_id = None;
        let mut seqnum = None;
        for part in s.split(';') {
            let (k, v) = part.split_once('=').ok_or_else(bad)?;
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            match k {
                "s" => seqnum_id = Some(v.to_ascii_lowercase()),
                "i" => seqnum = Some(u64::from_str_radix(v, 16).map_err(|_| bad())?),
                "b" | "m" | "t" | "x" => {}
                _ => return Err(bad()),
            }
        }
        match (seqnum_id, seqnum) {
            (Some(seqnum_id), Some(seqnum)) => Ok(JournalCursor {
                text: s.to_string(),
                seqnum_id,
                seqnum,
            }),
            _ => Err(bad()),
        }
    }

    /// The cursor as journalctl printed it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The sequence-number id (`s=`) of the journal that wrote the entry.
    pub fn seqnum_id(&self) -> &str {
        &self.seqnum_id
    }

    /// The entry's sequence number (`i=`) within that journal sequence.
    pub fn seqnum(&self) -> u64 {
        self.seqnum
    }

    /// Whether `self` is later in the journal than `other`; `None` when the
    /// two come from different journal sequences and cannot be compared.
    pub fn is_after(&self, other: &JournalCursor) -> Option<bool> {
        (self.seqnum_id == other.seqnum_id).then_some(self.seqnum > other.seqnum)
    }
}

impl std::fmt::Display for JournalCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Where a follower resumes: after `cursor` (none: the configured first
/// start), with every own record up to log seq `log_seq` accounted for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Position {
    /// The last entry fully processed.
    pub cursor: Option<JournalCursor>,
    /// Highest audit-log seq this position accounts for.
    pub log_seq: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedPosition {
    cursor: Option<String>,
    log_seq: u64,
}

/// The cursor file of one follower in the state directory.
#[derive(Debug, Clone)]
pub struct CursorStore {
    path: PathBuf,
}

impl CursorStore {
    /// The store at `path` (its directory is created on the first save).
    pub fn new(path: PathBuf) -> CursorStore {
        CursorStore { path }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the saved position; `Ok(None)` when there is no file.
    pub fn load(&self) -> Result<Option<Position>, JournalError> {
        // Never through a link: a refused link is never read, so nothing of
        // its target can reach a diagnostic.
        let bytes = match self.checkpoint().load_bytes() {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(None),
            Err(e) => {
                return Err(JournalError::Io {
                    what: "cannot read cursor file",
                    path: self.path.clone(),
                    source: e.into(),
                })
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        let corrupt = |message: String| JournalError::CorruptState {
            path: self.path.clone(),
            message,
        };
        let saved: SavedPosition =
            serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        let cursor = match saved.cursor {
            Some(c) => Some(JournalCursor::parse(&c).map_err(|e| corrupt(e.to_string()))?),
            None => None,
        };
        Ok(Some(Position {
            cursor,
            log_seq: saved.log_seq,
        }))
    }

    /// Saves `pos` atomically and durably (exclusive temp file, fsync,
    /// rename, directory fsync), never through a link. Blocking; call from
    /// `spawn_blocking`.
    pub fn save(&self, pos: &Position) -> Result<(), JournalError> {
        let saved = SavedPosition {
            cursor: pos.cursor.as_ref().map(|c| c.as_str().to_string()),
            log_seq: pos.log_seq,
        };
        let mut body = serde_json::to_string(&saved).map_err(|e| JournalError::CorruptState {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        body.push('\n');
        self.checkpoint()
            .save_bytes(body.as_bytes())
            .map_err(|e| JournalError::Io {
                what: "cannot save",
                path: self.path.clone(),
                source: e.into(),
            })
    }

    fn checkpoint(&self) -> Checkpoint {
        Checkpoint::at(self.path.clone())
    }
}

/// The follower's most recent record found in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedCursor {
    /// Its `cursor=`.
    pub cursor: JournalCursor,
    /// Its `seq`.
    pub seq: u64,
}

/// What a scan of the audit log found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogScan {
    /// The follower's newest record with a valid `cursor=`.
    pub last: Option<LoggedCursor>,
    /// The highest seq in the log (its last line), when readable.
    pub max_seq: Option<u64>,
}

/// Finds the newest record of follower `jsrc` (field `jsrc="…"` plus a
/// `cursor=`) in the audit log, newest file first. Rotated files whose
/// records all have a seq at or below `after_seq` are not read: the saved
/// position already accounts for them. Blocking; call from `spawn_blocking`.
pub fn scan_log(log_dir: &Path, jsrc: &str, after_seq: u64) -> Result<LogScan, JournalError> {
    let io_err = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| JournalError::Io { what, path, source }
    };
    let files = logset::list(log_dir).map_err(io_err("cannot list log directory", log_dir))?;
    let mut scan = LogScan::default();
    if !files.is_empty() {
        scan.max_seq = Some(
            crate::reader::last_seq(log_dir).map_err(io_err("cannot read log file", log_dir))?,
        );
    }
    // Cheap pre-filters; a hit is confirmed by parsing the whole record, so
    // a message that merely contains the text cannot pose as a record.
    let text_marker = format!(" jsrc=\"{jsrc}\"");
    let json_marker = format!("\"jsrc\":\"{jsrc}\"");
    // First seq of each file: from the name, or the active file's first line.
    let firsts: Vec<Option<u64>> = files
        .iter()
        .map(|f| {
            f.first_seq.or_else(|| {
                let mut lines = logset::Lines::new(logset::open(f).ok()?);
                record::parse_line(&lines.next()?.ok()?).ok().map(|r| r.seq)
            })
        })
        .collect();
    for (i, f) in files.iter().enumerate().rev() {
        // A file's last seq is one below the next file's first.
        let upper = firsts
            .get(i + 1)
            .copied()
            .flatten()
            .map(|s| s.saturating_sub(1));
        if matches!(upper, Some(u) if u <= after_seq) {
            break;
        }
        let reader = match logset::open(f) {
            Ok(r) => r,
            // Rotation or retention may remove a file while we list.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("cannot open log file", &f.path)(e)),
        };
        let mut found = None;
        for line in logset::Lines::new(reader) {
            let line = line.map_err(io_err("cannot read log file", &f.path))?;
            if !(line.contains(&text_marker) || line.contains(&json_marker)) {
                continue;
            }
            let Ok(rec) = record::parse_line(&line) else {
                continue;
            };
            if rec.field("jsrc") != Some(jsrc) {
                continue;
            }
            if let Some(c) = rec
                .field("cursor")
                .and_then(|c| JournalCursor::parse(c).ok())
            {
                found = Some(LoggedCursor {
                    cursor: c,
                    seq: rec.seq,
                });
            }
        }
        if found.is_some() {
            scan.last = found;
            break;
        }
    }
    Ok(scan)
}

/// The position to resume from: the newer of the saved file and the log's
/// last own record (see the module comment for the rule).
pub fn resume_point(saved: Option<Position>, scan: &LogScan) -> Position {
    let saved_seq = saved.as_ref().map_or(0, |p| p.log_seq);
    let log_seq = [
        Some(saved_seq),
        scan.max_seq,
        scan.last.as_ref().map(|l| l.seq),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(0);
    let saved_cursor = saved.and_then(|p| p.cursor);
    let cursor = match (saved_cursor, &scan.last) {
        (None, None) => None,
        (Some(c), None) => Some(c),
        (None, Some(l)) => Some(l.cursor.clone()),
        (Some(c), Some(l)) => {
            let log_newer = match l.cursor.is_after(&c) {
                Some(after) => after,
                None => l.seq > saved_seq,
            };
            Some(if log_newer { l.cursor.clone() } else { c })
        }
    };
    Position { cursor, log_seq }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{seal, text_body, Chain, Entry, Format, Stamp, GENESIS};
    use std::fs;

    const C1: &str = "s=c00a2fbb5b04453f8290630f5846f5e1;i=1e;b=9e3ca539835a4b8c8b51aed929d383fd;m=1e;t=60a24181e401e;x=4d74fabd22726062";
    const C2: &str = "s=c00a2fbb5b04453f8290630f5846f5e1;i=1f;b=9e3ca539835a4b8c8b51aed929d383fd;m=1f;t=60a24181e401f;x=4d74fabd22726063";
    const D1: &str = "s=d00a2fbb5b04453f8290630f5846f5e1;i=2;b=9e3ca539835a4b8c8b51aed929d383fd;m=1f;t=60a24181e401f;x=4d74fabd22726063";

    fn c(s: &str) -> JournalCursor {
        JournalCursor::parse(s).unwrap()
    }

    #[test]
    fn cursor_parse_and_compare() {
        assert_eq!(c(C1).seqnum(), 0x1e);
        assert_eq!(c(C2).is_after(&c(C1)), Some(true));
        assert_eq!(c(C1).is_after(&c(C2)), Some(false));
        assert_eq!(c(D1).is_after(&c(C1)), None);
        for bad in [
            "",
            "garbage",
            "s=zz;i=1",
            "i=1",
            "s=ab",
            "s=ab;i=1;q=2",
            "s=ab;i=1;b=x y",
            "--all",
        ] {
            assert!(JournalCursor::parse(bad).is_err(), "{bad}");
        }
        assert!(JournalCursor::parse(&format!("s=ab;i=1;x={}", "a".repeat(600))).is_err());
    }

    #[test]
    fn store_roundtrip_and_corruption() {
        let d = tempfile::tempdir().unwrap();
        let store = CursorStore::new(d.path().join("state/j.cursor"));
        assert_eq!(store.load().unwrap(), None);
        let p = Position {
            cursor: Some(c(C1)),
            log_seq: 7,
        };
        store.save(&p).unwrap();
        assert_eq!(store.load().unwrap(), Some(p));
        assert!(!d.path().join("state/j.cursor.tmp").exists());
        fs::write(store.path(), "{\"cursor\":\"nope\",\"log_seq\":1}").unwrap();
        assert!(matches!(
            store.load(),
            Err(JournalError::CorruptState { .. })
        ));
        fs::write(store.path(), "\u{0}garbage").unwrap();
        assert!(matches!(
            store.load(),
            Err(JournalError::CorruptState { .. })
        ));
    }

    fn line(seq: u64, fields: &[(&str, &str)], msg: Option<&str>) -> String {
        let mut e = Entry::appliance(60201);
        for (k, v) in fields {
            e = e.field(k, *v);
        }
        if let Some(m) = msg {
            e = e.with_message(m);
        }
        let st = Stamp {
            ts: chrono::Utc::now(),
            host: "h",
            seq,
        };
        let mut body = String::new();
        text_body(&e, &st, &mut body);
        seal(Format::Text, &body, &Chain::sha256().next(GENESIS, &body))
    }

    #[test]
    fn scan_finds_newest_own_record_and_ignores_forgeries() {
        let d = tempfile::tempdir().unwrap();
        let rotated = d.path().join(logset::rotated_name(chrono::Utc::now(), 1));
        fs::write(
            &rotated,
            format!(
                "{}\n{}\n",
                line(1, &[("cursor", C1), ("jsrc", "engine")], None),
                line(2, &[], None)
            ),
        )
        .unwrap();
        let forged = format!("x jsrc=\"engine\" cursor=\"{D1}\"");
        fs::write(
            d.path().join("audit.log"),
            format!(
                "{}\n{}\n{}\n{}\ntorn",
                line(3, &[("cursor", C2), ("jsrc", "auth")], None),
                line(4, &[], Some(&forged)),
                line(5, &[("cursor", "bad"), ("jsrc", "engine")], None),
                line(6, &[], None),
            ),
        )
        .unwrap();
        let s = scan_log(d.path(), "engine", 0).unwrap();
        assert_eq!(s.max_seq, Some(6));
        assert_eq!(
            s.last,
            Some(LoggedCursor {
                cursor: c(C1),
                seq: 1
            })
        );
        // The rotated file's records (seq 1..=2) are accounted for: not read.
        let s = scan_log(d.path(), "engine", 2).unwrap();
        assert_eq!(s.last, None);
        let s = scan_log(d.path(), "auth", 2).unwrap();
        assert_eq!(s.last.map(|l| l.seq), Some(3));
        assert_eq!(
            scan_log(&d.path().join("none"), "engine", 0).unwrap(),
            LogScan::default()
        );
    }

    #[test]
    fn resume_takes_the_newer() {
        let logged = |cur: &str, seq| LogScan {
            last: Some(LoggedCursor {
                cursor: c(cur),
                seq,
            }),
            max_seq: Some(100),
        };
        let saved = |cur: &str, log_seq| {
            Some(Position {
                cursor: Some(c(cur)),
                log_seq,
            })
        };
        // Same journal sequence: by i=.
        assert_eq!(
            resume_point(saved(C1, 10), &logged(C2, 5)).cursor,
            Some(c(C2))
        );
        assert_eq!(
            resume_point(saved(C2, 10), &logged(C1, 50)).cursor,
            Some(c(C2))
        );
        // Different sequences: the log's record if written after the save.
        assert_eq!(
            resume_point(saved(C1, 10), &logged(D1, 11)).cursor,
            Some(c(D1))
        );
        assert_eq!(
            resume_point(saved(C1, 10), &logged(D1, 10)).cursor,
            Some(c(C1))
        );
        assert_eq!(resume_point(None, &logged(D1, 3)).cursor, Some(c(D1)));
        assert_eq!(
            resume_point(saved(C1, 10), &LogScan::default()).cursor,
            Some(c(C1))
        );
        assert_eq!(resume_point(None, &LogScan::default()), Position::default());
        assert_eq!(resume_point(saved(C1, 10), &logged(C2, 5)).log_seq, 100);
    }
}

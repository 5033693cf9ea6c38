//! The set of audit log files in `log_dir`: the active `audit.log` and the
//! rotated `audit-<UTC start>-<first seq>.log[.zst|.gz]`, in seq order.
//!
//! Readers (verify, query, tail, the API, the syslog forwarder, the journal
//! follower's recovery) all list and open files here, so the naming rule
//! and decompression live in one place.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};

/// Name of the active file.
pub const ACTIVE: &str = "audit.log";

/// How a file is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain text.
    Plain,
    /// zstd (`.zst`).
    Zstd,
    /// gzip (`.gz`).
    Gzip,
}

/// One file of the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    /// Full path.
    pub path: PathBuf,
    /// First seq, from the name (`None` for the active file).
    pub first_seq: Option<u64>,
    /// UTC start, from the name (`None` for the active file).
    pub start: Option<DateTime<Utc>>,
    /// How it is stored.
    pub compression: Compression,
    /// Whether this is `audit.log`.
    pub active: bool,
}

/// Formats the rotated name for a file that started at `start` with `first_seq`.
pub fn rotated_name(start: DateTime<Utc>, first_seq: u64) -> String {
    format!(
        "audit-{}-{first_seq}.log",
        start.format("%Y%m%dT%H%M%S%.6fZ")
    )
}

/// Parses a rotated file name (with or without compression suffix).
pub fn parse_rotated_name(name: &str) -> Option<(DateTime<Utc>, u64, Compression)> {
    let (stem, comp) = if let Some(s) = name.strip_suffix(".log.zst") {
        (s, Compression::Zstd)
    } else if let Some(s) = name.strip_suffix(".log.gz") {
        (s, Compression::Gzip)
    } else if let Some(s) = name.strip_suffix(".log") {
        (s, Compression::Plain)
    } else {
        return None;
    };
    let rest = stem.strip_prefix("audit-")?;
    let (ts, seq) = rest.rsplit_once('-')?;
    let seq = seq.parse().ok()?;
    let ts = NaiveDateTime::parse_from_str(ts, "%Y%m%dT%H%M%S%.fZ")
        .ok()?
        .and_utc();
    Some((ts, seq, comp))
}

/// Lists the set: rotated files by first seq (a plain and a compressed copy
/// of the same file — left by a crash mid-compression — count once, the
/// plain one), then the active file if present.
pub fn list(dir: &Path) -> io::Result<Vec<LogFile>> {
    let mut rotated: Vec<LogFile> = Vec::new();
    let mut active = None;
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    for ent in rd {
        let ent = ent?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == ACTIVE {
            active = Some(LogFile {
                path: ent.path(),
                first_seq: None,
                start: None,
                compression: Compression::Plain,
                active: true,
            });
        } else if let Some((start, seq, compression)) = parse_rotated_name(name) {
            rotated.push(LogFile {
                path: ent.path(),
                first_seq: Some(seq),
                start: Some(start),
                compression,
                active: false,
            });
        }
    }
    rotated.sort_by_key(|f| (f.first_seq, f.compression != Compression::Plain));
    rotated.dedup_by_key(|f| f.first_seq);
    rotated.extend(active);
    Ok(rotated)
}

/// Free bytes for an unprivileged writer on the filesystem holding `dir`
/// (retention and the low-space warning both ask).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(s.blocks_available() as u64 * s.fragment_size() as u64)
}

/// Opens a file of the set for reading lines, decompressing as needed.
pub fn open(f: &LogFile) -> io::Result<Box<dyn BufRead + Send>> {
    reader(File::open(&f.path)?, f.compression, 64 << 10)
}

/// Opens a file of the set by fd without following a symlink, so a reader
/// can hold it through a later rename (rotation) or removal (compression,
/// retention), and a link planted in the log directory is not followed.
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Wraps the bytes of a file of the set (an open fd, possibly counted) in a
/// buffered, decompressing reader with a `capacity`-byte buffer.
pub fn reader<'a, R: Read + Send + 'a>(
    raw: R,
    compression: Compression,
    capacity: usize,
) -> io::Result<Box<dyn BufRead + Send + 'a>> {
    Ok(match compression {
        Compression::Plain => Box::new(BufReader::with_capacity(capacity, raw)),
        Compression::Zstd => Box::new(BufReader::with_capacity(
            capacity,
            zstd::stream::read::Decoder::new(raw)?,
        )),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            capacity,
            flate2::read::MultiGzDecoder::new(raw),
        )),
    })
}

/// Reads complete lines (without `\n`) from a reader; a final line without
/// newline (a torn tail, or one being written) is not returned. Lines that
/// are not UTF-8 are returned lossily so a reader can report them.
pub struct Lines<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: BufRead> Lines<R> {
    /// Wraps a reader.
    pub fn new(inner: R) -> Self {
        Lines {
            inner,
            buf: Vec::with_capacity(512),
        }
    }
}

impl<R: BufRead> Iterator for Lines<R> {
    type Item = io::Result<String>;
    fn next(&mut self) -> Option<Self::Item> {
        self.buf.clear();
        match self.inner.read_until(b'\n', &mut self.buf) {
            Ok(0) => None,
            Ok(_) => {
                if self.buf.last() != Some(&b'\n') {
                    return None;
                }
                self.buf.pop();
                Some(Ok(String::from_utf8_lossy(&self.buf).into_owned()))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

/// Reads the last complete line of a file of the set (decompressing whole
/// compressed files; plain files are read backwards from the end).
pub fn last_line(f: &LogFile) -> io::Result<Option<String>> {
    if f.compression == Compression::Plain {
        return last_line_plain(&f.path);
    }
    let mut last = None;
    for l in Lines::new(open(f)?) {
        last = Some(l?);
    }
    Ok(last)
}

fn last_line_plain(path: &Path) -> io::Result<Option<String>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let end = end_of_last_line(&mut file, len)?;
    Ok(last_lines_before(&mut file, end, 1, &|_: &str| true)?.pop())
}

/// Block size for reading backwards.
const BACK_BLOCK: u64 = 64 * 1024;

/// Reading backwards (tail, sinks finding what they hold, the last seq):
/// the offset just after the last newline at or before `len` (0 if none):
/// a torn last line is not a line yet.
pub fn end_of_last_line(file: &mut File, len: u64) -> io::Result<u64> {
    let mut end = len;
    let mut buf = Vec::new();
    while end > 0 {
        let start = end.saturating_sub(BACK_BLOCK);
        buf.resize((end - start) as usize, 0);
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf)?;
        if let Some(p) = buf.iter().rposition(|b| *b == b'\n') {
            return Ok(start + p as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// The last `want` lines before offset `end` (which ends a line) that pass
/// `keep`, in file order, reading backwards block by block.
pub fn last_lines_before(
    file: &mut File,
    end: u64,
    want: usize,
    keep: &dyn Fn(&str) -> bool,
) -> io::Result<Vec<String>> {
    let mut found: Vec<String> = Vec::new();
    // Bytes of the line being assembled, which starts before `pos`.
    let mut carry: Vec<u8> = Vec::new();
    let mut pos = end;
    let mut buf = Vec::new();
    while pos > 0 && found.len() < want {
        let start = pos.saturating_sub(BACK_BLOCK);
        buf.resize((pos - start) as usize, 0);
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf)?;
        buf.extend_from_slice(&carry);
        // Every newline in `buf` except the last byte's ends a line whose
        // start we know once we see the newline before it.
        let mut line_end = buf.len();
        if buf.last() == Some(&b'\n') {
            line_end -= 1;
        }
        while let Some(p) = buf[..line_end].iter().rposition(|b| *b == b'\n') {
            let line = String::from_utf8_lossy(&buf[p + 1..line_end]);
            if keep(&line) {
                found.push(line.into_owned());
                if found.len() == want {
                    break;
                }
            }
            line_end = p;
        }
        carry = buf[..line_end].to_vec();
        if line_end < buf.len() && buf.get(line_end) == Some(&b'\n') {
            carry.push(b'\n');
        }
        pos = start;
    }
    if pos == 0 && found.len() < want && !carry.is_empty() {
        let text = carry.strip_suffix(b"\n").unwrap_or(&carry);
        let line = String::from_utf8_lossy(text);
        if keep(&line) {
            found.push(line.into_owned());
        }
    }
    found.reverse();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip_and_sort() {
        let t = DateTime::parse_from_rfc3339("2026-11-25T15:08:39.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let n = rotated_name(t, 42);
        assert_eq!(n, "audit-20261125T150839.123456Z-42.log");
        assert_eq!(parse_rotated_name(&n), Some((t, 42, Compression::Plain)));
        assert_eq!(
            parse_rotated_name(&format!("{n}.zst")),
            Some((t, 42, Compression::Zstd))
        );
        assert_eq!(parse_rotated_name("audit.log"), None);
    }

    #[test]
    fn last_line_skips_torn_tail() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.log");
        std::fs::write(&p, "a\nb\ntorn").unwrap();
        let f = LogFile {
            path: p,
            first_seq: None,
            start: None,
            compression: Compression::Plain,
            active: true,
        };
        assert_eq!(last_line(&f).unwrap().as_deref(), Some("b"));
    }

    #[test]
    fn backwards_reading_matches_forward_reading_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        // Lines of varied length so block borders fall everywhere, one empty
        // line, and a torn tail that is not a line yet.
        let mut text = String::new();
        let mut all = Vec::new();
        for i in 0..5000 {
            let l = if i == 17 {
                String::new()
            } else {
                format!("line {i} {}", "x".repeat(i % 97))
            };
            text.push_str(&l);
            text.push('\n');
            all.push(l);
        }
        text.push_str("torn");
        std::fs::write(&path, &text).unwrap();
        let mut f = File::open(&path).unwrap();
        let len = f.metadata().unwrap().len();
        let end = end_of_last_line(&mut f, len).unwrap();
        assert_eq!(end, len - 4);
        for want in [1, 3, 1000, 4999, 5000, 6000] {
            let got = last_lines_before(&mut f, end, want, &|_: &str| true).unwrap();
            assert_eq!(got, all[all.len().saturating_sub(want)..], "want {want}");
        }
        let odd = |l: &str| l.ends_with('x') && l.len() % 2 == 1;
        let want: Vec<String> = all.iter().filter(|l| odd(l)).cloned().collect();
        let got = last_lines_before(&mut f, end, 50, &odd).unwrap();
        assert_eq!(got, want[want.len() - 50..]);
    }
}

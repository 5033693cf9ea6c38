//! Finding a time in a plain log file by binary search on byte offsets:
//! each probe resynchronises to the next line start and reads only the
//! timestamp token.

use super::*;

/// A bound of the window, with its canonical text form for the fast
/// comparison of the writer's fixed-width timestamps.
#[derive(Debug, Clone)]
pub(super) struct Bound {
    pub(super) t: DateTime<Utc>,
    pub(super) text: String,
}

impl Bound {
    pub(super) fn new(t: DateTime<Utc>) -> Bound {
        Bound {
            t,
            text: record::format_ts(t),
        }
    }

    /// Whether the line's timestamp is at or after the bound; `None` when
    /// the line has no readable timestamp.
    pub(super) fn reached_by(&self, line: &[u8]) -> Option<bool> {
        let token = ts_token(line)?;
        if token.len() == 27 && self.text.len() == 27 && canonical_ts(token) {
            return Some(token >= self.text.as_bytes());
        }
        let s = std::str::from_utf8(token).ok()?;
        let t = DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc);
        Some(t >= self.t)
    }
}

/// The timestamp token at the start of a text or JSON line.
pub(super) fn ts_token(line: &[u8]) -> Option<&[u8]> {
    let head = &line[..line.len().min(96)];
    if let Some(rest) = head.strip_prefix(b"{\"ts\":\"") {
        let end = rest.iter().position(|b| *b == b'"')?;
        Some(&rest[..end])
    } else {
        let end = head.iter().position(|b| *b == b' ')?;
        Some(&head[..end])
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, the writer's format, which sorts as text.
pub(super) fn canonical_ts(t: &[u8]) -> bool {
    t.iter().enumerate().all(|(i, b)| match i {
        4 | 7 => *b == b'-',
        10 => *b == b'T',
        13 | 16 => *b == b':',
        19 => *b == b'.',
        26 => *b == b'Z',
        _ => b.is_ascii_digit(),
    })
}

/// The timestamp of a raw line, as [`record::line_timestamp`] reads it.
pub fn raw_line_timestamp(line: &[u8]) -> Option<DateTime<Utc>> {
    let token = ts_token(line)?;
    let s = std::str::from_utf8(token).ok()?;
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Offset of the first line in `[lo, hi)` (both line starts, `hi` a line
/// boundary) whose timestamp is at or after `bound`; `hi` when none.
/// Binary search on byte offsets, then a short linear read.
pub(super) fn seek(file: &File, lo: u64, hi: u64, bound: &Bound) -> io::Result<u64> {
    let range_end = hi;
    // Invariants: every line starting before `lo` is before the bound (or
    // unreadable); the answer is at or before `hi`, or past a run of
    // unreadable lines at `hi` (the linear read below walks over those).
    let (mut lo, mut hi) = (lo, hi);
    let mut probe = vec![0u8; 4096];
    while hi - lo > BISECT_STOP {
        let mid = lo + (hi - lo) / 2;
        let Some(p) = next_line_start(file, mid, hi)? else {
            break;
        };
        if p >= hi {
            break;
        }
        let n = ((range_end - p) as usize).min(probe.len());
        file.read_exact_at(&mut probe[..n], p)?;
        match bound.reached_by(&probe[..n]) {
            Some(false) => lo = p + 1,
            _ => hi = p,
        }
    }
    // Linear: from the first line start at or after `lo`.
    let Some(start) = next_line_start(file, lo, range_end)? else {
        return Ok(range_end);
    };
    let reader = At {
        file,
        pos: start,
        end: range_end,
        counter: Arc::new(AtomicU64::new(0)),
    };
    let mut chunks = Chunks::new(reader);
    while let Some((at, chunk)) = chunks.next_chunk()? {
        let mut offset = start + at;
        for line in chunk.split_inclusive(|b| *b == b'\n') {
            if bound.reached_by(line) == Some(true) {
                return Ok(offset);
            }
            offset += line.len() as u64;
        }
    }
    Ok(range_end)
}

/// First line start at or after `at`, before `limit`; `None` when there is
/// none (the rest is one line).
pub(super) fn next_line_start(file: &File, at: u64, limit: u64) -> io::Result<Option<u64>> {
    if at == 0 {
        return Ok(Some(0));
    }
    let mut pos = at - 1;
    let mut buf = [0u8; 4096];
    while pos < limit {
        let n = ((limit - pos) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], pos)?;
        if let Some(i) = buf[..n].iter().position(|b| *b == b'\n') {
            return Ok(Some(pos + i as u64 + 1));
        }
        pos += n as u64;
    }
    Ok(None)
}

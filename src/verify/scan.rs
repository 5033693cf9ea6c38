//! Reading one file for verification in one pass: lines split out of the
//! decompressed stream, each taken apart only as far as the checks need
//! (timestamp, trailer `seq` and `h`, chain input), and checked against the
//! line before it.

use super::*;

/// Counts bytes read from disk for the progress display.
pub(super) struct Counting<'a> {
    inner: File,
    progress: &'a dyn Progress,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// Reads one file in one pass: every line from the second on is checked
/// against the one before it.
pub(super) fn scan_file(
    f: &Opened,
    chain: &Chain,
    progress: &dyn Progress,
    abort: impl Fn() -> bool,
) -> Result<Summary, Fault> {
    let file = f.file.try_clone().map_err(Fault::Io)?;
    let counting = Counting {
        inner: file,
        progress,
    };
    let mut reader = logset::reader(counting, f.info.compression, 256 << 10).map_err(Fault::Io)?;
    let mut scan = Scan {
        chain,
        sum: Summary::default(),
        line_no: 0,
    };
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let buf = reader.fill_buf().map_err(Fault::Io)?;
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        let mut rest = buf;
        if !carry.is_empty() {
            match memchr::memchr(b'\n', rest) {
                Some(i) => {
                    carry.extend_from_slice(&rest[..i]);
                    scan.line(&carry)?;
                    carry.clear();
                    rest = &rest[i + 1..];
                }
                None => {
                    carry.extend_from_slice(rest);
                    rest = &[];
                }
            }
        }
        while let Some(i) = memchr::memchr(b'\n', rest) {
            scan.line(&rest[..i])?;
            rest = &rest[i + 1..];
        }
        carry.extend_from_slice(rest);
        reader.consume(n);
        if abort() {
            return Err(Fault::Aborted);
        }
    }
    if !carry.is_empty() {
        if !f.info.active {
            return Err(Fault::Line(scan.line_no + 1, Defect::PartialLine));
        }
        scan.sum.tail = carry.len() as u64;
    }
    Ok(scan.sum)
}

pub(super) struct Scan<'c> {
    chain: &'c Chain,
    sum: Summary,
    line_no: u64,
}

/// The parts of a line the checks rest on.
pub(super) struct Light<'l> {
    pub(super) ts: Stamp,
    pub(super) seq: u64,
    pub(super) h: [u8; 32],
    pub(super) body: Cow<'l, str>,
    /// `previous_h=` of a rotation record.
    pub(super) previous_h: Option<String>,
    /// The full record, when the seal check needs it.
    pub(super) mark: Option<ParsedRecord>,
}

impl Scan<'_> {
    fn line(&mut self, raw: &[u8]) -> Result<(), Fault> {
        self.line_no += 1;
        let at = self.line_no;
        self.sum.bytes += raw.len() as u64 + 1;
        let l = light(raw).map_err(|d| Fault::Line(at, d))?;
        let gap = l.mark.as_ref().and_then(missing_range);
        let link = Link {
            seq: l.seq,
            ts: l.ts,
            h: l.h,
            gap,
        };
        if let Some(rec) = l.mark {
            self.sum.marks.push(Mark {
                rec,
                prev_h: self.sum.last.as_ref().map(|p| p.h),
            });
        }
        match &self.sum.last {
            None => {
                self.sum.first = Some(First {
                    link: link.clone(),
                    body: l.body.into_owned(),
                    previous_h: l.previous_h,
                });
            }
            Some(prev) => {
                follows(prev, &link).map_err(|d| Fault::Line(at, d))?;
                check_h(self.chain, hex_str(&prev.h), &l.body, &link)
                    .map_err(|d| Fault::Line(at, d))?;
                if let Some(named) = l.previous_h {
                    if named.as_bytes() != prev.h {
                        return Err(Fault::Line(
                            at,
                            Defect::RotationMismatch {
                                named,
                                actual: hex_str(&prev.h).to_string(),
                            },
                        ));
                    }
                }
            }
        }
        self.sum.last = Some(link);
        self.sum.records += 1;
        Ok(())
    }
}

pub(super) fn malformed(s: &str) -> Defect {
    Defect::Malformed(s.to_string())
}

pub(super) fn h_of(s: &str) -> Result<[u8; 32], Defect> {
    let b = s.as_bytes();
    if b.len() != 32 || !b.iter().all(u8::is_ascii_hexdigit) {
        return Err(malformed("bad h"));
    }
    let mut h = [0u8; 32];
    h.copy_from_slice(b);
    Ok(h)
}

/// Substring searchers built once (building one costs more than a search).
pub(super) struct Finders {
    trailer: memchr::memmem::Finder<'static>,
    value: memchr::memmem::Finder<'static>,
    rotation: memchr::memmem::Finder<'static>,
}

pub(super) fn finders() -> &'static Finders {
    static F: std::sync::OnceLock<Finders> = std::sync::OnceLock::new();
    F.get_or_init(|| Finders {
        trailer: memchr::memmem::Finder::new(b" | seq="),
        value: memchr::memmem::Finder::new(b"=\""),
        rotation: memchr::memmem::Finder::new(b"|6090"),
    })
}

/// Takes a line apart as far as verification needs.
pub(super) fn light(raw: &[u8]) -> Result<Light<'_>, Defect> {
    let line = std::str::from_utf8(raw).map_err(|_| malformed("not UTF-8"))?;
    if line.starts_with('{') {
        return full(line);
    }
    let (ts, _) = line
        .split_once(' ')
        .ok_or_else(|| malformed("no timestamp"))?;
    let ts = Stamp::of(ts)?;
    let seq = trailer_seq(line).ok_or_else(|| malformed("no trailer"))?;
    // The trailer ends with ` h=` and 32 hex digits (checked by trailer_seq).
    let split = line.len() - 35;
    let mut h = [0u8; 32];
    h.copy_from_slice(&raw[split + 3..]);
    let body = &line[..split];
    let (previous_h, mark) = if finders().rotation.find(raw).is_some() {
        // Possibly one of the daemon's own 6090x records (rotation, seal,
        // start, missing records): parse it in full to be sure.
        let rec = record::parse_line(line).map_err(|e| malformed(&e.to_string()))?;
        let previous_h = if rec.code == appliance::ROTATED {
            rec.field("previous_h").map(str::to_string)
        } else {
            None
        };
        (previous_h, is_mark(&rec).then_some(rec))
    } else {
        (None, None)
    };
    Ok(Light {
        ts,
        seq,
        h,
        body: Cow::Borrowed(body),
        previous_h,
        mark,
    })
}

/// JSON lines go through the full parser; their chain input is the line
/// without the `,"h":"…"` member, so not a slice of it.
pub(super) fn full(line: &str) -> Result<Light<'_>, Defect> {
    let rec = record::parse_line(line).map_err(|e| malformed(&e.to_string()))?;
    let h = h_of(&rec.h)?;
    let previous_h = if rec.code == appliance::ROTATED {
        rec.field("previous_h").map(str::to_string)
    } else {
        None
    };
    let body = rec.body.clone();
    Ok(Light {
        ts: Stamp::Parsed(rec.ts),
        seq: rec.seq,
        h,
        previous_h,
        mark: is_mark(&rec).then_some(rec),
        body: Cow::Owned(body),
    })
}

/// Finds the trailer the way `record::parse_text` does, without
/// allocating: the first ` | seq=` after which `seq=N pid=N uid=N gid=N`,
/// `key="value"` pairs and ` h=HEX` run exactly to the end. Returns seq.
pub(super) fn trailer_seq(line: &str) -> Option<u64> {
    let b = line.as_bytes();
    let mut from = 0;
    while let Some(p) = finders().trailer.find(&b[from..]) {
        let start = from + p + 3;
        if let Some(seq) = trailer_at(&b[start..]) {
            return Some(seq);
        }
        from = from + p + 1;
    }
    None
}

pub(super) fn trailer_at(mut s: &[u8]) -> Option<u64> {
    fn num<'a>(s: &'a [u8], key: &[u8]) -> Option<(u64, &'a [u8])> {
        let s = s.strip_prefix(key)?.strip_prefix(b"=")?;
        let end = s.iter().position(|&c| c == b' ').unwrap_or(s.len());
        let digits = &s[..end];
        if digits.is_empty() || digits.len() > 19 {
            return None;
        }
        let mut v = 0u64;
        for &c in digits {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u64::from(c - b'0');
        }
        Some((v, s[end..].strip_prefix(b" ").unwrap_or(&s[end..])))
    }
    let (seq, r) = num(s, b"seq")?;
    let (_, r) = num(r, b"pid")?;
    let (_, r) = num(r, b"uid")?;
    let (_, r) = num(r, b"gid")?;
    s = r;
    loop {
        if let Some(h) = s.strip_prefix(b"h=") {
            return (h.len() == 32 && h.iter().all(u8::is_ascii_hexdigit)).then_some(seq);
        }
        let eq = finders().value.find(s)?;
        let key = &s[..eq];
        if key.is_empty()
            || !key
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
        {
            return None;
        }
        let body = &s[eq + 2..];
        let mut i = 0;
        let close = loop {
            match body.get(i)? {
                b'\\' => i += 2,
                b'"' => break i,
                _ => i += 1,
            }
        };
        s = body[close + 1..].strip_prefix(b" ")?;
    }
}

//! `nxaudit tail [-f]`: prints the last lines of the log and, with `-f`,
//! follows it across rotations without losing or repeating a line.
//!
//! `-n N` reads the active file backwards from its end, block by block, so
//! a large file is not read whole; only when it holds fewer than N
//! (matching) lines does it go on to the rotated files, newest first
//! (compressed ones are streamed, keeping only the last lines needed).
//!
//! Following keeps the open file handle: when `audit.log` is renamed by a
//! rotation, the handle still reads the old file to its end (even if the
//! compressor has unlinked it), and only then is the new `audit.log` opened
//! from its start. A partial last line is held back until its newline.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use anyhow::Context as _;

use super::Context;
use crate::catalog::Component;
use crate::record;

/// Arguments of `nxaudit tail`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Keep printing new records as they are written.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// How many of the last lines to print first.
    #[arg(short = 'n', long, default_value_t = 10)]
    pub lines: usize,
    /// Only records with this code (repeatable).
    #[arg(long)]
    pub code: Vec<u32>,
    /// Only records of this component.
    #[arg(long)]
    pub component: Option<String>,
}

struct Filter {
    codes: Vec<u32>,
    component: Option<Component>,
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.codes.is_empty() && self.component.is_none()
    }

    /// Whether a line passes; `rec` is the line parsed (None if it is not a
    /// record, which only an empty filter lets through).
    fn keep(&self, rec: Option<&record::ParsedRecord>) -> bool {
        if self.is_empty() {
            return true;
        }
        rec.is_some_and(|r| {
            (self.codes.is_empty() || self.codes.contains(&r.code))
                && self.component.map_or(true, |c| r.component() == Some(c))
        })
    }
}

/// Runs the subcommand; returns the exit code.
pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<i32> {
    let component = match &args.component {
        Some(c) => Some(Component::parse(c).with_context(|| {
            format!("unknown component {c:?} (Engine, Portal, WebConsole, Appliance)")
        })?),
        None => None,
    };
    let filter = Filter {
        codes: args.code.clone(),
        component,
    };
    let path = ctx.config.active_log();
    let mut file = File::open(&path).with_context(|| format!("open {}", path.display()))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // Initial part: the last N matching lines, from the end of the active
    // file backwards, then from rotated files if it holds too few.
    let len = file.metadata()?.len();
    let complete = end_of_last_line(&mut file, len)?;
    let keep = |l: &str| filter.is_empty() || filter.keep(record::parse_line(l).ok().as_ref());
    let mut lines = last_lines_plain(&mut file, complete, args.lines, &keep)?;
    if lines.len() < args.lines {
        let rotated = crate::logset::list(&ctx.config.log_dir)?;
        for f in rotated.iter().rev().filter(|f| !f.active) {
            let need = args.lines - lines.len();
            let mut older = match last_lines_of(f, need, &keep) {
                Ok(l) => l,
                // Compressed and removed by retention meanwhile: nothing older.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("read {}", f.path.display())),
            };
            older.append(&mut lines);
            lines = older;
            if lines.len() >= args.lines {
                break;
            }
        }
    }
    for l in &lines {
        writeln!(out, "{l}")?;
    }
    out.flush()?;
    if !args.follow {
        return Ok(0);
    }
    let last_seq = last_lines_plain(&mut file, complete, 1, &|_: &str| true)?
        .first()
        .and_then(|l| record::parse_line(l).ok())
        .map_or(0, |r| r.seq);
    file.seek(SeekFrom::Start(complete))?;
    let mut pending = Vec::new();
    (&mut file).take(len - complete).read_to_end(&mut pending)?;
    file.seek(SeekFrom::Start(len))?;
    let mut printer = Printer {
        filter,
        last_seq,
        pending,
    };
    let mut ino = file.metadata()?.ino();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n > 0 {
            printer.feed(&buf[..n], &mut out)?;
            continue;
        }
        // At the end of our file: has audit.log been rotated away? Once a
        // new file exists no more writes go to the old one: read the old
        // one to its end, open the new one, then print the rotated files
        // we may have skipped (several rotations can happen between two
        // polls), and go on with the new one. Lines are printed by seq, so
        // nothing is repeated.
        if let Ok(m) = std::fs::metadata(&path) {
            if m.ino() != ino {
                if let Ok(next) = File::open(&path) {
                    loop {
                        let n = file.read(&mut buf)?;
                        if n == 0 {
                            break;
                        }
                        printer.feed(&buf[..n], &mut out)?;
                    }
                    printer.pending.clear();
                    print_rotated_since(&ctx.config.log_dir, &mut printer, &mut out)?;
                    out.flush()?;
                    ino = next.metadata()?.ino();
                    file = next;
                    continue;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Prints the rotated files that hold records after the printer's last
/// seq, oldest first. A plain file listed a moment ago may be gone when it
/// is opened: the compressor has just replaced it by its `.zst`/`.gz`.
/// That is no reason to skip its records (skipping them lost lines when
/// the machine was busy and the compressor won the race): list again and
/// read the compressed copy.
fn print_rotated_since(
    dir: &std::path::Path,
    printer: &mut Printer,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut attempts = 0;
    'list: loop {
        for f in crate::logset::list(dir)? {
            if f.active || f.first_seq.is_some_and(|s| s <= printer.last_seq) {
                continue;
            }
            let reader = match crate::logset::open(&f) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    attempts += 1;
                    if attempts < 100 {
                        continue 'list;
                    }
                    // Still gone: removed by retention, not compressed.
                    eprintln!(
                        "nxaudit tail: {} vanished before it could be read",
                        f.path.display()
                    );
                    continue;
                }
                Err(e) => return Err(e).with_context(|| format!("open {}", f.path.display())),
            };
            for line in crate::logset::Lines::new(reader) {
                printer.line(&line?, out)?;
            }
        }
        return Ok(());
    }
}

/// Block size for reading backwards.
const BACK_BLOCK: u64 = 64 * 1024;

/// The offset just after the last newline at or before `len` (0 if none):
/// a torn last line is not a line yet.
fn end_of_last_line(file: &mut File, len: u64) -> std::io::Result<u64> {
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
fn last_lines_plain(
    file: &mut File,
    end: u64,
    want: usize,
    keep: &dyn Fn(&str) -> bool,
) -> std::io::Result<Vec<String>> {
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

/// The last `want` lines of a rotated file that pass `keep`: backwards for
/// a plain file, streamed (keeping `want` lines) for a compressed one.
fn last_lines_of(
    f: &crate::logset::LogFile,
    want: usize,
    keep: &dyn Fn(&str) -> bool,
) -> std::io::Result<Vec<String>> {
    if f.compression == crate::logset::Compression::Plain {
        let mut file = File::open(&f.path)?;
        let len = file.metadata()?.len();
        let end = end_of_last_line(&mut file, len)?;
        return last_lines_plain(&mut file, end, want, keep);
    }
    let mut ring = std::collections::VecDeque::with_capacity(want.min(4096));
    for line in crate::logset::Lines::new(crate::logset::open(f)?) {
        let line = line?;
        if keep(&line) {
            if ring.len() == want {
                ring.pop_front();
            }
            ring.push_back(line);
        }
    }
    Ok(ring.into())
}

/// Prints complete lines that pass the filter, each seq at most once.
struct Printer {
    filter: Filter,
    last_seq: u64,
    pending: Vec<u8>,
}

impl Printer {
    fn feed(&mut self, bytes: &[u8], out: &mut impl Write) -> std::io::Result<()> {
        self.pending.extend_from_slice(bytes);
        while let Some(p) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=p).collect();
            let s = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            self.line(&s, out)?;
        }
        out.flush()
    }

    fn line(&mut self, s: &str, out: &mut impl Write) -> std::io::Result<()> {
        let rec = record::parse_line(s).ok();
        if let Some(r) = &rec {
            if r.seq <= self.last_seq {
                return Ok(());
            }
            self.last_seq = r.seq;
        }
        if self.filter.keep(rec.as_ref()) {
            writeln!(out, "{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let got = last_lines_plain(&mut f, end, want, &|_: &str| true).unwrap();
            assert_eq!(got, all[all.len().saturating_sub(want)..], "want {want}");
        }
        let odd = |l: &str| l.ends_with('x') && l.len() % 2 == 1;
        let want: Vec<String> = all.iter().filter(|l| odd(l)).cloned().collect();
        let got = last_lines_plain(&mut f, end, 50, &odd).unwrap();
        assert_eq!(got, want[want.len() - 50..]);
    }
}

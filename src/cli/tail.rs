//! `nxaudit tail [-f]`: prints the end of the active log and, with `-f`,
//! follows it across rotations without losing or repeating a line.
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
use crate::protocol::Component;
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
    // Initial part: the last N matching lines of the current content.
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    let complete = data.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    let text = String::from_utf8_lossy(&data[..complete]);
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| filter.is_empty() || filter.keep(record::parse_line(l).ok().as_ref()))
        .collect();
    for l in &kept[kept.len().saturating_sub(args.lines)..] {
        writeln!(out, "{l}")?;
    }
    out.flush()?;
    if !args.follow {
        return Ok(0);
    }
    file.seek(SeekFrom::Start(complete as u64))?;
    let mut printer = Printer {
        filter,
        last_seq: text
            .lines()
            .next_back()
            .and_then(|l| record::parse_line(l).ok())
            .map_or(0, |r| r.seq),
        pending: data[complete..].to_vec(),
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
                    for f in crate::logset::list(&ctx.config.log_dir)? {
                        if f.active || f.first_seq.is_some_and(|s| s <= printer.last_seq) {
                            continue;
                        }
                        if let Ok(r) = crate::logset::open(&f) {
                            for line in crate::logset::Lines::new(r) {
                                printer.line(&line?, &mut out)?;
                            }
                        }
                    }
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

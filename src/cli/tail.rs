//! `nxaudit tail [-f]`: prints the last lines of the log and, with `-f`,
//! follows it across rotations without losing or repeating a line.
//!
//! `-n N` reads the active file backwards from its end, block by block, so
//! a large file is not read whole; only when it holds fewer than N
//! (matching) lines does it go on to the rotated files, newest first
//! (compressed ones are streamed, keeping only the last lines needed).
//!
//! Following uses the log's one follower ([`crate::reader::LogFollower`],
//! the one the sinks use): by seq, from the last record printed, across
//! rotations (the old file is read to its end through its open handle,
//! files compressed meanwhile are read compressed), a partial last line
//! held back until its newline; nothing is lost or repeated.

use std::fs::File;
use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;

use super::Context;
use crate::catalog::Component;
use crate::logset::{end_of_last_line, last_lines_before};
use crate::reader::{LogFollower, RecordFilter};
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

/// Whether a line passes: with a filter, only records that match it; with
/// none, every line (also one that is not a record).
fn keep(filter: &RecordFilter, line: &str) -> bool {
    filter.is_empty() || record::parse_line(line).is_ok_and(|r| filter.matches(&r))
}

/// Records read per poll while following.
const FOLLOW_BATCH: usize = 1024;
/// Pause when the log has nothing new.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Runs the subcommand; returns the exit code.
pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<i32> {
    let component = match &args.component {
        Some(c) => Some(Component::parse(c).with_context(|| {
            format!("unknown component {c:?} (Engine, Portal, WebConsole, Appliance)")
        })?),
        None => None,
    };
    let filter = RecordFilter {
        codes: args.code.clone(),
        components: component.into_iter().collect(),
        ..Default::default()
    };
    let path = ctx.config.active_log();
    let mut file = File::open(&path).with_context(|| format!("open {}", path.display()))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // Initial part: the last N matching lines, from the end of the active
    // file backwards, then from rotated files if it holds too few.
    let len = file.metadata()?.len();
    let complete = end_of_last_line(&mut file, len)?;
    let keep = |l: &str| keep(&filter, l);
    let mut lines = last_lines_before(&mut file, complete, args.lines, &keep)?;
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
    // Follow from the last record of the active file as it was read above
    // (or of the whole set, when the active file holds none yet).
    let last_seq = match last_lines_before(&mut file, complete, 1, &|_: &str| true)?
        .first()
        .and_then(|l| record::parse_line(l).ok())
    {
        Some(r) => r.seq,
        None => crate::reader::last_seq(&ctx.config.log_dir)?,
    };
    drop(file);
    let mut printed = last_seq;
    let mut follower = LogFollower::new(ctx.config.log_dir.clone(), printed + 1, false);
    loop {
        let batch = match follower.read_batch(FOLLOW_BATCH) {
            Ok(b) => b,
            Err(e) => {
                // A file gone under the follower: start again after the
                // last record printed.
                eprintln!("nxaudit tail: {e}; reading on from seq {}", printed + 1);
                std::thread::sleep(FOLLOW_POLL);
                follower = LogFollower::new(ctx.config.log_dir.clone(), printed + 1, false);
                continue;
            }
        };
        if batch.records.is_empty() {
            std::thread::sleep(FOLLOW_POLL);
            continue;
        }
        for r in &batch.records {
            printed = r.rec.seq;
            if filter.matches(&r.rec) {
                writeln!(out, "{}", r.line)?;
            }
        }
        out.flush()?;
    }
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
        return last_lines_before(&mut file, end, want, keep);
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

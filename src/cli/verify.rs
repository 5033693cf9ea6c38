//! `nxaudit verify`: checks the whole log set — every file in seq order,
//! compressed ones too — for seq continuity, non-decreasing time, and the
//! hash chain (SHA-256, or HMAC-SHA-256 with the configured key), and names
//! the first bad line. Exit 0 when intact, 1 when not, 2 on errors.

use std::io::Write;
use std::time::Instant;

use anyhow::Context as _;

use super::Context;
use crate::logset;
use crate::record::{self, Chain, GENESIS};

/// Arguments of `nxaudit verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
    /// Progress on stderr (default: when the set is larger than 256 MiB).
    #[arg(long)]
    pub progress: bool,
}

/// Outcome of a verification.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// Files read.
    pub files: usize,
    /// Records checked.
    pub records: u64,
    /// First and last seq seen.
    pub first_seq: Option<u64>,
    /// Last seq seen.
    pub last_seq: Option<u64>,
    /// Whether the chain starts at genesis (seq 1) or mid-way (old files removed).
    pub anchored_at_genesis: bool,
    /// The first problem, `FILE:LINE: what`.
    pub error: Option<String>,
}

/// Verifies the set in `dir` with `chain`; `progress` gets bytes read so far.
pub fn verify_dir(
    dir: &std::path::Path,
    chain: &Chain,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<Report> {
    let files = logset::list(dir).with_context(|| format!("list {}", dir.display()))?;
    let mut rep = Report {
        files: files.len(),
        ..Default::default()
    };
    let mut prev_h: Option<String> = None;
    let mut prev_seq: Option<u64> = None;
    let mut prev_ts = None;
    let mut bytes = 0u64;
    for f in &files {
        let reader = logset::open(f).with_context(|| format!("open {}", f.path.display()))?;
        let name = f.path.display().to_string();
        for (i, line) in logset::Lines::new(reader).enumerate() {
            let line = line.with_context(|| format!("read {name}"))?;
            bytes += line.len() as u64 + 1;
            if rep.records % 4096 == 0 {
                progress(bytes);
            }
            let at = format!("{name}:{}", i + 1);
            let rec = match record::parse_line(&line) {
                Ok(r) => r,
                Err(e) => {
                    rep.error = Some(format!("{at}: {e}"));
                    return Ok(rep);
                }
            };
            if let Some(p) = prev_seq {
                if rec.seq != p + 1 {
                    rep.error = Some(format!(
                        "{at}: seq {} follows {p} (gap or duplicate)",
                        rec.seq
                    ));
                    return Ok(rep);
                }
            } else {
                rep.first_seq = Some(rec.seq);
                rep.anchored_at_genesis = rec.seq == 1;
            }
            if let Some(t) = prev_ts {
                if rec.ts < t {
                    rep.error = Some(format!("{at}: time {} goes back before {t}", rec.ts));
                    return Ok(rep);
                }
            }
            let prev = match (&prev_h, rec.seq) {
                (Some(h), _) => h.clone(),
                (None, 1) => GENESIS.to_string(),
                // Older files were removed by retention: anchor on the
                // rotation record's note of the previous h when present.
                (None, _) => rec
                    .field("previous_h")
                    .map(str::to_string)
                    .unwrap_or_default(),
            };
            if !(prev.is_empty() && prev_h.is_none()) {
                let want = chain.next(&prev, &rec.body);
                if want != rec.h {
                    rep.error = Some(format!(
                        "{at}: chain broken at seq {} (h={} but expected {want})",
                        rec.seq, rec.h
                    ));
                    return Ok(rep);
                }
            }
            if rec.code == 60903 {
                if let (Some(p), Some(ph)) = (&prev_h, rec.field("previous_h")) {
                    if p != ph {
                        rep.error = Some(format!("{at}: rotation record names previous h {ph}, the previous record has {p}"));
                        return Ok(rep);
                    }
                }
            }
            prev_h = Some(rec.h);
            prev_seq = Some(rec.seq);
            prev_ts = Some(rec.ts);
            rep.last_seq = Some(rec.seq);
            rep.records += 1;
        }
    }
    progress(bytes);
    Ok(rep)
}

/// Loads the chain function of a config.
pub fn chain_of(cfg: &crate::config::Config) -> anyhow::Result<Chain> {
    let p = &cfg.log.chain_key_file;
    Chain::from_key_file(p).with_context(|| format!("read chain key {}", p.display()))
}

/// Runs the subcommand; returns the exit code.
pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<i32> {
    let chain = chain_of(&ctx.config)?;
    let dir = &ctx.config.log_dir;
    let total: u64 = logset::list(dir)
        .map(|fs| {
            fs.iter()
                .filter_map(|f| std::fs::metadata(&f.path).ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let show = args.progress || total > 256 << 20;
    let start = Instant::now();
    let mut last_shown = 0u64;
    let rep = verify_dir(dir, &chain, |b| {
        if show && b >= last_shown + (64 << 20) {
            last_shown = b;
            let _ = writeln!(
                std::io::stderr(),
                "verify: {} MiB read ({:.0} MiB/s)",
                b >> 20,
                (b >> 20) as f64 / start.elapsed().as_secs_f64().max(0.001)
            );
        }
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&rep)?);
    } else {
        match &rep.error {
            None => println!(
                "OK: {} records in {} files, seq {}..{}, chain intact{}",
                rep.records,
                rep.files,
                rep.first_seq.unwrap_or(0),
                rep.last_seq.unwrap_or(0),
                if rep.anchored_at_genesis || rep.records == 0 {
                    ""
                } else {
                    " (anchored at the oldest kept file)"
                }
            ),
            Some(e) => println!("FAILED: {e}"),
        }
    }
    Ok(if rep.error.is_some() { 1 } else { 0 })
}

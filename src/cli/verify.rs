//! `nxaudit verify`: runs [`crate::verify`] over the configured log
//! directory and prints the verdict. Exit 0 when the set verifies; 1 when
//! it does not (altered, cut, missing or empty); 2 when it could not be
//! verified (unreadable, or changing faster than it could be read).
//! Progress (files and bytes) is drawn on stderr when it is a terminal.
//!
//! With `--seal-key` the seals' MACs and time windows are checked too, and
//! the log must not stay unsealed for long: while the daemon runs (it
//! holds the instance lock), more than two seal intervals since the last
//! seal fails, because the daemon seals at the end of every interval and a
//! deleted tail takes the latest seals with it. `--max-unsealed` sets the
//! limit explicitly (and applies when the daemon is stopped too). The log
//! must also reach the high-water mark kept in the state directory.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Context;
use crate::record::Chain;
use crate::seal::{HighWaterMark, SealReport, VerifyKey};
use crate::verify::{self, Progress};

/// Arguments of `nxaudit verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
    /// Verification key printed by `nxaudit seal init`: check the seals'
    /// MACs, epochs and time windows.
    #[arg(
        long,
        value_name = "KEY",
        env = "NXAUDIT_SEAL_KEY",
        hide_env_values = true
    )]
    pub seal_key: Option<String>,
    /// Fail when the log has been unsealed for longer than this (e.g.
    /// `30m`); default with --seal-key: two seal intervals while the
    /// daemon runs, no limit when it is stopped.
    #[arg(long, value_name = "DURATION")]
    pub max_unsealed: Option<String>,
    /// Verify a collector's copy (one file of forwarded record lines)
    /// instead of the log directory.
    #[arg(long, value_name = "PATH")]
    pub replica: Option<std::path::PathBuf>,
    /// With --replica: compare the copy with this appliance log directory.
    #[arg(long, value_name = "DIR", requires = "replica")]
    pub against: Option<std::path::PathBuf>,
    /// With --replica: the appliance's chain key file (default: the
    /// configured `[log] chain_key_file`).
    #[arg(long, value_name = "FILE", requires = "replica")]
    pub chain_key: Option<std::path::PathBuf>,
}

/// Loads the chain function of a config.
pub fn chain_of(cfg: &crate::config::Config) -> anyhow::Result<Chain> {
    let p = &cfg.log.chain_key_file;
    Chain::from_key_file(p).with_context(|| format!("read chain key {}", p.display()))
}

/// Files and bytes on a terminal.
struct Bar {
    bytes: ProgressBar,
    files: std::sync::atomic::AtomicUsize,
    total: std::sync::atomic::AtomicUsize,
}

impl Progress for Bar {
    fn begin(&self, files: usize, bytes: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.files.store(0, Relaxed);
        self.total.store(files, Relaxed);
        self.bytes.set_length(bytes);
        self.bytes.set_position(0);
        self.bytes.set_message(format!("0/{files} files"));
    }
    fn advance(&self, bytes: u64) {
        self.bytes.inc(bytes);
    }
    fn file_done(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let done = self.files.fetch_add(1, Relaxed) + 1;
        let total = self.total.load(Relaxed);
        self.bytes.set_message(format!("{done}/{total} files"));
    }
}

fn bar() -> Option<Bar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "verify {msg} {bar:30} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
    ) {
        pb.set_style(style);
    }
    Some(Bar {
        bytes: pb,
        files: Default::default(),
        total: Default::default(),
    })
}

/// Runs the subcommand; returns the exit code.
pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<i32> {
    if let Some(path) = &args.replica {
        let key = args
            .chain_key
            .as_deref()
            .unwrap_or(&ctx.config.log.chain_key_file);
        let seal_key: Option<VerifyKey> = args
            .seal_key
            .as_deref()
            .map(str::parse)
            .transpose()
            .context("--seal-key")?;
        return super::replica::run(
            path,
            args.against.as_deref(),
            key,
            seal_key.as_ref(),
            args.json,
        );
    }
    let chain = chain_of(&ctx.config)?;
    let dir = &ctx.config.log_dir;
    let key: Option<VerifyKey> = args
        .seal_key
        .as_deref()
        .map(str::parse)
        .transpose()
        .context("--seal-key")?;
    let max_unsealed = args
        .max_unsealed
        .as_deref()
        .map(|t| {
            crate::config::parse_duration(t)
                .with_context(|| format!("invalid --max-unsealed {t:?} (e.g. \"30m\")"))
        })
        .transpose()?;
    // Taken before the set is read: the mark only ever names records that
    // were durable before it was written, so the set read afterwards
    // reaches it unless records were removed.
    let now = chrono::Utc::now();
    let mark = HighWaterMark::load(&ctx.config.state_dir);
    let running = crate::fsutil::lock_holder(&ctx.config.state_dir)
        .ok()
        .flatten()
        .is_some();
    let bar = bar();
    let res = verify::verify_dir_sealed(
        dir,
        &chain,
        key.as_ref(),
        bar.as_ref().map_or(&(), |b| b as &dyn Progress),
    );
    if let Some(b) = &bar {
        b.bytes.finish_and_clear();
    }
    let rep = match res {
        Ok(rep) => rep,
        Err(e) => {
            let failed = e.is_failure();
            return Ok(verdict(args.json, failed, &e.to_string()));
        }
    };
    if let Ok(Some(m)) = &mark {
        if m.seq > rep.last_seq {
            let why = format!(
                "the log ends at seq {}, before the high-water mark seq {} (h={}) kept in {}: \
                 records were deleted or cut",
                rep.last_seq,
                m.seq,
                m.h,
                ctx.config.state_dir.display()
            );
            return Ok(verdict(args.json, true, &why));
        }
    }
    // How long the log has been unsealed, and whether that is too long.
    // A running daemon seals every interval, idle or not: for a live log
    // the time since the last seal counts, even if nothing follows it (a
    // tail deleted right after a seal).
    let measured = if running {
        rep.seal.since_last_seal(now)
    } else {
        rep.seal.unsealed_for(now)
    };
    let unsealed = match (&key, measured) {
        (_, Some(d)) => Some(d),
        // No seal at all: unsealed since the key's start.
        (Some(k), None) => Some((now - k.epoch_start(0)).max(chrono::Duration::zero())),
        (None, None) => None,
    };
    let limit = match (max_unsealed, &key) {
        (Some(l), _) => Some(l),
        (None, Some(k)) if running => Some(std::time::Duration::from_secs(2 * k.interval)),
        _ => None,
    };
    if let (Some(u), Some(l)) = (unsealed, limit) {
        if u.to_std().unwrap_or_default() > l {
            let why = format!(
                "the log has been unsealed for {}s, more than {}s{}: seals are missing \
                 (a deleted tail, or a daemon that stopped sealing)",
                u.num_seconds(),
                l.as_secs(),
                if running {
                    " while the daemon runs"
                } else {
                    ""
                }
            );
            return Ok(verdict(args.json, true, &why));
        }
    }
    if args.json {
        let mut v = serde_json::to_value(&rep)?;
        v["ok"] = true.into();
        v["unsealed_seconds"] = unsealed.map(|u| u.num_seconds()).into();
        v["daemon_running"] = running.into();
        if let Ok(Some(m)) = &mark {
            v["high_water_mark"] = m.seq.into();
        }
        println!("{v}");
    } else {
        println!(
            "OK: {} records in {} files, seq {}..{}, chain intact, {}",
            rep.records, rep.files, rep.first_seq, rep.last_seq, rep.anchor
        );
        println!("{}", seal_line(&rep.seal, unsealed));
    }
    if let Some(t) = &rep.unverified_tail {
        eprintln!(
            "note: the last {} bytes of {} are not a complete line yet (a write in \
             progress, or a crash's torn tail that the daemon cuts off at its next \
             start); they were not verified",
            t.bytes,
            t.file.display()
        );
    }
    if let Err(e) = &mark {
        eprintln!("note: the high-water mark could not be read: {e}");
    }
    Ok(0)
}

/// Failure (1) or could not verify (2), printed.
fn verdict(json: bool, failed: bool, why: &str) -> i32 {
    if json {
        let v = serde_json::json!({ "ok": false, "failed": failed, "error": why });
        println!("{v}");
    } else if failed {
        println!("FAILED: {why}");
    } else {
        eprintln!("error: cannot verify: {why}");
    }
    if failed {
        1
    } else {
        2
    }
}

/// What the seals show, in one line.
fn seal_line(r: &SealReport, unsealed: Option<chrono::Duration>) -> String {
    let Some(last) = &r.last else {
        return match unsealed {
            Some(u) => format!(
                "seals: none; the log has been unsealed for {}s",
                u.num_seconds()
            ),
            None => "seals: none (sealing is off)".to_string(),
        };
    };
    let what = if r.checked {
        format!(
            "{} seals checked with the seal key; anchored by seal {}.{} (seq {}, {}, {}): \
             nothing up to seq {} was altered, removed or inserted",
            r.seals,
            last.epoch,
            last.sub,
            last.seq,
            crate::record::format_ts(last.ts),
            last.reason,
            last.seq
        )
    } else {
        format!(
            "{} seals in order, last {}.{} at seq {}; not checked cryptographically \
             (no --seal-key)",
            r.seals, last.epoch, last.sub, last.seq
        )
    };
    let tail = match unsealed {
        Some(u) if r.unsealed_records > 0 => format!(
            "; unsealed for {}s ({} records after the last seal)",
            u.num_seconds(),
            r.unsealed_records
        ),
        _ => "; nothing after the last seal".to_string(),
    };
    format!("seals: {what}{tail}")
}

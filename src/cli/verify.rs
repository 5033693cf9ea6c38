//! `nxaudit verify`: runs [`crate::verify`] over the configured log
//! directory and prints the verdict. Exit 0 when the set verifies; 1 when
//! it does not (altered, cut, missing or empty); 2 when it could not be
//! verified (unreadable, or changing faster than it could be read).
//! Progress (files and bytes) is drawn on stderr when it is a terminal.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Context;
use crate::record::Chain;
use crate::verify::{self, Progress};

/// Arguments of `nxaudit verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
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
        return super::replica::run(path, args.against.as_deref(), key, args.json);
    }
    let chain = chain_of(&ctx.config)?;
    let dir = &ctx.config.log_dir;
    let bar = bar();
    let res = verify::verify_dir(
        dir,
        &chain,
        bar.as_ref().map_or(&(), |b| b as &dyn Progress),
    );
    if let Some(b) = &bar {
        b.bytes.finish_and_clear();
    }
    match res {
        Ok(rep) => {
            if args.json {
                let mut v = serde_json::to_value(&rep)?;
                v["ok"] = true.into();
                println!("{v}");
            } else {
                println!(
                    "OK: {} records in {} files, seq {}..{}, chain intact, {}",
                    rep.records, rep.files, rep.first_seq, rep.last_seq, rep.anchor
                );
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
            Ok(0)
        }
        Err(e) => {
            let failed = e.is_failure();
            if args.json {
                let v =
                    serde_json::json!({ "ok": false, "failed": failed, "error": e.to_string() });
                println!("{v}");
            } else if failed {
                println!("FAILED: {e}");
            } else {
                eprintln!("error: cannot verify: {e}");
            }
            Ok(if failed { 1 } else { 2 })
        }
    }
}

//! `nxaudit seal init`: creates the first forward-secure sealing key and
//! prints the verification key, once. The key file is created exclusively
//! (an existing one is never overwritten: that would end the old key's
//! line of seals), mode 0600, owned like the state directory (the daemon's
//! user), which replaces it at every seal.

use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;

use anyhow::{bail, Context as _};

use super::Context;
use crate::seal::{KeyFile, SealKey};

/// Arguments of `nxaudit seal`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: SealCommand,
}

/// Subcommands of `nxaudit seal`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum SealCommand {
    /// Create the first sealing key and print the verification key once.
    Init {
        /// Key file to create (default: `[log] seal_key_file`).
        #[arg(long, value_name = "PATH")]
        key_file: Option<PathBuf>,
        /// Epoch length (default: `[log] seal_interval`), e.g. `15m`, `1s`.
        #[arg(long, value_name = "DURATION")]
        interval: Option<String>,
    },
}

/// Runs the subcommand; returns the exit code.
pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<i32> {
    match &args.command {
        SealCommand::Init { key_file, interval } => {
            init(ctx, key_file.as_ref(), interval.as_deref())
        }
    }
}

fn init(ctx: &Context, key_file: Option<&PathBuf>, interval: Option<&str>) -> anyhow::Result<i32> {
    let path = match key_file {
        Some(p) => p.clone(),
        None if !ctx.config.log.seal_key_file.as_os_str().is_empty() => {
            ctx.config.log.seal_key_file.clone()
        }
        None => bail!("no key file: give --key-file or set [log] seal_key_file"),
    };
    let interval = match interval {
        Some(t) => crate::config::parse_duration(t)
            .with_context(|| format!("invalid interval {t:?} (e.g. \"15m\", \"1s\")"))?,
        None => ctx.config.log.seal_interval,
    };
    if interval.as_secs() == 0 {
        bail!("the seal interval must be at least 1s");
    }
    if KeyFile::exists(&path)? {
        bail!(
            "{} exists: a sealing key is never overwritten (remove it first to start a new key line)",
            path.display()
        );
    }
    let (key, verify_key) = SealKey::generate(chrono::Utc::now(), interval.as_secs())?;
    KeyFile::create(&path, &key)?;
    // The daemon replaces the file at every seal: it must own it.
    if let Ok(m) = std::fs::metadata(&ctx.config.state_dir) {
        let uid = nix::unistd::Uid::from_raw(m.uid());
        let gid = nix::unistd::Gid::from_raw(m.gid());
        nix::unistd::fchownat(
            None,
            &path,
            Some(uid),
            Some(gid),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .with_context(|| format!("chown {}", path.display()))?;
    }
    eprintln!(
        "created {} (interval {}s). The verification key below is shown only now: keep it off \
         this appliance, and give it to `nxaudit verify --seal-key`.",
        path.display(),
        interval.as_secs()
    );
    println!("{verify_key}");
    Ok(0)
}

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
    // The daemon rewrites the key at every seal: it must own it. Its
    // user owns the state directory; before the daemon first ran there is
    // none, and the key's own directory (which the operator made for it)
    // is the best witness left. Only root can give a file away; anyone
    // else keeps it, which is right when the daemon runs as that user.
    let (owner_of, m) = match std::fs::metadata(&ctx.config.state_dir) {
        Ok(m) => (ctx.config.state_dir.clone(), m),
        Err(_) if !nix::unistd::geteuid().is_root() => {
            return Ok(announce(&path, interval, &verify_key))
        }
        Err(_) => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let m = std::fs::metadata(&dir)
                .with_context(|| format!("stat the key's directory {}", dir.display()))?;
            eprintln!(
                "note: the state directory {} does not exist yet: {} is owned like its \
                 directory {} (uid {}, gid {}); the daemon's user must own it to seal",
                ctx.config.state_dir.display(),
                path.display(),
                dir.display(),
                m.uid(),
                m.gid()
            );
            (dir, m)
        }
    };
    if let Err(e) = nix::unistd::fchownat(
        None,
        &path,
        Some(nix::unistd::Uid::from_raw(m.uid())),
        Some(nix::unistd::Gid::from_raw(m.gid())),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        // Its verification key was never shown: a key kept now would only
        // block the next `seal init`.
        let _ = std::fs::remove_file(&path);
        return Err(e).with_context(|| {
            format!(
                "chown {} like {} (the key was removed)",
                path.display(),
                owner_of.display()
            )
        });
    }
    Ok(announce(&path, interval, &verify_key))
}

/// Says what was made and prints the verification key, once.
fn announce(
    path: &std::path::Path,
    interval: std::time::Duration,
    verify_key: &impl std::fmt::Display,
) -> i32 {
    eprintln!(
        "created {} (interval {}s). The verification key below is shown only now: keep it off \
         this appliance, and give it to `nxaudit verify --seal-key`.",
        path.display(),
        interval.as_secs()
    );
    println!("{verify_key}");
    0
}

//! `nxaudit rotate`: asks the running daemon to rotate (SIGUSR1 to the
//! process holding its instance lock) and waits until the rotated file
//! appears.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::Context;

/// Arguments of `nxaudit rotate`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// How long to wait for the rotation, in seconds.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
}

/// The pid of the running daemon: the process that holds the instance
/// lock in the state directory (`F_GETLK`). The pid file is not trusted:
/// anything can be written there, and a pid outlives its process (after
/// `kill -9`, or as a zombie). Nobody holding the lock means not running.
pub fn daemon_pid(ctx: &Context) -> anyhow::Result<nix::unistd::Pid> {
    let state = &ctx.config.state_dir;
    let holder = crate::fsutil::lock_holder(state).with_context(|| {
        format!(
            "cannot tell whether nxauditd runs (its lock in {})",
            state.display()
        )
    })?;
    match holder {
        Some(pid) if pid > 0 => Ok(nix::unistd::Pid::from_raw(pid)),
        _ => bail!(
            "nxauditd is not running (no process holds {})",
            state.join(crate::fsutil::LOCK_FILE).display()
        ),
    }
}

/// Runs the subcommand; returns the exit code.
pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<i32> {
    let pid = daemon_pid(ctx)?;
    let firsts: Vec<_> = crate::logset::list(&ctx.config.log_dir)?
        .into_iter()
        .filter_map(|f| f.first_seq)
        .collect();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).context("send SIGUSR1")?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(args.timeout) {
        let now = crate::logset::list(&ctx.config.log_dir)?;
        if let Some(f) = now
            .iter()
            .find(|f| f.first_seq.is_some_and(|s| !firsts.contains(&s)))
        {
            println!("rotated: {}", f.path.display());
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("no rotated file appeared within {} s", args.timeout)
}

//! `nxaudit rotate`: asks the running daemon to rotate (SIGUSR1 to the pid
//! in its state directory) and waits until the rotated file appears.

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

/// Reads the daemon's pid and checks it is alive.
pub fn daemon_pid(ctx: &Context) -> anyhow::Result<nix::unistd::Pid> {
    let pidf = crate::daemon::pid_file(&ctx.config.state_dir);
    let text = std::fs::read_to_string(&pidf)
        .with_context(|| format!("read {} (is nxauditd running?)", pidf.display()))?;
    let pid: i32 = text
        .trim()
        .parse()
        .with_context(|| format!("bad pid in {}", pidf.display()))?;
    let pid = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(pid, None)
        .with_context(|| format!("nxauditd (pid {pid}) is not running"))?;
    Ok(pid)
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

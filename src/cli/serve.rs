//! `nxaudit serve` (being written).

use super::Context;

/// Arguments of `nxaudit serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {}

/// Runs the subcommand; returns the exit code.
pub fn run(_ctx: &Context, _args: &Args) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}

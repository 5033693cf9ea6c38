//! The `nxaudit` command-line tool: one module per subcommand.
//!
//! Each module defines its clap `Args` and a `run(&Context, &Args)` that
//! returns the process exit code. This is the binary's edge, so errors are
//! `anyhow` with context.

use std::path::PathBuf;

use crate::config::Config;

pub mod bench;
pub mod codes;
pub mod query;
pub mod rotate;
pub mod send;
pub mod serve;
pub mod status;
pub mod tail;
pub mod verify;

/// What every subcommand gets: the loaded config (with `--base-dir`
/// applied), so the CLI finds the daemon and the logs as the daemon does.
#[derive(Debug, Clone)]
pub struct Context {
    /// Effective configuration.
    pub config: Config,
    /// `--config`, if given.
    pub config_path: Option<PathBuf>,
    /// `--base-dir`, if given.
    pub base_dir: Option<PathBuf>,
}

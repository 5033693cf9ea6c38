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
pub mod replica;
pub mod rotate;
pub mod seal;
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

/// An error and its causes on one line, `a: b: c`, each cause once: a
/// cause whose text the message before it already ends with (an error type
/// that both prints and exposes its source) is skipped.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !text.is_empty() && !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = c.source();
    }
    out
}

/// Which configuration the CLI and the daemon load for these arguments:
/// the `--config` file, else the default file when it exists (and no
/// `--base-dir` is given), else the built-in defaults.
pub fn config_source(
    config: Option<&std::path::Path>,
    base_dir: Option<&std::path::Path>,
) -> String {
    match config {
        Some(p) => p.display().to_string(),
        None => {
            let d = std::path::Path::new(crate::config::DEFAULT_CONFIG);
            if base_dir.is_some() {
                format!(
                    "built-in defaults (--base-dir without --config does not read {})",
                    d.display()
                )
            } else if d.exists() {
                d.display().to_string()
            } else {
                format!(
                    "built-in defaults (no --config, and {} does not exist)",
                    d.display()
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("open x: {source}")]
    struct Dup {
        source: std::io::Error,
    }

    #[test]
    fn each_cause_once() {
        let e = Dup {
            source: std::io::Error::from_raw_os_error(2),
        };
        let a = anyhow::Error::new(e).context("start");
        let s = super::error_chain(a.as_ref());
        assert_eq!(s.matches("os error 2").count(), 1, "{s}");
        assert!(s.starts_with("start: open x: "), "{s}");
    }
}

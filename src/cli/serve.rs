//! `nxaudit serve`: runs the Audit trail API (docs/operations.md, the API) — the process behind
//! `nxauditlogs.service`, on the Portal and on every Engine appliance.
//!
//! Everything comes from `[api]` of the configuration (limits and timeouts
//! included); the options below only cover what has no configuration key
//! yet (spooling, extra CA roots) and a listen override for tests and
//! debugging. The
//! command builds its own tokio runtime, prints the bound address on
//! stdout once it accepts connections (so `--listen 127.0.0.1:0` can be
//! used by scripts), and exits 0 after SIGTERM or SIGINT once requests in
//! flight are done (at most a few seconds).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;

use super::Context;
use crate::api;
use crate::config::parse_size;

/// Arguments of `nxaudit serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Address to listen on, overriding `[api] listen` (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Directory where the all-Engines route spools the Engines' logs
    /// (files are unlinked at creation) [default: $TMPDIR or /tmp].
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Most bytes one all-Engines request may spool.
    #[arg(long, value_name = "SIZE", default_value = "8GiB", value_parser = size_arg)]
    pub spool_limit: u64,
    /// PEM file of extra CA certificates trusted for the Engines (when
    /// nginxSelfSignedCertificate is not true).
    #[arg(long, value_name = "FILE")]
    pub engine_ca: Option<PathBuf>,
}

fn size_arg(s: &str) -> Result<u64, String> {
    parse_size(s).ok_or_else(|| format!("invalid size {s:?} (e.g. 8GiB)"))
}

/// Diagnostics on stderr (journald under systemd), filtered by
/// `NXAUDIT_LOG` (default `info`: one line per request, Engine failures),
/// unless the binary installed its own subscriber.
fn init_logging() {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("NXAUDIT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .try_init();
}

/// Runs the subcommand; returns the exit code.
pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<i32> {
    init_logging();
    let opts = api::Options {
        listen: args.listen.clone(),
        spool_dir: args.spool_dir.clone().unwrap_or_else(std::env::temp_dir),
        spool_limit: args.spool_limit,
        engine_ca: args.engine_ca.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("nxaudit-api")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        // Installed before the address is announced: a SIGTERM sent as soon
        // as the server is up must stop it cleanly, not kill it.
        let shutdown = shutdown_signal()?;
        let prepared =
            api::prepare(&ctx.config, &opts).context("cannot start the Audit trail API")?;
        let listener = api::bind(&prepared.listen).await?;
        let addr = listener
            .local_addr()
            .context("cannot read the bound address")?;
        let role = prepared.state.role;
        tracing::info!(%addr, ?role, engine_tls = ?prepared.engine_tls, log_dir = %ctx.config.log_dir.display(), "Audit trail API listening");
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "nxaudit serve: listening on https://{addr} (role {})",
                ctx.config.api.role
            );
            let _ = out.flush();
        }
        api::run(listener, prepared, shutdown).await?;
        tracing::info!("Audit trail API stopped");
        Ok(0)
    })
}

/// Installs the SIGTERM and SIGINT handlers now; the returned future
/// completes when either signal arrives.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

//! `nxauditd`: the audit daemon. Parses arguments, loads the config, sets
//! up diagnostics and hands over to `nxaudit::daemon::run`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

/// The audit daemon of a Nexthink appliance: receives audit events on a
/// Unix socket and appends them durably to a hash-chained audit log.
#[derive(Debug, Parser)]
#[command(name = "nxauditd", version, about, long_about = None)]
struct Args {
    /// Configuration file (default /etc/nxaudit/nxauditd.toml, if present).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Put socket, logs and state under DIR (for non-root runs and tests).
    #[arg(long, value_name = "DIR")]
    base_dir: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
    /// Also write diagnostics to this file (daily rotated by tracing-appender).
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    // First of all: whatever umask we were started with, nothing we create
    // is group-writable or readable by others.
    nxaudit::fsutil::set_umask();
    bound_allocator();
    let args = Args::parse();
    match real_main(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nxauditd: {}", nxaudit::cli::error_chain(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Keeps glibc from holding freed memory (docs/protocol.md: RSS under 64 MiB
/// whatever clients send). Buffers of 128 KiB and more (escaped records,
/// group-commit batches) are mapped and unmapped instead of left in a heap
/// by glibc's adaptive threshold. (Limiting arenas too cost about 10 % of
/// throughput in `nxaudit bench` for no measurable RSS gain.) Must run
/// before any thread starts.
fn bound_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tunables; called once, before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn real_main(args: Args) -> anyhow::Result<()> {
    let cfg = nxaudit::config::Config::load(args.config.as_deref(), args.base_dir.as_deref())?;
    if args.check_config {
        let checked = nxaudit::cli::config_source(args.config.as_deref(), args.base_dir.as_deref());
        println!("configuration OK: {checked}");
        return Ok(());
    }
    let _guard = init_tracing(args.log_file.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("nxauditd")
        .build()
        .context("start the async runtime")?;
    rt.block_on(nxaudit::daemon::run(cfg, args.config, args.base_dir))?;
    Ok(())
}

fn init_tracing(
    file: Option<&std::path::Path>,
) -> anyhow::Result<Option<tracing_appender::non_blocking::WorkerGuard>> {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("NXAUDIT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: under systemd stderr goes to the journal.
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    match file {
        None => {
            tracing_subscriber::registry()
                .with(filter)
                .with(stderr)
                .init();
            Ok(None)
        }
        Some(path) => {
            let dir = path.parent().unwrap_or(std::path::Path::new("."));
            let name = path.file_name().context("--log-file needs a file name")?;
            let appender = tracing_appender::rolling::daily(dir, name);
            let (nb, guard) = tracing_appender::non_blocking(appender);
            tracing_subscriber::registry()
                .with(filter)
                .with(stderr)
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(nb)
                        .with_ansi(false),
                )
                .init();
            Ok(Some(guard))
        }
    }
}

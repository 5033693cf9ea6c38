//! `nxaudit`: the operator's and components' command-line tool. Parses
//! arguments, loads the same config as the daemon, and runs a subcommand
//! from `nxaudit::cli`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use nxaudit::cli;

/// Send audit events, read, search and verify the audit log, run the Audit
/// trail API, and benchmark the daemon.
#[derive(Debug, Parser)]
#[command(name = "nxaudit", version, about, long_about = None)]
struct Args {
    /// Configuration file (default /etc/nxaudit/nxauditd.toml, if present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The daemon's --base-dir: find socket, logs and state under DIR.
    #[arg(long, global = true, value_name = "DIR")]
    base_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send one event (from flags) or many (NDJSON on stdin); print the acks.
    Send(cli::send::Args),
    /// Print the event code catalog, or everything about one code.
    Codes(cli::codes::Args),
    /// Print the last lines of the log (across rotated files), optionally following it.
    Tail(cli::tail::Args),
    /// Search all log files (compressed too) by time, code, component, user.
    Query(cli::query::Args),
    /// Check seq continuity, the hash chain and the seals over all files.
    Verify(cli::verify::Args),
    /// Forward-secure sealing: create the first key (`seal init`).
    Seal(cli::seal::Args),
    /// Ask the daemon to rotate the active file now.
    Rotate(cli::rotate::Args),
    /// Show whether the daemon runs and how it is doing.
    Status(cli::status::Args),
    /// Run the Audit trail API over HTTPS.
    Serve(cli::serve::Args),
    /// Measure throughput and ack latency against a daemon in a temp dir.
    Bench(cli::bench::Args),
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let code = match run(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nxaudit: {}", cli::error_chain(e.as_ref()));
            2
        }
    };
    std::process::ExitCode::from(code.clamp(0, 255) as u8)
}

fn run(args: Args) -> anyhow::Result<i32> {
    let config = nxaudit::config::Config::load(args.config.as_deref(), args.base_dir.as_deref())?;
    let ctx = cli::Context {
        config,
        config_path: args.config,
        base_dir: args.base_dir,
    };
    match &args.command {
        Command::Send(a) => cli::send::run(&ctx, a),
        Command::Codes(a) => cli::codes::run(&ctx, a),
        Command::Tail(a) => cli::tail::run(&ctx, a),
        Command::Query(a) => cli::query::run(&ctx, a),
        Command::Verify(a) => cli::verify::run(&ctx, a),
        Command::Rotate(a) => cli::rotate::run(&ctx, a),
        Command::Seal(a) => cli::seal::run(&ctx, a),
        Command::Status(a) => cli::status::run(&ctx, a),
        Command::Serve(a) => cli::serve::run(&ctx, a),
        Command::Bench(a) => cli::bench::run(&ctx, a),
    }
}

//! `nxaudit status`: whether the daemon runs, and what it last published
//! in `state_dir/status.json` (seq, rates, refusals, disk, journal and
//! forwarder positions). Exit 0 when running, 3 when not (as systemctl).

use anyhow::Context as _;

use super::Context;

/// Arguments of `nxaudit status`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Print the whole status as JSON (for monitoring).
    #[arg(long)]
    pub json: bool,
}

/// Runs the subcommand; returns the exit code.
pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<i32> {
    let running = super::rotate::daemon_pid(ctx).ok();
    let path = crate::daemon::status_file(&ctx.config.state_dir);
    let doc: serde_json::Value = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| format!("parse {}", path.display()))?,
        Err(_) => serde_json::json!({}),
    };
    if args.json {
        let mut d = doc.clone();
        if let Some(m) = d.as_object_mut() {
            m.insert("running".into(), running.is_some().into());
        }
        println!("{}", serde_json::to_string_pretty(&d)?);
        return Ok(if running.is_some() { 0 } else { 3 });
    }
    match running {
        Some(pid) => println!("nxauditd: running (pid {pid})"),
        None => println!("nxauditd: not running"),
    }
    let g = |p: &str| doc.pointer(p).cloned().unwrap_or(serde_json::Value::Null);
    if doc.as_object().is_some_and(|m| !m.is_empty()) {
        println!("  updated:      {}", g("/updated_at"));
        println!("  uptime:       {} s", g("/uptime_s"));
        println!("  last seq:     {}", g("/writer/last_seq"));
        println!(
            "  written:      {} ({} events/s)",
            g("/writer/written"),
            g("/events_per_s")
        );
        println!(
            "  refused:      {} disk full, {} write failed",
            g("/writer/refused_disk_full"),
            g("/writer/refused_write_failed")
        );
        println!(
            "  ids:          {} duplicates answered, {} ids forgotten (written again if repeated)",
            g("/writer/duplicates"),
            g("/writer/ids_forgotten")
        );
        println!(
            "  disk free:    {} bytes{}",
            g("/disk_free_bytes"),
            if g("/low_space") == serde_json::Value::Bool(true) {
                " (LOW)"
            } else {
                ""
            }
        );
        println!(
            "  connections:  {} open, {} accepted",
            g("/listener/open"),
            g("/listener/accepted")
        );
        for section in [
            "journal",
            "auth_journal",
            "syslog_intake",
            "forwarder",
            "reload",
        ] {
            if let Some(v) = doc.get(section) {
                println!("  {section}: {v}");
            }
        }
    }
    Ok(if running.is_some() { 0 } else { 3 })
}

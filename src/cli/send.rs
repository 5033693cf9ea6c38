//! `nxaudit send`: one event from flags, or many NDJSON lines from stdin.
//!
//! Lines are pipelined on one connection (a thread writes while the main
//! thread reads replies), each reply is printed as it arrives, and the exit
//! code is 1 if any line was refused, so scripts can rely on it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;

use anyhow::{bail, Context as _};

use super::Context;

/// Arguments of `nxaudit send`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Event code; without it, NDJSON events are read from stdin.
    #[arg(long)]
    pub code: Option<u32>,
    /// Component (Engine, Portal, WebConsole, Appliance).
    #[arg(long)]
    pub component: Option<String>,
    /// Acting account.
    #[arg(long)]
    pub user: Option<String>,
    /// Remote address of the acting user.
    #[arg(long)]
    pub client: Option<String>,
    /// Engine name.
    #[arg(long)]
    pub engine: Option<String>,
    /// Which description of the code is meant.
    #[arg(long)]
    pub description: Option<String>,
    /// The component's own time (RFC 3339).
    #[arg(long)]
    pub time: Option<String>,
    /// Free text.
    #[arg(long)]
    pub message: Option<String>,
    /// Idempotency key.
    #[arg(long)]
    pub id: Option<String>,
    /// Extra value KEY=VALUE (repeatable).
    #[arg(long = "detail", value_name = "KEY=VALUE")]
    pub details: Vec<String>,
    /// Print nothing; only the exit code tells.
    #[arg(long, short)]
    pub quiet: bool,
}

fn event_from_flags(a: &Args, code: u32) -> anyhow::Result<String> {
    let mut m = serde_json::Map::new();
    m.insert("code".into(), code.into());
    let mut put = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            m.insert(k.into(), v.clone().into());
        }
    };
    put("component", &a.component);
    put("user", &a.user);
    put("client", &a.client);
    put("engine", &a.engine);
    put("description", &a.description);
    put("time", &a.time);
    put("message", &a.message);
    put("id", &a.id);
    if !a.details.is_empty() {
        let mut d = serde_json::Map::new();
        for kv in &a.details {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--detail {kv:?} is not KEY=VALUE"))?;
            d.insert(k.into(), v.into());
        }
        m.insert("details".into(), d.into());
    }
    Ok(serde_json::Value::Object(m).to_string())
}

/// Runs the subcommand; returns the exit code.
pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<i32> {
    let sock = &ctx.config.socket;
    let stream = UnixStream::connect(sock)
        .with_context(|| format!("connect to {} (is nxauditd running?)", sock.display()))?;
    let mut w = stream.try_clone().context("clone socket")?;
    let (sent_tx, sent_rx) = std::sync::mpsc::channel::<u64>();
    let writer = match args.code {
        Some(code) => {
            let line = event_from_flags(args, code)?;
            std::thread::spawn(move || -> std::io::Result<()> {
                w.write_all(line.as_bytes())?;
                w.write_all(b"\n")?;
                let _ = sent_tx.send(1);
                w.shutdown(std::net::Shutdown::Write)
            })
        }
        None => std::thread::spawn(move || -> std::io::Result<()> {
            // Forward stdin line by line, counting lines for the reader.
            let mut input = BufReader::new(std::io::stdin().lock());
            let mut out = std::io::BufWriter::new(&w);
            let mut n = 0u64;
            let mut buf = Vec::new();
            loop {
                buf.clear();
                if input.read_until(b'\n', &mut buf)? == 0 {
                    break;
                }
                if buf.last() != Some(&b'\n') {
                    buf.push(b'\n');
                }
                out.write_all(&buf)?;
                n += 1;
            }
            out.flush()?;
            drop(out);
            let _ = sent_tx.send(n);
            w.shutdown(std::net::Shutdown::Write)
        }),
    };
    let mut reader = BufReader::new(stream);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let (mut got, mut refused) = (0u64, 0u64);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).context("read reply")? == 0 {
            break;
        }
        got += 1;
        let ok = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v.get("ok").and_then(|o| o.as_bool()))
            .unwrap_or(false);
        if !ok {
            refused += 1;
        }
        if !args.quiet {
            out.write_all(line.as_bytes())?;
        }
    }
    out.flush()?;
    match writer.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => bail!("sending failed: {e}"),
        Err(_) => bail!("sending thread failed"),
    }
    let sent = sent_rx.recv().unwrap_or(0);
    if got < sent {
        bail!("{sent} lines sent but only {got} replies received (daemon stopped?)");
    }
    let _ = reader.read_to_end(&mut Vec::new());
    Ok(if refused > 0 { 1 } else { 0 })
}

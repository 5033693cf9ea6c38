//! `nxaudit status`: whether the daemon runs, and what it last published
//! in `state_dir/status.json` (seq, rates, refusals, disk, sources and
//! sinks), as aligned sections with human sizes, or `--json` for tools.
//! After a clean stop the daemon's last write says `stopped` and when; a
//! status file that still says `running` while no daemon runs means it was
//! killed. Exit 0 when running, 3 when not (as systemctl).

use anyhow::Context as _;
use serde_json::Value;

use super::Context;

/// Arguments of `nxaudit status`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Print the whole status as JSON (for monitoring), plus `"running"`.
    #[arg(long)]
    pub json: bool,
}

/// Runs the subcommand; returns the exit code.
pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<i32> {
    let running = super::rotate::daemon_pid(ctx).ok();
    let path = crate::status::status_file(&ctx.config.state_dir);
    let doc: Value = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| format!("parse {}", path.display()))?,
        Err(_) => serde_json::json!({}),
    };
    let code = if running.is_some() { 0 } else { 3 };
    if args.json {
        let mut d = doc;
        if let Some(m) = d.as_object_mut() {
            m.insert("running".into(), running.is_some().into());
        }
        println!("{}", serde_json::to_string_pretty(&d)?);
        return Ok(code);
    }
    print!("{}", render(&doc, running.map(|p| p.as_raw())));
    Ok(code)
}

/// The human status: a headline, then aligned sections. `running` is the
/// live daemon's pid, if any: it decides whether sources can be "running".
pub fn render(doc: &Value, running: Option<i32>) -> String {
    let mut out = String::new();
    let s = |p: &str| doc.pointer(p).and_then(Value::as_str);
    let t = |p: &str| s(p).map_or("?".to_string(), time);
    let n = |p: &str| doc.pointer(p).and_then(Value::as_u64);
    let has_doc = doc.as_object().is_some_and(|m| !m.is_empty());
    let headline = match (running, s("/state")) {
        (Some(pid), _) => format!(
            "nxauditd: running (pid {pid}), up {}, since {}",
            n("/uptime_s").map_or("?".into(), duration),
            t("/started_at")
        ),
        (None, Some("stopped")) => {
            format!("nxauditd: stopped at {} (clean stop)", t("/stopped_at"))
        }
        (None, _) if has_doc => format!(
            "nxauditd: not running; it did not stop cleanly (killed or crashed): \
             last status written at {}",
            t("/updated_at")
        ),
        (None, _) => "nxauditd: not running (no status file)".to_string(),
    };
    out.push_str(&headline);
    out.push('\n');
    if !has_doc {
        return out;
    }
    let mut section = |title: &str, rows: Vec<(String, String)>| {
        if rows.is_empty() {
            return;
        }
        out.push('\n');
        out.push_str(title);
        out.push('\n');
        for (k, v) in rows {
            out.push_str(&format!("  {k:<20}{v}\n"));
        }
    };
    let num = |p: &str| n(p).map_or("-".to_string(), |v| v.to_string());
    let low = doc.pointer("/low_space") == Some(&Value::Bool(true));
    let mut writer = vec![
        ("last seq".to_string(), num("/writer/last_seq")),
        (
            "written".into(),
            match (n("/writer/written"), doc.pointer("/events_per_s")) {
                (Some(w), Some(r)) if running.is_some() => format!("{w} ({r} events/s)"),
                (Some(w), _) => w.to_string(),
                _ => "-".into(),
            },
        ),
        ("syncs".into(), num("/writer/syncs")),
        ("rotations".into(), num("/writer/rotations")),
        ("duplicate ids".into(), num("/writer/duplicates")),
        (
            "ids forgotten".into(),
            format!(
                "{} (written again if repeated)",
                num("/writer/ids_forgotten")
            ),
        ),
        (
            "active file".into(),
            n("/writer/active_size").map_or("-".into(), size),
        ),
    ];
    if let Some(q) = n("/writer/queue_depth") {
        writer.push(("queue".into(), format!("{q} waiting")));
    }
    writer.push((
        "disk free".into(),
        match n("/disk_free_bytes") {
            Some(f) => format!("{}{}", size(f), if low { " (LOW)" } else { "" }),
            None => "-".into(),
        },
    ));
    if let Some(d) = s("/log_dir") {
        writer.push(("log directory".into(), d.to_string()));
    }
    section("writer", writer);

    let mut refusals: Vec<(String, String)> = doc
        .pointer("/listener/replies/refused")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_u64().filter(|c| *c > 0)?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    if refusals.is_empty() {
        refusals.push(("none".into(), "0".into()));
    }
    section("refusals by kind", refusals);

    let mut conns = vec![
        ("open".to_string(), num("/listener/open")),
        ("accepted".into(), num("/listener/accepted")),
        ("overloaded".into(), num("/listener/overloaded")),
        ("lines".into(), num("/listener/lines")),
    ];
    if let Some(c) = n("/listener/replies/ack_latency/count") {
        conns.push(("acks".into(), c.to_string()));
    }
    section("connections", conns);

    let mut comps = Vec::new();
    let empty = serde_json::Map::new();
    for name in crate::status::component_sections(doc.as_object().unwrap_or(&empty)) {
        let Some(sec) = doc.get(&name) else { continue };
        let state = sec.get("state").and_then(Value::as_str).unwrap_or("?");
        // A daemon that is gone runs nothing, whatever its last file said.
        let state = match (running, state) {
            (None, "disabled" | "stopped") | (Some(_), _) => state.to_string(),
            (None, was) => format!("not running (was {was})"),
        };
        let mut detail = Vec::new();
        for (key, label) in [
            ("records", "records"),
            ("received", "received"),
            ("forwarded", "forwarded"),
            ("written", "written"),
            ("last_seq", "last seq"),
            ("restarts", "restarts"),
            ("errors", "errors"),
        ] {
            if let Some(v) = sec.get(key).and_then(Value::as_u64) {
                detail.push(format!("{label} {v}"));
            }
        }
        for key in ["reason", "last_error"] {
            if let Some(v) = sec.get(key).and_then(Value::as_str) {
                detail.push(format!("{}: {v}", key.replace('_', " ")));
            }
        }
        let d = if detail.is_empty() {
            String::new()
        } else {
            format!("  ({})", detail.join(", "))
        };
        comps.push((name.to_string(), format!("{state}{d}")));
    }
    section("sources and sinks", comps);

    if let Some(r) = doc.get("reload") {
        let v = if r.get("ok") == Some(&Value::Bool(true)) {
            "last SIGHUP applied".to_string()
        } else {
            format!(
                "last SIGHUP refused: {}",
                r.get("error").and_then(Value::as_str).unwrap_or("?")
            )
        };
        section("configuration", vec![("reload".into(), v)]);
    }
    out
}

/// An RFC 3339 time as `2026-12-03 03:47:22 UTC` (as given if it does not parse).
pub fn time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339).map_or(rfc3339.to_string(), |t| {
        t.with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string()
    })
}

/// Bytes as `512 B`, `1.5 KiB`, `12.3 MiB`, `4.0 GiB`.
pub fn size(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Seconds as `45s`, `12m 03s`, `2h 05m`, `3d 04h`.
pub fn duration(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(5 << 30), "5.0 GiB");
        assert_eq!(duration(3725), "1h 02m");
    }

    #[test]
    fn stale_running_file_is_not_running() {
        let doc = serde_json::json!({
            "state": "running", "updated_at": "2026-01-01T00:00:00Z",
            "writer": {"last_seq": 5},
            "journal": {"state": "running", "records": 2},
        });
        let text = render(&doc, None);
        assert!(text.contains("did not stop cleanly"), "{text}");
        assert!(text.contains("not running (was running)"), "{text}");
        assert!(!text.contains('{'), "no raw JSON: {text}");
    }
}

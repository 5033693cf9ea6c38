//! Live status shared by the daemon's parts and published for `nxaudit status`.
//!
//! Each part (writer, listener, journal follower, syslog intake, forwarder)
//! owns one named section and replaces it when something changes. The daemon
//! writes the whole registry atomically to `state_dir/status.json` once a
//! second, which is what the CLI reads: no control socket is needed to ask a
//! running daemon how it is doing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Path of the status file in the state directory: written by the daemon,
/// read by `nxaudit status`.
pub fn status_file(state_dir: &Path) -> PathBuf {
    state_dir.join("status.json")
}

/// Named status sections.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<BTreeMap<String, serde_json::Value>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Replaces section `name`.
    pub fn set(&self, name: &str, value: serde_json::Value) {
        if let Ok(mut m) = self.inner.lock() {
            m.insert(name.to_string(), value);
        }
    }

    /// Changes section `name` in place (starting from an empty object when
    /// it is absent or not an object).
    pub fn update(
        &self,
        name: &str,
        f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
    ) {
        if let Ok(mut m) = self.inner.lock() {
            let v = m
                .entry(name.to_string())
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            if !v.is_object() {
                *v = serde_json::Value::Object(Default::default());
            }
            if let serde_json::Value::Object(o) = v {
                f(o);
            }
        }
    }

    /// A copy of every section.
    pub fn snapshot(&self) -> serde_json::Map<String, serde_json::Value> {
        match self.inner.lock() {
            Ok(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => serde_json::Map::new(),
        }
    }
}

type Doc = serde_json::Map<String, serde_json::Value>;

/// Sections published by sources and the forwarder (each has a `state`),
/// in the order they are shown; other sinks are found by their `kind`.
pub const COMPONENT_SECTIONS: [&str; 4] = ["journal", "auth_journal", "syslog_intake", "forwarder"];

/// `kind` of the section of every sink the sink runner publishes, so status
/// readers list a new sink without knowing its name.
pub const SINK_KIND: &str = "sink";

/// Names of the source and sink sections present in `doc`: the known ones
/// in their order, then any other sink's.
pub fn component_sections(doc: &Doc) -> Vec<String> {
    let mut out: Vec<String> = COMPONENT_SECTIONS
        .iter()
        .filter(|n| doc.contains_key(**n))
        .map(|n| n.to_string())
        .collect();
    for (k, v) in doc {
        if v.get("kind").and_then(|k| k.as_str()) == Some(SINK_KIND) && !out.contains(k) {
            out.push(k.clone());
        }
    }
    out
}

/// Turns a running daemon's last document into its final one: state
/// `stopped`, when, and every source and sink `stopped` too, so nothing
/// still looks alive after a clean exit.
pub fn mark_stopped(doc: &mut Doc, at: chrono::DateTime<chrono::Utc>) {
    doc.insert("state".into(), "stopped".into());
    doc.insert("stopped_at".into(), at.to_rfc3339().into());
    doc.insert("updated_at".into(), at.to_rfc3339().into());
    doc.insert("events_per_s".into(), 0.into());
    for name in component_sections(doc) {
        if let Some(serde_json::Value::Object(s)) = doc.get_mut(&name) {
            if s.get("state").and_then(|v| v.as_str()) != Some("disabled") {
                s.insert("state".into(), "stopped".into());
            }
        }
    }
}

/// The status document in the Prometheus text exposition format (0.0.4),
/// for node_exporter's textfile collector: counters end in `_total`, every
/// family has `# HELP` and `# TYPE`, histogram buckets are cumulative and
/// end with `+Inf`.
pub fn prometheus_text(doc: &Doc) -> String {
    let mut p = Prom::default();
    let num = |path: &str| doc_ptr(doc, path).and_then(|v| v.as_f64());
    let running = doc.get("state").and_then(|v| v.as_str()) != Some("stopped");
    p.family(
        "nxaudit_up",
        "gauge",
        "1 while nxauditd runs, 0 after a clean stop.",
    );
    p.sample("nxaudit_up", &[], if running { 1.0 } else { 0.0 });
    if let Some(t) = doc
        .get("started_at")
        .and_then(|v| v.as_str())
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    {
        p.family(
            "nxaudit_start_time_seconds",
            "gauge",
            "Start time of nxauditd, Unix seconds.",
        );
        p.sample("nxaudit_start_time_seconds", &[], t.timestamp() as f64);
    }
    for (name, kind, help, path) in [
        (
            "nxaudit_last_seq",
            "gauge",
            "Sequence number of the last durable record.",
            "/writer/last_seq",
        ),
        (
            "nxaudit_events_written_total",
            "counter",
            "Records written since start.",
            "/writer/written",
        ),
        (
            "nxaudit_syncs_total",
            "counter",
            "Group commits (fdatasync) since start.",
            "/writer/syncs",
        ),
        (
            "nxaudit_duplicates_total",
            "counter",
            "Events answered with an earlier seq (same id).",
            "/writer/duplicates",
        ),
        (
            "nxaudit_rotations_total",
            "counter",
            "Rotations since start.",
            "/writer/rotations",
        ),
        (
            "nxaudit_writer_queue_depth",
            "gauge",
            "Commands waiting in the writer's queue.",
            "/writer/queue_depth",
        ),
        (
            "nxaudit_active_file_bytes",
            "gauge",
            "Size of the active log file.",
            "/writer/active_size",
        ),
        (
            "nxaudit_disk_free_bytes",
            "gauge",
            "Free bytes on the log directory's filesystem.",
            "/disk_free_bytes",
        ),
        (
            "nxaudit_connections_open",
            "gauge",
            "Open client connections.",
            "/listener/open",
        ),
        (
            "nxaudit_connections_accepted_total",
            "counter",
            "Client connections accepted since start.",
            "/listener/accepted",
        ),
        (
            "nxaudit_connections_overloaded_total",
            "counter",
            "Connections refused at the connection cap.",
            "/listener/overloaded",
        ),
        (
            "nxaudit_lines_received_total",
            "counter",
            "Event lines received on the socket.",
            "/listener/lines",
        ),
    ] {
        if let Some(v) = num(path) {
            p.family(name, kind, help);
            p.sample(name, &[], v);
        }
    }
    if let Some(serde_json::Value::Object(kinds)) = doc_ptr(doc, "/listener/replies/refused") {
        p.family(
            "nxaudit_refusals_total",
            "counter",
            "Events refused on the socket, by error kind.",
        );
        for (k, v) in kinds {
            p.sample(
                "nxaudit_refusals_total",
                &[("kind", k)],
                v.as_f64().unwrap_or(0.0),
            );
        }
    }
    if let Some(h) = doc_ptr(doc, "/listener/replies/ack_latency") {
        let name = "nxaudit_ack_latency_seconds";
        p.family(
            name,
            "histogram",
            "Time from an event's parse to its durable ack.",
        );
        for b in h
            .get("buckets")
            .and_then(|b| b.as_array())
            .into_iter()
            .flatten()
        {
            let le = match b.get("le") {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => continue,
            };
            let c = b.get("count").and_then(|c| c.as_f64()).unwrap_or(0.0);
            p.sample(&format!("{name}_bucket"), &[("le", &le)], c);
        }
        let sum = h.get("sum_s").and_then(|v| v.as_f64()).unwrap_or(0.0);
        let count = h.get("count").and_then(|v| v.as_f64()).unwrap_or(0.0);
        p.sample(&format!("{name}_sum"), &[], sum);
        p.sample(&format!("{name}_count"), &[], count);
    }
    let names = component_sections(doc);
    let states: Vec<(&str, &str)> = names
        .iter()
        .filter_map(|n| Some((n.as_str(), doc.get(n)?.get("state")?.as_str()?)))
        .collect();
    if !states.is_empty() {
        p.family(
            "nxaudit_component_state",
            "gauge",
            "1 for the current state of each source and sink.",
        );
        for (n, s) in states {
            p.sample(
                "nxaudit_component_state",
                &[("component", n), ("state", s)],
                1.0,
            );
        }
    }
    p.out
}

fn doc_ptr<'a>(doc: &'a Doc, path: &str) -> Option<&'a serde_json::Value> {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let first = doc.get(parts.next()?)?;
    match parts.next() {
        Some(rest) => first.pointer(&format!("/{rest}")),
        None => Some(first),
    }
}

/// A tiny writer of the text exposition format.
#[derive(Default)]
struct Prom {
    out: String,
}

impl Prom {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.out
            .push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            let l: Vec<String> = labels
                .iter()
                .map(|(k, v)| {
                    let v = v
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n");
                    format!("{k}=\"{v}\"")
                })
                .collect();
            self.out.push_str(&format!("{{{}}}", l.join(",")));
        }
        self.out.push_str(&format!(" {v}\n"));
    }
}

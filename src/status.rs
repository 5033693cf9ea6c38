//! Live status shared by the daemon's parts and published for `nxaudit status`.
//!
//! Each part (writer, listener, journal follower, syslog intake, forwarder)
//! owns one named section and replaces it when something changes. The daemon
//! writes the whole registry atomically to `state_dir/status.json` once a
//! second, which is what the CLI reads: no control socket is needed to ask a
//! running daemon how it is doing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

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

    /// A copy of every section.
    pub fn snapshot(&self) -> serde_json::Map<String, serde_json::Value> {
        match self.inner.lock() {
            Ok(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => serde_json::Map::new(),
        }
    }
}

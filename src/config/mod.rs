//! Configuration: one TOML file, every key defaulted, unknown keys refused.
//!
//! Key names are the contract of docs/operations.md. `--base-dir DIR` rewrites every
//! path under DIR so a non-root user (and each test) gets a private
//! instance. Sizes accept `64MiB`, durations `1d`/`30s`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::{Deserialize, Serialize};

use crate::catalog::Component;
use crate::record::Format;

pub mod values;

pub use values::{
    check_hostname, check_jwt_algorithms, parse_duration, parse_size, sanitize_hostname, ApiRole,
    FileMode, JwtFamily, MAX_HOSTNAME, MAX_HOSTNAME_LABEL,
};
use values::{duration, jwt_algorithms, size};

/// Default config file path.
pub const DEFAULT_CONFIG: &str = "/etc/nxaudit/nxauditd.toml";

/// Errors loading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    // The io::Error is the source, not part of the message: `{:#}` and
    // error reporters print the chain, so it shows exactly once.
    #[error("cannot read config {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is invalid or names an unknown key (message names key and line).
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with line and column.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The event socket.
    pub socket: PathBuf,
    /// The syslog intake datagram socket.
    pub syslog_socket: PathBuf,
    /// Directory of the audit log files.
    pub log_dir: PathBuf,
    /// Directory of the daemon's state (cursors, positions, status).
    pub state_dir: PathBuf,
    /// Host name written in records; empty = the system's. Must be an
    /// RFC 1123 name (see [`check_hostname`]) so records parse back.
    pub hostname: String,
    /// Socket limits.
    pub listener: ListenerConfig,
    /// The log writer.
    pub log: LogConfig,
    /// Peer → components map.
    pub clients: Vec<ClientRule>,
    /// Engine unit follower.
    pub journal: JournalConfig,
    /// SSH/sudo intake.
    pub auth: AuthConfig,
    /// Forwarding to the local syslog.
    pub forward: ForwardConfig,
    /// The other sinks.
    pub sinks: SinksConfig,
    /// The Audit trail API.
    pub api: ApiConfig,
    /// Prometheus metrics through node_exporter's textfile collector.
    pub metrics: MetricsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: "/run/nxaudit/audit.sock".into(),
            syslog_socket: "/run/nxaudit/syslog.sock".into(),
            log_dir: "/var/log/nexthink".into(),
            state_dir: "/var/lib/nxaudit".into(),
            hostname: String::new(),
            listener: ListenerConfig::default(),
            log: LogConfig::default(),
            clients: Vec::new(),
            journal: JournalConfig::default(),
            auth: AuthConfig::default(),
            forward: ForwardConfig::default(),
            sinks: SinksConfig::default(),
            api: ApiConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// Socket limits (docs/protocol.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// Connection cap; more get `overloaded` and are closed.
    pub max_connections: usize,
    /// Connections one uid may hold, so one local user cannot take every
    /// slot; more get `overloaded` and are closed.
    pub max_connections_per_uid: usize,
    /// Idle connections are closed after this long.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// A started line must be complete within this (one-byte-a-second senders).
    #[serde(with = "duration")]
    pub line_timeout: Duration,
    /// Replies a client does not read within this close its connection.
    #[serde(with = "duration")]
    pub write_timeout: Duration,
    /// Lines in flight per connection before reading pauses.
    pub max_in_flight: usize,
    /// Bytes in flight per connection (escaped size bound) before reading pauses.
    #[serde(with = "size")]
    pub max_in_flight_bytes: u64,
    /// Socket file mode (an octal string in the file, e.g. "0660").
    pub mode: FileMode,
    /// Socket group; empty = leave the group as created.
    pub group: String,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            max_connections: 256,
            max_connections_per_uid: 64,
            idle_timeout: Duration::from_secs(300),
            line_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            max_in_flight: 1024,
            max_in_flight_bytes: 1 << 20,
            mode: FileMode::new(0o660),
            group: "nxaudit".into(),
        }
    }
}

/// When a record counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushPolicy {
    /// `fdatasync` before the ack (group commit).
    Sync,
    /// Ack after `write`; sync every `flush_interval_ms`.
    Interval,
    /// Never sync explicitly.
    None,
}

/// Compression of rotated files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// `.zst`.
    Zstd,
    /// `.gz`.
    Gzip,
    /// Left plain.
    None,
}

/// `[log]`: the writer, rotation and retention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: Format,
    /// Durability policy.
    pub flush: FlushPolicy,
    /// Sync period under `flush = "interval"`.
    pub flush_interval_ms: u64,
    /// Rotate when the active file reaches this size (0 = never).
    #[serde(with = "size")]
    pub rotate_size: u64,
    /// Rotate when the active file is this old (0 = never).
    #[serde(with = "duration")]
    pub rotate_age: Duration,
    /// Keep at most this many rotated files (0 = no limit).
    pub max_files: usize,
    /// Keep at most this many bytes of rotated files (0 = no limit).
    #[serde(with = "size")]
    pub max_total_bytes: u64,
    /// Delete old rotated files to keep this much free (0 = no limit).
    #[serde(with = "size")]
    pub min_free_bytes: u64,
    /// Compression of rotated files.
    pub compress: Compression,
    /// HMAC key file for the chain; empty = plain SHA-256.
    pub chain_key_file: PathBuf,
    /// Forward-secure sealing key file (`nxaudit seal init`); empty = no
    /// sealing. Its directory must be writable by the daemon: the key is
    /// replaced at every seal.
    pub seal_key_file: PathBuf,
    /// Epoch length of sealing: a seal at the end of every interval (the
    /// key file created by `seal init` records it; the daemon uses the
    /// key's).
    #[serde(with = "duration")]
    pub seal_interval: Duration,
    /// Refuse codes the catalog does not list.
    pub strict_codes: bool,
    /// File mode of log files (an octal string in the file).
    pub mode: FileMode,
    /// Group of log files; empty = leave as created.
    pub group: String,
    /// Most events written in one group commit.
    pub max_batch: usize,
    /// Capacity of the writer's queue.
    pub queue: usize,
    /// Bytes the writer's queue may hold, counted as the escaped size bound
    /// of each record (back-pressure beyond).
    #[serde(with = "size")]
    pub queue_bytes: u64,
    /// Memory of the idempotency table (ids of the active and previous
    /// file); past it the oldest ids are forgotten and counted.
    #[serde(with = "size")]
    pub id_table_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: Format::Text,
            flush: FlushPolicy::Sync,
            flush_interval_ms: 1000,
            rotate_size: 64 << 20,
            rotate_age: Duration::from_secs(86_400),
            max_files: 30,
            max_total_bytes: 2 << 30,
            min_free_bytes: 256 << 20,
            compress: Compression::Zstd,
            chain_key_file: PathBuf::new(),
            seal_key_file: PathBuf::new(),
            seal_interval: Duration::from_secs(900),
            strict_codes: false,
            mode: FileMode::new(0o640),
            group: "nxaudit-read".into(),
            max_batch: 4096,
            queue: 8192,
            queue_bytes: 16 << 20,
            id_table_bytes: 8 << 20,
        }
    }
}

/// `[[clients]]`: which peer may write which components.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientRule {
    /// User name (resolved at load).
    #[serde(default)]
    pub user: Option<String>,
    /// Numeric uid.
    #[serde(default)]
    pub uid: Option<u32>,
    /// Components this peer may write; the first is its default.
    pub components: Vec<Component>,
}

/// Where the first start of a journal follower begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirstStart {
    /// Only new entries.
    Now,
    /// From the start of the current boot.
    Boot,
    /// The whole journal.
    All,
}

/// `[journal]`: Engine unit starts and stops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Run the follower.
    pub enabled: bool,
    /// The journalctl binary.
    pub journalctl: PathBuf,
    /// Extra arguments (`--file`, `--directory`, `--merge`).
    pub extra_args: Vec<String>,
    /// Unit globs.
    pub units: Vec<String>,
    /// Where to begin without a cursor.
    pub first_start: FirstStart,
    /// After this long without a single entry the follower's status carries
    /// a `warning` (a sandbox or journal that shows nothing is otherwise
    /// indistinguishable from quiet Engines).
    #[serde(with = "duration")]
    pub quiet_warning: Duration,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            enabled: true,
            journalctl: "journalctl".into(),
            extra_args: Vec::new(),
            units: vec!["nxengine@*.service".into()],
            first_start: FirstStart::Boot,
            quiet_warning: Duration::from_secs(15 * 60),
        }
    }
}

/// Where SSH and sudo messages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthSource {
    /// The syslog intake socket, fed by rsyslog.
    Rsyslog,
    /// The journal follower.
    Journal,
    /// Not collected.
    Off,
}

/// `[auth]`: SSH logons and sudo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Where messages come from.
    pub source: AuthSource,
    /// Accounts recorded; empty = all.
    pub accounts: Vec<String>,
    /// Unparsed lines recorded raw per program per minute, at most.
    pub raw_per_minute: u32,
    /// Uids allowed to send datagrams to the syslog intake (peer credentials
    /// of each datagram): rsyslog's (root on Debian). The daemon's own uid is
    /// always allowed too, so an unprivileged run from a checkout works.
    pub intake_uids: Vec<u32>,
    /// Executables whose messages, sent as uid 0, are trusted as sshd's.
    pub sshd_exes: Vec<String>,
    /// Executables whose messages are trusted as sudo's (sudo logs with the
    /// invoking user's uid, so the executable is the proof).
    pub sudo_exes: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            source: AuthSource::Rsyslog,
            accounts: vec!["nexthink".into()],
            raw_per_minute: 60,
            intake_uids: vec![0],
            sshd_exes: vec![
                "/usr/sbin/sshd".into(),
                "/usr/lib/openssh/sshd-session".into(),
                "/usr/lib/openssh/sshd-auth".into(),
            ],
            sudo_exes: vec!["/usr/bin/sudo".into()],
        }
    }
}

pub use crate::sinks::syslog::ForwardConfig;

/// `[sinks]`: the sinks besides `[forward]`, one section each.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinksConfig {
    /// `[sinks.file]`: a filtered copy of the records in another file.
    pub file: crate::sinks::file::FileSinkConfig,
}

/// `[metrics]`: the status counters in Prometheus text format.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// node_exporter's `--collector.textfile.directory`: the daemon writes
    /// `nxaudit.prom` there (atomically, with the status file, once a
    /// second). Empty = no metrics file.
    pub textfile_dir: PathBuf,
}

/// One federated Engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineRef {
    /// Configured Engine name.
    pub name: String,
    /// Base URL, `https://host:port`.
    pub url: String,
    /// Host name the Engine is also known by.
    #[serde(default)]
    pub host: Option<String>,
}

/// `[api]`: the Audit trail API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Listen address.
    pub listen: String,
    /// `portal` or `engine`.
    pub role: ApiRole,
    /// PEM certificate chain.
    pub tls_cert: PathBuf,
    /// PEM private key.
    pub tls_key: PathBuf,
    /// Public key (PEM), JWKS, or HS256 secret.
    pub jwt_key_file: PathBuf,
    /// Accepted algorithms, all of one family.
    #[serde(with = "jwt_algorithms")]
    pub jwt_algorithms: Vec<Algorithm>,
    /// Required audience, if any.
    pub jwt_audience: Option<String>,
    /// Required issuer, if any.
    pub jwt_issuer: Option<String>,
    /// Environment file with `nginxSelfSignedCertificate`.
    pub env_file: PathBuf,
    /// Federated Engines, in order.
    pub engines: Vec<EngineRef>,
    /// Timeout of one Engine call.
    #[serde(with = "duration")]
    pub engine_timeout: Duration,
    /// Connections at once; more are accepted and closed at once.
    pub max_connections: usize,
    /// Connections at once from one client address (IPv6: one /64), so one
    /// client cannot take every slot.
    pub max_connections_per_addr: usize,
    /// Time allowed for the TLS handshake.
    #[serde(with = "duration")]
    pub handshake_timeout: Duration,
    /// Time allowed to receive the request head once TLS is up.
    #[serde(with = "duration")]
    pub header_timeout: Duration,
    /// A write to a client making no progress this long (it does not read
    /// its response) cuts the connection.
    #[serde(with = "duration")]
    pub write_timeout: Duration,
    /// Whole-request timeout.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "0.0.0.0:443".into(),
            role: ApiRole::Portal,
            tls_cert: "/etc/nxaudit/tls/cert.pem".into(),
            tls_key: "/etc/nxaudit/tls/key.pem".into(),
            jwt_key_file: "/etc/nxaudit/jwt.pem".into(),
            jwt_algorithms: vec![Algorithm::RS256],
            jwt_audience: None,
            jwt_issuer: None,
            env_file: "/var/nexthink/nxauditlog/.env".into(),
            engines: Vec::new(),
            engine_timeout: Duration::from_secs(30),
            max_connections: 512,
            max_connections_per_addr: 32,
            handshake_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(600),
        }
    }
}

impl Config {
    /// Parses TOML text; `path` is only used in messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        // The path to the value goes first: a value refused by its type
        // (a mode, a component, a role) is named by its key, whichever
        // section it is in.
        let de = toml::Deserializer::new(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let message = e.into_inner().to_string().trim_end().replace('\n', " ");
            ConfigError::Parse {
                path: path.to_path_buf(),
                message: if key == "." || key.is_empty() {
                    message
                } else {
                    format!("{key}: {message}")
                },
            }
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Loads `path`; a missing file at the default path means all defaults.
    pub fn load(path: Option<&Path>, base_dir: Option<&Path>) -> Result<Config, ConfigError> {
        let mut cfg = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                Config::from_toml(&text, p)?
            }
            None => {
                let p = Path::new(DEFAULT_CONFIG);
                match std::fs::read_to_string(p) {
                    Ok(text) if base_dir.is_none() => Config::from_toml(&text, p)?,
                    _ => Config::default(),
                }
            }
        };
        if let Some(dir) = base_dir {
            cfg.apply_base_dir(dir);
        }
        Ok(cfg)
    }

    /// Puts every path under `dir` (docs/operations.md), for unprivileged runs and tests.
    pub fn apply_base_dir(&mut self, dir: &Path) {
        self.socket = dir.join("audit.sock");
        self.syslog_socket = dir.join("syslog.sock");
        self.log_dir = dir.join("log");
        self.state_dir = dir.join("state");
        self.listener.group.clear();
        self.log.group.clear();
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |m: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: m,
        };
        if !self.hostname.is_empty() {
            check_hostname(&self.hostname)
                .map_err(|why| bad(format!("hostname {:?}: {why}", self.hostname)))?;
        }
        if self.listener.max_connections == 0 {
            return Err(bad("listener.max_connections must be at least 1".into()));
        }
        if self.listener.max_connections_per_uid == 0 || self.listener.max_in_flight_bytes == 0 {
            return Err(bad(
                "listener.max_connections_per_uid and max_in_flight_bytes must be at least 1"
                    .into(),
            ));
        }
        if self.log.queue_bytes < 64 << 10 {
            return Err(bad("log.queue_bytes must be at least 64KiB".into()));
        }
        if self.log.max_batch == 0 || self.log.queue == 0 {
            return Err(bad("log.max_batch and log.queue must be at least 1".into()));
        }
        if self.log.seal_interval.as_secs() == 0 {
            return Err(bad("log.seal_interval must be at least 1s".into()));
        }
        if self.log.flush == FlushPolicy::Interval && self.log.flush_interval_ms == 0 {
            return Err(bad("log.flush_interval_ms must be at least 1".into()));
        }
        for (i, c) in self.clients.iter().enumerate() {
            if c.user.is_none() == c.uid.is_none() {
                return Err(bad(format!(
                    "clients[{i}]: give exactly one of user or uid"
                )));
            }
        }
        check_jwt_algorithms(&self.api.jwt_algorithms)
            .map_err(|why| bad(format!("api.jwt_algorithms {why}")))?;
        let api = &self.api;
        if api.max_connections == 0 || api.max_connections_per_addr == 0 {
            return Err(bad(
                "api.max_connections and api.max_connections_per_addr must be at least 1".into(),
            ));
        }
        for (key, d) in [
            ("request_timeout", api.request_timeout),
            ("handshake_timeout", api.handshake_timeout),
            ("header_timeout", api.header_timeout),
            ("write_timeout", api.write_timeout),
        ] {
            if d.is_zero() {
                return Err(bad(format!("api.{key} must be positive")));
            }
        }
        self.sinks.file.validate().map_err(|e| bad(e.to_string()))?;
        Ok(())
    }

    /// The host name to write in records: `hostname` when set (validated
    /// at load), else the system's, made RFC 1123 by [`sanitize_hostname`]
    /// (logged once) rather than refusing to audit because of it.
    pub fn effective_hostname(&self) -> String {
        if !self.hostname.is_empty() {
            return sanitize_hostname(&self.hostname);
        }
        let system = nix::unistd::gethostname()
            .ok()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = sanitize_hostname(&system);
        if name != system {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    system = ?system,
                    written = %name,
                    "the system host name is not an RFC 1123 name; records carry the sanitised name (set `hostname` to choose one)"
                );
            });
        }
        name
    }

    /// Path of the active log file.
    pub fn active_log(&self) -> PathBuf {
        self.log_dir.join("audit.log")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_parses() {
        let text = r#"
socket = "/run/nxaudit/audit.sock"
syslog_socket = "/run/nxaudit/syslog.sock"
log_dir = "/var/log/nexthink"
state_dir = "/var/lib/nxaudit"
[log]
format = "text"
flush = "sync"
rotate_size = "64MiB"
rotate_age = "1d"
max_files = 30
max_total_bytes = "2GiB"
min_free_bytes = "256MiB"
compress = "zstd"
chain_key_file = ""
strict_codes = false
[[clients]]
user = "nxportal"
components = ["Portal"]
[journal]
enabled = true
journalctl = "journalctl"
extra_args = []
units = ["nxengine@*.service"]
first_start = "boot"
[auth]
source = "rsyslog"
accounts = ["nexthink"]
[forward]
enabled = true
target = "/dev/log"
codes = []
components = []
[api]
listen = "0.0.0.0:443"
role = "portal"
tls_cert = "/etc/nxaudit/tls/cert.pem"
tls_key = "/etc/nxaudit/tls/key.pem"
jwt_key_file = "/etc/nxaudit/jwt.pem"
jwt_algorithms = ["RS256"]
env_file = "/var/nexthink/nxauditlog/.env"
engines = [{ name = "Engine-01", url = "https://engine01.example:443" }]
"#;
        let c = Config::from_toml(text, Path::new("x.toml")).unwrap();
        assert_eq!(c.log.rotate_size, 64 << 20);
        assert_eq!(c.log.max_total_bytes, 2 << 30);
        assert_eq!(c.api.engines.len(), 1);
        let mut want = Config {
            clients: c.clients.clone(),
            ..Default::default()
        };
        want.api.engines = c.api.engines.clone();
        assert_eq!(c, want);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = Config::from_toml(
            "[log]\nformat = \"text\"\nflsh = \"sync\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("flsh"), "{e}");
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn typed_values_are_read_once_at_load() {
        let c = Config::from_toml(
            "[listener]\nmode = \"0600\"\n[log]\nmode = \"640\"\n[[clients]]\nuid = 7\ncomponents = [\"Console\", \"Engine\"]\n[forward]\ncomponents = [\"Appliance\"]\n[api]\nrole = \"engine\"\njwt_algorithms = [\"ES256\", \"ES384\"]\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.listener.mode.bits(), 0o600);
        assert_eq!(c.log.mode.bits(), 0o640);
        assert_eq!(
            c.clients[0].components,
            vec![Component::WebConsole, Component::Engine]
        );
        assert_eq!(c.forward.components, vec![Component::Appliance]);
        assert_eq!(c.api.role, ApiRole::Engine);
        assert_eq!(
            c.api.jwt_algorithms,
            vec![Algorithm::ES256, Algorithm::ES384]
        );
        // What is written back reads the same.
        let again = toml::to_string(&c).unwrap();
        assert_eq!(Config::from_toml(&again, Path::new("t.toml")).unwrap(), c);
    }

    #[test]
    fn bad_typed_values_name_their_key() {
        for (text, key) in [
            ("[listener]\nmode = \"0x660\"", "listener.mode"),
            ("[listener]\nmode = 432", "listener.mode"),
            ("[log]\nmode = \"99\"", "log.mode"),
            (
                "[[clients]]\nuid = 1\ncomponents = [\"Portl\"]",
                "clients[0].components[0]",
            ),
            (
                "[forward]\ncomponents = [\"Engine\", \"X\"]",
                "forward.components[1]",
            ),
            ("[api]\nrole = \"admin\"", "api.role"),
            ("[api]\njwt_algorithms = [\"none\"]", "api.jwt_algorithms"),
            (
                "[api]\njwt_algorithms = [\"HS256\", \"RS256\"]",
                "api.jwt_algorithms",
            ),
            ("[api]\njwt_algorithms = []", "api.jwt_algorithms"),
            ("[api]\nheader_timeout = 0", "api.header_timeout"),
            (
                "[api]\nmax_connections_per_addr = 0",
                "api.max_connections_per_addr",
            ),
            ("[api]\nengine_timeout = \"soon\"", "api.engine_timeout"),
            ("[journal]\nquiet_warning = \"1y\"", "journal.quiet_warning"),
            (
                "[log]\nmax_total_bytes = \"2 GB-ish\"",
                "log.max_total_bytes",
            ),
        ] {
            let err = Config::from_toml(text, Path::new("t.toml"))
                .expect_err(text)
                .to_string();
            assert!(err.contains(key), "{text:?}: {err}");
        }
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("10"), Some(10));
        assert_eq!(parse_size("1x"), None);
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    }

    #[test]
    fn hostname_checked_at_load_naming_the_key() {
        let p = Path::new("t.toml");
        for bad in [
            "app 1 [x]",
            "a|b",
            "-a",
            "a-",
            "a..b",
            "a_b",
            "h\u{202e}x",
            ".a",
        ] {
            let err = Config::from_toml(&format!("hostname = {bad:?}"), p)
                .expect_err(bad)
                .to_string();
            assert!(err.contains("hostname"), "{bad}: {err}");
        }
        let long_label = "a".repeat(64);
        assert!(Config::from_toml(&format!("hostname = {long_label:?}"), p).is_err());
        let long_name = vec!["a".repeat(63); 4].join(".");
        assert!(long_name.len() > MAX_HOSTNAME);
        assert!(Config::from_toml(&format!("hostname = {long_name:?}"), p).is_err());
        for good in ["appliance1", "0-9.A--b.example", "x", &"a".repeat(63)] {
            let cfg = Config::from_toml(&format!("hostname = {good:?}"), p).expect(good);
            assert_eq!(cfg.effective_hostname(), good);
        }
    }

    #[test]
    fn sanitized_hostname_is_valid() {
        assert_eq!(sanitize_hostname("app 1 [x]"), "app-1--x");
        assert_eq!(sanitize_hostname(""), "localhost");
        assert_eq!(sanitize_hostname("..--.."), "localhost");
        assert_eq!(sanitize_hostname("ok.example"), "ok.example");
        assert_eq!(sanitize_hostname("caf\u{e9}.x"), "caf.x");
        let huge = "b".repeat(300) + "." + &"c".repeat(300);
        for raw in ["app 1 [x]", "a\u{202e}|b", &huge, "-a-.-b-", "x\ny"] {
            let s = sanitize_hostname(raw);
            assert!(check_hostname(&s).is_ok(), "{raw:?} -> {s:?}");
        }
    }
}

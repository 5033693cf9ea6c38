//! The event socket: bind (or take from systemd), accept, identify the peer,
//! cap connections, and hand each connection to [`conn`].
//!
//! A full server answers `overloaded` and closes instead of queueing
//! without bound (the mini-redis `Semaphore` pattern). Peer credentials
//! come from `SO_PEERCRED`; the [`Acl`] maps them to the components they
//! may write.
//!
//! Fairness (docs/protocol.md "Limits"): a peer the ACL knows nothing about gets one
//! `forbidden_component` reply and is closed at accept, before it takes a
//! slot, so ungranted users can never starve root, the daemon's own user or
//! granted ones; and each uid holds at most `max_connections_per_uid` of the
//! `max_connections` slots.

pub mod conn;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::catalog::Component;
use crate::config::{ClientRule, Config};
use crate::protocol::{ErrorKind, Refusal, Reply};
use crate::reload::Reloads;
use crate::shutdown::Shutdown;
use crate::writer::WriterHandle;

/// Errors setting up the socket.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Binding or preparing the socket failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Another daemon is already listening there.
    #[error("another process is already listening on {0}")]
    InUse(PathBuf),
}

/// Which peer may write which components.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    by_uid: HashMap<u32, Vec<Component>>,
    own_uid: u32,
}

impl Acl {
    /// Builds the map from `[[clients]]`; user names are resolved now (an
    /// unknown user is logged and skipped so one typo cannot stop the daemon).
    pub fn from_rules(rules: &[ClientRule]) -> Acl {
        let mut by_uid: HashMap<u32, Vec<Component>> = HashMap::new();
        for r in rules {
            let uid = match (&r.uid, &r.user) {
                (Some(u), _) => Some(*u),
                (None, Some(name)) => match nix::unistd::User::from_name(name) {
                    Ok(Some(u)) => Some(u.uid.as_raw()),
                    _ => {
                        warn!(user = %name, "[[clients]] user does not exist; rule skipped");
                        None
                    }
                },
                _ => None,
            };
            if let Some(uid) = uid {
                let comps = r.components.iter().copied();
                by_uid.entry(uid).or_default().extend(comps);
            }
        }
        Acl {
            by_uid,
            own_uid: nix::unistd::getuid().as_raw(),
        }
    }

    /// Whether `uid` may write `component`. Root and the daemon's own user
    /// (who can write the log file directly anyway) may write Console,
    /// Portal and Engine events; `Appliance` records are the daemon's own and
    /// need an explicit `[[clients]]` grant, root included.
    pub fn allows(&self, uid: u32, component: Component) -> bool {
        let granted = self
            .by_uid
            .get(&uid)
            .is_some_and(|c| c.contains(&component));
        granted || (component != Component::Appliance && self.privileged(uid))
    }

    /// Root or the daemon's own user.
    fn privileged(&self, uid: u32) -> bool {
        uid == 0 || uid == self.own_uid
    }

    /// Whether `uid` may write anything at all: root, the daemon's own user,
    /// or a uid with a `[[clients]]` rule. Others are closed at accept.
    pub fn knows(&self, uid: u32) -> bool {
        self.privileged(uid) || self.by_uid.get(&uid).is_some_and(|c| !c.is_empty())
    }
}

/// Listener counters for status.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Connections refused with `overloaded`.
    pub overloaded: AtomicU64,
    /// Connections of ungranted uids closed at accept.
    pub ungranted: AtomicU64,
    /// Connections closed because a started line did not complete in time.
    pub line_timeouts: AtomicU64,
    /// Connections closed because their replies were not read in time.
    pub write_timeouts: AtomicU64,
    /// Open connections.
    pub open: AtomicU64,
    /// Lines received.
    pub lines: AtomicU64,
    /// Lines refused (any kind).
    pub refused: AtomicU64,
    /// Replies by outcome: refusals per kind and ack latency, for status
    /// and the Prometheus metrics.
    pub replies: ReplyStats,
}

/// Every refusal kind, in wire order: the index into [`ReplyStats`]'s counters.
pub const REFUSAL_KINDS: [ErrorKind; 12] = [
    ErrorKind::BadJson,
    ErrorKind::TooLarge,
    ErrorKind::BadUtf8,
    ErrorKind::MissingField,
    ErrorKind::UnknownField,
    ErrorKind::BadField,
    ErrorKind::UnknownCode,
    ErrorKind::ForbiddenComponent,
    ErrorKind::DiskFull,
    ErrorKind::WriteFailed,
    ErrorKind::Overloaded,
    ErrorKind::ShuttingDown,
];

/// Upper bounds (seconds) of the ack latency histogram buckets; `+Inf` is implied.
pub const ACK_LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Counters of the replies sent on connections: refusals by kind, and the
/// time from a line's parse to the writer's ack (group commit included).
#[derive(Debug, Default)]
pub struct ReplyStats {
    refused: [AtomicU64; 12],
    /// Per bucket (not cumulative); the last one is `+Inf`.
    latency: [AtomicU64; 13],
    latency_sum_us: AtomicU64,
}

impl ReplyStats {
    /// Counts one reply; `latency` is the ack wait of a written event.
    pub fn count(&self, reply: &Reply, latency: Option<std::time::Duration>) {
        if let Some(kind) = reply.error {
            if let Some(i) = REFUSAL_KINDS.iter().position(|k| *k == kind) {
                self.refused[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        if let (true, Some(d)) = (reply.ok, latency) {
            let s = d.as_secs_f64();
            let i = ACK_LATENCY_BUCKETS
                .iter()
                .position(|b| s <= *b)
                .unwrap_or(ACK_LATENCY_BUCKETS.len());
            self.latency[i].fetch_add(1, Ordering::Relaxed);
            self.latency_sum_us
                .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        }
    }

    /// As JSON: `refused` by kind name, `ack_latency` with cumulative
    /// bucket counts (`le` in seconds), sum (seconds) and count.
    pub fn to_json(&self) -> serde_json::Value {
        let refused: serde_json::Map<String, serde_json::Value> = REFUSAL_KINDS
            .iter()
            .zip(&self.refused)
            .map(|(k, c)| (k.as_str().to_string(), c.load(Ordering::Relaxed).into()))
            .collect();
        let mut cumulative = 0u64;
        let mut buckets = Vec::new();
        for (i, c) in self.latency.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let le = ACK_LATENCY_BUCKETS
                .get(i)
                .map_or(serde_json::Value::from("+Inf"), |b| (*b).into());
            buckets.push(serde_json::json!({ "le": le, "count": cumulative }));
        }
        serde_json::json!({
            "refused": refused,
            "ack_latency": {
                "buckets": buckets,
                "sum_s": self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6,
                "count": cumulative,
            },
        })
    }
}

impl ListenerStats {
    /// As JSON for the status file.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "accepted": self.accepted.load(Ordering::Relaxed),
            "overloaded": self.overloaded.load(Ordering::Relaxed),
            "ungranted": self.ungranted.load(Ordering::Relaxed),
            "line_timeouts": self.line_timeouts.load(Ordering::Relaxed),
            "write_timeouts": self.write_timeouts.load(Ordering::Relaxed),
            "open": self.open.load(Ordering::Relaxed),
            "lines": self.lines.load(Ordering::Relaxed),
            "refused": self.refused.load(Ordering::Relaxed),
            "replies": self.replies.to_json(),
        })
    }
}

/// Everything a connection needs, shared.
pub struct Shared {
    /// The writer.
    pub writer: WriterHandle,
    /// Live-reloadable ACL.
    pub acl: RwLock<Arc<Acl>>,
    /// `[log] strict_codes`, live-reloadable.
    pub strict_codes: std::sync::atomic::AtomicBool,
    /// Socket limits.
    pub limits: crate::config::ListenerConfig,
    /// Counters.
    pub stats: ListenerStats,
}

/// Open connections per uid, for `max_connections_per_uid`.
#[derive(Debug, Default)]
struct PerUid(Mutex<HashMap<u32, usize>>);

/// One uid's claim on a connection slot; released on drop.
struct UidSlot {
    table: Arc<PerUid>,
    uid: u32,
}

impl PerUid {
    /// Claims a slot for `uid` unless it already holds `max`.
    fn claim(self: &Arc<Self>, uid: u32, max: usize) -> Option<UidSlot> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(uid).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(UidSlot {
            table: self.clone(),
            uid,
        })
    }
}

impl Drop for UidSlot {
    fn drop(&mut self) {
        let mut m = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.uid);
            }
        }
    }
}

/// Answers one refusal without waiting and closes: the socket's send buffer
/// is empty on a new connection, so one short line always fits, and no task
/// or slot is spent on a peer being turned away.
fn refuse_at_accept(stream: tokio::net::UnixStream, kind: ErrorKind, detail: String) {
    let line = Reply::refused(Refusal::new(kind, detail)).to_line();
    let _ = stream.try_write(&line);
}

/// The event socket and who owns its file.
pub struct Bound {
    /// The listener.
    pub listener: UnixListener,
    /// True when we created the socket file (and remove it at exit); false
    /// when systemd passed it and keeps it open across our restarts.
    pub owned: bool,
}

/// Binds the socket, or takes the one systemd passed (`LISTEN_FDS`).
pub fn bind(cfg: &Config) -> Result<Bound, ListenError> {
    if let Some(listener) = from_systemd(&cfg.socket)? {
        info!("using the socket passed by systemd");
        return Ok(Bound {
            listener,
            owned: false,
        });
    }
    let path = &cfg.socket;
    let io = |what: &'static str| {
        let path = path.clone();
        move |source| ListenError::Io { what, path, source }
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io("create directory of"))?;
    }
    if path.exists() {
        // A socket that still accepts belongs to a running daemon.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ListenError::InUse(path.clone()));
        }
        std::fs::remove_file(path).map_err(io("remove stale socket"))?;
    }
    let l = UnixListener::bind(path).map_err(io("bind"))?;
    let mode = cfg.listener.mode.bits();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io("set mode of"))?;
    crate::fsutil::set_group_path(path, &cfg.listener.group);
    Ok(Bound {
        listener: l,
        owned: true,
    })
}

fn from_systemd(path: &Path) -> Result<Option<UnixListener>, ListenError> {
    let fd = crate::sdsocket::take(path, crate::sdsocket::Kind::Stream);
    crate::sdsocket::forget_environment();
    let Some(fd) = fd else {
        return Ok(None);
    };
    let std_l = std::os::unix::net::UnixListener::from(fd);
    let io = |source| ListenError::Io {
        what: "adopt systemd socket",
        path: path.to_path_buf(),
        source,
    };
    std_l.set_nonblocking(true).map_err(io)?;
    UnixListener::from_std(std_l).map(Some).map_err(io)
}

/// Name of the listener's part in reloads ([`crate::reload`]).
pub const RELOAD_PART: &str = "listener";

impl Shared {
    /// Takes what a reload changes for connections: the `[[clients]]`
    /// ACL and `[log] strict_codes`, for every line read after this.
    pub fn reconfigure(&self, cfg: &Config) {
        let acl = Arc::new(Acl::from_rules(&cfg.clients));
        match self.acl.write() {
            Ok(mut a) => *a = acl,
            // A panic while holding the lock leaves a valid Arc: replace it.
            Err(p) => *p.into_inner() = acl,
        }
        self.strict_codes
            .store(cfg.log.strict_codes, Ordering::Relaxed);
    }
}

/// Accepts until shutdown; each connection runs on `tracker`. Reloads from
/// `reloads` (a part the daemon waits for before it writes 60904) are
/// applied between two accepts.
pub async fn serve(
    listener: UnixListener,
    shared: Arc<Shared>,
    mut shutdown: Shutdown,
    tracker: TaskTracker,
    mut reloads: Reloads,
) {
    let sem = Arc::new(Semaphore::new(shared.limits.max_connections));
    let per_uid = Arc::new(PerUid::default());
    loop {
        let accepted = tokio::select! {
            _ = shutdown.recv() => break,
            new = reloads.next() => {
                shared.reconfigure(&new);
                info!("listener: [[clients]] and strict_codes reloaded");
                // Dropping `new` acknowledges the reload.
                continue;
            }
            r = listener.accept() => r,
        };
        let (stream, _) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: wait a little instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
        let cred = match stream.peer_cred() {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot read peer credentials; closing");
                continue;
            }
        };
        let uid = cred.uid();
        let known = match shared.acl.read() {
            Ok(acl) => acl.knows(uid),
            Err(_) => false,
        };
        if !known {
            shared.stats.ungranted.fetch_add(1, Ordering::Relaxed);
            refuse_at_accept(
                stream,
                ErrorKind::ForbiddenComponent,
                format!("uid {uid} may not write any component"),
            );
            continue;
        }
        let overloaded = |stream, detail: String| {
            shared.stats.overloaded.fetch_add(1, Ordering::Relaxed);
            refuse_at_accept(stream, ErrorKind::Overloaded, detail);
        };
        let Some(slot) = per_uid.claim(uid, shared.limits.max_connections_per_uid) else {
            overloaded(
                stream,
                format!(
                    "uid {uid} has {} connections open, its limit",
                    shared.limits.max_connections_per_uid
                ),
            );
            continue;
        };
        let Ok(permit) = sem.clone().try_acquire_owned() else {
            overloaded(
                stream,
                format!(
                    "{} connections are open, the limit",
                    shared.limits.max_connections
                ),
            );
            continue;
        };
        debug!(uid, pid = ?cred.pid(), "connection");
        let shared = shared.clone();
        let sd = shutdown.clone();
        tracker.spawn(async move {
            shared.stats.open.fetch_add(1, Ordering::Relaxed);
            conn::handle(stream, cred, shared.clone(), sd).await;
            shared.stats.open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
            drop(slot);
        });
    }
}

/// Removes the socket file at shutdown (not when systemd owns it).
pub fn remove_socket(path: &Path) {
    let _ = std::fs::remove_file(path);
}

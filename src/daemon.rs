//! The daemon's lifecycle: open the log, bind the socket, start the tasks,
//! tell systemd we are ready, react to signals, and drain on stop.
//!
//! Order matters for durability: the writer is started (and has recovered
//! and written 60901) before the socket accepts; on `SIGTERM` the socket
//! stops accepting, connections answer what they already read, and only
//! then does the writer write 60902, sync and stop.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::{Config, FlushPolicy};
use crate::fsutil::{self, FsError, InstanceLock};
use crate::listener::{self, Acl, ListenError, Shared};
use crate::reader::Readers;
use crate::reload::ReloadHub;
use crate::shutdown::ShutdownTrigger;
use crate::sinks::SinkEnv;
use crate::sources::SourceContext;
use crate::status::Registry;
use crate::writer::{self, OpenError};

/// How long connections get to finish their in-flight lines on SIGTERM.
const DRAIN: Duration = Duration::from_secs(4);
/// How long a reload waits for every part to apply it before writing 60904.
const RELOAD_ACK: Duration = Duration::from_secs(3);

/// Fatal start-up errors. Messages leave the cause to the error chain
/// (`source()`), so `{:#}` prints each cause once.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The log could not be opened.
    #[error("cannot open the audit log")]
    Open(#[from] OpenError),
    /// The socket could not be bound.
    #[error("cannot listen")]
    Listen(#[from] ListenError),
    /// The state directory is unsafe, or another daemon owns it.
    #[error(transparent)]
    Files(#[from] FsError),
    /// Another I/O step failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Name of the pid file in the state directory: for people and old tools
/// only; the CLI finds the daemon through the instance lock.
const PID_FILE: &str = "nxauditd.pid";

/// Path of the pid file in the state directory.
fn pid_file(state_dir: &Path) -> PathBuf {
    state_dir.join(PID_FILE)
}

/// Replaces the state file `path` with `data` atomically, never through a
/// link; see [`fsutil::replace_file`]. No fsync: the pid and status files
/// are rebuilt at every start, and an fsync here would stall whoever calls
/// it for as long as the filesystem's journal commit takes.
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    fsutil::replace_file(path, data, fsutil::Durability::Volatile).map_err(Into::into)
}

fn notify(state: &[sd_notify::NotifyState]) {
    // Outside systemd NOTIFY_SOCKET is unset and this is a no-op.
    let _ = sd_notify::notify(false, state);
}

/// Runs the daemon until SIGTERM/SIGINT. `config_path` is re-read on SIGHUP.
pub async fn run(
    cfg: Config,
    config_path: Option<PathBuf>,
    base_dir: Option<PathBuf>,
) -> Result<(), DaemonError> {
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    // Handlers first: a SIGTERM that arrives while we start must drain, not kill.
    let sig = |k| {
        signal(k).map_err(|source| DaemonError::Io {
            what: "install signal handler".into(),
            source,
        })
    };
    let mut term = sig(SignalKind::terminate())?;
    let mut int = sig(SignalKind::interrupt())?;
    let mut hup = sig(SignalKind::hangup())?;
    let mut usr1 = sig(SignalKind::user_defined1())?;
    // The instance lock comes before anything else is touched: a second
    // daemon on the same directories must leave them exactly as they are.
    let state = fsutil::Dir::create(&cfg.state_dir, "")?;
    state.check_private()?;
    let _lock = InstanceLock::acquire(&state)?;
    // Temporary files of a replace interrupted by a crash.
    state.remove_temps("");
    let (trigger, shutdown) = ShutdownTrigger::new();
    let registry = Registry::new();
    let hub = ReloadHub::new(cfg.clone());
    // Sinks are built (and their checkpoints registered as readers of the
    // log) before the writer starts: its first retention pass already
    // keeps what they have not read.
    let readers = Readers::default();
    let sink_env = SinkEnv {
        log_dir: cfg.log_dir.clone(),
        state_dir: cfg.state_dir.clone(),
        sync: cfg.log.flush != FlushPolicy::None,
        status: registry.clone(),
        shutdown: shutdown.clone(),
    };
    let sinks = crate::sinks::build(&cfg, &sink_env, &hub.subscribe(), &readers);
    let (writer, recovery, writer_thread) = writer::start_with(&cfg, readers)?;
    info!(
        last_seq = recovery.last_seq,
        torn_bytes = recovery.torn_bytes,
        "audit log open"
    );
    let bound = listener::bind(&cfg)?;
    let pidf = pid_file(&cfg.state_dir);
    if let Err(e) = write_atomic(&pidf, format!("{}\n", std::process::id()).as_bytes()) {
        warn!(error = %e, "cannot write pid file");
    }

    let shared = Arc::new(Shared {
        writer: writer.clone(),
        acl: RwLock::new(Arc::new(Acl::from_rules(&cfg.clients))),
        strict_codes: cfg.log.strict_codes.into(),
        limits: cfg.listener.clone(),
        stats: Default::default(),
    });
    let connections = TaskTracker::new();
    let accept = tokio::spawn(listener::serve(
        bound.listener,
        shared.clone(),
        shutdown.clone(),
        connections.clone(),
        hub.subscribe().part(listener::RELOAD_PART),
    ));

    let ctx = SourceContext {
        config: Arc::new(cfg.clone()),
        writer: writer.clone(),
        shutdown: shutdown.clone(),
        status: registry.clone(),
        reloads: hub.subscribe(),
    };
    let sources = TaskTracker::new();
    for source in crate::sources::build(&cfg, &ctx) {
        tracing::debug!(source = source.name, "source starting");
        sources.spawn(source.task);
    }
    for sink in sinks {
        tracing::debug!(sink = sink.name, "sink starting");
        sources.spawn(sink.task);
    }
    sources.close();

    let periodic = tokio::spawn(periodic(
        cfg.clone(),
        shared.clone(),
        registry.clone(),
        (started, started_at),
        trigger.subscribe(),
    ));

    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("ready; last seq {}", recovery.last_seq)),
    ]);
    info!(socket = %cfg.socket.display(), log = %cfg.log_dir.display(), "nxauditd ready");

    let mut cfg = cfg;
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: draining"); break; }
            _ = int.recv() => { info!("SIGINT: draining"); break; }
            _ = usr1.recv() => {
                match writer.rotate().await {
                    Ok(p) => info!(file = %p.display(), "rotated on SIGUSR1"),
                    Err(e) => warn!(error = %e, "rotation on SIGUSR1 failed"),
                }
            }
            _ = hup.recv() => {
                notify(&[sd_notify::NotifyState::Reloading]);
                match Config::load(config_path.as_deref(), base_dir.as_deref()) {
                    Ok(new) => {
                        // The one reload path (crate::reload): 60904 only
                        // once the listener, sources and sinks run with the
                        // new configuration, so an event after it is never
                        // judged by the old one. (The journal followers read
                        // the watch before each entry and need no wait.)
                        let late = hub.publish(new.clone(), RELOAD_ACK).await;
                        if !late.is_empty() {
                            warn!(parts = ?late, "reload not yet applied by every part after {RELOAD_ACK:?}; writing 60904 anyway");
                        }
                        match writer.reload(new.log.clone()).await {
                            Ok(ack) => info!(seq = ack.seq, "configuration reloaded"),
                            Err(e) => warn!(error = %e, "reload record not written"),
                        }
                        registry.set("reload", serde_json::json!({"ok": true, "late": late}));
                        cfg = new;
                    }
                    Err(e) => {
                        error!(error = %e, "SIGHUP: new configuration refused; keeping the old one");
                        registry.set("reload", serde_json::json!({"ok": false, "error": e.to_string()}));
                    }
                }
                notify(&[sd_notify::NotifyState::Ready]);
            }
        }
    }

    notify(&[sd_notify::NotifyState::Stopping]);
    trigger.fire();
    let _ = accept.await;
    connections.close();
    if tokio::time::timeout(DRAIN, connections.wait())
        .await
        .is_err()
    {
        warn!("some connections did not finish within the drain time");
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), sources.wait()).await;
    match writer.shutdown().await {
        Ok(ack) => info!(seq = ack.seq, "audit log closed"),
        Err(e) => warn!(error = %e, "could not write the stop record"),
    }
    let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
    let _ = periodic.await;
    // Last word for `nxaudit status`: a clean stop, with the final seq (the
    // 60902 record) and no source left looking alive.
    let free = crate::logset::free_bytes(&cfg.log_dir);
    let mut doc = status_doc(
        &cfg, &shared, &registry, started, started_at, 0.0, free, false,
    );
    crate::status::mark_stopped(&mut doc, chrono::Utc::now());
    publish(&cfg, doc).await;
    if bound.owned {
        listener::remove_socket(&cfg.socket);
    }
    let _ = state.remove(PID_FILE);
    Ok(())
}

/// Once a tick: wake the writer, feed the watchdog while the writer moves,
/// publish the status file and sd-notify STATUS, warn on low space.
async fn periodic(
    cfg: Config,
    shared: Arc<Shared>,
    registry: Registry,
    (started, started_at): (Instant, chrono::DateTime<chrono::Utc>),
    mut shutdown: crate::shutdown::Shutdown,
) {
    let tick = writer::tick_period(&cfg.log);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stats = shared.writer.stats().clone();
    let mut last_written = stats.written.load(Ordering::Relaxed);
    let mut last_at = Instant::now();
    let mut last_publish = Instant::now() - Duration::from_secs(10);
    let mut low_space_warned = false;
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            _ = interval.tick() => {}
        }
        shared.writer.tick();
        // Watchdog: only while the writer loop has turned recently.
        let hb = stats.heartbeat_ms.load(Ordering::Relaxed);
        let now_ms = chrono::Utc::now().timestamp_millis() as u64;
        if now_ms.saturating_sub(hb) < 10_000 {
            notify(&[sd_notify::NotifyState::Watchdog]);
        }
        if last_publish.elapsed() < Duration::from_secs(1) {
            continue;
        }
        last_publish = Instant::now();
        let written = stats.written.load(Ordering::Relaxed);
        let rate = (written - last_written) as f64 / last_at.elapsed().as_secs_f64().max(0.001);
        last_written = written;
        last_at = Instant::now();
        let free = crate::logset::free_bytes(&cfg.log_dir);
        let low = free.is_some_and(|f| {
            cfg.log.min_free_bytes > 0 && f < cfg.log.min_free_bytes.saturating_mul(2)
        });
        if low && !low_space_warned {
            warn!(free = ?free, min_free_bytes = cfg.log.min_free_bytes, "low disk space for the audit log");
        }
        low_space_warned = low;
        let doc = status_doc(
            &cfg, &shared, &registry, started, started_at, rate, free, low,
        );
        publish(&cfg, doc).await;
        notify(&[sd_notify::NotifyState::Status(&format!(
            "last seq {}; {} written; {:.1}/s; {} refused (disk full); {} connections{}",
            stats.last_seq.load(Ordering::Relaxed),
            written,
            rate,
            stats.refused_disk_full.load(Ordering::Relaxed),
            shared.stats.open.load(Ordering::Relaxed),
            if low { "; LOW DISK SPACE" } else { "" }
        ))]);
    }
}

/// The status document: every registry section plus the writer's and the
/// listener's counters.
#[allow(clippy::too_many_arguments)]
fn status_doc(
    cfg: &Config,
    shared: &Shared,
    registry: &Registry,
    started: Instant,
    started_at: chrono::DateTime<chrono::Utc>,
    rate: f64,
    free: Option<u64>,
    low: bool,
) -> serde_json::Map<String, serde_json::Value> {
    let mut doc = registry.snapshot();
    doc.insert("state".into(), "running".into());
    doc.insert("pid".into(), std::process::id().into());
    doc.insert("started_at".into(), started_at.to_rfc3339().into());
    doc.insert("uptime_s".into(), started.elapsed().as_secs().into());
    doc.insert("updated_at".into(), chrono::Utc::now().to_rfc3339().into());
    doc.insert(
        "events_per_s".into(),
        serde_json::json!((rate * 10.0).round() / 10.0),
    );
    doc.insert("disk_free_bytes".into(), serde_json::json!(free));
    doc.insert("low_space".into(), low.into());
    doc.insert("log_dir".into(), cfg.log_dir.display().to_string().into());
    let mut w = shared.writer.stats().to_json();
    if let Some(m) = w.as_object_mut() {
        m.insert("queue_depth".into(), shared.writer.queue_depth().into());
    }
    doc.insert("writer".into(), w);
    doc.insert("listener".into(), shared.stats.to_json());
    doc
}

/// Writes the status file and, when `[metrics] textfile_dir` is set, the
/// Prometheus textfile, each atomically and off the reactor (file I/O can
/// block for milliseconds).
async fn publish(cfg: &Config, doc: serde_json::Map<String, serde_json::Value>) {
    let status_path = crate::status::status_file(&cfg.state_dir);
    let metrics_dir = cfg.metrics.textfile_dir.clone();
    let res = tokio::task::spawn_blocking(move || {
        let text = serde_json::to_vec_pretty(&doc).map_err(std::io::Error::other)?;
        write_atomic(&status_path, &text)?;
        if !metrics_dir.as_os_str().is_empty() {
            let prom = crate::status::prometheus_text(&doc);
            write_atomic(&metrics_dir.join("nxaudit.prom"), prom.as_bytes()).map_err(|e| {
                std::io::Error::new(e.kind(), format!("{}: {e}", metrics_dir.display()))
            })?;
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
    if let Ok(Err(e)) = res {
        warn!(error = %e, "cannot write status or metrics file");
    }
}

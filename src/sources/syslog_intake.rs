//! The syslog intake: a Unix datagram socket (`syslog_socket`, default
//! `/run/nxaudit/syslog.sock`) to which rsyslog forwards sshd and sudo
//! messages (`packaging/rsyslog/30-nxaudit.conf`). Each datagram is parsed
//! ([`syslog_msg`]), classified ([`AuthClassifier`]) and appended to the
//! audit log; the counters go to the `syslog_intake` status section.
//!
//! Why it is built this way:
//! - One task, one datagram at a time, awaiting each durable append: the
//!   kernel's socket queue and rsyslog's action queue are the buffer, so a
//!   slow disk slows rsyslog's forwarding action, never memory use here.
//! - Nothing a sender writes can stop the task: empty, non-UTF-8, header-less
//!   or oversize datagrams are counted and, where possible, still classified
//!   (a datagram over 64 KiB is cut by the kernel at our buffer; its record
//!   gets `truncated="true"`).
//! - No loop: the forwarder (`sinks::syslog_forward`) sends records to the
//!   local syslog with APP-NAME `nxauditd`; should rsyslog be configured to
//!   send them back here, they are dropped and counted as `looped`.
//! - A failed append (disk full, I/O error) is retried with back-off: the
//!   message has already left rsyslog, so giving up would lose it.
//! - Under systemd the socket can be owned by `nxauditd.socket`
//!   (`ListenDatagram=`): it then outlives daemon restarts and rsyslog's
//!   `omuxsock` (which drops what it cannot send) finds it during a restart.
//!   The listener takes the stream socket and clears `LISTEN_FDS`, so the
//!   intake recognizes its inherited socket by its bound address.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tokio::net::UnixDatagram;
use tracing::{info, warn};

use crate::record::format_ts;
use crate::shutdown::Shutdown;
use crate::sources::auth_parse::AuthClassifier;
use crate::sources::syslog_msg;
use crate::sources::SourceContext;
use crate::status::Registry;
use crate::writer::{AppendError, WriterHandle};

/// Largest datagram accepted whole; longer ones are cut to this size.
pub const MAX_DATAGRAM: usize = 64 * 1024;
/// APP-NAME of the daemon's own forwarded messages; never ingested.
pub const OWN_APP_NAME: &str = "nxauditd";
/// Name of the status section.
pub const STATUS_SECTION: &str = "syslog_intake";
/// Receive buffer asked of the kernel, so bursts wait in the socket.
const RCVBUF: usize = 1 << 20;

/// Why the socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// Creating, binding or setting up the socket failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The step that failed.
        what: &'static str,
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Something other than a socket is in the way.
    #[error("{0} exists and is not a socket; not removing it")]
    NotASocket(PathBuf),
}

/// Counters of the intake itself (the classifier keeps its own).
#[derive(Debug, Default, Clone)]
struct Counters {
    received: u64,
    appended: u64,
    looped: u64,
    oversize: u64,
    malformed: u64,
    empty: u64,
    errors: u64,
    last_error: Option<String>,
    last_seq: Option<u64>,
}

struct Intake {
    writer: WriterHandle,
    status: Registry,
    socket: PathBuf,
    hostname: String,
    classifier: AuthClassifier,
    counters: Counters,
    inherited: bool,
}

/// Runs the intake until shutdown. Never returns early on bad input; if the
/// socket cannot be bound it retries with back-off (the status says why).
pub async fn run(ctx: SourceContext) {
    let mut shutdown = ctx.shutdown.clone();
    let mut reload_ctx = ctx.clone();
    let mut intake = Intake {
        writer: ctx.writer.clone(),
        status: ctx.status.clone(),
        socket: ctx.config.syslog_socket.clone(),
        hostname: ctx.config.effective_hostname(),
        classifier: AuthClassifier::new(&ctx.config.auth),
        counters: Counters::default(),
        inherited: false,
    };
    let mut backoff = Duration::from_millis(200);
    let sock = loop {
        match open_socket(&ctx.config.syslog_socket, &ctx.config.listener.group) {
            Ok((s, inherited)) => {
                intake.inherited = inherited;
                break s;
            }
            Err(e) => {
                warn!(error = %e, "syslog intake: cannot open the socket; retrying");
                intake.fail(e.to_string());
                intake.publish("error");
                tokio::select! {
                    _ = shutdown.recv() => {
                        intake.publish("stopped");
                        return;
                    }
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    };
    info!(socket = %intake.socket.display(), inherited = intake.inherited, "syslog intake listening");
    intake.publish("listening");
    intake.serve(&sock, &mut shutdown, &mut reload_ctx).await;
    drop(sock);
    if !intake.inherited {
        let _ = std::fs::remove_file(&intake.socket);
    }
    intake.publish("stopped");
}

impl Intake {
    async fn serve(
        &mut self,
        sock: &UnixDatagram,
        shutdown: &mut Shutdown,
        ctx: &mut SourceContext,
    ) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut dirty = false;
        loop {
            tokio::select! {
                _ = shutdown.recv() => break,
                r = sock.recv(&mut buf) => match r {
                    Ok(n) => {
                        let oversize = n > MAX_DATAGRAM;
                        let n = n.min(MAX_DATAGRAM);
                        if !self.handle(&buf[..n], oversize, shutdown).await {
                            break;
                        }
                        dirty = true;
                    }
                    Err(e) => {
                        // Datagram sockets have no per-peer errors; whatever
                        // this is, pause briefly rather than spin.
                        self.fail(format!("recv: {e}"));
                        dirty = true;
                        tokio::select! {
                            _ = shutdown.recv() => break,
                            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        }
                    }
                },
                _ = tick.tick() => {
                    if let Some(new) = ctx.take_reload() {
                        self.classifier.set_accounts(new.auth.accounts.clone());
                        info!("syslog intake: accounts filter reloaded");
                    }
                    if dirty {
                        self.publish("listening");
                        dirty = false;
                    }
                }
            }
        }
    }

    /// Handles one datagram; false when the writer has shut down.
    async fn handle(&mut self, data: &[u8], oversize: bool, shutdown: &mut Shutdown) -> bool {
        self.counters.received += 1;
        if oversize {
            self.counters.oversize += 1;
        }
        let msg = match syslog_msg::parse(data) {
            Ok(m) => m,
            Err(_) => {
                self.counters.empty += 1;
                return true;
            }
        };
        if !msg.wellformed {
            self.counters.malformed += 1;
        }
        let program = msg.app_name.as_deref().unwrap_or("");
        if program == OWN_APP_NAME {
            self.counters.looped += 1;
            return true;
        }
        let Some(mut entry) = self.classifier.classify(program, msg.pid(), &msg.message) else {
            return true;
        };
        if entry.time.is_none() {
            entry.time = msg.timestamp_utc(Utc::now()).map(format_ts);
        }
        if let Some(h) = msg.hostname.as_deref() {
            // rsyslog names the local host as configured; a different name
            // means the message was relayed from elsewhere: say so.
            if h != self.hostname
                && h != "localhost"
                && !self.hostname.starts_with(&format!("{h}."))
            {
                entry = entry.field("syslog_host", h);
            }
        }
        if oversize && entry.get_field("truncated").is_none() {
            entry = entry.field("truncated", "true");
        }
        self.append(entry, shutdown).await
    }

    /// Appends until durable; retries failures with back-off. False when the
    /// writer is gone or the daemon stops while retrying.
    async fn append(&mut self, entry: crate::record::Entry, shutdown: &mut Shutdown) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.writer.append(entry.clone()).await {
                Ok(ack) => {
                    self.counters.appended += 1;
                    self.counters.last_seq = Some(ack.seq);
                    return true;
                }
                Err(AppendError::ShuttingDown) => return false,
                Err(e) => {
                    if self.counters.last_error.as_deref() != Some(&e.to_string()) {
                        warn!(error = %e, "syslog intake: append failed; retrying");
                    }
                    self.fail(e.to_string());
                    self.publish("retrying");
                    tokio::select! {
                        _ = shutdown.recv() => return false,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn fail(&mut self, e: String) {
        self.counters.errors += 1;
        self.counters.last_error = Some(e);
    }

    fn publish(&self, state: &str) {
        let c = &self.counters;
        let a = self.classifier.stats();
        self.status.set(
            STATUS_SECTION,
            json!({
                "state": state,
                "socket": self.socket.display().to_string(),
                "inherited": self.inherited,
                "received": c.received,
                "parsed": a.parsed,
                "raw": a.raw,
                "ignored": a.ignored,
                "filtered": a.filtered,
                "suppressed": a.suppressed,
                "other_program": a.other_program,
                "looped": c.looped,
                "oversize": c.oversize,
                "malformed": c.malformed,
                "empty": c.empty,
                "appended": c.appended,
                "last_seq": c.last_seq,
                "errors": c.errors,
                "last_error": c.last_error,
            }),
        );
    }
}

/// Opens the intake socket: the one systemd passed, else a fresh bind
/// (removing a stale socket file first). Returns it and whether it was
/// inherited.
pub fn open_socket(path: &Path, group: &str) -> Result<(UnixDatagram, bool), IntakeError> {
    let io_err = |what: &'static str| {
        let path = path.to_path_buf();
        move |source| IntakeError::Io { what, path, source }
    };
    if let Some(std_sock) = inherited_socket(path) {
        std_sock
            .set_nonblocking(true)
            .map_err(io_err("set non-blocking"))?;
        let s = UnixDatagram::from_std(std_sock).map_err(io_err("register"))?;
        return Ok((s, true));
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err("create directory of"))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(io_err("remove stale socket"))?;
        }
        Ok(_) => return Err(IntakeError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("inspect")(e)),
    }
    let sock = UnixDatagram::bind(path).map_err(io_err("bind"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(io_err("set mode of"))?;
    crate::daemon::set_group(path, group);
    // Best effort: a larger queue absorbs bursts (rsyslog blocks meanwhile).
    let _ = nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBuf, &RCVBUF);
    Ok((sock, false))
}

/// A datagram socket bound to `path` among the file descriptors systemd
/// passes (3 and up), recognized by type and address.
fn inherited_socket(path: &Path) -> Option<std::os::unix::net::UnixDatagram> {
    use nix::sys::socket::{getsockname, getsockopt, sockopt, SockType, UnixAddr};
    // systemd passes at most a handful; 3..32 covers any unit file.
    for fd in 3 as RawFd..32 {
        // SAFETY: the descriptor is only borrowed for the duration of these
        // calls; a closed number makes them fail with EBADF.
        let b = unsafe { BorrowedFd::borrow_raw(fd) };
        if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_err() {
            continue;
        }
        if getsockopt(&b, sockopt::SockType).ok() != Some(SockType::Datagram) {
            continue;
        }
        let Ok(addr) = getsockname::<UnixAddr>(b.as_raw_fd()) else {
            continue;
        };
        if addr.path() == Some(path) {
            // SAFETY: a datagram socket bound to our configured path is only
            // ever created by systemd for us; we take ownership of it once
            // (this runs once per daemon start).
            return Some(unsafe { std::os::unix::net::UnixDatagram::from_raw_fd(fd) });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::logset;
    use crate::record::{parse_line, ParsedRecord};
    use crate::shutdown::ShutdownTrigger;
    use std::sync::Arc;
    use std::time::Instant;

    async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn records(cfg: &Config) -> Vec<ParsedRecord> {
        let mut out = Vec::new();
        for f in logset::list(&cfg.log_dir).unwrap() {
            for l in logset::Lines::new(logset::open(&f).unwrap()) {
                out.push(parse_line(&l.unwrap()).unwrap());
            }
        }
        out
    }

    fn section(reg: &Registry) -> serde_json::Value {
        reg.snapshot()
            .get(STATUS_SECTION)
            .cloned()
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn adopts_the_socket_systemd_passed() {
        use std::os::fd::IntoRawFd;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("syslog.sock");
        // What systemd does for ListenDatagram=: a bound socket on a low
        // descriptor, ours to own.
        let fd = std::os::unix::net::UnixDatagram::bind(&path)
            .unwrap()
            .into_raw_fd();
        // SAFETY: F_DUPFD on a descriptor we own; the original is closed
        // only when the duplicate was made.
        let low = unsafe { libc::fcntl(fd, libc::F_DUPFD, 3) };
        assert!(low >= 3);
        if low != fd {
            unsafe { libc::close(fd) };
        }
        if low >= 32 {
            // Too many descriptors open in this test process to pose as
            // systemd; the scan range is what systemd uses.
            unsafe { libc::close(low) };
            return;
        }
        let (sock, inherited) = open_socket(&path, "").unwrap();
        assert!(inherited);
        assert_eq!(sock.as_raw_fd(), low);
        std::os::unix::net::UnixDatagram::unbound()
            .unwrap()
            .send_to(b"x", &path)
            .unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(sock.recv(&mut buf).await.unwrap(), 1);
        // A socket bound elsewhere is not taken.
        let other = dir.path().join("other.sock");
        let (_s, inherited) = open_socket(&other, "").unwrap();
        assert!(!inherited);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn intake_end_to_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.apply_base_dir(dir.path());
        cfg.auth.accounts = vec!["nexthink".into()];
        cfg.hostname = "appliance1".into();
        std::fs::create_dir_all(&cfg.state_dir).unwrap();
        let (writer, _rec, thread) = crate::writer::start(&cfg).unwrap();
        let (trigger, shutdown) = ShutdownTrigger::new();
        let reg = Registry::new();
        let ctx =
            SourceContext::fixed(Arc::new(cfg.clone()), writer.clone(), shutdown, reg.clone());
        // A stale socket file from a crashed run is replaced.
        std::os::unix::net::UnixDatagram::bind(&cfg.syslog_socket).unwrap();
        let task = tokio::spawn(run(ctx));
        wait_for("listening", || section(&reg)["state"] == "listening").await;
        let mode = std::fs::metadata(&cfg.syslog_socket)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o660);

        let tx = std::os::unix::net::UnixDatagram::unbound().unwrap();
        let send = |b: &[u8]| {
            tx.send_to(b, &cfg.syslog_socket).unwrap();
        };
        send(b"<86>Nov 25 15:08:39 sshd[12]: Accepted publickey for nexthink from 2001:db8::5 port 4242 ssh2: ED25519 SHA256:abc");
        send(b"<86>Nov 25 15:08:39 sshd[13]: Accepted publickey for someone from 10.0.0.1 port 1 ssh2");
        send(b"<85>1 2026-11-25T15:08:40.5Z other-host sudo 77 - - nexthink : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/echo \"hi\"");
        send(b"<85>1 2026-11-25T15:08:41Z appliance1 nxauditd 1 60001 [nxaudit@32473 seq=\"1\"] SSH logon");
        send(b"");
        send(b"\xff\xfe garbage \x00 without header");
        send(b"<999>1 - - - - - [unterminated");
        let mut big = b"<86>Nov 25 15:08:39 sshd[14]: ".to_vec();
        big.resize(MAX_DATAGRAM + 5000, b'x');
        send(&big);
        send(b"<38>Nov 25 15:08:39 cron[1]: not ours");
        wait_for("all datagrams", || section(&reg)["received"] == 9).await;
        wait_for("published", || section(&reg)["appended"] == 3).await;
        let s = section(&reg);
        assert_eq!(s["parsed"], 2, "{s}");
        assert_eq!(s["filtered"], 1, "{s}");
        assert_eq!(s["raw"], 1, "{s}");
        assert_eq!(s["looped"], 1, "{s}");
        assert_eq!(s["oversize"], 1, "{s}");
        assert_eq!(s["empty"], 1, "{s}");
        assert_eq!(s["other_program"], 3, "{s}");
        assert_eq!(s["malformed"], 2, "{s}");

        trigger.fire();
        task.await.unwrap();
        assert_eq!(section(&reg)["state"], "stopped");
        assert!(!cfg.syslog_socket.exists());
        writer.shutdown().await.unwrap();
        thread.join().unwrap();

        let recs: Vec<_> = records(&cfg)
            .into_iter()
            .filter(|r| r.code < 60200)
            .collect();
        assert_eq!(recs.len(), 3, "{recs:#?}");
        assert_eq!(recs[0].code, 60001);
        assert_eq!(recs[0].account, "nexthink");
        assert_eq!(recs[0].field("client"), Some("2001:db8::5"));
        assert_eq!(recs[0].field("port"), Some("4242"));
        assert!(recs[0].field("time").is_some());
        assert_eq!(recs[1].code, 60101);
        assert_eq!(recs[1].field("command"), Some("/bin/echo \"hi\""));
        assert_eq!(recs[1].field("time"), Some("2026-11-25T15:08:40.500000Z"));
        assert_eq!(recs[1].field("syslog_host"), Some("other-host"));
        assert_eq!(recs[2].code, 60002);
        assert_eq!(recs[2].field("parsed"), Some("false"));
        assert_eq!(recs[2].field("truncated"), Some("true"));
    }
}

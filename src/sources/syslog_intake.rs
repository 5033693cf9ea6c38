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
//! - No loop: the forwarder (`sinks::syslog`) sends records to the
//!   local syslog with APP-NAME `nxauditd`; should rsyslog be configured to
//!   send them back here, they are dropped and counted as `looped`.
//! - A failed append (disk full, I/O error) is retried with back-off: the
//!   message has already left rsyslog, so giving up would lose it.
//! - Who may write here: the socket is group-writable, so every datagram's
//!   peer credentials (`SO_PASSCRED`, `SCM_CREDENTIALS`, which the kernel
//!   fills in and only a privileged sender can change) are checked against
//!   `[auth] intake_uids` (rsyslog's uid, root on Debian) plus the daemon's
//!   own uid. Other datagrams are dropped before parsing, counted as
//!   `foreign` in the status, and warned about at most once a minute.
//! - Who wrote the message: rsyslog's template (`packaging/rsyslog/`) adds a
//!   `[sender@32473 uid= pid= exe= comm=]` element with what rsyslog knows
//!   for certain about the original sender (imuxsock's trusted properties or
//!   the journal's `_UID`/`_PID`/`_EXE`/`_COMM`); the classifier trusts an
//!   sshd or sudo line only from the proven program (see `auth_parse`).
//!   The element is the first after the header, before anything the sender
//!   wrote, so the sender cannot supply its own; two of them, or one that
//!   does not parse, prove nothing.
//! - Reloads (SIGHUP) are applied as soon as they are published, between
//!   two datagrams, and acknowledged so the daemon writes 60904 only after.
//! - Under systemd the socket can be owned by `nxauditd.socket`
//!   (`ListenDatagram=`): it then outlives daemon restarts and rsyslog's
//!   `omuxsock` (which drops what it cannot send) finds it during a restart.
//!   The listener takes the stream socket and clears `LISTEN_FDS`, so the
//!   intake recognizes its inherited socket by its bound address.

use std::io;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, UnixAddr, UnixCredentials,
};
use serde_json::json;
use tokio::io::Interest;
use tokio::net::UnixDatagram;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::config::{AuthConfig, Config};
use crate::record::format_ts;
use crate::shutdown::Shutdown;
use crate::sources::auth_parse::{AuthClassifier, Sender};
use crate::sources::syslog_msg;
use crate::sources::{ReloadMode, Source, SourceContext, SourceError};
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
/// SD-ID of the element rsyslog's template adds with the proven sender.
pub const SENDER_SD_ID: &str = "sender@32473";
/// At most one warning about foreign senders per this period.
const FOREIGN_WARN_EVERY: Duration = Duration::from_secs(60);

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
    foreign: u64,
    last_foreign: Option<(u32, i32)>,
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
    /// Uids whose datagrams are taken (`intake_uids` and our own).
    allowed_uids: Vec<u32>,
    /// When foreign senders were last warned about, and how many since.
    foreign_warned: Option<Instant>,
    foreign_unwarned: u64,
}

/// `intake_uids` plus the daemon's own uid (an unprivileged run from a
/// checkout, the tests): anything running as that uid can already write
/// the log directly.
fn allowed_uids(cfg: &AuthConfig) -> Vec<u32> {
    let mut v = cfg.intake_uids.clone();
    let own = nix::unistd::geteuid().as_raw();
    if !v.contains(&own) {
        v.push(own);
    }
    v
}

/// The syslog intake as a [`Source`] (status section `syslog_intake`):
/// the socket path and group are taken at build, the `[auth]` filters
/// again at each reload.
pub struct SyslogIntake {
    socket: PathBuf,
    group: String,
    hostname: String,
    auth: AuthConfig,
    /// Made on the first run; its counters survive a restart.
    intake: Option<Intake>,
}

impl AuthConfig {
    /// The syslog intake for `[auth] source = "rsyslog"`; `cfg` gives the
    /// socket path, the socket's group and the host name.
    pub fn build_intake(&self, cfg: &Config) -> SyslogIntake {
        SyslogIntake {
            socket: cfg.syslog_socket.clone(),
            group: cfg.listener.group.clone(),
            hostname: cfg.effective_hostname(),
            auth: self.clone(),
            intake: None,
        }
    }
}

impl Source for SyslogIntake {
    fn name(&self) -> &'static str {
        STATUS_SECTION
    }

    /// Reloads are applied between two datagrams and acknowledged.
    fn reload_mode(&self) -> ReloadMode {
        ReloadMode::Acknowledged
    }

    fn reconfigure(&mut self, cfg: &Config) {
        match self.intake.as_mut() {
            Some(i) => i.reconfigure(&cfg.auth),
            None => self.auth = cfg.auth.clone(),
        }
    }

    /// Listens until shutdown. Never returns early on bad input; an error
    /// when the socket cannot be opened (the runner retries with back-off;
    /// the status says why).
    async fn run(&mut self, ctx: &mut SourceContext) -> Result<(), SourceError> {
        let mut shutdown = ctx.shutdown.clone();
        let intake = self.intake.get_or_insert_with(|| Intake {
            writer: ctx.writer.clone(),
            status: ctx.status.clone(),
            socket: self.socket.clone(),
            hostname: self.hostname.clone(),
            classifier: AuthClassifier::new(&self.auth),
            counters: Counters::default(),
            inherited: false,
            allowed_uids: allowed_uids(&self.auth),
            foreign_warned: None,
            foreign_unwarned: 0,
        });
        let sock = match open_socket(&intake.socket, &self.group) {
            Ok((s, inherited)) => {
                intake.inherited = inherited;
                s
            }
            Err(e) => {
                intake.fail(e.to_string());
                intake.publish("error");
                return Err(SourceError::new(e));
            }
        };
        info!(socket = %intake.socket.display(), inherited = intake.inherited, "syslog intake listening");
        intake.publish("listening");
        intake.serve(&sock, &mut shutdown, ctx).await;
        drop(sock);
        if !intake.inherited {
            let _ = std::fs::remove_file(&intake.socket);
        }
        intake.publish("stopped");
        Ok(())
    }
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
                new = ctx.next_reload() => {
                    self.reconfigure(&new.auth);
                    info!("syslog intake: [auth] filters reloaded");
                    // Dropping `new` acknowledges the reload.
                }
                r = sock.async_io(Interest::READABLE, || recv_with_creds(sock.as_raw_fd(), &mut buf)) => match r {
                    Ok((n, creds)) => {
                        dirty = true;
                        if !self.sender_allowed(creds) {
                            continue;
                        }
                        let oversize = n > MAX_DATAGRAM;
                        let n = n.min(MAX_DATAGRAM);
                        if !self.handle(&buf[..n], oversize, shutdown).await {
                            break;
                        }
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
                    if dirty {
                        self.publish("listening");
                        dirty = false;
                    }
                }
            }
        }
    }

    /// Takes the reloaded `[auth]` filters and allowed uids.
    fn reconfigure(&mut self, auth: &AuthConfig) {
        self.classifier.reload(auth);
        self.allowed_uids = allowed_uids(auth);
    }

    /// Whether a datagram with these peer credentials may be read; counts
    /// and (rate-limited) warns about the others.
    fn sender_allowed(&mut self, creds: Option<UnixCredentials>) -> bool {
        if creds.is_some_and(|c| self.allowed_uids.contains(&c.uid())) {
            return true;
        }
        self.counters.received += 1;
        self.counters.foreign += 1;
        // No credentials cannot happen with SO_PASSCRED on; shown as uid -1.
        let who = creds.map_or((u32::MAX, -1), |c| (c.uid(), c.pid()));
        self.counters.last_foreign = Some(who);
        self.foreign_unwarned += 1;
        if self
            .foreign_warned
            .map_or(true, |t| t.elapsed() >= FOREIGN_WARN_EVERY)
        {
            warn!(
                uid = who.0,
                pid = who.1,
                dropped = self.foreign_unwarned,
                allowed = ?self.allowed_uids,
                "syslog intake: datagrams from a uid not in [auth] intake_uids dropped"
            );
            self.foreign_warned = Some(Instant::now());
            self.foreign_unwarned = 0;
        }
        false
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
        let sender = proven_sender(&msg);
        let Some(mut entry) = self
            .classifier
            .classify(program, msg.pid(), &msg.message, &sender)
        else {
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
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
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
                    if !backoff.wait(shutdown).await {
                        return false;
                    }
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
                "foreign": c.foreign,
                "last_foreign_uid": c.last_foreign.map(|f| f.0),
                "last_foreign_pid": c.last_foreign.map(|f| f.1),
                "unverified": a.unverified,
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
    if let Some(fd) = crate::sdsocket::take(path, crate::sdsocket::Kind::Datagram) {
        let std_sock = std::os::unix::net::UnixDatagram::from(fd);
        std_sock
            .set_nonblocking(true)
            .map_err(io_err("set non-blocking"))?;
        let s = UnixDatagram::from_std(std_sock).map_err(io_err("register"))?;
        pass_credentials(&s).map_err(io_err("enable SO_PASSCRED on"))?;
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
    pass_credentials(&sock).map_err(io_err("enable SO_PASSCRED on"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(io_err("set mode of"))?;
    crate::fsutil::set_group_path(path, group);
    // Best effort: a larger queue absorbs bursts (rsyslog blocks meanwhile).
    let _ = nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBuf, &RCVBUF);
    Ok((sock, false))
}

/// Asks the kernel to attach the sender's credentials to every datagram.
fn pass_credentials(sock: &UnixDatagram) -> io::Result<()> {
    setsockopt(sock, sockopt::PassCred, &true).map_err(io::Error::from)
}

/// Receives one datagram into `buf` with the sender's credentials.
fn recv_with_creds(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<UnixCredentials>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(UnixCredentials);
    let msg = recvmsg::<UnixAddr>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    let mut creds = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmCredentials(u) = c {
                creds = Some(u);
            }
        }
    }
    Ok((msg.bytes, creds))
}

/// What rsyslog proved about the original sender: the one `sender@32473`
/// element, when there is exactly one; otherwise nothing is proven.
pub fn proven_sender(msg: &syslog_msg::SyslogMessage) -> Sender {
    let mut it = msg.structured_data.iter().filter(|e| e.id == SENDER_SD_ID);
    let (Some(e), None) = (it.next(), it.next()) else {
        return Sender::default();
    };
    // rsyslog's `json` option escapes `"` and `\` (undone by the SD
    // parser) and also `/` as `\/`, which SD escaping leaves alone: undo it
    // here. The result is the sender's string exactly (a `\` of its own
    // came as `\\` and stays one backslash).
    let one = |name: &str| {
        let mut vals = e.params.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
        match (vals.next(), vals.next()) {
            (Some(v), None) if !v.is_empty() => Some(v.replace("\\/", "/")),
            _ => None,
        }
    };
    Sender {
        uid: one("uid").and_then(|v| v.parse().ok()),
        pid: one("pid").and_then(|v| v.parse().ok()),
        exe: one("exe"),
        comm: one("comm"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn sender_element_as_rsyslog_writes_it() {
        let m = syslog_msg::parse(br#"<86>1 2026-01-01T00:00:00Z h sshd - - [sender@32473 uid="0" pid="7" exe="\/usr\/sbin\/sshd" comm="sshd"] Accepted x"#).unwrap();
        let s = proven_sender(&m);
        assert_eq!(s.uid, Some(0));
        assert_eq!(s.pid, Some(7));
        assert_eq!(s.exe.as_deref(), Some("/usr/sbin/sshd"));
        // A path with a quote and backslashes of its own, JSON-escaped.
        let m = syslog_msg::parse(br#"<86>1 2026-01-01T00:00:00Z h sshd - - [sender@32473 uid="1000" exe="\/tmp\/a\" exe=\"\\\/usr\/sbin\/sshd" comm=""] x"#).unwrap();
        let s = proven_sender(&m);
        assert_eq!(s.exe.as_deref(), Some(r#"/tmp/a" exe="\/usr/sbin/sshd"#));
        assert_eq!(s.comm, None);
        // rsyslog's empty properties prove nothing.
        let m = syslog_msg::parse(
            br#"<86>1 2026-01-01T00:00:00Z h sshd - - [sender@32473 uid="" exe=""] x"#,
        )
        .unwrap();
        assert_eq!(proven_sender(&m), Sender::default());
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
        let task = tokio::spawn(crate::sources::runner::run(
            cfg.auth.build_intake(&cfg),
            ctx,
        ));
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
        send(b"<86>1 2026-11-25T15:08:39Z appliance1 sshd 12 - [sender@32473 uid=\"0\" pid=\"12\" exe=\"/usr/sbin/sshd\" comm=\"sshd\"] Accepted publickey for nexthink from 2001:db8::5 port 4242 ssh2: ED25519 SHA256:abc");
        send(b"<86>1 2026-11-25T15:08:39Z appliance1 sshd 13 - [sender@32473 uid=\"0\" pid=\"13\" exe=\"/usr/sbin/sshd\"] Accepted publickey for someone from 10.0.0.1 port 1 ssh2");
        send(b"<85>1 2026-11-25T15:08:40.5Z other-host sudo 77 - [sender@32473 uid=\"1000\" pid=\"77\" exe=\"/usr/bin/sudo\"] nexthink : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/echo \"hi\"");
        // No proof of the sender, or a sender element of its own after ours.
        send(b"<86>Nov 25 15:08:39 sshd[15]: Accepted password for nexthink from 6.6.6.6 port 1 ssh2");
        send(b"<86>1 2026-11-25T15:08:39Z appliance1 sshd 16 - [sender@32473 uid=\"1000\" exe=\"/usr/bin/logger\"][sender@32473 uid=\"0\" exe=\"/usr/sbin/sshd\"] Accepted password for nexthink from 6.6.6.6 port 1 ssh2");
        send(b"<85>1 2026-11-25T15:08:41Z appliance1 nxauditd 1 60001 [nxaudit@32473 seq=\"1\"] SSH logon");
        send(b"");
        send(b"\xff\xfe garbage \x00 without header");
        send(b"<999>1 - - - - - [unterminated");
        let mut big = b"<86>Nov 25 15:08:39 sshd[14]: ".to_vec();
        big.resize(MAX_DATAGRAM + 5000, b'x');
        send(&big);
        send(b"<38>Nov 25 15:08:39 cron[1]: not ours");
        wait_for("all datagrams", || section(&reg)["received"] == 11).await;
        wait_for("published", || section(&reg)["appended"] == 5).await;
        let s = section(&reg);
        assert_eq!(s["parsed"], 2, "{s}");
        assert_eq!(s["filtered"], 1, "{s}");
        assert_eq!(s["raw"], 3, "{s}");
        assert_eq!(s["unverified"], 3, "{s}");
        assert_eq!(s["foreign"], 0, "{s}");
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
        assert_eq!(recs.len(), 5, "{recs:#?}");
        assert_eq!(recs[0].code, 60001);
        assert_eq!(recs[0].account, "nexthink");
        assert_eq!(recs[0].field("client"), Some("2001:db8::5"));
        assert_eq!(recs[0].field("port"), Some("4242"));
        assert!(recs[0].field("time").is_some());
        assert_eq!(recs[1].code, 60101);
        assert_eq!(recs[1].field("command"), Some("/bin/echo \"hi\""));
        assert_eq!(recs[1].field("time"), Some("2026-11-25T15:08:40.500000Z"));
        assert_eq!(recs[1].field("syslog_host"), Some("other-host"));
        for r in &recs[2..] {
            assert_eq!(r.code, 60009, "{r:?}");
            assert_eq!(r.field("verified"), Some("false"));
            assert_eq!(r.account, "-");
        }
        assert_eq!(recs[3].field("sender_exe"), None);
        assert_eq!(recs[4].field("truncated"), Some("true"));
    }
}

//! The syslog forwarder: copies audit records to the local syslog as RFC
//! 5424 messages so that existing rsyslog routes (remote syslog, SIEM)
//! carry them (SPEC §6).
//!
//! It reads the durable log, not the writer's queue: its own position (the
//! last seq handed over) is saved in `state_dir/forward.pos`, so an rsyslog
//! outage, an rsyslog restart or a daemon crash loses nothing. Delivery is
//! at-least-once; `seq` in every message lets receivers drop duplicates.
//!
//! Why it is built this way:
//! - Follows the files itself (list, open, read lines, parse) through
//!   rotation: the active file is read through its open descriptor until the
//!   name `audit.log` points elsewhere, then drained and left; rotated files
//!   (plain or compressed) are found by the first seq in their name.
//!   Reading runs on the blocking pool, sending on the reactor.
//! - Lines read from the active file are `fdatasync`ed (unless `flush =
//!   "none"`) before they are sent, so nothing is forwarded that a power
//!   loss could take back and give another record's seq.
//! - A record is retried until it is sent, never skipped; a missing or dead
//!   target (ENOENT, ECONNREFUSED) means back-off and retry of the same
//!   record. The socket is connected, so a full receiver queue blocks the
//!   send (and wakes it) instead of failing.
//! - A datagram accepted by the kernel is not yet read by rsyslog: if rsyslog
//!   stops, its socket queue is discarded. The forwarder therefore keeps the
//!   messages sent since the queue was last seen empty (`SIOCOUTQ` of a
//!   Unix datagram socket counts what the peer has not read yet), at most
//!   `net.unix.max_dgram_qlen` + 2 of them (the queue cannot hold more),
//!   resends them after reconnecting, and saves as position only what is
//!   known to be read: the queue was empty before a later send succeeded,
//!   or, when idle, it is empty while the same socket file still accepts a
//!   connection (a peer that died would have emptied it too).
//! - The saved position is written atomically (temp, fsync, rename, fsync
//!   of the directory) every 100 records or second and at shutdown. With no
//!   position file the forwarder starts at the current end of the log, so a
//!   fresh install does not flood syslog with history.
//! - Messages carry APP-NAME `nxauditd`; the intake drops that APP-NAME and
//!   the rsyslog drop-in forwards only sshd/sudo to the intake: no loop.
//! - Format: `<PRI>1 TS HOST nxauditd PID CODE [nxaudit@32473 seq="…"
//!   code="…" component="…" source="…" category="…" account="…" pid="…"
//!   uid="…" gid="…" <fields…> h="…"] LINE`, facility authpriv, severity
//!   notice for failures and refusals, info otherwise. LINE (MSG) is the
//!   complete record line as it stands in the audit log, trailer and `h=`
//!   included: a template or SIEM that shows only the message still shows
//!   source, code, account and fields, and a collector that writes `%msg%`
//!   alone holds a copy that verifies like the log (`nxaudit verify
//!   --replica`). 32473 is the example enterprise number of RFC 5424
//!   (Nexthink has no registered one here); SD-PARAM values are escaped per
//!   RFC 5424 (`"`, `\`, `]`), control characters in values as in the log
//!   (`\n`, `\xNN`).
//! - Size: messages are at most [`MAX_MESSAGE`] bytes; the shipped rsyslog
//!   drop-ins raise rsyslog's `maxMessageSize` (default 8 KiB) to 256 KiB so
//!   that rsyslog does not cut them. A message over the limit sheds long
//!   structured-data values first (`truncated="true"`), never the line. Only
//!   if the kernel refuses the datagram (EMSGSIZE, beyond the socket's send
//!   buffer) even then is the line cut: that record is sent marked
//!   `truncated="true"`, counted in status (`lines_cut`) and logged, and a
//!   replica shows it as differing from the log.
//! - rsyslog parses RFC 5424 on a Unix socket only with imuxsock's special
//!   parser off; `packaging/rsyslog/30-nxaudit.conf` opens such a socket
//!   (`/run/nxaudit/rsyslog.sock`) for `[forward] target`.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::net::UnixDatagram;
use tracing::{info, warn};

use crate::catalog::Component;
use crate::config::{FlushPolicy, ForwardConfig};
use crate::logset::{self, LogFile};
use crate::record::{escape_unquoted, format_ts, parse_line, seal, Format, ParsedRecord};
use crate::sources::SourceContext;
use crate::status::Registry;

/// Name of the position file in the state directory.
pub const POSITION_FILE: &str = "forward.pos";
/// Name of the status section.
pub const STATUS_SECTION: &str = "forwarder";
/// APP-NAME of forwarded messages.
pub const APP_NAME: &str = "nxauditd";
/// SD-ID of the structured-data element.
pub const SD_ID: &str = "nxaudit@32473";
/// Facility `authpriv`.
pub const FACILITY: u8 = 10;
/// Largest message sent, in bytes: room for the longest record line (an
/// event line is at most 64 KiB before escaping) within the default Unix
/// socket send buffer, and under the 256 KiB `maxMessageSize` the shipped
/// rsyslog drop-ins set.
pub const MAX_MESSAGE: usize = 200 * 1024;

/// Records read per batch from the log.
const BATCH: usize = 256;
/// Save the position after this many records…
const SAVE_EVERY: u64 = 100;
/// …or this long.
const SAVE_PERIOD: Duration = Duration::from_secs(1);
/// Polling period while the log has nothing new.
const POLL: Duration = Duration::from_millis(50);
/// Status is republished at least this often while forwarding.
const PUBLISH_PERIOD: Duration = Duration::from_millis(250);
/// Longest back-off between attempts to reach the target.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Errors of the forwarder's own state.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The position file could not be read or written.
    #[error("position file {path}: {source}")]
    Position {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The position file is a link or not a regular file: refused before
    /// reading, so nothing of a link's target is ever shown.
    #[error("position file: {0}")]
    Unsafe(#[from] crate::fsutil::FsError),
    /// The position file does not hold a number.
    #[error("position file {path} is corrupt: {content:?}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What it holds (cut).
        content: String,
    },
}

/// Path of the position file.
pub fn position_path(state_dir: &Path) -> PathBuf {
    state_dir.join(POSITION_FILE)
}

/// The last seq the forwarder has handed over for good (all records up to
/// it are forwarded or filtered out), if it has saved one. Retention keeps
/// every file holding a later seq.
pub fn saved_position(state_dir: &Path) -> Option<u64> {
    read_position(state_dir).ok().flatten()
}

fn read_position(state_dir: &Path) -> Result<Option<u64>, ForwardError> {
    let path = position_path(state_dir);
    let Some(bytes) = crate::fsutil::read_file(&path)? else {
        return Ok(None);
    };
    let s = String::from_utf8_lossy(&bytes);
    s.trim()
        .parse()
        .map(Some)
        .map_err(|_| ForwardError::Corrupt {
            path,
            content: s.chars().take(40).collect(),
        })
}

/// Saves the position atomically and durably (exclusive temp file,
/// fsync, rename, fsync of the directory), never through a link.
pub fn save_position(state_dir: &Path, seq: u64) -> Result<(), ForwardError> {
    crate::fsutil::Dir::create(state_dir, "")?;
    crate::fsutil::replace_file(
        &position_path(state_dir),
        format!("{seq}\n").as_bytes(),
        crate::fsutil::Durability::Durable,
    )?;
    Ok(())
}

/// The seq of the last record in the log (0 for an empty log).
pub fn end_of_log(log_dir: &Path) -> io::Result<u64> {
    for f in logset::list(log_dir)?.iter().rev() {
        if let Some(line) = logset::last_line(f)? {
            if let Ok(r) = parse_line(&line) {
                return Ok(r.seq);
            }
        }
    }
    Ok(0)
}

/// Severity of a record: notice (5) for failures and refusals, info (6)
/// otherwise.
pub fn severity(code: u32) -> u8 {
    match code {
        60002 | 60102 | 60203 | 60905 | 60906 | 60908 => 5,
        _ => 6,
    }
}

/// Which records are forwarded (`[forward] codes`, `components`; empty =
/// all; both must match).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    codes: Vec<u32>,
    components: Vec<Component>,
}

impl Filter {
    /// The filter of a `[forward]` section (unknown component names, which
    /// config validation refuses, match nothing).
    pub fn new(cfg: &ForwardConfig) -> Filter {
        Filter {
            codes: cfg.codes.clone(),
            components: cfg.components.clone(),
        }
    }

    /// Whether `rec` is forwarded.
    pub fn matches(&self, rec: &ParsedRecord) -> bool {
        (self.codes.is_empty() || self.codes.contains(&rec.code))
            && (self.components.is_empty()
                || rec
                    .component()
                    .is_some_and(|c| self.components.contains(&c)))
    }
}

/// A HEADER field: printable US-ASCII without spaces, or `-`.
fn header_token(s: &str, max: usize) -> String {
    let t: String = s
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(max)
        .collect();
    if t.is_empty() {
        "-".into()
    } else {
        t
    }
}

/// An SD-NAME: 1–32 printable US-ASCII except `=`, space, `]`, `"`.
fn sd_name(s: &str) -> String {
    let t: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic() && !matches!(c, '=' | ']' | '"'))
        .take(32)
        .collect();
    if t.is_empty() {
        "_".into()
    } else {
        t
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    &s[..i]
}

/// Appends `name="value"` with the value escaped for RFC 5424.
fn sd_param(out: &mut String, name: &str, value: &str, cap: Option<usize>) {
    let mut esc = String::with_capacity(value.len() + 8);
    escape_unquoted(cap.map_or(value, |c| cut(value, c)), &mut esc);
    out.push(' ');
    out.push_str(&sd_name(name));
    out.push_str("=\"");
    for c in esc.chars() {
        if matches!(c, '"' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

fn structured_data(rec: &ParsedRecord, cap: Option<usize>, truncated: bool) -> String {
    let mut sd = format!("[{SD_ID}");
    let component = rec.component().map(|c| c.to_string()).unwrap_or_default();
    for (k, v) in [
        ("seq", rec.seq.to_string()),
        ("code", rec.code.to_string()),
        ("component", component),
        ("source", rec.source.clone()),
        ("category", rec.category.clone()),
        ("account", rec.account.clone()),
        ("pid", rec.pid.to_string()),
        ("uid", rec.uid.to_string()),
        ("gid", rec.gid.to_string()),
    ] {
        sd_param(&mut sd, k, &v, None);
    }
    for (k, v) in &rec.fields {
        sd_param(&mut sd, k, v, cap);
    }
    sd_param(&mut sd, "h", &rec.h, None);
    if truncated {
        sd_param(&mut sd, "truncated", "true", None);
    }
    sd.push(']');
    sd
}

/// The record's line exactly as it stands in the audit log (text or JSON),
/// rebuilt from the chain input and `h` the parser split it into.
pub fn record_line(rec: &ParsedRecord) -> String {
    let format = if rec.body.starts_with('{') {
        Format::Json
    } else {
        Format::Text
    };
    seal(format, &rec.body, &rec.h)
}

/// Formats a record as an RFC 5424 message of at most `limit` bytes (not
/// less than the header and fixed parameters need). MSG is the complete
/// record line ([`record_line`]); to fit, the structured data's long values
/// are cut first (`truncated="true"`). Only when the header, the fixed
/// parameters and the whole line still exceed `limit` is the line itself
/// cut; the second value returned says so, for the caller to count and
/// report it.
pub fn format_rfc5424(rec: &ParsedRecord, procid: u32, limit: usize) -> (Vec<u8>, bool) {
    let pri = FACILITY * 8 + severity(rec.code);
    let header = format!(
        "<{pri}>1 {} {} {APP_NAME} {procid} {} ",
        format_ts(rec.ts),
        header_token(&rec.host, 255),
        rec.code
    );
    let mut line = record_line(rec);
    let mut sd = structured_data(rec, None, false);
    let mut line_cut = false;
    if header.len() + sd.len() + 1 + line.len() > limit {
        for cap in [Some(256), Some(32), Some(0)] {
            sd = structured_data(rec, cap, true);
            if header.len() + sd.len() + 1 + line.len() <= limit {
                break;
            }
        }
        let room = limit.saturating_sub(header.len() + sd.len() + 1);
        if line.len() > room {
            line_cut = true;
            line = cut(&line, room).to_string();
        }
    }
    let mut out = header;
    out.push_str(&sd);
    out.push(' ');
    out.push_str(&line);
    (out.into_bytes(), line_cut)
}

/// What one read of the log gave.
#[derive(Debug, Default)]
struct Batch {
    records: Vec<ParsedRecord>,
    malformed: u64,
    gaps: u64,
}

/// The file being read.
struct Current {
    reader: Box<dyn BufRead + Send>,
    /// The plain file, to sync what was read from the active file.
    file: Option<File>,
    active: bool,
    /// (dev, ino) of the active file when opened.
    id: Option<(u64, u64)>,
    /// First seq in the file's name (rotated files).
    name_seq: Option<u64>,
    /// First record seq read from the file.
    first_seq: Option<u64>,
    /// The name `audit.log` was seen pointing elsewhere: drain, then leave.
    rotated: bool,
    pending: Vec<u8>,
}

/// Reads records with seq ≥ `next_seq` from the log files, in order,
/// following rotation. Blocking: run it on the blocking pool.
struct LogFollower {
    dir: PathBuf,
    next_seq: u64,
    cur: Option<Current>,
    /// Rotated files whose first seq is at most this are fully read.
    done: Option<u64>,
    sync: bool,
}

impl LogFollower {
    fn new(dir: PathBuf, next_seq: u64, sync: bool) -> LogFollower {
        LogFollower {
            dir,
            next_seq,
            cur: None,
            done: None,
            sync,
        }
    }

    fn open(f: &LogFile) -> io::Result<Current> {
        let (reader, file, id): (Box<dyn BufRead + Send>, _, _) =
            if f.compression == logset::Compression::Plain {
                let file = File::open(&f.path)?;
                let m = file.metadata()?;
                let sync_handle = file.try_clone()?;
                (
                    Box::new(BufReader::with_capacity(1 << 16, file)),
                    Some(sync_handle),
                    Some((m.dev(), m.ino())),
                )
            } else {
                (logset::open(f)?, None, None)
            };
        Ok(Current {
            reader,
            file,
            active: f.active,
            id,
            name_seq: f.first_seq,
            first_seq: None,
            rotated: false,
            pending: Vec::new(),
        })
    }

    /// First record seq of a file (None when empty or unreadable).
    fn first_seq_of(f: &LogFile) -> io::Result<Option<u64>> {
        let mut lines = logset::Lines::new(logset::open(f)?);
        Ok(match lines.next() {
            Some(Ok(l)) => parse_line(&l).ok().map(|r| r.seq),
            _ => None,
        })
    }

    /// Opens the file holding `next_seq` (or the first one after it).
    fn open_next(&mut self) -> io::Result<bool> {
        let files = logset::list(&self.dir)?;
        let done = self.done;
        let rotated: Vec<&LogFile> = files
            .iter()
            .filter(|f| !f.active && f.first_seq.is_some_and(|s| done.map_or(true, |d| s > d)))
            .collect();
        let active = files.iter().find(|f| f.active);
        let last_le = rotated
            .iter()
            .rposition(|f| f.first_seq.is_some_and(|s| s <= self.next_seq));
        let pick: Option<&LogFile> = match last_le {
            Some(i) if i + 1 < rotated.len() => Some(rotated[i]),
            Some(i) => match active {
                Some(a) if Self::first_seq_of(a)?.is_some_and(|s| s <= self.next_seq) => Some(a),
                _ => Some(rotated[i]),
            },
            None => rotated.first().copied().or(active),
        };
        match pick {
            Some(f) => {
                self.cur = Some(Self::open(f)?);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn active_replaced(&self, id: Option<(u64, u64)>) -> bool {
        match std::fs::metadata(self.dir.join(logset::ACTIVE)) {
            Ok(m) => Some((m.dev(), m.ino())) != id,
            Err(_) => true,
        }
    }

    fn read_batch(&mut self, max: usize) -> io::Result<Batch> {
        let mut out = Batch::default();
        let mut read_active = false;
        while out.records.len() < max {
            if self.cur.is_none() && !self.open_next()? {
                break;
            }
            let Some(cur) = self.cur.as_mut() else { break };
            cur.reader.read_until(b'\n', &mut cur.pending)?;
            if cur.pending.last() == Some(&b'\n') {
                cur.pending.pop();
                let line = String::from_utf8_lossy(&cur.pending).into_owned();
                cur.pending.clear();
                read_active |= cur.active;
                match parse_line(&line) {
                    Ok(r) => {
                        cur.first_seq.get_or_insert(r.seq);
                        if r.seq >= self.next_seq {
                            out.gaps += r.seq - self.next_seq;
                            self.next_seq = r.seq + 1;
                            out.records.push(r);
                        }
                    }
                    Err(_) => out.malformed += 1,
                }
                continue;
            }
            // No complete line: the end of what is written so far.
            if cur.active && !cur.rotated {
                let id = cur.id;
                if self.active_replaced(id) {
                    // Rotated: whatever the writer wrote before the rename
                    // is in this file; read it, then move on.
                    if let Some(c) = self.cur.as_mut() {
                        c.rotated = true;
                    }
                    continue;
                }
                break;
            }
            if !cur.pending.is_empty() {
                out.malformed += 1;
            }
            let finished = if cur.active {
                cur.first_seq
            } else {
                cur.name_seq
            };
            if let Some(s) = finished {
                self.done = Some(self.done.map_or(s, |d| d.max(s)));
            }
            self.cur = None;
        }
        if self.sync && read_active && !out.records.is_empty() {
            if let Some(f) = self.cur.as_ref().and_then(|c| c.file.as_ref()) {
                f.sync_data()?;
            }
        }
        Ok(out)
    }
}

/// Bytes sent on `sock` that its peer has not read yet.
fn unread_bytes(sock: &UnixDatagram) -> Option<i64> {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (= SIOCOUTQ) writes one int through the pointer,
    // which points to a live c_int; the descriptor is open for the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::TIOCOUTQ, &mut n as *mut libc::c_int) };
    (rc == 0).then_some(n as i64)
}

/// `net.unix.max_dgram_qlen` + 2: more datagrams than this cannot be unread
/// in the peer's queue.
fn ring_capacity() -> usize {
    std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(512)
        .clamp(16, 65_536)
        + 2
}

/// The connection to the target and the messages it may not have read.
struct Delivery {
    target: PathBuf,
    sock: Option<UnixDatagram>,
    unconfirmed: VecDeque<(u64, Vec<u8>)>,
    cap: usize,
    replay: bool,
    replayed: u64,
    /// (dev, ino) of the target's socket file when connected.
    peer_id: Option<(u64, u64)>,
}

/// (dev, ino) of a path.
fn socket_id(p: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

impl Delivery {
    fn new(target: PathBuf) -> Delivery {
        Delivery {
            target,
            peer_id: None,
            sock: None,
            unconfirmed: VecDeque::new(),
            cap: ring_capacity(),
            replay: false,
            replayed: 0,
        }
    }

    fn connect(&mut self) -> io::Result<()> {
        // The identity of the socket file is taken before connecting: if
        // the peer is replaced in between, the two differ and idle
        // confirmation just does not happen (never the other way round).
        self.peer_id = socket_id(&self.target);
        let s = UnixDatagram::unbound()?;
        s.connect(&self.target)?;
        self.sock = Some(s);
        Ok(())
    }

    /// While idle: if the peer has read everything (nothing unread on our
    /// socket) and is still alive (the same socket file, and a new
    /// connection to it succeeds), what was sent is confirmed. Without the
    /// liveness check an empty queue could also mean a peer that died and
    /// discarded it.
    fn confirm_idle(&mut self) {
        if self.unconfirmed.is_empty() {
            return;
        }
        let Some(sock) = self.sock.as_ref() else {
            return;
        };
        if unread_bytes(sock) != Some(0) {
            return;
        }
        let id = socket_id(&self.target);
        if id.is_none() || id != self.peer_id {
            return;
        }
        let alive = std::os::unix::net::UnixDatagram::unbound()
            .and_then(|p| p.connect(&self.target))
            .is_ok();
        if alive {
            self.unconfirmed.clear();
        }
    }

    fn broken(&mut self) {
        self.sock = None;
        if !self.unconfirmed.is_empty() {
            self.replay = true;
        }
    }

    /// Sends one message (after resending what a lost peer may not have
    /// read). On error the connection is dropped; call again to retry.
    async fn send(&mut self, seq: u64, msg: &[u8]) -> io::Result<()> {
        if self.sock.is_none() {
            self.connect()?;
        }
        if self.replay {
            let mut i = 0;
            while i < self.unconfirmed.len() {
                let r = match self.sock.as_ref() {
                    Some(s) => s.send(&self.unconfirmed[i].1).await,
                    None => Err(io::Error::from(io::ErrorKind::NotConnected)),
                };
                if let Err(e) = r {
                    self.broken();
                    return Err(e);
                }
                self.replayed += 1;
                i += 1;
            }
            self.replay = false;
        }
        let Some(sock) = self.sock.as_ref() else {
            return Err(io::Error::from(io::ErrorKind::NotConnected));
        };
        // Empty before this send: everything sent earlier has been read (a
        // peer that went away instead makes this send fail).
        let drained = unread_bytes(sock) == Some(0);
        match sock.send(msg).await {
            Ok(_) => {
                if drained {
                    self.unconfirmed.clear();
                }
                self.unconfirmed.push_back((seq, msg.to_vec()));
                while self.unconfirmed.len() > self.cap {
                    self.unconfirmed.pop_front();
                }
                Ok(())
            }
            Err(e) => {
                self.broken();
                Err(e)
            }
        }
    }

    /// The position to save when everything up to `processed` is handled.
    fn confirmed(&self, processed: u64) -> u64 {
        match self.unconfirmed.front() {
            Some((s, _)) => s.saturating_sub(1).min(processed),
            None => processed,
        }
    }
}

struct Status {
    registry: Registry,
    target: String,
    state: &'static str,
    forwarded: u64,
    filtered: u64,
    errors: u64,
    last_error: Option<String>,
    last_seq: Option<u64>,
    position: u64,
    malformed: u64,
    gaps: u64,
    /// Records whose line had to be cut to fit a datagram.
    lines_cut: u64,
}

impl Status {
    fn publish(&self, d: &Delivery) {
        self.registry.set(
            STATUS_SECTION,
            json!({
                "state": self.state,
                "target": self.target,
                "position": self.position,
                "last_seq": self.last_seq,
                "forwarded": self.forwarded,
                "filtered": self.filtered,
                "unconfirmed": d.unconfirmed.len(),
                "replayed": d.replayed,
                "errors": self.errors,
                "last_error": self.last_error,
                "malformed_lines": self.malformed,
                "gaps": self.gaps,
                "lines_cut": self.lines_cut,
            }),
        );
    }

    fn fail(&mut self, e: String) {
        self.errors += 1;
        self.last_error = Some(e);
    }
}

/// Runs the forwarder until shutdown.
pub async fn run(mut ctx: SourceContext) {
    let cfg = ctx.config.clone();
    let mut shutdown = ctx.shutdown.clone();
    let state_dir = cfg.state_dir.clone();
    let mut st = Status {
        registry: ctx.status.clone(),
        target: cfg.forward.target.display().to_string(),
        state: "starting",
        forwarded: 0,
        filtered: 0,
        errors: 0,
        last_error: None,
        last_seq: None,
        position: 0,
        malformed: 0,
        gaps: 0,
        lines_cut: 0,
    };
    let mut delivery = Delivery::new(cfg.forward.target.clone());
    st.publish(&delivery);

    let (sd, ld) = (state_dir.clone(), cfg.log_dir.clone());
    let start = tokio::task::spawn_blocking(move || -> Result<(u64, bool), String> {
        let saved = match read_position(&sd) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "forwarder: starting from the end of the log");
                None
            }
        };
        match saved {
            Some(p) => Ok((p, false)),
            None => {
                let end = end_of_log(&ld).map_err(|e| format!("read {}: {e}", ld.display()))?;
                save_position(&sd, end).map_err(|e| e.to_string())?;
                Ok((end, true))
            }
        }
    })
    .await;
    let (pos, fresh) = match start {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            warn!(error = %e, "forwarder cannot start");
            st.fail(e);
            st.state = "error";
            st.publish(&delivery);
            return;
        }
        Err(e) => {
            st.fail(e.to_string());
            st.state = "error";
            st.publish(&delivery);
            return;
        }
    };
    info!(position = pos, fresh, target = %st.target, "forwarder starting");
    st.position = pos;

    let mut filter = Filter::new(&cfg.forward);
    let procid = std::process::id();
    let sync = cfg.log.flush != FlushPolicy::None;
    let mut follower = Some(LogFollower::new(cfg.log_dir.clone(), pos + 1, sync));
    let mut processed = pos;
    let mut last_save = Instant::now();
    let mut last_publish = Instant::now();
    let mut read_backoff = POLL;

    'run: loop {
        if shutdown.is_shutdown() {
            break;
        }
        if let Some(new) = ctx.take_reload() {
            filter = Filter::new(&new.forward);
            info!("forwarder: filters reloaded");
        }
        let f = match follower.take() {
            Some(f) => f,
            None => LogFollower::new(cfg.log_dir.clone(), processed + 1, sync),
        };
        let joined = tokio::task::spawn_blocking(move || {
            let mut f = f;
            let r = f.read_batch(BATCH);
            (f, r)
        })
        .await;
        let batch = match joined {
            Ok((f, Ok(b))) => {
                follower = Some(f);
                read_backoff = POLL;
                b
            }
            Ok((f, Err(e))) => {
                // Reopen from the position: the file may have gone away
                // under us (a partial read is simply read again).
                drop(f);
                st.fail(format!("read log: {e}"));
                st.publish(&delivery);
                tokio::select! {
                    _ = shutdown.recv() => break 'run,
                    _ = tokio::time::sleep(read_backoff) => {}
                }
                read_backoff = (read_backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(e) => {
                st.fail(format!("reader task: {e}"));
                continue;
            }
        };
        st.malformed += batch.malformed;
        st.gaps += batch.gaps;
        if batch.records.is_empty() {
            st.state = "idle";
            delivery.confirm_idle();
            save_if_due(
                &state_dir,
                &delivery,
                processed,
                &mut st,
                &mut last_save,
                true,
            )
            .await;
            st.publish(&delivery);
            tokio::select! {
                _ = shutdown.recv() => break 'run,
                _ = tokio::time::sleep(POLL) => {}
            }
            continue;
        }
        st.state = "forwarding";
        for rec in batch.records {
            if !filter.matches(&rec) {
                st.filtered += 1;
                processed = rec.seq;
                continue;
            }
            let mut limit = MAX_MESSAGE;
            let (mut msg, mut line_cut) = format_rfc5424(&rec, procid, limit);
            let mut backoff = Duration::from_millis(100);
            loop {
                let r = tokio::select! {
                    _ = shutdown.recv() => break 'run,
                    r = delivery.send(rec.seq, &msg) => r,
                    // The receiver's queue is full (rsyslog not reading):
                    // say so, then wait on (sending is cancel-safe).
                    _ = tokio::time::sleep(PUBLISH_PERIOD) => {
                        st.state = "target busy";
                        st.publish(&delivery);
                        last_publish = Instant::now();
                        continue;
                    }
                };
                match r {
                    Ok(()) => break,
                    // The kernel refuses a datagram this large (socket send
                    // buffer): smaller, shedding structured data first.
                    Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) && limit > 512 => {
                        limit /= 2;
                        (msg, line_cut) = format_rfc5424(&rec, procid, limit);
                    }
                    Err(e) => {
                        if st.state != "waiting for target" {
                            warn!(target = %st.target, error = %e, seq = rec.seq, "forwarder: target unavailable; retrying");
                        }
                        st.fail(format!("send seq {}: {e}", rec.seq));
                        st.state = "waiting for target";
                        st.publish(&delivery);
                        tokio::select! {
                            _ = shutdown.recv() => break 'run,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            if st.state == "waiting for target" {
                info!(seq = rec.seq, "forwarder: target reachable again");
            }
            if line_cut {
                st.lines_cut += 1;
                warn!(seq = rec.seq, bytes = msg.len(), "forwarder: record line too long for one datagram; sent cut, marked truncated=\"true\"");
            }
            st.state = "forwarding";
            st.forwarded += 1;
            st.last_seq = Some(rec.seq);
            processed = rec.seq;
            save_if_due(
                &state_dir,
                &delivery,
                processed,
                &mut st,
                &mut last_save,
                false,
            )
            .await;
            if last_publish.elapsed() >= PUBLISH_PERIOD {
                st.publish(&delivery);
                last_publish = Instant::now();
            }
        }
        st.publish(&delivery);
        last_publish = Instant::now();
    }

    delivery.confirm_idle();
    let final_pos = delivery.confirmed(processed);
    if final_pos != st.position {
        let sd = state_dir.clone();
        match tokio::task::spawn_blocking(move || save_position(&sd, final_pos)).await {
            Ok(Ok(())) => st.position = final_pos,
            Ok(Err(e)) => st.fail(e.to_string()),
            Err(e) => st.fail(e.to_string()),
        }
    }
    st.state = "stopped";
    st.publish(&delivery);
}

/// Saves the confirmed position every `SAVE_EVERY` records or
/// `SAVE_PERIOD` (or whenever it changed, when `idle`).
async fn save_if_due(
    state_dir: &Path,
    delivery: &Delivery,
    processed: u64,
    st: &mut Status,
    last_save: &mut Instant,
    idle: bool,
) {
    let pos = delivery.confirmed(processed);
    if pos == st.position {
        return;
    }
    let due = pos >= st.position + SAVE_EVERY || last_save.elapsed() >= SAVE_PERIOD || idle;
    if !due {
        return;
    }
    let sd = state_dir.to_path_buf();
    match tokio::task::spawn_blocking(move || save_position(&sd, pos)).await {
        Ok(Ok(())) => {
            st.position = pos;
            *last_save = Instant::now();
        }
        Ok(Err(e)) => st.fail(e.to_string()),
        Err(e) => st.fail(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{text_body, Chain, Entry, Stamp, GENESIS};
    use crate::sources::syslog_msg;
    use chrono::{DateTime, Utc};
    use std::io::Write;

    fn line(seq: u64, code: u32, text: &str) -> String {
        let mut e = Entry::appliance(code)
            .with_user("nexthink")
            .with_message(text);
        e.client = Some("2001:db8::1".into());
        e = e
            .field("command", "echo \"a] b\\c\"\nnext")
            .field("port", "22");
        let st = Stamp {
            ts: DateTime::parse_from_rfc3339("2026-11-25T15:08:39.123456Z")
                .unwrap()
                .with_timezone(&Utc),
            host: "appliance1",
            seq,
        };
        let mut body = String::new();
        text_body(&e, &st, &mut body);
        let h = Chain::sha256().next(GENESIS, &body);
        seal(Format::Text, &body, &h)
    }

    fn rec(seq: u64) -> ParsedRecord {
        parse_line(&line(seq, 60001, "SSH logon")).unwrap()
    }

    #[test]
    fn rfc5424_roundtrip() {
        let r = rec(42);
        let (m, cut) = format_rfc5424(&r, 99, MAX_MESSAGE);
        assert!(!cut);
        let p = syslog_msg::parse(&m).unwrap();
        assert!(p.wellformed, "{}", String::from_utf8_lossy(&m));
        assert_eq!((p.facility, p.severity), (10, 6));
        assert_eq!(p.app_name.as_deref(), Some("nxauditd"));
        assert_eq!(p.msgid.as_deref(), Some("60001"));
        assert_eq!(p.hostname.as_deref(), Some("appliance1"));
        assert_eq!(p.timestamp.as_deref(), Some("2026-11-25T15:08:39.123456Z"));
        let sd = p.sd(SD_ID).unwrap();
        assert_eq!(sd.param("seq"), Some("42"));
        assert_eq!(sd.param("code"), Some("60001"));
        assert_eq!(sd.param("component"), Some("Appliance"));
        assert_eq!(sd.param("account"), Some("nexthink"));
        assert_eq!(sd.param("client"), Some("2001:db8::1"));
        assert_eq!(sd.param("h"), Some(r.h.as_str()));
        // Quotes and \ survive; the newline and ] arrive escaped as in the log.
        assert_eq!(sd.param("command"), Some("echo \"a\\x5d b\\c\"\\nnext"));
        // MSG is the record line, byte for byte.
        assert_eq!(p.message, line(42, 60001, "SSH logon"));
        assert!(p.message.ends_with(&format!(" h={}", r.h)));
        assert_eq!(severity(60002), 5);
    }

    #[test]
    fn json_records_are_forwarded_as_their_line() {
        let mut e = Entry::appliance(60001).with_user("nexthink");
        e = e.field("port", "22");
        let st = Stamp {
            ts: Utc::now(),
            host: "appliance1",
            seq: 5,
        };
        let body = crate::record::json_body(&e, &st);
        let l = seal(Format::Json, &body, &Chain::sha256().next(GENESIS, &body));
        let r = parse_line(&l).unwrap();
        assert_eq!(record_line(&r), l);
        let (m, _) = format_rfc5424(&r, 1, MAX_MESSAGE);
        assert_eq!(syslog_msg::parse(&m).unwrap().message, l);
    }

    #[test]
    fn long_records_shed_structured_data_not_the_line() {
        let big = "é".repeat(20_000);
        let l = line(7, 60101, &big);
        let mut r = parse_line(&l).unwrap();
        // The whole line fits the limit: sent whole, even though the
        // structured data repeating a long field would not.
        r.fields.push(("details.big".into(), "x".repeat(20_000)));
        let limit = l.len() + 1000;
        let (m, cut) = format_rfc5424(&r, 1, limit);
        assert!(!cut);
        assert!(m.len() <= limit, "{}", m.len());
        let p = syslog_msg::parse(&m).unwrap();
        assert!(p.wellformed);
        let sd = p.sd(SD_ID).unwrap();
        assert_eq!(sd.param("seq"), Some("7"));
        assert_eq!(sd.param("truncated"), Some("true"));
        assert_eq!(p.message, l);

        // Smaller than the line: the line is cut, and the caller is told.
        let (m, cut) = format_rfc5424(&r, 1, 8000);
        assert!(cut);
        assert!(m.len() <= 8000, "{}", m.len());
        let p = syslog_msg::parse(&m).unwrap();
        assert!(p.wellformed);
        assert_eq!(p.sd(SD_ID).unwrap().param("truncated"), Some("true"));
        assert!(l.starts_with(&p.message) && p.message.len() < l.len());

        // The widest event (a 64 KiB line of U+200B, escaped to 8 bytes
        // each) still fits one message whole.
        let widest = parse_line(&line(8, 60101, &"\u{200b}".repeat(64 * 1024 / 3))).unwrap();
        let (m, cut) = format_rfc5424(&widest, 1, MAX_MESSAGE);
        assert!(!cut, "{} bytes", m.len());
    }

    #[test]
    fn position_file_roundtrip() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(saved_position(d.path()), None);
        save_position(d.path(), 17).unwrap();
        assert_eq!(saved_position(d.path()), Some(17));
        std::fs::write(position_path(d.path()), "x").unwrap();
        assert_eq!(saved_position(d.path()), None);
        assert!(matches!(
            read_position(d.path()),
            Err(ForwardError::Corrupt { .. })
        ));
    }

    fn append(path: &Path, seqs: std::ops::RangeInclusive<u64>) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        for s in seqs {
            writeln!(f, "{}", line(s, 60001, "SSH logon")).unwrap();
        }
    }

    fn seqs(b: &Batch) -> Vec<u64> {
        b.records.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn follower_reads_across_rotation_and_compression() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let t = Utc::now();
        // Rotated and compressed: 1..=10; rotated plain: 11..=20; active: 21..=25.
        let r1 = dir.join(logset::rotated_name(t, 1));
        append(&r1, 1..=10);
        let data = std::fs::read(&r1).unwrap();
        std::fs::write(
            format!("{}.zst", r1.display()),
            zstd::encode_all(&data[..], 3).unwrap(),
        )
        .unwrap();
        std::fs::remove_file(&r1).unwrap();
        append(&dir.join(logset::rotated_name(t, 11)), 11..=20);
        let active = dir.join(logset::ACTIVE);
        append(&active, 21..=25);
        assert_eq!(end_of_log(dir).unwrap(), 25);

        let mut f = LogFollower::new(dir.to_path_buf(), 6, true);
        let b = f.read_batch(1000).unwrap();
        assert_eq!(seqs(&b), (6..=25).collect::<Vec<_>>());
        assert_eq!(f.read_batch(1000).unwrap().records.len(), 0);

        // A torn (unfinished) line is not returned until complete.
        let partial = line(26, 60001, "SSH logon");
        let (a, b2) = partial.split_at(20);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&active)
            .unwrap()
            .write_all(a.as_bytes())
            .unwrap();
        assert_eq!(f.read_batch(1000).unwrap().records.len(), 0);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&active)
            .unwrap()
            .write_all(format!("{b2}\n").as_bytes())
            .unwrap();
        assert_eq!(seqs(&f.read_batch(1000).unwrap()), vec![26]);

        // Rotation while following: more lines land in the old file, it is
        // renamed, a new active file starts.
        append(&active, 27..=28);
        std::fs::rename(&active, dir.join(logset::rotated_name(t, 21))).unwrap();
        append(&active, 29..=30);
        let b = f.read_batch(1000).unwrap();
        assert_eq!(seqs(&b), vec![27, 28, 29, 30]);
        assert_eq!(b.gaps, 0);

        // Starting in the middle of the plain rotated file.
        let mut f = LogFollower::new(dir.to_path_buf(), 15, false);
        let mut all = Vec::new();
        loop {
            let b = f.read_batch(3).unwrap();
            if b.records.is_empty() {
                break;
            }
            all.extend(seqs(&b));
        }
        assert_eq!(all, (15..=30).collect::<Vec<_>>());
    }

    async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn received(sock: &std::os::unix::net::UnixDatagram, into: &mut Vec<u64>) {
        received_at_most(sock, into, usize::MAX)
    }

    fn received_at_most(sock: &std::os::unix::net::UnixDatagram, into: &mut Vec<u64>, max: usize) {
        let mut buf = vec![0u8; 70_000];
        let mut n_read = 0;
        while n_read < max {
            let Ok(n) = sock.recv(&mut buf) else { break };
            n_read += 1;
            let p = syslog_msg::parse(&buf[..n]).unwrap();
            into.push(p.sd(SD_ID).unwrap().param("seq").unwrap().parse().unwrap());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outage_and_peer_restart_lose_nothing() {
        use crate::config::Config;
        use crate::shutdown::ShutdownTrigger;
        use std::sync::Arc;
        let d = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.apply_base_dir(d.path());
        cfg.forward.target = d.path().join("rsyslog.sock");
        cfg.forward.codes = vec![60001, 60003];
        std::fs::create_dir_all(&cfg.log_dir).unwrap();
        let active = cfg.log_dir.join(logset::ACTIVE);
        append(&active, 1..=5);
        // Already forwarded up to 3 in an earlier run.
        save_position(&cfg.state_dir, 3).unwrap();
        // Records 6..=2000, one of them with a code not forwarded.
        {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&active)
                .unwrap();
            for s in 6..=2000u64 {
                let code = if s == 10 { 60101 } else { 60001 };
                writeln!(f, "{}", line(s, code, "x")).unwrap();
            }
        }
        let (writer, _r, thread) = {
            // The forwarder does not write, but the context needs a writer:
            // give it one on a separate directory.
            let mut wcfg = Config::default();
            wcfg.apply_base_dir(&d.path().join("w"));
            std::fs::create_dir_all(&wcfg.state_dir).unwrap();
            crate::writer::start(&wcfg).unwrap()
        };
        let (trigger, shutdown) = ShutdownTrigger::new();
        let reg = Registry::new();
        let ctx =
            SourceContext::fixed(Arc::new(cfg.clone()), writer.clone(), shutdown, reg.clone());
        let task = tokio::spawn(run(ctx));
        let st = || {
            reg.snapshot()
                .get(STATUS_SECTION)
                .cloned()
                .unwrap_or_default()
        };
        // The target does not exist yet: the forwarder waits on seq 4.
        wait_for("waiting", || st()["state"] == "waiting for target").await;
        assert_eq!(st()["forwarded"], 0);

        let rx = std::os::unix::net::UnixDatagram::bind(&cfg.forward.target).unwrap();
        rx.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        // Read only part, then "restart" the peer with datagrams unread:
        // the kernel discards them with the socket.
        wait_for("receiver queue full", || st()["state"] == "target busy").await;
        received_at_most(&rx, &mut got, 5);
        assert_eq!(got.len(), 5);
        drop(rx);
        std::fs::remove_file(&cfg.forward.target).unwrap();
        let rx = std::os::unix::net::UnixDatagram::bind(&cfg.forward.target).unwrap();
        rx.set_nonblocking(true).unwrap();
        wait_for("all sent", || {
            received(&rx, &mut got);
            st()["last_seq"] == 2000
        })
        .await;
        received(&rx, &mut got);
        wait_for("position saved", || {
            saved_position(&cfg.state_dir) == Some(2000)
        })
        .await;
        trigger.fire();
        task.await.unwrap();
        let mut uniq = got.clone();
        uniq.sort();
        uniq.dedup();
        let want: Vec<u64> = (4..=2000).filter(|s| *s != 10).collect();
        assert_eq!(uniq, want, "missing records");
        let s = st();
        assert_eq!(s["filtered"], 1, "{s}");
        assert!(s["replayed"].as_u64().unwrap() > 0, "{s}");
        assert!(saved_position(&cfg.state_dir).unwrap() <= 2000);
        writer.shutdown().await.unwrap();
        thread.join().unwrap();
    }
}

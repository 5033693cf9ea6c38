//! Delivery over the local syslog's datagram socket, losing nothing when
//! rsyslog stops or restarts.
//!
//! - The socket is connected, so a full receiver queue blocks the send
//!   (and wakes it) instead of failing; a missing or dead target (ENOENT,
//!   ECONNREFUSED) is an error the runner retries with back-off.
//! - A datagram accepted by the kernel is not yet read by rsyslog: if
//!   rsyslog stops, its socket queue is discarded. So the messages sent
//!   since the queue was last seen empty are kept (`SIOCOUTQ` of a Unix
//!   datagram socket counts what the peer has not read yet), at most
//!   `net.unix.max_dgram_qlen` + 2 of them (the queue cannot hold more),
//!   resent after reconnecting, and only what is known to be read is
//!   confirmed: the queue was empty before a later send succeeded, or, when
//!   idle, it is empty while the same socket file still accepts a
//!   connection (a peer that died would have emptied it too).

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tokio::net::UnixDatagram;

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
pub struct Delivery {
    target: PathBuf,
    sock: Option<UnixDatagram>,
    pub(super) unconfirmed: VecDeque<(u64, Vec<u8>)>,
    cap: usize,
    replay: bool,
    pub(super) replayed: u64,
    /// (dev, ino) of the target's socket file when connected.
    peer_id: Option<(u64, u64)>,
}

/// (dev, ino) of a path.
fn socket_id(p: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

impl Delivery {
    /// Delivery to the datagram socket at `target` (connected on first send).
    pub fn new(target: PathBuf) -> Delivery {
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
    pub fn confirm_idle(&mut self) {
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
    pub async fn send(&mut self, seq: u64, msg: &[u8]) -> io::Result<()> {
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
    pub fn confirmed(&self, processed: u64) -> u64 {
        match self.unconfirmed.front() {
            Some((s, _)) => s.saturating_sub(1).min(processed),
            None => processed,
        }
    }
}

//! Sockets systemd passes to the daemon (socket activation): the one place
//! that adopts an inherited descriptor, for the event socket (stream) and
//! the syslog intake (datagram) alike.
//!
//! A descriptor is recognised by what it is, not by its position: among
//! the descriptors from 3 up, the one of the wanted type bound to the
//! configured path. So the order of the unit's `ListenStream=` and
//! `ListenDatagram=` lines does not matter, and nothing that is not our
//! socket is ever taken. The `LISTEN_*` variables are cleared once the
//! daemon has read them, so children (the journalctl follower) do not
//! believe they were passed sockets.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::sys::socket::{getsockname, getsockopt, sockopt, SockType, UnixAddr};

/// Highest descriptor looked at: systemd passes at most a handful, and
/// 3..32 covers any unit file.
const LAST_FD: RawFd = 32;

/// The kind of socket wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A listening stream socket (`ListenStream=`).
    Stream,
    /// A datagram socket (`ListenDatagram=`).
    Datagram,
}

/// Takes the inherited socket of `kind` bound to `path`, if systemd passed
/// one, marked close-on-exec; `None` when there is none.
pub fn take(path: &Path, kind: Kind) -> Option<OwnedFd> {
    let want = match kind {
        Kind::Stream => SockType::Stream,
        Kind::Datagram => SockType::Datagram,
    };
    for fd in 3 as RawFd..LAST_FD {
        if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_err() {
            continue;
        }
        // SAFETY: the descriptor is open (checked above) and only borrowed
        // for the duration of these calls.
        let b = unsafe { BorrowedFd::borrow_raw(fd) };
        if getsockopt(&b, sockopt::SockType).ok() != Some(want) {
            continue;
        }
        let Ok(addr) = getsockname::<UnixAddr>(b.as_raw_fd()) else {
            continue;
        };
        if addr.path() != Some(path) {
            continue;
        }
        // Keep it out of children (the journalctl follower).
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        // SAFETY: a socket bound to our configured path is only ever
        // created by systemd for us; it is taken once per daemon start
        // (each path is adopted by one part only).
        return Some(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    None
}

/// Clears the `LISTEN_*` variables systemd set for this process.
pub fn forget_environment() {
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
}

//! File-system helpers for the log and state directories (docs/record-format.md "Files").
//!
//! Every open, create, rename and delete the daemon does in those two
//! directories goes through here, so one place guarantees that:
//!
//! - no symlink planted there is ever followed: a directory is opened once
//!   with `O_DIRECTORY|O_NOFOLLOW` and its files relative to that handle
//!   (`openat`) with `O_NOFOLLOW`; a link is refused before anything is
//!   read, so its target's content can never reach a diagnostic;
//! - only regular files are used (a FIFO or device is refused; opens are
//!   non-blocking so a FIFO cannot hang the daemon before the check);
//! - temporary files are created with `O_CREAT|O_EXCL|O_NOFOLLOW` under
//!   unpredictable names, so nothing planted can be truncated through them;
//! - a state file is replaced atomically and durably ([`replace_file`]):
//!   temp, write, fsync, rename, fsync of the directory;
//! - ownership and mode are changed on the open descriptor, never by path;
//! - a directory other users could write to is refused ([`Dir::check_private`]);
//! - one daemon at a time owns the directories ([`InstanceLock`]).
//!
//! The descriptor-relative calls are `rustix`'s; the instance lock uses
//! `nix`'s `fcntl` because `rustix::fs::fcntl_lock` only offers open file
//! description locks, whose `F_GETLK` does not report the holder's pid.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use tracing::warn;

/// The daemon's umask: nothing it creates is writable by its group or
/// readable by others, whatever umask it was started with.
pub const UMASK: u32 = 0o027;

/// Mode of the directories the daemon creates.
pub const DIR_MODE: u32 = 0o750;

/// Mode of the files the daemon keeps in its state directory.
pub const STATE_FILE_MODE: u32 = 0o640;

/// Name of the instance lock file in the state directory.
pub const LOCK_FILE: &str = "nxauditd.lock";

/// Largest state file read back: they hold a number or a cursor, so
/// anything bigger is not ours and is not read into memory.
const MAX_SMALL_FILE: u64 = 1 << 20;

/// Length of the random tag in temporary file names.
const TAG_LEN: usize = 12;

/// Why a file-system step in the log or state directory was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// A system call failed. (The error is part of the message, not a
    /// `source`, so chained reports do not print it twice.)
    #[error("{what} {path}: {err}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        err: io::Error,
    },
    /// The name is a symbolic link; links are never followed here.
    #[error("{path} is a symbolic link; refusing to follow it (remove it if it is not expected)")]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// The name exists but is not a regular file.
    #[error("{path} is not a regular file ({kind}); refusing to use it")]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// A file the daemon writes in place has other hard links, through
    /// which its content would reach a file elsewhere.
    #[error("{path} has {links} hard links; refusing to write through it")]
    HardLinked {
        /// The file.
        path: PathBuf,
        /// Its link count.
        links: u64,
    },
    /// A state file is far larger than anything the daemon writes.
    #[error("{path} is {len} bytes, too large for a state file; refusing to read it")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
    /// The directory could be written by another user, who could plant
    /// links or files in it.
    #[error(
        "directory {path} is {why} (mode {mode:04o}, owner uid {uid}, group gid {gid}); \
         refusing to use it: only root and the daemon's own user and group may write it"
    )]
    UnsafeDir {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// Its owner.
        uid: u32,
        /// Its group.
        gid: u32,
        /// Who else could write it.
        why: &'static str,
    },
    /// Another daemon holds the instance lock.
    #[error("nxauditd is already running, pid {pid} (it holds the lock on {path})")]
    AlreadyRunning {
        /// The holder's pid (0 if it let go while we asked).
        pid: i32,
        /// The lock file.
        path: PathBuf,
    },
}

impl FsError {
    /// True when the file simply does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FsError::Io { err, .. } if err.kind() == io::ErrorKind::NotFound)
    }
}

impl From<FsError> for io::Error {
    fn from(e: FsError) -> io::Error {
        let kind = match &e {
            FsError::Io { err, .. } => err.kind(),
            FsError::AlreadyRunning { .. } => io::ErrorKind::WouldBlock,
            _ => io::ErrorKind::PermissionDenied,
        };
        io::Error::new(kind, e)
    }
}

fn io_fail<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FsError + 'a {
    move |err| FsError::Io {
        what,
        path: path.to_path_buf(),
        err,
    }
}

/// How [`Dir::open_file`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and append, created with this mode if missing.
    AppendCreate(u32),
    /// Read and append, created with this mode; fails if the name exists.
    AppendCreateNew(u32),
    /// Read and write, created with this mode if missing (lock files).
    ReadWriteCreate(u32),
    /// Read and write, created with this mode; fails if the name exists
    /// (a new seal key).
    ReadWriteCreateNew(u32),
}

/// A directory opened once, without following a link at its last
/// component; files are then reached relative to this handle only.
#[derive(Debug)]
pub struct Dir {
    fd: File,
    path: PathBuf,
}

fn kind_of(m: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Rejects names that would leave the directory (`/`, `.`, `..`).
fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    Ok(())
}

impl Dir {
    /// Opens the directory `path`; refuses it if its last component is a
    /// symbolic link.
    pub fn open(path: &Path) -> Result<Dir, FsError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rfs::open(path, flags, Mode::empty()) {
            Ok(fd) => Ok(Dir {
                fd: File::from(fd),
                path: path.to_path_buf(),
            }),
            // O_DIRECTORY|O_NOFOLLOW on a link answers ENOTDIR (or ELOOP).
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR)
                if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) =>
            {
                Err(FsError::Symlink {
                    path: path.to_path_buf(),
                })
            }
            Err(e) => Err(FsError::Io {
                what: "open directory",
                path: path.to_path_buf(),
                err: e.into(),
            }),
        }
    }

    /// Creates `path` (and missing parents) with mode [`DIR_MODE`] if it
    /// does not exist, then opens it. When it was created here and `group`
    /// is not empty, the new directory gets that group (on its descriptor),
    /// so readers of that group can enter it.
    pub fn create(path: &Path, group: &str) -> Result<Dir, FsError> {
        let existed = std::fs::symlink_metadata(path).is_ok();
        if !existed {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(path)
                .map_err(io_fail("create directory", path))?;
        }
        let dir = Dir::open(path)?;
        if !existed {
            set_group(&dir.fd, group, path);
        }
        Ok(dir)
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in this directory (for messages and readers).
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Refuses a directory another user could write to (docs/record-format.md "Files"):
    /// writable by others (even with the sticky bit, which still lets them
    /// create names), group-writable by a group other than root's or the
    /// daemon's own (effective) group, or owned by a user other than root
    /// or the daemon's own user (an owner can always make it writable).
    /// With a POSIX ACL the group bits are the ACL mask, so a directory
    /// granted to the daemon by ACL (`u:nxaudit:rwx`) passes as long as its
    /// owning group is root or the daemon's own.
    pub fn check_private(&self) -> Result<(), FsError> {
        let m = self
            .fd
            .metadata()
            .map_err(io_fail("stat directory", &self.path))?;
        let mode = m.mode() & 0o7777;
        let euid = nix::unistd::geteuid().as_raw();
        let egid = nix::unistd::getegid().as_raw();
        let why = if mode & 0o002 != 0 {
            Some("writable by every user")
        } else if mode & 0o020 != 0 && m.gid() != 0 && m.gid() != egid {
            Some("writable by its group, which is not the daemon's")
        } else if m.uid() != 0 && m.uid() != euid {
            Some("owned by another user")
        } else {
            None
        };
        match why {
            None => Ok(()),
            Some(why) => Err(FsError::UnsafeDir {
                path: self.path.clone(),
                mode,
                uid: m.uid(),
                gid: m.gid(),
                why,
            }),
        }
    }

    /// Opens the regular file `name` in this directory without following
    /// a link. Writing opens also refuse a file with other hard links.
    pub fn open_file(&self, name: &str, access: Access) -> Result<File, FsError> {
        let path = self.join(name);
        check_name(name).map_err(io_fail("open", &path))?;
        let base = OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
        let (flags, mode) = match access {
            Access::Read => (OFlags::RDONLY, 0),
            Access::ReadWrite => (OFlags::RDWR, 0),
            Access::AppendCreate(m) => (OFlags::RDWR | OFlags::APPEND | OFlags::CREATE, m),
            Access::AppendCreateNew(m) => (
                OFlags::RDWR | OFlags::APPEND | OFlags::CREATE | OFlags::EXCL,
                m,
            ),
            Access::ReadWriteCreate(m) => (OFlags::RDWR | OFlags::CREATE, m),
            Access::ReadWriteCreateNew(m) => (OFlags::RDWR | OFlags::CREATE | OFlags::EXCL, m),
        };
        let fd = match rfs::openat(&self.fd, name, base | flags, Mode::from_raw_mode(mode)) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::LOOP) => return Err(FsError::Symlink { path }),
            Err(e) => {
                return Err(FsError::Io {
                    what: "open",
                    path,
                    err: e.into(),
                })
            }
        };
        let file = File::from(fd);
        let m = file.metadata().map_err(io_fail("stat", &path))?;
        if !m.file_type().is_file() {
            return Err(FsError::NotRegular {
                path,
                kind: kind_of(&m),
            });
        }
        if access != Access::Read && m.nlink() > 1 {
            return Err(FsError::HardLinked {
                path,
                links: m.nlink(),
            });
        }
        // Non-blocking only guarded the open against a FIFO; a regular
        // file ignores it, but leave the descriptor as an ordinary one.
        let fl = rfs::fcntl_getfl(&file).map_err(|e| io_fail("fcntl", &path)(e.into()))?;
        rfs::fcntl_setfl(&file, fl - OFlags::NONBLOCK)
            .map_err(|e| io_fail("fcntl", &path)(e.into()))?;
        Ok(file)
    }

    /// Reads the small regular file `name`; `Ok(None)` when it does not exist.
    pub fn read_small(&self, name: &str) -> Result<Option<Vec<u8>>, FsError> {
        let mut f = match self.open_file(name, Access::Read) {
            Ok(f) => f,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let path = self.join(name);
        let len = f.metadata().map_err(io_fail("stat", &path))?.len();
        if len > MAX_SMALL_FILE {
            return Err(FsError::TooLarge { path, len });
        }
        let mut buf = Vec::with_capacity(len as usize);
        (&mut f)
            .take(MAX_SMALL_FILE)
            .read_to_end(&mut buf)
            .map_err(io_fail("read", &path))?;
        Ok(Some(buf))
    }

    /// Creates a new file `<prefix><random>.tmp` exclusively (`O_EXCL`,
    /// never through a link) with `mode`; returns it and its name. Nothing
    /// planted under a guessed name can be truncated or written through.
    pub fn create_temp(&self, prefix: &str, mode: u32) -> Result<(File, String), FsError> {
        let mut last = None;
        for _ in 0..8 {
            let name = format!(
                "{prefix}{}.tmp",
                random_tag().map_err(io_fail("random tag for", &self.path))?
            );
            match self.open_file(&name, Access::AppendCreateNew(mode)) {
                Ok(f) => {
                    // Plain write, not append, for encoders that seek.
                    let fl =
                        rfs::fcntl_getfl(&f).map_err(|e| io_fail("fcntl", &self.path)(e.into()))?;
                    rfs::fcntl_setfl(&f, fl - OFlags::APPEND)
                        .map_err(|e| io_fail("fcntl", &self.path)(e.into()))?;
                    return Ok((f, name));
                }
                Err(FsError::Io { err, .. }) if err.kind() == io::ErrorKind::AlreadyExists => {
                    last = Some(err);
                }
                Err(e) => return Err(e),
            }
        }
        Err(FsError::Io {
            what: "create a temporary file in",
            path: self.path.clone(),
            err: last.unwrap_or_else(|| io::Error::other("no free name")),
        })
    }

    /// Replaces `name` atomically with `data`: exclusive temp file, write,
    /// fsync, rename over `name`, fsync of the directory (the two fsyncs
    /// only when `durability` asks for them). A link at `name` is
    /// replaced, never written through.
    pub fn replace(
        &self,
        name: &str,
        data: &[u8],
        mode: u32,
        durability: Durability,
    ) -> Result<(), FsError> {
        check_name(name).map_err(io_fail("replace", &self.join(name)))?;
        let (mut f, tmp) = self.create_temp(&format!("{name}."), mode)?;
        let tmp_path = self.join(&tmp);
        let durable = durability == Durability::Durable;
        let res = f
            .write_all(data)
            .and_then(|_| if durable { f.sync_all() } else { Ok(()) })
            .map_err(io_fail("write", &tmp_path))
            .and_then(|_| self.rename(&tmp, name));
        if let Err(e) = res {
            let _ = self.remove(&tmp);
            return Err(e);
        }
        if durable {
            self.sync()?;
        }
        Ok(())
    }

    /// Renames `from` to `to` inside this directory (links are renamed,
    /// not followed).
    pub fn rename(&self, from: &str, to: &str) -> Result<(), FsError> {
        let path = self.join(from);
        check_name(from)
            .and_then(|_| check_name(to))
            .map_err(io_fail("rename", &path))?;
        rfs::renameat(&self.fd, from, &self.fd, to).map_err(|e| FsError::Io {
            what: "rename",
            path,
            err: e.into(),
        })
    }

    /// Removes the name `name` (a link is removed, not its target).
    pub fn remove(&self, name: &str) -> Result<(), FsError> {
        let path = self.join(name);
        check_name(name).map_err(io_fail("remove", &path))?;
        rfs::unlinkat(&self.fd, name, AtFlags::empty()).map_err(|e| FsError::Io {
            what: "remove",
            path,
            err: e.into(),
        })
    }

    /// Metadata of `name` itself (a link is described, not followed);
    /// `Ok(None)` when it does not exist.
    pub fn entry(&self, name: &str) -> Result<Option<std::fs::Metadata>, FsError> {
        let path = self.join(name);
        check_name(name).map_err(io_fail("stat", &path))?;
        match std::fs::symlink_metadata(&path) {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_fail("stat", &path)(e)),
        }
    }

    /// fsyncs the directory, making creates, renames and removes durable.
    pub fn sync(&self) -> Result<(), FsError> {
        self.fd
            .sync_all()
            .map_err(io_fail("sync directory", &self.path))
    }

    /// Removes temporary files of [`Dir::create_temp`] left by a crash
    /// (names `<prefix>…<tag>.tmp` whose prefix starts with `starts`).
    pub fn remove_temps(&self, starts: &str) {
        let Ok(rd) = std::fs::read_dir(&self.path) else {
            return;
        };
        for ent in rd.flatten() {
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(starts) && is_temp_name(name) {
                if let Err(e) = self.remove(name) {
                    warn!(error = %e, "cannot remove a leftover temporary file");
                }
            }
        }
    }
}

/// Whether `name` is one [`Dir::create_temp`] makes: `….<tag>.tmp`.
pub fn is_temp_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".tmp") else {
        return false;
    };
    let Some((_, tag)) = stem.rsplit_once('.') else {
        return false;
    };
    tag.len() == TAG_LEN
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A random tag of [`TAG_LEN`] characters from the kernel's generator.
fn random_tag() -> io::Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut raw = [0u8; TAG_LEN];
    rustix::rand::getrandom(&mut raw, rustix::rand::GetRandomFlags::empty())?;
    Ok(raw
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect())
}

/// Splits `path` into its directory (opened without following a final
/// link) and file name.
fn split(path: &Path) -> Result<(Dir, String), FsError> {
    let bad = || FsError::Io {
        what: "use",
        path: path.to_path_buf(),
        err: io::Error::new(io::ErrorKind::InvalidInput, "no file name"),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(bad)?
        .to_string();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((Dir::open(parent)?, name))
}

/// Whether [`Dir::replace`] syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file and the directory: positions and cursors, which
    /// must survive a power loss.
    Durable,
    /// No fsync: files rebuilt at every start and every second (status,
    /// pid), where a sync would only make the writer's own `fdatasync`
    /// wait behind the filesystem's journal commit.
    Volatile,
}

/// Replaces the state file at `path` atomically (see [`Dir::replace`]),
/// with mode [`STATE_FILE_MODE`]. Every state file goes through here.
pub fn replace_file(path: &Path, data: &[u8], durability: Durability) -> Result<(), FsError> {
    let (dir, name) = split(path)?;
    dir.replace(&name, data, STATE_FILE_MODE, durability)
}

/// Reads the small state file at `path` without following a link;
/// `Ok(None)` when it does not exist.
pub fn read_file(path: &Path) -> Result<Option<Vec<u8>>, FsError> {
    match split(path) {
        Ok((dir, name)) => dir.read_small(&name),
        // No directory yet: no file either.
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sets the group of the open file `f` to `group` (if non-empty), logging
/// failures: a missing group must not stop the daemon from writing audit
/// records. `path` is only for the message.
pub fn set_group(f: &File, group: &str, path: &Path) {
    if group.is_empty() {
        return;
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => {
            let gid = rustix::fs::Gid::from_raw(g.gid.as_raw());
            if let Err(e) = rfs::fchown(f, None, Some(gid)) {
                warn!(path = %path.display(), group, error = %e, "cannot set group");
            }
        }
        _ => warn!(path = %path.display(), group, "group does not exist; left as created"),
    }
}

/// Sets the group of the file at `path` without following a link at its
/// last component: on its descriptor for a regular file, with `lchown`
/// semantics for what cannot be opened (a socket).
pub fn set_group_path(path: &Path, group: &str) {
    if group.is_empty() {
        return;
    }
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    match rfs::open(path, flags, Mode::empty()) {
        Ok(fd) => set_group(&File::from(fd), group, path),
        Err(rustix::io::Errno::LOOP) => {
            warn!(path = %path.display(), "is a symbolic link; group not set")
        }
        Err(_) => match nix::unistd::Group::from_name(group) {
            Ok(Some(g)) => {
                let gid = rustix::fs::Gid::from_raw(g.gid.as_raw());
                if let Err(e) =
                    rfs::chownat(rfs::CWD, path, None, Some(gid), AtFlags::SYMLINK_NOFOLLOW)
                {
                    warn!(path = %path.display(), group, error = %e, "cannot set group");
                }
            }
            _ => warn!(path = %path.display(), group, "group does not exist; left as created"),
        },
    }
}

/// Sets the daemon's umask to [`UMASK`]; returns the previous one.
pub fn set_umask() -> u32 {
    use nix::sys::stat::{umask, Mode as NixMode};
    umask(NixMode::from_bits_truncate(UMASK)).bits()
}

/// The exclusive lock that makes one daemon at a time own its log and
/// state directories: a POSIX `fcntl` write lock on `state/nxauditd.lock`,
/// released by the kernel when the process ends (even by `kill -9`), and
/// whose holder's pid any process can learn with `F_GETLK`. The file also
/// holds the pid as text, for people; the lock is the truth.
///
/// POSIX locks belong to the process and are dropped when it closes *any*
/// descriptor of the file: the daemon must never open the lock file again
/// while it holds this.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

fn write_lock() -> libc::flock {
    libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    }
}

/// The pid holding a lock that conflicts with a write lock on `f`.
fn holder_of(f: &File, path: &Path) -> Result<Option<i32>, FsError> {
    let mut fl = write_lock();
    nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_GETLK(&mut fl))
        .map_err(|e| io_fail("query the lock on", path)(e.into()))?;
    if fl.l_type == libc::F_UNLCK as libc::c_short {
        Ok(None)
    } else {
        Ok(Some(fl.l_pid))
    }
}

impl InstanceLock {
    /// Takes the lock in `state`, or fails with [`FsError::AlreadyRunning`]
    /// naming the holder. Writes nothing else.
    pub fn acquire(state: &Dir) -> Result<InstanceLock, FsError> {
        let path = state.join(LOCK_FILE);
        let mut file = state.open_file(LOCK_FILE, Access::ReadWriteCreate(STATE_FILE_MODE))?;
        let mut tries = 0;
        loop {
            let fl = write_lock();
            match nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_SETLK(&fl)) {
                Ok(_) => break,
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => {
                    tries += 1;
                    match holder_of(&file, &path)? {
                        Some(pid) => return Err(FsError::AlreadyRunning { pid, path }),
                        // The holder let go between the two calls: try again.
                        None if tries < 3 => continue,
                        None => return Err(FsError::AlreadyRunning { pid: 0, path }),
                    }
                }
                Err(e) => return Err(io_fail("lock", &path)(e.into())),
            }
        }
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|_| file.write_all(pid.as_bytes()))
            .map_err(io_fail("write", &path))?;
        Ok(InstanceLock { _file: file })
    }
}

/// The pid of the daemon holding the instance lock in `state_dir`, or
/// `None` when no process holds it (no daemon runs, whatever a pid file
/// says). Always `None` inside the holding process itself.
pub fn lock_holder(state_dir: &Path) -> Result<Option<i32>, FsError> {
    let dir = match Dir::open(state_dir) {
        Ok(d) => d,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let f = match dir.open_file(LOCK_FILE, Access::Read) {
        Ok(f) => f,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    holder_of(&f, &dir.join(LOCK_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn links_are_refused_and_their_targets_untouched() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target");
        std::fs::write(&target, "secret\n").unwrap();
        let sub = d.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::os::unix::fs::symlink(&target, sub.join("f")).unwrap();
        let dir = Dir::open(&sub).unwrap();
        for a in [Access::Read, Access::ReadWrite, Access::AppendCreate(0o640)] {
            assert!(matches!(
                dir.open_file("f", a),
                Err(FsError::Symlink { .. })
            ));
        }
        let err = dir.read_small("f").unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
        dir.replace("f", b"new\n", 0o640, Durability::Durable)
            .unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"secret\n");
        assert_eq!(std::fs::read(sub.join("f")).unwrap(), b"new\n");
        std::os::unix::fs::symlink(&sub, d.path().join("link")).unwrap();
        assert!(matches!(
            Dir::open(&d.path().join("link")),
            Err(FsError::Symlink { .. })
        ));
    }

    #[test]
    fn temp_names_are_unpredictable_and_recognised() {
        let d = tempfile::tempdir().unwrap();
        let dir = Dir::open(d.path()).unwrap();
        let (_, a) = dir.create_temp("x.", 0o600).unwrap();
        let (_, b) = dir.create_temp("x.", 0o600).unwrap();
        assert_ne!(a, b);
        assert!(is_temp_name(&a), "{a}");
        assert!(!is_temp_name("x.log.zst.tmp"));
        dir.remove_temps("x.");
        assert!(dir.entry(&a).unwrap().is_none());
    }

    #[test]
    fn open_directories_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let dir = Dir::open(d.path()).unwrap();
        dir.check_private().unwrap();
        for mode in [0o777, 0o1777, 0o703] {
            std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            let e = dir.check_private().unwrap_err().to_string();
            assert!(e.contains(&d.path().display().to_string()), "{e}");
            assert!(e.contains(&format!("{mode:04o}")), "{e}");
        }
    }
}

//! Durable checkpoints of the readers of the log: a forwarder's or a
//! sink's last handled seq, the journal follower's cursor.
//!
//! Every checkpoint is one small file in the state directory, replaced
//! atomically and durably through [`crate::fsutil::replace_file`]
//! (exclusive temp file, fsync, rename, fsync of the directory) and read
//! through [`crate::fsutil::read_file`], so a link planted in its place is
//! refused before anything is read. A crash leaves the old or the new
//! content, never a mix.
//!
//! A seq checkpoint holds the decimal number and a newline (the format of
//! `forward.pos` since the first release); other readers store their own
//! bytes (the journal's JSON cursor file).

use std::io;
use std::path::{Path, PathBuf};

use crate::fsutil::{self, Durability, FsError};

/// Errors of a checkpoint file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file or its directory could not be read, created or replaced
    /// (including a link or a non-regular file in its place).
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: FsError,
    },
    /// The file does not hold what this reader saves there.
    #[error("checkpoint {path} is corrupt: {content:?}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What it holds (cut).
        content: String,
    },
}

impl From<CheckpointError> for io::Error {
    fn from(e: CheckpointError) -> io::Error {
        io::Error::other(e.to_string())
    }
}

/// One checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    path: PathBuf,
}

impl Checkpoint {
    /// The checkpoint `name` in the state directory `state_dir`.
    pub fn in_state_dir(state_dir: &Path, name: &str) -> Checkpoint {
        Checkpoint {
            path: state_dir.join(name),
        }
    }

    /// The checkpoint at `path` (its directory is created on first save).
    pub fn at(path: PathBuf) -> Checkpoint {
        Checkpoint { path }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved bytes; `Ok(None)` when nothing was saved yet. Blocking.
    pub fn load_bytes(&self) -> Result<Option<Vec<u8>>, CheckpointError> {
        fsutil::read_file(&self.path).map_err(|source| CheckpointError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Replaces the saved bytes atomically and durably. Blocking: call it
    /// from `spawn_blocking` on the reactor.
    pub fn save_bytes(&self, data: &[u8]) -> Result<(), CheckpointError> {
        let io = |source| CheckpointError::Io {
            path: self.path.clone(),
            source,
        };
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."));
        fsutil::Dir::create(dir, "").map_err(io)?;
        fsutil::replace_file(&self.path, data, Durability::Durable).map_err(io)
    }

    /// The saved seq; `Ok(None)` when nothing was saved yet.
    pub fn load_seq(&self) -> Result<Option<u64>, CheckpointError> {
        let Some(bytes) = self.load_bytes()? else {
            return Ok(None);
        };
        let s = String::from_utf8_lossy(&bytes);
        s.trim().parse().map(Some).map_err(|_| self.corrupt(&s))
    }

    /// Saves a seq (decimal and a newline).
    pub fn save_seq(&self, seq: u64) -> Result<(), CheckpointError> {
        self.save_bytes(format!("{seq}\n").as_bytes())
    }

    /// A [`CheckpointError::Corrupt`] for this file showing `content` (cut).
    pub fn corrupt(&self, content: &str) -> CheckpointError {
        CheckpointError::Corrupt {
            path: self.path.clone(),
            content: content.chars().take(40).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_roundtrip_corrupt_and_links() {
        let d = tempfile::tempdir().unwrap();
        let cp = Checkpoint::in_state_dir(&d.path().join("state"), "forward.pos");
        assert_eq!(cp.load_seq().unwrap(), None);
        cp.save_seq(17).unwrap();
        assert_eq!(cp.load_seq().unwrap(), Some(17));
        assert_eq!(std::fs::read_to_string(cp.path()).unwrap(), "17\n");
        std::fs::write(cp.path(), "x").unwrap();
        assert!(matches!(
            cp.load_seq(),
            Err(CheckpointError::Corrupt { .. })
        ));
        // A link in its place is neither read nor written through.
        let secret = d.path().join("secret");
        std::fs::write(&secret, "42\n").unwrap();
        std::fs::remove_file(cp.path()).unwrap();
        std::os::unix::fs::symlink(&secret, cp.path()).unwrap();
        assert!(matches!(cp.load_seq(), Err(CheckpointError::Io { .. })));
        let _ = cp.save_seq(5);
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "42\n");
    }
}

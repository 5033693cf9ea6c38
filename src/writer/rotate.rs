//! Background work on rotated files: compression and retention.
//!
//! Runs on its own thread so the writer never waits for it. Compression is
//! crash-safe: `X.log` → `X.log.zst.<random>.tmp` (created exclusively,
//! synced) → rename to `X.log.zst` (dir synced) → remove `X.log`. A crash
//! leaves either the plain file or a complete compressed one (and at worst
//! a `.tmp` that the next start removes). Every file is reached through
//! the directory handle of [`crate::fsutil::Dir`]: no planted link is
//! followed, no predictable temp name is ever opened. Retention deletes
//! the oldest rotated files first, never the active one and never one a
//! registered reader of the log (a sink) has not read yet: the floor comes
//! from [`Readers`], so this module knows no reader by name.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use tracing::{info, warn};

use crate::config::{Compression as Codec, Config, LogConfig};
use crate::logset::{self, Compression};
use crate::reader::Readers;

use crate::fsutil::{self, Access, Dir};

/// Uncompressed size of one zstd frame of a rotated file.
const ZSTD_FRAME: usize = 1 << 20;

/// The limits retention enforces (live-reloadable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Most rotated files kept (0 = no limit).
    pub max_files: usize,
    /// Most bytes of rotated files kept (0 = no limit).
    pub max_total_bytes: u64,
    /// Free space to keep on the log's filesystem (0 = no limit).
    pub min_free_bytes: u64,
}

impl Retention {
    /// The limits of a `[log]` section.
    pub fn from_config(c: &LogConfig) -> Retention {
        Retention {
            max_files: c.max_files,
            max_total_bytes: c.max_total_bytes,
            min_free_bytes: c.min_free_bytes,
        }
    }
}

enum Job {
    Compress(PathBuf),
    SetRetention(Retention),
}

/// Handle to the compression/retention thread.
pub struct Compressor {
    tx: Option<mpsc::Sender<Job>>,
}

struct Worker {
    dir: PathBuf,
    codec: Codec,
    retention: Retention,
    readers: Readers,
    mode: u32,
    group: String,
}

impl Compressor {
    /// Starts the thread; cleans up leftovers of a crash and queues rotated
    /// files that were never compressed. Retention keeps what `readers`
    /// still need.
    pub fn start(cfg: &Config, readers: Readers) -> Compressor {
        let mut w = Worker {
            dir: cfg.log_dir.clone(),
            codec: cfg.log.compress,
            retention: Retention::from_config(&cfg.log),
            readers,
            mode: cfg.log.mode.bits(),
            group: cfg.log.group.clone(),
        };
        let (tx, rx) = mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("nxaudit-compress".into())
            .spawn(move || {
                w.recover();
                w.enforce_retention();
                while let Ok(job) = rx.recv() {
                    match job {
                        Job::Compress(p) => {
                            if let Err(e) = w.compress(&p) {
                                warn!(file = %p.display(), error = %e, "compression failed; the plain file is kept");
                            }
                            w.enforce_retention();
                        }
                        Job::SetRetention(r) => {
                            w.retention = r;
                            w.enforce_retention();
                        }
                    }
                }
            });
        match spawned {
            Ok(_) => Compressor { tx: Some(tx) },
            Err(e) => {
                warn!(error = %e, "cannot start the compression thread; rotated files stay plain");
                Compressor { tx: None }
            }
        }
    }

    /// Queues a rotated file for compression and retention.
    pub fn submit(&self, path: PathBuf) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Job::Compress(path));
        }
    }

    /// Replaces the retention limits.
    pub fn set_retention(&self, r: Retention) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Job::SetRetention(r));
        }
    }
}

impl Worker {
    /// Removes temp files of an interrupted compression, drops a plain file
    /// whose compressed copy is complete, and compresses the rest.
    fn recover(&mut self) {
        let Ok(dir) = Dir::open(&self.dir) else {
            return;
        };
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut plain = Vec::new();
        for ent in rd.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            if name.starts_with("audit-") && name.ends_with(".tmp") {
                info!(file = %ent.path().display(), "removing leftover of an interrupted compression");
                let _ = dir.remove(&name);
            } else if let Some((_, _, Compression::Plain)) = logset::parse_rotated_name(&name) {
                plain.push(name);
            }
        }
        plain.sort();
        for name in plain {
            for ext in ["zst", "gz"] {
                if matches!(dir.entry(&format!("{name}.{ext}")), Ok(Some(_))) {
                    let _ = dir.remove(&name);
                }
            }
            if matches!(dir.entry(&name), Ok(Some(_))) {
                let p = dir.join(&name);
                if let Err(e) = self.compress(&p) {
                    warn!(file = %p.display(), error = %e, "compression failed");
                }
            }
        }
    }

    fn compress(&self, src: &Path) -> io::Result<()> {
        let ext = match self.codec {
            Codec::None => return Ok(()),
            Codec::Zstd => "zst",
            Codec::Gzip => "gz",
        };
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io::Error::other(format!("{} has no file name", src.display())))?;
        let dir = Dir::open(&self.dir)?;
        let dst = format!("{name}.{ext}");
        let mut input = BufReader::new(dir.open_file(name, Access::Read)?);
        let (out, tmp) = dir.create_temp(&format!("{dst}."), self.mode)?;
        fsutil::set_group(&out, &self.group, &dir.join(&tmp));
        let res = (|| -> io::Result<File> {
            match self.codec {
                Codec::Zstd => {
                    // Independent frames of about 1 MiB cut after a newline:
                    // still one ordinary .zst for zstdcat, but a time search
                    // can binary-search frames instead of decoding the file.
                    let mut w = BufWriter::new(out);
                    let mut chunk = Vec::with_capacity(ZSTD_FRAME + (64 << 10));
                    loop {
                        let n = input.read_until(b'\n', &mut chunk)?;
                        if n == 0 || chunk.len() >= ZSTD_FRAME {
                            if !chunk.is_empty() {
                                w.write_all(&zstd::bulk::compress(&chunk, 3)?)?;
                                chunk.clear();
                            }
                            if n == 0 {
                                break;
                            }
                        }
                    }
                    w.into_inner().map_err(|e| e.into_error())
                }
                _ => {
                    let mut enc = flate2::write::GzEncoder::new(
                        BufWriter::new(out),
                        flate2::Compression::default(),
                    );
                    io::copy(&mut input, &mut enc)?;
                    enc.finish()?.into_inner().map_err(|e| e.into_error())
                }
            }
        })();
        let file = match res {
            Ok(f) => f,
            Err(e) => {
                let _ = dir.remove(&tmp);
                return Err(e);
            }
        };
        if let Err(e) = file.sync_all() {
            let _ = dir.remove(&tmp);
            return Err(e);
        }
        dir.rename(&tmp, &dst)?;
        dir.sync()?;
        dir.remove(name)?;
        dir.sync()?;
        Ok(())
    }

    fn enforce_retention(&self) {
        let Ok(dir) = Dir::open(&self.dir) else {
            return;
        };
        let Ok(files) = logset::list(&self.dir) else {
            return;
        };
        let rotated: Vec<_> = files.iter().filter(|f| !f.active).collect();
        // A rotated file's last seq is the next file's first seq minus one.
        let mut entries: Vec<(PathBuf, u64, u64)> = Vec::new();
        for (i, f) in rotated.iter().enumerate() {
            let size = std::fs::symlink_metadata(&f.path)
                .map(|m| m.len())
                .unwrap_or(0);
            let next_first = rotated
                .get(i + 1)
                .and_then(|n| n.first_seq)
                .unwrap_or(u64::MAX);
            entries.push((f.path.clone(), size, next_first.saturating_sub(1)));
        }
        let floor = self.readers.floor();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        let mut count = entries.len();
        for (path, size, last_seq) in entries {
            let over_count = self.retention.max_files > 0 && count > self.retention.max_files;
            let over_bytes =
                self.retention.max_total_bytes > 0 && total > self.retention.max_total_bytes;
            let low_space = self.retention.min_free_bytes > 0
                && logset::free_bytes(&self.dir).is_some_and(|f| f < self.retention.min_free_bytes);
            if !(over_count || over_bytes || low_space) {
                break;
            }
            if let Some(pos) = floor {
                if last_seq > pos {
                    warn!(file = %path.display(), read_up_to = pos, readers = ?self.readers.names(), "retention wants to delete a file a reader of the log has not read; keeping it");
                    break;
                }
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            match dir.remove(name) {
                Ok(()) => {
                    info!(file = %path.display(), "retention removed an old log file");
                    total -= size;
                    count -= 1;
                }
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "retention cannot remove file");
                    break;
                }
            }
        }
        let _ = dir.sync();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::Checkpoint;

    /// A registered reader's checkpoint is the floor: rotated files holding
    /// records after it stay whatever the limits say; once it moves on they go.
    #[test]
    fn a_readers_checkpoint_holds_back_retention() {
        let d = tempfile::tempdir().unwrap();
        let t = chrono::Utc::now();
        for first in [1u64, 11, 21, 31] {
            std::fs::write(d.path().join(logset::rotated_name(t, first)), "x\n").unwrap();
        }
        std::fs::write(d.path().join(logset::ACTIVE), "x\n").unwrap();
        let readers = Readers::default();
        let cp = Checkpoint::in_state_dir(&d.path().join("state"), "sink.pos");
        cp.save_seq(15).unwrap();
        readers.register("sink", cp.clone());
        let w = Worker {
            dir: d.path().to_path_buf(),
            codec: Codec::None,
            retention: Retention {
                max_files: 1,
                max_total_bytes: 0,
                min_free_bytes: 0,
            },
            readers,
            mode: 0o640,
            group: String::new(),
        };
        let rotated = || {
            logset::list(d.path())
                .unwrap()
                .iter()
                .filter(|f| !f.active)
                .filter_map(|f| f.first_seq)
                .collect::<Vec<_>>()
        };
        w.enforce_retention();
        // 1..=10 is read; 11..=20 holds 16..=20, not read yet.
        assert_eq!(rotated(), vec![11, 21, 31]);
        cp.save_seq(35).unwrap();
        w.enforce_retention();
        assert_eq!(rotated(), vec![31]);
    }
}

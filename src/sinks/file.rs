//! The file sink (`[sinks.file]`): a filtered copy of the records in
//! another file, as the exact lines of the audit log — for example only
//! SSH logons and sudo commands for a security team's collector.
//!
//! - Exactly once: lines are written and `fdatasync`ed before the
//!   checkpoint passes them; at start the sink cuts a torn last line of
//!   its file and reads the seq of the last one, and skips records it
//!   already holds, so a crash between the write and the checkpoint
//!   duplicates nothing.
//! - The file is opened without following a link, created with `mode`,
//!   its group set to `group` (as the log's files).
//! - Rotation is simple: at `max_bytes` the file is renamed to
//!   `<path>.1` (replacing an older one) and a new file started; on
//!   SIGHUP the file is reopened, so an external tool can move it away.
//! - Writes happen on the blocking pool; lines wait in memory (at most
//!   one batch of the runner, or `FLUSH_AT` bytes) until written.

use std::fs::File;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::sink::Sink;
use crate::catalog::Component;
use crate::config::values::FileMode;
use crate::fsutil::{self, Access, Dir};
use crate::logset;
use crate::reader::{LogRecord, RecordFilter};
use crate::record::parse_line;

/// Name of the checkpoint file in the state directory.
pub const POSITION_FILE: &str = "file-sink.pos";
/// Name of the status section.
pub const STATUS_SECTION: &str = "file_sink";
/// Buffered lines are written once they reach this many bytes.
const FLUSH_AT: usize = 256 << 10;

/// `[sinks.file]`: a filtered copy of the records in another file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileSinkConfig {
    /// Run the sink.
    pub enabled: bool,
    /// The copy; its directory must exist.
    pub path: PathBuf,
    /// Codes copied; empty = all.
    pub codes: Vec<u32>,
    /// Components copied; empty = all.
    pub components: Vec<Component>,
    /// Mode of a newly created file (an octal string in the file).
    pub mode: FileMode,
    /// Group of the file (empty: the daemon's).
    pub group: String,
    /// Size at which the file is moved to `<path>.1` (0 = never).
    pub max_bytes: u64,
}

impl Default for FileSinkConfig {
    fn default() -> Self {
        FileSinkConfig {
            enabled: false,
            path: "/var/log/nexthink/audit-copy.log".into(),
            codes: Vec::new(),
            components: Vec::new(),
            mode: FileMode::new(0o640),
            group: "nxaudit-read".into(),
            max_bytes: 0,
        }
    }
}

/// Errors of the section, found at load.
#[derive(Debug, thiserror::Error)]
pub enum FileSinkError {
    /// `path` has no file name.
    #[error("sinks.file.path must name a file (got {0:?})")]
    Path(PathBuf),
}

impl FileSinkConfig {
    /// Checks the values `build` needs.
    pub fn validate(&self) -> Result<(), FileSinkError> {
        split(&self.path)?;
        Ok(())
    }

    /// The running sink.
    pub fn build(&self) -> Result<FileSink, FileSinkError> {
        let (dir, name) = split(&self.path)?;
        Ok(FileSink {
            dir,
            name,
            mode: self.mode.bits(),
            group: self.group.clone(),
            max_bytes: self.max_bytes,
            filter: RecordFilter::by_code_and_component(&self.codes, &self.components),
            file: None,
            len: 0,
            held: 0,
            buf: Vec::new(),
            unsynced_from: None,
            reopen: false,
            skipped: 0,
            rotations: 0,
        })
    }
}

fn split(path: &Path) -> Result<(PathBuf, String), FileSinkError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| FileSinkError::Path(path.to_path_buf()))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    Ok((dir.to_path_buf(), name.to_string()))
}

/// The running file sink.
pub struct FileSink {
    dir: PathBuf,
    name: String,
    mode: u32,
    group: String,
    max_bytes: u64,
    filter: RecordFilter,
    file: Option<Arc<File>>,
    /// Length of the file up to its last complete line.
    len: u64,
    /// Highest seq the file holds (written or buffered).
    held: u64,
    /// Lines delivered, not yet written.
    buf: Vec<u8>,
    /// Seq of the first line delivered and not yet synced.
    unsynced_from: Option<u64>,
    /// Reopen before the next write (reload).
    reopen: bool,
    skipped: u64,
    rotations: u64,
}

/// The open file, its length after cutting a torn tail, and the seq of
/// its last line (0 when empty). Blocking.
fn open_file(dir: &Path, name: &str, mode: u32, group: &str) -> io::Result<(File, u64, u64)> {
    let d = Dir::open(dir)?;
    let mut f = d.open_file(name, Access::AppendCreate(mode))?;
    fsutil::set_group(&f, group, &dir.join(name));
    let size = f.metadata()?.len();
    let (len, last) = last_complete_line(&mut f, size)?;
    if len < size {
        // A line torn by a crash: its record was never checkpointed.
        f.set_len(len)?;
        f.sync_data()?;
    }
    let mut seq = last
        .as_deref()
        .and_then(|l| parse_line(l).ok())
        .map(|r| r.seq);
    if seq.is_none() && len == 0 {
        // Just rotated: the last copied record is in the older file.
        if let Ok(mut old) = d.open_file(&format!("{name}.1"), Access::Read) {
            let n = old.metadata()?.len();
            let (_, l) = last_complete_line(&mut old, n)?;
            seq = l.as_deref().and_then(|l| parse_line(l).ok()).map(|r| r.seq);
        }
    }
    Ok((f, len, seq.unwrap_or(0)))
}

/// The end of the last complete line at or before `size`, and that line.
fn last_complete_line(f: &mut File, size: u64) -> io::Result<(u64, Option<String>)> {
    let end = logset::end_of_last_line(f, size)?;
    let last = logset::last_lines_before(f, end, 1, &|_: &str| true)?.pop();
    Ok((end, last))
}

impl FileSink {
    async fn open_now(&mut self) -> io::Result<()> {
        let (dir, name, mode, group) = (
            self.dir.clone(),
            self.name.clone(),
            self.mode,
            self.group.clone(),
        );
        let (f, len, last) =
            tokio::task::spawn_blocking(move || open_file(&dir, &name, mode, &group))
                .await
                .map_err(io::Error::other)??;
        self.file = Some(Arc::new(f));
        self.len = len;
        self.held = self.held.max(last);
        self.reopen = false;
        Ok(())
    }

    /// Writes the buffered lines (and syncs them with `sync`); on failure
    /// the file is cut back to its last complete line and the lines stay
    /// buffered.
    async fn write_out(&mut self, sync: bool) -> io::Result<()> {
        if self.file.is_none() || self.reopen {
            self.open_now().await?;
        }
        let Some(file) = self.file.clone() else {
            return Err(io::Error::from(io::ErrorKind::NotConnected));
        };
        let buf = std::mem::take(&mut self.buf);
        let len = self.len;
        let (buf, r) = tokio::task::spawn_blocking(move || {
            let r = (&*file).write_all(&buf).and_then(
                |()| {
                    if sync {
                        file.sync_data()
                    } else {
                        Ok(())
                    }
                },
            );
            if r.is_err() {
                let _ = file.set_len(len);
                return (buf, r);
            }
            (Vec::new(), Ok(()))
        })
        .await
        .map_err(io::Error::other)?;
        match r {
            Ok(()) => {
                self.len = self
                    .file
                    .as_ref()
                    .map_or(0, |f| f.metadata().map_or(0, |m| m.len()));
                if sync {
                    self.unsynced_from = None;
                }
                Ok(())
            }
            Err(e) => {
                self.buf = buf;
                Err(e)
            }
        }
    }

    /// Moves a full file to `<path>.1` and starts a new one.
    async fn rotate_if_full(&mut self) -> io::Result<()> {
        if self.max_bytes == 0 || self.len < self.max_bytes {
            return Ok(());
        }
        let (dir, name) = (self.dir.clone(), self.name.clone());
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let d = Dir::open(&dir)?;
            d.rename(&name, &format!("{name}.1"))?;
            d.sync()?;
            Ok(())
        })
        .await
        .map_err(io::Error::other)??;
        self.rotations += 1;
        self.open_now().await
    }
}

impl Sink for FileSink {
    type Config = FileSinkConfig;

    fn name(&self) -> &'static str {
        STATUS_SECTION
    }

    fn checkpoint(&self) -> &'static str {
        POSITION_FILE
    }

    fn delivered_key(&self) -> &'static str {
        "written"
    }

    fn filter(&self) -> RecordFilter {
        self.filter.clone()
    }

    fn reconfigure(&mut self, cfg: &FileSinkConfig) {
        // Filters and the size cap change live; the file is reopened (it
        // may have been moved away). A new path needs a restart.
        self.filter = RecordFilter::by_code_and_component(&cfg.codes, &cfg.components);
        self.max_bytes = cfg.max_bytes;
        self.reopen = true;
    }

    async fn open(&mut self) -> io::Result<()> {
        self.open_now().await
    }

    async fn deliver(&mut self, r: &LogRecord) -> io::Result<()> {
        if r.rec.seq <= self.held {
            // Already in the file (written before a crash or restart).
            self.skipped += 1;
            return Ok(());
        }
        self.buf.extend_from_slice(r.line.as_bytes());
        self.buf.push(b'\n');
        self.held = r.rec.seq;
        self.unsynced_from.get_or_insert(r.rec.seq);
        if self.buf.len() >= FLUSH_AT {
            self.write_out(false).await?;
        }
        Ok(())
    }

    async fn commit(&mut self, _idle: bool) -> io::Result<()> {
        if self.unsynced_from.is_none() && !self.reopen {
            return Ok(());
        }
        self.write_out(true).await?;
        self.rotate_if_full().await
    }

    fn confirmed(&self, processed: u64) -> u64 {
        match self.unsynced_from {
            Some(s) => s.saturating_sub(1).min(processed),
            None => processed,
        }
    }

    fn status(&self, doc: &mut Map<String, Value>) {
        doc.insert(
            "path".into(),
            json!(self.dir.join(&self.name).display().to_string()),
        );
        doc.insert("bytes".into(), json!(self.len));
        doc.insert("already_held".into(), json!(self.skipped));
        doc.insert("rotations".into(), json!(self.rotations));
    }
}

/// The seqs of the records in a copy made by the sink (tests, tools).
pub fn seqs_in(path: &Path) -> io::Result<Vec<u64>> {
    let f = File::open(path)?;
    let mut out = Vec::new();
    for l in io::BufReader::new(f).lines() {
        if let Ok(r) = parse_line(&l?) {
            out.push(r.seq);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::follow::tests::line;

    fn rec(seq: u64, code: u32) -> LogRecord {
        let l = line(seq, code, "x");
        LogRecord {
            rec: parse_line(&l).unwrap(),
            line: l,
        }
    }

    fn sink(path: &Path) -> FileSink {
        FileSinkConfig {
            enabled: true,
            path: path.to_path_buf(),
            group: String::new(),
            ..Default::default()
        }
        .build()
        .unwrap()
    }

    #[tokio::test]
    async fn copies_exact_lines_once_and_cuts_a_torn_tail() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("copy.log");
        let mut s = sink(&p);
        s.open().await.unwrap();
        for q in 1..=3 {
            s.deliver(&rec(q, 60001)).await.unwrap();
        }
        assert_eq!(s.confirmed(3), 0, "nothing synced yet");
        s.commit(false).await.unwrap();
        assert_eq!(s.confirmed(3), 3);
        let want: String = (1..=3).map(|q| line(q, 60001, "x") + "\n").collect();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), want);
        // A crash mid-line, then a restart that is handed 2..=4 again.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"2026-11-25T15:08:39.123456Z torn")
            .unwrap();
        let mut s = sink(&p);
        s.open().await.unwrap();
        for q in 2..=4 {
            s.deliver(&rec(q, 60001)).await.unwrap();
        }
        s.commit(true).await.unwrap();
        assert_eq!(seqs_in(&p).unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(s.skipped, 2);
    }

    #[tokio::test]
    async fn rotates_at_the_size_cap_and_remembers_the_last_seq() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("copy.log");
        let mut s = sink(&p);
        s.max_bytes = 1;
        s.open().await.unwrap();
        s.deliver(&rec(1, 60001)).await.unwrap();
        s.commit(false).await.unwrap();
        assert_eq!(seqs_in(&d.path().join("copy.log.1")).unwrap(), vec![1]);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
        let mut s = sink(&p);
        s.open().await.unwrap();
        s.deliver(&rec(1, 60001)).await.unwrap();
        assert_eq!(s.skipped, 1, "the rotated copy holds seq 1");
    }

    #[test]
    fn bad_values_are_refused_at_load() {
        let c = FileSinkConfig {
            path: "/".into(),
            ..Default::default()
        };
        assert!(matches!(c.validate(), Err(FileSinkError::Path(_))));
        let e = crate::config::Config::from_toml(
            "[sinks.file]\nmode = \"rw-r-----\"\n",
            Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("mode"), "{e}");
        let e = crate::config::Config::from_toml(
            "[sinks.file]\ncomponents = [\"Nope\"]\n",
            Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("components"), "{e}");
    }
}

//! The journalctl child of a follower: its command line, one run of it
//! (start, read its output, end) and what its stderr said.

use std::collections::VecDeque;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, BufReader};
use tokio::process::{Child, Command};

use super::status::sleep_until_opt;
use super::{Classifier, Follower, RecordSink};
use crate::config::FirstStart;
use crate::shutdown::Shutdown;
use crate::sources::journal::cursor::JournalCursor;
use crate::sources::journal::entry::{JournalEntry, Line, LineReader, MAX_LINE};
use crate::sources::journal::JournalError;

/// Arguments of every journalctl run.
pub(super) const BASE_ARGS: [&str; 4] = ["--output=json", "--all", "--quiet", "--no-pager"];

/// Added to every run without `--boot` (which it excludes): `--follow`
/// alone implies the current boot only (systemd 252, `parse_argv`), which
/// would skip what an earlier boot logged after the saved cursor. Entries of
/// other machines that `--merge` brings in from the system journal are
/// dropped by machine id ([`Follower`]).
pub(super) const MERGE: &str = "--merge";

/// journalctl options that name the journal to read instead of the
/// system's own.
pub(super) const LOCATION_ARGS: [&str; 7] = [
    "--directory",
    "-D",
    "--file",
    "--root",
    "--image",
    "--machine",
    "-M",
];

/// Why one run of the child ended.
pub(super) enum RunEnd {
    Shutdown,
    Idle,
    Eof,
    Garbage(u32),
    ReadError(std::io::Error),
}

/// How one run of the child ended, for the restart decision.
pub(super) enum ChildEnd {
    /// The daemon stops.
    Shutdown,
    /// A poll-mode run reached the end of the journal.
    PollDone,
    /// A follow-mode run was silent for `idle_refresh`.
    Idle,
    /// Anything else: restart with back-off.
    Failed(String),
}

/// Last lines of the child's stderr, for the status.
#[derive(Clone, Default)]
pub(super) struct StderrTail(Arc<Mutex<VecDeque<String>>>);

impl StderrTail {
    const LINES: usize = 4;

    fn push(&self, line: String) {
        if let Ok(mut q) = self.0.lock() {
            if q.len() == Self::LINES {
                q.pop_front();
            }
            q.push_back(line);
        }
    }

    fn take(&self) -> String {
        match self.0.lock() {
            Ok(mut q) => q.drain(..).collect::<Vec<_>>().join(" / "),
            Err(_) => String::new(),
        }
    }
}

impl<C: Classifier, S: RecordSink> Follower<C, S> {
    /// The cursor of the newest matching entry, so that "now" survives a
    /// restart before the first entry (none: the journal has none yet).
    pub(super) async fn tail_cursor(&mut self) -> Result<Option<JournalCursor>, JournalError> {
        let mut args = vec![MERGE.to_string(), "--lines=1".to_string()];
        args.extend(self.classifier.journal_matches());
        Ok(self.newest_entry(&args).await?.map(|e| e.cursor().clone()))
    }

    /// Finds the boot a first start follows: that of the newest entry of
    /// this machine's journal (the module comment says why not the
    /// kernel's). A failure leaves it unknown, to be tried again next run.
    pub(super) async fn resolve_boot(&mut self) {
        // Without --merge journalctl reads this machine's journal only.
        let newest = match self.newest_entry(&["--lines=1".to_string()]).await {
            Ok(e) => e,
            Err(e) => {
                self.fail(&format!("cannot find the current boot: {e}"));
                return;
            }
        };
        let Some(id) = newest.and_then(|e| e.field("_BOOT_ID").map(|b| b.to_string())) else {
            return;
        };
        let kernel = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|b| b.trim().replace('-', ""));
        if self.spec.reads_system_journal() && kernel.as_deref().is_some_and(|k| k != id) {
            tracing::info!(
                section = self.spec.section,
                boot_id = %id,
                kernel_boot_id = kernel.as_deref().unwrap_or(""),
                "following the boot of the newest journal entry, not the kernel boot ID seen here (container sandbox)"
            );
            self.stats.kernel_boot_id = kernel;
        }
        self.stats.boot_id = Some(id);
    }

    /// The newest entry journalctl prints with `args` (none: no entry).
    pub(super) async fn newest_entry(
        &self,
        args: &[String],
    ) -> Result<Option<JournalEntry>, JournalError> {
        let mut cmd = Command::new(&self.spec.journalctl);
        cmd.args(&self.spec.extra_args)
            .args(BASE_ARGS)
            .args(args)
            .env("SYSTEMD_COLORS", "0")
            .env("SYSTEMD_PAGER", "")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let io_err = |source| JournalError::Io {
            what: "cannot run",
            path: self.spec.journalctl.clone(),
            source,
        };
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .map_err(|_| io_err(std::io::Error::other("timed out reading the journal tail")))?
            .map_err(io_err)?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(io_err(std::io::Error::other(format!(
                "{}: {}",
                out.status,
                err.trim()
            ))));
        }
        Ok(out
            .stdout
            .split(|b| *b == b'\n')
            .rev()
            .find_map(|l| JournalEntry::parse(l).ok()))
    }

    pub(super) fn command(&mut self) -> Command {
        let mut cmd = Command::new(&self.spec.journalctl);
        cmd.args(&self.spec.extra_args).args(BASE_ARGS);
        if self.mode == "follow" {
            // --follow alone would start at the last 10 entries.
            cmd.args(["--follow", "--no-tail"]);
        }
        match (&self.pos.cursor, self.spec.first_start) {
            (Some(c), _) => {
                cmd.args([MERGE, &format!("--after-cursor={c}")]);
            }
            (None, FirstStart::Boot) => match &self.stats.boot_id {
                Some(id) => {
                    cmd.arg(format!("--boot={id}"));
                }
                // Not known yet (empty journal, or journalctl failed):
                // journalctl's own idea of the current boot for this run,
                // and another try before the next.
                None => {
                    cmd.arg("--boot");
                }
            },
            (None, FirstStart::All | FirstStart::Now) => {
                cmd.arg(MERGE);
            }
        }
        cmd.args(self.classifier.journal_matches())
            .env("SYSTEMD_COLORS", "0")
            .env("SYSTEMD_PAGER", "")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let daemon = std::process::id();
        // SAFETY: the closure runs in the forked child before exec and only
        // calls the async-signal-safe prctl(2) and getppid(2).
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // The daemon died between fork and prctl: do not outlive it.
                if u32::try_from(libc::getppid()).ok() != Some(daemon) {
                    return Err(std::io::Error::other("parent exited"));
                }
                Ok(())
            });
        }
        cmd
    }

    /// One run of journalctl: whether it was healthy (delivered entries or
    /// ran for a while, so the back-off starts over) and how it ended.
    pub(super) async fn run_child(&mut self, shutdown: &mut Shutdown) -> (bool, ChildEnd) {
        if self.pos.cursor.is_none()
            && self.spec.first_start == FirstStart::Boot
            && self.stats.boot_id.is_none()
        {
            self.resolve_boot().await;
        }
        let mut cmd = self.command();
        let started = Instant::now();
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return (
                    false,
                    ChildEnd::Failed(format!(
                        "cannot run {}: {e}",
                        self.spec.journalctl.display()
                    )),
                )
            }
        };
        self.stats.starts += 1;
        self.stats.pid = child.id();
        self.stats.state = "running";
        self.publish(true);
        let tail = StderrTail::default();
        if let Some(err) = child.stderr.take() {
            tokio::spawn(drain_stderr(err, tail.clone(), self.spec.section));
        }
        let Some(out) = child.stdout.take() else {
            stop_child(&mut child).await;
            return (false, ChildEnd::Failed("journalctl has no stdout".into()));
        };
        let entries_before = self.stats.entries;
        let end = self.pump(out, shutdown).await;
        let healthy =
            self.stats.entries > entries_before || started.elapsed() >= Duration::from_secs(30);
        self.stats.pid = None;
        self.stats.state = "restarting";
        let end = match end {
            RunEnd::Shutdown => {
                stop_child(&mut child).await;
                ChildEnd::Shutdown
            }
            RunEnd::Idle => {
                stop_child(&mut child).await;
                ChildEnd::Idle
            }
            RunEnd::Eof => match wait_child(&mut child).await {
                Some(st) if st.success() && self.mode == "poll" => ChildEnd::PollDone,
                st => {
                    // Let the stderr reader catch the child's last words.
                    tokio::task::yield_now().await;
                    let detail = tail.take();
                    let how = st.map_or_else(
                        || "killed after closing its output".to_string(),
                        |s| s.to_string(),
                    );
                    ChildEnd::Failed(format!("journalctl exited ({how}){}", with_detail(&detail)))
                }
            },
            RunEnd::Garbage(n) => {
                stop_child(&mut child).await;
                ChildEnd::Failed(format!(
                    "journalctl printed {n} lines in a row that are not journal entries"
                ))
            }
            RunEnd::ReadError(e) => {
                stop_child(&mut child).await;
                ChildEnd::Failed(format!("reading journalctl output: {e}"))
            }
        };
        (healthy, end)
    }

    /// Reads and handles entries until the child's output ends.
    pub(super) async fn pump<R: AsyncRead + Unpin>(
        &mut self,
        out: R,
        shutdown: &mut Shutdown,
    ) -> RunEnd {
        let mut reader = LineReader::new(BufReader::with_capacity(1 << 16, out), MAX_LINE);
        let mut bad_in_row = 0u32;
        let follow = self.mode == "follow";
        let mut last_line = tokio::time::Instant::now();
        loop {
            let dirty = self.pos != self.saved;
            let save_at = tokio::time::Instant::from_std(self.last_save + self.spec.save_interval);
            let idle_at = last_line + self.spec.idle_refresh;
            // The status shows the quiet warning when it becomes due, not
            // only at the next entry or refresh.
            let quiet_at = self.quiet_warning_due();
            let publish_at = self.publish_due();
            tokio::select! {
                biased;
                _ = shutdown.recv() => return RunEnd::Shutdown,
                _ = sleep_until_opt(publish_at), if publish_at.is_some() => {
                    self.publish(true);
                }
                _ = tokio::time::sleep_until(idle_at), if follow => return RunEnd::Idle,
                _ = sleep_until_opt(quiet_at), if quiet_at.is_some() => {
                    self.publish(true);
                }
                _ = tokio::time::sleep_until(save_at), if dirty => {
                    self.save_if_dirty().await;
                    self.publish(true);
                }
                line = reader.next_line() => {
                    last_line = tokio::time::Instant::now();
                    if let Some(end) = self.on_line(line, &mut bad_in_row, shutdown).await {
                        return end;
                    }
                }
            }
        }
    }
}

pub(super) fn with_detail(d: &str) -> String {
    if d.is_empty() {
        String::new()
    } else {
        format!(": {d}")
    }
}

pub(super) async fn drain_stderr<R: AsyncRead + Unpin>(
    err: R,
    tail: StderrTail,
    section: &'static str,
) {
    let mut lines = LineReader::new(BufReader::new(err), 4096);
    while let Ok(Some(line)) = lines.next_line().await {
        if let Line::Complete(l) = line {
            let l = String::from_utf8_lossy(&l).trim().to_string();
            if !l.is_empty() {
                tracing::debug!(section, stderr = %l, "journalctl");
                tail.push(l.chars().take(300).collect());
            }
        }
    }
}

/// Waits for a child whose stdout ended; kills it if it lingers.
pub(super) async fn wait_child(child: &mut Child) -> Option<ExitStatus> {
    match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        Ok(r) => r.ok(),
        Err(_) => {
            stop_child(child).await;
            None
        }
    }
}

pub(super) async fn stop_child(child: &mut Child) {
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
}

//! The generic follower: runs journalctl as a child, classifies each entry
//! ([`Classifier`]), appends records through a [`RecordSink`] and keeps the
//! position exactly once (see the parent module).
//!
//! One task, one `select!` loop (Vector's journald source): journalctl's
//! stdout, a cursor-save timer, an idle timer, shutdown. Entries are handled
//! one at a time and the position moves past an entry only once its record,
//! if any, is acknowledged; a failed append is retried with back-off, never
//! skipped.
//!
//! journalctl is started with `--output=json --all --quiet --no-pager`, the
//! configured extra arguments, a start position and the classifier's field
//! matches. The position is `--merge --after-cursor=C`, or on a first start
//! `--boot=ID`, `--merge` (the whole journal), or `--merge` after the cursor
//! of the current tail, saved before following so that "now" survives a
//! restart. `--merge` matters: `--follow` without it or `--boot` shows the
//! current boot only, which would lose what an earlier boot logged after
//! the cursor (the Engine stopping at shutdown). Reading the system journal,
//! entries of other machines that `--merge` brings in are ignored.
//!
//! `--boot=ID` names the boot of the newest entry of this machine's journal
//! instead of letting journalctl read `/proc/sys/kernel/random/boot_id`: in
//! a container (systemd-nspawn gives it its own boot ID by mounting over
//! that file) the unit's `ProtectProc=`/`ProtectKernelTunables=` mount a
//! fresh `/proc` that has lost the overmount, so a bare `--boot` matched
//! the host's boot ID and followed nothing, without an error. The newest
//! entry belongs to the running boot (systemd logged this service's start),
//! and it is what journalctl itself does with `--directory`.
//!
//! With `--file` in the extra arguments journalctl runs without `--follow`
//! and is re-run every second (`mode = "poll"`): it cannot follow explicitly
//! named files (systemd 252: "Failed to get journal fd"). `--directory` and
//! the system journal are followed; after a minute without output the child
//! is restarted from the cursor, without back-off, which bounds the delay if
//! journalctl ever misses an inotify wake-up (seen once in tests with
//! systemd-journal-remote as the writer).
//!
//! The child gets `PR_SET_PDEATHSIG` so that a `kill -9` of the daemon does
//! not leave it running, and `kill_on_drop` for every other exit.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::cursor::{self, CursorStore, JournalCursor, Position};
use super::entry::{JournalEntry, Line};
use super::{JournalError, BACKOFF_INITIAL, BACKOFF_MAX};
use crate::config::{Config, FirstStart};
use crate::record::Entry;
use crate::shutdown::Shutdown;
use crate::status::Registry;
use crate::writer::{Ack, AppendError, WriterHandle};

mod child;
mod status;

use crate::backoff::Backoff;
use child::{ChildEnd, RunEnd, LOCATION_ARGS};
use status::{now_rfc3339, status_doc, Stats};

/// Least time between two status publishes of a busy follower.
pub(super) const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// What a classifier makes of one entry.
#[derive(Debug)]
pub enum Verdict {
    /// One record to append (the follower adds `cursor=` and `jsrc=`, and
    /// `time=` when the classifier left it empty).
    Record(Box<Entry>),
    /// Nothing to record; the reason is counted in the status.
    Ignored(&'static str),
}

/// The part of a follower that knows what it is looking for.
pub trait Classifier: Send + 'static {
    /// journalctl match arguments (`FIELD=value`, `+`) narrowing the child's
    /// output; the classifier still checks every entry it gets.
    fn journal_matches(&self) -> Vec<String>;
    /// Classifies one entry.
    fn classify(&mut self, entry: &JournalEntry) -> Verdict;
    /// Takes what can change live from a reloaded configuration (SIGHUP):
    /// filters, not the journalctl command line.
    fn reload(&mut self, _config: &Config) {}
}

/// Where records go: the writer, or a test double.
pub trait RecordSink: Send + Sync + 'static {
    /// Appends one record; `Ok` means it is durable.
    fn append(&self, entry: Entry) -> impl Future<Output = Result<Ack, AppendError>> + Send;
}

impl RecordSink for WriterHandle {
    fn append(&self, entry: Entry) -> impl Future<Output = Result<Ack, AppendError>> + Send {
        WriterHandle::append(self, entry)
    }
}

/// Everything a follower needs besides its classifier and sink.
#[derive(Debug, Clone)]
pub struct FollowerSpec {
    /// Status section name.
    pub section: &'static str,
    /// Value of the `jsrc=` field on this follower's records.
    pub jsrc: &'static str,
    /// The cursor file.
    pub state_file: PathBuf,
    /// The audit log directory (scanned for the last own record on start).
    pub log_dir: PathBuf,
    /// The journalctl binary.
    pub journalctl: PathBuf,
    /// Extra journalctl arguments (`--directory`, `--file`, `--merge`, …).
    pub extra_args: Vec<String>,
    /// Where to begin without a cursor.
    pub first_start: FirstStart,
    /// First restart delay.
    pub backoff_initial: Duration,
    /// Longest restart delay.
    pub backoff_max: Duration,
    /// Re-run interval in poll mode.
    pub poll_interval: Duration,
    /// Longest time between a position change and its save.
    pub save_interval: Duration,
    /// Consecutive unparsable lines after which journalctl is restarted.
    pub garbage_limit: u32,
    /// In follow mode, journalctl is restarted (from the current cursor,
    /// without back-off) after this long without output: a guard against
    /// a missed inotify wake-up leaving an entry unread until the next one.
    pub idle_refresh: Duration,
    /// The status shows a `warning` after this long without an entry
    /// (zero: never).
    pub quiet_warning: Duration,
}

impl FollowerSpec {
    /// The spec from the daemon's configuration (`[journal]` settings,
    /// state file `state_dir/<state_name>`).
    pub fn from_config(
        cfg: &Config,
        section: &'static str,
        jsrc: &'static str,
        state_name: &str,
    ) -> FollowerSpec {
        FollowerSpec {
            section,
            jsrc,
            state_file: cfg.state_dir.join(state_name),
            log_dir: cfg.log_dir.clone(),
            journalctl: cfg.journal.journalctl.clone(),
            extra_args: cfg.journal.extra_args.clone(),
            first_start: cfg.journal.first_start,
            backoff_initial: BACKOFF_INITIAL,
            backoff_max: BACKOFF_MAX,
            poll_interval: Duration::from_secs(1),
            save_interval: Duration::from_secs(1),
            garbage_limit: 100,
            idle_refresh: Duration::from_secs(60),
            quiet_warning: cfg.journal.quiet_warning,
        }
    }

    fn poll_mode(&self) -> bool {
        self.extra_args
            .iter()
            .any(|a| a == "--file" || a.starts_with("--file="))
    }

    /// Whether journalctl reads the system's own journal (no location
    /// option among the extra arguments).
    fn reads_system_journal(&self) -> bool {
        !self.extra_args.iter().any(|a| {
            LOCATION_ARGS.iter().any(|l| {
                a == l || a.starts_with(&format!("{l}=")) || (l.len() == 2 && a.starts_with(l))
            })
        })
    }
}

/// A running follower: one journalctl child at a time, one entry at a time.
pub struct Follower<C, S> {
    spec: FollowerSpec,
    classifier: C,
    sink: S,
    status: Registry,
    store: CursorStore,
    pos: Position,
    saved: Position,
    last_save: Instant,
    stats: Stats,
    last_publish: Instant,
    /// A throttled publish is owed: done when the throttle allows, so the
    /// status never stays behind after the last entry of a burst.
    publish_owed: bool,
    mode: &'static str,
    machine_id: Option<String>,
    reloaded: Option<watch::Receiver<Arc<Config>>>,
}

impl<C: Classifier, S: RecordSink> Follower<C, S> {
    /// A follower that has not started yet.
    pub fn new(spec: FollowerSpec, classifier: C, sink: S, status: Registry) -> Self {
        let store = CursorStore::new(spec.state_file.clone());
        let mode = if spec.poll_mode() { "poll" } else { "follow" };
        let quiet_warning = spec.quiet_warning;
        // Only this machine's entries count when reading the system journal.
        let machine_id = spec
            .reads_system_journal()
            .then(|| std::fs::read_to_string("/etc/machine-id").ok())
            .flatten()
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty());
        Follower {
            spec,
            classifier,
            sink,
            status,
            store,
            pos: Position::default(),
            saved: Position::default(),
            last_save: Instant::now(),
            stats: Stats {
                state: "starting",
                started: Some(Instant::now()),
                quiet_warning,
                ..Stats::default()
            },
            last_publish: Instant::now(),
            publish_owed: false,
            mode,
            machine_id,
            reloaded: None,
        }
    }

    /// Applies each configuration reloaded by SIGHUP to the classifier,
    /// from the next entry on.
    pub fn with_reload(mut self, reloaded: watch::Receiver<Arc<Config>>) -> Self {
        self.reloaded = Some(reloaded);
        self
    }

    /// Runs until `shutdown` fires.
    pub async fn run(mut self, shutdown: Shutdown) {
        self.follow(shutdown).await;
    }

    /// Runs until `shutdown` fires, keeping the follower for its owner
    /// (the journal [`crate::sources::Source`]).
    pub async fn follow(&mut self, mut shutdown: Shutdown) {
        self.publish(true);
        let mut backoff = Backoff::new(self.spec.backoff_initial, self.spec.backoff_max);
        // Without knowing where the last run stopped nothing can be done
        // exactly once, so recovery is retried rather than guessed.
        loop {
            let recovered = tokio::select! {
                r = self.recover() => r,
                _ = shutdown.recv() => {
                    self.stopped();
                    return;
                }
            };
            match recovered {
                Ok(()) => break,
                Err(e) => {
                    self.fail(&e.to_string());
                    if !self.pause(backoff.step(), &mut shutdown).await {
                        self.stopped();
                        return;
                    }
                }
            }
        }
        backoff.reset();
        while !shutdown.is_shutdown() {
            let (healthy, end) = self.run_child(&mut shutdown).await;
            self.save_if_dirty().await;
            if shutdown.is_shutdown() {
                break;
            }
            if healthy {
                backoff.reset();
            }
            let delay = match end {
                ChildEnd::Failed(msg) => {
                    self.fail(&msg);
                    self.stats.restarts += 1;
                    backoff.step()
                }
                ChildEnd::PollDone => self.spec.poll_interval,
                ChildEnd::Idle => {
                    self.stats.idle_refreshes += 1;
                    Duration::ZERO
                }
                ChildEnd::Shutdown => break,
            };
            if !self.pause(delay, &mut shutdown).await {
                break;
            }
        }
        self.save_if_dirty().await;
        self.stopped();
    }

    /// Reads the saved position and the log's last own record, keeps the
    /// newer, and makes a first-start "now" position durable.
    async fn recover(&mut self) -> Result<(), JournalError> {
        let store = self.store.clone();
        let log_dir = self.spec.log_dir.clone();
        let jsrc = self.spec.jsrc;
        let (saved, scan) = tokio::task::spawn_blocking(move || {
            let saved = match store.load() {
                Ok(s) => s,
                // The log still has the cursor of every record; a corrupt
                // file only loses the position among ignored entries.
                Err(e @ JournalError::CorruptState { .. }) => {
                    tracing::warn!(error = %e, "ignoring corrupt journal cursor file");
                    None
                }
                Err(e) => return Err(e),
            };
            let after = saved.as_ref().map_or(0, |p| p.log_seq);
            let scan = cursor::scan_log(&log_dir, jsrc, after)?;
            Ok((saved, scan))
        })
        .await
        .map_err(|e| JournalError::Io {
            what: "recovery task failed",
            path: self.spec.log_dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })??;
        self.pos = cursor::resume_point(saved.clone(), &scan);
        self.saved = saved.unwrap_or_default();
        let cursor = self.pos.cursor.as_ref().map(JournalCursor::as_str);
        let section = self.spec.section;
        if cursor.is_none() {
            tracing::info!(section, first_start = ?self.spec.first_start, "journal follower starts without a cursor");
        } else if self.pos.cursor != self.saved.cursor {
            // The crash window: a record was durable, its cursor not saved.
            tracing::info!(
                section,
                cursor,
                "journal follower resumes from the audit log, newer than the cursor file"
            );
        } else {
            tracing::info!(
                section,
                cursor,
                "journal follower resumes from the cursor file"
            );
        }
        if self.pos.cursor.is_none() && self.spec.first_start == FirstStart::Now {
            self.pos.cursor = self.tail_cursor().await?;
        }
        if self.pos != self.saved {
            self.save().await?;
        }
        Ok(())
    }

    /// Handles one read from journalctl; `Some` when the run must end.
    async fn on_line(
        &mut self,
        line: std::io::Result<Option<Line>>,
        bad_in_row: &mut u32,
        shutdown: &mut Shutdown,
    ) -> Option<RunEnd> {
        let section = self.spec.section;
        let bytes = match line {
            Ok(None) => return Some(RunEnd::Eof),
            Err(e) => return Some(RunEnd::ReadError(e)),
            Ok(Some(Line::TooLong(n))) => {
                self.stats.oversized_lines += 1;
                tracing::warn!(section, bytes = n, "skipped an over-long journal line");
                return None;
            }
            Ok(Some(Line::Complete(bytes))) => bytes,
        };
        match JournalEntry::parse(&bytes) {
            Err(e) => {
                self.stats.bad_lines += 1;
                *bad_in_row += 1;
                if *bad_in_row == 1 {
                    tracing::warn!(section, error = %e, "journalctl printed a line that is not an entry");
                }
                (*bad_in_row >= self.spec.garbage_limit).then_some(RunEnd::Garbage(*bad_in_row))
            }
            Ok(entry) => {
                *bad_in_row = 0;
                if !self.handle(entry, shutdown).await {
                    return Some(RunEnd::Shutdown);
                }
                self.publish(false);
                None
            }
        }
    }

    /// Classifies one entry and appends its record; moves the position past
    /// it only when done. `false` when shutdown interrupted the append.
    async fn handle(&mut self, entry: JournalEntry, shutdown: &mut Shutdown) -> bool {
        self.stats.entries += 1;
        self.stats.last_entry_at = Some(Instant::now());
        if entry.has_array_fields() {
            self.stats.array_fields += 1;
        }
        self.stats.last_entry_time = entry.time_rfc3339();
        if let Some(rx) = self.reloaded.as_mut() {
            // A closed channel (no reloads possible) is not a change.
            if rx.has_changed().unwrap_or(false) {
                let cfg = rx.borrow_and_update().clone();
                self.classifier.reload(&cfg);
                tracing::info!(
                    section = self.spec.section,
                    "journal follower filters reloaded"
                );
            }
        }
        let other_machine = match (&self.machine_id, entry.field("_MACHINE_ID")) {
            (Some(ours), Some(theirs)) => *ours != theirs,
            _ => false,
        };
        let verdict = if other_machine {
            Verdict::Ignored("other_machine")
        } else {
            self.classifier.classify(&entry)
        };
        match verdict {
            Verdict::Ignored(reason) => {
                *self.stats.ignored.entry(reason).or_default() += 1;
            }
            Verdict::Record(mut rec) => {
                if rec.time.is_none() {
                    rec.time = entry.time_rfc3339();
                }
                rec.fields.retain(|(k, _)| k != "cursor" && k != "jsrc");
                rec.fields
                    .push(("cursor".into(), entry.cursor().as_str().to_string()));
                rec.fields.push(("jsrc".into(), self.spec.jsrc.to_string()));
                let Some(ack) = self.append(*rec, shutdown).await else {
                    return false;
                };
                self.stats.records += 1;
                self.stats.last_record_seq = Some(ack.seq);
                self.pos.log_seq = self.pos.log_seq.max(ack.seq);
            }
        }
        self.pos.cursor = Some(entry.cursor().clone());
        if self.last_save.elapsed() >= self.spec.save_interval {
            self.save_if_dirty().await;
        }
        true
    }

    /// Appends until durable; `None` on shutdown.
    async fn append(&mut self, rec: Entry, shutdown: &mut Shutdown) -> Option<Ack> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let res = {
                let fut = self.sink.append(rec.clone());
                tokio::pin!(fut);
                let mut slow = false;
                loop {
                    tokio::select! {
                        biased;
                        _ = shutdown.recv() => return None,
                        r = &mut fut => break r,
                        // A writer that takes this long is worth showing.
                        _ = tokio::time::sleep(Duration::from_secs(1)), if !slow => {
                            slow = true;
                            self.stats.state = "waiting_for_writer";
                            self.status.set(
                                self.spec.section,
                                status_doc(&self.stats, self.mode, &self.pos, &self.saved),
                            );
                        }
                    }
                }
            };
            match res {
                Ok(ack) => {
                    if matches!(self.stats.state, "append_retry" | "waiting_for_writer") {
                        self.stats.state = "running";
                    }
                    return Some(ack);
                }
                Err(e) => {
                    self.stats.append_errors += 1;
                    self.fail(&format!("cannot append record: {e}"));
                    self.stats.state = "append_retry";
                    self.publish(true);
                    if !self.pause(backoff.step(), shutdown).await {
                        return None;
                    }
                }
            }
        }
    }

    async fn save_if_dirty(&mut self) {
        if self.pos != self.saved {
            if let Err(e) = self.save().await {
                self.stats.save_errors += 1;
                self.fail(&e.to_string());
            }
        }
    }

    async fn save(&mut self) -> Result<(), JournalError> {
        let store = self.store.clone();
        let pos = self.pos.clone();
        self.last_save = Instant::now();
        let res = tokio::task::spawn_blocking(move || store.save(&pos).map(|()| pos))
            .await
            .map_err(|e| JournalError::Io {
                what: "cursor save task failed",
                path: self.spec.state_file.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        self.saved = res?;
        self.stats.saves += 1;
        Ok(())
    }

    /// Sleeps `d` unless shutdown fires first (`false` then).
    async fn pause(&mut self, d: Duration, shutdown: &mut Shutdown) -> bool {
        if self.stats.state != "append_retry" {
            self.stats.state = "backoff";
        }
        self.stats.backoff_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.publish(true);
        tokio::select! {
            _ = shutdown.recv() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    fn fail(&mut self, msg: &str) {
        if self.stats.last_error.as_deref() != Some(msg) {
            tracing::warn!(section = self.spec.section, error = %msg, "journal follower");
        }
        self.stats.last_error = Some(msg.to_string());
        self.stats.last_error_at = Some(now_rfc3339());
        self.publish(true);
    }

    fn stopped(&mut self) {
        self.stats.state = "stopped";
        self.stats.pid = None;
        self.publish(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shutdown::ShutdownTrigger;
    use crate::sources::journal::entry::MAX_LINE;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    /// A sink that keeps entries in memory, failing the first `fail` appends.
    #[derive(Clone, Default)]
    struct MemSink {
        recs: Arc<Mutex<Vec<Entry>>>,
        fail: Arc<AtomicU32>,
    }

    impl RecordSink for MemSink {
        fn append(&self, e: Entry) -> impl Future<Output = Result<Ack, AppendError>> + Send {
            let recs = self.recs.clone();
            let fail = self.fail.clone();
            async move {
                if fail.load(Ordering::SeqCst) > 0 {
                    fail.fetch_sub(1, Ordering::SeqCst);
                    return Err(AppendError::DiskFull("test".into()));
                }
                let mut r = recs.lock().unwrap();
                r.push(e);
                Ok(Ack {
                    seq: r.len() as u64,
                    duplicate: false,
                })
            }
        }
    }

    /// Records every entry whose MESSAGE starts with "rec".
    struct ByMessage;

    impl Classifier for ByMessage {
        fn journal_matches(&self) -> Vec<String> {
            vec!["_PID=1".into()]
        }
        fn classify(&mut self, e: &JournalEntry) -> Verdict {
            match e.field("MESSAGE") {
                Some(m) if m.starts_with("rec") => {
                    Verdict::Record(Box::new(Entry::appliance(60201).with_message(m)))
                }
                _ => Verdict::Ignored("other"),
            }
        }
    }

    fn cur(i: u64) -> String {
        format!("s=c00a2fbb5b04453f8290630f5846f5e1;i={i:x};b=9e3ca539835a4b8c8b51aed929d383fd;m={i:x};t=60a24181e4001;x=1")
    }

    fn line(i: u64, msg: &str) -> String {
        json!({"__CURSOR": cur(i), "__REALTIME_TIMESTAMP": (1_700_000_000_000_000u64 + i).to_string(), "MESSAGE": msg}).to_string()
    }

    /// A fake journalctl: prints `body` lines after the `--after-cursor`
    /// entry (by i=), logs its arguments, then behaves per `tail`.
    fn fake_journalctl(dir: &std::path::Path, body: &[String], tail: &str) -> PathBuf {
        let data = dir.join("entries");
        std::fs::write(&data, body.join("\n") + "\n").unwrap();
        let script = dir.join("journalctl");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$@\" >> {args}\nstart=1\nfor a in \"$@\"; do case \"$a\" in --after-cursor=*) \
                 n=$(grep -n -F -- \"${{a#--after-cursor=}}\" {data} | head -n 1 | cut -d: -f1); start=$((n+1));; esac; done\n\
                 tail -n +$start {data}\n{tail}\n",
                args = dir.join("args").display(),
                data = data.display(),
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        script
    }

    fn spec(dir: &std::path::Path, journalctl: PathBuf) -> FollowerSpec {
        FollowerSpec {
            section: "journal",
            jsrc: "engine",
            state_file: dir.join("state/j.cursor"),
            log_dir: dir.join("log"),
            journalctl,
            extra_args: vec![],
            first_start: FirstStart::All,
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
            poll_interval: Duration::from_millis(50),
            save_interval: Duration::from_millis(50),
            garbage_limit: 5,
            idle_refresh: Duration::from_secs(600),
            quiet_warning: Duration::ZERO,
        }
    }

    async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn section(reg: &Registry) -> serde_json::Value {
        reg.snapshot().get("journal").cloned().unwrap_or_default()
    }

    #[tokio::test]
    async fn exits_garbage_and_failures_lose_and_duplicate_nothing() {
        let d = tempfile::tempdir().unwrap();
        let big = "x".repeat(MAX_LINE + 10);
        let mut body = vec![line(1, "rec one"), "not json".into(), line(2, "noise")];
        body.push(format!(
            "{{\"__CURSOR\":\"{}\",\"MESSAGE\":\"{big}\"}}",
            cur(3)
        ));
        body.push(json!({"__CURSOR": cur(4), "MESSAGE": [114,101,99,0,255]}).to_string());
        body.push(line(5, "rec five"));
        // Exits 1 after each pass: restarted with back-off, resuming after
        // the last entry handled.
        let jc = fake_journalctl(d.path(), &body, "echo boom >&2; exit 1");
        let sink = MemSink::default();
        sink.fail.store(2, Ordering::SeqCst);
        let reg = Registry::new();
        let (trigger, shutdown) = ShutdownTrigger::new();
        let f = Follower::new(spec(d.path(), jc), ByMessage, sink.clone(), reg.clone());
        let task = tokio::spawn(f.run(shutdown));
        wait_until("restarts", || section(&reg)["restarts"].as_u64() >= Some(3)).await;
        let s = section(&reg);
        assert!(s["last_error"].as_str().unwrap().contains("boom"), "{s}");
        assert_eq!(s["oversized_lines"], 1, "{s}");
        assert!(s["bad_lines"].as_u64() >= Some(1), "{s}");
        assert_eq!(s["append_errors"], 2, "{s}");
        trigger.fire();
        task.await.unwrap();
        let recs = sink.recs.lock().unwrap();
        let msgs: Vec<_> = recs.iter().map(|r| r.message.clone().unwrap()).collect();
        assert_eq!(msgs, ["rec one", "rec\u{0}\u{fffd}", "rec five"]);
        assert_eq!(recs[0].get_field("cursor"), Some(cur(1).as_str()));
        assert_eq!(recs[0].get_field("jsrc"), Some("engine"));
        assert_eq!(recs[0].time.as_deref(), Some("2023-11-14T22:13:20.000001Z"));
        let saved = CursorStore::new(d.path().join("state/j.cursor"))
            .load()
            .unwrap()
            .unwrap();
        assert_eq!(saved.cursor.unwrap().as_str(), cur(5));
        assert_eq!(saved.log_seq, 3);
        assert_eq!(section(&reg)["state"], "stopped");
        let args = std::fs::read_to_string(d.path().join("args")).unwrap();
        assert!(
            args.lines()
                .next()
                .unwrap()
                .contains("--follow --no-tail --merge _PID=1"),
            "{args}"
        );
        assert!(
            args.lines()
                .nth(1)
                .unwrap()
                .contains(&format!("--merge --after-cursor={} _PID=1", cur(5))),
            "{args}"
        );
    }

    #[tokio::test]
    async fn garbage_flood_restarts_and_missing_binary_backs_off() {
        let d = tempfile::tempdir().unwrap();
        let jc = fake_journalctl(d.path(), &[], "while :; do echo garbage; done");
        let reg = Registry::new();
        let (trigger, shutdown) = ShutdownTrigger::new();
        let f = Follower::new(
            spec(d.path(), jc),
            ByMessage,
            MemSink::default(),
            reg.clone(),
        );
        let task = tokio::spawn(f.run(shutdown));
        wait_until("garbage restart", || {
            section(&reg)["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("not journal entries"))
                && section(&reg)["restarts"].as_u64() >= Some(2)
        })
        .await;
        trigger.fire();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();

        let reg = Registry::new();
        let (trigger, shutdown) = ShutdownTrigger::new();
        let f = Follower::new(
            spec(d.path(), d.path().join("missing")),
            ByMessage,
            MemSink::default(),
            reg.clone(),
        );
        let task = tokio::spawn(f.run(shutdown));
        wait_until("backoff", || {
            let s = section(&reg);
            s["backoff_ms"].as_u64() == Some(200)
                && s["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("cannot run"))
        })
        .await;
        trigger.fire();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn resumes_from_the_log_when_the_cursor_file_lags() {
        let d = tempfile::tempdir().unwrap();
        let body: Vec<String> = (1..=4).map(|i| line(i, &format!("rec {i}"))).collect();
        let jc = fake_journalctl(d.path(), &body, "exec sleep 1000");
        // A crash after record 2 was durable but before the save: the file
        // says 1, the log says 2.
        CursorStore::new(d.path().join("state/j.cursor"))
            .save(&Position {
                cursor: Some(JournalCursor::parse(&cur(1)).unwrap()),
                log_seq: 10,
            })
            .unwrap();
        std::fs::create_dir_all(d.path().join("log")).unwrap();
        let mut e = Entry::appliance(60201)
            .field("cursor", cur(2))
            .field("jsrc", "engine");
        e.origin = crate::record::Origin::daemon();
        let st = crate::record::Stamp {
            ts: chrono::Utc::now(),
            host: "h",
            seq: 11,
        };
        let mut body = String::new();
        crate::record::text_body(&e, &st, &mut body);
        std::fs::write(
            d.path().join("log/audit.log"),
            format!("{body} h={}\n", "0".repeat(32)),
        )
        .unwrap();
        let sink = MemSink::default();
        let (trigger, shutdown) = ShutdownTrigger::new();
        let f = Follower::new(spec(d.path(), jc), ByMessage, sink.clone(), Registry::new());
        let task = tokio::spawn(f.run(shutdown));
        wait_until("records", || sink.recs.lock().unwrap().len() == 2).await;
        trigger.fire();
        task.await.unwrap();
        let msgs: Vec<_> = sink
            .recs
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.message.clone().unwrap())
            .collect();
        assert_eq!(msgs, ["rec 3", "rec 4"]);
    }

    #[tokio::test]
    async fn first_start_now_saves_the_tail_and_poll_mode_reruns() {
        let d = tempfile::tempdir().unwrap();
        let body: Vec<String> = (1..=3).map(|i| line(i, &format!("rec {i}"))).collect();
        let jc = fake_journalctl(d.path(), &body, "exit 0");
        let mut sp = spec(d.path(), jc);
        sp.first_start = FirstStart::Now;
        sp.extra_args = vec!["--file".into(), "x.journal".into()];
        let sink = MemSink::default();
        let reg = Registry::new();
        let (trigger, shutdown) = ShutdownTrigger::new();
        let task =
            tokio::spawn(Follower::new(sp, ByMessage, sink.clone(), reg.clone()).run(shutdown));
        wait_until("polls", || section(&reg)["starts"].as_u64() >= Some(3)).await;
        trigger.fire();
        task.await.unwrap();
        // The fake ignores --lines=1 and prints all three: the tail is the
        // last, so nothing before it is recorded.
        assert!(sink.recs.lock().unwrap().is_empty());
        let s = section(&reg);
        assert_eq!(s["mode"], "poll");
        assert_eq!(s["last_error"], serde_json::Value::Null, "{s}");
        let args = std::fs::read_to_string(d.path().join("args")).unwrap();
        assert!(args.lines().next().unwrap().contains("--lines=1"), "{args}");
        assert!(!args.contains("--follow"), "{args}");
    }

    #[tokio::test]
    async fn a_silent_journalctl_is_refreshed_without_duplicates() {
        let d = tempfile::tempdir().unwrap();
        let body: Vec<String> = (1..=3).map(|i| line(i, &format!("rec {i}"))).collect();
        let jc = fake_journalctl(d.path(), &body, "exec sleep 1000");
        let mut sp = spec(d.path(), jc);
        sp.idle_refresh = Duration::from_millis(100);
        let sink = MemSink::default();
        let reg = Registry::new();
        let (trigger, shutdown) = ShutdownTrigger::new();
        let task =
            tokio::spawn(Follower::new(sp, ByMessage, sink.clone(), reg.clone()).run(shutdown));
        wait_until("refreshes", || {
            section(&reg)["idle_refreshes"].as_u64() >= Some(3)
        })
        .await;
        trigger.fire();
        task.await.unwrap();
        let s = section(&reg);
        assert_eq!(s["restarts"], 0, "{s}");
        assert_eq!(s["last_error"], serde_json::Value::Null, "{s}");
        assert_eq!(sink.recs.lock().unwrap().len(), 3);
    }

    /// Records entries whose MESSAGE equals the first configured unit.
    struct ByUnit(String);

    impl Classifier for ByUnit {
        fn journal_matches(&self) -> Vec<String> {
            vec![]
        }
        fn classify(&mut self, e: &JournalEntry) -> Verdict {
            match e.field("MESSAGE") {
                Some(m) if m == self.0 => Verdict::Record(Box::new(Entry::appliance(60201))),
                _ => Verdict::Ignored("other"),
            }
        }
        fn reload(&mut self, c: &Config) {
            self.0 = c.journal.units[0].clone();
        }
    }

    #[tokio::test]
    async fn reloaded_filters_apply_to_the_next_entries() {
        let d = tempfile::tempdir().unwrap();
        let body: Vec<String> = ["old", "new", "new"]
            .iter()
            .enumerate()
            .map(|(i, m)| line(i as u64 + 1, m))
            .collect();
        let jc = fake_journalctl(d.path(), &body, "exec sleep 1000");
        let mut cfg = Config::default();
        let (tx, rx) = watch::channel(Arc::new(cfg.clone()));
        cfg.journal.units = vec!["new".into()];
        tx.send(Arc::new(cfg)).unwrap();
        let sink = MemSink::default();
        let (trigger, shutdown) = ShutdownTrigger::new();
        let f = Follower::new(
            spec(d.path(), jc),
            ByUnit("old".into()),
            sink.clone(),
            Registry::new(),
        )
        .with_reload(rx);
        let task = tokio::spawn(f.run(shutdown));
        wait_until("records", || sink.recs.lock().unwrap().len() == 2).await;
        trigger.fire();
        task.await.unwrap();
        let cursors: Vec<_> = sink
            .recs
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.get_field("cursor").unwrap().to_string())
            .collect();
        assert_eq!(cursors, [cur(2), cur(3)]);
    }

    #[test]
    fn system_journal_detection() {
        let d = tempfile::tempdir().unwrap();
        let mut sp = spec(d.path(), "journalctl".into());
        assert!(sp.reads_system_journal());
        for args in [
            &["--directory", "/x"][..],
            &["-D/x"],
            &["--file=/x.journal"],
            &["--root", "/"],
            &["-M", "c1"],
        ] {
            sp.extra_args = args.iter().map(|s| s.to_string()).collect();
            assert!(!sp.reads_system_journal(), "{args:?}");
        }
        sp.extra_args = vec!["--merge".into()];
        assert!(sp.reads_system_journal());
    }
}

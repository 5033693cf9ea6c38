//! What a follower publishes in `nxaudit status`: its counters, its state
//! and the warning when the journal has been quiet for long.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use super::PUBLISH_EVERY;
use super::{Classifier, Follower, RecordSink};
use crate::sources::journal::cursor::{JournalCursor, Position};

pub(super) fn now_rfc3339() -> String {
    crate::record::format_ts(chrono::Utc::now())
}

#[derive(Debug, Default)]
pub(super) struct Stats {
    pub(super) state: &'static str,
    pub(super) pid: Option<u32>,
    pub(super) starts: u64,
    pub(super) restarts: u64,
    pub(super) backoff_ms: u64,
    pub(super) last_error: Option<String>,
    pub(super) last_error_at: Option<String>,
    pub(super) entries: u64,
    pub(super) records: u64,
    pub(super) last_record_seq: Option<u64>,
    pub(super) last_entry_time: Option<String>,
    pub(super) ignored: BTreeMap<&'static str, u64>,
    pub(super) bad_lines: u64,
    pub(super) oversized_lines: u64,
    pub(super) array_fields: u64,
    pub(super) append_errors: u64,
    pub(super) idle_refreshes: u64,
    pub(super) saves: u64,
    pub(super) save_errors: u64,
    /// The boot a first start follows (`--boot=`), once known.
    pub(super) boot_id: Option<String>,
    /// The kernel's boot ID as seen by the daemon, when it is not the
    /// journal's newest boot (a container sandbox).
    pub(super) kernel_boot_id: Option<String>,
    pub(super) started: Option<Instant>,
    pub(super) last_entry_at: Option<Instant>,
    pub(super) quiet_warning: Duration,
}

impl Stats {
    /// How long nothing was read and whether since start, once that is
    /// `quiet_warning` or longer.
    pub(super) fn quiet_for(&self) -> Option<(Duration, bool)> {
        if self.quiet_warning.is_zero() {
            return None;
        }
        let (since, from_start) = match self.last_entry_at {
            Some(t) => (t, false),
            None => (self.started?, true),
        };
        let quiet = since.elapsed();
        (quiet >= self.quiet_warning).then_some((quiet, from_start))
    }

    /// The status warning of a follower that has read nothing for long.
    pub(super) fn quiet_warning_text(&self) -> Option<String> {
        let (quiet, from_start) = self.quiet_for()?;
        let secs = quiet.as_secs();
        let span = if secs >= 120 {
            format!("{} min", secs / 60)
        } else {
            format!("{secs} s")
        };
        Some(if from_start {
            format!("no journal entry for {span} since start")
        } else {
            format!("no journal entry for {span} since the last one")
        })
    }
}

impl<C: Classifier, S: RecordSink> Follower<C, S> {
    /// When the quiet warning starts to apply, if it does not yet.
    pub(super) fn quiet_warning_due(&self) -> Option<tokio::time::Instant> {
        if self.spec.quiet_warning.is_zero() || self.stats.quiet_for().is_some() {
            return None;
        }
        let since = self.stats.last_entry_at.or(self.stats.started)?;
        Some(tokio::time::Instant::from_std(
            since + self.spec.quiet_warning,
        ))
    }

    /// When an owed publish is due.
    pub(super) fn publish_due(&self) -> Option<tokio::time::Instant> {
        self.publish_owed
            .then(|| tokio::time::Instant::from_std(self.last_publish + PUBLISH_EVERY))
    }

    /// Publishes the status section (throttled unless `force`).
    pub(super) fn publish(&mut self, force: bool) {
        if !force && self.last_publish.elapsed() < PUBLISH_EVERY {
            self.publish_owed = true;
            return;
        }
        self.publish_owed = false;
        self.last_publish = Instant::now();
        self.status.set(
            self.spec.section,
            status_doc(&self.stats, self.mode, &self.pos, &self.saved),
        );
    }
}

/// The status section of a follower.
pub(super) fn status_doc(
    s: &Stats,
    mode: &str,
    pos: &Position,
    saved: &Position,
) -> serde_json::Value {
    json!({
        "state": s.state,
        "mode": mode,
        "pid": s.pid,
        "starts": s.starts,
        "restarts": s.restarts,
        "backoff_ms": s.backoff_ms,
        "last_error": s.last_error,
        "last_error_at": s.last_error_at,
        "cursor": pos.cursor.as_ref().map(JournalCursor::as_str),
        "saved_cursor": saved.cursor.as_ref().map(JournalCursor::as_str),
        "log_seq": pos.log_seq,
        "entries": s.entries,
        "records": s.records,
        "last_record_seq": s.last_record_seq,
        "last_entry_time": s.last_entry_time,
        "ignored": s.ignored,
        "bad_lines": s.bad_lines,
        "oversized_lines": s.oversized_lines,
        "array_fields": s.array_fields,
        "append_errors": s.append_errors,
        "idle_refreshes": s.idle_refreshes,
        "saves": s.saves,
        "save_errors": s.save_errors,
        "boot_id": s.boot_id,
        "kernel_boot_id": s.kernel_boot_id,
        "warning": s.quiet_warning_text(),
    })
}

pub(super) async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

//! The one runner of every sink: follows the durable log from the sink's
//! checkpoint, filters, delivers with retry and back-off, saves the
//! checkpoint, publishes status, applies reloads and stops on shutdown.
//!
//! Why it is built this way:
//! - Reading runs on the blocking pool ([`LogFollower`] is blocking),
//!   delivery on the reactor.
//! - A record is retried until it is delivered, never skipped; the same
//!   delivery future is kept while the destination is slow, so the status
//!   can say "target busy" without cancelling it.
//! - The checkpoint (the last seq handed over for good, as the sink
//!   confirms it) is saved after the sink's commit, every 1000 records or
//!   second, when idle and at shutdown. With no checkpoint the sink starts
//!   at the current end of the log, so a fresh install does not flood its
//!   destination with history.
//! - The checkpoint is registered with [`crate::reader::Readers`] when the
//!   sink is built, so retention keeps every file the sink has not read.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tracing::{info, warn};

use super::sink::{Sink, SinkEnv};
use crate::backoff::Backoff;
use crate::config::Config;
use crate::reader::{self, Checkpoint, LogFollower, RecordFilter};
use crate::reload::Reloads;

/// Records read per batch from the log.
const BATCH: usize = 256;
/// Save the checkpoint after this many records… (each save costs the
/// sink's commit and a synced replace of the checkpoint: every 100 records
/// made a catching-up file sink spend most of its time in fsync)
const SAVE_EVERY: u64 = 1000;
/// …or this long.
const SAVE_PERIOD: Duration = Duration::from_secs(1);
/// Polling period while the log has nothing new.
const POLL: Duration = Duration::from_millis(50);
/// Status is republished at least this often while delivering.
const PUBLISH_PERIOD: Duration = Duration::from_millis(250);
/// First wait after a failure.
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Longest back-off between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The sink's status section.
struct Status {
    name: &'static str,
    delivered_key: &'static str,
    /// The sink's own fields, as of its last refresh.
    extra: Map<String, Value>,
    state: &'static str,
    delivered: u64,
    filtered: u64,
    errors: u64,
    last_error: Option<String>,
    last_seq: Option<u64>,
    position: u64,
    malformed: u64,
    gaps: u64,
}

impl Status {
    /// Takes the sink's own fields and publishes.
    fn publish<S: Sink>(&mut self, env: &SinkEnv, sink: &S) {
        self.extra.clear();
        sink.status(&mut self.extra);
        self.publish_cached(env);
    }

    /// Publishes with the sink's fields of the last refresh (while a
    /// delivery holds the sink).
    fn publish_cached(&self, env: &SinkEnv) {
        let mut doc = Map::new();
        doc.insert("kind".into(), json!(crate::status::SINK_KIND));
        doc.insert("state".into(), json!(self.state));
        doc.insert("position".into(), json!(self.position));
        doc.insert("last_seq".into(), json!(self.last_seq));
        doc.insert(self.delivered_key.into(), json!(self.delivered));
        doc.insert("filtered".into(), json!(self.filtered));
        doc.insert("errors".into(), json!(self.errors));
        doc.insert("last_error".into(), json!(self.last_error));
        doc.insert("malformed_lines".into(), json!(self.malformed));
        doc.insert("gaps".into(), json!(self.gaps));
        for (k, v) in &self.extra {
            doc.insert(k.clone(), v.clone());
        }
        env.status.set(self.name, Value::Object(doc));
    }

    fn fail(&mut self, e: String) {
        self.errors += 1;
        self.last_error = Some(e);
    }
}

/// The checkpoint to resume from: the saved one, else the end of the log
/// (saved at once). Returns it and whether it was fresh.
async fn start_position(
    env: &SinkEnv,
    cp: Checkpoint,
    name: &'static str,
) -> Result<(u64, bool), String> {
    let log_dir = env.log_dir.clone();
    let joined = tokio::task::spawn_blocking(move || -> Result<(u64, bool), String> {
        let saved = match cp.load_seq() {
            Ok(p) => p,
            Err(e) => {
                warn!(sink = name, error = %e, "starting from the end of the log");
                None
            }
        };
        match saved {
            Some(p) => Ok((p, false)),
            None => {
                let end = reader::last_seq(&log_dir)
                    .map_err(|e| format!("read {}: {e}", log_dir.display()))?;
                cp.save_seq(end).map_err(|e| e.to_string())?;
                Ok((end, true))
            }
        }
    })
    .await;
    joined.map_err(|e| e.to_string())?
}

/// Runs `sink` until shutdown; `section` takes its config out of a
/// reloaded configuration.
pub async fn run<S: Sink>(
    mut sink: S,
    env: SinkEnv,
    mut reloads: Reloads,
    section: fn(&Config) -> &S::Config,
) {
    let mut shutdown = env.shutdown.clone();
    let name = sink.name();
    let cp = Checkpoint::in_state_dir(&env.state_dir, sink.checkpoint());
    let mut st = Status {
        name,
        delivered_key: sink.delivered_key(),
        extra: Map::new(),
        state: "starting",
        delivered: 0,
        filtered: 0,
        errors: 0,
        last_error: None,
        last_seq: None,
        position: 0,
        malformed: 0,
        gaps: 0,
    };
    st.publish(&env, &sink);
    let (pos, fresh) = match start_position(&env, cp.clone(), name).await {
        Ok(p) => p,
        Err(e) => {
            warn!(sink = name, error = %e, "sink cannot start");
            st.fail(e);
            st.state = "error";
            st.publish(&env, &sink);
            return;
        }
    };
    st.position = pos;
    let mut backoff = Backoff::new(BACKOFF_INITIAL, MAX_BACKOFF);
    loop {
        match sink.open().await {
            Ok(()) => break,
            Err(e) => {
                warn!(sink = name, error = %e, "sink cannot open its destination; retrying");
                st.fail(format!("open: {e}"));
                st.state = "error";
                st.publish(&env, &sink);
                if !backoff.wait(&mut shutdown).await {
                    st.state = "stopped";
                    st.publish(&env, &sink);
                    return;
                }
            }
        }
    }
    info!(sink = name, position = pos, fresh, "sink starting");

    let mut filter: RecordFilter = sink.filter();
    let mut follower = Some(LogFollower::new(env.log_dir.clone(), pos + 1, env.sync));
    let mut processed = pos;
    let mut last_publish = Instant::now();
    let mut read_backoff = Backoff::new(POLL, MAX_BACKOFF);
    let mut saver = Saver {
        cp: cp.clone(),
        last_save: Instant::now(),
    };

    'run: loop {
        if shutdown.is_shutdown() {
            break;
        }
        if let Some(new) = reloads.take() {
            sink.reconfigure(section(&new));
            filter = sink.filter();
            info!(sink = name, "sink reloaded");
        }
        let f = match follower.take() {
            Some(f) => f,
            None => LogFollower::new(env.log_dir.clone(), processed + 1, env.sync),
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
                read_backoff.reset();
                b
            }
            Ok((f, Err(e))) => {
                // Reopen from the position: the file may have gone away
                // under us (a partial read is simply read again).
                drop(f);
                st.fail(format!("read log: {e}"));
                st.publish(&env, &sink);
                if !read_backoff.wait(&mut shutdown).await {
                    break 'run;
                }
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
            saver.save_if_due(&mut sink, processed, &mut st, true).await;
            st.publish(&env, &sink);
            tokio::select! {
                _ = shutdown.recv() => break 'run,
                _ = tokio::time::sleep(POLL) => {}
            }
            continue;
        }
        st.state = "forwarding";
        for rec in batch.records {
            if !filter.matches(&rec.rec) {
                st.filtered += 1;
                processed = rec.rec.seq;
                continue;
            }
            let seq = rec.rec.seq;
            backoff.reset();
            let mut waiting = false;
            loop {
                let delivered = {
                    let fut = sink.deliver(&rec);
                    tokio::pin!(fut);
                    loop {
                        tokio::select! {
                            _ = shutdown.recv() => break 'run,
                            r = &mut fut => break r,
                            // The destination is not taking it yet (a full
                            // receiver queue): say so, and wait on.
                            _ = tokio::time::sleep(PUBLISH_PERIOD) => {
                                st.state = "target busy";
                                last_publish = Instant::now();
                            }
                        }
                        st.publish_cached(&env);
                    }
                };
                match delivered {
                    Ok(()) => break,
                    Err(e) => {
                        if !waiting {
                            warn!(sink = name, error = %e, seq, "sink: target unavailable; retrying");
                        }
                        waiting = true;
                        st.fail(format!("send seq {seq}: {e}"));
                        st.state = "waiting for target";
                        st.publish(&env, &sink);
                        if !backoff.wait(&mut shutdown).await {
                            break 'run;
                        }
                    }
                }
            }
            if waiting {
                info!(sink = name, seq, "sink: target reachable again");
            }
            st.state = "forwarding";
            st.delivered += 1;
            st.last_seq = Some(seq);
            processed = seq;
            saver
                .save_if_due(&mut sink, processed, &mut st, false)
                .await;
            if last_publish.elapsed() >= PUBLISH_PERIOD {
                st.publish(&env, &sink);
                last_publish = Instant::now();
            }
        }
        st.publish(&env, &sink);
        last_publish = Instant::now();
    }

    if let Err(e) = sink.commit(true).await {
        st.fail(format!("commit: {e}"));
    }
    let final_pos = sink.confirmed(processed);
    if final_pos != st.position {
        match tokio::task::spawn_blocking(move || cp.save_seq(final_pos)).await {
            Ok(Ok(())) => st.position = final_pos,
            Ok(Err(e)) => st.fail(e.to_string()),
            Err(e) => st.fail(e.to_string()),
        }
    }
    st.state = "stopped";
    st.publish(&env, &sink);
}

/// Saves the checkpoint when due.
struct Saver {
    cp: Checkpoint,
    last_save: Instant,
}

impl Saver {
    /// Commits and saves the confirmed position every `SAVE_EVERY` records
    /// or `SAVE_PERIOD` (or whenever it changed, when `idle`).
    async fn save_if_due<S: Sink>(
        &mut self,
        sink: &mut S,
        processed: u64,
        st: &mut Status,
        idle: bool,
    ) {
        let pending = processed > st.position;
        let due = idle
            || processed >= st.position + SAVE_EVERY
            || self.last_save.elapsed() >= SAVE_PERIOD;
        if !pending || !due {
            return;
        }
        if let Err(e) = sink.commit(idle).await {
            st.fail(format!("commit: {e}"));
            return;
        }
        let pos = sink.confirmed(processed);
        if pos == st.position {
            return;
        }
        let cp = self.cp.clone();
        match tokio::task::spawn_blocking(move || cp.save_seq(pos)).await {
            Ok(Ok(())) => {
                st.position = pos;
                self.last_save = Instant::now();
            }
            Ok(Err(e)) => st.fail(e.to_string()),
            Err(e) => st.fail(e.to_string()),
        }
    }
}

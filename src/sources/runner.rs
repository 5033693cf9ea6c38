//! The one runner of every source: publishes the section's `state` at
//! start and stop, runs the source again with back-off after an error
//! return, applies reloads that arrive while it waits to restart, and ends
//! on shutdown.
//!
//! Why it is built this way:
//! - A source publishes its own fields (its counters) while it runs; the
//!   runner only sets `state` (and `last_error` after an error return) in
//!   that same section, so the keys are the source's own.
//! - A source that handles its own failures inside its run (the journal
//!   followers restart journalctl themselves) simply never returns an
//!   error; one that cannot go on (the syslog intake without its socket)
//!   returns one and is run again, keeping its counters in `self`.
//! - Acknowledged reloads (see [`ReloadMode`]) are registered with
//!   [`crate::reload::Reloads::part`] when the source is built
//!   ([`super::build`]), before any SIGHUP can be handled; between two
//!   runs the runner applies and acknowledges them through
//!   [`Source::reconfigure`], so a failing source never holds up 60904.

use std::time::{Duration, Instant};

use serde_json::json;
use tracing::{info, warn};

use super::source::{ReloadMode, Source};
use super::SourceContext;
use crate::shutdown::Shutdown;
use crate::status::Registry;

/// A run that lasted this long counts as a success: the next restart
/// waits the initial back-off again.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// Runs `source` until shutdown, with `ctx` as [`super::build`] made it
/// (a reload part of its own when the source acknowledges reloads).
pub async fn run<S: Source>(mut source: S, mut ctx: SourceContext) {
    let name = source.name();
    let mut shutdown = ctx.shutdown.clone();
    let mut backoff = source.restart_backoff();
    set_state(&ctx.status, name, "starting", None);
    loop {
        let started = Instant::now();
        let res = source.run(&mut ctx).await;
        if shutdown.is_shutdown() {
            break;
        }
        let e = match res {
            Ok(()) => {
                // Done before shutdown: nothing more to run, but reloads
                // are still acknowledged.
                info!(source = name, "source finished");
                pause(&mut source, &mut ctx, &mut shutdown, None).await;
                break;
            }
            Err(e) => e,
        };
        if started.elapsed() >= HEALTHY_RUN {
            backoff.reset();
        }
        let wait = backoff.step();
        warn!(source = name, error = %e, retry_in = ?wait, "source failed; running it again");
        set_state(&ctx.status, name, "error", Some(e.to_string()));
        if !pause(&mut source, &mut ctx, &mut shutdown, Some(wait)).await {
            break;
        }
    }
    set_state(&ctx.status, name, "stopped", None);
}

/// Waits `wait` (forever when `None`) unless the daemon stops first
/// (`false` then), applying and acknowledging reloads meanwhile.
async fn pause<S: Source>(
    source: &mut S,
    ctx: &mut SourceContext,
    shutdown: &mut Shutdown,
    wait: Option<Duration>,
) -> bool {
    let acknowledged = source.reload_mode() == ReloadMode::Acknowledged;
    let sleep = async {
        match wait {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = shutdown.recv() => return false,
            _ = &mut sleep => return true,
            new = ctx.reloads.next(), if acknowledged => {
                source.reconfigure(&new);
                info!(source = source.name(), "source reloaded while waiting to run");
                // Dropping `new` acknowledges the reload.
            }
        }
    }
}

/// Sets the `state` (and `last_error`) of section `name`, keeping the
/// source's own fields.
fn set_state(status: &Registry, name: &str, state: &str, error: Option<String>) {
    status.update(name, |s| {
        s.insert("state".into(), json!(state));
        if let Some(e) = error {
            s.insert("last_error".into(), json!(e));
        }
    });
}

/// Publishes the section of a source whose configuration section could
/// not be built (a bad unit glob): state `failed` and why. The daemon stays
/// up and says so; the source is not run.
pub fn publish_failed(status: &Registry, name: &str, error: &str) {
    status.set(
        name,
        json!({
            "state": "failed",
            "last_error": error,
            "last_error_at": crate::record::format_ts(chrono::Utc::now()),
        }),
    );
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::backoff::Backoff;
    use crate::config::Config;
    use crate::reload::ReloadHub;
    use crate::shutdown::ShutdownTrigger;
    use crate::sources::source::SourceError;

    /// Fails its first `fail` runs, then runs until shutdown; counts
    /// reconfigurations.
    struct Flaky {
        fail: u32,
        runs: Arc<AtomicU32>,
        reloads: Arc<AtomicU32>,
    }

    impl Source for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        fn reload_mode(&self) -> ReloadMode {
            ReloadMode::Acknowledged
        }
        fn reconfigure(&mut self, _cfg: &Config) {
            self.reloads.fetch_add(1, Ordering::SeqCst);
        }
        fn restart_backoff(&self) -> Backoff {
            Backoff::new(Duration::from_millis(300), Duration::from_millis(300))
        }
        async fn run(&mut self, ctx: &mut SourceContext) -> Result<(), SourceError> {
            self.runs.fetch_add(1, Ordering::SeqCst);
            ctx.status
                .set("flaky", json!({"state": "running", "own": 1}));
            if self.fail > 0 {
                self.fail -= 1;
                return Err(SourceError::new(std::io::Error::other("boom")));
            }
            ctx.shutdown.clone().recv().await;
            Ok(())
        }
    }

    #[tokio::test]
    async fn restarts_after_an_error_and_acknowledges_reloads_meanwhile() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.apply_base_dir(d.path());
        std::fs::create_dir_all(&cfg.state_dir).unwrap();
        let (writer, _rec, thread) = crate::writer::start(&cfg).unwrap();
        let hub = ReloadHub::new(cfg.clone());
        let (trigger, shutdown) = ShutdownTrigger::new();
        let reg = Registry::new();
        let mut ctx =
            SourceContext::fixed(Arc::new(cfg.clone()), writer.clone(), shutdown, reg.clone());
        ctx.reloads = hub.subscribe().part("flaky");
        let (runs, reloads) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let src = Flaky {
            fail: 1,
            runs: runs.clone(),
            reloads: reloads.clone(),
        };
        let task = tokio::spawn(run(src, ctx));
        while reg
            .snapshot()
            .get("flaky")
            .and_then(|s| s.get("last_error"))
            .is_none()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let s = reg.snapshot()["flaky"].clone();
        assert_eq!(
            (s["state"].clone(), s["own"].clone()),
            (json!("error"), json!(1)),
            "{s}"
        );
        assert_eq!(s["last_error"], "boom");
        // Published while the source waits to run again: applied at once.
        let late = hub.publish(cfg.clone(), Duration::from_secs(2)).await;
        assert!(late.is_empty(), "{late:?}");
        assert_eq!(reloads.load(Ordering::SeqCst), 1);
        while runs.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        trigger.fire();
        task.await.unwrap();
        assert_eq!(reg.snapshot()["flaky"]["state"], "stopped");
        writer.shutdown().await.unwrap();
        thread.join().unwrap();
    }
}

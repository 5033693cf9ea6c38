//! Classification of systemd's own journal messages about the Engine units
//! into 60201 (started), 60202 (stopped) and 60203 (failed).
//!
//! Message ids, checked against systemd's catalog
//! (`/usr/lib/systemd/catalog/systemd.catalog`) and `job_done_mid()` in
//! systemd's `src/core/job.c` (v252):
//!
//! | MESSAGE_ID | catalog subject | systemd logs it for |
//! |---|---|---|
//! | `39f53479d3a045ac8e11786248231fbf` | A start job for unit has finished successfully | start job, `JOB_RESULT=done` ("Started …") |
//! | `be02cf6855d2428ba40df7e9d022f03d` | A start job for unit has failed | start job, any other result ("Failed to start …", "Dependency failed for …") |
//! | `9d1aaa27d60140bd96365438aad20286` | A stop job for unit has finished | stop and restart jobs, any result ("Stopped …") |
//! | `d9b373ed55a64feb8242e02dbe79a49c` | Unit failed | the unit entered the failed state, `UNIT_RESULT=` ("…: Failed with result '…'.") |
//! | `7ad2d189f7e94e70a38c781354912448` | Unit succeeded | the unit entered the dead state ("Deactivated successfully.") |
//!
//! Rules (one record per event, never two for one failure):
//!
//! - start job done → 60201 (`result="done"`);
//! - stop or restart job done → 60202 (`result="done"`, `job="restart"` for
//!   the stop half of a restart, whose start half is its own 60201);
//! - unit entered the failed state → 60203 with `result=` the `UNIT_RESULT`
//!   (`exit-code`, `signal`, `timeout`, …). This is *the* failure record: a
//!   failed start logs both this message and a start job with
//!   `JOB_RESULT=failed`, and the job message is ignored, so a failed start
//!   is recorded once. A crash of a running Engine (no job) is recorded the
//!   same way;
//! - a start job that ended `dependency`, `assert` or `timeout` → 60203 with
//!   that result: systemd does not put the unit into the failed state then,
//!   so no "Failed with result" message follows and nothing is counted twice;
//! - everything else about the unit (starting, stopping, process exited,
//!   deactivated, resources, restart scheduled, jobs canceled or skipped,
//!   stop jobs that did not finish `done`) is ignored and counted by reason.
//!
//! Journals without message ids (old systemd, imported logs) fall back to
//! `JOB_TYPE`/`JOB_RESULT` when present, then to systemd's message texts
//! ("Started ", "Stopped ", "Failed to start ", "Dependency failed for ",
//! "Timed out starting ", "Failed with result '…'", "entered failed
//! state"). The unit comes from `UNIT=`; for the failure texts without it,
//! from the `unit: ` prefix systemd puts in front of unit messages.

use std::borrow::Cow;

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::entry::JournalEntry;
use super::follower::{Classifier, Verdict};
use super::JournalError;
use crate::config::Config;
use crate::record::Entry;

/// `MESSAGE_ID` of a start job finished successfully.
pub const MID_STARTED: &str = "39f53479d3a045ac8e11786248231fbf";
/// `MESSAGE_ID` of a start job finished with another result.
pub const MID_START_FAILED: &str = "be02cf6855d2428ba40df7e9d022f03d";
/// `MESSAGE_ID` of a stop (or restart) job finished.
pub const MID_STOPPED: &str = "9d1aaa27d60140bd96365438aad20286";
/// `MESSAGE_ID` of a unit entering the failed state.
pub const MID_UNIT_FAILED: &str = "d9b373ed55a64feb8242e02dbe79a49c";
/// `MESSAGE_ID` of a unit entering the dead state without failure.
pub const MID_UNIT_SUCCEEDED: &str = "7ad2d189f7e94e70a38c781354912448";

/// Engine service started.
pub const CODE_STARTED: u32 = 60201;
/// Engine service stopped.
pub const CODE_STOPPED: u32 = 60202;
/// Engine service failed.
pub const CODE_FAILED: u32 = 60203;

/// What systemd said about a unit, whatever way it was found out.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    JobDone { job: String, result: String },
    UnitFailed { result: String },
    Other,
}

/// Turns systemd's messages about units matching the configured globs into
/// Engine records.
#[derive(Debug, Clone)]
pub struct EngineClassifier {
    units: GlobSet,
}

impl EngineClassifier {
    /// A classifier for the unit globs of `[journal] units`.
    pub fn new(units: &[String]) -> Result<EngineClassifier, JournalError> {
        let mut b = GlobSetBuilder::new();
        for u in units {
            let g = Glob::new(u).map_err(|e| JournalError::BadUnitPattern {
                pattern: u.clone(),
                message: e.to_string(),
            })?;
            b.add(g);
        }
        let units = b.build().map_err(|e| JournalError::BadUnitPattern {
            pattern: units.join(", "),
            message: e.to_string(),
        })?;
        Ok(EngineClassifier { units })
    }

    /// Whether `unit` is one of the followed units.
    pub fn matches_unit(&self, unit: &str) -> bool {
        self.units.is_match(unit)
    }
}

/// The Engine's name for a unit: the instance of a template unit
/// (`nxengine@Engine-01.service` → `Engine-01`), else the unit's name
/// without its type suffix.
pub fn engine_name(unit: &str) -> &str {
    let stem = unit.rsplit_once('.').map_or(unit, |(s, _)| s);
    match stem.split_once('@') {
        Some((_, inst)) if !inst.is_empty() => inst,
        _ => stem,
    }
}

/// The unit a failure text names in its `unit: ` prefix.
fn unit_from_prefix(msg: &str) -> Option<&str> {
    let (unit, _) = msg.split_once(": ")?;
    (!unit.is_empty() && !unit.contains(char::is_whitespace)).then_some(unit)
}

/// The text between the quotes of `Failed with result '…'`.
fn quoted_result(msg: &str) -> Option<String> {
    let rest = msg.split_once("Failed with result '")?.1;
    let (r, _) = rest.split_once('\'')?;
    Some(r.to_string())
}

fn classify_event(e: &JournalEntry, msg: &str) -> Event {
    let job = e.field("JOB_TYPE");
    let result = e.field("JOB_RESULT");
    let job_done = |default_job: &str, default_result: &str| Event::JobDone {
        job: job.as_deref().unwrap_or(default_job).to_string(),
        result: result.as_deref().unwrap_or(default_result).to_string(),
    };
    let unit_failed = || Event::UnitFailed {
        result: e
            .field("UNIT_RESULT")
            .map(Cow::into_owned)
            .or_else(|| quoted_result(msg))
            .unwrap_or_else(|| "failed".to_string()),
    };
    match e.field("MESSAGE_ID").as_deref() {
        Some(MID_STARTED) => return job_done("start", "done"),
        Some(MID_START_FAILED) => return job_done("start", "failed"),
        Some(MID_STOPPED) => return job_done("stop", "done"),
        Some(MID_UNIT_FAILED) => return unit_failed(),
        Some(_) => return Event::Other,
        None => {}
    }
    if let (Some(j), Some(r)) = (&job, &result) {
        return Event::JobDone {
            job: j.to_string(),
            result: r.to_string(),
        };
    }
    let text = |job: &str, result: &str| Event::JobDone {
        job: job.into(),
        result: result.into(),
    };
    if msg.starts_with("Started ") {
        text("start", "done")
    } else if msg.starts_with("Stopped ") {
        text("stop", "done")
    } else if msg.starts_with("Failed to start ") {
        text("start", "failed")
    } else if msg.starts_with("Dependency failed for ") {
        text("start", "dependency")
    } else if msg.starts_with("Timed out starting ") {
        text("start", "timeout")
    } else if msg.contains("Failed with result '") || msg.contains(" entered failed state") {
        unit_failed()
    } else {
        Event::Other
    }
}

impl Classifier for EngineClassifier {
    fn journal_matches(&self) -> Vec<String> {
        // systemd (PID 1) writes the job and unit-state messages; matching
        // the unit itself is done here, with globs, because journalctl's
        // `-u` expands globs only once, at start, against known units.
        vec!["_PID=1".to_string()]
    }

    fn reload(&mut self, config: &Config) {
        match EngineClassifier::new(&config.journal.units) {
            Ok(c) => *self = c,
            // Config validation happens before a reload is accepted; keep
            // the working filter if a pattern still does not compile.
            Err(e) => tracing::warn!(error = %e, "journal units not reloaded"),
        }
    }

    fn classify(&mut self, e: &JournalEntry) -> Verdict {
        let from_systemd = e.field("_PID").as_deref() == Some("1")
            || e.field("_SYSTEMD_UNIT").as_deref() == Some("init.scope");
        if !from_systemd {
            return Verdict::Ignored("not_systemd");
        }
        let msg = e.field("MESSAGE").unwrap_or_default();
        let unit = match e.field("UNIT") {
            Some(u) => u.into_owned(),
            None => match unit_from_prefix(&msg) {
                Some(u)
                    if msg.contains("Failed with result '")
                        || msg.contains("entered failed state") =>
                {
                    u.to_string()
                }
                _ => return Verdict::Ignored("no_unit"),
            },
        };
        if !self.matches_unit(&unit) {
            return Verdict::Ignored("other_unit");
        }
        let (code, result, job) = match classify_event(e, &msg) {
            Event::JobDone { job, result } => match (job.as_str(), result.as_str()) {
                ("start", "done") => (CODE_STARTED, result, None),
                ("stop", "done") => (CODE_STOPPED, result, None),
                ("restart", "done") => (CODE_STOPPED, result, Some(job)),
                ("start", "dependency" | "assert" | "timeout") => (CODE_FAILED, result, None),
                // Recorded by the unit's own "Failed with result" message.
                ("start", "failed") => return Verdict::Ignored("start_failed_job"),
                _ => return Verdict::Ignored("other_job"),
            },
            Event::UnitFailed { result } => (CODE_FAILED, result, None),
            Event::Other => return Verdict::Ignored("other_message"),
        };
        let mut rec = Entry::appliance(code)
            .field("engine", engine_name(&unit))
            .field("unit", unit.as_str())
            .field("result", result);
        if let Some(j) = job {
            rec = rec.field("job", j);
        }
        rec.time = e.time_rfc3339();
        Verdict::Record(Box::new(rec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CUR: &str = "s=c00a2fbb5b04453f8290630f5846f5e1;i=1e;b=9e3ca539835a4b8c8b51aed929d383fd;m=1e;t=60a24181e401e;x=4d74fabd22726062";

    fn entry(fields: serde_json::Value) -> JournalEntry {
        let mut m = json!({
            "__CURSOR": CUR,
            "__REALTIME_TIMESTAMP": "1700000000000001",
            "_PID": "1",
            "_SYSTEMD_UNIT": "init.scope",
        });
        for (k, v) in fields.as_object().unwrap() {
            m[k] = v.clone();
        }
        JournalEntry::parse(m.to_string().as_bytes()).unwrap()
    }

    type Outcome = Result<(u32, Vec<(String, String)>), &'static str>;

    fn run(fields: serde_json::Value) -> Outcome {
        let mut c = EngineClassifier::new(&["nxengine@*.service".into()]).unwrap();
        match c.classify(&entry(fields)) {
            Verdict::Record(r) => {
                assert_eq!(r.time.as_deref(), Some("2023-11-14T22:13:20.000001Z"));
                Ok((r.code, r.fields.clone()))
            }
            Verdict::Ignored(why) => Err(why),
        }
    }

    fn f(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn message_ids() {
        let u = "nxengine@Engine-01.service";
        assert_eq!(
            run(
                json!({"MESSAGE_ID": MID_STARTED, "UNIT": u, "JOB_TYPE": "start", "JOB_RESULT": "done", "MESSAGE": "Started Nexthink Engine Engine-01."})
            ),
            Ok((
                60201,
                f(&[("engine", "Engine-01"), ("unit", u), ("result", "done")])
            ))
        );
        assert_eq!(
            run(
                json!({"MESSAGE_ID": MID_STOPPED, "UNIT": u, "JOB_TYPE": "stop", "JOB_RESULT": "done"})
            ),
            Ok((
                60202,
                f(&[("engine", "Engine-01"), ("unit", u), ("result", "done")])
            ))
        );
        assert_eq!(
            run(
                json!({"MESSAGE_ID": MID_STOPPED, "UNIT": u, "JOB_TYPE": "restart", "JOB_RESULT": "done"})
            ),
            Ok((
                60202,
                f(&[
                    ("engine", "Engine-01"),
                    ("unit", u),
                    ("result", "done"),
                    ("job", "restart")
                ])
            ))
        );
        assert_eq!(
            run(json!({"MESSAGE_ID": MID_UNIT_FAILED, "UNIT": u, "UNIT_RESULT": "exit-code"})),
            Ok((
                60203,
                f(&[
                    ("engine", "Engine-01"),
                    ("unit", u),
                    ("result", "exit-code")
                ])
            ))
        );
        // The failed start job is not a second record of the same failure.
        assert_eq!(
            run(
                json!({"MESSAGE_ID": MID_START_FAILED, "UNIT": u, "JOB_TYPE": "start", "JOB_RESULT": "failed"})
            ),
            Err("start_failed_job")
        );
        assert_eq!(
            run(
                json!({"MESSAGE_ID": MID_START_FAILED, "UNIT": u, "JOB_TYPE": "start", "JOB_RESULT": "dependency"})
            ),
            Ok((
                60203,
                f(&[
                    ("engine", "Engine-01"),
                    ("unit", u),
                    ("result", "dependency")
                ])
            ))
        );
        assert_eq!(
            run(
                json!({"MESSAGE_ID": MID_START_FAILED, "UNIT": u, "JOB_TYPE": "start", "JOB_RESULT": "canceled"})
            ),
            Err("other_job")
        );
        assert_eq!(
            run(
                json!({"MESSAGE_ID": MID_STOPPED, "UNIT": u, "JOB_TYPE": "stop", "JOB_RESULT": "canceled"})
            ),
            Err("other_job")
        );
        assert_eq!(
            run(json!({"MESSAGE_ID": MID_UNIT_SUCCEEDED, "UNIT": u})),
            Err("other_message")
        );
        assert_eq!(
            run(json!({"MESSAGE_ID": "7d4958e842da4a758f6c1cdc7b36dcc5", "UNIT": u})),
            Err("other_message")
        );
    }

    #[test]
    fn filters() {
        assert_eq!(
            run(json!({"MESSAGE_ID": MID_STARTED, "UNIT": "ssh.service"})),
            Err("other_unit")
        );
        assert_eq!(
            run(
                json!({"MESSAGE_ID": MID_STARTED, "UNIT": "nxengine@a.service", "_PID": "77", "_SYSTEMD_UNIT": "x.service"})
            ),
            Err("not_systemd")
        );
        assert_eq!(run(json!({"MESSAGE": "Reached target x."})), Err("no_unit"));
        // Binary-encoded fields still classify.
        assert_eq!(
            run(json!({"MESSAGE_ID": MID_STARTED, "UNIT": [110,120,101,110,103,105,110,101,64,98,46,115,101,114,118,105,99,101]}))
                .map(|r| r.0),
            Ok(60201)
        );
    }

    #[test]
    fn text_fallback() {
        let u = "nxengine@b.service";
        let code = |m: &str, unit: Option<&str>| {
            let mut v = json!({ "MESSAGE": m });
            if let Some(u) = unit {
                v["UNIT"] = json!(u);
            }
            run(v).map(|(c, fields)| (c, fields[2].1.clone()))
        };
        assert_eq!(
            code("Started Nexthink Engine b.", Some(u)),
            Ok((60201, "done".into()))
        );
        assert_eq!(
            code("Stopped Nexthink Engine b.", Some(u)),
            Ok((60202, "done".into()))
        );
        assert_eq!(
            code("Failed to start Nexthink Engine b.", Some(u)),
            Err("start_failed_job")
        );
        assert_eq!(
            code("Dependency failed for Nexthink Engine b.", Some(u)),
            Ok((60203, "dependency".into()))
        );
        assert_eq!(
            code("nxengine@b.service: Failed with result 'exit-code'.", None),
            Ok((60203, "exit-code".into()))
        );
        assert_eq!(
            code("Unit nxengine@b.service entered failed state.", Some(u)),
            Ok((60203, "failed".into()))
        );
        assert_eq!(
            code(
                "nxengine@b.service: Main process exited, code=exited, status=1/FAILURE",
                None
            ),
            Err("no_unit")
        );
        assert_eq!(
            code("nxengine@b.service: Consumed 1s CPU time.", Some(u)),
            Err("other_message")
        );
        assert_eq!(
            code("ssh.service: Failed with result 'exit-code'.", None),
            Err("other_unit")
        );
        // JOB_TYPE/JOB_RESULT without an id.
        assert_eq!(
            run(json!({"UNIT": u, "JOB_TYPE": "stop", "JOB_RESULT": "done", "MESSAGE": "x"}))
                .map(|r| r.0),
            Ok(60202)
        );
    }

    #[test]
    fn reload_replaces_the_unit_globs_and_keeps_them_when_invalid() {
        let mut c = EngineClassifier::new(&["nxengine@*.service".into()]).unwrap();
        let mut cfg = Config::default();
        cfg.journal.units = vec!["engine-*.service".into()];
        c.reload(&cfg);
        assert!(c.matches_unit("engine-1.service"));
        assert!(!c.matches_unit("nxengine@a.service"));
        cfg.journal.units = vec!["[".into()];
        c.reload(&cfg);
        assert!(c.matches_unit("engine-1.service"));
    }

    #[test]
    fn names_and_bad_globs() {
        assert_eq!(engine_name("nxengine@Engine-01.service"), "Engine-01");
        assert_eq!(engine_name("nxengine.service"), "nxengine");
        assert_eq!(engine_name("nxengine@.service"), "nxengine@");
        assert!(EngineClassifier::new(&["nxengine@[.service".into()]).is_err());
    }
}

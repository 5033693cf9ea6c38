//! The syslog sink: copies audit records to the local syslog as RFC 5424
//! messages so that existing rsyslog routes (remote syslog, SIEM) carry
//! them (`[forward]`).
//!
//! It reads the durable log through the shared runner, with its own
//! checkpoint `forward.pos` in the state directory, so an rsyslog outage,
//! an rsyslog restart or a daemon crash loses nothing. Delivery is
//! at-least-once; `seq` in every message lets receivers drop duplicates.
//! Formatting is in [`rfc5424`], the socket and what rsyslog may not have
//! read yet in [`delivery`].
//!
//! - Messages carry APP-NAME `nxauditd`; the intake drops that APP-NAME and
//!   the rsyslog drop-in forwards only sshd/sudo to the intake: no loop.
//! - rsyslog parses RFC 5424 on a Unix socket only with imuxsock's special
//!   parser off; `packaging/rsyslog/30-nxaudit.conf` opens such a socket
//!   (`/run/nxaudit/rsyslog.sock`) for `[forward] target`.

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::sink::Sink;
use crate::catalog::Component;
use crate::reader::{LogRecord, RecordFilter};

pub mod delivery;
pub mod rfc5424;

pub use delivery::Delivery;
pub use rfc5424::{format_rfc5424, record_line, severity, APP_NAME, FACILITY, MAX_MESSAGE, SD_ID};

/// Name of the checkpoint file in the state directory (unchanged since
/// the first release, so an upgrade resumes where it stopped).
pub const POSITION_FILE: &str = "forward.pos";
/// Name of the status section.
pub const STATUS_SECTION: &str = "forwarder";

/// `[forward]`: records out to the local syslog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardConfig {
    /// Run the forwarder.
    pub enabled: bool,
    /// Datagram socket of the local syslog.
    pub target: PathBuf,
    /// Codes forwarded; empty = all.
    pub codes: Vec<u32>,
    /// Components forwarded; empty = all.
    pub components: Vec<Component>,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            enabled: true,
            target: "/dev/log".into(),
            codes: Vec::new(),
            components: Vec::new(),
        }
    }
}

impl ForwardConfig {
    /// The running sink.
    pub fn build(&self) -> SyslogSink {
        SyslogSink {
            target: self.target.display().to_string(),
            filter: RecordFilter::by_code_and_component(&self.codes, &self.components),
            delivery: Delivery::new(self.target.clone()),
            procid: std::process::id(),
            lines_cut: 0,
        }
    }
}

/// The running syslog sink.
pub struct SyslogSink {
    target: String,
    filter: RecordFilter,
    delivery: Delivery,
    procid: u32,
    /// Records whose line had to be cut to fit a datagram.
    lines_cut: u64,
}

impl Sink for SyslogSink {
    type Config = ForwardConfig;

    fn name(&self) -> &'static str {
        STATUS_SECTION
    }

    fn checkpoint(&self) -> &'static str {
        POSITION_FILE
    }

    fn delivered_key(&self) -> &'static str {
        "forwarded"
    }

    fn filter(&self) -> RecordFilter {
        self.filter.clone()
    }

    fn reconfigure(&mut self, cfg: &ForwardConfig) {
        // The filters change live; a new target needs a restart.
        self.filter = RecordFilter::by_code_and_component(&cfg.codes, &cfg.components);
    }

    async fn open(&mut self) -> io::Result<()> {
        Ok(())
    }

    async fn deliver(&mut self, r: &LogRecord) -> io::Result<()> {
        let mut limit = MAX_MESSAGE;
        loop {
            let (msg, line_cut) = format_rfc5424(&r.rec, self.procid, limit);
            match self.delivery.send(r.rec.seq, &msg).await {
                // The kernel refuses a datagram this large (socket send
                // buffer): smaller, shedding structured data first.
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) && limit > 512 => limit /= 2,
                Ok(()) => {
                    if line_cut {
                        self.lines_cut += 1;
                        tracing::warn!(seq = r.rec.seq, bytes = msg.len(), "forwarder: record line too long for one datagram; sent cut, marked truncated=\"true\"");
                    }
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn commit(&mut self, idle: bool) -> io::Result<()> {
        if idle {
            self.delivery.confirm_idle();
        }
        Ok(())
    }

    fn confirmed(&self, processed: u64) -> u64 {
        self.delivery.confirmed(processed)
    }

    fn status(&self, doc: &mut Map<String, Value>) {
        doc.insert("target".into(), json!(self.target));
        doc.insert("unconfirmed".into(), json!(self.delivery.unconfirmed.len()));
        doc.insert("replayed".into(), json!(self.delivery.replayed));
        doc.insert("lines_cut".into(), json!(self.lines_cut));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::follow::tests::{append, line};
    use crate::reader::Checkpoint;
    use crate::sinks::sink::SinkEnv;
    use crate::sources::syslog_msg;
    use crate::status::Registry;
    use std::io::Write;
    use std::time::{Duration, Instant};

    async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn received(sock: &std::os::unix::net::UnixDatagram, into: &mut Vec<u64>) {
        received_at_most(sock, into, usize::MAX)
    }

    fn received_at_most(sock: &std::os::unix::net::UnixDatagram, into: &mut Vec<u64>, max: usize) {
        let mut buf = vec![0u8; 70_000];
        let mut n_read = 0;
        while n_read < max {
            let Ok(n) = sock.recv(&mut buf) else { break };
            n_read += 1;
            let p = syslog_msg::parse(&buf[..n]).unwrap();
            into.push(p.sd(SD_ID).unwrap().param("seq").unwrap().parse().unwrap());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outage_and_peer_restart_lose_nothing() {
        use crate::config::Config;
        use crate::shutdown::ShutdownTrigger;
        use std::sync::Arc;
        let d = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.apply_base_dir(d.path());
        cfg.forward.target = d.path().join("rsyslog.sock");
        cfg.forward.codes = vec![60001, 60003];
        std::fs::create_dir_all(&cfg.log_dir).unwrap();
        let active = cfg.log_dir.join(crate::logset::ACTIVE);
        append(&active, 1..=5);
        // Already forwarded up to 3 in an earlier run.
        let cp = Checkpoint::in_state_dir(&cfg.state_dir, POSITION_FILE);
        cp.save_seq(3).unwrap();
        // Records 6..=2000, one of them with a code not forwarded.
        {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&active)
                .unwrap();
            for s in 6..=2000u64 {
                let code = if s == 10 { 60101 } else { 60001 };
                writeln!(f, "{}", line(s, code, "x")).unwrap();
            }
        }
        let (trigger, shutdown) = ShutdownTrigger::new();
        let reg = Registry::new();
        let env = SinkEnv {
            log_dir: cfg.log_dir.clone(),
            state_dir: cfg.state_dir.clone(),
            sync: true,
            status: reg.clone(),
            shutdown,
        };
        let reloads = crate::reload::Reloads::fixed(Arc::new(cfg.clone()));
        let task = tokio::spawn(crate::sinks::runner::run(
            cfg.forward.build(),
            env,
            reloads,
            |c| &c.forward,
        ));
        let st = || {
            reg.snapshot()
                .get(STATUS_SECTION)
                .cloned()
                .unwrap_or_default()
        };
        // The target does not exist yet: the forwarder waits on seq 4.
        wait_for("waiting", || st()["state"] == "waiting for target").await;
        assert_eq!(st()["forwarded"], 0);

        let rx = std::os::unix::net::UnixDatagram::bind(&cfg.forward.target).unwrap();
        rx.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        // Read only part, then "restart" the peer with datagrams unread:
        // the kernel discards them with the socket.
        wait_for("receiver queue full", || st()["state"] == "target busy").await;
        received_at_most(&rx, &mut got, 5);
        assert_eq!(got.len(), 5);
        drop(rx);
        std::fs::remove_file(&cfg.forward.target).unwrap();
        let rx = std::os::unix::net::UnixDatagram::bind(&cfg.forward.target).unwrap();
        rx.set_nonblocking(true).unwrap();
        wait_for("all sent", || {
            received(&rx, &mut got);
            st()["last_seq"] == 2000
        })
        .await;
        received(&rx, &mut got);
        wait_for("position saved", || cp.load_seq().unwrap() == Some(2000)).await;
        trigger.fire();
        task.await.unwrap();
        let mut uniq = got.clone();
        uniq.sort();
        uniq.dedup();
        let want: Vec<u64> = (4..=2000).filter(|s| *s != 10).collect();
        assert_eq!(uniq, want, "missing records");
        let s = st();
        assert_eq!(s["filtered"], 1, "{s}");
        assert!(s["replayed"].as_u64().unwrap() > 0, "{s}");
        assert!(cp.load_seq().unwrap().unwrap() <= 2000);
    }
}

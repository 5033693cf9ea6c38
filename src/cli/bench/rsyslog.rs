//! The baseline of `bench --vs-rsyslog`: a private `rsyslogd` with its
//! default file output (no fsync) receiving the same messages.

use super::*;

/// One run of the rsyslog baseline.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(super) struct RsyslogRun {
    /// Messages found in rsyslog's file.
    pub messages: u64,
    /// From the first send until the file held every message.
    pub seconds: f64,
    /// Messages per second.
    pub per_s: f64,
}

/// A private rsyslogd: its own config, socket and file in its `base`
/// directory, stopped (and the directory removed) on drop like the daemon.
pub(super) type Rsyslogd = Daemon;

/// The whole rsyslog configuration: no system socket, one private
/// `imuxsock` input (rate limiting off, so no message is dropped) and one
/// `omfile` action with rsyslog's defaults, i.e. buffered, never synced,
/// taking only the bench's messages (so rsyslog's own notices are not
/// counted).
pub(super) fn rsyslog_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "global(workDirectory=\"{d}/work\")\n\
         module(load=\"imuxsock\" SysSock.Use=\"off\")\n\
         input(type=\"imuxsock\" Socket=\"{d}/log.sock\" RateLimit.Interval=\"0\")\n\
         if $programname == \"nxbench\" then action(type=\"omfile\" file=\"{d}/messages.log\")\n"
    )
}

pub(super) fn start_rsyslogd(parent: &Path, label: &str) -> anyhow::Result<Rsyslogd> {
    let dir = parent.join(format!(
        "nxaudit-bench-{}-rsyslog-{label}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("work"))
        .with_context(|| format!("create {}", dir.display()))?;
    let conf = dir.join("rsyslogd.conf");
    std::fs::write(&conf, rsyslog_conf(&dir)).context("write the rsyslog config")?;
    let stderr = std::fs::File::create(dir.join("rsyslogd.stderr"))?;
    let child = Command::new("rsyslogd")
        .arg("-n")
        .arg("-f")
        .arg(&conf)
        .arg("-i")
        .arg(dir.join("rsyslogd.pid"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .context("start rsyslogd (is rsyslog installed?)")?;
    let mut r = Rsyslogd { child, base: dir };
    let t = Instant::now();
    while !r.base.join("log.sock").exists() {
        if let Ok(Some(st)) = r.child.try_wait() {
            let err = std::fs::read_to_string(r.base.join("rsyslogd.stderr")).unwrap_or_default();
            bail!("rsyslogd exited ({st}): {err}");
        }
        if t.elapsed() > Duration::from_secs(20) {
            bail!("rsyslogd did not create its socket in 20 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(r)
}

/// Lines in `path` so far, counting on from `(offset, lines)`.
pub(super) fn count_lines(path: &Path, at: &mut (u64, u64)) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    f.seek(SeekFrom::Start(at.0))?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(at.1);
        }
        at.0 += n as u64;
        at.1 += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
    }
}

/// Sends the run's messages to a fresh private rsyslogd from `clients`
/// threads and times it until its file holds all of them.
pub(super) fn rsyslog_run(args: &Args, parent: &Path, label: &str) -> anyhow::Result<RsyslogRun> {
    use std::os::unix::net::UnixDatagram;
    let r = start_rsyslogd(parent, label)?;
    let sock = r.base.join("log.sock");
    let out = r.base.join("messages.log");
    let clients = args.clients.max(1);
    let per = args.events / clients as u64;
    let total = per * clients as u64;
    let t = Instant::now();
    let sent: Vec<anyhow::Result<()>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..clients)
            .map(|c| {
                let sock = &sock;
                s.spawn(move || -> anyhow::Result<()> {
                    let u = UnixDatagram::unbound()?;
                    u.connect(sock).context("connect to rsyslogd")?;
                    for i in 0..per {
                        // The same payload as the daemon's event line.
                        let msg = format!("<14>nxbench: {}", event_line(args.size, c, i));
                        loop {
                            match u.send(msg.trim_end().as_bytes()) {
                                Ok(_) => break,
                                // The receive queue is full: rsyslog is behind.
                                Err(e)
                                    if e.raw_os_error() == Some(libc::ENOBUFS)
                                        || e.kind() == std::io::ErrorKind::WouldBlock =>
                                {
                                    std::thread::sleep(Duration::from_micros(200));
                                }
                                Err(e) => return Err(e).context("send to rsyslogd"),
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        join_clients(hs)
    });
    for r in sent {
        r?;
    }
    let mut at = (0, 0);
    let mut last_growth = Instant::now();
    loop {
        let before = at.1;
        let n = count_lines(&out, &mut at).context("read rsyslog's file")?;
        if n >= total {
            break;
        }
        if n > before {
            last_growth = Instant::now();
        } else if last_growth.elapsed() > Duration::from_secs(30) {
            bail!("rsyslog's file holds {n} of {total} messages and stopped growing");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let secs = t.elapsed().as_secs_f64();
    drop(r);
    Ok(RsyslogRun {
        messages: at.1,
        seconds: secs,
        per_s: at.1 as f64 / secs,
    })
}

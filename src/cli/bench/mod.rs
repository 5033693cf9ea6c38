//! `nxaudit bench`: starts a private daemon in a temp dir, measures the
//! disk's own limits in the same run (sequential write rate, one
//! `fdatasync`), then drives the daemon with N clients and reports
//! events/s, ack latency percentiles and RSS, as absolute numbers and as
//! ratios to the disk baseline — machines here are shared and noisy, so
//! only ratios measured in one invocation compare.
//!
//! `--rate R` offers a fixed load (events/s over all clients) to measure
//! latency below saturation; without it each client keeps `--window`
//! events in flight (saturation). `--rotate-size` makes the daemon rotate
//! (and compress) while it is measured; `--compare-rotation` runs both in
//! one invocation and prints the p99 ratio. `--seal-interval D` runs
//! without and with forward-secure sealing every D, alternating in
//! `--pairs` pairs, and prints the throughput ratios.
//!
//! `--vs-rsyslog` measures the throughput of rsyslog's default file
//! output (no fsync) in the same run: a private `rsyslogd` receives the
//! same number of same-size messages from the same number of clients on its
//! own Unix socket, and is timed until its file holds every line; daemon
//! and rsyslog runs alternate (`--pairs`) and the median of the per-pair
//! ratios is reported. With `--rate`, the raw group commit and the daemon
//! alternate the same way and the p99 ratio is the median of the pairs';
//! `--raw-alongside` runs the two of a pair at the same time instead, so
//! that the disk's stalls (tens to hundreds of ms on shared disks, and
//! what decides a p99) fall on both. `--raw-socket` adds a second
//! baseline to each pair: the same raw group commit behind a Unix socket,
//! served by a minimal server (one event loop reading, the syncing thread
//! writing the acks) to the same client as the daemon, so the gap between
//! the raw group commit and the daemon splits into what any socket server
//! costs on the machine and what the daemon adds to that.
//!
//! `--attack KIND` runs a hostile client as another uid (`--attack-uid`,
//! default `nobody`) against a daemon with the default limits, and reports
//! the daemon's peak RSS and a granted client's ack latency meanwhile:
//! `hold` (an ungranted uid opens 300 connections), `slow` (64 connections
//! sending one byte a second), `nonreader` (64 connections that never read
//! replies), `u85` (64 connections pipelining 64 KiB lines of U+0085, each
//! escaped to 8 bytes), `ids` (one connection sending distinct ids).
//! Several kinds may be given (`--attack u85,ids`); every round
//! (`--pairs`) runs them and `none` (no attacker) in turn and the summary
//! gives each attack's p99 against the same round's no-attack p99, and the
//! disk's own write + fdatasync latency measured during each run.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::Context;

mod attack;
mod paced;
mod raw;
mod rawsock;
mod rsyslog;

use attack::*;
use paced::*;
use raw::*;
use rawsock::*;
use rsyslog::*;

/// Arguments of `nxaudit bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Concurrent client connections.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Events in total.
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,
    /// Size of one event line in bytes (approximate).
    #[arg(long, default_value_t = 200)]
    pub size: usize,
    /// Offered load in events/s over all clients (default: saturate).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Events in flight per client when saturating.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Flush policy of the daemon under test.
    #[arg(long, default_value = "sync")]
    pub flush: String,
    /// Rotate every this many bytes during the run (e.g. 5MiB).
    #[arg(long)]
    pub rotate_size: Option<String>,
    /// Run without and with rotation every 5 MiB, in pairs, and compare p99.
    #[arg(long)]
    pub compare_rotation: bool,
    /// Pairs (rounds) of runs for --compare-rotation, --vs-rsyslog, --rate,
    /// --attack and --seal-interval.
    #[arg(long, default_value_t = 3)]
    pub pairs: usize,
    /// Run without and with sealing every this long (e.g. `1s`), in
    /// pairs, and compare throughput.
    #[arg(long, value_name = "DURATION")]
    pub seal_interval: Option<String>,
    /// Compare throughput with a private rsyslogd (default file output, no
    /// fsync) receiving the same messages, in alternating runs.
    #[arg(long)]
    pub vs_rsyslog: bool,
    /// With --rate: run the raw group commit at the same time as the
    /// daemon (each at the offered load, on the same disk) rather than
    /// before it, so a disk stall hits both sides of a pair.
    #[arg(long)]
    pub raw_alongside: bool,
    /// With --rate: also serve the raw group commit over a Unix socket
    /// with a minimal server, driven by the same client as the daemon (and
    /// with the raw group commit alongside it too, with --raw-alongside),
    /// to tell what the socket costs from what the daemon costs.
    #[arg(long)]
    pub raw_socket: bool,
    /// With --rate: a sender and a reader thread per connection instead of
    /// one sender and one event loop for all (their wake-ups then count in
    /// the latency, as with many single-threaded client processes).
    #[arg(long)]
    pub client_threads: bool,
    /// Directory for the temp dir (the disk being measured).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Run attacks instead, comma-separated: hold, slow, nonreader, u85,
    /// ids; each round (`--pairs`) also runs `none`, the same granted load
    /// without an attacker, as the baseline.
    #[arg(long)]
    pub attack: Option<String>,
    /// The attacker's uid (granted Portal, except for `hold`).
    #[arg(long, default_value_t = 65534)]
    pub attack_uid: u32,
    /// How long the attack runs, seconds.
    #[arg(long, default_value_t = 20)]
    pub attack_secs: u64,
    /// Internal: be the attacker process (KIND) against --attacker-socket.
    #[arg(long, hide = true)]
    pub attacker: Option<String>,
    /// Internal: the socket the attacker process attacks.
    #[arg(long, hide = true)]
    pub attacker_socket: Option<PathBuf>,
}

/// Results of one run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Results {
    /// Label of the run.
    pub label: String,
    /// Events acknowledged.
    pub events: u64,
    /// Events refused.
    pub refused: u64,
    /// Wall time of the load phase.
    pub seconds: f64,
    /// Acknowledged events per second.
    pub events_per_s: f64,
    /// Megabytes per second of event payload.
    pub mb_per_s: f64,
    /// Ack latency percentiles in microseconds.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Daemon RSS before load (KiB).
    pub rss_idle_kib: u64,
    /// Daemon peak RSS (KiB).
    pub rss_peak_kib: u64,
    /// Group commits done by the daemon.
    pub syncs: u64,
    /// Seal records (60907) in the log at the end of the run.
    pub seals: u64,
    /// Writer time spent sealing, microseconds (from the status file).
    pub seal_us: u64,
    /// CPU time the daemon used (user + system) per acknowledged event,
    /// microseconds: unlike wall time, hardly moved by a busy machine.
    pub cpu_us_per_event: f64,
}

/// The disk's own limits, measured in the same directory.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Disk {
    /// Sequential write rate (64 MiB in 1 MiB writes, then one fdatasync), MB/s.
    pub seq_write_mb_s: f64,
    /// Median latency of write(200 B) + fdatasync, microseconds.
    pub fsync_us: f64,
    /// 99th percentile of the same, microseconds.
    pub fsync_p99_us: f64,
    /// Single-writer fdatasync rate, per second.
    pub fsync_per_s: f64,
}

/// The daemon's status document, waiting (at most 3 s) for one written
/// after `ended`: the file is rewritten every second.
fn status_after(base: &Path, ended: std::time::SystemTime) -> Option<serde_json::Value> {
    let status_path = base.join("state/status.json");
    let wait = Instant::now();
    while wait.elapsed() < Duration::from_secs(3)
        && std::fs::metadata(&status_path)
            .and_then(|m| m.modified())
            .map_or(true, |m| m < ended)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::read(&status_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// A writer counter of a status document (0 when absent).
fn writer_stat(status: &Option<serde_json::Value>, key: &str) -> u64 {
    status
        .as_ref()
        .and_then(|v| v.pointer(&format!("/writer/{key}")))
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn measure_disk(dir: &Path) -> anyhow::Result<Disk> {
    let p = dir.join("disk-probe");
    let mut f = std::fs::File::create(&p).context("create disk probe")?;
    let chunk = vec![0x5au8; 1 << 20];
    let t = Instant::now();
    for _ in 0..64 {
        f.write_all(&chunk)?;
    }
    f.sync_data()?;
    let seq = 64.0 * 1.048_576 / t.elapsed().as_secs_f64();
    let mut lat = Vec::with_capacity(200);
    let small = vec![b'x'; 200];
    for _ in 0..200 {
        let t = Instant::now();
        f.write_all(&small)?;
        f.sync_data()?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let med = lat[lat.len() / 2];
    let p99 = lat[(lat.len() * 99 / 100).min(lat.len() - 1)];
    drop(f);
    let _ = std::fs::remove_file(&p);
    Ok(Disk {
        seq_write_mb_s: seq,
        fsync_us: med,
        fsync_p99_us: p99,
        fsync_per_s: 1e6 / med.max(1.0),
    })
}

/// CPU seconds (user + system) process `pid` has used so far.
fn cpu_secs(pid: u32) -> f64 {
    // /proc counts in USER_HZ, which Linux fixes at 100 for user space.
    let ticks = 100.0;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime
            // are the 14th and 15th of the whole line.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .map_or(0.0, |t| t / ticks)
}

fn rss_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A child process with its own directory: SIGTERM, reaped and the
/// directory removed on drop (the daemon under test, the rsyslog baseline).
struct Daemon {
    child: Child,
    base: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn bench_base(parent: &Path, label: &str) -> PathBuf {
    parent.join(format!("nxaudit-bench-{}-{label}", std::process::id()))
}

fn start_daemon(
    parent: &Path,
    label: &str,
    flush: &str,
    rotate: Option<&str>,
    seal: Option<u64>,
) -> anyhow::Result<Daemon> {
    let base = fresh_base(parent, label)?;
    let mut sealing = String::new();
    if let Some(secs) = seal {
        let path = base.join("seal.key");
        let (key, _) = crate::seal::SealKey::generate(chrono::Utc::now(), secs)?;
        crate::seal::KeyFile::create(&path, &key)?;
        sealing = format!(
            "seal_key_file = {:?}\nseal_interval = \"{secs}s\"\n",
            path.display().to_string()
        );
    }
    spawn_daemon(
        base,
        &format!(
            "[log]\nflush = {flush:?}\nrotate_size = {:?}\nmax_files = 0\nmax_total_bytes = 0\nmin_free_bytes = 0\n\
             {sealing}[listener]\nmax_connections = 4096\nmax_connections_per_uid = 4096\n",
            rotate.unwrap_or("0")
        ),
    )
}

/// Seal records in the log files of `base`.
fn count_seals(base: &Path) -> u64 {
    let finder = memchr::memmem::Finder::new(b"|60907|");
    let Ok(files) = crate::logset::list(&base.join("log")) else {
        return 0;
    };
    let mut n = 0;
    for f in files {
        let Ok(r) = crate::logset::open(&f) else {
            continue;
        };
        for line in crate::logset::Lines::new(r).map_while(Result::ok) {
            n += u64::from(finder.find(line.as_bytes()).is_some());
        }
    }
    n
}

/// An empty directory for one run's daemon.
fn fresh_base(parent: &Path, label: &str) -> anyhow::Result<PathBuf> {
    let base = bench_base(parent, label);
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).with_context(|| format!("create {}", base.display()))?;
    Ok(base)
}

fn start_daemon_with(parent: &Path, label: &str, config: &str) -> anyhow::Result<Daemon> {
    spawn_daemon(fresh_base(parent, label)?, config)
}

/// The daemon binary to measure: `$NXAUDITD` when set (to compare two
/// builds with the same client), else the `nxauditd` next to this binary.
fn daemon_under_test() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("NXAUDITD").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locate nxaudit")?;
    Ok(exe.with_file_name("nxauditd"))
}

fn spawn_daemon(base: PathBuf, config: &str) -> anyhow::Result<Daemon> {
    let cfg = base.join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "{config}[journal]\nenabled = false\n[auth]\nsource = \"off\"\n[forward]\nenabled = false\n"
        ),
    )?;
    let daemon = daemon_under_test()?;
    let child = Command::new(&daemon)
        .arg("--base-dir")
        .arg(&base)
        .arg("--config")
        .arg(&cfg)
        .env("NXAUDIT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", daemon.display()))?;
    let d = Daemon { child, base };
    let sock = d.base.join("audit.sock");
    let t = Instant::now();
    while UnixStream::connect(&sock).is_err() {
        if t.elapsed() > Duration::from_secs(20) {
            bail!("daemon not ready after 20 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(d)
}

fn event_line(size: usize, client: usize, i: u64) -> String {
    let head = format!("{{\"code\":20101,\"user\":\"bench{client}\",\"message\":\"{i} ");
    let pad = size.saturating_sub(head.len() + 3).max(1);
    format!("{head}{}\"}}\n", "x".repeat(pad))
}

/// When a paced client sends: the offered load over all clients, a shared
/// start, and this client's place among them.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// Events/s over all clients.
    total_rate: f64,
    /// Shared start of every client's schedule.
    start: Instant,
    /// Number of clients sharing the load.
    clients: usize,
}

impl Pace {
    /// `total_rate` events/s over `clients`, starting shortly, once every
    /// client has connected.
    fn soon(total_rate: f64, clients: usize) -> Pace {
        Pace {
            total_rate,
            start: Instant::now() + Duration::from_millis(100),
            clients,
        }
    }

    /// Due time of client `c`'s event `i`. The clients take turns, so the
    /// daemon sees one event every `1/total_rate` as the raw group commit
    /// does, not all clients at the same instant (64 clients each at their
    /// own rate from one start would arrive in bursts of 64).
    fn due(&self, c: usize, i: u64) -> Instant {
        let k = i as f64 * self.clients as f64 + c as f64;
        self.start + Duration::from_secs_f64(k / self.total_rate)
    }
}

/// One client: closed loop with `window` in flight, or paced.
fn client(
    sock: &Path,
    c: usize,
    n: u64,
    size: usize,
    window: usize,
    pace: Option<Pace>,
) -> anyhow::Result<(Vec<u32>, u64)> {
    let s = UnixStream::connect(sock).context("connect")?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    let mut lat = Vec::with_capacity(n as usize);
    let mut refused = 0;
    let mut inflight: VecDeque<Instant> = VecDeque::new();
    let mut sent = 0u64;
    let mut line = String::new();
    if let Some(pace) = pace {
        // Paced: a writer thread sends on schedule, we read replies here.
        let (tx, rx) = std::sync::mpsc::channel::<Instant>();
        let writer = std::thread::spawn(move || -> std::io::Result<()> {
            for i in 0..n {
                let ev = event_line(size, c, i);
                let due = pace.due(c, i);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let _ = tx.send(Instant::now());
                w.write_all(ev.as_bytes())?;
            }
            Ok(())
        });
        for _ in 0..n {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                bail!("connection closed");
            }
            let t0 = rx.recv().context("timing channel")?;
            lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
            if !line.contains("\"ok\":true") {
                refused += 1;
            }
        }
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"))??;
        return Ok((lat, refused));
    }
    let mut buf = Vec::with_capacity(window * (size + 2));
    while lat.len() < n as usize {
        buf.clear();
        while inflight.len() < window && sent < n {
            buf.extend_from_slice(event_line(size, c, sent).as_bytes());
            inflight.push_back(Instant::now());
            sent += 1;
        }
        if !buf.is_empty() {
            w.write_all(&buf)?;
        }
        line.clear();
        if r.read_line(&mut line)? == 0 {
            bail!("connection closed");
        }
        let t0 = inflight.pop_front().context("reply without request")?;
        lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
        if !line.contains("\"ok\":true") {
            refused += 1;
        }
    }
    Ok((lat, refused))
}

/// Joins client threads in order; a panicked one counts as a failed client.
fn join_clients<T>(
    hs: Vec<std::thread::ScopedJoinHandle<'_, anyhow::Result<T>>>,
) -> Vec<anyhow::Result<T>> {
    hs.into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("client panicked")))
        })
        .collect()
}

/// Every client's latencies in one sorted list, and the refusals summed;
/// the first failed client fails the run.
fn merge_clients(results: Vec<anyhow::Result<(Vec<u32>, u64)>>) -> anyhow::Result<(Vec<u32>, u64)> {
    let mut lat = Vec::new();
    let mut refused = 0;
    for r in results {
        let (l, f) = r?;
        lat.extend(l);
        refused += f;
    }
    lat.sort_unstable();
    Ok((lat, refused))
}

fn pct(sorted: &[u32], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    u64::from(sorted[i.min(sorted.len() - 1)])
}

fn run_one(
    args: &Args,
    parent: &Path,
    label: &str,
    rotate: Option<&str>,
    seal: Option<u64>,
) -> anyhow::Result<Results> {
    let d = start_daemon(parent, label, &args.flush, rotate, seal)?;
    let pid = d.child.id();
    let rss_idle = rss_kib(pid, "VmRSS:");
    let sock = d.base.join("audit.sock");
    let clients = args.clients.max(1);
    let per = args.events / clients as u64;
    // Every client connects before the shared schedule begins.
    let pace = args.rate.map(|r| Pace::soon(r as f64, clients));
    let t = Instant::now();
    let results: Vec<anyhow::Result<(Vec<u32>, u64)>> = match pace {
        Some(pace) if !args.client_threads => {
            vec![paced_clients(&sock, clients, per, args.size, pace)]
        }
        _ => std::thread::scope(|s| {
            let hs: Vec<_> = (0..clients)
                .map(|c| {
                    let sock = &sock;
                    s.spawn(move || client(sock, c, per, args.size, args.window, pace))
                })
                .collect();
            join_clients(hs)
        }),
    };
    let secs = t.elapsed().as_secs_f64();
    let (lat, refused) = merge_clients(results)?;
    let rss_peak = rss_kib(pid, "VmHWM:");
    let cpu = cpu_secs(pid);
    let status = status_after(&d.base, std::time::SystemTime::now());
    let stat = |k: &str| writer_stat(&status, k);
    let syncs = stat("syncs");
    let seal_us = stat("seal_us");
    let n = lat.len() as u64;
    Ok(Results {
        label: label.to_string(),
        events: n - refused,
        refused,
        seconds: secs,
        events_per_s: n as f64 / secs,
        mb_per_s: n as f64 * args.size as f64 / secs / 1e6,
        p50_us: pct(&lat, 0.50),
        p99_us: pct(&lat, 0.99),
        p999_us: pct(&lat, 0.999),
        rss_idle_kib: rss_idle,
        rss_peak_kib: rss_peak,
        syncs,
        seals: count_seals(&d.base),
        seal_us,
        cpu_us_per_event: cpu * 1e6 / n.max(1) as f64,
    })
}

/// Runs the raw group commit at `rate` and then `run`, or both at once
/// with `--raw-alongside` (a disk stall then hits both).
fn with_raw<T: Send>(
    args: &Args,
    parent: &Path,
    rate: u64,
    run: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<(Latency, T)> {
    let raw = || raw_group_commit(parent, rate as f64, args.events, args.size);
    if !args.raw_alongside {
        let r = raw()?;
        return Ok((r, run()?));
    }
    let (r, t) = std::thread::scope(|s| {
        let r = s.spawn(raw);
        let t = run();
        let r = r
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("raw group commit panicked")));
        (r, t)
    });
    Ok((r?, t?))
}

/// Runs the subcommand; returns the exit code.
pub fn run(_ctx: &Context, args: &Args) -> anyhow::Result<i32> {
    if let (Some(kind), Some(sock)) = (&args.attacker, &args.attacker_socket) {
        return attacker(kind, sock);
    }
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    if let Some(list) = &args.attack {
        return run_attacks(args, list, &parent);
    }
    let disk = measure_disk(&parent)?;
    let mut raws = Vec::new();
    let mut rsyslog = Vec::new();
    let mut runs = Vec::new();
    // `--raw-socket`: the raw group commit over a socket, and the raw
    // group commit measured beside it.
    let mut sockets: Vec<Latency> = Vec::new();
    let mut socket_raws: Vec<Latency> = Vec::new();
    let seal_secs = match &args.seal_interval {
        Some(t) => Some(
            crate::config::parse_duration(t)
                .filter(|d| d.as_secs() >= 1)
                .with_context(|| format!("invalid --seal-interval {t:?} (at least 1s)"))?
                .as_secs(),
        ),
        None => None,
    };
    if let Some(secs) = seal_secs {
        // A B B A A B …: pairs side by side, and each side goes first in
        // half of them (the run after another one pays for its writeback).
        for pair in 0..args.pairs.max(1) {
            let unsealed = |runs: &mut Vec<Results>| -> anyhow::Result<()> {
                runs.push(run_one(
                    args,
                    &parent,
                    &format!("unsealed#{pair}"),
                    args.rotate_size.as_deref(),
                    None,
                )?);
                Ok(())
            };
            let sealed = |runs: &mut Vec<Results>| -> anyhow::Result<()> {
                runs.push(run_one(
                    args,
                    &parent,
                    &format!("sealed-{secs}s#{pair}"),
                    args.rotate_size.as_deref(),
                    Some(secs),
                )?);
                Ok(())
            };
            if pair % 2 == 0 {
                unsealed(&mut runs)?;
                sealed(&mut runs)?;
            } else {
                sealed(&mut runs)?;
                unsealed(&mut runs)?;
            }
        }
    } else if let (Some(rate), false) = (args.rate, args.compare_rotation) {
        // Raw group commit and daemon in pairs, so a disk stall or a busy
        // neighbour hits one pair, not one side.
        for pair in 0..args.pairs.max(1) {
            let label = format!("run#{pair}");
            let (raw, run) = with_raw(args, &parent, rate, || {
                run_one(args, &parent, &label, args.rotate_size.as_deref(), None)
            })?;
            raws.push(raw);
            runs.push(run);
            if args.raw_socket {
                let clients = args.clients.max(1);
                let pace = Pace::soon(rate as f64, clients);
                let per = args.events / clients as u64;
                let (raw, sock) = with_raw(args, &parent, rate, || {
                    raw_socket(&parent, clients, per, args.size, pace)
                })?;
                socket_raws.push(raw);
                sockets.push(sock);
            }
        }
    } else if args.vs_rsyslog {
        for pair in 0..args.pairs.max(1) {
            runs.push(run_one(
                args,
                &parent,
                &format!("nxauditd#{pair}"),
                args.rotate_size.as_deref(),
                None,
            )?);
            rsyslog.push(rsyslog_run(args, &parent, &pair.to_string())?);
        }
    } else if args.compare_rotation {
        // A B A B: pairs measured side by side, so drift and the disk's
        // occasional stalls hit both sides alike.
        for pair in 0..args.pairs.max(1) {
            runs.push(run_one(
                args,
                &parent,
                &format!("no-rotation#{pair}"),
                None,
                None,
            )?);
            runs.push(run_one(
                args,
                &parent,
                &format!("rotate-5MiB#{pair}"),
                Some("5MiB"),
                None,
            )?);
        }
    } else {
        runs.push(run_one(
            args,
            &parent,
            "run",
            args.rotate_size.as_deref(),
            None,
        )?);
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({"disk": disk, "raw_group_commit": raws, "raw_socket": sockets, "raw_group_commit_beside_socket": socket_raws, "rsyslog": rsyslog, "runs": runs, "clients": args.clients, "size": args.size, "rate": args.rate, "flush": args.flush})
        );
        return Ok(0);
    }
    println!(
        "disk: sequential write {:.1} MB/s; write+fdatasync median {:.0} us ({:.0}/s), p99 {:.0} us",
        disk.seq_write_mb_s, disk.fsync_us, disk.fsync_per_s, disk.fsync_p99_us
    );
    for r in &runs {
        println!(
            "{}: {} clients, {} events of {} B, flush={}{}: {:.0} events/s ({:.2} MB/s), {} refused, {} syncs",
            r.label,
            args.clients,
            r.events + r.refused,
            args.size,
            args.flush,
            args.rate.map(|x| format!(", offered {x}/s")).unwrap_or_default(),
            r.events_per_s,
            r.mb_per_s,
            r.refused,
            r.syncs
        );
        println!(
            "  ack latency p50 {} us, p99 {} us, p999 {} us; RSS idle {} KiB, peak {} KiB; daemon CPU {:.1} us/event",
            r.p50_us, r.p99_us, r.p999_us, r.rss_idle_kib, r.rss_peak_kib, r.cpu_us_per_event
        );
        println!(
            "  ratios: {:.1}% of sequential write rate; {:.1}x the single-fsync rate; p99 = {:.2}x the median fdatasync, {:.2}x the p99 fdatasync",
            100.0 * r.mb_per_s / disk.seq_write_mb_s.max(1e-9),
            r.events_per_s / disk.fsync_per_s.max(1e-9),
            r.p99_us as f64 / disk.fsync_us.max(1.0),
            r.p99_us as f64 / disk.fsync_p99_us.max(1.0)
        );
    }
    if !raws.is_empty() {
        let mut p99 = Vec::new();
        for (raw, r) in raws.iter().zip(&runs) {
            println!(
                "raw group commit on this disk at the same offered load: p50 {} us, p99 {} us, p999 {} us",
                raw.p50_us, raw.p99_us, raw.p999_us
            );
            let ratio = r.p99_us as f64 / raw.p99_us.max(1) as f64;
            println!(
                "  {}: ack p99 = {:.2}x the raw group-commit p99; p50 = {:.2}x",
                r.label,
                ratio,
                r.p50_us as f64 / raw.p50_us.max(1) as f64
            );
            p99.push(ratio);
        }
        println!(
            "ack p99 vs raw group commit, pair by pair: {:.2?}; median ratio {:.2}",
            p99,
            median(p99.clone())
        );
        if !sockets.is_empty() {
            let mut vs_raw = Vec::new();
            for (sock, raw) in sockets.iter().zip(&socket_raws) {
                println!(
                    "raw group commit over a socket (minimal server, same client): p50 {} us, p99 {} us, p999 {} us; \
                     raw group commit {}: p50 {} us, p99 {} us",
                    sock.p50_us,
                    sock.p99_us,
                    sock.p999_us,
                    if args.raw_alongside { "beside it" } else { "before it" },
                    raw.p50_us,
                    raw.p99_us
                );
                vs_raw.push(sock.p99_us as f64 / raw.p99_us.max(1) as f64);
            }
            let daemon_vs_socket: Vec<f64> = runs
                .iter()
                .zip(&sockets)
                .map(|(r, s)| r.p99_us as f64 / s.p99_us.max(1) as f64)
                .collect();
            println!(
                "raw socket p99 vs raw group commit, pair by pair: {:.2?}; median ratio {:.2}",
                vs_raw,
                median(vs_raw.clone())
            );
            println!(
                "ack p99 vs raw socket p99, pair by pair: {:.2?}; median ratio {:.2}",
                daemon_vs_socket,
                median(daemon_vs_socket.clone())
            );
        }
    }
    if !rsyslog.is_empty() {
        let mut ratios = Vec::new();
        for (rs, r) in rsyslog.iter().zip(&runs) {
            println!(
                "rsyslog (private rsyslogd, imuxsock, omfile defaults: no fsync): {} messages in {:.2} s: {:.0} messages/s",
                rs.messages, rs.seconds, rs.per_s
            );
            ratios.push(r.events_per_s / rs.per_s.max(1e-9));
        }
        println!(
            "throughput vs rsyslog, pair by pair: {:.2?}; median ratio {:.2}",
            ratios,
            median(ratios.clone())
        );
    }
    if seal_secs.is_some() {
        let is_sealed = |r: &Results| r.label.starts_with("sealed");
        let pairs: Vec<(&Results, &Results)> = runs
            .chunks(2)
            .filter(|p| p.len() == 2)
            .map(|p| {
                if is_sealed(&p[0]) {
                    (&p[1], &p[0])
                } else {
                    (&p[0], &p[1])
                }
            })
            .collect();
        let tput: Vec<f64> = pairs
            .iter()
            .map(|(off, on)| on.events_per_s / off.events_per_s.max(1e-9))
            .collect();
        let seals: Vec<u64> = pairs.iter().map(|(_, on)| on.seals).collect();
        // The writer is the bottleneck at saturation: the share of its
        // time spent sealing bounds what sealing can cost, free of the
        // run-to-run noise of a shared machine.
        let share: Vec<f64> = pairs
            .iter()
            .map(|(_, on)| 100.0 * on.seal_us as f64 / (on.seconds * 1e6).max(1.0))
            .collect();
        println!(
            "writer time spent sealing, per sealed run: {share:.2?} % of the run ({} us per seal on average)",
            pairs.iter().map(|(_, on)| on.seal_us).sum::<u64>()
                / pairs.iter().map(|(_, on)| on.seals).sum::<u64>().max(1)
        );
        println!(
            "sealing vs none, pair by pair: throughput ratios {tput:.3?} (seals written: {seals:?})"
        );
        if !tput.is_empty() {
            let m = median(tput.clone());
            println!(
                "median throughput with sealing = {:.1}% of without ({:+.1}%)",
                100.0 * m,
                100.0 * (m - 1.0)
            );
        }
    }
    if args.compare_rotation {
        let mut ratios: Vec<f64> = runs
            .chunks(2)
            .filter(|p| p.len() == 2)
            .map(|p| p[1].p99_us as f64 / p[0].p99_us.max(1) as f64)
            .collect();
        let tput: Vec<f64> = runs
            .chunks(2)
            .filter(|p| p.len() == 2)
            .map(|p| p[1].events_per_s / p[0].events_per_s.max(1e-9))
            .collect();
        println!(
            "rotation every 5 MiB vs none, pair by pair: p99 ratios {:.2?}, throughput ratios {:.2?}",
            ratios, tput
        );
        ratios.sort_by(|a, b| a.total_cmp(b));
        if let Some(m) = ratios.get(ratios.len() / 2) {
            println!("median p99 ratio {m:.2}");
        }
    }
    Ok(0)
}

//! `bench --attack`: hostile clients of another uid against a daemon with
//! the default limits, and a granted client's latency meanwhile.

use super::*;

/// Write + fdatasync latencies in `dir`, one every 5 ms until `stop`.
pub(super) fn sync_probe(dir: &Path, stop: &std::sync::atomic::AtomicBool) -> Vec<u32> {
    let p = dir.join("disk-probe-sync");
    let mut lat = Vec::new();
    let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
    else {
        return lat;
    };
    let line = [b'x'; 200];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let t = Instant::now();
        if f.write_all(&line).and_then(|_| f.sync_data()).is_err() {
            break;
        }
        lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = std::fs::remove_file(&p);
    lat
}

/// The attacker process: runs KIND against `sock` until killed.
pub(super) fn attacker(kind: &str, sock: &Path) -> anyhow::Result<i32> {
    let connect = || UnixStream::connect(sock).context("connect");
    let mut threads = Vec::new();
    match kind {
        // The same granted load with nobody attacking: the baseline that
        // the attacks' latencies are compared with in one session.
        "none" => {}
        "hold" => {
            let mut held = Vec::new();
            for _ in 0..300 {
                if let Ok(s) = connect() {
                    held.push(s);
                }
            }
            std::thread::sleep(Duration::from_secs(3600));
        }
        "slow" | "nonreader" | "u85" => {
            for _ in 0..64 {
                let mut s = connect()?;
                let kind = kind.to_string();
                let sock = sock.to_path_buf();
                threads.push(std::thread::spawn(move || {
                    let line = match kind.as_str() {
                        "slow" => format!(
                            "{{\"code\":20101,\"message\":\"{}\"}}\n",
                            "x".repeat(60_000)
                        ),
                        "nonreader" => {
                            format!("{{\"code\":20101,\"message\":\"{}\"}}\n", "y".repeat(150))
                        }
                        _ => format!(
                            "{{\"code\":20101,\"message\":\"{}\"}}\n",
                            "\u{85}".repeat(32_000)
                        ),
                    };
                    if kind == "u85" {
                        // Read replies so the flood is limited only by the daemon.
                        if let Ok(r) = s.try_clone() {
                            std::thread::spawn(move || {
                                let mut r = BufReader::new(r);
                                let mut l = String::new();
                                while r.read_line(&mut l).map(|n| n > 0).unwrap_or(false) {
                                    l.clear();
                                }
                            });
                        }
                    }
                    loop {
                        let ok = if kind == "slow" {
                            line.bytes().all(|b| {
                                std::thread::sleep(Duration::from_secs(1));
                                s.write_all(&[b]).is_ok()
                            })
                        } else {
                            s.write_all(line.as_bytes()).is_ok()
                        };
                        if !ok {
                            // Closed by the daemon: come back, as an attacker would.
                            match UnixStream::connect(&sock) {
                                Ok(n) => s = n,
                                Err(_) => std::thread::sleep(Duration::from_millis(100)),
                            }
                        }
                    }
                }));
            }
        }
        "ids" => {
            let s = connect()?;
            let mut w = s.try_clone()?;
            std::thread::spawn(move || {
                let mut r = BufReader::new(s);
                let mut l = String::new();
                while r.read_line(&mut l).map(|n| n > 0).unwrap_or(false) {
                    l.clear();
                }
            });
            for i in 0u64.. {
                let line = format!("{{\"code\":20101,\"id\":\"{i:0>200}\"}}\n");
                w.write_all(line.as_bytes())?;
            }
        }
        other => bail!("unknown attack {other:?} (none, hold, slow, nonreader, u85, ids)"),
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(0)
}

/// `--attack KIND`: a daemon with the default limits, the attacker as
/// another uid, and a granted client (this process, root) measured meanwhile.
pub(super) fn run_attack(args: &Args, kind: &str, parent: &Path) -> anyhow::Result<AttackRun> {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let grant = if kind == "hold" {
        String::new()
    } else {
        format!(
            "[[clients]]\nuid = {}\ncomponents = [\"Portal\"]\n",
            args.attack_uid
        )
    };
    let d = start_daemon_with(
        parent,
        &format!("attack-{kind}"),
        &format!("[listener]\nmode = \"0666\"\n{grant}"),
    )?;
    std::fs::set_permissions(&d.base, std::fs::Permissions::from_mode(0o755))
        .context("open the bench dir to the attacker")?;
    let pid = d.child.id();
    let sock = d.base.join("audit.sock");
    let exe = std::env::current_exe().context("locate nxaudit")?;
    let mut att = Command::new(exe)
        .args(["bench", "--attacker", kind, "--attacker-socket"])
        .arg(&sock)
        .uid(args.attack_uid)
        .gid(args.attack_uid)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("start the attacker")?;
    // The granted client: 8 clients, 200 events/s each, for attack_secs.
    let per_s = 200u64;
    let n = per_s * args.attack_secs.max(1);
    // The disk itself meanwhile: one write + fdatasync every 5 ms in the
    // same directory. A granted event is durable only after a sync, so
    // this is the floor its latency stands on while the attacker (and
    // anything else on the machine) keeps the disk busy.
    let probe_stop = std::sync::atomic::AtomicBool::new(false);
    let mut probe: Vec<u32> = Vec::new();
    let pace = Pace::soon((per_s * 8) as f64, 8);
    let results: Vec<anyhow::Result<(Vec<u32>, u64)>> = std::thread::scope(|s| {
        let probe_h = s.spawn(|| sync_probe(&d.base, &probe_stop));
        let hs: Vec<_> = (0..8)
            .map(|c| {
                let sock = &sock;
                s.spawn(move || client(sock, c, n, 200, 1, Some(pace)))
            })
            .collect();
        let r = join_clients(hs);
        probe_stop.store(true, std::sync::atomic::Ordering::Relaxed);
        probe = probe_h.join().unwrap_or_default();
        r
    });
    probe.sort_unstable();
    // What the daemon wrote meanwhile (the status file of the last second):
    // a flood's volume is what loads the disk under everybody's syncs.
    let status = status_after(&d.base, std::time::SystemTime::now());
    let wstat = |k: &str| writer_stat(&status, k);
    let (written, rotations, syncs) = (wstat("written"), wstat("rotations"), wstat("syncs"));
    let log_mib = (rotations * 64 + wstat("active_size") / (1 << 20)) as f64;
    let peak = rss_kib(pid, "VmHWM:");
    let cpu = cpu_secs(pid);
    let _ = att.kill();
    let _ = att.wait();
    let (lat, refused) = merge_clients(results)?;
    let out = serde_json::json!({
        "attack": kind,
        "peak_rss_kib": peak,
        "granted_events": lat.len(),
        "granted_refused": refused,
        "granted_p50_us": pct(&lat, 0.5),
        "granted_p99_us": pct(&lat, 0.99),
        "granted_max_us": pct(&lat, 1.0),
        "daemon_cpu_s": cpu,
        "disk_sync_p50_us": pct(&probe, 0.5),
        "disk_sync_p99_us": pct(&probe, 0.99),
        "records_written": written,
        "rotations": rotations,
        "syncs": syncs,
        "log_mib_approx": log_mib,
    });
    if args.json {
        println!("{out}");
    } else {
        println!(
            "attack {kind}: daemon peak RSS {} KiB; granted client: {} events, {} refused, ack p50 {} us, p99 {} us, max {} us",
            peak, lat.len(), refused, pct(&lat, 0.5), pct(&lat, 0.99), pct(&lat, 1.0)
        );
        println!(
            "  disk meanwhile: write + fdatasync p50 {} us, p99 {} us; the daemon wrote {written} records (~{log_mib:.0} MiB, {rotations} rotations, {syncs} syncs)",
            pct(&probe, 0.5),
            pct(&probe, 0.99)
        );
    }
    Ok(AttackRun {
        p50_us: pct(&lat, 0.5),
        p99_us: pct(&lat, 0.99),
        peak_rss_kib: peak,
    })
}

/// What one attack run reports to the summary.
pub(super) struct AttackRun {
    p50_us: u64,
    p99_us: u64,
    peak_rss_kib: u64,
}

/// `--attack A,B,…`: the runs alternate with a run without attacker
/// (`none`) `--pairs` times, so each attack's p99 is compared with the
/// no-attack p99 of the same round on the same (noisy) machine.
pub(super) fn run_attacks(args: &Args, list: &str, parent: &Path) -> anyhow::Result<i32> {
    let mut kinds: Vec<&str> = vec!["none"];
    kinds.extend(
        list.split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty() && *k != "none"),
    );
    let mut runs: Vec<Vec<AttackRun>> = kinds.iter().map(|_| Vec::new()).collect();
    for _ in 0..args.pairs.max(1) {
        for (i, kind) in kinds.iter().enumerate() {
            runs[i].push(run_attack(args, kind, parent)?);
        }
    }
    let med = |v: Vec<f64>| median(v);
    let mut summary = Vec::new();
    for (kind, rs) in kinds.iter().zip(&runs) {
        let ratios: Vec<f64> = rs
            .iter()
            .zip(&runs[0])
            .map(|(r, none)| r.p99_us as f64 / none.p99_us.max(1) as f64)
            .collect();
        let p50 = med(rs.iter().map(|r| r.p50_us as f64).collect());
        let p99 = med(rs.iter().map(|r| r.p99_us as f64).collect());
        let peak = rs.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0);
        if args.json {
            summary.push(serde_json::json!({
                "attack": kind, "runs": rs.len(), "granted_p50_us_median": p50,
                "granted_p99_us_median": p99, "p99_vs_none": ratios,
                "p99_vs_none_median": med(ratios.clone()), "peak_rss_kib_max": peak,
            }));
        } else {
            println!(
                "summary {kind}: {} runs; granted ack p50 median {p50:.0} us, p99 median {p99:.0} us; p99 / same round's no-attack p99 {:.2?}, median {:.2}; daemon peak RSS max {peak} KiB",
                rs.len(),
                ratios,
                med(ratios.clone())
            );
        }
    }
    if args.json {
        println!("{}", serde_json::json!({ "summary": summary }));
    }
    Ok(0)
}

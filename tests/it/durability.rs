//! Durability against the real daemon: kill -9 under load, restart
//! continuity of seq and chain, torn tails, SIGTERM drain, tamper detection.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::util::*;

/// Load from `clients` threads until `stop`; every ack is recorded as
/// (seq → id). Connection errors (the daemon was killed) end a thread.
fn load(
    d: &TestDaemon,
    clients: usize,
    round: usize,
    acked: Arc<Mutex<HashMap<u64, String>>>,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..clients)
        .map(|c| {
            let sock = d.socket();
            let acked = acked.clone();
            let count = count.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let Ok(s) = std::os::unix::net::UnixStream::connect(&sock) else {
                    return;
                };
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // Pipeline 16 at a time.
                    let ids: Vec<String> = (0..16)
                        .map(|k| format!("r{round}-c{c}-{}", i + k))
                        .collect();
                    i += 16;
                    let mut buf = String::new();
                    for id in &ids {
                        buf.push_str(&format!(
                            "{{\"code\":20101,\"user\":\"u\",\"id\":\"{id}\"}}\n"
                        ));
                    }
                    if w.write_all(buf.as_bytes()).is_err() {
                        return;
                    }
                    for id in ids {
                        let mut line = String::new();
                        match r.read_line(&mut line) {
                            Ok(n) if n > 0 => {}
                            _ => return,
                        }
                        let v: serde_json::Value = match serde_json::from_str(&line) {
                            Ok(v) => v,
                            Err(_) => return,
                        };
                        if let Some(seq) = v.get("seq").and_then(|s| s.as_u64()) {
                            acked.lock().unwrap().insert(seq, id);
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect()
}

#[test]
fn kill9_under_load_loses_no_acknowledged_event() {
    let mut d = TestDaemon::start("");
    let acked = Arc::new(Mutex::new(HashMap::new()));
    for round in 0..5 {
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let hs = load(&d, 4, round, acked.clone(), count.clone(), stop.clone());
        wait_for("acks under load", Duration::from_secs(60), || {
            count.load(Ordering::Relaxed) >= 400
        });
        d.kill9();
        stop.store(true, Ordering::Relaxed);
        for h in hs {
            let _ = h.join();
        }
        d.restart();
    }
    let st = d.term();
    assert!(st.success(), "clean exit after SIGTERM: {st}");
    let recs = d.records();
    let mut by_seq: HashMap<u64, usize> = HashMap::new();
    for r in &recs {
        *by_seq.entry(r.seq).or_default() += 1;
    }
    let acked = acked.lock().unwrap();
    assert!(acked.len() >= 2000);
    for (seq, id) in acked.iter() {
        assert_eq!(
            by_seq.get(seq),
            Some(&1),
            "acked seq {seq} present exactly once"
        );
        let r = recs.iter().find(|r| r.seq == *seq).unwrap();
        assert_eq!(
            r.field("id"),
            Some(id.as_str()),
            "seq {seq} holds its event"
        );
    }
    // Each id at most once in the log.
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for r in &recs {
        if let Some(id) = r.field("id") {
            *ids.entry(id).or_default() += 1;
        }
    }
    assert!(ids.values().all(|n| *n == 1), "no id written twice");
    // Gap-free seq and an intact chain.
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1);
    }
    assert_eq!(recs.iter().filter(|r| r.code == 60901).count(), 6);
    assert_ok("verify", &d.cli(&["verify"]));
}

#[test]
fn restart_continues_seq_and_chain() {
    let mut d = TestDaemon::start("");
    d.send(&[ev(50000, ""), ev(50001, "")]);
    assert!(d.term().success());
    d.restart();
    d.send(&[ev(50002, "")]);
    assert!(d.term().success());
    let recs = d.records();
    let codes: Vec<u32> = recs.iter().map(|r| r.code).collect();
    assert_eq!(codes, vec![60901, 50000, 50001, 60902, 60901, 50002, 60902]);
    let seqs: Vec<u64> = recs.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
    assert_eq!(
        recs[0].field("flush"),
        Some("sync"),
        "60901 states the flush policy"
    );
    assert_ok("verify", &d.cli(&["verify"]));
}

#[test]
fn torn_tail_is_cut_and_reported() {
    let mut d = TestDaemon::start("");
    d.send(&[ev(50000, "")]);
    d.kill9();
    let torn = b"2026-11-25T15:08:39.123456Z host [Console|Login|50000|x] half a li";
    std::fs::OpenOptions::new()
        .append(true)
        .open(d.active_log())
        .unwrap()
        .write_all(torn)
        .unwrap();
    d.restart();
    let recs = d.records();
    let rep = recs
        .iter()
        .find(|r| r.code == 60906)
        .expect("60906 written");
    assert_eq!(rep.field("bytes"), Some(torn.len().to_string().as_str()));
    assert_eq!(recs.last().unwrap().code, 60901);
    assert_ok("verify", &d.cli(&["verify"]));
}

#[test]
fn sigterm_drains_in_flight_lines() {
    let mut d = TestDaemon::start("");
    let s = d.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut buf = String::new();
    for i in 0..5000 {
        buf.push_str(&ev(20101, &format!("\"id\":\"t{i}\"")));
        buf.push('\n');
    }
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(buf.as_bytes());
    });
    // Some replies first, so SIGTERM lands mid-pipeline.
    let mut acked = Vec::new();
    let mut line = String::new();
    for _ in 0..100 {
        line.clear();
        r.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        acked.push(v["seq"].as_u64().unwrap());
    }
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let mut refused = 0;
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        match v["seq"].as_u64() {
            Some(seq) => acked.push(seq),
            None => {
                assert_eq!(v["error"], "shutting_down", "{line}");
                refused += 1;
            }
        }
    }
    let _ = writer.join();
    let st = d.term_reap();
    assert!(st.success(), "exit 0 after SIGTERM: {st}");
    let recs = d.records();
    assert_eq!(recs.last().unwrap().code, 60902);
    for seq in &acked {
        assert!(recs.iter().any(|r| r.seq == *seq), "acked {seq} present");
    }
    eprintln!(
        "drain: {} acked, {refused} refused with shutting_down",
        acked.len()
    );
}

#[test]
fn verify_names_the_first_tampered_line() {
    let mut d = TestDaemon::start("");
    d.send(&[ev(50000, r#""user":"alice""#), ev(50001, r#""user":"bob""#)]);
    assert!(d.term().success());
    let p = d.active_log();
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        text.replace(
            "[Console|Login|50000|alice]",
            "[Console|Login|50000|mallory]",
        ),
    )
    .unwrap();
    let out = d.cli(&["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&out.stdout);
    assert!(
        msg.contains("audit.log:2") && msg.contains("chain broken"),
        "{msg}"
    );
    // Deleting a line breaks seq continuity.
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&p, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
    let out = d.cli(&["verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("seq 3 follows 1"));
}

#[test]
fn hmac_chain_needs_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("chain.key");
    std::fs::write(&key, b"secret key material").unwrap();
    let mut d = TestDaemon::start(&format!(
        "[log]\nchain_key_file = {:?}\n",
        key.display().to_string()
    ));
    d.send(&[ev(50000, "")]);
    assert!(d.term().success());
    assert_ok("verify with key", &d.cli(&["verify"]));
    let recs = d.records();
    assert_eq!(recs[0].field("chain"), Some("hmac-sha256"));
    // Without the key the chain does not verify.
    let plain = d.base.join("plain.toml");
    std::fs::write(&plain, test_config("")).unwrap();
    let out = std::process::Command::new(cli_bin())
        .arg("--base-dir")
        .arg(&d.base)
        .arg("--config")
        .arg(&plain)
        .arg("verify")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

//! The tamper suite: an attacker with root on the appliance, who also holds
//! the seal key file as it is now, edits the log the ways that matter, and
//! each edit is caught by a named mechanism: the seals (`verify
//! --seal-key`), the chain and seq continuity, or the high-water mark
//! (60908 at start-up, and `verify` against the mark). The attacker
//! recomputes the hash chain (it is keyless SHA-256 here) so that the chain
//! alone would not notice. The one edit no local mechanism can see is a
//! rewrite after the last seal: shown, with the off-box replica named as
//! what catches it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nxaudit::logset;
use nxaudit::record::{self, Chain, Format, ParsedRecord, GENESIS};

use crate::util::*;

/// A daemon with sealing on, and the verification key `seal init` printed.
struct Sealed {
    d: TestDaemon,
    key: String,
    _dir: tempfile::TempDir,
}

impl Sealed {
    fn start(interval: &str, extra: &str) -> Sealed {
        let dir = tempfile::Builder::new()
            .prefix("nxaudit-tamper-")
            .tempdir()
            .expect("temp dir");
        let base = dir.path();
        let keys = base.join("keys");
        std::fs::create_dir(&keys).expect("keys dir");
        let key_file = keys.join("seal.key");
        let out = std::process::Command::new(cli_bin())
            .arg("--base-dir")
            .arg(base)
            .args(["seal", "init", "--interval", interval, "--key-file"])
            .arg(&key_file)
            .output()
            .expect("run seal init");
        assert_ok("seal init", &out);
        let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(key.starts_with("nxseal1-"), "{key}");
        let compress = if extra.contains("compress") {
            ""
        } else {
            "compress = \"none\"\n"
        };
        let config = format!(
            "[log]\nseal_key_file = \"{}\"\nseal_interval = \"{interval}\"\n{compress}{extra}",
            key_file.display()
        );
        let d = TestDaemon::start_in(base, &config);
        Sealed { d, key, _dir: dir }
    }

    fn verify(&self, extra: &[&str]) -> std::process::Output {
        let mut args = vec!["verify", "--seal-key", &self.key];
        args.extend_from_slice(extra);
        self.d.cli(&args)
    }

    /// Waits until a seal follows every record up to `seq`.
    fn wait_sealed_after(&self, seq: u64) {
        wait_for("a seal", Duration::from_secs(30), || {
            self.d
                .records()
                .iter()
                .any(|r| r.code == 60907 && r.seq > seq)
        });
    }

    fn last_seq(&self) -> u64 {
        self.d.records().last().map_or(0, |r| r.seq)
    }
}

fn text(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_fails(mechanism: &str, out: &std::process::Output, needle: &str) {
    let t = text(out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{mechanism} should have caught it:\n{t}"
    );
    assert!(t.contains(needle), "{mechanism}: expected {needle:?}:\n{t}");
}

/// The plain files of the set, in order, as lines.
fn read_set(dir: &Path) -> Vec<(PathBuf, Vec<String>)> {
    logset::list(dir)
        .expect("list")
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f.path).expect("read plain log file");
            (f.path, text.lines().map(str::to_string).collect())
        })
        .collect()
}

/// The attacker's tool: renumbers seq from the first record on (when
/// `renumber`) and recomputes the whole chain, the seals' `head`/`last`
/// and the rotation records' `previous_h`, then writes the files back
/// (removing files left empty). What it cannot recompute is a seal's MAC.
fn forge(set: Vec<(PathBuf, Vec<String>)>, renumber: bool) {
    let mut prev: Option<String> = None;
    let mut next_seq: Option<u64> = None;
    let chain = Chain::sha256();
    for (path, lines) in set {
        if lines.is_empty() {
            std::fs::remove_file(&path).expect("remove emptied file");
            continue;
        }
        let mut out = String::new();
        for l in lines {
            let rec: ParsedRecord = record::parse_line(&l).expect("parse");
            let seq = if renumber {
                next_seq.unwrap_or(rec.seq)
            } else {
                rec.seq
            };
            next_seq = Some(seq + 1);
            let from = prev
                .clone()
                .unwrap_or_else(|| match rec.field("previous_h") {
                    Some(h) => h.to_string(),
                    None => GENESIS.to_string(),
                });
            let mut body = rec.body.replacen(
                &format!(" | seq={} ", rec.seq),
                &format!(" | seq={seq} "),
                1,
            );
            let set_field = |body: &mut String, key: &str, val: &str| {
                if let Some(old) = rec.field(key) {
                    *body =
                        body.replacen(&format!("{key}=\"{old}\""), &format!("{key}=\"{val}\""), 1);
                }
            };
            match rec.code {
                60907 => {
                    set_field(&mut body, "head", &from);
                    set_field(&mut body, "last", &(seq - 1).to_string());
                }
                60903 => set_field(&mut body, "previous_h", &from),
                _ => {}
            }
            let h = chain.next(&from, &body);
            out.push_str(&record::seal(Format::Text, &body, &h));
            out.push('\n');
            prev = Some(h);
        }
        std::fs::write(&path, out).expect("write forged file");
    }
}

fn user_events(user: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            ev(
                20206,
                &format!("\"user\":\"{user}\",\"message\":\"Role Superadmins is added {i}\""),
            )
        })
        .collect()
}

#[test]
fn seal_mac_catches_a_record_rewritten_before_the_last_seal() {
    let mut s = Sealed::start("1s", "");
    s.d.send(&user_events("alice", 5));
    s.wait_sealed_after(s.last_seq());
    assert!(s.d.term().success());
    assert_ok("verify before the attack", &s.verify(&[]));
    let mut set = read_set(&s.d.log_dir());
    let line = set[0]
        .1
        .iter_mut()
        .find(|l| l.contains("|alice]"))
        .expect("an alice record");
    *line = line.replacen("alice", "mallory", 1);
    forge(set, false);
    // The recomputed chain fools a keyless check; the seal does not.
    let plain = s.d.cli(&["verify"]);
    assert_ok("keyless verify of a recomputed chain", &plain);
    assert!(
        text(&plain).contains("not checked cryptographically"),
        "{}",
        text(&plain)
    );
    assert_fails("the seal MAC", &s.verify(&[]), "MAC does not match");
}

#[test]
fn seal_mac_catches_the_oldest_file_deleted_and_the_new_first_record_rewritten() {
    let mut s = Sealed::start("1s", "");
    for _ in 0..3 {
        s.d.send(&user_events("alice", 3));
        assert_ok("rotate", &s.d.cli(&["rotate"]));
    }
    assert!(s.d.term().success());
    let mut set = read_set(&s.d.log_dir());
    assert!(set.len() >= 3, "{set:?}");
    // Delete the oldest file, drop the 60903 that names it, and make the
    // new first record say something else.
    std::fs::remove_file(&set[0].0).expect("delete oldest");
    set.remove(0);
    let first = set[0]
        .1
        .iter()
        .position(|l| l.contains("|alice]"))
        .expect("an alice record");
    set[0].1.drain(..first);
    set[0].1[0] = set[0].1[0].replacen("alice", "mallory", 1);
    forge(set, false);
    let plain = s.d.cli(&["verify"]);
    assert_ok("keyless verify after the rewrite", &plain);
    assert!(
        text(&plain).contains("oldest kept file"),
        "{}",
        text(&plain)
    );
    // Every rotated file ends with a seal over its chain head.
    assert_fails("the seal MAC", &s.verify(&[]), "MAC does not match");
}

#[test]
fn seals_catch_the_newest_rotated_file_deleted_and_the_rest_renumbered() {
    let mut s = Sealed::start("1s", "");
    for _ in 0..3 {
        s.d.send(&user_events("alice", 3));
        assert_ok("rotate", &s.d.cli(&["rotate"]));
    }
    assert!(s.d.term().success());
    // Deleting it alone breaks seq continuity (the chain check names it).
    let set = read_set(&s.d.log_dir());
    let newest = set.len() - 2;
    let saved = std::fs::read(&set[newest].0).expect("read newest rotated");
    std::fs::remove_file(&set[newest].0).expect("delete newest rotated");
    assert_fails("seq continuity", &s.d.cli(&["verify"]), "follows");
    // Renumbered and rechained to hide the gap: the seals still see it.
    std::fs::write(&set[newest].0, saved).expect("restore");
    let mut set = read_set(&s.d.log_dir());
    let gone = set.remove(newest);
    std::fs::remove_file(&gone.0).expect("delete newest rotated");
    forge(set, true);
    assert_fails("the seal MAC", &s.verify(&[]), "seal at seq");
}

#[test]
fn high_water_mark_catches_the_active_file_deleted() {
    let mut s = Sealed::start("1s", "");
    s.d.send(&user_events("alice", 3));
    assert_ok("rotate", &s.d.cli(&["rotate"]));
    s.d.send(&user_events("alice", 3));
    assert!(s.d.term().success());
    let last = s.last_seq();
    std::fs::remove_file(s.d.active_log()).expect("delete active");
    assert_fails(
        "the high-water mark",
        &s.verify(&[]),
        "before the high-water mark",
    );
    s.d.restart();
    let recs = s.d.records();
    let gap = recs
        .iter()
        .find(|r| r.code == 60908)
        .expect("60908 written at start-up");
    assert_eq!(gap.field("to"), Some(last.to_string().as_str()));
    assert_eq!(gap.seq, last + 1, "seq goes on after the mark");
    assert_fails("the high-water mark (60908)", &s.verify(&[]), "are missing");
}

#[test]
fn chain_catches_the_last_lines_cut_while_the_daemon_runs() {
    let s = Sealed::start("1s", "");
    s.d.send(&user_events("alice", 5));
    s.wait_sealed_after(s.last_seq());
    let active = s.d.active_log();
    let text_before = std::fs::read_to_string(&active).expect("read active");
    let lines: Vec<&str> = text_before.lines().collect();
    let keep = lines.len() - 3;
    let cut = lines[..keep].join("\n") + "\n";
    let cut_seq = s.last_seq();
    std::fs::write(&active, cut).expect("cut the tail");
    // The daemon's next seal chains from what it wrote, not from what is
    // left: the cut shows at once.
    s.wait_sealed_after(cut_seq);
    assert_fails("seq continuity at the next seal", &s.verify(&[]), "follows");
}

#[test]
fn high_water_mark_catches_the_last_lines_cut_while_the_daemon_is_down() {
    let mut s = Sealed::start("1s", "");
    s.d.send(&user_events("alice", 5));
    assert!(s.d.term().success());
    let active = s.d.active_log();
    let all = std::fs::read_to_string(&active).expect("read active");
    let lines: Vec<&str> = all.lines().collect();
    std::fs::write(&active, lines[..lines.len() - 4].join("\n") + "\n").expect("cut");
    assert_fails(
        "the high-water mark",
        &s.verify(&[]),
        "before the high-water mark",
    );
}

#[test]
fn high_water_mark_gives_60908_after_truncate_and_restart_and_seq_is_not_reused() {
    let mut s = Sealed::start("1s", "");
    s.d.send(&user_events("alice", 5));
    assert!(s.d.term().success());
    let before: Vec<u64> = s.d.records().iter().map(|r| r.seq).collect();
    let last = *before.last().expect("records");
    std::fs::write(s.d.active_log(), "").expect("truncate");
    s.d.restart();
    s.d.send(&user_events("bob", 2));
    let recs = s.d.records();
    let gap = recs
        .iter()
        .find(|r| r.code == 60908)
        .expect("60908 written");
    assert_eq!(gap.field("from"), Some("1"));
    assert_eq!(gap.field("to"), Some(last.to_string().as_str()));
    assert!(gap.field("expected_h").is_some());
    assert!(
        recs.iter().all(|r| r.seq > last),
        "no seq at or below the mark is used again: {:?}",
        recs.iter().map(|r| r.seq).collect::<Vec<_>>()
    );
    assert_fails(
        "the high-water mark (60908)",
        &s.verify(&[]),
        &format!("seq 1 to {last} are missing"),
    );
}

#[test]
fn documented_limit_a_rewrite_after_the_last_seal_passes_locally() {
    // One-hour epochs: after the rotation seal, nothing seals the records
    // that follow until the next interval, rotation or clean stop.
    let mut s = Sealed::start("1h", "");
    s.d.send(&user_events("alice", 2));
    assert_ok("rotate", &s.d.cli(&["rotate"]));
    s.d.send(&user_events("alice", 3));
    // The attacker stops the daemon hard (no closing seal) and rewrites an
    // unsealed record, recomputing the chain after it.
    s.d.kill9();
    let mut set = read_set(&s.d.log_dir());
    let active = set.last_mut().expect("active");
    let line = active
        .1
        .iter_mut()
        .rev()
        .find(|l| l.contains("|alice]"))
        .expect("alice");
    *line = line.replacen("alice", "mallory", 1);
    forge(set, false);
    // LIMIT: nothing on the appliance can tell. Only the off-box replica
    // (the collector's copy, `verify --replica --against`) catches this
    // once the records were forwarded.
    let out = s.verify(&[]);
    assert_ok(
        "verify --seal-key passes a rewrite after the last seal",
        &out,
    );
    assert!(
        text(&out).contains("records after the last seal"),
        "the unsealed part is reported: {}",
        text(&out)
    );
}

#[test]
fn verify_with_the_seal_key_beside_a_daemon_rotating_and_compressing_under_load() {
    let s = Sealed::start(
        "1s",
        "compress = \"zstd\"\nflush = \"none\"\nrotate_size = \"128KiB\"\nmax_files = 0\nmax_total_bytes = 0\n\
         min_free_bytes = 0\n",
    );
    let stop = AtomicBool::new(false);
    let dir = s.d.log_dir();
    let rotations = || {
        logset::list(&dir)
            .map(|fs| fs.iter().filter_map(|f| f.first_seq).max().unwrap_or(0))
            .unwrap_or(0)
    };
    std::thread::scope(|sc| {
        let loader = sc.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let lines: Vec<String> = (0..300)
                    .map(|i| ev(20101, &format!("\"user\":\"load\",\"message\":\"event {n}-{i} padded to make lines longer\"")))
                    .collect();
                s.d.send(&lines);
                n += 1;
            }
        });
        for run in 0..20 {
            let before = rotations();
            wait_for("a rotation", Duration::from_secs(60), || {
                rotations() > before
            });
            let out = s.verify(&["--json"]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|_| panic!("run {run}: {}", text(&out)));
            assert!(
                out.status.success() && v["ok"] == true && v["seal"]["checked"] == true,
                "run {run}: {}",
                text(&out)
            );
            assert!(v["seal"]["seals"].as_u64() > Some(0), "run {run}: {v}");
        }
        stop.store(true, Ordering::Relaxed);
        let _ = loader.join();
    });
}

/// The collector's copy carries the seals too: a copy edited before its
/// last seal (chain recomputed, as on the appliance) passes a keyless
/// `verify --replica`, and `verify --replica --seal-key` names the seal.
#[test]
fn seal_mac_catches_a_replica_rewritten_before_its_last_seal() {
    let mut s = Sealed::start("1s", "");
    s.d.send(&user_events("alice", 5));
    s.wait_sealed_after(s.last_seq());
    assert!(s.d.term().success());
    let copy = s.d.state_dir().join("replica.log");
    let mut lines: Vec<String> = read_set(&s.d.log_dir())
        .into_iter()
        .flat_map(|(_, l)| l)
        .collect();
    std::fs::write(&copy, lines.join("\n") + "\n").expect("write copy");
    let copy_arg = copy.to_str().expect("utf-8 path");
    let ok = s.verify(&["--replica", copy_arg]);
    assert_ok("the faithful copy with the seal key", &ok);
    assert!(
        text(&ok).contains("checked with the verification key"),
        "{}",
        text(&ok)
    );
    let line = lines
        .iter_mut()
        .find(|l| l.contains("|alice]"))
        .expect("an alice record");
    *line = line.replacen("alice", "mallory", 1);
    forge(vec![(copy.clone(), lines)], false);
    let plain = s.d.cli(&["verify", "--replica", copy_arg]);
    assert_ok("keyless verify of the copy's recomputed chain", &plain);
    assert!(text(&plain).contains("structure only"), "{}", text(&plain));
    assert_fails(
        "the seal MAC on the replica",
        &s.verify(&["--replica", copy_arg]),
        "MAC does not match",
    );
}

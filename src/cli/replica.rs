//! `nxaudit verify --replica PATH [--against DIR]`: runs [`crate::verify::replica`]
//! over a collector's copy (and the appliance's log set) and prints the
//! verdict. Exit 0 when it verifies (and matches); 1 when it does not; 2
//! when it could not be verified (missing, empty, unreadable).

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::record::Chain;
use crate::seal::{SealError, SealReport, VerifyKey};
use crate::verify::replica::{self, Comparison, ReplicaReport};

/// Runs the check; returns the exit code.
pub fn run(
    path: &Path,
    against: Option<&Path>,
    chain_key: &Path,
    seal_key: Option<&VerifyKey>,
    json: bool,
) -> anyhow::Result<i32> {
    let chain = Chain::from_key_file(chain_key)
        .with_context(|| format!("read chain key {}", chain_key.display()))?;
    let rep = match replica::verify_replica(path, &chain) {
        Ok(r) => r,
        Err(e) => return Ok(cannot(json, &e.to_string())),
    };
    let seals = replica::check_replica_seals(&rep, seal_key);
    let cmp = match against {
        Some(dir) => match replica::compare_with_log(&rep, dir) {
            Ok(c) => Some((dir.to_path_buf(), c)),
            Err(e) => return Ok(cannot(json, &e.to_string())),
        },
        None => None,
    };
    let ok = rep.ok() && seals.is_ok() && cmp.as_ref().map_or(true, |(_, c)| c.ok());
    if json {
        let mut v = serde_json::json!({ "ok": ok, "replica": rep });
        v["seals"] = match &seals {
            Ok(r) => serde_json::json!(r),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        if let Some((dir, c)) = &cmp {
            v["against"] = serde_json::json!({ "dir": dir, "comparison": c });
        }
        println!("{v}");
    } else {
        print_report(&rep, cmp.as_ref());
        print_seals(&seals);
    }
    Ok(if ok { 0 } else { 1 })
}

fn cannot(json: bool, e: &str) -> i32 {
    if json {
        println!(
            "{}",
            serde_json::json!({ "ok": false, "failed": false, "error": e })
        );
    } else {
        eprintln!("error: cannot verify: {e}");
    }
    2
}

fn print_report(rep: &ReplicaReport, cmp: Option<&(PathBuf, Comparison)>) {
    let p = rep.path.display();
    let dups = format!(
        "{} duplicates (identical, at-least-once delivery)",
        rep.duplicates
    );
    if rep.ok() {
        println!(
            "OK: replica {p}: {} records ({} lines), seq {}..{}, {dups}, chain intact, {}",
            rep.records, rep.lines, rep.first_seq, rep.last_seq, rep.anchor
        );
    } else {
        println!(
            "FAILED: replica {p}: {} defects ({} records, seq {}..{}, {} missing, {} differing duplicates, {dups})",
            rep.defect_count,
            rep.records,
            rep.first_seq,
            rep.last_seq,
            rep.missing,
            rep.differing_duplicates
        );
        for d in &rep.defects {
            println!("  {d}");
        }
    }
    if rep.unverified_tail > 0 {
        eprintln!(
            "note: the last {} bytes of {p} are not a complete line yet (a write in progress); they were not verified",
            rep.unverified_tail
        );
    }
    let Some((dir, c)) = cmp else { return };
    let dir = dir.display();
    let context = format!(
        "{} identical; {} before the replica starts; {} not forwarded yet; {} only on the replica (older than the appliance's oldest kept record)",
        c.identical, c.before_replica, c.not_yet_forwarded, c.only_on_replica_retired
    );
    if c.ok() {
        println!(
            "OK: replica matches {dir} (seq {}..{}): {context}",
            c.local_first_seq, c.local_last_seq
        );
        return;
    }
    println!(
        "FAILED: replica and {dir} (seq {}..{}) differ: {context}",
        c.local_first_seq, c.local_last_seq
    );
    if c.differing > 0 {
        println!("  {} records differ:", c.differing);
        for d in &c.differences {
            println!(
                "    seq {}: {}:{} differs from replica line {}",
                d.seq,
                d.file.display(),
                d.local_line_no,
                d.replica_line_no
            );
        }
    }
    if !c.missing_locally.is_empty() {
        println!(
            "  {} records on the replica are missing from {dir}: seq {}",
            c.missing_locally.count, c.missing_locally
        );
    }
    if !c.missing_on_replica.is_empty() {
        println!(
            "  {} records of {dir} are missing from the replica: seq {}",
            c.missing_on_replica.count, c.missing_on_replica
        );
    }
    if c.local_duplicates > 0 {
        println!("  {} seqs appear twice in {dir}", c.local_duplicates);
    }
    if c.local_malformed > 0 {
        println!("  {} lines of {dir} are not records:", c.local_malformed);
        for m in &c.local_malformed_lines {
            println!("    {}:{}", m.file.display(), m.line_no);
        }
    }
}

fn print_seals(seals: &Result<SealReport, SealError>) {
    match seals {
        Err(e) => println!("FAILED: replica seals: {e}"),
        Ok(r) if r.seals == 0 => println!("seals: none in the replica"),
        Ok(r) => {
            let how = if r.checked {
                "MACs, epochs and time windows checked with the verification key"
            } else {
                "structure only: give --seal-key to check them cryptographically"
            };
            let last = r
                .last
                .as_ref()
                .map(|l| format!(", last seal {}.{} at seq {}", l.epoch, l.sub, l.seq))
                .unwrap_or_default();
            println!(
                "seals: {} in the replica ({how}){last}; {} records after the last seal",
                r.seals, r.unsealed_records
            );
        }
    }
}

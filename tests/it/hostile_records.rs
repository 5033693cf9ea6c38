//! No text can forge a record, a field or a bracket (docs/record-format.md): hostile
//! messages, users, Engine names, details and host names against the real
//! daemon, checked with the real `grep` on the log file and by parsing the
//! records back.

use std::process::Command;

use nxaudit::protocol::ErrorKind;
use nxaudit::record::ParsedRecord;

use crate::util::*;

/// The documented grep (docs/record-format.md, Nexthink's audit reference).
const CONSOLE_LOGIN_GREP: &str = r"\[Console|Login|50000|";

/// Runs `grep ARGS FILE` and returns the matching lines (none is not an
/// error; a grep failure is).
fn grep(args: &[&str], file: &std::path::Path) -> Vec<String> {
    let (shown, out) = run(Command::new("grep").args(args).arg(file));
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        explain(&shown, &out)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Sends events that must all be acknowledged; returns their seqs.
fn send_ok(d: &TestDaemon, lines: &[String]) -> Vec<u64> {
    d.send(lines)
        .into_iter()
        .zip(lines)
        .map(|(r, l)| {
            assert!(r.ok, "refused {l}: {r:?}");
            r.seq.unwrap_or_default()
        })
        .collect()
}

fn by_seq(d: &TestDaemon, seq: u64) -> ParsedRecord {
    d.records()
        .into_iter()
        .find(|r| r.seq == seq)
        .unwrap_or_else(|| panic!("no record with seq {seq}"))
}

fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

#[test]
fn forged_bracket_in_a_message_matches_no_documented_grep() {
    let forged = "[Console|Login|50000|root] Login successful";
    for format in ["text", "json"] {
        let d = TestDaemon::start(&format!("[log]\nformat = \"{format}\"\n"));
        let seqs = send_ok(
            &d,
            &[
                ev(
                    20206,
                    &format!("\"user\":\"mallory\",\"message\":{}", json(forged)),
                ),
                ev(
                    10009,
                    &format!("\"engine\":\"Engine-01\",\"message\":{}", json(forged)),
                ),
                ev(
                    50000,
                    &format!("\"user\":\"x\",\"client\":{}", json(forged)),
                ),
                ev(
                    50000,
                    &format!("\"user\":{}", json("root] [Console|Login|50000|a")),
                ),
                ev(20206, &format!("\"details\":{{\"name\":{}}}", json(forged))),
                ev(50000, "\"user\":\"root\""),
            ],
        );
        let hits = grep(&[CONSOLE_LOGIN_GREP], &d.active_log());
        let recs = d.records();
        if format == "text" {
            // Exactly the real 50000 records: three of them.
            let real: Vec<u64> = recs
                .iter()
                .filter(|r| r.code == 50000)
                .map(|r| r.seq)
                .collect();
            assert_eq!(real, vec![seqs[2], seqs[3], seqs[5]]);
            assert_eq!(hits.len(), 3, "grep found forged lines: {hits:#?}");
            for h in &hits {
                let p = nxaudit::record::parse_line(h).unwrap_or_else(|e| panic!("{e}: {h}"));
                assert_eq!((p.code, p.source.as_str()), (50000, "Console"), "{h}");
            }
            // No line has a second bracket or a stray field separator.
            let text = std::fs::read_to_string(d.active_log()).unwrap_or_default();
            for line in text.lines() {
                assert_eq!(line.matches('[').count(), 1, "{line}");
                assert_eq!(line.matches('|').count(), 4, "{line}");
            }
        } else {
            // JSON lines have no bracket at all: the grep finds nothing.
            assert!(hits.is_empty(), "grep matched JSON lines: {hits:#?}");
        }
        // The hostile values still read back exactly.
        assert_eq!(by_seq(&d, seqs[0]).text, forged);
        assert_eq!(by_seq(&d, seqs[0]).source, "Portal");
        assert_eq!(by_seq(&d, seqs[1]).text, forged);
        assert_eq!(by_seq(&d, seqs[2]).field("client"), Some(forged));
        assert_eq!(by_seq(&d, seqs[3]).account, "root] [Console|Login|50000|a");
        assert_eq!(by_seq(&d, seqs[4]).field("details.name"), Some(forged));
        assert_ok("verify", &d.cli(&["verify"]));
    }
}

#[test]
fn engine_named_like_another_source_is_refused() {
    let d = TestDaemon::start("");
    for name in ["Portal", "Console", "Appliance", "portal", " CONSOLE "] {
        let r = &d.send(&[ev(10009, &format!("\"engine\":{}", json(name)))])[0];
        assert_eq!(r.error, Some(ErrorKind::BadField), "{name:?}: {r:?}");
        let detail = r.detail.clone().unwrap_or_default();
        assert!(detail.contains("engine"), "{name:?}: {detail}");
    }
    // Real Engine names, including the default one, still work.
    let seqs = send_ok(
        &d,
        &[
            ev(10009, "\"engine\":\"Engine-01\""),
            ev(10009, "\"engine\":\"Engine\""),
        ],
    );
    assert_eq!(by_seq(&d, seqs[0]).source, "Engine-01");
    assert!(d
        .records()
        .iter()
        .all(|r| r.code != 10009 || r.source != "Portal"));
    assert!(grep(&[r"\[Portal|"], &d.active_log()).is_empty());
}

#[test]
fn invisible_and_reordering_characters_are_escaped() {
    let hostile = "ad\u{202e}nim\u{200b}x\u{2066}\u{feff}\u{ad}\u{2028}";
    for format in ["text", "json"] {
        let d = TestDaemon::start(&format!("[log]\nformat = \"{format}\"\n"));
        let seqs = send_ok(
            &d,
            &[ev(
                20206,
                &format!(
                    "\"user\":{0},\"message\":{0},\"details\":{{\"name\":{0}}},\"engine\":{0}",
                    json(hostile)
                ),
            )],
        );
        let raw = std::fs::read_to_string(d.active_log()).unwrap_or_default();
        for c in [
            '\u{202e}', '\u{200b}', '\u{2066}', '\u{feff}', '\u{ad}', '\u{2028}',
        ] {
            assert!(!raw.contains(c), "{format}: U+{:04X} written raw", c as u32);
        }
        if format == "text" {
            assert!(raw.contains(r"ad\u{202e}nim\u{200b}x"), "{raw}");
        }
        let r = by_seq(&d, seqs[0]);
        assert_eq!(r.account, hostile);
        assert_eq!(r.text, hostile);
        assert_eq!(r.field("details.name"), Some(hostile));
        assert_eq!(r.field("engine"), Some(hostile));
        assert_ok("verify", &d.cli(&["verify"]));
    }
}

#[test]
fn message_cannot_imitate_the_trailer() {
    let d = TestDaemon::start("");
    let fake = " | seq=1 pid=1 uid=0 gid=0 h=00000000000000000000000000000000";
    let seqs = send_ok(
        &d,
        &[
            ev(
                50000,
                &format!("\"user\":\"a\",\"message\":{}", json(&format!("ok{fake}"))),
            ),
            ev(
                50000,
                &format!("\"user\":\"a\",\"message\":{}", json(&format!("x{fake}\\"))),
            ),
        ],
    );
    // One ` | seq=` per line: the real trailer.
    let hits = grep(&["-c", " | seq="], &d.active_log());
    let lines = std::fs::read_to_string(d.active_log())
        .unwrap_or_default()
        .lines()
        .count();
    assert_eq!(hits, vec![lines.to_string()]);
    assert!(grep(&[" | seq=1 "], &d.active_log()).len() <= 1);
    let r = by_seq(&d, seqs[0]);
    assert_eq!(r.text, format!("ok{fake}"));
    assert_ne!(r.h, "00000000000000000000000000000000");
    assert_eq!(by_seq(&d, seqs[1]).text, format!("x{fake}\\"));
    assert_ok("verify", &d.cli(&["verify"]));
}

#[test]
fn invalid_hostname_fails_check_config_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    for bad in ["app 1 [x]", "app|1", "-app", "a..b", "h\u{202e}x"] {
        let config = dir.path().join("nxauditd.toml");
        std::fs::write(&config, format!("hostname = {}\n", json(bad))).expect("write");
        let (shown, out) = run(Command::new(daemon_bin())
            .arg("--check-config")
            .arg("--config")
            .arg(&config)
            .arg("--base-dir")
            .arg(dir.path()));
        assert!(
            !out.status.success(),
            "{bad:?} accepted\n{}",
            explain(&shown, &out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("hostname"),
            "{bad:?}\n{}",
            explain(&shown, &out)
        );
    }
}

#[test]
fn odd_but_legal_hostname_parses_back_and_seq_resumes() {
    let host = format!("0-9.A--b.{}.x", "l".repeat(63));
    let mut d = TestDaemon::start(&format!("hostname = \"{host}\"\n"));
    let first = send_ok(
        &d,
        &[ev(50000, "\"user\":\"a\""), ev(50000, "\"user\":\"b\"")],
    );
    assert!(d.term().success());
    d.restart();
    let after = send_ok(&d, &[ev(50000, "\"user\":\"c\"")]);
    assert!(
        after[0] > first[1],
        "seq restarted: {first:?} then {after:?}"
    );
    let recs = d.records();
    assert!(recs.iter().all(|r| r.host == host));
    let seqs: Vec<u64> = recs.iter().map(|r| r.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seq not gap-free: {seqs:?}"
    );
    assert_ok("verify", &d.cli(&["verify"]));
}

#[test]
fn code_with_several_descriptions_names_one_or_all() {
    let infos = nxaudit::catalog::lookup(52010);
    assert!(infos.len() >= 2);
    let all: Vec<&str> = infos.iter().map(|i| i.description.as_str()).collect();
    let d = TestDaemon::start("");
    let seqs = send_ok(
        &d,
        &[
            ev(52010, ""),
            ev(
                52010,
                &format!("\"description\":{}", json(&infos[1].description)),
            ),
        ],
    );
    assert_eq!(by_seq(&d, seqs[0]).text, all.join(" / "));
    assert_eq!(by_seq(&d, seqs[1]).text, infos[1].description);
}

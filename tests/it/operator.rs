//! The operator's day: the CLI behaves like the tools operators know
//! (`tail -n` across rotations, journalctl's time words, `codes CODE`,
//! a status that tells the truth after a stop or a kill, error messages
//! that say each thing once), and the Prometheus textfile.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use crate::util::{assert_ok, cli_bin, daemon_bin, ev, explain, run, wait_for, TestDaemon};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn send_ok(d: &TestDaemon, lines: &[String]) {
    for r in d.send(lines) {
        assert!(r.ok, "refused: {r:?}");
    }
}

fn status_json(d: &TestDaemon) -> serde_json::Value {
    let o = d.cli(&["status", "--json"]);
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", explain("status --json", &o)))
}

#[test]
fn tail_n_spans_rotations_and_compressed_files() {
    let d = TestDaemon::start("");
    let lines: Vec<String> = (0..5)
        .map(|i| ev(20101, &format!("\"user\":\"u{i}\"")))
        .collect();
    send_ok(&d, &lines);
    assert_ok("rotate", &d.cli(&["rotate"]));
    // The rotated file is compressed in the background: wait for the .zst,
    // so tail has to read a compressed file.
    wait_for("rotated file compressed", Duration::from_secs(20), || {
        nxaudit::logset::list(&d.log_dir())
            .unwrap()
            .iter()
            .any(|f| f.compression != nxaudit::logset::Compression::Plain)
    });
    let all: Vec<u64> = d.records().iter().map(|r| r.seq).collect();
    for n in [3usize, 4, 7] {
        let o = d.cli(&["tail", "-n", &n.to_string()]);
        assert_ok("tail -n", &o);
        let seqs: Vec<u64> = stdout(&o)
            .lines()
            .map(|l| nxaudit::record::parse_line(l).expect("a record").seq)
            .collect();
        assert_eq!(seqs, all[all.len() - n..], "tail -n {n}:\n{}", stdout(&o));
    }
    // Filtered: the last 3 of the 5 user events, all in the rotated file.
    let o = d.cli(&["tail", "-n", "3", "--code", "20101"]);
    assert_ok("tail --code", &o);
    let users: Vec<String> = stdout(&o)
        .lines()
        .map(|l| nxaudit::record::parse_line(l).unwrap().account)
        .collect();
    assert_eq!(users, ["u2", "u3", "u4"], "{}", stdout(&o));
}

#[test]
fn query_takes_time_words_and_warns_on_an_empty_window() {
    let d = TestDaemon::start("");
    send_ok(&d, &[ev(20101, "\"user\":\"wordy\"")]);
    for args in [
        &["--since", "today"][..],
        &["--since", "yesterday", "--until", "tomorrow"],
        &["--since", "-1h"],
        &["--since", "1h ago", "--until", "now"],
    ] {
        let mut a = vec!["query", "--user", "wordy"];
        a.extend_from_slice(args);
        let o = d.cli(&a);
        assert_ok(&format!("{a:?}"), &o);
        assert_eq!(
            stdout(&o).lines().count(),
            1,
            "{}",
            explain(&format!("{a:?}"), &o)
        );
        assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
    }
    let o = d.cli(&["query", "--since", "2h", "--until", "3h"]);
    assert_ok("empty window", &o);
    assert!(stdout(&o).is_empty());
    assert!(
        stderr(&o).contains("empty window"),
        "{}",
        explain("query --since 2h --until 3h", &o)
    );
}

#[test]
fn codes_code_prints_that_code() {
    let (shown, o) = run(Command::new(cli_bin()).args(["codes", "50000"]));
    assert!(o.status.success(), "{}", explain(&shown, &o));
    let text = stdout(&o);
    assert!(
        text.contains("code:         50000"),
        "{}",
        explain(&shown, &o)
    );
    assert!(
        text.contains("[Console|Login|50000|{account}] Login successful"),
        "{text}"
    );
    assert!(!text.contains("50001"), "only that code: {text}");
    let (shown, o) = run(Command::new(cli_bin()).args(["codes", "59999"]));
    assert_eq!(o.status.code(), Some(1), "{}", explain(&shown, &o));
    assert!(
        stderr(&o).contains("59999 is not in the catalog"),
        "{}",
        explain(&shown, &o)
    );
}

/// A daemon with the syslog intake on (its own socket under the base dir),
/// so there is a source whose state the status must get right.
const WITH_SOURCE: &str = "[auth]\nsource = \"rsyslog\"\naccounts = []\n";

#[test]
fn status_after_sigterm_says_stopped_with_the_final_seq() {
    let mut d = TestDaemon::start(WITH_SOURCE);
    send_ok(
        &d,
        &[ev(20101, "\"user\":\"a\""), ev(20101, "\"user\":\"b\"")],
    );
    wait_for(
        "status shows the source running",
        Duration::from_secs(20),
        || {
            status_json(&d)
                .pointer("/syslog_intake/state")
                .and_then(|s| s.as_str())
                == Some("listening")
        },
    );
    let o = d.cli(&["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", explain("status", &o));
    assert!(stdout(&o).contains("running (pid"), "{}", stdout(&o));
    assert!(d.term().success());
    let last = d.records().last().expect("records").clone();
    assert_eq!(last.code, 60902, "the stop record is last");
    let o = d.cli(&["status"]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(3), "{}", explain("status", &o));
    assert!(text.contains("stopped at "), "{text}");
    assert!(
        !text.contains("running"),
        "nothing runs after a stop:\n{text}"
    );
    assert!(
        !text.contains('{') && !text.contains('}'),
        "no raw JSON:\n{text}"
    );
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("last seq")
            && l.trim_end().ends_with(&format!(" {}", last.seq))),
        "last seq {} shown:\n{text}",
        last.seq
    );
    assert!(
        text.contains(" B") || text.contains("iB"),
        "human sizes:\n{text}"
    );
    let j = status_json(&d);
    assert_eq!(j["state"], "stopped");
    assert_eq!(j["running"], false);
    assert_eq!(j["writer"]["last_seq"], last.seq);
    assert_eq!(j["syslog_intake"]["state"], "stopped");
}

#[test]
fn status_after_kill9_says_it_did_not_stop_cleanly() {
    let mut d = TestDaemon::start(WITH_SOURCE);
    send_ok(&d, &[ev(20101, "\"user\":\"a\"")]);
    wait_for(
        "status shows the source running",
        Duration::from_secs(20),
        || {
            status_json(&d)
                .pointer("/syslog_intake/state")
                .and_then(|s| s.as_str())
                == Some("listening")
        },
    );
    d.kill9();
    let o = d.cli(&["status"]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(3), "{}", explain("status", &o));
    assert!(text.contains("did not stop cleanly"), "{text}");
    assert!(
        text.contains("not running (was listening)"),
        "the source is not shown running:\n{text}"
    );
    assert!(!text.contains("running (pid"), "{text}");
}

#[test]
fn error_messages_say_each_cause_once() {
    let missing = "/nonexistent/nxauditd.toml";
    for bin in [daemon_bin(), cli_bin()] {
        let mut c = Command::new(bin);
        c.args(["--config", missing]);
        if bin == daemon_bin() {
            c.arg("--check-config");
        } else {
            c.arg("status");
        }
        let (shown, o) = run(&mut c);
        assert!(!o.status.success(), "{}", explain(&shown, &o));
        let err = stderr(&o);
        assert_eq!(
            err.matches("No such file or directory").count(),
            1,
            "{}",
            explain(&shown, &o)
        );
        assert!(
            err.contains(missing),
            "names the file: {}",
            explain(&shown, &o)
        );
        assert_eq!(err.lines().count(), 1, "one line: {}", explain(&shown, &o));
    }
}

#[test]
fn check_config_says_what_it_checked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.toml");
    std::fs::write(&file, "[log]\nmax_files = 3\n").unwrap();
    let (shown, o) = run(Command::new(daemon_bin())
        .arg("--check-config")
        .arg("--config")
        .arg(&file));
    assert!(o.status.success(), "{}", explain(&shown, &o));
    assert_eq!(
        stdout(&o).trim(),
        format!("configuration OK: {}", file.display())
    );
    let (shown, o) = run(Command::new(daemon_bin())
        .arg("--check-config")
        .arg("--base-dir")
        .arg(dir.path()));
    assert!(o.status.success(), "{}", explain(&shown, &o));
    assert!(
        stdout(&o).starts_with("configuration OK: built-in defaults"),
        "{}",
        explain(&shown, &o)
    );
}

/// Values the type of their key refuses, each with the key the message
/// must name.
const BAD_VALUES: &[(&str, &str)] = &[
    ("[listener]\nmode = \"0x660\"\n", "listener.mode"),
    ("[listener]\nmode = 660\n", "listener.mode"),
    ("[log]\nmode = \"rw-r-----\"\n", "log.mode"),
    ("[log]\nmode = \"017777\"\n", "log.mode"),
    (
        "[[clients]]\nuid = 5\ncomponents = [\"Portl\"]\n",
        "clients[0].components",
    ),
    (
        "[forward]\ncomponents = [\"Engine\", \"Nope\"]\n",
        "forward.components",
    ),
    ("[api]\nrole = \"portl\"\n", "api.role"),
    (
        "[api]\njwt_algorithms = [\"RS256\", \"none\"]\n",
        "api.jwt_algorithms",
    ),
    (
        "[api]\njwt_algorithms = [\"RS256\", \"HS256\"]\n",
        "api.jwt_algorithms",
    ),
    ("[api]\njwt_algorithms = []\n", "api.jwt_algorithms"),
    ("[api]\nrequest_timeout = \"0s\"\n", "api.request_timeout"),
    ("[api]\nmax_connections = 0\n", "api.max_connections"),
    (
        "[listener]\nidle_timeout = \"5 fortnights\"\n",
        "listener.idle_timeout",
    ),
    ("[log]\nrotate_size = \"lots\"\n", "log.rotate_size"),
    ("[log]\ncompress = \"lz4\"\n", "log.compress"),
];

#[test]
fn check_config_refuses_each_bad_value_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    for (text, key) in BAD_VALUES {
        std::fs::write(&file, text).unwrap();
        let (shown, o) = run(Command::new(daemon_bin())
            .arg("--check-config")
            .arg("--config")
            .arg(&file)
            .arg("--base-dir")
            .arg(dir.path()));
        assert!(
            !o.status.success(),
            "accepted {text:?}\n{}",
            explain(&shown, &o)
        );
        assert!(
            stderr(&o).contains(key),
            "{text:?}: message does not name {key}\n{}",
            explain(&shown, &o)
        );
    }
}

#[test]
fn serve_refuses_a_bad_role_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[api]\nrole = \"portl\"\n").unwrap();
    let (shown, o) = run(Command::new(cli_bin())
        .arg("--config")
        .arg(&file)
        .arg("--base-dir")
        .arg(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"]));
    assert!(!o.status.success(), "{}", explain(&shown, &o));
    assert!(stderr(&o).contains("api.role"), "{}", explain(&shown, &o));
}

#[test]
fn version_names_each_binary() {
    for (bin, name) in [(daemon_bin(), "nxauditd"), (cli_bin(), "nxaudit")] {
        let (shown, o) = run(Command::new(bin).arg("--version"));
        assert!(o.status.success(), "{}", explain(&shown, &o));
        assert_eq!(
            stdout(&o).trim(),
            format!("{name} {}", env!("CARGO_PKG_VERSION"))
        );
    }
}

/// One sample: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// One parsed metric family of the text exposition format.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    samples: Vec<Sample>,
}

/// A strict parser of the Prometheus text format (0.0.4) as the textfile
/// collector reads it: `# HELP` then `# TYPE` before a family's samples,
/// valid names, samples only of declared families (histograms as
/// `_bucket`/`_sum`/`_count`), no family declared twice, counters named
/// `_total`, histogram buckets cumulative and ending with `+Inf` = `_count`.
fn parse_prometheus(text: &str) -> HashMap<String, Family> {
    fn valid_name(n: &str) -> bool {
        let mut c = n.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
    }
    assert!(text.ends_with('\n'), "ends with a newline");
    let mut fams: HashMap<String, Family> = HashMap::new();
    let mut current: Option<String> = None;
    let mut helped: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(valid_name(name), "{line}");
            assert!(!fams.contains_key(name), "family declared twice: {line}");
            helped = Some(name.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut p = rest.split(' ');
            let name = p.next().unwrap();
            let kind = p.next().expect("a type");
            assert_eq!(helped.as_deref(), Some(name), "HELP before TYPE: {line}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter named _total: {line}");
            }
            fams.insert(
                name.into(),
                Family {
                    kind: kind.into(),
                    samples: Vec::new(),
                },
            );
            current = Some(name.to_string());
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                let labels = body
                    .split(',')
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("{line}"));
                        assert!(valid_name(k), "{line}");
                        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                        (
                            k.to_string(),
                            v.unwrap_or_else(|| panic!("quoted label: {line}"))
                                .to_string(),
                        )
                    })
                    .collect();
                (n, labels)
            }
        };
        assert!(valid_name(name), "{line}");
        let fam = current.clone().expect("TYPE before samples");
        let kind = fams[&fam].kind.clone();
        let ok = if kind == "histogram" {
            [
                format!("{fam}_bucket"),
                format!("{fam}_sum"),
                format!("{fam}_count"),
            ]
            .contains(&name.to_string())
        } else {
            name == fam
        };
        assert!(ok, "sample {name} outside its family {fam}");
        fams.get_mut(&fam)
            .unwrap()
            .samples
            .push((name.into(), labels, value));
    }
    for (name, f) in &fams {
        assert!(!f.samples.is_empty(), "{name} has no samples");
        if f.kind == "histogram" {
            let buckets: Vec<(f64, f64)> = f
                .samples
                .iter()
                .filter(|s| s.0.ends_with("_bucket"))
                .map(|s| {
                    let le = &s.1.iter().find(|l| l.0 == "le").expect("le label").1;
                    (
                        if le == "+Inf" {
                            f64::INFINITY
                        } else {
                            le.parse().unwrap()
                        },
                        s.2,
                    )
                })
                .collect();
            assert!(
                buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "cumulative, ordered: {buckets:?}"
            );
            assert_eq!(
                buckets.last().map(|b| b.0),
                Some(f64::INFINITY),
                "ends with +Inf"
            );
            let count = f
                .samples
                .iter()
                .find(|s| s.0.ends_with("_count"))
                .expect("_count")
                .2;
            assert_eq!(buckets.last().unwrap().1, count, "+Inf bucket = _count");
            assert!(f.samples.iter().any(|s| s.0.ends_with("_sum")), "_sum");
        }
    }
    fams
}

fn value(f: &HashMap<String, Family>, name: &str, label: Option<(&str, &str)>) -> f64 {
    let fam = f.get(name).unwrap_or_else(|| panic!("no family {name}"));
    fam.samples
        .iter()
        .find(|s| label.map_or(true, |(k, v)| s.1.iter().any(|l| l.0 == k && l.1 == v)))
        .unwrap_or_else(|| panic!("no sample {name} {label:?}"))
        .2
}

#[test]
fn metrics_textfile_is_strict_prometheus_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let prom = dir.path().join("nxaudit.prom");
    let mut d = TestDaemon::start(&format!(
        "[metrics]\ntextfile_dir = \"{}\"\n",
        dir.path().display()
    ));
    wait_for("metrics file", Duration::from_secs(20), || prom.exists());
    let read = || parse_prometheus(&std::fs::read_to_string(&prom).unwrap());
    let before = read();
    assert_eq!(value(&before, "nxaudit_up", None), 1.0);
    for name in [
        "nxaudit_events_written_total",
        "nxaudit_syncs_total",
        "nxaudit_writer_queue_depth",
        "nxaudit_ack_latency_seconds",
        "nxaudit_refusals_total",
        "nxaudit_connections_open",
        "nxaudit_last_seq",
    ] {
        assert!(before.contains_key(name), "{name} missing");
    }
    let written0 = value(&before, "nxaudit_events_written_total", None);
    let lines: Vec<String> = (0..5)
        .map(|i| ev(20101, &format!("\"user\":\"m{i}\"")))
        .collect();
    send_ok(&d, &lines);
    let bad = d.send_raw(b"{not json\n", 1);
    assert!(!bad[0].ok);
    wait_for("counters move", Duration::from_secs(20), || {
        let m = read();
        value(&m, "nxaudit_events_written_total", None) >= written0 + 5.0
            && value(&m, "nxaudit_refusals_total", Some(("kind", "bad_json"))) == 1.0
            && value(&m, "nxaudit_ack_latency_seconds", None) >= 0.0
            && m["nxaudit_ack_latency_seconds"]
                .samples
                .iter()
                .any(|s| s.0.ends_with("_count") && s.2 >= 5.0)
    });
    assert!(d.term().success());
    let after = read();
    assert_eq!(
        value(&after, "nxaudit_up", None),
        0.0,
        "a clean stop says so"
    );
    let last = d.records().last().unwrap().seq as f64;
    assert_eq!(value(&after, "nxaudit_last_seq", None), last);
}

/// docs/configuration.md lists every key the code knows, taken from the
/// built-in defaults (Option keys, unset by default, are listed by hand),
/// each under its section's heading.
#[test]
fn configuration_doc_lists_every_key() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let defaults = toml::Value::try_from(nxaudit::config::Config::default()).unwrap();
    let section_of = |heading: &str| -> String {
        let start = doc
            .find(heading)
            .unwrap_or_else(|| panic!("no section {heading}"));
        let rest = &doc[start + heading.len()..];
        rest[..rest.find("\n## ").unwrap_or(rest.len())].to_string()
    };
    let top = section_of("## Top level");
    let mut missing = Vec::new();
    for (k, v) in defaults.as_table().unwrap() {
        match v {
            toml::Value::Table(t) => {
                let sec = section_of(&format!("## `[{k}]`"));
                for key in t.keys() {
                    if !sec.contains(&format!("| `{key}` |")) {
                        missing.push(format!("{k}.{key}"));
                    }
                }
            }
            _ => {
                if !top.contains(&format!("| `{k}` |")) {
                    missing.push(k.clone());
                }
            }
        }
    }
    for key in ["jwt_audience", "jwt_issuer"] {
        if !section_of("## `[api]`").contains(&format!("| `{key}` |")) {
            missing.push(format!("api.{key}"));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md misses {missing:?}"
    );
}

/// The repository stands alone: no document points outside it.
#[test]
fn docs_do_not_point_outside_the_repository() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut files = vec![format!("{root}/README.md")];
    for e in std::fs::read_dir(format!("{root}/docs")).unwrap() {
        files.push(e.unwrap().path().display().to_string());
    }
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains(&["..", "shared"].join("/")) && !text.contains("SPEC"),
            "{f} points outside the repository"
        );
    }
}

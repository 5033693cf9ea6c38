//! `nxaudit codes`: the catalog as the real binary prints it.
//!
//! These run the built `nxaudit` with a private `--base-dir` (so no system
//! config is read) and check what operators and scripts rely on: the exact
//! number of codes per component, the `--component` filter and its
//! case-insensitive names, and exit code 2 for an unknown component. On
//! failure the command, stdout and stderr are printed in full.

use std::collections::BTreeSet;
use std::process::{Command, Output};

use serde_json::Value;

use crate::util::{cli_bin, explain, run};

/// Runs `nxaudit --base-dir <tmp> <args>` and returns its output.
fn nxaudit(args: &[&str]) -> (String, Output) {
    let dir = tempfile::tempdir().expect("temp dir");
    run(Command::new(cli_bin())
        .arg("--base-dir")
        .arg(dir.path())
        .args(args))
}

/// Runs `nxaudit codes --json <extra>`, expects success, returns the array.
fn codes_json(extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["codes", "--json"];
    args.extend_from_slice(extra);
    let (cmd, out) = nxaudit(&args);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&cmd, &out));
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e})\n{}", explain(&cmd, &out)));
    match v {
        Value::Array(a) => a,
        other => panic!("not an array: {other}\n{}", explain(&cmd, &out)),
    }
}

fn distinct_codes(entries: &[Value], component: &str) -> BTreeSet<u64> {
    entries
        .iter()
        .filter(|e| e["component"] == component)
        .filter_map(|e| e["code"].as_u64())
        .collect()
}

#[test]
fn json_lists_every_code_with_exact_counts() {
    let all = codes_json(&[]);
    assert_eq!(all.len(), 158);
    assert_eq!(distinct_codes(&all, "WebConsole").len(), 50);
    assert_eq!(distinct_codes(&all, "Portal").len(), 62);
    assert_eq!(distinct_codes(&all, "Engine").len(), 26);
    assert_eq!(distinct_codes(&all, "Appliance").len(), 18);
    for e in &all {
        for key in [
            "code",
            "component",
            "category",
            "description",
            "format",
            "documented",
            "account",
            "aliases",
        ] {
            assert!(e.get(key).is_some(), "{key} missing in {e}");
        }
        // format is null exactly when undocumented.
        assert_eq!(e["format"].is_null(), e["documented"] == false, "{e}");
    }
    let both = |code: u64| {
        all.iter()
            .filter(|e| e["code"] == code)
            .filter_map(|e| e["description"].as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        both(52010),
        [
            "Portal server address updated",
            "Portal admin account reset"
        ]
    );
    assert_eq!(
        both(52100),
        ["Internal network removed", "Internal network added"]
    );
    let login = all.iter().find(|e| e["code"] == 50000).expect("50000");
    assert_eq!(login["format"], "Login successful");
    assert_eq!(login["category"], "Login");
}

#[test]
fn component_filter_is_case_insensitive() {
    let portal = codes_json(&["--component", "Portal"]);
    assert_eq!(portal.len(), 62);
    assert!(portal.iter().all(|e| e["component"] == "Portal"));
    let role = portal.iter().find(|e| e["code"] == 20206).expect("20206");
    assert_eq!(role["format"], "Role {name} is added");

    let console = codes_json(&["--component", "console"]);
    assert_eq!(console.len(), 52);
    assert_eq!(distinct_codes(&console, "WebConsole").len(), 50);
    assert_eq!(codes_json(&["--component", "WEBCONSOLE"]).len(), 52);
    assert_eq!(codes_json(&["--component", "engine"]).len(), 26);
    assert_eq!(codes_json(&["--component", "Appliance"]).len(), 18);
}

#[test]
fn text_table_shows_the_documented_line() {
    let (cmd, out) = nxaudit(&["codes", "--component", "Console"]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&cmd, &out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1 + 52, "{}", explain(&cmd, &out));
    let row = text
        .lines()
        .find(|l| l.starts_with("50000"))
        .unwrap_or_else(|| panic!("no 50000 row\n{}", explain(&cmd, &out)));
    assert!(
        row.contains("[Console|Login|50000|{account}] Login successful"),
        "{row}"
    );
}

#[test]
fn unknown_component_exits_2() {
    let (cmd, out) = nxaudit(&["codes", "--component", "Finder"]);
    assert_eq!(out.status.code(), Some(2), "{}", explain(&cmd, &out));
    assert!(out.stdout.is_empty(), "{}", explain(&cmd, &out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Finder"),
        "{}",
        explain(&cmd, &out)
    );
}

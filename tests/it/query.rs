//! `nxaudit query` end to end on a generated multi-file log set (plain,
//! zstd, gzip, active with a torn tail): the same windows as the Audit
//! trail API give the same bytes as the API and as a brute-force filter;
//! code, component and user filters; JSON output.

use std::process::Command;

use nxaudit::record;
use serde_json::Value;

use super::api::{
    brute, cli, standard_logset, t, Ca, Client, Rng, Server, ServerSpec, Signer, PORTAL,
};

fn query(config: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(cli())
        .arg("--config")
        .arg(config)
        .arg("query")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nxaudit query {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn query_matches_the_api_and_brute_force() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let signer = Signer::new();
    let base = dir.path().join("portal");
    let lines = standard_logset(&base.join("log"), "portal", 4242);
    let portal = Server::start(
        &base,
        ServerSpec {
            role: "portal",
            hostname: "portal",
            engines: Vec::new(),
            cert: ca.issue(),
            jwt_public_pem: &signer.public_pem,
            env: None,
            engine_timeout: "2s",
            extra_args: Vec::new(),
        },
    );
    let c = Client::new(&ca.pem());
    let tok = signer.good();
    let first = record::line_timestamp(&lines[0]).unwrap();
    let last = record::line_timestamp(lines.last().unwrap()).unwrap();
    let span = (last - first).num_seconds() as u64;
    let mut rng = Rng::new(77);
    for i in 0..12 {
        let before = (first + chrono::Duration::seconds(rng.below(span + 3600) as i64))
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string();
        let hours = format!("{}.5", rng.below(72));
        let (api_q, cli_args): (String, Vec<&str>) = if i % 3 == 0 {
            (
                format!("before_date={before}"),
                vec!["--before-date", &before],
            )
        } else {
            (
                format!("before_date={before}&elapsed_hours={hours}"),
                vec!["--before-date", &before, "--elapsed-hours", &hours],
            )
        };
        let api = c.get(&format!("{}{PORTAL}?{api_q}", portal.url()), Some(&tok));
        assert_eq!(api.status, 200);
        let got = query(&portal.config, &cli_args);
        assert_eq!(got, api.text(), "CLI and API differ for {api_q}");
        let until = t(&format!("{before}Z"));
        let since = (i % 3 != 0).then(|| {
            let h: f64 = hours.parse().unwrap();
            until - chrono::Duration::minutes((h * 60.0) as i64)
        });
        assert_eq!(got, brute(&lines, since, Some(until)), "{api_q}");
    }

    // --since/--until in RFC 3339 with offsets; whole log without bounds.
    let got = query(
        &portal.config,
        &[
            "--since",
            "2026-03-05T02:00:00+02:00",
            "--until",
            "2026-03-09T00:00:00Z",
        ],
    );
    assert_eq!(
        got,
        brute(
            &lines,
            Some(t("2026-03-05T00:00:00Z")),
            Some(t("2026-03-09T00:00:00Z"))
        )
    );
    assert_eq!(query(&portal.config, &[]), brute(&lines, None, None));
    // A relative window before all data is empty, not an error.
    assert_eq!(
        query(&portal.config, &["--since", "1h", "--until", "30m"]),
        ""
    );

    // Filters: codes, components, users; combined with a window.
    let got = query(
        &portal.config,
        &[
            "--code",
            "60001,20206",
            "--user",
            "bob",
            "--before-date",
            "2026-03-20",
        ],
    );
    let expect: String = brute(&lines, None, Some(t("2026-03-20T00:00:00Z")))
        .lines()
        .filter(|l| {
            let r = record::parse_line(l).unwrap();
            (r.code == 60001 || r.code == 20206) && r.account == "bob"
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(!expect.is_empty());
    assert_eq!(got, expect);
    let got = query(&portal.config, &["--component", "Engine"]);
    assert!(!got.is_empty());
    assert!(got
        .lines()
        .all(|l| record::parse_line(l).unwrap().code == 10009));

    // JSON: one object per record, same records.
    let got = query(&portal.config, &["--json", "--before-date", "2026-03-03"]);
    let expect = brute(&lines, None, Some(t("2026-03-03T00:00:00Z")));
    assert_eq!(got.lines().count(), expect.lines().count());
    for (j, l) in got.lines().zip(expect.lines()) {
        let v: Value = serde_json::from_str(j).unwrap();
        let r = record::parse_line(l).unwrap();
        assert_eq!(v["seq"], r.seq);
        assert_eq!(v["code"], r.code);
        assert_eq!(v["account"], r.account.as_str());
        assert_eq!(v["h"], r.h.as_str());
    }

    // Bad arguments: exit status non-zero, message on stderr.
    let out = Command::new(cli())
        .arg("--config")
        .arg(&portal.config)
        .args(["query", "--before-date", "tomorrow"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("before-date"));
}

//! `nxaudit query` end to end on a generated multi-file log set (plain,
//! zstd, gzip, active with a torn tail): the same windows as the Audit
//! trail API give the same bytes as the API and as a brute-force filter;
//! code, component and user filters; JSON output.

use std::process::Command;

use nxaudit::record;
use serde_json::Value;

use super::api::{cli, LogPortal, PORTAL};
use super::logsets::{brute, chain_line, random_entry, t, write_rotated, Kind, Rng};

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
    let p = LogPortal::start(4242);
    let (portal, lines) = (&p.server, &p.lines);
    let c = p.client();
    let tok = p.signer.good();
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
        assert_eq!(got, brute(lines, since, Some(until)), "{api_q}");
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
            lines,
            Some(t("2026-03-05T00:00:00Z")),
            Some(t("2026-03-09T00:00:00Z"))
        )
    );
    assert_eq!(query(&portal.config, &[]), brute(lines, None, None));
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
    let expect: String = brute(lines, None, Some(t("2026-03-20T00:00:00Z")))
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
    let expect = brute(lines, None, Some(t("2026-03-03T00:00:00Z")));
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

/// Generates the benchmark's log set (`benches/api_window.sh`), not a test:
/// `NXAUDIT_BENCH_DIR` (log directory to create), `NXAUDIT_BENCH_BYTES`
/// (about how much log, uncompressed), `NXAUDIT_BENCH_COMPRESS` (`none`,
/// `zstd`, `zstd-frames` — 1 MiB frames cut at lines — or `gzip` for the
/// rotated files). Records over 30 days, rotated
/// every 64 MiB like the daemon's default; prints the middle hour.
#[test]
#[ignore = "benchmark data generator, run by benches/api_window.sh"]
fn bench_generate_logset() {
    use nxaudit::logset;
    use nxaudit::record::{Stamp, GENESIS};

    let dir =
        std::path::PathBuf::from(std::env::var("NXAUDIT_BENCH_DIR").expect("NXAUDIT_BENCH_DIR"));
    let bytes: u64 = std::env::var("NXAUDIT_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let compress = std::env::var("NXAUDIT_BENCH_COMPRESS").unwrap_or_else(|_| "none".into());
    std::fs::create_dir_all(&dir).unwrap();
    const ROTATE: usize = 64 << 20;
    let start = t("2026-02-01T00:00:00Z");
    let span_us: u64 = 30 * 86_400 * 1_000_000;
    // About 200 bytes a line.
    let lines = (bytes / 200).max(1);
    let mean_step = span_us / lines;
    let mut rng = Rng::new(1);
    let mut ts = start;
    let mut prev = GENESIS.to_string();
    let mut seq = 1u64;
    let mut written = 0u64;
    let mut file_start = ts;
    let mut first_seq = seq;
    let mut buf = String::with_capacity(ROTATE + 4096);
    let flush = |buf: &mut String, file_start, first_seq, last: bool| {
        if last {
            std::fs::write(dir.join("audit.log"), buf.as_bytes()).unwrap();
        } else {
            let name = logset::rotated_name(file_start, first_seq);
            match compress.as_str() {
                "zstd" => write_rotated(&dir, &name, Kind::Zstd, buf),
                // Independent frames of about 1 MiB cut after a newline.
                "zstd-frames" => {
                    let mut out = Vec::new();
                    let mut rest = buf.as_bytes();
                    while !rest.is_empty() {
                        let cut = (1usize << 20).min(rest.len());
                        let cut = rest[cut..]
                            .iter()
                            .position(|b| *b == b'\n')
                            .map_or(rest.len(), |q| cut + q + 1);
                        out.extend(zstd::encode_all(&rest[..cut], 3).unwrap());
                        rest = &rest[cut..];
                    }
                    std::fs::write(dir.join(format!("{name}.zst")), out).unwrap();
                }
                "gzip" => write_rotated(&dir, &name, Kind::Gzip, buf),
                _ => write_rotated(&dir, &name, Kind::Plain, buf),
            }
        }
        buf.clear();
    };
    while written < bytes {
        let mut e = random_entry(&mut rng, ["alice", "bob", "carol", "nexthink"], 4242);
        e.client = Some(format!("10.1.{}.{}", rng.below(250), rng.below(250)));
        let line = chain_line(
            &mut prev,
            &e,
            &Stamp {
                ts,
                host: "appliance1",
                seq,
            },
        );
        if buf.len() + line.len() + 1 > ROTATE {
            flush(&mut buf, file_start, first_seq, false);
            file_start = ts;
            first_seq = seq;
        }
        buf.push_str(&line);
        buf.push('\n');
        written += line.len() as u64 + 1;
        seq += 1;
        ts += chrono::Duration::microseconds(rng.below(2 * mean_step) as i64);
    }
    flush(&mut buf, file_start, first_seq, true);
    let middle = start + (ts - start) / 2;
    let hour = middle.format("%Y-%m-%dT%H").to_string();
    println!(
        "BENCH lines={} bytes={written} last={} hour={hour}",
        seq - 1,
        record::format_ts(ts)
    );
}

/// The benchmark's client (`benches/api_window.sh`), not a test: GETs
/// `NXAUDIT_BENCH_URL` with `NXAUDIT_BENCH_TOKEN` `RUNS` times, each on a
/// new connection (TLS handshake included, certificate not checked), and
/// prints the time to the first byte of the body and to its end; the last
/// body goes to `NXAUDIT_BENCH_OUT`.
#[test]
#[ignore = "benchmark client, run by benches/api_window.sh"]
fn bench_client() {
    use futures_util::StreamExt;
    use nxaudit::api::tls::{client_config, EngineTls};
    use std::time::Instant;

    let url = std::env::var("NXAUDIT_BENCH_URL").expect("NXAUDIT_BENCH_URL");
    let token = std::env::var("NXAUDIT_BENCH_TOKEN").expect("NXAUDIT_BENCH_TOKEN");
    let out = std::env::var("NXAUDIT_BENCH_OUT").expect("NXAUDIT_BENCH_OUT");
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for _ in 0..runs {
            let client = reqwest::Client::builder()
                .use_preconfigured_tls(client_config(&EngineTls::AcceptSelfSigned, None).unwrap())
                .no_proxy()
                .build()
                .unwrap();
            let t0 = Instant::now();
            let resp = client.get(&url).bearer_auth(&token).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let head = t0.elapsed();
            let mut first = None;
            let mut body = Vec::new();
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.unwrap();
                if first.is_none() && !chunk.is_empty() {
                    first = Some(t0.elapsed());
                }
                body.extend_from_slice(&chunk);
            }
            let total = t0.elapsed();
            let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
            println!(
                "BENCHCLIENT head_ms={:.3} first_ms={:.3} total_ms={:.3} bytes={}",
                ms(head),
                ms(first.unwrap_or(total)),
                ms(total),
                body.len()
            );
            std::fs::write(&out, &body).unwrap();
        }
    });
}

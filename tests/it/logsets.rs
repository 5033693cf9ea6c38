//! Generated log sets for the API and `nxaudit query` tests: hash-chained
//! records over rotated files (plain, zstd, gzip) and an active file with a
//! torn tail, and the brute-force window filter the tests compare with.

#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Utc};
use nxaudit::catalog::Component;
use nxaudit::logset;
use nxaudit::record::{self, seal, text_body, Chain, Entry, Format, Origin, Stamp, GENESIS};

/// How a generated file is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Plain,
    Zstd,
    Gzip,
}

/// Deterministic pseudo-random numbers (xorshift64*).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Writes a log set to `dir`: rotated files of `files[i].0` lines stored
/// as `files[i].1`, then an active `audit.log` of `active` lines (with a
/// torn tail). Timestamps start at `start` and advance by random steps
/// (often 0, sometimes an hour). Returns every complete line in order.
pub(crate) fn write_logset(
    dir: &Path,
    host: &str,
    start: DateTime<Utc>,
    files: &[(usize, Kind)],
    active: usize,
    seed: u64,
) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = Rng::new(seed);
    let mut ts = start;
    let mut seq = 1u64;
    let mut prev = GENESIS.to_string();
    let mut all = Vec::new();
    let mut plan: Vec<(usize, Option<Kind>)> = files.iter().map(|(n, k)| (*n, Some(*k))).collect();
    plan.push((active, None));
    for (n, kind) in plan {
        let file_start = ts;
        let first_seq = seq;
        let mut text = String::new();
        for _ in 0..n {
            let mut e = random_entry(&mut rng, ["alice", "bob", "carol", "dave"], 100);
            e.client = Some(format!("10.0.0.{}", rng.below(250)));
            let line = chain_line(&mut prev, &e, &Stamp { ts, host, seq });
            text.push_str(&line);
            text.push('\n');
            all.push(line);
            seq += 1;
            let step = match rng.below(10) {
                0..=2 => 0,
                3 => 3600 + rng.below(600) as i64,
                _ => rng.below(240) as i64,
            };
            ts += chrono::Duration::seconds(step)
                + chrono::Duration::microseconds(rng.below(1_000_000) as i64);
        }
        let Some(kind) = kind else {
            text.push_str("2099-01-01T00:00:00.000000Z torn line being written");
            std::fs::write(dir.join("audit.log"), text).unwrap();
            continue;
        };
        write_rotated(
            dir,
            &logset::rotated_name(file_start, first_seq),
            kind,
            &text,
        );
    }
    all
}

/// An entry with a code drawn from five components and a user drawn from
/// `users` (in that order), from process `pid` (uid/gid 998).
pub(crate) fn random_entry(rng: &mut Rng, users: [&str; 4], pid: u32) -> Entry {
    let code = [60001u32, 20206, 10009, 50000, 60101][rng.below(5) as usize];
    let mut e = Entry::appliance(60001).with_user(users[rng.below(4) as usize]);
    e.code = code;
    e.component = Component::of_code(code).unwrap();
    e.origin = Origin {
        pid,
        uid: 998,
        gid: 998,
    };
    e
}

/// The sealed text line of `e` at `stamp`, chained on `prev` (which
/// becomes this line's hash).
pub(crate) fn chain_line(prev: &mut String, e: &Entry, stamp: &Stamp<'_>) -> String {
    let mut body = String::new();
    text_body(e, stamp, &mut body);
    let h = Chain::sha256().next(prev, &body);
    let line = seal(Format::Text, &body, &h);
    *prev = h;
    line
}

/// Writes a rotated file `name` (plus `.zst`/`.gz` when compressed).
pub(crate) fn write_rotated(dir: &Path, name: &str, kind: Kind, text: &str) {
    match kind {
        Kind::Plain => std::fs::write(dir.join(name), text).unwrap(),
        Kind::Zstd => std::fs::write(
            dir.join(format!("{name}.zst")),
            zstd::encode_all(text.as_bytes(), 3).unwrap(),
        )
        .unwrap(),
        Kind::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(text.as_bytes()).unwrap();
            std::fs::write(dir.join(format!("{name}.gz")), enc.finish().unwrap()).unwrap();
        }
    }
}

/// The standard mixed set: six rotated files (plain, zstd, gzip) and the
/// active file, over about a week.
pub(crate) fn standard_logset(dir: &Path, host: &str, seed: u64) -> Vec<String> {
    write_logset(
        dir,
        host,
        t("2026-03-01T00:00:00Z"),
        &[
            (900, Kind::Zstd),
            (700, Kind::Gzip),
            (1100, Kind::Plain),
            (800, Kind::Zstd),
            (1000, Kind::Plain),
            (600, Kind::Gzip),
        ],
        900,
        seed,
    )
}

pub(crate) fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Lines with a timestamp in `[since, until)`, as the test computes it.
pub(crate) fn brute(
    lines: &[String],
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> String {
    let mut out = String::new();
    for l in lines {
        let ts = record::line_timestamp(l).unwrap();
        if since.map_or(true, |s| ts >= s) && until.map_or(true, |u| ts < u) {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// Asserts two outputs are equal; on failure shows sizes and the first
/// differing line instead of megabytes of text.
pub(crate) fn same(got: &str, expect: &str, what: &str) {
    if got == expect {
        return;
    }
    let (g, e): (Vec<&str>, Vec<&str>) = (got.lines().collect(), expect.lines().collect());
    let i = g
        .iter()
        .zip(&e)
        .position(|(a, b)| a != b)
        .unwrap_or(g.len().min(e.len()));
    panic!(
        "{what}: got {} lines ({} bytes), expected {} lines ({} bytes); first difference at line {i}:\n got: {:?}\nwant: {:?}",
        g.len(),
        got.len(),
        e.len(),
        expect.len(),
        g.get(i),
        e.get(i)
    );
}

/// One record a minute from `start`, all in the active file.
pub(crate) fn write_logset_regular(dir: &Path, start: DateTime<Utc>, n: usize) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    let mut prev = GENESIS.to_string();
    let mut text = String::new();
    let mut lines = Vec::new();
    for i in 0..n {
        let mut e = Entry::appliance(60001).with_user("nexthink");
        e.origin = Origin {
            pid: 1,
            uid: 2,
            gid: 3,
        };
        let line = chain_line(
            &mut prev,
            &e,
            &Stamp {
                ts: start + chrono::Duration::minutes(i as i64),
                host: "portal",
                seq: i as u64 + 1,
            },
        );
        text.push_str(&line);
        text.push('\n');
        lines.push(line);
    }
    std::fs::write(dir.join("audit.log"), text).unwrap();
    lines
}

//! Bad-input corpus against the real daemon (docs/protocol.md and §9).
//!
//! Cases come from `tests/fixtures/bad_input/corpus.jsonl` (one JSON object
//! per line: `name`; the bytes as `text` or `hex`; `expect`, one reply kind
//! or a list of them when the bytes hold raw newlines and so several lines;
//! an optional `note`) and from the generators below, for what a data file
//! holds badly: 1 MiB lines, 10,000-deep nesting, every control byte in
//! every string field, every prefix of valid events, every lone high byte.
//!
//! Expectations follow `nxaudit::protocol` (the contract's implementation):
//! `corpus_matches_the_pure_parser` checks them against `parse_line` with no
//! daemon, so a failure of the daemon tests is about the daemon (framing,
//! writer, log), not about the corpus.
//!
//! The daemon tests send every case pipelined on one connection, each
//! followed by a valid marker event, then check that every case got exactly
//! its replies, every marker was acknowledged, the daemon still serves a new
//! connection, the log holds exactly the acknowledged events (each record
//! parsed back and compared with what was sent), nothing else and no raw
//! control characters, and `nxaudit verify` passes. Variants: 8 connections
//! at once (JSON log format) beside clients that hang up mid-stream; the
//! corpus through `nxaudit send`; a restart after which every accepted `id`
//! (hostile ones included) is still deduplicated; and the last line of a
//! connection without its newline.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nxaudit::catalog::Component;
use nxaudit::protocol::{self, ErrorKind, MAX_LINE};
use nxaudit::record::Entry as Event;
use nxaudit::record::ParsedRecord;
use serde_json::Value;

use crate::util::*;

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/bad_input/corpus.jsonl"
);

/// The reply a line must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Ok,
    Refused(ErrorKind),
}

const OK: Want = Want::Ok;
const BJ: Want = Want::Refused(ErrorKind::BadJson);
const TL: Want = Want::Refused(ErrorKind::TooLarge);
const BU: Want = Want::Refused(ErrorKind::BadUtf8);
const MF: Want = Want::Refused(ErrorKind::MissingField);
const UF: Want = Want::Refused(ErrorKind::UnknownField);
const BF: Want = Want::Refused(ErrorKind::BadField);
const UC: Want = Want::Refused(ErrorKind::UnknownCode);

impl Want {
    fn parse(s: &str) -> Want {
        if s == "ok" {
            return OK;
        }
        let kind: ErrorKind = serde_json::from_value(Value::String(s.to_string()))
            .unwrap_or_else(|_| panic!("unknown expectation {s:?}"));
        Want::Refused(kind)
    }

    fn name(self) -> &'static str {
        match self {
            Want::Ok => "ok",
            Want::Refused(k) => k.as_str(),
        }
    }

    /// What the pure parser says of one line (framing included: a line over
    /// the limit is `too_large` whatever it holds).
    fn of_line(line: &[u8]) -> Want {
        match protocol::parse_line(line, false) {
            Ok(_) => OK,
            Err(r) => Want::Refused(r.kind),
        }
    }
}

/// One corpus case: bytes sent as one line (raw `\n` inside split it, and
/// then `want` has one entry per resulting line).
#[derive(Debug, Clone)]
struct Case {
    name: String,
    bytes: Vec<u8>,
    want: Vec<Want>,
}

impl Case {
    fn new(name: impl Into<String>, bytes: impl Into<Vec<u8>>, want: &[Want]) -> Case {
        Case {
            name: name.into(),
            bytes: bytes.into(),
            want: want.to_vec(),
        }
    }

    /// The lines the daemon's framing makes of the bytes.
    fn lines(&self) -> Vec<&[u8]> {
        self.bytes.split(|b| *b == b'\n').collect()
    }
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// The data-file cases.
fn data_cases() -> Vec<Case> {
    let text = std::fs::read_to_string(CORPUS).expect("read corpus.jsonl");
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("corpus.jsonl:{}", n + 1);
        let v: serde_json::Map<String, Value> =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{at}: {e}"));
        for k in v.keys() {
            assert!(
                matches!(k.as_str(), "name" | "text" | "hex" | "expect" | "note"),
                "{at}: unknown key {k:?}"
            );
        }
        let name = v["name"].as_str().unwrap_or_else(|| panic!("{at}: name"));
        let bytes = match (v.get("text"), v.get("hex")) {
            (Some(Value::String(t)), None) => t.as_bytes().to_vec(),
            (None, Some(Value::String(h))) => unhex(h),
            _ => panic!("{at}: give exactly one of text or hex"),
        };
        let want = match &v["expect"] {
            Value::String(s) => vec![Want::parse(s)],
            Value::Array(a) => a
                .iter()
                .map(|s| Want::parse(s.as_str().unwrap_or_else(|| panic!("{at}: expect"))))
                .collect(),
            _ => panic!("{at}: expect must be a kind or a list of kinds"),
        };
        out.push(Case::new(name, bytes, &want));
    }
    out
}

// ---------------------------------------------------------------- generators

/// A string slot of an event: builds the event with `inner` inside the
/// string, and says whether a control character there is acceptable.
struct Slot {
    name: &'static str,
    before: &'static str,
    after: &'static str,
    /// A control character (escaped) leaves the event valid.
    free_text: bool,
}

const SLOTS: [Slot; 11] = [
    Slot {
        name: "user",
        before: r#"{"code":50000,"user":"a"#,
        after: r#"b"}"#,
        free_text: true,
    },
    Slot {
        name: "client",
        before: r#"{"code":50000,"client":"a"#,
        after: r#"b"}"#,
        free_text: true,
    },
    Slot {
        name: "engine",
        before: r#"{"code":10001,"engine":"a"#,
        after: r#"b"}"#,
        free_text: true,
    },
    Slot {
        name: "description",
        before: r#"{"code":50000,"message":"m","description":"a"#,
        after: r#"b"}"#,
        free_text: true,
    },
    Slot {
        name: "time",
        before: r#"{"code":50000,"time":"2026-01-01T00:00:00"#,
        after: r#"Z"}"#,
        free_text: false,
    },
    Slot {
        name: "message",
        before: r#"{"code":50000,"message":"a"#,
        after: r#"b"}"#,
        free_text: true,
    },
    // The id gets a per-case prefix (see `control_bytes`) so ids stay unique.
    Slot {
        name: "id",
        before: r#"{"code":50000,"id":""#,
        after: r#"b"}"#,
        free_text: true,
    },
    Slot {
        name: "component",
        before: r#"{"code":50000,"component":"Web"#,
        after: r#"Console"}"#,
        free_text: false,
    },
    Slot {
        name: "details-value",
        before: r#"{"code":50000,"details":{"k":"a"#,
        after: r#"b"}}"#,
        free_text: true,
    },
    Slot {
        name: "details-key",
        before: r#"{"code":50000,"details":{"a"#,
        after: r#"b":"v"}}"#,
        free_text: false,
    },
    // A value filled into the text by the catalog format "Role {name} is added".
    Slot {
        name: "placeholder",
        before: r#"{"code":20206,"details":{"name":"a"#,
        after: r#"b"}}"#,
        free_text: true,
    },
];

/// Every control byte 0x00–0x1f and 0x7f in every string slot, raw and as
/// a `\u00XX` escape.
fn control_bytes(out: &mut Vec<Case>) {
    let bytes: Vec<u8> = (0x00..=0x1f).chain([0x7f]).collect();
    for slot in &SLOTS {
        for &b in &bytes {
            for raw in [true, false] {
                let form = if raw { "raw" } else { "esc" };
                let mut line = slot.before.as_bytes().to_vec();
                if slot.name == "id" {
                    line.extend_from_slice(format!("ctl-{form}-{b:02x}-a").as_bytes());
                }
                if raw {
                    line.push(b);
                } else {
                    line.extend_from_slice(format!("\\u{b:04x}").as_bytes());
                }
                line.extend_from_slice(slot.after.as_bytes());
                let content = if slot.free_text { OK } else { BF };
                let want: &[Want] = match (raw, b) {
                    // A raw newline ends the line: two broken halves.
                    (true, b'\n') => &[BJ, BJ],
                    // JSON forbids raw control characters inside strings.
                    (true, b) if b < 0x20 => &[BJ],
                    _ => &[content],
                };
                out.push(Case::new(
                    format!("ctl-{form}-{b:02x}-in-{}", slot.name),
                    line,
                    want,
                ));
            }
        }
    }
}

/// Every prefix of valid events (multi-byte characters included, so some
/// prefixes end inside a character): `bad_json`, or `bad_utf8` where the
/// cut splits a character; the whole event is accepted.
fn truncations(out: &mut Vec<Case>) {
    let events = [
        r#"{"code":20206,"component":"Portal","user":"José 🦀","client":"10.0.0.1","time":"2026-01-01T00:00:00.5+01:00","message":"tab\there \"q\" \u00e9 \ud83e\udd80","details":{"name":"Auditors","n":-1.5e3,"b":false},"id":"trunc-1"}"#,
        r#"{"user":"ü€","code":10001,"engine":"E-1","description":"d","message":"m","id":"trunc-2"}"#,
    ];
    for (e, ev) in events.iter().enumerate() {
        let b = ev.as_bytes();
        for n in 0..b.len() {
            let want = if std::str::from_utf8(&b[..n]).is_ok() {
                BJ
            } else {
                BU
            };
            out.push(Case::new(format!("truncated-{e}-at-{n}"), &b[..n], &[want]));
        }
        out.push(Case::new(format!("truncated-{e}-whole"), b, &[OK]));
    }
}

/// Every JSON type (and null) in every field.
fn wrong_types(out: &mut Vec<Case>) {
    let values = [
        ("true", "true"),
        ("int", "7"),
        ("float", "1.5"),
        ("negative", "-1"),
        ("string", r#""s""#),
        ("empty-array", "[]"),
        ("array", r#"["s"]"#),
        ("empty-object", "{}"),
        ("object", r#"{"k":"v"}"#),
        ("null", "null"),
    ];
    let fields = [
        "code",
        "component",
        "user",
        "client",
        "engine",
        "description",
        "time",
        "message",
        "id",
        "details",
    ];
    for field in fields {
        for (vname, v) in values {
            let line = match field {
                "code" => format!(r#"{{"code":{v}}}"#),
                "engine" => format!(r#"{{"code":10001,"engine":{v}}}"#),
                "id" if vname == "string" => r#"{"code":50000,"id":"wrong-types-s"}"#.to_string(),
                _ => format!(r#"{{"code":50000,"{field}":{v}}}"#),
            };
            let want = match (field, vname) {
                ("code", "null") => MF,
                ("code", "int") => UC,
                ("code", _) => BF,
                // null is the same as absent.
                (_, "null") => OK,
                ("details", "empty-object" | "object") => OK,
                ("details", _) => BF,
                ("component" | "time", "string") => BF,
                (_, "string") => OK,
                _ => BF,
            };
            out.push(Case::new(format!("type-{field}-{vname}"), line, &[want]));
        }
    }
}

/// The empty string in every field.
fn empty_strings(out: &mut Vec<Case>) {
    let cases = [
        ("code", r#"{"code":""}"#, BF),
        ("component", r#"{"code":50000,"component":""}"#, BF),
        ("user", r#"{"code":50000,"user":""}"#, OK),
        ("client", r#"{"code":50000,"client":""}"#, OK),
        ("engine", r#"{"code":10001,"engine":""}"#, OK),
        (
            "description",
            r#"{"code":50000,"description":"","message":"m"}"#,
            OK,
        ),
        ("time", r#"{"code":50000,"time":""}"#, BF),
        ("message", r#"{"code":50000,"message":""}"#, OK),
        ("id", r#"{"code":50000,"id":""}"#, BF),
        ("details-key", r#"{"code":50000,"details":{"":"v"}}"#, BF),
        ("details-value", r#"{"code":50000,"details":{"k":""}}"#, OK),
    ];
    for (name, line, want) in cases {
        out.push(Case::new(format!("empty-{name}"), line, &[want]));
    }
}

/// Length limits of the fields, at and over the limit.
fn lengths(out: &mut Vec<Case>) {
    let limits = [
        ("user", 256, r#"{"code":50000,"user":""#, r#""}"#),
        ("client", 256, r#"{"code":50000,"client":""#, r#""}"#),
        ("engine", 256, r#"{"code":10001,"engine":""#, r#""}"#),
        (
            "description",
            1024,
            r#"{"code":50000,"message":"m","description":""#,
            r#""}"#,
        ),
        ("id", 256, r#"{"code":50000,"id":""#, r#""}"#),
        (
            "details-key",
            64,
            r#"{"code":50000,"details":{""#,
            r#"":1}}"#,
        ),
    ];
    for (name, max, before, after) in limits {
        for (n, want) in [(max, OK), (max + 1, BF)] {
            let line = format!("{before}{}{after}", "L".repeat(n));
            out.push(Case::new(format!("length-{name}-{n}"), line, &[want]));
        }
    }
    // Bytes, not characters: 128 × "é" is 256 bytes.
    for (n, want) in [(128, OK), (129, BF)] {
        let line = format!(r#"{{"code":50000,"user":"{}"}}"#, "é".repeat(n));
        out.push(Case::new(
            format!("length-user-{n}-two-byte-chars"),
            line,
            &[want],
        ));
    }
    // time: 64 bytes is the limit whatever chrono would accept.
    for (n, want) in [(64, OK), (65, BF)] {
        let t = format!("2026-01-01T00:00:00.{}Z", "1".repeat(n - 21));
        assert_eq!(t.len(), n);
        let line = format!(r#"{{"code":50000,"time":"{t}"}}"#);
        out.push(Case::new(format!("length-time-{n}"), line, &[want]));
    }
    for (n, want) in [(protocol::MAX_DETAILS, OK), (protocol::MAX_DETAILS + 1, BF)] {
        let d: Vec<String> = (0..n).map(|i| format!(r#""k{i}":{i}"#)).collect();
        let line = format!(r#"{{"code":50000,"details":{{{}}}}}"#, d.join(","));
        out.push(Case::new(format!("details-{n}-entries"), line, &[want]));
    }
    let line = format!(r#"{{"code":50000,"message":"{}"}}"#, "m".repeat(60_000));
    out.push(Case::new("length-message-60000", line, &[OK]));
    // Lines near the limit whose every character is escaped in the record
    // (up to 4 bytes of record per byte of input).
    let units: [(&str, &str); 6] = [
        ("del", "\u{7f}"),
        ("u0085", "\u{85}"),
        ("u2028", "\u{2028}"),
        ("quote", r#"\""#),
        ("backslash", r"\\"),
        ("escaped-nul", r"\u0000"),
    ];
    for (name, unit) in units {
        for (field, before, after) in [
            ("message", r#"{"code":50000,"message":""#, r#""}"#),
            (
                "details-value",
                r#"{"code":50000,"details":{"k":""#,
                r#""}}"#,
            ),
        ] {
            let n = (MAX_LINE - before.len() - after.len()) / unit.len();
            let line = format!("{before}{}{after}", unit.repeat(n));
            out.push(Case::new(format!("expanding-{field}-{name}"), line, &[OK]));
        }
    }
}

/// An event of exactly `len` bytes (a padded message).
fn event_of_len(len: usize) -> Vec<u8> {
    let before = r#"{"code":50000,"message":""#;
    let after = r#""}"#;
    let pad = len - before.len() - after.len();
    format!("{before}{}{after}", "p".repeat(pad)).into_bytes()
}

/// Line sizes around the 64 KiB limit, and far over it.
fn sizes(out: &mut Vec<Case>) {
    const MIB: usize = 1 << 20;
    out.push(Case::new("size-exactly-64k", event_of_len(MAX_LINE), &[OK]));
    out.push(Case::new(
        "size-64k-plus-1",
        event_of_len(MAX_LINE + 1),
        &[TL],
    ));
    let mut crlf = event_of_len(MAX_LINE - 1);
    crlf.push(b'\r');
    out.push(Case::new("size-64k-with-cr", crlf, &[OK]));
    let mut crlf = event_of_len(MAX_LINE);
    crlf.push(b'\r');
    // Debatable: the limit counts the CR of a CRLF (protocol::parse_line).
    out.push(Case::new("size-64k-plus-cr", crlf, &[TL]));
    out.push(Case::new("size-1mib-x", vec![b'x'; MIB], &[TL]));
    out.push(Case::new("size-1mib-valid-event", event_of_len(MIB), &[TL]));
    out.push(Case::new("size-1mib-ff", vec![0xff; MIB], &[TL]));
    out.push(Case::new("size-1mib-open-braces", vec![b'{'; MIB], &[TL]));
    out.push(Case::new("size-1mib-cr", vec![b'\r'; MIB], &[TL]));
    out.push(Case::new("size-1mib-nul", vec![0; MIB], &[TL]));
    let many: Vec<u8> = br#"{"code":50000}"#.repeat(MIB / 14 + 1);
    out.push(Case::new(
        "size-1mib-of-events-without-newlines",
        many,
        &[TL],
    ));
    let mut spaces = vec![b' '; MAX_LINE];
    spaces.extend_from_slice(br#"{"code":50000}"#);
    out.push(Case::new("size-64k-spaces-then-event", spaces, &[TL]));
    let mut v = vec![b'x'; 70_000];
    v.extend_from_slice(b"\n{\"code\":50000}");
    out.push(Case::new("size-too-large-then-valid", v, &[TL, OK]));
    let mut v = br#"{"code":50000}"#.to_vec();
    v.push(b'\n');
    v.extend(vec![b'x'; 70_000]);
    out.push(Case::new("size-valid-then-too-large", v, &[OK, TL]));
    let mut v = Vec::new();
    for i in 0..3 {
        if i > 0 {
            v.push(b'\n');
        }
        v.extend(vec![b'y'; 70_000 + i]);
    }
    out.push(Case::new("size-three-too-large", v, &[TL, TL, TL]));
}

/// 10,000-deep nesting in every place it can sit (all lines stay under
/// the size limit, so the parser, not the framing, decides).
fn nesting(out: &mut Vec<Case>) {
    const D: usize = 10_000;
    let arrays = || format!("{}{}", "[".repeat(D), "]".repeat(D));
    let objects = || format!("{}1{}", r#"{"a":"#.repeat(D), "}".repeat(D));
    let cases: Vec<(&str, String, Want)> = vec![
        ("top-arrays", arrays(), BJ),
        // The first key is unknown: refused before the nesting is read.
        ("top-objects", objects(), UF),
        ("code-arrays", format!(r#"{{"code":{}}}"#, arrays()), BF),
        (
            "message-arrays",
            format!(r#"{{"code":50000,"message":{}}}"#, arrays()),
            BF,
        ),
        (
            "details-arrays",
            format!(r#"{{"code":50000,"details":{}}}"#, arrays()),
            BF,
        ),
        // serde_json's recursion limit: a syntax error.
        (
            "details-value-arrays",
            format!(r#"{{"code":50000,"details":{{"k":{}}}}}"#, arrays()),
            BJ,
        ),
        (
            "details-value-objects",
            format!(r#"{{"code":50000,"details":{{"k":{}}}}}"#, objects()),
            BJ,
        ),
        (
            "unknown-field-objects",
            format!(r#"{{"code":50000,"x":{}}}"#, objects()),
            UF,
        ),
        ("unclosed-arrays", "[".repeat(60_000), BJ),
        (
            "details-value-unclosed",
            format!(r#"{{"code":50000,"details":{{"k":{}"#, "[".repeat(60_000)),
            BJ,
        ),
        (
            "inside-a-string",
            format!(r#"{{"code":50000,"message":"{}"}}"#, "[{".repeat(D)),
            OK,
        ),
        (
            "after-the-object",
            format!(r#"{{"code":50000}}{}"#, arrays()),
            BJ,
        ),
    ];
    for (name, line, want) in cases {
        assert!(line.len() <= MAX_LINE, "{name} is over the limit");
        out.push(Case::new(format!("nesting-{name}"), line, &[want]));
    }
}

/// Every byte 0x80–0xff alone inside a string: never valid UTF-8 there.
fn lone_high_bytes(out: &mut Vec<Case>) {
    for b in 0x80..=0xffu8 {
        let mut line = br#"{"code":50000,"user":"a"#.to_vec();
        line.push(b);
        line.extend_from_slice(br#"b"}"#);
        out.push(Case::new(format!("lone-byte-{b:02x}"), line, &[BU]));
    }
}

/// The whole corpus: data file, then generated cases.
fn corpus() -> Vec<Case> {
    let mut v = data_cases();
    control_bytes(&mut v);
    truncations(&mut v);
    wrong_types(&mut v);
    empty_strings(&mut v);
    lengths(&mut v);
    sizes(&mut v);
    nesting(&mut v);
    lone_high_bytes(&mut v);
    let mut names = BTreeSet::new();
    for c in &v {
        assert!(
            names.insert(c.name.as_str()),
            "duplicate case name {}",
            c.name
        );
        assert_eq!(
            c.lines().len(),
            c.want.len(),
            "{}: one expectation per line (raw newlines split a case)",
            c.name
        );
    }
    v
}

// ---------------------------------------------------------------- running

/// A reply as read from the socket.
#[derive(Debug, Clone)]
enum Got {
    Ack(u64),
    Refused(String, String),
    Garbage(String),
}

impl Got {
    fn parse(line: &[u8]) -> Got {
        let text = String::from_utf8_lossy(line);
        let v: Value = match serde_json::from_str(text.trim_end_matches('\n')) {
            Ok(v) => v,
            Err(_) => return Got::Garbage(text.into_owned()),
        };
        match (v["ok"].as_bool(), v["seq"].as_u64(), v["error"].as_str()) {
            (Some(true), Some(seq), None) => Got::Ack(seq),
            (Some(false), None, Some(kind)) => Got::Refused(
                kind.to_string(),
                v["detail"].as_str().unwrap_or_default().to_string(),
            ),
            _ => Got::Garbage(text.into_owned()),
        }
    }

    fn name(&self) -> String {
        match self {
            Got::Ack(_) => "ok".into(),
            Got::Refused(k, _) => k.clone(),
            Got::Garbage(l) => format!("garbage {:?}", truncate(l, 40)),
        }
    }

    fn is(&self, w: Want) -> bool {
        match (self, w) {
            (Got::Ack(_), Want::Ok) => true,
            (Got::Refused(k, _), Want::Refused(kind)) => k == kind.as_str(),
            _ => false,
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

fn marker_id(tag: &str, i: usize) -> String {
    format!("marker-{tag}-{i}")
}

fn marker(tag: &str, i: usize) -> String {
    format!(r#"{{"code":50000,"id":"{}"}}"#, marker_id(tag, i))
}

/// One connection's run: every case then its marker, pipelined; the last
/// marker has no newline (processed at EOF). Returns every reply until the
/// daemon closes, and an I/O error if any.
fn drive(s: UnixStream, cases: &[Case], tag: &str) -> (Vec<Got>, Option<String>) {
    send_and_read(s, stream_of(cases, tag), tag)
}

/// Every case then its marker; the last marker has no newline.
fn stream_of(cases: &[Case], tag: &str) -> Vec<u8> {
    let mut data = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        data.extend_from_slice(&c.bytes);
        data.push(b'\n');
        data.extend_from_slice(marker(tag, i).as_bytes());
        data.push(b'\n');
    }
    data.extend_from_slice(marker(tag, cases.len()).as_bytes());
    data
}

/// Writes `data` then half-closes, while reading every reply until the
/// daemon closes the connection.
fn send_and_read(s: UnixStream, data: Vec<u8>, tag: &str) -> (Vec<Got>, Option<String>) {
    s.set_read_timeout(Some(Duration::from_secs(300))).ok();
    let mut w = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        w.write_all(&data)?;
        w.shutdown(Shutdown::Write)
    });
    let mut r = BufReader::new(s);
    let mut replies = Vec::new();
    let mut read_error = None;
    loop {
        let mut line = Vec::new();
        match r.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => replies.push(Got::parse(&line)),
            Err(e) => {
                read_error = Some(format!("{tag}: reading replies: {e}"));
                break;
            }
        }
    }
    let write_error = match writer.join().expect("writer thread") {
        Ok(()) => None,
        Err(e) => Some(format!("{tag}: writing the corpus: {e}")),
    };
    (replies, read_error.or(write_error))
}

/// What one client got: its tag (markers are `marker-TAG-N`), the peer pid
/// the records must carry, every reply, and an I/O error if any.
struct Run {
    tag: String,
    pid: u32,
    replies: Vec<Got>,
    error: Option<String>,
}

impl Run {
    /// A run on a connection of this test process.
    fn here(tag: &str, (replies, error): (Vec<Got>, Option<String>)) -> Run {
        Run {
            tag: tag.to_string(),
            pid: std::process::id(),
            replies,
            error,
        }
    }
}

/// The log, read back line by line.
struct Log {
    records: Vec<ParsedRecord>,
    lines: usize,
    problems: Vec<String>,
}

fn read_log(d: &TestDaemon, text_format: bool) -> Log {
    let mut log = Log {
        records: Vec::new(),
        lines: 0,
        problems: Vec::new(),
    };
    for f in nxaudit::logset::list(&d.log_dir()).expect("list logs") {
        let mut bytes = Vec::new();
        nxaudit::logset::open(&f)
            .expect("open log")
            .read_to_end(&mut bytes)
            .expect("read log");
        let name = f.path.display().to_string();
        if bytes.is_empty() {
            continue;
        }
        if !bytes.ends_with(b"\n") {
            log.problems
                .push(format!("{name}: last line has no newline"));
        }
        let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        for (i, raw) in body.split(|b| *b == b'\n').enumerate() {
            log.lines += 1;
            let at = format!("{name}:{}", i + 1);
            let line = match std::str::from_utf8(raw) {
                Ok(l) => l,
                Err(e) => {
                    log.problems.push(format!("{at}: not UTF-8: {e}"));
                    continue;
                }
            };
            // Text records escape C0, DEL, C1 and U+2028/9; JSON records
            // escape C0 (serde_json), which is all JSON requires.
            let bad = line.chars().find(|&c| {
                (c as u32) < 0x20
                    || (text_format
                        && (c == '\u{7f}'
                            || ('\u{80}'..='\u{9f}').contains(&c)
                            || c == '\u{2028}'
                            || c == '\u{2029}'))
            });
            if let Some(c) = bad {
                log.problems.push(format!(
                    "{at}: raw {c:?} in the log: {}",
                    truncate(line, 200)
                ));
            }
            match nxaudit::record::parse_line(line) {
                Ok(r) => log.records.push(r),
                Err(e) => log
                    .problems
                    .push(format!("{at}: unparsable ({e}): {}", truncate(line, 200))),
            }
        }
    }
    log
}

/// The trailer fields a record of `ev` must carry, in order (docs/record-format.md).
fn expected_fields(ev: &Event) -> Vec<(String, String)> {
    let mut f = Vec::new();
    let mut push = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            f.push((k.to_string(), v.clone()));
        }
    };
    // Every field the sender gave is kept, whatever the component.
    push("client", &ev.client);
    push("engine", &ev.engine);
    push("time", &ev.time);
    push("id", &ev.id);
    push("description", &ev.description);
    for (k, v) in &ev.details.0 {
        f.push((format!("details.{k}"), v.to_string()));
    }
    f
}

/// Whether the record is the event as sent by this process; why not if not.
fn record_matches(rec: &ParsedRecord, ev: &Event, pid: u32) -> Result<(), String> {
    let mut diffs = Vec::new();
    let component = ev.component;
    if rec.code != ev.code {
        diffs.push(format!("code {} != {}", rec.code, ev.code));
    }
    let source = match component {
        Component::WebConsole => "Console".to_string(),
        Component::Portal => "Portal".to_string(),
        Component::Appliance => "Appliance".to_string(),
        Component::Engine => ev
            .engine
            .clone()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "Engine".to_string()),
    };
    if rec.source != source {
        diffs.push(format!("source {:?} != {source:?}", rec.source));
    }
    if let Some(u) = ev.user.as_ref().filter(|u| !u.is_empty()) {
        if &rec.account != u {
            diffs.push(format!("account {:?} != {u:?}", rec.account));
        }
    }
    if let Some(m) = &ev.message {
        if &rec.text != m {
            diffs.push(format!("text {:?} != {m:?}", truncate(&rec.text, 80)));
        }
    }
    let want = expected_fields(ev);
    if rec.fields != want {
        diffs.push(format!("fields {:?} != {want:?}", rec.fields));
    }
    let me = (
        pid,
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    if (rec.pid, rec.uid, rec.gid) != me {
        diffs.push(format!(
            "pid/uid/gid {:?} != {me:?}",
            (rec.pid, rec.uid, rec.gid)
        ));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("; "))
    }
}

/// Runs the whole check on the replies of every connection; panics with a
/// table of every mismatch and a list of every other problem.
fn check(
    d: &mut TestDaemon,
    cases: &[Case],
    runs: Vec<Run>,
    text_format: bool,
) -> Vec<(Vec<u8>, u64)> {
    let mut with_id: Vec<(Vec<u8>, u64)> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut table: Vec<[String; 5]> = Vec::new();
    // A fresh connection is still served (retried while hit-and-run
    // connections may still hold the cap; the id makes retries harmless).
    let probe_line = r#"{"code":50000,"id":"probe-fresh-connection"}"#;
    let mut probe = None;
    try_wait_for(Duration::from_secs(10), || {
        let r = d
            .send_raw(format!("{probe_line}\n").as_bytes(), 1)
            .remove(0);
        let again = r.error == Some(ErrorKind::Overloaded);
        probe = Some(r);
        !again
    });
    let probe_seq = match probe {
        Some(r) if r.ok && r.seq.is_some() => r.seq,
        other => {
            problems.push(format!("fresh connection not served: {other:?}"));
            None
        }
    };

    let log = read_log(d, text_format);
    problems.extend(log.problems.iter().cloned());
    let mut by_seq: HashMap<u64, &ParsedRecord> = HashMap::new();
    for r in &log.records {
        if by_seq.insert(r.seq, r).is_some() {
            problems.push(format!("seq {} appears twice in the log", r.seq));
        }
    }
    let is_marker = |g: &Got, id: &str| match g {
        Got::Ack(s) => by_seq.get(s).and_then(|r| r.field("id")) == Some(id),
        _ => false,
    };

    // seq -> the events acknowledged with it (several only for a shared id).
    let mut acked: BTreeMap<u64, Vec<(Event, u32)>> = BTreeMap::new();
    let mut acked_unknown: BTreeSet<u64> = BTreeSet::new();
    for run in &runs {
        let (tag, replies) = (&run.tag, &run.replies);
        problems.extend(run.error.iter().cloned());
        let mut p = 0;
        let mut last_marker_seq = 0;
        for i in 0..=cases.len() {
            let mid = marker_id(tag, i);
            let expected_n = cases.get(i).map_or(0, |c| c.want.len());
            let found = replies[p..].iter().position(|g| is_marker(g, &mid));
            let (got, next) = match found {
                Some(k) => (&replies[p..p + k], p + k + 1),
                None => {
                    problems.push(format!("{tag}: marker {i} not acknowledged"));
                    let end = (p + expected_n).min(replies.len());
                    (&replies[p..end], end)
                }
            };
            if let Some(k) = found {
                let Got::Ack(seq) = replies[p + k] else {
                    unreachable!()
                };
                if seq <= last_marker_seq {
                    problems.push(format!(
                        "{tag}: marker {i} has seq {seq} after {last_marker_seq}"
                    ));
                }
                last_marker_seq = seq;
                let line = marker(tag, i).into_bytes();
                let ev = protocol::parse_line(&line, false).expect("marker");
                acked.entry(seq).or_default().push((ev, run.pid));
                with_id.push((line, seq));
            }
            p = next;
            let Some(case) = cases.get(i) else {
                if !got.is_empty() {
                    problems.push(format!(
                        "{tag}: {} replies before the last marker",
                        got.len()
                    ));
                }
                continue;
            };
            let same =
                got.len() == case.want.len() && got.iter().zip(&case.want).all(|(g, w)| g.is(*w));
            if !same {
                let detail = got
                    .iter()
                    .find_map(|g| match g {
                        Got::Refused(_, d) => Some(d.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                table.push([
                    tag.clone(),
                    case.name.clone(),
                    case.want
                        .iter()
                        .map(|w| w.name())
                        .collect::<Vec<_>>()
                        .join(","),
                    got.iter().map(Got::name).collect::<Vec<_>>().join(","),
                    truncate(&detail, 70),
                ]);
            }
            let lines = case.lines();
            for (j, g) in got.iter().enumerate() {
                if let Got::Ack(seq) = g {
                    match lines.get(j).map(|l| protocol::parse_line(l, false)) {
                        Some(Ok(ev)) => {
                            if ev.id.is_some() {
                                with_id.push((lines[j].to_vec(), *seq));
                            }
                            acked.entry(*seq).or_default().push((ev, run.pid))
                        }
                        _ => {
                            acked_unknown.insert(*seq);
                        }
                    }
                }
            }
        }
        if p != replies.len() {
            problems.push(format!(
                "{tag}: {} replies after the last marker: {:?}",
                replies.len() - p,
                &replies[p..replies.len().min(p + 5)]
            ));
        }
    }
    if let Some(s) = probe_seq {
        let ev = protocol::parse_line(probe_line.as_bytes(), false).expect("probe");
        acked.entry(s).or_default().push((ev, std::process::id()));
    }

    // Idempotency: one seq per id; an event without id has its own seq.
    let mut id_seq: HashMap<&str, u64> = HashMap::new();
    for (seq, evs) in &acked {
        let ids: BTreeSet<Option<&str>> = evs.iter().map(|(e, _)| e.id.as_deref()).collect();
        if evs.len() > 1 && (ids.len() > 1 || ids.contains(&None)) {
            problems.push(format!(
                "seq {seq} acknowledged for {} different events: {ids:?}",
                evs.len()
            ));
        }
        for id in ids.into_iter().flatten() {
            if let Some(other) = id_seq.insert(id, *seq) {
                problems.push(format!("id {id:?} acknowledged with seq {other} and {seq}"));
            }
        }
    }

    // The log: the start record, then exactly the acknowledged events.
    let acked_seqs: BTreeSet<u64> = acked.keys().chain(&acked_unknown).copied().collect();
    match log.records.first() {
        Some(r) if r.code == 60901 && !acked_seqs.contains(&r.seq) => {}
        other => problems.push(format!(
            "the log does not start with the 60901 record: {:?}",
            other.map(|r| (r.seq, r.code))
        )),
    }
    let logged: BTreeSet<u64> = log.records.iter().skip(1).map(|r| r.seq).collect();
    let extra: Vec<u64> = logged.difference(&acked_seqs).copied().collect();
    let lost: Vec<u64> = acked_seqs.difference(&logged).copied().collect();
    if !extra.is_empty() {
        let show: Vec<String> = extra
            .iter()
            .take(10)
            .map(|s| format!("seq {s}: {}", truncate(&by_seq[s].body, 150)))
            .collect();
        problems.push(format!(
            "{} records never acknowledged: {show:#?}",
            extra.len()
        ));
    }
    if !lost.is_empty() {
        problems.push(format!(
            "{} acknowledged seqs missing from the log: {lost:?}",
            lost.len()
        ));
    }
    if log.lines != 1 + acked_seqs.len() {
        problems.push(format!(
            "the log has {} lines, expected 1 (60901) + {} acknowledged",
            log.lines,
            acked_seqs.len()
        ));
    }
    // Each record is one of the events acknowledged with its seq.
    for (seq, evs) in &acked {
        let Some(rec) = by_seq.get(seq) else { continue };
        let results: Vec<Result<(), String>> = evs
            .iter()
            .map(|(e, pid)| record_matches(rec, e, *pid))
            .collect();
        if !results.iter().any(|r| r.is_ok()) {
            let why = results
                .into_iter()
                .find_map(|r| r.err())
                .unwrap_or_default();
            problems.push(format!(
                "record seq {seq} differs from the event sent: {why}\n    {}",
                rec.body
            ));
        }
    }

    let verify = d.cli(&["verify"]);
    if !verify.status.success() {
        problems.push(format!(
            "nxaudit verify failed: {}{}",
            String::from_utf8_lossy(&verify.stdout),
            String::from_utf8_lossy(&verify.stderr)
        ));
    }
    if !d.alive() {
        problems.push("the daemon died".to_string());
    }
    if d.stderr().contains("panicked") {
        problems.push(format!("the daemon panicked:\n{}", d.stderr()));
    }

    if table.is_empty() && problems.is_empty() {
        return with_id;
    }
    let mut report = String::new();
    if !table.is_empty() {
        report.push_str(&format!("{} cases got the wrong replies:\n", table.len()));
        let head = ["conn", "case", "expected", "got", "detail"].map(String::from);
        let widths: Vec<usize> = (0..4)
            .map(|c| {
                table
                    .iter()
                    .chain([&head])
                    .map(|r| r[c].chars().count())
                    .max()
                    .unwrap_or(0)
                    .min(60)
            })
            .collect();
        for row in [&head].into_iter().chain(table.iter().take(300)) {
            for (c, w) in widths.iter().enumerate() {
                report.push_str(&format!("{:<w$}  ", truncate(&row[c], *w), w = *w));
            }
            report.push_str(&row[4]);
            report.push('\n');
        }
        if table.len() > 300 {
            report.push_str(&format!("… and {} more\n", table.len() - 300));
        }
    }
    for p in problems.iter().take(50) {
        report.push_str(&format!("- {p}\n"));
    }
    if problems.len() > 50 {
        report.push_str(&format!("… and {} more problems\n", problems.len() - 50));
    }
    panic!("bad-input corpus failed:\n{report}");
}

fn counts(cases: &[Case]) -> String {
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for c in cases {
        for w in &c.want {
            *by.entry(w.name()).or_default() += 1;
        }
    }
    format!(
        "{} cases, {} lines: {by:?}",
        cases.len(),
        cases.iter().map(|c| c.want.len()).sum::<usize>()
    )
}

// ---------------------------------------------------------------- tests

/// The corpus's expectations are what `protocol::parse_line` says of each
/// line (no daemon): the daemon tests then only test the daemon.
#[test]
fn corpus_matches_the_pure_parser() {
    let cases = corpus();
    assert!(cases.len() >= 200, "{}", counts(&cases));
    let mut bad = Vec::new();
    for c in &cases {
        let got: Vec<Want> = c.lines().iter().map(|l| Want::of_line(l)).collect();
        if got != c.want {
            let names = |v: &[Want]| v.iter().map(|w| w.name()).collect::<Vec<_>>().join(",");
            bad.push(format!(
                "{:<50} expected {:<30} parser says {}",
                c.name,
                names(&c.want),
                names(&got)
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} cases disagree with protocol::parse_line:\n{}",
        bad.len(),
        bad.join("\n")
    );
    eprintln!("corpus: {}", counts(&cases));
}

/// Every case on one connection, each followed by a marker event. Then,
/// after a restart, every accepted event with an `id` (hostile ids
/// included) is sent again: the ids were read back from the log, so each is
/// acknowledged with its first seq and nothing is written twice.
#[test]
fn corpus_on_one_connection() {
    let cases = corpus();
    let mut d = TestDaemon::start(&appliance_granted(""));
    let (replies, err) = drive(d.connect(), &cases, "c0");
    let with_id = check(&mut d, &cases, vec![Run::here("c0", (replies, err))], true);
    assert!(with_id.len() > cases.len(), "markers and cases with ids");

    let before = std::fs::read_to_string(d.active_log()).expect("log");
    d.term();
    d.restart();
    let mut data = Vec::new();
    for (line, _) in &with_id {
        data.extend_from_slice(line);
        data.push(b'\n');
    }
    let (replies, err) = send_and_read(d.connect(), data, "again");
    assert_eq!(err, None);
    assert_eq!(replies.len(), with_id.len(), "one reply per line");
    let wrong: Vec<String> = with_id
        .iter()
        .zip(&replies)
        .filter(|((_, seq), got)| !matches!(got, Got::Ack(s) if s == seq))
        .map(|((line, seq), got)| {
            format!(
                "{} (first seq {seq}) got {got:?}",
                truncate(&String::from_utf8_lossy(line), 100)
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} events with ids were not deduplicated after a restart:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    let after = std::fs::read_to_string(d.active_log()).expect("log");
    let added: Vec<u32> = after
        .strip_prefix(before.as_str())
        .expect("the log only grew")
        .lines()
        .map(|l| nxaudit::record::parse_line(l).expect("record").code)
        .collect();
    assert_eq!(added, vec![60902, 60901], "only the stop and start records");
    assert_ok("verify", &d.cli(&["verify"]));
}

/// The same corpus from 8 connections at once (JSON log format this time):
/// the same replies on each, one record per shared `id`. Meanwhile two
/// more clients send every refused case on a connection of its own and
/// hang up without reading: none of it may reach the log or disturb the 8.
#[test]
fn corpus_on_eight_concurrent_connections() {
    let cases = corpus();
    let mut d = TestDaemon::start(&appliance_granted("[log]\nformat = \"json\"\n"));
    // Connect the 8 first so that the hit-and-run clients cannot take
    // their slots under the connection cap.
    let streams: Vec<UnixStream> = (0..8).map(|_| d.connect()).collect();
    let refused: Vec<&Case> = cases.iter().filter(|c| !c.want.contains(&OK)).collect();
    let runs = std::thread::scope(|s| {
        let hs: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(k, stream)| {
                let cases = &cases;
                s.spawn(move || {
                    let tag = format!("c{k}");
                    Run::here(&tag, drive(stream, cases, &tag))
                })
            })
            .collect();
        for k in 0..2 {
            let (d, refused) = (&d, &refused);
            s.spawn(move || {
                for c in refused.iter().skip(k) {
                    // The daemon may refuse the connection (cap) or close it
                    // first: errors are fine, only the daemon's state matters.
                    if let Ok(mut st) = UnixStream::connect(d.socket()) {
                        let _ = st.write_all(&c.bytes);
                    }
                }
            });
        }
        hs.into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect::<Vec<_>>()
    });
    check(&mut d, &cases, runs, false);
}

/// The corpus through the real client, `nxaudit send` reading stdin: it
/// forwards every line as is and prints every reply.
#[test]
fn corpus_through_nxaudit_send() {
    let cases = corpus();
    let mut d = TestDaemon::start(&appliance_granted(""));
    let mut child = std::process::Command::new(cli_bin())
        .arg("--base-dir")
        .arg(&d.base)
        .arg("--config")
        .arg(&d.config_path)
        .arg("send")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run nxaudit send");
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("stdin");
    let data = stream_of(&cases, "cli");
    let feeder = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("wait nxaudit send");
    let fed = feeder.join().expect("feeder");
    assert_eq!(
        out.status.code(),
        Some(1),
        "refusals give exit 1: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replies: Vec<Got> = out
        .stdout
        .split_inclusive(|b| *b == b'\n')
        .map(Got::parse)
        .collect();
    let run = Run {
        tag: "cli".to_string(),
        pid,
        replies,
        error: fed.err().map(|e| format!("feeding stdin: {e}")),
    };
    check(&mut d, &cases, vec![run], true);
}

/// The last line of a connection, without newline, is processed at EOF
/// whatever it is; an empty tail gives no reply.
#[test]
fn final_line_without_newline() {
    let d = TestDaemon::start(&appliance_granted(""));
    let mut x70k = br#"{"code":50000}"#.to_vec();
    x70k.push(b'\n');
    x70k.extend(vec![b'x'; 70_000]);
    let cases: Vec<(&str, Vec<u8>, Vec<Want>)> = vec![
        (
            "valid",
            br#"{"code":50000,"id":"eof-1"}"#.to_vec(),
            vec![OK],
        ),
        (
            "valid-cr",
            b"{\"code\":50000,\"id\":\"eof-2\"}\r".to_vec(),
            vec![OK],
        ),
        ("exactly-64k", event_of_len(MAX_LINE), vec![OK]),
        ("64k-plus-1", event_of_len(MAX_LINE + 1), vec![TL]),
        ("70k", vec![b'x'; 70_000], vec![TL]),
        ("1mib", vec![b'x'; 1 << 20], vec![TL]),
        ("bad-utf8", b"\xff".to_vec(), vec![BU]),
        ("truncated", br#"{"code":50000"#.to_vec(), vec![BJ]),
        ("lone-cr", b"\r".to_vec(), vec![BJ]),
        ("nothing", Vec::new(), vec![]),
        (
            "newline-terminated",
            b"{\"code\":50000}\n".to_vec(),
            vec![OK],
        ),
        ("then-cr", b"{\"code\":50000}\n\r".to_vec(), vec![OK, BJ]),
        ("then-too-large", x70k, vec![OK, TL]),
        (
            "bad-then-valid",
            b"garbage\n{\"code\":50000}".to_vec(),
            vec![BJ, OK],
        ),
    ];
    let mut bad = Vec::new();
    let mut acks = 0;
    for (name, bytes, want) in cases {
        let (got, err) = send_and_read(d.connect(), bytes, name);
        let same = err.is_none()
            && got.len() == want.len()
            && got.iter().zip(&want).all(|(g, w)| g.is(*w));
        if !same {
            bad.push(format!("{name}: expected {want:?}, got {got:?} {err:?}"));
        }
        acks += got.iter().filter(|g| matches!(g, Got::Ack(_))).count();
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    assert_eq!(d.records().len(), 1 + acks, "60901 + the accepted lines");
    assert_ok("verify", &d.cli(&["verify"]));
}

/// The corpus writes Appliance codes as this process's uid, which needs an
/// explicit grant (root included, docs/protocol.md).
fn appliance_granted(config: &str) -> String {
    let me = nix::unistd::getuid().as_raw();
    format!("{config}\n[[clients]]\nuid = {me}\ncomponents = [\"Appliance\"]\n")
}

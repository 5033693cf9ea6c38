//! The audit record: what a source hands the writer ([`Entry`]), how it is
//! rendered as one line (text or JSON), escaped, and hash-chained, and how a
//! line is parsed back ([`ParsedRecord`]) by `verify`, `query`, the API and
//! the syslog forwarder.
//!
//! Text line shape (docs/record-format.md), Nexthink's documented bracket first so that
//! existing greps keep working:
//!
//! ```text
//! TS HOST [source|category|code|account] text | seq=N pid=P uid=U gid=G key="value" … h=HEX
//! ```
//!
//! Escaping guarantees that no input can produce a newline, forge a field or
//! imitate a bracket, even for a plain `grep`: `\\`, `\n`, control bytes
//! and `|`, `[`, `]` (as `\xNN`), and invisible or reordering characters (as
//! `\u{…}`) are escaped in every field; `"` inside quoted values; the space
//! in the host token. A new line thus has one `[`, one `]` and four `|`.
//! Logs written before this scheme may hold `\|` or `\]` and text with a
//! raw ` | seq=`, so the parser reads those escapes and looks for the one
//! ` | ` after which the rest of the line is a well-formed trailer.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::catalog;
use crate::catalog::Component;

pub mod details;
pub mod escape;
mod parse;

pub use details::{DetailValue, Details};
pub use escape::{escape_host, escape_quoted, escape_unquoted, is_invisible, unescape};
pub use parse::{line_timestamp, parse_json, parse_line, parse_text, ParsedRecord};

/// The chain value before the first record of a fresh log.
pub const GENESIS: &str = "00000000000000000000000000000000";

/// Who submitted an entry: the peer credentials of a socket client, or the
/// daemon itself for its own sources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Origin {
    /// Sender's process id.
    pub pid: u32,
    /// Sender's user id.
    pub uid: u32,
    /// Sender's group id.
    pub gid: u32,
}

impl Origin {
    /// The daemon's own credentials, for records it emits itself.
    pub fn daemon() -> Origin {
        Origin {
            pid: std::process::id(),
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        }
    }
}

/// What the writer appends: a validated event plus its origin and the
/// source-specific fields (`unit=`, `cursor=`, `port=`, …).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The audit code.
    pub code: u32,
    /// The component (from the code's range).
    pub component: Component,
    /// The acting account.
    pub user: Option<String>,
    /// Remote address of the acting user.
    pub client: Option<String>,
    /// Engine name (source field of Engine records).
    pub engine: Option<String>,
    /// Which catalog description is meant.
    pub description: Option<String>,
    /// The originator's own timestamp.
    pub time: Option<String>,
    /// Free text replacing the catalog format.
    pub message: Option<String>,
    /// Flat extra values, written as `details.KEY="…"`.
    pub details: Details,
    /// Idempotency key.
    pub id: Option<String>,
    /// Who sent it.
    pub origin: Origin,
    /// Source-specific fields written after the event's own, in order.
    /// Keys must satisfy [`details::valid_detail_key`].
    pub fields: Vec<(String, String)>,
}

impl Entry {
    /// An entry of the daemon's own (an `Appliance` code) with only a code.
    pub fn appliance(code: u32) -> Entry {
        Entry {
            code,
            component: Component::Appliance,
            user: None,
            client: None,
            engine: None,
            description: None,
            time: None,
            message: None,
            details: Details::default(),
            id: None,
            origin: Origin::daemon(),
            fields: Vec::new(),
        }
    }

    /// Adds a source-specific field (builder style).
    pub fn field(mut self, key: &str, value: impl Into<String>) -> Entry {
        self.fields.push((key.to_string(), value.into()));
        self
    }

    /// Sets the free text (builder style).
    pub fn with_message(mut self, m: impl Into<String>) -> Entry {
        self.message = Some(m.into());
        self
    }

    /// Sets the acting account (builder style).
    pub fn with_user(mut self, u: impl Into<String>) -> Entry {
        self.user = Some(u.into());
        self
    }

    /// The value of a source-specific field.
    pub fn get_field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Output format of the log (`[log] format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Nexthink's bracketed text line.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The hash-chain function: SHA-256, or HMAC-SHA-256 with a key.
#[derive(Clone, Default)]
pub struct Chain {
    /// The keyed MAC with its key schedule done once (cloned per record),
    /// or `None` for plain SHA-256.
    mac: Option<Hmac<Sha256>>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("hmac", &self.mac.is_some())
            .finish()
    }
}

impl Chain {
    /// Plain SHA-256 chain.
    pub fn sha256() -> Chain {
        Chain { mac: None }
    }

    /// HMAC-SHA-256 chain with `key`.
    pub fn hmac(key: Vec<u8>) -> Chain {
        // HMAC accepts keys of any length: the error case cannot occur,
        // and would only mean a keyless chain, which the caller refused.
        Chain {
            mac: Hmac::<Sha256>::new_from_slice(&key).ok(),
        }
    }

    /// The chain of `[log] chain_key_file`: plain SHA-256 when the path is
    /// empty, else HMAC with the file's bytes. An empty key file is refused:
    /// it would silently turn the HMAC into a keyless hash.
    pub fn from_key_file(path: &std::path::Path) -> std::io::Result<Chain> {
        if path.as_os_str().is_empty() {
            return Ok(Chain::sha256());
        }
        let key = std::fs::read(path)?;
        if key.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the chain key file is empty",
            ));
        }
        Ok(Chain::hmac(key))
    }

    /// `h` of a record: first 128 bits, hex, of the hash over the previous
    /// `h` and the record's line without its `h`.
    pub fn next(&self, prev: &str, body: &str) -> String {
        let hex = self.next_hex(prev, body);
        String::from_utf8_lossy(&hex).into_owned()
    }

    /// [`Chain::next`] as 32 ASCII hex bytes, without allocating: the
    /// verifier's per-record path.
    pub fn next_hex(&self, prev: &str, body: &str) -> [u8; 32] {
        let digest: [u8; 32] = match &self.mac {
            None => {
                let mut h = Sha256::new();
                h.update(prev.as_bytes());
                h.update(body.as_bytes());
                h.finalize().into()
            }
            Some(mac) => {
                let mut m = mac.clone();
                m.update(prev.as_bytes());
                m.update(body.as_bytes());
                m.finalize().into_bytes().into()
            }
        };
        let mut out = [0u8; 32];
        // 16 bytes always fit 32 hex digits.
        let _ = hex::encode_to_slice(&digest[..16], &mut out);
        out
    }
}

/// Writer-side values stamped on an entry when it is rendered.
#[derive(Debug, Clone)]
pub struct Stamp<'a> {
    /// Writer's clock (already clamped to be non-decreasing).
    pub ts: DateTime<Utc>,
    /// Host name written after the timestamp.
    pub host: &'a str,
    /// Sequence number.
    pub seq: u64,
}

/// Formats a writer timestamp: UTC, microseconds, `Z`.
pub fn format_ts(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The bracket's source: `Console`, `Portal`, the Engine's name, `Appliance`.
pub fn source_of(e: &Entry) -> String {
    match e.component {
        Component::WebConsole => "Console".into(),
        Component::Portal => "Portal".into(),
        // A reserved name (refused by the protocol) never reaches the
        // bracket from any other path either; `engine=` keeps it.
        Component::Engine => e
            .engine
            .clone()
            .filter(|s| !s.is_empty() && !crate::catalog::is_reserved_engine_name(s))
            .unwrap_or_else(|| "Engine".into()),
        Component::Appliance => "Appliance".into(),
    }
}

/// The rendered parts of a record before the trailer.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// Bracket source.
    pub source: String,
    /// Catalog category.
    pub category: String,
    /// Account (user, documented fixed account, or `-`).
    pub account: String,
    /// The message text.
    pub text: String,
}

/// Resolves source, category, account and text from the catalog (docs/record-format.md).
pub fn render(e: &Entry) -> Rendered {
    let infos = catalog::lookup(e.code);
    // Pick the entry whose description (or alias) the event names; with
    // several candidates and no match, keep all descriptions joined.
    let chosen = match infos.len() {
        0 => None,
        1 => Some(&infos[0]),
        _ => e.description.as_deref().and_then(|d| {
            infos
                .iter()
                .find(|i| i.description == d || i.aliases.iter().any(|a| a == d))
        }),
    };
    let category = chosen
        .or(infos.first())
        .map(|i| i.category.clone())
        .unwrap_or_else(|| catalog::default_category(e.code).to_string());
    let description = match chosen {
        Some(i) => i.description.clone(),
        None if infos.is_empty() => "(uncatalogued)".to_string(),
        None => infos
            .iter()
            .map(|i| i.description.as_str())
            .collect::<Vec<_>>()
            .join(" / "),
    };
    let account = e
        .user
        .clone()
        .filter(|u| !u.is_empty())
        .or_else(|| chosen.or(infos.first()).and_then(|i| i.account.clone()))
        .unwrap_or_else(|| "-".to_string());
    let text = if let Some(m) = &e.message {
        m.clone()
    } else if let Some(fmt) = chosen.and_then(|i| i.format.as_deref()) {
        fill_format(fmt, e, &account)
    } else {
        description
    };
    Rendered {
        source: source_of(e),
        category,
        account,
        text,
    }
}

/// Fills `{placeholder}`s of a documented format from the entry: `account`
/// from the account, others from `details` (then source fields). A
/// placeholder with no value is left as written, so nothing false is shown.
pub fn fill_format(fmt: &str, e: &Entry, account: &str) -> String {
    let mut out = String::with_capacity(fmt.len() + 16);
    let mut rest = fmt;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                let value = if name == "account" {
                    e.details
                        .0
                        .get("account")
                        .map(|v| v.to_string())
                        .or_else(|| Some(account.to_string()))
                } else {
                    e.details
                        .0
                        .get(name)
                        .map(|v| v.to_string())
                        .or_else(|| e.get_field(name).map(str::to_string))
                };
                match value {
                    Some(v) => out.push_str(&v),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The ordered `key=value` fields of a record after `seq`, `pid`, `uid`,
/// `gid`: the event's own, then `details.*`, then source fields.
pub fn trailer_fields(e: &Entry) -> Vec<(String, String)> {
    let mut f = Vec::new();
    let mut push = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            f.push((k.to_string(), v.clone()));
        }
    };
    // Every field the sender gave is kept (nothing lost), even where it
    // also shaped the bracket or the text.
    push("client", &e.client);
    push("engine", &e.engine);
    push("time", &e.time);
    push("id", &e.id);
    push("description", &e.description);
    for (k, v) in &e.details.0 {
        f.push((format!("details.{k}"), v.to_string()));
    }
    for (k, v) in &e.fields {
        f.push((k.clone(), v.clone()));
    }
    f
}

/// Renders a text record without `h` (the chain input) into `out`.
pub fn text_body(e: &Entry, st: &Stamp<'_>, out: &mut String) {
    let r = render(e);
    out.push_str(&format_ts(st.ts));
    out.push(' ');
    escape_host(st.host, out);
    out.push_str(" [");
    escape_unquoted(&r.source, out);
    out.push('|');
    escape_unquoted(&r.category, out);
    let _ = write!(out, "|{}|", e.code);
    escape_unquoted(&r.account, out);
    out.push_str("] ");
    escape_unquoted(&r.text, out);
    let _ = write!(
        out,
        " | seq={} pid={} uid={} gid={}",
        st.seq, e.origin.pid, e.origin.uid, e.origin.gid
    );
    for (k, v) in trailer_fields(e) {
        out.push(' ');
        out.push_str(&k);
        out.push('=');
        escape_quoted(&v, out);
    }
}

/// Renders a JSON record without `h` (the chain input): the closing brace
/// is included; [`seal`] inserts `h` before it.
pub fn json_body(e: &Entry, st: &Stamp<'_>) -> String {
    let r = render(e);
    let fields = trailer_fields(e);
    let view = JsonView {
        ts: st.ts,
        host: st.host,
        source: &r.source,
        category: &r.category,
        code: e.code,
        account: &r.account,
        text: &r.text,
        seq: st.seq,
        origin: e.origin,
        fields: &fields,
        h: None,
    };
    // serde_json escapes every control character, so no newline can appear.
    json_escape_more(&Value::Object(view.to_map()).to_string())
}

/// The JSON layout of a record, in one place: what the writer renders
/// (without `h`, the chain input) and what `nxaudit query --json` prints
/// of a parsed line (with `h`) share member names and order.
pub struct JsonView<'a> {
    /// Writer timestamp.
    pub ts: DateTime<Utc>,
    /// Host name.
    pub host: &'a str,
    /// Bracket source.
    pub source: &'a str,
    /// Category.
    pub category: &'a str,
    /// Audit code.
    pub code: u32,
    /// Account.
    pub account: &'a str,
    /// Text.
    pub text: &'a str,
    /// Sequence number.
    pub seq: u64,
    /// Sender credentials.
    pub origin: Origin,
    /// Trailer fields, in order.
    pub fields: &'a [(String, String)],
    /// Chain value, when the record has one already.
    pub h: Option<&'a str>,
}

impl JsonView<'_> {
    /// The record as a JSON object.
    pub fn to_map(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("ts".into(), Value::String(format_ts(self.ts)));
        m.insert("host".into(), Value::String(self.host.to_string()));
        m.insert("source".into(), Value::String(self.source.to_string()));
        m.insert("category".into(), Value::String(self.category.to_string()));
        m.insert("code".into(), Value::from(self.code));
        m.insert("account".into(), Value::String(self.account.to_string()));
        m.insert("text".into(), Value::String(self.text.to_string()));
        m.insert("seq".into(), Value::from(self.seq));
        m.insert("pid".into(), Value::from(self.origin.pid));
        m.insert("uid".into(), Value::from(self.origin.uid));
        m.insert("gid".into(), Value::from(self.origin.gid));
        let fields: Map<String, Value> = self
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        m.insert("fields".into(), Value::Object(fields));
        if let Some(h) = self.h {
            m.insert("h".into(), Value::String(h.to_string()));
        }
        m
    }
}

/// Rewrites `|`, `[`, `]`, DEL and invisible characters of serialized JSON as
/// `\uXXXX`, so a JSON log line, like a text one, cannot look like a
/// bracket to `grep` or hide characters from a reader. Sound because a
/// record has no arrays: these characters only occur inside strings, never
/// right after a `\` (serde_json escapes only `"`, `\` and controls).
fn json_escape_more(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if matches!(c, '|' | '[' | ']' | '\u{7f}') || is_invisible(c) {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{u:04x}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Appends `h` to a body, giving the final line (without newline).
pub fn seal(format: Format, body: &str, h: &str) -> String {
    let mut out = String::with_capacity(body.len() + h.len() + 8);
    for part in seal_parts(format, body, h) {
        out.push_str(part);
    }
    out
}

/// The pieces of a sealed line, in order.
fn seal_parts<'a>(format: Format, body: &'a str, h: &'a str) -> [&'a str; 4] {
    match format {
        Format::Text => [body, " h=", h, ""],
        Format::Json => [
            body.strip_suffix('}').unwrap_or(body),
            ",\"h\":\"",
            h,
            "\"}",
        ],
    }
}

/// [`seal`], appended to `out` (the writer's batch) without a copy of
/// the line in between.
pub fn seal_into(format: Format, body: &str, h: &str, out: &mut Vec<u8>) {
    for part in seal_parts(format, body, h) {
        out.extend_from_slice(part.as_bytes());
    }
}

/// Errors reading a record line back.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The line does not have the record shape.
    #[error("malformed record: {0}")]
    Malformed(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::DetailValue;
    use proptest::prelude::*;

    fn entry() -> Entry {
        let mut e = Entry::appliance(60001);
        e.origin = Origin {
            pid: 1,
            uid: 2,
            gid: 3,
        };
        e
    }

    fn stamp() -> Stamp<'static> {
        Stamp {
            ts: DateTime::parse_from_rfc3339("2026-11-25T15:08:39.123456Z")
                .unwrap()
                .with_timezone(&Utc),
            host: "appliance1",
            seq: 42,
        }
    }

    #[test]
    fn text_roundtrip_with_forgery_attempt() {
        let mut e = entry()
            .with_user("ad|m]in")
            .with_message("hi | seq=1 pid=1 uid=1 gid=1 h=00000000000000000000000000000000\nX");
        e.client = Some("a\" h=\"x".into());
        let mut body = String::new();
        text_body(&e, &stamp(), &mut body);
        let h = Chain::sha256().next(GENESIS, &body);
        let line = seal(Format::Text, &body, &h);
        assert!(!line.contains('\n'));
        let p = parse_text(&line).unwrap();
        assert_eq!(p.seq, 42);
        assert_eq!(p.account, "ad|m]in");
        assert_eq!(p.text, e.message.clone().unwrap());
        assert_eq!(p.field("client"), Some("a\" h=\"x"));
        assert_eq!(p.h, h);
        assert_eq!(p.body, body);
    }

    #[test]
    fn json_roundtrip() {
        let e = entry().with_user("x").field("unit", "nxengine@a.service");
        let body = json_body(&e, &stamp());
        let h = Chain::sha256().next(GENESIS, &body);
        let line = seal(Format::Json, &body, &h);
        let p = parse_json(&line).unwrap();
        assert_eq!(p.body, body);
        assert_eq!(p.h, h);
        assert_eq!(p.field("unit"), Some("nxengine@a.service"));
        assert_eq!(line_timestamp(&line), Some(stamp().ts));
    }

    #[test]
    fn parsed_record_prints_the_layout_it_was_written_in() {
        let e = entry()
            .with_user("x")
            .with_message("a|b")
            .field("unit", "u");
        let body = json_body(&e, &stamp());
        let h = Chain::sha256().next(GENESIS, &body);
        let line = seal(Format::Json, &body, &h);
        let written: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parse_json(&line).unwrap().to_json(), written);
        // A text line of the same entry prints the same object.
        let mut text = String::new();
        text_body(&e, &stamp(), &mut text);
        let th = Chain::sha256().next(GENESIS, &text);
        let mut from_text = parse_text(&seal(Format::Text, &text, &th))
            .unwrap()
            .to_json();
        from_text["h"] = Value::String(h.clone());
        assert_eq!(from_text, written);
    }

    #[test]
    fn hmac_differs() {
        assert_ne!(
            Chain::sha256().next(GENESIS, "x"),
            Chain::hmac(b"k".to_vec()).next(GENESIS, "x")
        );
    }

    /// Renders, chains and seals `e` in `format`.
    fn line_of(e: &Entry, st: &Stamp<'_>, format: Format) -> String {
        let body = match format {
            Format::Text => {
                let mut b = String::new();
                text_body(e, st, &mut b);
                b
            }
            Format::Json => json_body(e, st),
        };
        let h = Chain::sha256().next(GENESIS, &body);
        seal(format, &body, &h)
    }

    #[test]
    fn forged_bracket_and_trailer_are_escaped() {
        let mut e = entry().with_message(
            "[Console|Login|50000|root] Login successful | seq=1 pid=1 uid=0 gid=0 h=00000000000000000000000000000000",
        );
        e.component = Component::Portal;
        e.code = 20206;
        let line = line_of(&e, &stamp(), Format::Text);
        assert_eq!(line.matches('[').count(), 1, "{line}");
        assert_eq!(line.matches('|').count(), 4, "{line}");
        assert!(
            line.contains("\\x5bConsole\\x7cLogin\\x7c50000\\x7croot\\x5d"),
            "{line}"
        );
        let p = parse_text(&line).unwrap();
        assert_eq!(p.seq, 42);
        assert_eq!(p.source, "Portal");
        assert_eq!(p.text, e.message.unwrap());
    }

    #[test]
    fn escapes_have_their_exact_form() {
        let mut out = String::new();
        escape_unquoted("\u{1}\u{7f}\u{85}\u{e007f}\u{ad}|é\n", &mut out);
        assert_eq!(out, "\\x01\\x7f\\u{0085}\\u{e007f}\\u{00ad}\\x7cé\\n");
        assert_eq!(
            unescape(&out).unwrap(),
            "\u{1}\u{7f}\u{85}\u{e007f}\u{ad}|é\n"
        );
    }

    #[test]
    fn invisible_characters_are_escaped_everywhere() {
        let mut e = entry()
            .with_user("ad\u{202e}min")
            .with_message("a\u{200b}b\u{feff}\u{ad}\u{2066}");
        e.component = Component::Engine;
        e.code = 10009;
        e.engine = Some("E\u{200f}1".into());
        e.details
            .0
            .insert("k".into(), DetailValue::Text("v\u{202e}\u{2028}".into()));
        for format in [Format::Text, Format::Json] {
            let line = line_of(&e, &stamp(), format);
            assert!(!line.chars().any(is_invisible), "{line}");
            let p = parse_line(&line).unwrap();
            assert_eq!(p.account, "ad\u{202e}min");
            assert_eq!(p.source, "E\u{200f}1");
            assert_eq!(p.text, "a\u{200b}b\u{feff}\u{ad}\u{2066}");
            assert_eq!(p.field("details.k"), Some("v\u{202e}\u{2028}"));
        }
        let line = line_of(&e, &stamp(), Format::Text);
        assert!(line.contains("ad\\u{202e}min"), "{line}");
        assert!(line.contains("a\\u{200b}b"), "{line}");
    }

    #[test]
    fn reserved_engine_name_never_reaches_the_bracket() {
        let mut e = entry();
        e.component = Component::Engine;
        e.code = 10009;
        e.engine = Some("portal ".into());
        let p = parse_text(&line_of(&e, &stamp(), Format::Text)).unwrap();
        assert_eq!(p.source, "Engine");
        assert_eq!(p.field("engine"), Some("portal "));
    }

    #[test]
    fn odd_host_parses_back() {
        let st = Stamp {
            host: "app 1 [x]",
            ..stamp()
        };
        let p = parse_text(&line_of(&entry(), &st, Format::Text)).unwrap();
        assert_eq!(p.host, "app 1 [x]");
        assert_eq!(p.seq, 42);
    }

    #[test]
    fn several_descriptions_joined_with_slash_unless_named() {
        let infos = catalog::lookup(52010);
        assert!(infos.len() >= 2, "52010 is listed twice: {infos:?}");
        let mut e = entry();
        e.component = Component::WebConsole;
        e.code = 52010;
        let all: Vec<&str> = infos.iter().map(|i| i.description.as_str()).collect();
        assert_eq!(render(&e).text, all.join(" / "));
        e.description = Some(infos[1].description.clone());
        assert_eq!(render(&e).text, infos[1].description);
        e.description = Some("something else".into());
        assert_eq!(render(&e).text, all.join(" / "));
        let p = parse_text(&line_of(&e, &stamp(), Format::Text)).unwrap();
        assert_eq!(p.text, all.join(" / "));
    }

    #[test]
    fn old_backslash_escapes_still_parse() {
        let line = "2026-11-25T15:08:39.123456Z h [Engine\\|1|General|10009|a\\]b] t | seq=7 pid=1 uid=2 gid=3 h=00000000000000000000000000000000";
        let p = parse_text(line).unwrap();
        assert_eq!(p.source, "Engine|1");
        assert_eq!(p.account, "a]b");
        assert_eq!(p.seq, 7);
    }

    /// Strings that mix hostile fragments with arbitrary characters.
    fn hostile() -> impl Strategy<Value = String> {
        const FRAGMENTS: &[&str] = &[
            "[Console|Login|50000|",
            "[Portal|USER|20206|root] ",
            " | seq=1 pid=1 uid=0 gid=0 h=00000000000000000000000000000000",
            " h=",
            "\\",
            "\\x7c",
            "\"",
            "=\"",
            "\n",
            "\r",
            "|",
            "[",
            "]",
            " ",
            "\u{202e}",
            "\u{200b}",
            "\u{85}",
            "\u{2028}",
            "\u{feff}",
            "\u{e0041}",
        ];
        prop::collection::vec(
            prop_oneof![
                any::<char>().prop_map(String::from),
                prop::sample::select(FRAGMENTS).prop_map(String::from),
            ],
            0..10,
        )
        .prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn escape_roundtrips(s in any::<String>()) {
            let mut out = String::new();
            escape_unquoted(&s, &mut out);
            prop_assert!(!out.contains('\n') && !out.contains('\r'));
            prop_assert_eq!(unescape(&out).unwrap(), s.clone());
            let mut q = String::new();
            escape_quoted(&s, &mut q);
            prop_assert!(!q.contains('\n') && !q.contains('\r'));
            prop_assert_eq!(unescape(&q[1..q.len()-1]).unwrap(), s);
        }

        /// Arbitrary text in every field: one line, exactly one bracket
        /// (so no documented `grep '\[Source|Category|Code|'` matches
        /// anything but the real one), no invisible character, and every
        /// field parses back equal, in both formats.
        #[test]
        fn hostile_fields_cannot_forge(
            host in hostile(), user in hostile(), client in hostile(), engine in hostile(),
            description in hostile(), time in hostile(), msg in hostile(), id in hostile(),
            detail in hostile(), portal in any::<bool>(),
        ) {
            let mut e = entry().with_user(user).with_message(msg);
            (e.component, e.code) = if portal {
                (Component::Portal, 20206)
            } else {
                (Component::Engine, 10009)
            };
            e.client = Some(client);
            e.engine = Some(engine);
            e.description = Some(description);
            e.time = Some(time);
            e.id = Some(id);
            e.details.0.insert("x".into(), DetailValue::Text(detail));
            let st = Stamp { host: &host, ..stamp() };
            let r = render(&e);
            for format in [Format::Text, Format::Json] {
                let line = line_of(&e, &st, format);
                prop_assert!(!line.contains('\n') && !line.contains('\r'), "{}", line);
                prop_assert!(!line.chars().any(is_invisible), "{}", line);
                let brackets = if format == Format::Text { 1 } else { 0 };
                prop_assert_eq!(line.matches('[').count(), brackets, "{}", line);
                prop_assert_eq!(line.matches(']').count(), brackets, "{}", line);
                // Text: three in the bracket, one before the trailer.
                prop_assert_eq!(line.matches('|').count(), brackets * 4, "{}", line);
                let p = parse_line(&line).unwrap();
                prop_assert_eq!(&p.host, &host);
                prop_assert_eq!(&p.source, &r.source);
                prop_assert_eq!(&p.category, &r.category);
                prop_assert_eq!(p.code, e.code);
                prop_assert_eq!(&p.account, &r.account);
                prop_assert_eq!(&p.text, &r.text);
                prop_assert_eq!(p.seq, 42);
                prop_assert_eq!((p.pid, p.uid, p.gid), (1, 2, 3));
                prop_assert_eq!(&p.fields, &trailer_fields(&e));
                prop_assert_eq!(Chain::sha256().next(GENESIS, &p.body), p.h);
            }
        }
        #[test]
        fn any_entry_roundtrips(user in any::<String>(), msg in any::<String>(), client in any::<String>()) {
            let mut e = entry().with_user(user.clone()).with_message(msg.clone());
            e.client = Some(client.clone());
            let mut body = String::new();
            text_body(&e, &stamp(), &mut body);
            let line = seal(Format::Text, &body, GENESIS);
            prop_assert!(!line.contains('\n'));
            let p = parse_text(&line).unwrap();
            prop_assert_eq!(&p.text, &msg);
            prop_assert_eq!(p.field("client"), Some(client.as_str()));
            if !user.is_empty() { prop_assert_eq!(p.account, user); }
        }
    }
}

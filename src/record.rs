//! The audit record: what a source hands the writer ([`Entry`]), how it is
//! rendered as one line (text or JSON), escaped, and hash-chained, and how a
//! line is parsed back ([`ParsedRecord`]) by `verify`, `query`, the API and
//! the syslog forwarder.
//!
//! Text line shape (SPEC §4), Nexthink's documented bracket first so that
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
use crate::protocol::{Component, Details, Event};

/// The chain value before the first record of a fresh log.
pub const GENESIS: &str = "00000000000000000000000000000000";

/// Who submitted an entry: the peer credentials of a socket client, or the
/// daemon itself for its own sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Keys must satisfy [`crate::protocol::valid_detail_key`].
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

    /// Builds an entry from a validated socket event.
    pub fn from_event(ev: Event, component: Component, origin: Origin) -> Entry {
        Entry {
            code: ev.code,
            component,
            user: ev.user,
            client: ev.client,
            engine: ev.engine,
            description: ev.description,
            time: ev.time,
            message: ev.message,
            details: ev.details,
            id: ev.id,
            origin,
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
            .filter(|s| !s.is_empty() && !crate::protocol::is_reserved_engine_name(s))
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

/// Resolves source, category, account and text from the catalog (SPEC §4).
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

/// Escapes `s` for the text or a bracket field (unquoted): `\\`, `\n`,
/// control bytes and the bracket characters `|`, `[`, `]` as `\xNN`,
/// invisible or reordering characters as `\u{…}` (see [`is_invisible`]).
/// The result has no raw `|`, `[` or `]`, so it can neither end a bracket
/// field, open a second bracket, nor imitate the ` | ` before the trailer.
pub fn escape_unquoted(s: &str, out: &mut String) {
    escape_into(s, out, b"");
}

/// Escapes the host name token: as [`escape_unquoted`], plus the space
/// that ends the token (a configured name is validated, this keeps any
/// other name parseable).
pub fn escape_host(s: &str, out: &mut String) {
    escape_into(s, out, b" ");
}

/// Escapes `s` as a quoted value (quotes included): as [`escape_unquoted`],
/// plus `\"`. The bracket characters are escaped in values too, so that no
/// value can look like a bracket to `grep`.
pub fn escape_quoted(s: &str, out: &mut String) {
    out.push('"');
    escape_into(s, out, b"\"");
    out.push('"');
}

/// The one escaping loop behind [`escape_unquoted`], [`escape_host`] and
/// [`escape_quoted`]: runs of characters that need nothing are copied as
/// one slice (the writer renders every record on one thread, so this is
/// its hot path); `extra` are further ASCII bytes to escape (`"` in
/// values, the space in the host token).
fn escape_into(s: &str, out: &mut String, extra: &[u8]) {
    let bytes = s.as_bytes();
    let mut plain = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii() {
            let special = b < 0x20
                || b == 0x7f
                || matches!(b, b'\\' | b'|' | b'[' | b']')
                || extra.contains(&b);
            if special {
                out.push_str(&s[plain..i]);
                match b {
                    b'\\' => out.push_str("\\\\"),
                    b'"' => out.push_str("\\\""),
                    b'\n' => out.push_str("\\n"),
                    _ => {
                        out.push_str("\\x");
                        push_hex(out, u32::from(b), 2);
                    }
                }
                plain = i + 1;
            }
            i += 1;
            continue;
        }
        let Some(c) = s[i..].chars().next() else {
            break;
        };
        if is_invisible(c) {
            out.push_str(&s[plain..i]);
            out.push_str("\\u{");
            push_hex(out, c as u32, 4);
            out.push('}');
            plain = i + c.len_utf8();
        }
        i += c.len_utf8();
    }
    out.push_str(&s[plain..]);
}

/// Appends `v` in lower-case hex, at least `min` digits. Not `write!`:
/// the formatting machinery costs several times the escaping itself, and a
/// line of invisible characters is escaped character by character on the
/// writer thread.
fn push_hex(out: &mut String, v: u32, min: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 8];
    let mut n = 0;
    let mut v = v;
    while n < min || v != 0 {
        digits[7 - n] = HEX[(v & 0xf) as usize];
        v >>= 4;
        n += 1;
        if n == 8 {
            break;
        }
    }
    for &d in &digits[8 - n..] {
        out.push(char::from(d));
    }
}

/// Whether `c` is invisible or reorders text (Unicode categories Cf, Zl,
/// Zp, as of Unicode 15, plus C1 controls): a reader would not see it, or
/// would see the text around it in another order, so it is written as
/// `\u{…}`. A short range table instead of a Unicode crate: these
/// categories are small and change rarely.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c as u32,
        0x80..=0x9f
            | 0xad
            | 0x600..=0x605
            | 0x61c
            | 0x6dd
            | 0x70f
            | 0x890..=0x891
            | 0x8e2
            | 0x180e
            | 0x200b..=0x200f
            | 0x2028..=0x202e
            | 0x2060..=0x2064
            | 0x2066..=0x206f
            | 0xfeff
            | 0xfff9..=0xfffb
            | 0x110bd
            | 0x110cd
            | 0x13430..=0x1343f
            | 0x1bca0..=0x1bca3
            | 0x1d173..=0x1d17a
            | 0xe0001
            | 0xe0020..=0xe007f
    )
}

/// Reverses [`escape_unquoted`] / the inside of [`escape_quoted`].
pub fn unescape(s: &str) -> Result<String, RecordError> {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            // `\|`, `\[`, `\]`: how logs written before `\xNN` escaped them.
            Some(c @ ('|' | '[' | ']')) => out.push(c),
            Some('n') => out.push('\n'),
            Some('x') => {
                let h: String = it.by_ref().take(2).collect();
                let v = u32::from_str_radix(&h, 16)
                    .map_err(|_| RecordError::Malformed(format!("bad \\x escape {h:?}")))?;
                out.push(
                    char::from_u32(v)
                        .ok_or_else(|| RecordError::Malformed(format!("bad \\x escape {h:?}")))?,
                );
            }
            Some('u') => {
                if it.next() != Some('{') {
                    return Err(RecordError::Malformed("bad \\u escape".into()));
                }
                let h: String = it.by_ref().take_while(|c| *c != '}').collect();
                let v = u32::from_str_radix(&h, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| RecordError::Malformed(format!("bad \\u escape {h:?}")))?;
                out.push(v);
            }
            other => {
                return Err(RecordError::Malformed(format!(
                    "unknown escape \\{}",
                    other.map(String::from).unwrap_or_default()
                )))
            }
        }
    }
    Ok(out)
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
    let mut m = Map::new();
    m.insert("ts".into(), Value::String(format_ts(st.ts)));
    m.insert("host".into(), Value::String(st.host.to_string()));
    m.insert("source".into(), Value::String(r.source));
    m.insert("category".into(), Value::String(r.category));
    m.insert("code".into(), Value::from(e.code));
    m.insert("account".into(), Value::String(r.account));
    m.insert("text".into(), Value::String(r.text));
    m.insert("seq".into(), Value::from(st.seq));
    m.insert("pid".into(), Value::from(e.origin.pid));
    m.insert("uid".into(), Value::from(e.origin.uid));
    m.insert("gid".into(), Value::from(e.origin.gid));
    let mut fields = Map::new();
    for (k, v) in trailer_fields(e) {
        fields.insert(k, Value::String(v));
    }
    m.insert("fields".into(), Value::Object(fields));
    // serde_json escapes every control character, so no newline can appear.
    json_escape_more(&Value::Object(m).to_string())
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
    match format {
        Format::Text => format!("{body} h={h}"),
        Format::Json => {
            let inner = body.strip_suffix('}').unwrap_or(body);
            format!("{inner},\"h\":\"{h}\"}}")
        }
    }
}

/// Errors reading a record line back.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The line does not have the record shape.
    #[error("malformed record: {0}")]
    Malformed(String),
}

/// A record line parsed back.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRecord {
    /// Writer timestamp.
    pub ts: DateTime<Utc>,
    /// Host name.
    pub host: String,
    /// Bracket source (`Console`, `Portal`, Engine name, `Appliance`).
    pub source: String,
    /// Category.
    pub category: String,
    /// Code.
    pub code: u32,
    /// Account.
    pub account: String,
    /// Text.
    pub text: String,
    /// Sequence number.
    pub seq: u64,
    /// Sender pid.
    pub pid: u32,
    /// Sender uid.
    pub uid: u32,
    /// Sender gid.
    pub gid: u32,
    /// The other fields, unescaped, in order.
    pub fields: Vec<(String, String)>,
    /// Chain value.
    pub h: String,
    /// The chain input: the line without `h`.
    pub body: String,
}

impl ParsedRecord {
    /// The value of a trailer field.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The component, from the code range.
    pub fn component(&self) -> Option<Component> {
        Component::of_code(self.code)
    }
}

/// Reads just the timestamp at the start of a line (text or JSON), for
/// time searches that must not parse whole records.
pub fn line_timestamp(line: &str) -> Option<DateTime<Utc>> {
    let ts = if let Some(rest) = line.strip_prefix("{\"ts\":\"") {
        rest.split('"').next()?
    } else {
        line.split(' ').next()?
    };
    DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Parses a record line of either format (newline excluded).
pub fn parse_line(line: &str) -> Result<ParsedRecord, RecordError> {
    if line.starts_with('{') {
        parse_json(line)
    } else {
        parse_text(line)
    }
}

fn malformed(s: &str) -> RecordError {
    RecordError::Malformed(s.to_string())
}

/// Parses a text record line.
pub fn parse_text(line: &str) -> Result<ParsedRecord, RecordError> {
    let (ts_s, rest) = line
        .split_once(' ')
        .ok_or_else(|| malformed("no timestamp"))?;
    let ts = DateTime::parse_from_rfc3339(ts_s)
        .map_err(|_| malformed("bad timestamp"))?
        .with_timezone(&Utc);
    let (host, rest) = rest.split_once(' ').ok_or_else(|| malformed("no host"))?;
    let rest = rest
        .strip_prefix('[')
        .ok_or_else(|| malformed("no bracket"))?;
    // Bracket fields: split on unescaped `|`, end at unescaped `]`.
    let mut parts = Vec::with_capacity(4);
    let mut cur = String::new();
    let mut end = None;
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                cur.push('\\');
                if let Some((_, n)) = chars.next() {
                    cur.push(n);
                }
            }
            '|' => parts.push(std::mem::take(&mut cur)),
            ']' => {
                parts.push(std::mem::take(&mut cur));
                end = Some(i);
                break;
            }
            c => cur.push(c),
        }
    }
    let end = end.ok_or_else(|| malformed("unterminated bracket"))?;
    if parts.len() != 4 {
        return Err(malformed("bracket needs 4 fields"));
    }
    let after = rest[end + 1..]
        .strip_prefix(' ')
        .ok_or_else(|| malformed("no space after bracket"))?;
    // Find the ` | ` after which a well-formed trailer runs to the end.
    let mut search = 0;
    let (text_raw, trailer) = loop {
        let pos = after[search..]
            .find(" | seq=")
            .map(|p| p + search)
            .ok_or_else(|| malformed("no trailer"))?;
        if let Some(t) = parse_trailer(&after[pos + 3..]) {
            break (&after[..pos], t);
        }
        search = pos + 1;
    };
    let code = parts[2].parse::<u32>().map_err(|_| malformed("bad code"))?;
    let h_pos = line.len() - trailer.h.len() - 3;
    Ok(ParsedRecord {
        ts,
        host: unescape(host)?,
        source: unescape(&parts[0])?,
        category: unescape(&parts[1])?,
        code,
        account: unescape(&parts[3])?,
        text: unescape(text_raw)?,
        seq: trailer.seq,
        pid: trailer.pid,
        uid: trailer.uid,
        gid: trailer.gid,
        fields: trailer.fields,
        h: trailer.h,
        body: line[..h_pos].to_string(),
    })
}

struct Trailer {
    seq: u64,
    pid: u32,
    uid: u32,
    gid: u32,
    fields: Vec<(String, String)>,
    h: String,
}

/// Parses `seq=N pid=N uid=N gid=N (key="v")* h=HEX` strictly, to the end.
fn parse_trailer(s: &str) -> Option<Trailer> {
    fn num<'a, T: std::str::FromStr>(s: &'a str, key: &str) -> Option<(T, &'a str)> {
        let s = s.strip_prefix(key)?.strip_prefix('=')?;
        let end = s.find(' ').unwrap_or(s.len());
        let v = s[..end].parse().ok()?;
        Some((v, s[end..].strip_prefix(' ').unwrap_or(&s[end..])))
    }
    let (seq, s) = num::<u64>(s, "seq")?;
    let (pid, s) = num::<u32>(s, "pid")?;
    let (uid, s) = num::<u32>(s, "uid")?;
    let (gid, mut s) = num::<u32>(s, "gid")?;
    let mut fields = Vec::new();
    loop {
        if let Some(h) = s.strip_prefix("h=") {
            if h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Some(Trailer {
                    seq,
                    pid,
                    uid,
                    gid,
                    fields,
                    h: h.to_string(),
                });
            }
            return None;
        }
        let eq = s.find("=\"")?;
        let key = &s[..eq];
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return None;
        }
        let body = &s[eq + 2..];
        // Find the closing quote: the first `"` not escaped.
        let mut i = 0;
        let bytes = body.as_bytes();
        let close = loop {
            match bytes.get(i)? {
                b'\\' => i += 2,
                b'"' => break i,
                _ => i += 1,
            }
        };
        let value = unescape(&body[..close]).ok()?;
        fields.push((key.to_string(), value));
        s = body[close + 1..].strip_prefix(' ')?;
    }
}

/// Parses a JSON record line.
pub fn parse_json(line: &str) -> Result<ParsedRecord, RecordError> {
    let inner = line
        .strip_suffix('}')
        .ok_or_else(|| malformed("no closing brace"))?;
    let hpos = inner.rfind(",\"h\":\"").ok_or_else(|| malformed("no h"))?;
    let h = inner[hpos + 6..]
        .strip_suffix('"')
        .ok_or_else(|| malformed("bad h"))?
        .to_string();
    let body = format!("{}}}", &inner[..hpos]);
    let v: Value = serde_json::from_str(line).map_err(|e| malformed(&e.to_string()))?;
    let s = |k: &str| -> Result<String, RecordError> {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| malformed(k))
    };
    let n = |k: &str| -> Result<u64, RecordError> {
        v.get(k).and_then(Value::as_u64).ok_or_else(|| malformed(k))
    };
    let ts = DateTime::parse_from_rfc3339(&s("ts")?)
        .map_err(|_| malformed("bad timestamp"))?
        .with_timezone(&Utc);
    let fields = v
        .get("fields")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    Ok(ParsedRecord {
        ts,
        host: s("host")?,
        source: s("source")?,
        category: s("category")?,
        code: n("code")? as u32,
        account: s("account")?,
        text: s("text")?,
        seq: n("seq")?,
        pid: n("pid")? as u32,
        uid: n("uid")? as u32,
        gid: n("gid")? as u32,
        fields,
        h,
        body,
    })
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

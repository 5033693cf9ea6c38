//! Socket protocol v1: one JSON event per line in, one JSON reply per line out.
//!
//! Parsing is pure (no I/O) so that every rule can be tested on byte strings
//! and fuzzed. A line is checked in this order: size (done by the framing in
//! `listener::conn`), UTF-8, JSON shape, fields, then the code against the
//! catalog ranges. Each refusal maps to exactly one [`ErrorKind`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::catalog::Component;
use crate::record::{Entry, Origin};

/// Largest accepted line, newline excluded (docs/protocol.md).
pub const MAX_LINE: usize = 64 * 1024;
/// Largest accepted `id` (idempotency key), in bytes.
pub const MAX_ID_LEN: usize = 256;
pub use crate::catalog::{is_reserved_engine_name, RESERVED_ENGINE_NAMES};
pub use crate::record::details::{valid_detail_key, DetailValue, Details, MAX_DETAILS};

/// The refusal kinds of docs/protocol.md, as they appear on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Not JSON, not an object, duplicate keys, nesting too deep.
    BadJson,
    /// The line is longer than [`MAX_LINE`].
    TooLarge,
    /// The line is not valid UTF-8.
    BadUtf8,
    /// A required field (`code`) is absent.
    MissingField,
    /// A field the protocol does not define.
    UnknownField,
    /// A field of the wrong type or an invalid value.
    BadField,
    /// A code outside every range, or uncatalogued under `strict_codes`.
    UnknownCode,
    /// The peer may not write events of this component.
    ForbiddenComponent,
    /// The disk is full; the event was not written.
    DiskFull,
    /// Another I/O error; the event was not written.
    WriteFailed,
    /// Too many connections or a full queue.
    Overloaded,
    /// The daemon is stopping.
    ShuttingDown,
}

impl ErrorKind {
    /// The wire name, e.g. `bad_json`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadJson => "bad_json",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::BadUtf8 => "bad_utf8",
            ErrorKind::MissingField => "missing_field",
            ErrorKind::UnknownField => "unknown_field",
            ErrorKind::BadField => "bad_field",
            ErrorKind::UnknownCode => "unknown_code",
            ErrorKind::ForbiddenComponent => "forbidden_component",
            ErrorKind::DiskFull => "disk_full",
            ErrorKind::WriteFailed => "write_failed",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::ShuttingDown => "shutting_down",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: the kind and a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What went wrong, machine-readable.
    pub kind: ErrorKind,
    /// Why, for the humans reading the client's logs.
    pub detail: String,
}

impl Refusal {
    /// Builds a refusal of `kind` with `detail`.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Refusal {
            kind,
            detail: detail.into(),
        }
    }
}

/// An event as sent by a client, after JSON decoding and before validation.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireEvent {
    /// The audit code (required).
    pub code: Option<serde_json::Number>,
    /// Component name; defaults from the peer's mapping.
    pub component: Option<String>,
    /// The acting account.
    pub user: Option<String>,
    /// Remote address of the acting user.
    pub client: Option<String>,
    /// The Engine's name, for Engine events.
    pub engine: Option<String>,
    /// Which description of the code is meant (codes listed twice).
    pub description: Option<String>,
    /// The component's own clock, RFC 3339.
    pub time: Option<String>,
    /// Free text; replaces the documented format.
    pub message: Option<String>,
    /// Flat object of extra values.
    pub details: Option<Details>,
    /// Client-chosen idempotency key.
    pub id: Option<String>,
}

/// Parses and validates one line (without its newline; a trailing `\r` is
/// tolerated). `strict_codes` rejects codes the catalog does not list.
/// The entry's origin is left zero: the peer credentials are the caller's.
pub fn parse_line(line: &[u8], strict_codes: bool) -> Result<Entry, Refusal> {
    if line.len() > MAX_LINE {
        return Err(Refusal::new(
            ErrorKind::TooLarge,
            format!("line is {} bytes, the limit is {MAX_LINE}", line.len()),
        ));
    }
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|e| {
        Refusal::new(
            ErrorKind::BadUtf8,
            format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        )
    })?;
    let trimmed = text.trim_start_matches([' ', '\t']);
    if trimmed.is_empty() {
        return Err(Refusal::new(ErrorKind::BadJson, "empty line"));
    }
    if !trimmed.starts_with('{') {
        return Err(Refusal::new(
            ErrorKind::BadJson,
            "an event must be a JSON object",
        ));
    }
    let wire: WireEvent = serde_json::from_str(text).map_err(classify_json_error)?;
    validate(wire, strict_codes)
}

fn classify_json_error(e: serde_json::Error) -> Refusal {
    use serde_json::error::Category;
    let msg = e.to_string();
    let kind = match e.classify() {
        Category::Io | Category::Syntax | Category::Eof => ErrorKind::BadJson,
        Category::Data => {
            if msg.starts_with("unknown field") {
                ErrorKind::UnknownField
            } else if msg.starts_with("missing field") {
                ErrorKind::MissingField
            } else if msg.starts_with("duplicate field") {
                ErrorKind::BadJson
            } else {
                ErrorKind::BadField
            }
        }
    };
    Refusal::new(kind, msg)
}

fn bad(detail: impl Into<String>) -> Refusal {
    Refusal::new(ErrorKind::BadField, detail)
}

fn check_text(name: &str, v: &Option<String>, max: usize) -> Result<(), Refusal> {
    if let Some(s) = v {
        if s.len() > max {
            return Err(bad(format!("{name} is longer than {max} bytes")));
        }
    }
    Ok(())
}

/// Validates a decoded event (docs/protocol.md) into the entry the writer appends:
/// the one type an event has from here on. Its component is the code's
/// range (a component the client names must match it), resolved here once.
pub fn validate(w: WireEvent, strict_codes: bool) -> Result<Entry, Refusal> {
    let num = w
        .code
        .ok_or_else(|| Refusal::new(ErrorKind::MissingField, "missing field `code`"))?;
    let code = num
        .as_u64()
        .filter(|c| *c <= u64::from(u32::MAX))
        .ok_or_else(|| bad(format!("code must be a positive integer, got {num}")))?
        as u32;
    let range = Component::of_code(code).ok_or_else(|| {
        Refusal::new(
            ErrorKind::UnknownCode,
            format!("code {code} is outside every component range"),
        )
    })?;
    match &w.component {
        None => {}
        Some(name) => {
            let c = Component::parse(name).ok_or_else(|| {
                bad(format!(
                    "component {name:?} is not one of Engine, Portal, WebConsole, Appliance"
                ))
            })?;
            if c != range {
                return Err(bad(format!("code {code} belongs to {range}, not {c}")));
            }
        }
    }
    if strict_codes && !crate::catalog::is_known(code) {
        return Err(Refusal::new(
            ErrorKind::UnknownCode,
            format!("code {code} is not in the catalog (strict_codes)"),
        ));
    }
    check_text("user", &w.user, 256)?;
    check_text("client", &w.client, 256)?;
    check_text("engine", &w.engine, 256)?;
    if let Some(name) = w.engine.as_deref().filter(|n| is_reserved_engine_name(n)) {
        return Err(bad(format!(
            "engine {name:?} is reserved: an Engine name cannot be {}",
            RESERVED_ENGINE_NAMES.join(", ")
        )));
    }
    check_text("description", &w.description, 1024)?;
    check_text("time", &w.time, 64)?;
    if let Some(id) = &w.id {
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(bad(format!("id must be 1-{MAX_ID_LEN} bytes")));
        }
    }
    if let Some(t) = &w.time {
        chrono::DateTime::parse_from_rfc3339(t)
            .map_err(|e| bad(format!("time {t:?} is not RFC 3339: {e}")))?;
    }
    Ok(Entry {
        code,
        component: range,
        user: w.user,
        client: w.client,
        engine: w.engine,
        description: w.description,
        time: w.time,
        message: w.message,
        details: w.details.unwrap_or_default(),
        id: w.id,
        origin: Origin::default(),
        fields: Vec::new(),
    })
}

/// One reply line (docs/protocol.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the event was durably written (or was a duplicate `id`).
    pub ok: bool,
    /// The record's sequence number, when `ok`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub seq: Option<u64>,
    /// The refusal kind, when not `ok`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<ErrorKind>,
    /// Why, when not `ok`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
}

impl Reply {
    /// A successful acknowledgement.
    pub fn ack(seq: u64) -> Reply {
        Reply {
            ok: true,
            seq: Some(seq),
            error: None,
            detail: None,
        }
    }

    /// A refusal.
    pub fn refused(r: Refusal) -> Reply {
        Reply {
            ok: false,
            seq: None,
            error: Some(r.kind),
            detail: Some(r.detail),
        }
    }

    /// The reply as one line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        // Serializing this struct cannot fail: all fields are plain data.
        let mut v = serde_json::to_vec(self).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(line: &str) -> ErrorKind {
        match parse_line(line.as_bytes(), false) {
            Ok(e) => panic!("accepted {line}: {e:?}"),
            Err(r) => r.kind,
        }
    }

    #[test]
    fn accepts_minimal_and_full() {
        let e = parse_line(br#"{"code":50000,"user":"admin"}"#, false).unwrap();
        assert_eq!(e.code, 50000);
        let e = parse_line(
            br#"{"code":20206,"component":"Portal","user":"a","client":"10.0.0.1","time":"2026-01-01T00:00:00Z","details":{"name":"r","n":3,"b":true},"id":"x"}"#,
            false,
        )
        .unwrap();
        assert_eq!(e.details.0.len(), 3);
    }

    #[test]
    fn error_kinds() {
        assert_eq!(kind("not json"), ErrorKind::BadJson);
        assert_eq!(kind("[1]"), ErrorKind::BadJson);
        assert_eq!(kind(""), ErrorKind::BadJson);
        assert_eq!(kind(r#"{"user":"a"}"#), ErrorKind::MissingField);
        assert_eq!(kind(r#"{"code":50000,"x":1}"#), ErrorKind::UnknownField);
        assert_eq!(kind(r#"{"code":"50000"}"#), ErrorKind::BadField);
        assert_eq!(kind(r#"{"code":-1}"#), ErrorKind::BadField);
        assert_eq!(kind(r#"{"code":1.5}"#), ErrorKind::BadField);
        assert_eq!(kind(r#"{"code":99999}"#), ErrorKind::UnknownCode);
        assert_eq!(
            kind(r#"{"code":50000,"component":"Portal"}"#),
            ErrorKind::BadField
        );
        assert_eq!(kind(r#"{"code":50000,"code":50001}"#), ErrorKind::BadJson);
        assert_eq!(
            kind(r#"{"code":50000,"details":{"a":{"b":1}}}"#),
            ErrorKind::BadField
        );
        assert_eq!(
            kind(r#"{"code":50000,"details":{"a b":1}}"#),
            ErrorKind::BadField
        );
        assert_eq!(
            kind(r#"{"code":50000,"time":"yesterday"}"#),
            ErrorKind::BadField
        );
        assert_eq!(
            parse_line(b"{\"code\":50000,\"user\":\"\xff\"}", false)
                .unwrap_err()
                .kind,
            ErrorKind::BadUtf8
        );
    }

    #[test]
    fn reserved_engine_names_are_refused_naming_the_field() {
        for name in ["Portal", "console", " APPLIANCE ", "WebConsole"] {
            let line = format!(r#"{{"code":10009,"engine":{name:?}}}"#);
            let r = parse_line(line.as_bytes(), false).unwrap_err();
            assert_eq!(r.kind, ErrorKind::BadField, "{name}");
            assert!(r.detail.starts_with("engine "), "{}", r.detail);
        }
        for name in ["Engine", "Engine-01", "Portal-2", ""] {
            let line = format!(r#"{{"code":10009,"engine":{name:?}}}"#);
            assert!(parse_line(line.as_bytes(), false).is_ok(), "{name}");
        }
    }
}

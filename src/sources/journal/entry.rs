//! One journal entry as `journalctl --output=json` prints it, and the
//! bounded line reader for journalctl's stdout.
//!
//! Nothing journalctl (or whatever runs in its place) prints may crash the
//! follower or grow memory without bound: lines are capped ([`LineReader`]),
//! non-JSON lines are errors the caller counts ([`LineError`]), and field
//! values come in every shape journalctl uses — a string; an array of
//! numbers for binary or non-UTF-8 data; an array of values for a field
//! present several times; `null` for a value too large to print — and are
//! decoded lossily into text ([`JournalEntry::field`]).

use std::borrow::Cow;

use serde_json::{Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use super::cursor::JournalCursor;
use crate::record::format_ts;

/// Longest line read from journalctl; longer ones are skipped and counted.
pub const MAX_LINE: usize = 1 << 20;

/// Why a line is not a journal entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Not JSON at all.
    #[error("not JSON")]
    NotJson,
    /// JSON, but not an object.
    #[error("not a JSON object")]
    NotObject,
    /// No `__CURSOR` field.
    #[error("no __CURSOR")]
    NoCursor,
    /// A `__CURSOR` that journalctl would not print.
    #[error("invalid __CURSOR")]
    BadCursor,
}

/// A parsed journal entry: its fields, cursor and timestamp.
#[derive(Debug, Clone)]
pub struct JournalEntry {
    fields: Map<String, Value>,
    cursor: JournalCursor,
    realtime_usec: Option<u64>,
}

impl JournalEntry {
    /// Parses one line of `journalctl --output=json`.
    pub fn parse(line: &[u8]) -> Result<JournalEntry, LineError> {
        let v: Value = serde_json::from_slice(line).map_err(|_| LineError::NotJson)?;
        let Value::Object(fields) = v else {
            return Err(LineError::NotObject);
        };
        let cursor = match fields.get("__CURSOR") {
            Some(Value::String(s)) => JournalCursor::parse(s).map_err(|_| LineError::BadCursor)?,
            Some(_) => return Err(LineError::BadCursor),
            None => return Err(LineError::NoCursor),
        };
        let realtime_usec = fields
            .get("__REALTIME_TIMESTAMP")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok());
        Ok(JournalEntry {
            fields,
            cursor,
            realtime_usec,
        })
    }

    /// The entry's cursor.
    pub fn cursor(&self) -> &JournalCursor {
        &self.cursor
    }

    /// The journal's receive time (`__REALTIME_TIMESTAMP`), microseconds
    /// since the epoch.
    pub fn realtime_usec(&self) -> Option<u64> {
        self.realtime_usec
    }

    /// The journal's receive time as RFC 3339 UTC with microseconds, the
    /// form written in `time=`.
    pub fn time_rfc3339(&self) -> Option<String> {
        let us = i64::try_from(self.realtime_usec?).ok()?;
        chrono::DateTime::from_timestamp_micros(us).map(format_ts)
    }

    /// A field decoded as text: binary values lossily, the first of several
    /// values, `None` when absent or `null` (too large to print).
    pub fn field(&self, name: &str) -> Option<Cow<'_, str>> {
        decode(self.fields.get(name)?)
    }

    /// Whether any field came array-encoded (binary, non-UTF-8 or repeated).
    pub fn has_array_fields(&self) -> bool {
        self.fields.values().any(Value::is_array)
    }
}

fn decode(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Array(items) if items.iter().all(Value::is_number) => {
            let bytes: Vec<u8> = items
                .iter()
                .map(|n| {
                    n.as_u64()
                        .and_then(|n| u8::try_from(n).ok())
                        .unwrap_or(b'?')
                })
                .collect();
            Some(Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()))
        }
        // A field present several times: the first value that decodes.
        Value::Array(items) => items.iter().find_map(|i| match i {
            Value::Array(_) | Value::String(_) => decode(i),
            _ => None,
        }),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Owned(b.to_string())),
        Value::Null | Value::Object(_) => None,
    }
}

/// One line from journalctl's stdout.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line, newline removed.
    Complete(Vec<u8>),
    /// A line longer than the cap, skipped; its length.
    TooLong(usize),
}

/// Reads newline-terminated lines of at most `max` bytes. Cancel-safe: the
/// partial line lives in the reader, so `next` may be raced in `select!`.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    max: usize,
    skipping: Option<usize>,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    /// Wraps a buffered reader.
    pub fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            buf: Vec::new(),
            max,
            skipping: None,
        }
    }

    /// The next line; `None` at end of input (a final line without newline
    /// — a child killed mid-write — is dropped).
    pub async fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            let avail = self.inner.fill_buf().await?;
            if avail.is_empty() {
                self.buf.clear();
                self.skipping = None;
                return Ok(None);
            }
            let (chunk_len, complete) = match avail.iter().position(|b| *b == b'\n') {
                Some(i) => (i, true),
                None => (avail.len(), false),
            };
            match self.skipping.as_mut() {
                Some(n) => *n += chunk_len,
                None if self.buf.len() + chunk_len > self.max => {
                    self.skipping = Some(self.buf.len() + chunk_len);
                    self.buf = Vec::new();
                }
                None => self.buf.extend_from_slice(&avail[..chunk_len]),
            }
            self.inner.consume(chunk_len + usize::from(complete));
            if complete {
                return Ok(Some(match self.skipping.take() {
                    Some(n) => Line::TooLong(n),
                    None => Line::Complete(std::mem::take(&mut self.buf)),
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CUR: &str = "s=c00a2fbb5b04453f8290630f5846f5e1;i=1e;b=9e3ca539835a4b8c8b51aed929d383fd;m=1e;t=60a24181e401e;x=4d74fabd22726062";

    #[test]
    fn fields_in_every_shape() {
        let line = format!(
            r#"{{"__CURSOR":"{CUR}","__REALTIME_TIMESTAMP":"1700000000000001","MESSAGE":[72,105,0,255],"UNIT":["a.service","b.service"],"BIG":null,"N":5,"MULTI":[[65],[66]]}}"#
        );
        let e = JournalEntry::parse(line.as_bytes()).unwrap();
        assert_eq!(e.cursor().as_str(), CUR);
        assert_eq!(
            e.time_rfc3339().as_deref(),
            Some("2023-11-14T22:13:20.000001Z")
        );
        assert_eq!(e.field("MESSAGE").as_deref(), Some("Hi\u{0}\u{fffd}"));
        assert_eq!(e.field("UNIT").as_deref(), Some("a.service"));
        assert_eq!(e.field("MULTI").as_deref(), Some("A"));
        assert_eq!(e.field("BIG"), None);
        assert_eq!(e.field("N").as_deref(), Some("5"));
        assert_eq!(e.field("NOPE"), None);
        assert!(e.has_array_fields());
    }

    #[test]
    fn garbage_is_an_error_not_a_crash() {
        let deep = "[".repeat(100_000);
        for (l, want) in [
            ("not json", LineError::NotJson),
            ("[1,2]", LineError::NotObject),
            ("{}", LineError::NoCursor),
            ("{\"__CURSOR\":\"--all\"}", LineError::BadCursor),
            ("{\"__CURSOR\":[1]}", LineError::BadCursor),
            (deep.as_str(), LineError::NotJson),
        ] {
            assert_eq!(
                JournalEntry::parse(l.as_bytes()).unwrap_err(),
                want,
                "{l:.20}"
            );
        }
        assert_eq!(
            JournalEntry::parse(b"\xff\xfe{").unwrap_err(),
            LineError::NotJson
        );
    }

    #[tokio::test]
    async fn line_reader_caps_and_recovers() {
        let mut input = b"short\n".to_vec();
        input.extend(std::iter::repeat(b'x').take(100));
        input.extend_from_slice(b"\nafter\ntorn");
        // A tiny buffer forces lines to span many fill_buf calls.
        let r = tokio::io::BufReader::with_capacity(7, &input[..]);
        let mut lr = LineReader::new(r, 50);
        assert_eq!(
            lr.next_line().await.unwrap(),
            Some(Line::Complete(b"short".to_vec()))
        );
        assert_eq!(lr.next_line().await.unwrap(), Some(Line::TooLong(100)));
        assert_eq!(
            lr.next_line().await.unwrap(),
            Some(Line::Complete(b"after".to_vec()))
        );
        assert_eq!(lr.next_line().await.unwrap(), None);
    }
}

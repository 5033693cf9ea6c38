//! Reading a record line back (text or JSON) into a [`ParsedRecord`], for
//! `verify`, `query`, the API and the syslog forwarder.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::escape::unescape;
use super::RecordError;
use crate::catalog::Component;

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

    /// The record as a JSON object, in the layout of the JSON log format
    /// (see [`super::JsonView`]).
    pub fn to_json(&self) -> Value {
        Value::Object(
            super::JsonView {
                ts: self.ts,
                host: &self.host,
                source: &self.source,
                category: &self.category,
                code: self.code,
                account: &self.account,
                text: &self.text,
                seq: self.seq,
                origin: super::Origin {
                    pid: self.pid,
                    uid: self.uid,
                    gid: self.gid,
                },
                fields: &self.fields,
                h: Some(&self.h),
            }
            .to_map(),
        )
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

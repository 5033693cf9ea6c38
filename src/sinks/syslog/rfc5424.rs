//! RFC 5424 formatting of a record for the local syslog.
//!
//! Format: `<PRI>1 TS HOST nxauditd PID CODE [nxaudit@32473 seq="…"
//! code="…" component="…" source="…" category="…" account="…" pid="…"
//! uid="…" gid="…" <fields…> h="…"] text`, facility authpriv, severity
//! notice for failures and refusals, info otherwise. 32473 is the example
//! enterprise number of RFC 5424 (Nexthink has no registered one here);
//! SD-PARAM values are escaped per RFC 5424 (`"`, `\`, `]`), control
//! characters in values and text as in the log (`\n`, `\xNN`). Messages
//! are kept under 8000 bytes (rsyslog's default maxMessageSize is 8096):
//! long values and text are cut and `truncated="true"` added.

use crate::record::{escape_unquoted, format_ts, ParsedRecord};

/// APP-NAME of forwarded messages.
pub const APP_NAME: &str = "nxauditd";
/// SD-ID of the structured-data element.
pub const SD_ID: &str = "nxaudit@32473";
/// Facility `authpriv`.
pub const FACILITY: u8 = 10;
/// Largest message sent, in bytes.
pub const MAX_MESSAGE: usize = 8000;

/// Severity of a record: notice (5) for failures and refusals, info (6)
/// otherwise.
pub fn severity(code: u32) -> u8 {
    match code {
        60002 | 60102 | 60203 | 60905 | 60906 | 60908 => 5,
        _ => 6,
    }
}

/// A HEADER field: printable US-ASCII without spaces, or `-`.
fn header_token(s: &str, max: usize) -> String {
    let t: String = s
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(max)
        .collect();
    if t.is_empty() {
        "-".into()
    } else {
        t
    }
}

/// An SD-NAME: 1–32 printable US-ASCII except `=`, space, `]`, `"`.
fn sd_name(s: &str) -> String {
    let t: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic() && !matches!(c, '=' | ']' | '"'))
        .take(32)
        .collect();
    if t.is_empty() {
        "_".into()
    } else {
        t
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    &s[..i]
}

/// Appends `name="value"` with the value escaped for RFC 5424.
fn sd_param(out: &mut String, name: &str, value: &str, cap: Option<usize>) {
    let mut esc = String::with_capacity(value.len() + 8);
    escape_unquoted(cap.map_or(value, |c| cut(value, c)), &mut esc);
    out.push(' ');
    out.push_str(&sd_name(name));
    out.push_str("=\"");
    for c in esc.chars() {
        if matches!(c, '"' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

fn structured_data(rec: &ParsedRecord, cap: Option<usize>, truncated: bool) -> String {
    let mut sd = format!("[{SD_ID}");
    let component = rec.component().map(|c| c.to_string()).unwrap_or_default();
    for (k, v) in [
        ("seq", rec.seq.to_string()),
        ("code", rec.code.to_string()),
        ("component", component),
        ("source", rec.source.clone()),
        ("category", rec.category.clone()),
        ("account", rec.account.clone()),
        ("pid", rec.pid.to_string()),
        ("uid", rec.uid.to_string()),
        ("gid", rec.gid.to_string()),
    ] {
        sd_param(&mut sd, k, &v, None);
    }
    for (k, v) in &rec.fields {
        sd_param(&mut sd, k, v, cap);
    }
    sd_param(&mut sd, "h", &rec.h, None);
    if truncated {
        sd_param(&mut sd, "truncated", "true", None);
    }
    sd.push(']');
    sd
}

/// Formats a record as an RFC 5424 message of at most `limit` bytes
/// (not less than the header and fixed parameters need).
pub fn format_rfc5424(rec: &ParsedRecord, procid: u32, limit: usize) -> Vec<u8> {
    let pri = FACILITY * 8 + severity(rec.code);
    let header = format!(
        "<{pri}>1 {} {} {APP_NAME} {procid} {} ",
        format_ts(rec.ts),
        header_token(&rec.host, 255),
        rec.code
    );
    let mut text = String::with_capacity(rec.text.len());
    escape_unquoted(&rec.text, &mut text);
    let mut sd = structured_data(rec, None, false);
    if header.len() + sd.len() + 1 + text.len() > limit {
        for cap in [None, Some(256), Some(32)] {
            sd = structured_data(rec, cap, true);
            if header.len() + sd.len() + 1 < limit {
                break;
            }
        }
        let room = limit.saturating_sub(header.len() + sd.len() + 1);
        let t = cut(&text, room).to_string();
        text = t;
    }
    let mut out = header;
    out.push_str(&sd);
    if !text.is_empty() {
        out.push(' ');
        out.push_str(&text);
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::follow::tests::line;
    use crate::record::parse_line;
    use crate::sources::syslog_msg;

    fn rec(seq: u64) -> ParsedRecord {
        parse_line(&line(seq, 60001, "SSH logon")).unwrap()
    }

    #[test]
    fn rfc5424_roundtrip() {
        let r = rec(42);
        let m = format_rfc5424(&r, 99, MAX_MESSAGE);
        let p = syslog_msg::parse(&m).unwrap();
        assert!(p.wellformed, "{}", String::from_utf8_lossy(&m));
        assert_eq!((p.facility, p.severity), (10, 6));
        assert_eq!(p.app_name.as_deref(), Some("nxauditd"));
        assert_eq!(p.msgid.as_deref(), Some("60001"));
        assert_eq!(p.hostname.as_deref(), Some("appliance1"));
        assert_eq!(p.timestamp.as_deref(), Some("2026-11-25T15:08:39.123456Z"));
        let sd = p.sd(SD_ID).unwrap();
        assert_eq!(sd.param("seq"), Some("42"));
        assert_eq!(sd.param("code"), Some("60001"));
        assert_eq!(sd.param("component"), Some("Appliance"));
        assert_eq!(sd.param("account"), Some("nexthink"));
        assert_eq!(sd.param("client"), Some("2001:db8::1"));
        assert_eq!(sd.param("h"), Some(r.h.as_str()));
        // Quotes and \ survive; the newline and ] arrive escaped as in the log.
        assert_eq!(sd.param("command"), Some("echo \"a\\x5d b\\c\"\\nnext"));
        assert_eq!(p.message, "SSH logon");
        assert_eq!(severity(60002), 5);
    }

    #[test]
    fn long_records_are_cut_but_keep_seq() {
        let big = "é".repeat(20_000);
        let r = parse_line(&line(7, 60101, &big)).unwrap();
        let m = format_rfc5424(&r, 1, MAX_MESSAGE);
        assert!(m.len() <= MAX_MESSAGE, "{}", m.len());
        let p = syslog_msg::parse(&m).unwrap();
        assert!(p.wellformed);
        let sd = p.sd(SD_ID).unwrap();
        assert_eq!(sd.param("seq"), Some("7"));
        assert_eq!(sd.param("truncated"), Some("true"));
        assert!(p.message.starts_with("éé"));
    }
}

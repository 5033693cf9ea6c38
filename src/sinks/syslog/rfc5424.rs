//! RFC 5424 formatting of a record for the local syslog.
//!
//! Format: `<PRI>1 TS HOST nxauditd PID CODE [nxaudit@32473 seq="…"
//! code="…" component="…" source="…" category="…" account="…" pid="…"
//! uid="…" gid="…" <fields…> h="…"] LINE`, facility authpriv, severity
//! notice for failures and refusals, info otherwise. LINE (MSG) is the
//! complete record line as it stands in the audit log, trailer and `h=`
//! included: a template or SIEM that shows only the message still shows
//! source, code, account and fields, and a collector that writes `%msg%`
//! alone holds a copy that verifies like the log (`nxaudit verify
//! --replica`). 32473 is the example enterprise number of RFC 5424
//! (Nexthink has no registered one here); SD-PARAM values are escaped per
//! RFC 5424 (`"`, `\`, `]`), control characters in values as in the log
//! (`\n`, `\xNN`).
//!
//! Size: messages are at most [`MAX_MESSAGE`] bytes; the shipped rsyslog
//! drop-ins raise rsyslog's `maxMessageSize` (default 8 KiB) to 256 KiB so
//! that rsyslog does not cut them. A message over the limit sheds long
//! structured-data values first (`truncated="true"`), never the line. Only
//! if the kernel refuses the datagram (EMSGSIZE, beyond the socket's send
//! buffer) even then is the line cut: that record is sent marked
//! `truncated="true"`, counted in status (`lines_cut`) and logged, and a
//! replica shows it as differing from the log.

use crate::record::{escape_unquoted, format_ts, seal, Format, ParsedRecord};

/// APP-NAME of forwarded messages.
pub const APP_NAME: &str = "nxauditd";
/// SD-ID of the structured-data element.
pub const SD_ID: &str = "nxaudit@32473";
/// Facility `authpriv`.
pub const FACILITY: u8 = 10;
/// Largest message sent, in bytes: room for the longest record line (an
/// event line is at most 64 KiB before escaping) within the default Unix
/// socket send buffer, and under the 256 KiB `maxMessageSize` the shipped
/// rsyslog drop-ins set.
pub const MAX_MESSAGE: usize = 200 * 1024;

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

/// The record's line exactly as it stands in the audit log (text or JSON),
/// rebuilt from the chain input and `h` the parser split it into.
pub fn record_line(rec: &ParsedRecord) -> String {
    let format = if rec.body.starts_with('{') {
        Format::Json
    } else {
        Format::Text
    };
    seal(format, &rec.body, &rec.h)
}

/// Formats a record as an RFC 5424 message of at most `limit` bytes (not
/// less than the header and fixed parameters need). MSG is the complete
/// record line ([`record_line`]); to fit, the structured data's long values
/// are cut first (`truncated="true"`). Only when the header, the fixed
/// parameters and the whole line still exceed `limit` is the line itself
/// cut; the second value returned says so, for the caller to count and
/// report it.
pub fn format_rfc5424(rec: &ParsedRecord, procid: u32, limit: usize) -> (Vec<u8>, bool) {
    let pri = FACILITY * 8 + severity(rec.code);
    let header = format!(
        "<{pri}>1 {} {} {APP_NAME} {procid} {} ",
        format_ts(rec.ts),
        header_token(&rec.host, 255),
        rec.code
    );
    let mut line = record_line(rec);
    let mut sd = structured_data(rec, None, false);
    let mut line_cut = false;
    if header.len() + sd.len() + 1 + line.len() > limit {
        for cap in [Some(256), Some(32), Some(0)] {
            sd = structured_data(rec, cap, true);
            if header.len() + sd.len() + 1 + line.len() <= limit {
                break;
            }
        }
        let room = limit.saturating_sub(header.len() + sd.len() + 1);
        if line.len() > room {
            line_cut = true;
            line = cut(&line, room).to_string();
        }
    }
    let mut out = header;
    out.push_str(&sd);
    out.push(' ');
    out.push_str(&line);
    (out.into_bytes(), line_cut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::follow::tests::line;
    use crate::record::{parse_line, Chain, Entry, Stamp, GENESIS};
    use crate::sources::syslog_msg;
    use chrono::Utc;

    fn rec(seq: u64) -> ParsedRecord {
        parse_line(&line(seq, 60001, "SSH logon")).unwrap()
    }

    #[test]
    fn rfc5424_roundtrip() {
        let r = rec(42);
        let (m, cut) = format_rfc5424(&r, 99, MAX_MESSAGE);
        assert!(!cut);
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
        // MSG is the record line, byte for byte.
        assert_eq!(p.message, line(42, 60001, "SSH logon"));
        assert!(p.message.ends_with(&format!(" h={}", r.h)));
        assert_eq!(severity(60002), 5);
    }

    #[test]
    fn json_records_are_forwarded_as_their_line() {
        let mut e = Entry::appliance(60001).with_user("nexthink");
        e = e.field("port", "22");
        let st = Stamp {
            ts: Utc::now(),
            host: "appliance1",
            seq: 5,
        };
        let body = crate::record::json_body(&e, &st);
        let l = seal(Format::Json, &body, &Chain::sha256().next(GENESIS, &body));
        let r = parse_line(&l).unwrap();
        assert_eq!(record_line(&r), l);
        let (m, _) = format_rfc5424(&r, 1, MAX_MESSAGE);
        assert_eq!(syslog_msg::parse(&m).unwrap().message, l);
    }

    #[test]
    fn long_records_shed_structured_data_not_the_line() {
        let big = "é".repeat(20_000);
        let l = line(7, 60101, &big);
        let mut r = parse_line(&l).unwrap();
        // The whole line fits the limit: sent whole, even though the
        // structured data repeating a long field would not.
        r.fields.push(("details.big".into(), "x".repeat(20_000)));
        let limit = l.len() + 1000;
        let (m, cut) = format_rfc5424(&r, 1, limit);
        assert!(!cut);
        assert!(m.len() <= limit, "{}", m.len());
        let p = syslog_msg::parse(&m).unwrap();
        assert!(p.wellformed);
        let sd = p.sd(SD_ID).unwrap();
        assert_eq!(sd.param("seq"), Some("7"));
        assert_eq!(sd.param("truncated"), Some("true"));
        assert_eq!(p.message, l);

        // Smaller than the line: the line is cut, and the caller is told.
        let (m, cut) = format_rfc5424(&r, 1, 8000);
        assert!(cut);
        assert!(m.len() <= 8000, "{}", m.len());
        let p = syslog_msg::parse(&m).unwrap();
        assert!(p.wellformed);
        assert_eq!(p.sd(SD_ID).unwrap().param("truncated"), Some("true"));
        assert!(l.starts_with(&p.message) && p.message.len() < l.len());

        // The widest event (a 64 KiB line of U+200B, escaped to 8 bytes
        // each) still fits one message whole.
        let widest = parse_line(&line(8, 60101, &"\u{200b}".repeat(64 * 1024 / 3))).unwrap();
        let (m, cut) = format_rfc5424(&widest, 1, MAX_MESSAGE);
        assert!(!cut, "{} bytes", m.len());
    }
}

//! Syslog message parsing: RFC 3164 (BSD) and RFC 5424, pure, no I/O.
//!
//! The syslog intake hands every datagram it receives to [`parse`]. What
//! arrives is whatever rsyslog (or a local program) wrote, so the parser is
//! tolerant the way rsyslog itself is:
//!
//! - RFC 5424: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [MSG]`,
//!   `-` for absent fields, structured data with `\"`, `\\`, `\]` escapes,
//!   an optional UTF-8 BOM before MSG.
//! - RFC 3164 and its local variants: `<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG`,
//!   the same without HOST (what glibc's `syslog()` writes to `/dev/log`),
//!   an RFC 3339 timestamp instead of the BSD one (rsyslog's high-precision
//!   forwarding format), no timestamp, a tag without `[PID]`.
//! - No valid `<PRI>`: RFC 3164 §4.3.3 says to treat the whole datagram as
//!   content with priority 13 (user.notice); so do we.
//!
//! Nothing here can fail on content: every non-empty input gives a message
//! (bytes that are not UTF-8 are replaced), and [`SyslogMessage::wellformed`]
//! says whether the header followed one of the RFCs. Only an empty datagram
//! is an error. Parsing never panics (property-tested below).

use chrono::{DateTime, Datelike, Local, NaiveDate, TimeZone, Utc};

/// Facility `auth` (4).
pub const FACILITY_AUTH: u8 = 4;
/// Facility `authpriv` (10).
pub const FACILITY_AUTHPRIV: u8 = 10;

/// Which RFC the header followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// BSD syslog and its local variants.
    Rfc3164,
    /// The syslog protocol (`<PRI>1 …`).
    Rfc5424,
}

/// One RFC 5424 structured-data element: `[id name="value" …]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdElement {
    /// SD-ID, e.g. `timeQuality` or `nxaudit@32473`.
    pub id: String,
    /// Parameters in order, values unescaped.
    pub params: Vec<(String, String)>,
}

impl SdElement {
    /// The value of parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed syslog message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogMessage {
    /// Which RFC the header followed (RFC 3164 for the lenient fallbacks).
    pub flavor: Flavor,
    /// Whether the header was well-formed (valid `<PRI>`, and for RFC 5424
    /// every header field and the structured data).
    pub wellformed: bool,
    /// Facility (0–23).
    pub facility: u8,
    /// Severity (0–7).
    pub severity: u8,
    /// Timestamp as written, if any.
    pub timestamp: Option<String>,
    /// Host name, if any.
    pub hostname: Option<String>,
    /// RFC 5424 APP-NAME, or the RFC 3164 tag without `[PID]`.
    pub app_name: Option<String>,
    /// RFC 5424 PROCID, or the `[PID]` of an RFC 3164 tag.
    pub procid: Option<String>,
    /// RFC 5424 MSGID.
    pub msgid: Option<String>,
    /// RFC 5424 structured data.
    pub structured_data: Vec<SdElement>,
    /// The free-form message.
    pub message: String,
}

impl SyslogMessage {
    /// PROCID as a process id, when it is one.
    pub fn pid(&self) -> Option<u32> {
        self.procid.as_deref().and_then(|p| p.parse().ok())
    }

    /// The structured-data element with SD-ID `id`.
    pub fn sd(&self, id: &str) -> Option<&SdElement> {
        self.structured_data.iter().find(|e| e.id == id)
    }

    /// The timestamp in UTC. RFC 3339 timestamps are exact; a BSD timestamp
    /// (`Nov 25 15:08:39`, no year, no zone) is read in local time in the
    /// year of `now`, or the year before when that would put it more than a
    /// day in the future (a December message read in January).
    pub fn timestamp_utc(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let ts = self.timestamp.as_deref()?;
        if let Ok(t) = DateTime::parse_from_rfc3339(ts) {
            return Some(t.with_timezone(&Utc));
        }
        let (month, day, h, m, s) = parse_bsd_timestamp(ts)?;
        let local_now = now.with_timezone(&Local);
        let at_year = |year: i32| -> Option<DateTime<Utc>> {
            let naive = NaiveDate::from_ymd_opt(year, month, day)?.and_hms_opt(h, m, s)?;
            Local
                .from_local_datetime(&naive)
                .earliest()
                .map(|t| t.with_timezone(&Utc))
        };
        let this_year = at_year(local_now.year());
        match this_year {
            Some(t) if t > now + chrono::Duration::days(1) => at_year(local_now.year() - 1),
            Some(t) => Some(t),
            // 29 Feb in a non-leap year: the previous leap year is wrong too;
            // give up rather than invent a date.
            None => at_year(local_now.year() - 1),
        }
    }
}

/// Why a datagram gave no message at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyslogError {
    /// Nothing but white space and NULs.
    #[error("empty syslog datagram")]
    Empty,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Parses one syslog datagram (a trailing newline or NUL is ignored).
pub fn parse(datagram: &[u8]) -> Result<SyslogMessage, SyslogError> {
    let mut end = datagram.len();
    while end > 0 && matches!(datagram[end - 1], b'\n' | b'\r' | b'\0') {
        end -= 1;
    }
    let bytes = &datagram[..end];
    if bytes.iter().all(|b| b.is_ascii_whitespace() || *b == 0) {
        return Err(SyslogError::Empty);
    }
    let text = String::from_utf8_lossy(bytes);
    let text: &str = &text;
    match parse_pri(text) {
        Some((pri, rest)) => {
            let facility = pri / 8;
            let severity = pri % 8;
            if let Some(body) = rest.strip_prefix("1 ") {
                Ok(parse_5424(facility, severity, body))
            } else {
                Ok(parse_3164(facility, severity, rest, true))
            }
        }
        // RFC 3164 §4.3.3: no PRI, priority 13, everything is content; we
        // still try to find a header so that `sshd[1]: …` keeps its tag.
        None => Ok(parse_3164(1, 5, text, false)),
    }
}

/// `<PRI>` with 1–3 digits and a value of at most 191.
fn parse_pri(s: &str) -> Option<(u8, &str)> {
    let rest = s.strip_prefix('<')?;
    let close = rest.find('>')?;
    let digits = &rest[..close];
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // RFC 5424: no leading zeros except for "0" itself; rsyslog accepts
    // them, so do we.
    let v: u16 = digits.parse().ok()?;
    if v > 191 {
        return None;
    }
    Some((v as u8, &rest[close + 1..]))
}

/// Splits off the next space-separated token (exactly one separator).
fn token(s: &str) -> Option<(&str, &str)> {
    if s.is_empty() {
        return None;
    }
    match s.find(' ') {
        Some(i) => Some((&s[..i], &s[i + 1..])),
        None => Some((s, "")),
    }
}

fn nil(s: &str) -> Option<String> {
    if s == "-" || s.is_empty() {
        None
    } else {
        Some(s.to_string())
    }
}

impl SyslogMessage {
    /// A message of `flavor` with only its priority known yet.
    fn empty(flavor: Flavor, facility: u8, severity: u8) -> SyslogMessage {
        SyslogMessage {
            flavor,
            wellformed: false,
            facility,
            severity,
            timestamp: None,
            hostname: None,
            app_name: None,
            procid: None,
            msgid: None,
            structured_data: Vec::new(),
            message: String::new(),
        }
    }
}

fn parse_5424(facility: u8, severity: u8, body: &str) -> SyslogMessage {
    let mut msg = SyslogMessage::empty(Flavor::Rfc5424, facility, severity);
    let mut rest = body;
    let mut fields: [Option<String>; 5] = Default::default();
    for f in fields.iter_mut() {
        match token(rest) {
            Some((t, r)) => {
                *f = nil(t);
                rest = r;
            }
            None => {
                // Header cut short: what we have is all there is.
                let [ts, host, app, pid, id] = fields;
                msg.timestamp = ts;
                msg.hostname = host;
                msg.app_name = app;
                msg.procid = pid;
                msg.msgid = id;
                return msg;
            }
        }
    }
    let [ts, host, app, pid, id] = fields;
    let ts_ok = ts
        .as_deref()
        .map_or(true, |t| DateTime::parse_from_rfc3339(t).is_ok());
    msg.timestamp = ts;
    msg.hostname = host;
    msg.app_name = app;
    msg.procid = pid;
    msg.msgid = id;
    let (sd_ok, after_sd) = if let Some(r) = rest.strip_prefix('-') {
        (true, r)
    } else {
        match parse_sd(rest) {
            Some((elems, r)) => {
                msg.structured_data = elems;
                (true, r)
            }
            // Bad structured data: keep the header, the rest is the message.
            None => (false, rest),
        }
    };
    let text = if sd_ok {
        match after_sd.strip_prefix(' ') {
            Some(m) => m,
            None if after_sd.is_empty() => "",
            // `-` or `]` glued to text: not RFC 5424, keep it all.
            None => {
                msg.message = after_sd.to_string();
                return msg;
            }
        }
    } else {
        after_sd
    };
    msg.message = text.strip_prefix('\u{feff}').unwrap_or(text).to_string();
    msg.wellformed = ts_ok && sd_ok;
    msg
}

/// Parses one or more `[id name="value" …]` elements; returns them and the
/// rest after the last `]`.
fn parse_sd(s: &str) -> Option<(Vec<SdElement>, &str)> {
    let mut elems = Vec::new();
    let mut rest = s;
    while let Some(r) = rest.strip_prefix('[') {
        let id_end = r.find([' ', ']'])?;
        let id = &r[..id_end];
        if !valid_sd_name(id) {
            return None;
        }
        let mut params = Vec::new();
        let mut r = &r[id_end..];
        loop {
            if let Some(after) = r.strip_prefix(']') {
                r = after;
                break;
            }
            let p = r.strip_prefix(' ')?;
            let eq = p.find('=')?;
            let name = &p[..eq];
            if !valid_sd_name(name) {
                return None;
            }
            let v = p[eq + 1..].strip_prefix('"')?;
            let (value, after) = sd_value(v)?;
            params.push((name.to_string(), value));
            r = after;
        }
        elems.push(SdElement {
            id: id.to_string(),
            params,
        });
        rest = r;
    }
    if elems.is_empty() {
        None
    } else {
        Some((elems, rest))
    }
}

/// SD-NAME: 1–32 printable US-ASCII except `=`, space, `]`, `"`.
fn valid_sd_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| (33..=126).contains(&b) && !matches!(b, b'=' | b']' | b'"'))
}

/// Reads a PARAM-VALUE up to its closing quote; returns it unescaped and
/// the rest after the quote. Only `\"`, `\\` and `\]` are escapes (RFC 5424
/// §6.3.3); any other backslash stays as written.
fn sd_value(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => match chars.clone().next() {
                Some((_, n @ ('"' | '\\' | ']'))) => {
                    out.push(n);
                    chars.next();
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    None
}

/// `Mmm dd hh:mm:ss` (day space- or zero-padded) → (month, day, h, m, s).
fn parse_bsd_timestamp(s: &str) -> Option<(u32, u32, u32, u32, u32)> {
    if s.len() != 15 || !s.is_char_boundary(3) {
        return None;
    }
    let month = MONTHS.iter().position(|m| *m == &s[..3])? as u32 + 1;
    let b = s.as_bytes();
    if b[3] != b' ' || b[6] != b' ' || b[9] != b':' || b[12] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> { s.get(r)?.trim_start().parse().ok() };
    let day = num(4..6)?;
    let (h, m, sec) = (num(7..9)?, num(10..12)?, num(13..15)?);
    if day == 0 || day > 31 || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    Some((month, day, h, m, sec))
}

/// Splits a leading timestamp (BSD or RFC 3339) off an RFC 3164 body.
fn split_3164_timestamp(s: &str) -> Option<(&str, &str)> {
    if s.len() >= 16 && s.is_char_boundary(15) && parse_bsd_timestamp(&s[..15]).is_some() {
        let rest = &s[15..];
        return Some((&s[..15], rest.strip_prefix(' ').unwrap_or(rest)));
    }
    let (t, rest) = token(s)?;
    if t.len() >= 19 && t.as_bytes()[4] == b'-' && DateTime::parse_from_rfc3339(t).is_ok() {
        return Some((t, rest));
    }
    None
}

/// An RFC 3164 tag token: `name:`, `name[pid]:` or `name[pid]` (the colon
/// is sometimes left out after `[pid]`). Returns (name, pid).
fn tag_token(t: &str) -> Option<(&str, Option<&str>)> {
    let (body, colon) = match t.strip_suffix(':') {
        Some(b) => (b, true),
        None => (t, false),
    };
    let (name, pid) = match body.find('[') {
        Some(open) => {
            let pid = body[open + 1..].strip_suffix(']')?;
            if pid.is_empty() || pid.contains(['[', ']']) {
                return None;
            }
            (&body[..open], Some(pid))
        }
        None if colon => (body, None),
        None => return None,
    };
    if name.is_empty() || name.len() > 128 || name.contains([':', '[', ']']) {
        return None;
    }
    Some((name, pid))
}

fn parse_3164(facility: u8, severity: u8, body: &str, had_pri: bool) -> SyslogMessage {
    let mut msg = SyslogMessage::empty(Flavor::Rfc3164, facility, severity);
    let (ts, rest) = match split_3164_timestamp(body) {
        Some((t, r)) => (Some(t), r),
        None => (None, body),
    };
    msg.timestamp = ts.map(str::to_string);
    // The first token is either the tag (local form, no host name) or the
    // host name followed by the tag.
    let set_tag = |msg: &mut SyslogMessage, name: &str, pid: Option<&str>, after: &str| {
        msg.app_name = Some(name.to_string());
        msg.procid = pid.map(str::to_string);
        msg.message = after.strip_prefix(' ').unwrap_or(after).to_string();
    };
    match token(rest) {
        Some((t1, r1)) => {
            if let Some((name, pid)) = tag_token(t1) {
                set_tag(&mut msg, name, pid, r1);
                msg.wellformed = had_pri;
            } else if ts.is_some() {
                msg.hostname = Some(t1.to_string());
                match token(r1).and_then(|(t2, r2)| tag_token(t2).map(|tp| (tp, r2))) {
                    Some(((name, pid), r2)) => {
                        set_tag(&mut msg, name, pid, r2);
                        msg.wellformed = had_pri;
                    }
                    None => msg.message = r1.to_string(),
                }
            } else {
                msg.message = rest.to_string();
            }
        }
        None => msg.message = String::new(),
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> SyslogMessage {
        parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn local_form_without_hostname() {
        let m =
            p("<38>Nov 25 15:08:39 sshd[123]: Accepted password for a from 1.2.3.4 port 5 ssh2\n");
        assert_eq!(m.flavor, Flavor::Rfc3164);
        assert!(m.wellformed);
        assert_eq!((m.facility, m.severity), (4, 6));
        assert_eq!(m.timestamp.as_deref(), Some("Nov 25 15:08:39"));
        assert_eq!(m.hostname, None);
        assert_eq!(m.app_name.as_deref(), Some("sshd"));
        assert_eq!(m.pid(), Some(123));
        assert_eq!(
            m.message,
            "Accepted password for a from 1.2.3.4 port 5 ssh2"
        );
    }

    #[test]
    fn bsd_with_hostname_and_padded_day() {
        let m = p("<85>Nov  5 01:02:03 appliance1 sudo:    alice : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/ls");
        assert_eq!((m.facility, m.severity), (10, 5));
        assert_eq!(m.timestamp.as_deref(), Some("Nov  5 01:02:03"));
        assert_eq!(m.hostname.as_deref(), Some("appliance1"));
        assert_eq!(m.app_name.as_deref(), Some("sudo"));
        assert_eq!(m.procid, None);
        // One space after the tag's colon is the separator; sudo's own
        // padding of the user name stays.
        assert_eq!(
            m.message,
            "  alice : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/ls"
        );
    }

    #[test]
    fn rfc3339_in_3164() {
        let m = p("<86>2026-11-25T15:08:39.123456+01:00 host sshd-session[99]: hello");
        assert!(m.wellformed);
        assert_eq!(m.hostname.as_deref(), Some("host"));
        assert_eq!(m.app_name.as_deref(), Some("sshd-session"));
        assert_eq!(m.pid(), Some(99));
        assert_eq!(
            m.timestamp_utc(Utc::now()).unwrap().to_rfc3339(),
            "2026-11-25T14:08:39.123456+00:00"
        );
    }

    #[test]
    fn rfc5424_full() {
        let m = p(concat!(
            "<86>1 2026-11-25T15:08:39.123Z host sshd 123 ID47 ",
            "[exampleSDID@32473 iut=\"3\" eventSource=\"App\\\"l\\]i\\\\c\\x\"][timeQuality tzKnown=\"1\"] ",
            "\u{feff}Accepted publickey for a"
        ));
        assert_eq!(m.flavor, Flavor::Rfc5424);
        assert!(m.wellformed);
        assert_eq!(m.hostname.as_deref(), Some("host"));
        assert_eq!(m.app_name.as_deref(), Some("sshd"));
        assert_eq!(m.pid(), Some(123));
        assert_eq!(m.msgid.as_deref(), Some("ID47"));
        assert_eq!(m.structured_data.len(), 2);
        let sd = m.sd("exampleSDID@32473").unwrap();
        assert_eq!(sd.param("iut"), Some("3"));
        assert_eq!(sd.param("eventSource"), Some("App\"l]i\\c\\x"));
        assert_eq!(m.message, "Accepted publickey for a");
    }

    #[test]
    fn rfc5424_nil_fields_and_no_msg() {
        let m = p("<13>1 - - - - - -");
        assert!(m.wellformed);
        assert_eq!(m.timestamp, None);
        assert_eq!(m.app_name, None);
        assert_eq!(m.message, "");
        // rsyslog's RSYSLOG_SyslogProtocol23Format keeps the space before a
        // message that starts with one.
        let m = p("<86>1 2026-11-25T15:39:26.392061+00:00 vm sshd - - -  Accepted x");
        assert_eq!(m.message, " Accepted x");
        assert_eq!(m.procid, None);
    }

    #[test]
    fn rfc5424_bad_sd_keeps_header() {
        let m = p("<86>1 2026-11-25T15:08:39Z host app 1 - [bad sd here");
        assert!(!m.wellformed);
        assert_eq!(m.app_name.as_deref(), Some("app"));
        assert_eq!(m.message, "[bad sd here");
    }

    #[test]
    fn garbage_is_content() {
        let m = p("hello world");
        assert!(!m.wellformed);
        assert_eq!(m.app_name, None);
        assert_eq!(m.message, "hello world");
        let m = p("<999>sshd[1]: x");
        assert!(!m.wellformed);
        assert_eq!(m.message, "x");
        assert_eq!(m.app_name.as_deref(), Some("<999>sshd"));
        let m = p("<38>");
        assert_eq!(m.message, "");
        assert_eq!(parse(b"\n\0 "), Err(SyslogError::Empty));
        let m = parse(b"<38>sshd[1]: \xff\xfe ok").unwrap();
        assert_eq!(m.message, "\u{fffd}\u{fffd} ok");
    }

    #[test]
    fn host_without_tag() {
        let m = p("<13>Nov 25 15:08:39 host just text");
        assert_eq!(m.hostname.as_deref(), Some("host"));
        assert_eq!(m.app_name, None);
        assert_eq!(m.message, "just text");
    }

    #[test]
    fn bsd_timestamp_year_guess() {
        let m = p("<38>Dec 31 23:59:59 sshd[1]: x");
        let now = DateTime::parse_from_rfc3339("2027-01-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let t = m.timestamp_utc(now).unwrap();
        assert!(t < now && now - t < chrono::Duration::days(3), "{t}");
        let m = p("<38>Jun  1 10:00:00 sshd[1]: x");
        assert_eq!(m.timestamp_utc(now).unwrap().year(), 2026);
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn never_panics_on_headerish(s in "(<[0-9]{1,3}>)?(1 )?[ -~\\[\\]\"\\\\=]{0,200}") {
            if let Ok(m) = parse(s.as_bytes()) {
                prop_assert!(m.facility < 24 && m.severity < 8);
                let _ = m.timestamp_utc(Utc::now());
            }
        }

        #[test]
        fn sd_values_roundtrip(v in "[^\u{0}]{0,40}") {
            let esc: String = v.chars().flat_map(|c| match c {
                '"' | '\\' | ']' => vec!['\\', c],
                c => vec![c],
            }).collect();
            let line = format!("<86>1 - h a - - [x@1 k=\"{esc}\"] m");
            let m = parse(line.as_bytes()).unwrap();
            prop_assert!(m.wellformed);
            prop_assert_eq!(m.sd("x@1").and_then(|e| e.param("k")), Some(v.as_str()));
            prop_assert_eq!(m.message, "m");
        }
    }
}

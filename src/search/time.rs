//! Time arguments of `nxaudit query` and the API: absolute dates, relative
//! ages (`2h`, `3d`), elapsed hours; each error names what was given.

use super::*;

/// A time parameter that cannot be understood; the message is safe to show
/// to a remote caller (it only repeats the caller's input, shortened).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Not a date, datetime or relative time.
    #[error(
        "invalid date or time {0:?}: expected yyyy-mm-dd or yyyy-mm-ddThh:mm:ss[.fff][Z|±hh:mm]"
    )]
    BadDate(String),
    /// Not a relative time like `2h`.
    #[error("invalid time {0:?}: expected RFC 3339, yyyy-mm-dd[Thh:mm:ss], `now` or a duration such as 2h, 30m, 1d")]
    BadTime(String),
    /// Not a positive number of hours.
    #[error("invalid number of hours {0:?}: expected a positive number such as 2 or 0.5")]
    BadHours(String),
}

pub(super) fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Parses `before_date` (docs/operations.md, the API): `yyyy-mm-dd`, `yyyy-mm-ddThh:mm[:ss[.f]]`,
/// optionally with `Z` or an offset; without one the time is UTC. A `+` of
/// an offset that arrived as a space (an unencoded `+` in a query string) is
/// accepted.
pub fn parse_before_date(s: &str) -> Result<DateTime<Utc>, TimeError> {
    parse_absolute(s).ok_or_else(|| TimeError::BadDate(shorten(s)))
}

pub(super) fn parse_absolute(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if s.len() < 10 || !s.is_ascii() {
        return None;
    }
    if s.len() == 10 {
        return NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()?
            .and_hms_opt(0, 0, 0)
            .map(|d| d.and_utc());
    }
    let sep = s.as_bytes()[10];
    if !matches!(sep, b'T' | b't' | b' ') {
        return None;
    }
    let mut owned = format!("{}T{}", &s[..10], &s[11..]);
    // `2024-12-24T14:00:00 01:00`: a `+` decoded as a space.
    if owned.len() > 6 {
        let cut = owned.len() - 6;
        let tail = &owned.as_bytes()[cut..];
        if tail[0] == b' '
            && tail[3] == b':'
            && owned[cut + 1..].bytes().filter(u8::is_ascii_digit).count() == 4
        {
            owned.replace_range(cut..cut + 1, "+");
        }
    }
    let time_part = &owned[11..];
    let has_zone = time_part.ends_with(['Z', 'z']) || time_part.contains(['+', '-']);
    if has_zone {
        if let Ok(t) = DateTime::parse_from_rfc3339(&owned) {
            return Some(t.with_timezone(&Utc));
        }
        // Without seconds: `…T14:00Z`.
        for fmt in ["%Y-%m-%dT%H:%M%#z", "%Y-%m-%dT%H:%M%:z"] {
            let fixed = owned.replace(['Z', 'z'], "+00:00");
            if let Ok(t) = DateTime::parse_from_str(&fixed, fmt) {
                return Some(t.with_timezone(&Utc));
            }
        }
        return None;
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(&owned, fmt) {
            return Some(t.and_utc());
        }
    }
    None
}

/// Parses `elapsed_hours`: a positive decimal number (`2`, `0.5`, `.25`).
pub fn parse_elapsed_hours(s: &str) -> Result<chrono::Duration, TimeError> {
    let bad = || TimeError::BadHours(shorten(s));
    let t = s.trim();
    let digits = t.bytes().filter(u8::is_ascii_digit).count();
    let dots = t.bytes().filter(|b| *b == b'.').count();
    if digits == 0 || dots > 1 || digits + dots != t.len() {
        return Err(bad());
    }
    let h: f64 = t.parse().map_err(|_| bad())?;
    hours_duration(h).ok_or_else(bad)
}

/// A positive, finite number of hours as a duration (microsecond
/// precision); absurdly large values saturate at about 290 000 years.
pub(super) fn hours_duration(h: f64) -> Option<chrono::Duration> {
    if !h.is_finite() || h <= 0.0 {
        return None;
    }
    let micros = h * 3_600_000_000.0;
    if micros < 1.0 {
        return None;
    }
    let micros = if micros >= i64::MAX as f64 / 2.0 {
        i64::MAX / 2
    } else {
        micros as i64
    };
    Some(chrono::Duration::microseconds(micros))
}

/// Parses a time argument of the CLI: what [`parse_before_date`] accepts,
/// `now`, or a relative time counted back from `now` (`2h`, `30m`, `1d`,
/// `1w`, `90s`, `1.5h`, `1h30m`, optionally with a leading `-` or a
/// trailing ` ago`).
pub fn parse_time_arg(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, TimeError> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("now") {
        return Ok(now);
    }
    if let Some(abs) = parse_absolute(t) {
        return Ok(abs);
    }
    let rel = t.strip_prefix('-').unwrap_or(t);
    let rel = rel.strip_suffix(" ago").unwrap_or(rel).trim();
    parse_relative(rel)
        .and_then(|d| now.checked_sub_signed(d))
        .ok_or_else(|| TimeError::BadTime(shorten(s)))
}

pub(super) fn parse_relative(s: &str) -> Option<chrono::Duration> {
    if s.is_empty() {
        return None;
    }
    let mut total = chrono::Duration::zero();
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let n: f64 = num.parse().ok()?;
        let hours = match unit.trim() {
            "s" | "sec" | "secs" | "second" | "seconds" => n / 3600.0,
            "m" | "min" | "mins" | "minute" | "minutes" => n / 60.0,
            "h" | "hour" | "hours" => n,
            "d" | "day" | "days" => n * 24.0,
            "w" | "week" | "weeks" => n * 24.0 * 7.0,
            _ => return None,
        };
        total = total.checked_add(&hours_duration(hours)?)?;
        rest = next;
    }
    Some(total)
}

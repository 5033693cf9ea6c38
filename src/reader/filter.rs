//! Which records a reader of the log wants: by code, component, account
//! and time. One filter for the sinks, `nxaudit tail`, `nxaudit query` and
//! the API's search, so "only SSH and sudo" means the same thing everywhere.

use chrono::{DateTime, Utc};

use crate::catalog::Component;
use crate::record::ParsedRecord;

/// A record filter; every empty criterion matches all, and a record must
/// match every criterion given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordFilter {
    /// Codes wanted.
    pub codes: Vec<u32>,
    /// Components wanted (from the code range).
    pub components: Vec<Component>,
    /// Accounts wanted (the bracket's account field).
    pub users: Vec<String>,
    /// Records written at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Records written before this instant.
    pub until: Option<DateTime<Utc>>,
}

impl RecordFilter {
    /// A filter by codes and components.
    pub fn by_code_and_component(codes: &[u32], components: &[Component]) -> RecordFilter {
        RecordFilter {
            codes: codes.to_vec(),
            components: components.to_vec(),
            ..Default::default()
        }
    }

    /// Whether nothing is filtered out.
    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
            && self.components.is_empty()
            && self.users.is_empty()
            && self.since.is_none()
            && self.until.is_none()
    }

    /// Whether `rec` is wanted.
    pub fn matches(&self, rec: &ParsedRecord) -> bool {
        (self.codes.is_empty() || self.codes.contains(&rec.code))
            && (self.components.is_empty()
                || rec
                    .component()
                    .is_some_and(|c| self.components.contains(&c)))
            && (self.users.is_empty() || self.users.contains(&rec.account))
            && self.since.map_or(true, |s| rec.ts >= s)
            && self.until.map_or(true, |u| rec.ts < u)
    }

    /// Whether a raw line (newline excluded) is a record that is wanted;
    /// with no criterion, every line (also one that is not a record).
    pub fn matches_line(&self, line: &[u8]) -> bool {
        if self.is_empty() {
            return true;
        }
        let Ok(text) = std::str::from_utf8(line) else {
            return false;
        };
        crate::record::parse_line(text).is_ok_and(|r| self.matches(&r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::parse_line;

    fn rec(code: u32, account: &str) -> ParsedRecord {
        let mut r = parse_line(&crate::reader::follow::tests::line(1, code, "x")).unwrap();
        r.account = account.to_string();
        r
    }

    #[test]
    fn criteria_combine() {
        let all = RecordFilter::default();
        assert!(all.is_empty() && all.matches(&rec(60001, "a")));
        let ssh_sudo = RecordFilter {
            codes: vec![60001, 60101],
            ..Default::default()
        };
        assert!(ssh_sudo.matches(&rec(60101, "a")));
        assert!(!ssh_sudo.matches(&rec(60201, "a")));
        let f = RecordFilter::by_code_and_component(&[], &[Component::Appliance]);
        assert!(f.matches(&rec(60001, "a")));
        assert!(!f.matches(&rec(50000, "a")));
        let user = RecordFilter {
            users: vec!["nexthink".into()],
            ..Default::default()
        };
        assert!(user.matches(&rec(60001, "nexthink")) && !user.matches(&rec(60001, "root")));
        let t = rec(60001, "a").ts;
        let window = RecordFilter {
            since: Some(t),
            until: Some(t + chrono::Duration::seconds(1)),
            ..Default::default()
        };
        assert!(window.matches(&rec(60001, "a")));
        let later = RecordFilter {
            since: Some(t + chrono::Duration::seconds(1)),
            ..Default::default()
        };
        assert!(!later.matches(&rec(60001, "a")));
    }
}

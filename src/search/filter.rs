//! Which records of the window a search returns: by code, component or
//! account, applied to each parsed line.

use super::*;

/// Which records to keep besides the window (CLI `--code`, `--component`,
/// `--user`): values of one kind are alternatives, kinds are combined.
/// Lines that do not parse as records never match a non-empty filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Audit codes; empty = any.
    pub codes: Vec<u32>,
    /// Components (by code range); empty = any.
    pub components: Vec<Component>,
    /// Accounts (the bracket's account field); empty = any.
    pub users: Vec<String>,
}

impl Filter {
    /// Whether every record matches.
    pub fn is_empty(&self) -> bool {
        self.codes.is_empty() && self.components.is_empty() && self.users.is_empty()
    }

    /// Whether a parsed record matches.
    pub fn matches(&self, r: &ParsedRecord) -> bool {
        (self.codes.is_empty() || self.codes.contains(&r.code))
            && (self.components.is_empty()
                || r.component().is_some_and(|c| self.components.contains(&c)))
            && (self.users.is_empty() || self.users.contains(&r.account))
    }

    /// Whether a raw line (newline excluded) is a record that matches.
    pub fn matches_line(&self, line: &[u8]) -> bool {
        if self.is_empty() {
            return true;
        }
        let Ok(text) = std::str::from_utf8(line) else {
            return false;
        };
        record::parse_line(text).is_ok_and(|r| self.matches(&r))
    }
}

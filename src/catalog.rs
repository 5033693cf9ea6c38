//! The event code catalog, compiled in from `catalog/codes.toml`.
//!
//! The catalog is data, not code: every code of Nexthink's documents (and the
//! daemon's own `Appliance` codes) lives in one TOML file that reviewers can
//! diff against the sources, embedded with `include_str!` so the binaries
//! need no file at run time. It is parsed once, on first use, into a list
//! sorted by code so [`lookup`] is a binary search.
//!
//! The daemon must not die because of this file: a parse failure of the
//! embedded text leaves an empty catalog (every code is then
//! `(uncatalogued)`, which the protocol still accepts unless
//! `strict_codes`), and an entry that fails validation is left out; both
//! are logged with `tracing::error!`. The unit tests below are what
//! guarantee that neither ever happens in a release.

use std::collections::HashSet;
use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// The component an event belongs to, derived from its code range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Component {
    /// Codes 10001–10999.
    Engine,
    /// Codes 20001–21999.
    Portal,
    /// Codes 50000–53999.
    WebConsole,
    /// Codes 60000–60999, written by the daemon itself.
    Appliance,
}

impl Component {
    /// Every component, in catalog order.
    pub const ALL: [Component; 4] = [
        Component::Engine,
        Component::Portal,
        Component::WebConsole,
        Component::Appliance,
    ];

    /// The component owning `code`, or `None` when the code is outside every range.
    pub fn of_code(code: u32) -> Option<Component> {
        match code {
            10001..=10999 => Some(Component::Engine),
            20001..=21999 => Some(Component::Portal),
            50000..=53999 => Some(Component::WebConsole),
            60000..=60999 => Some(Component::Appliance),
            _ => None,
        }
    }

    /// The name used in config files and on the wire (`WebConsole`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Engine => "Engine",
            Component::Portal => "Portal",
            Component::WebConsole => "WebConsole",
            Component::Appliance => "Appliance",
        }
    }

    /// Parses a component name; `Console` is accepted for the Web Console
    /// because that is the name Nexthink's log lines use.
    pub fn parse(s: &str) -> Option<Component> {
        match s {
            "Engine" => Some(Component::Engine),
            "Portal" => Some(Component::Portal),
            "WebConsole" | "Console" => Some(Component::WebConsole),
            "Appliance" => Some(Component::Appliance),
            _ => None,
        }
    }
}

/// Read by name through [`Component::parse`] (so `Console` is accepted
/// wherever a component is configured), refusing others with the names
/// that are accepted.
impl<'de> Deserialize<'de> for Component {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Component, D::Error> {
        let s = String::deserialize(d)?;
        Component::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown component {s:?} (Engine, Portal, WebConsole or Appliance)"
            ))
        })
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bracket sources that an Engine name may not take (compared
/// case-insensitively, surrounding white space ignored): an Engine called
/// `Portal` would write `[Portal|…]` and pass for a Portal record. `Engine`
/// itself is allowed: it is what an Engine record without a name shows.
pub const RESERVED_ENGINE_NAMES: [&str; 4] = ["Console", "WebConsole", "Portal", "Appliance"];

/// Whether `name` is one of [`RESERVED_ENGINE_NAMES`].
pub fn is_reserved_engine_name(name: &str) -> bool {
    let name = name.trim();
    RESERVED_ENGINE_NAMES
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
}

/// The codes the daemon writes itself (component `Appliance`), named so
/// that sources and the writer do not spell numbers.
pub mod appliance {
    /// An SSH logon accepted by sshd.
    pub const SSH_LOGON: u32 = 60001;
    /// An SSH logon refused.
    pub const SSH_LOGON_FAILED: u32 = 60002;
    /// An SSH session closed.
    pub const SSH_LOGOFF: u32 = 60003;
    /// An sshd message not understood, or from an unverified sender.
    pub const SSH_UNVERIFIED: u32 = 60009;
    /// A command run through sudo.
    pub const SUDO_COMMAND: u32 = 60101;
    /// A sudo command refused.
    pub const SUDO_REFUSED: u32 = 60102;
    /// A sudo message not understood, or from an unverified sender.
    pub const SUDO_UNVERIFIED: u32 = 60109;
    /// The Engine service started.
    pub const ENGINE_STARTED: u32 = 60201;
    /// The Engine service stopped.
    pub const ENGINE_STOPPED: u32 = 60202;
    /// The Engine service failed.
    pub const ENGINE_FAILED: u32 = 60203;
    /// The audit daemon started (first record of every run).
    pub const DAEMON_STARTED: u32 = 60901;
    /// The audit daemon stopped cleanly.
    pub const DAEMON_STOPPED: u32 = 60902;
    /// The log was rotated: first record of the new file, chaining to the old.
    pub const ROTATED: u32 = 60903;
    /// The configuration was reloaded.
    pub const RELOADED: u32 = 60904;
    /// Events were refused while the disk was full (a count).
    pub const DISK_FULL_REFUSED: u32 = 60905;
    /// A torn tail of the log was cut off at start-up.
    pub const TORN_TAIL_REPAIRED: u32 = 60906;
    /// The chain head was sealed with the current forward-secure key.
    pub const SEALED: u32 = 60907;
    /// The log ended before its high-water mark at start-up: records missing.
    pub const RECORDS_MISSING: u32 = 60908;
}

/// The catalog file, as compiled into the binary.
pub const CATALOG_TOML: &str = include_str!("../catalog/codes.toml");

/// One catalog entry. A code may have several (52010, 52100).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeInfo {
    /// The audit code.
    pub code: u32,
    /// Owning component.
    pub component: Component,
    /// Category written in the bracket (documented, or chosen by range).
    pub category: String,
    /// Description.
    pub description: String,
    /// Documented message text with `{placeholder}`s, when documented.
    pub format: Option<String>,
    /// Documented fixed account (`*system`, `nxengine`, `portal`), if any.
    pub account: Option<String>,
    /// Other wordings of the same meaning (classic lists, NTP/Chrony…).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Whether `format` is Nexthink's documented format.
    pub documented: bool,
    /// Where the entry comes from (source keys of the seed reference).
    pub source: Option<String>,
    /// Remarks for operators: cut copies, documented typos, variants.
    pub note: Option<String>,
}

impl CodeInfo {
    /// The `{placeholder}` names of the format, in order (empty when
    /// undocumented or malformed).
    pub fn placeholders(&self) -> Vec<&str> {
        self.format
            .as_deref()
            .and_then(|f| placeholders(f).ok())
            .unwrap_or_default()
    }
}

/// Why the catalog text, or one of its entries, is not usable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogError {
    /// The TOML does not parse or names an unknown key.
    #[error("catalog does not parse: {0}")]
    Parse(String),
    /// The code lies outside the range of the entry's component.
    #[error("code {code} is outside the range of component {component}")]
    OutOfRange {
        /// The code.
        code: u32,
        /// The component the entry claims.
        component: Component,
    },
    /// The same code and description are listed twice.
    #[error("code {code} \"{description}\" is listed twice")]
    Duplicate {
        /// The code.
        code: u32,
        /// The repeated description.
        description: String,
    },
    /// An entry breaks a rule of the file format (see the file header).
    #[error("code {code}: {reason}")]
    Invalid {
        /// The code.
        code: u32,
        /// What is wrong.
        reason: String,
    },
}

/// The file's shape: `[[entry]]` tables.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    entry: Vec<CodeInfo>,
}

/// Parses catalog text, entries in file order (no validation).
pub fn parse(text: &str) -> Result<Vec<CodeInfo>, CatalogError> {
    toml::from_str::<CatalogFile>(text)
        .map(|f| f.entry)
        .map_err(|e| CatalogError::Parse(e.to_string()))
}

/// Checks every entry; returns `(index, problem)` for each bad one, in file
/// order. An empty result means the catalog is fully usable.
pub fn validate(entries: &[CodeInfo]) -> Vec<(usize, CatalogError)> {
    let mut problems = Vec::new();
    let mut seen: HashSet<(u32, &str)> = HashSet::new();
    for (i, e) in entries.iter().enumerate() {
        if let Err(p) = check_entry(e) {
            problems.push((i, p));
        } else if !seen.insert((e.code, e.description.as_str())) {
            problems.push((
                i,
                CatalogError::Duplicate {
                    code: e.code,
                    description: e.description.clone(),
                },
            ));
        }
    }
    problems
}

/// The rules one entry must meet on its own.
fn check_entry(e: &CodeInfo) -> Result<(), CatalogError> {
    let invalid = |reason: String| CatalogError::Invalid {
        code: e.code,
        reason,
    };
    if Component::of_code(e.code) != Some(e.component) {
        return Err(CatalogError::OutOfRange {
            code: e.code,
            component: e.component,
        });
    }
    if e.description.trim().is_empty() {
        return Err(invalid("empty description".into()));
    }
    if !is_bracket_safe(&e.category) {
        return Err(invalid(format!("bad category {:?}", e.category)));
    }
    if let Some(a) = &e.account {
        if !is_bracket_safe(a) {
            return Err(invalid(format!("bad account {a:?}")));
        }
    }
    if e.aliases
        .iter()
        .any(|a| a.trim().is_empty() || *a == e.description)
    {
        return Err(invalid(
            "empty alias or alias equal to the description".into(),
        ));
    }
    match (&e.format, e.documented) {
        (Some(f), true) => {
            placeholders(f).map_err(|r| invalid(format!("format {f:?}: {r}")))?;
        }
        (None, false) => {
            let default = default_category(e.code);
            // 51104's category is documented although its format is cut;
            // it happens to equal the range rule, which keeps this simple.
            if e.category != default {
                return Err(invalid(format!(
                    "undocumented entry has category {:?}, the range rule gives {default:?}",
                    e.category
                )));
            }
        }
        (Some(_), false) => return Err(invalid("format given but documented = false".into())),
        (None, true) => return Err(invalid("documented = true without a format".into())),
    }
    Ok(())
}

/// A bracket field must be non-empty and readable as written: the record
/// would escape `|`, `[`, `]`, controls and invisible characters, but a
/// catalog category or account that needs escaping is a catalog mistake.
fn is_bracket_safe(s: &str) -> bool {
    !s.is_empty()
        && !s.chars().any(|c| {
            matches!(c, '|' | '[' | ']') || c.is_control() || crate::record::escape::is_invisible(c)
        })
}

/// The `{snake_case}` placeholder names of a format, or why it is malformed
/// (unbalanced braces, empty or non-snake_case names).
pub fn placeholders(format: &str) -> Result<Vec<&str>, String> {
    let mut names = Vec::new();
    let mut rest = format;
    loop {
        let open = rest.find('{');
        let close = rest.find('}');
        match (open, close) {
            (None, None) => return Ok(names),
            (None, Some(_)) => return Err("'}' without '{'".into()),
            (Some(o), Some(c)) if c < o => return Err("'}' without '{'".into()),
            (Some(_), None) => return Err("'{' without '}'".into()),
            (Some(o), Some(c)) => {
                let name = &rest[o + 1..c];
                let snake = name
                    .chars()
                    .next()
                    .is_some_and(|ch| ch.is_ascii_lowercase())
                    && name
                        .chars()
                        .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
                if !snake {
                    return Err(format!("placeholder {{{name}}} is not snake_case"));
                }
                names.push(name);
                rest = &rest[c + 1..];
            }
        }
    }
}

/// Builds the served catalog from text: parse, drop (and log) bad entries,
/// sort by code keeping file order within a code.
fn build(text: &str) -> Vec<CodeInfo> {
    let mut entries = match parse(text) {
        Ok(e) => e,
        Err(err) => {
            tracing::error!(error = %err, "event catalog unusable; every code is uncatalogued");
            return Vec::new();
        }
    };
    let problems = validate(&entries);
    if !problems.is_empty() {
        let bad: HashSet<usize> = problems.iter().map(|(i, _)| *i).collect();
        for (_, p) in &problems {
            tracing::error!(error = %p, "event catalog entry left out");
        }
        entries = entries
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !bad.contains(i))
            .map(|(_, e)| e)
            .collect();
    }
    entries.sort_by_key(|e| e.code);
    entries
}

/// The embedded catalog, parsed on first use.
fn catalog() -> &'static [CodeInfo] {
    static CATALOG: OnceLock<Vec<CodeInfo>> = OnceLock::new();
    CATALOG.get_or_init(|| build(CATALOG_TOML))
}

/// Every entry, sorted by code (entries of one code in file order).
pub fn all() -> &'static [CodeInfo] {
    catalog()
}

/// Every entry for `code`, in file order (empty when uncatalogued).
pub fn lookup(code: u32) -> &'static [CodeInfo] {
    let entries = catalog();
    let start = entries.partition_point(|e| e.code < code);
    let end = entries.partition_point(|e| e.code <= code);
    &entries[start..end]
}

/// Whether the catalog lists `code`.
pub fn is_known(code: u32) -> bool {
    !lookup(code).is_empty()
}

/// Category used for codes without a documented one, chosen by range: the
/// category Nexthink documents for the same hundred block, else the
/// component's default (the rule is restated in `catalog/codes.toml`).
pub fn default_category(code: u32) -> &'static str {
    match Component::of_code(code) {
        Some(Component::Engine) => "General",
        Some(Component::Portal) => match code / 100 {
            200 => "SYSTEM",
            201 => "LOGIN",
            202 => "USER",
            205 => "HIERARCHY",
            _ => "SYSTEM",
        },
        Some(Component::WebConsole) => match code / 100 {
            500..=509 => "Login",
            _ => "Appliance",
        },
        Some(Component::Appliance) => match code / 100 {
            600 => "SSH",
            601 => "Sudo",
            602 => "Service",
            609 => "Audit",
            _ => "Appliance",
        },
        None => "-",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn appliance_constants_are_catalogued_appliance_codes() {
        use appliance::*;
        for code in [
            SSH_LOGON,
            SSH_LOGON_FAILED,
            SSH_LOGOFF,
            SSH_UNVERIFIED,
            SUDO_COMMAND,
            SUDO_REFUSED,
            SUDO_UNVERIFIED,
            ENGINE_STARTED,
            ENGINE_STOPPED,
            ENGINE_FAILED,
            DAEMON_STARTED,
            DAEMON_STOPPED,
            ROTATED,
            RELOADED,
            DISK_FULL_REFUSED,
            TORN_TAIL_REPAIRED,
        ] {
            assert!(is_known(code), "{code} is not catalogued");
            assert_eq!(
                Component::of_code(code),
                Some(Component::Appliance),
                "{code}"
            );
        }
    }

    fn embedded() -> Vec<CodeInfo> {
        parse(CATALOG_TOML).unwrap()
    }

    fn one(code: u32) -> &'static CodeInfo {
        let e = lookup(code);
        assert_eq!(e.len(), 1, "code {code}: {e:?}");
        &e[0]
    }

    #[test]
    fn embedded_file_parses_and_validates() {
        let entries = embedded();
        let problems = validate(&entries);
        assert!(problems.is_empty(), "catalog problems: {problems:#?}");
        // Served catalog = the whole file: nothing was left out.
        assert_eq!(all().len(), entries.len());
    }

    #[test]
    fn file_is_in_code_order() {
        let codes: Vec<u32> = embedded().iter().map(|e| e.code).collect();
        let mut sorted = codes.clone();
        sorted.sort();
        assert_eq!(codes, sorted);
        assert_eq!(all(), embedded().as_slice());
    }

    #[test]
    fn exact_counts_per_component() {
        let mut distinct: BTreeMap<Component, BTreeSet<u32>> = BTreeMap::new();
        let mut entries: BTreeMap<Component, usize> = BTreeMap::new();
        let mut documented: BTreeMap<Component, usize> = BTreeMap::new();
        for e in all() {
            distinct.entry(e.component).or_default().insert(e.code);
            *entries.entry(e.component).or_default() += 1;
            *documented.entry(e.component).or_default() += usize::from(e.documented);
        }
        let d = |c| distinct.get(&c).map_or(0, BTreeSet::len);
        assert_eq!(d(Component::WebConsole), 50);
        assert_eq!(d(Component::Portal), 62);
        assert_eq!(d(Component::Engine), 26);
        assert_eq!(d(Component::Appliance), 18);
        assert_eq!(entries[&Component::WebConsole], 52);
        assert_eq!(entries[&Component::Portal], 62);
        assert_eq!(entries[&Component::Engine], 26);
        assert_eq!(entries[&Component::Appliance], 18);
        assert_eq!(documented[&Component::WebConsole], 14);
        assert_eq!(documented[&Component::Portal], 22);
        assert_eq!(documented[&Component::Engine], 17);
        assert_eq!(documented[&Component::Appliance], 0);
        assert_eq!(all().len(), 158);
    }

    #[test]
    fn codes_with_two_meanings_keep_both_in_file_order() {
        let d = |code| {
            lookup(code)
                .iter()
                .map(|e| e.description.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            d(52010),
            [
                "Portal server address updated",
                "Portal admin account reset"
            ]
        );
        assert_eq!(
            d(52100),
            ["Internal network removed", "Internal network added"]
        );
        let twice: Vec<u32> = {
            let mut seen = BTreeSet::new();
            all()
                .iter()
                .filter(|e| !seen.insert(e.code))
                .map(|e| e.code)
                .collect()
        };
        assert_eq!(twice, [52010, 52100]);
    }

    #[test]
    fn version_variants_are_present() {
        assert_eq!(one(50002).format.as_deref(), Some("User logout"));
        assert_eq!(one(50003).description, "User logged out");
        assert!(!one(50003).documented);
        for (code, chrony, ntp) in [
            (
                51106,
                "Appliance Chrony servers updated",
                "Appliance NTP servers updated",
            ),
            (
                51107,
                "Appliance Chrony service enabled",
                "Appliance NTP service enabled",
            ),
            (
                51108,
                "Appliance Chrony service disabled",
                "Appliance NTP service disabled",
            ),
        ] {
            assert_eq!(one(code).description, chrony);
            assert_eq!(one(code).aliases, [ntp]);
        }
        assert_eq!(one(51109).aliases, ["Appliance network insterface updated"]);
        for code in [51200, 51201, 51300, 51301, 51302, 51400] {
            assert!(is_known(code), "{code}");
        }
        assert_eq!(one(20209).aliases, ["Profile added (with number of roles)"]);
        assert_eq!(
            one(20210).aliases,
            ["Profile updated (with number of roles)"]
        );
    }

    #[test]
    fn whole_classic_portal_list() {
        for code in [
            20104, 20505, 20804, 20901, 20943, 21001, 21003, 21101, 21104, 21203, 21304, 21401,
            21402, 21501,
        ] {
            assert_eq!(one(code).component, Component::Portal, "{code}");
        }
        assert_eq!(
            one(20804).description,
            "Library pack import request (only issued for big packs)"
        );
    }

    #[test]
    fn documented_formats_character_for_character() {
        let f = |code| one(code).format.as_deref();
        assert_eq!(f(50000), Some("Login successful"));
        assert_eq!(one(50000).category, "Login");
        assert_eq!(one(50000).account, None);
        assert_eq!(f(51103), Some("Appliance dns server updated"));
        assert_eq!(f(20206), Some("Role {name} is added"));
        assert_eq!(one(20206).category, "USER");
        assert_eq!(
            f(20101),
            Some("User {account} logged with session id {session_id}")
        );
        assert_eq!(f(10003), Some("Engine gracefuly stopped"));
        assert_eq!(one(10003).category, "MAIN");
        assert_eq!(one(10003).account.as_deref(), Some("nxengine"));
        assert_eq!(
            f(10009),
            Some("Finder account creation:[{created_account}]")
        );
        assert_eq!(one(10009).account.as_deref(), Some("portal"));
        assert_eq!(
            f(10028),
            Some("Manual tagging:[{object_type}|{object_name}]")
        );
        assert_eq!(one(20001).account.as_deref(), Some("*system"));
        assert_eq!(one(20103).account.as_deref(), Some("*system"));
        // 20205: the docs print 20204 inside its bracket; the entry keeps its
        // own code and says so.
        let e = one(20205);
        assert_eq!(
            e.format.as_deref(),
            Some("Updated account ownership of {n} users")
        );
        assert!(e.note.as_deref().is_some_and(|n| n.contains("20204")));
        // 51104's format is cut in every copy: undocumented, description kept.
        assert!(!one(51104).documented);
        assert_eq!(one(51104).description, "Appliance default gateway updated");
    }

    #[test]
    fn appliance_codes_match_the_spec_table() {
        let spec = [
            (60001, "SSH logon"),
            (60002, "SSH logon failed"),
            (60003, "SSH logoff"),
            (
                60009,
                "Unrecognised or unverified sshd message (raw, with the sender)",
            ),
            (60101, "Command run with super-user privileges (sudo)"),
            (60102, "Super-user command refused (sudo)"),
            (
                60109,
                "Unrecognised or unverified sudo message (raw, with the sender)",
            ),
            (60201, "Engine service started"),
            (60202, "Engine service stopped"),
            (60203, "Engine service failed"),
            (60901, "Audit daemon started"),
            (60902, "Audit daemon stopped"),
            (60903, "Audit log rotated"),
            (60904, "Audit daemon configuration reloaded"),
            (
                60905,
                "Audit events refused while the disk was full (count)",
            ),
            (60906, "Torn audit log tail repaired at start-up"),
            (60907, "Audit log sealed"),
            (60908, "Audit records missing at start-up (high-water mark)"),
        ];
        for (code, desc) in spec {
            let e = one(code);
            assert_eq!(e.description, desc);
            assert_eq!(e.component, Component::Appliance);
            assert_eq!(e.format, None);
            assert!(!e.documented);
        }
    }

    #[test]
    fn placeholders_are_well_formed() {
        for e in all() {
            if let Some(f) = &e.format {
                let names = placeholders(f).unwrap();
                assert_eq!(e.placeholders(), names);
            }
        }
        assert_eq!(one(20209).placeholders(), ["name", "roles_names"]);
        assert_eq!(placeholders("a {b_1} c").unwrap(), ["b_1"]);
        assert!(placeholders("a {b").is_err());
        assert!(placeholders("a } b").is_err());
        assert!(placeholders("a {} b").is_err());
        assert!(placeholders("a {Session id} b").is_err());
    }

    #[test]
    fn undocumented_entries_use_the_range_rule() {
        for e in all().iter().filter(|e| !e.documented) {
            assert_eq!(e.category, default_category(e.code), "{}", e.code);
        }
        assert_eq!(default_category(20505), "HIERARCHY");
        assert_eq!(default_category(50003), "Login");
        assert_eq!(default_category(52010), "Appliance");
        assert_eq!(default_category(10039), "General");
        assert_eq!(default_category(21501), "SYSTEM");
        assert_eq!(default_category(60999), "Audit");
        assert_eq!(default_category(60500), "Appliance");
        assert_eq!(default_category(99999), "-");
    }

    #[test]
    fn lookup_edges() {
        assert!(lookup(0).is_empty());
        assert!(lookup(u32::MAX).is_empty());
        assert!(!is_known(10013));
        assert!(!is_known(50004));
        assert!(is_known(10001) && is_known(60906) && is_known(60908));
    }

    #[test]
    fn bad_text_is_refused_not_panicked() {
        assert!(matches!(
            parse("[[entry]]\ncode = "),
            Err(CatalogError::Parse(_))
        ));
        let unknown = "[[entry]]\ncode = 50000\ncomponent = \"WebConsole\"\n\
                       category = \"Login\"\ndescription = \"x\"\ndocumented = false\nbogus = 1\n";
        assert!(matches!(parse(unknown), Err(CatalogError::Parse(_))));
        assert!(build("not toml [").is_empty());
        let text = "[[entry]]\ncode = 20001\ncomponent = \"WebConsole\"\ncategory = \"SYSTEM\"\n\
                    description = \"x\"\ndocumented = false\n\
                    [[entry]]\ncode = 50000\ncomponent = \"WebConsole\"\ncategory = \"Login\"\n\
                    description = \"x\"\ndocumented = false\n\
                    [[entry]]\ncode = 50000\ncomponent = \"WebConsole\"\ncategory = \"Login\"\n\
                    description = \"x\"\ndocumented = false\n";
        let entries = parse(text).unwrap();
        let problems = validate(&entries);
        assert!(matches!(
            problems[0],
            (0, CatalogError::OutOfRange { code: 20001, .. })
        ));
        assert!(matches!(
            problems[1],
            (2, CatalogError::Duplicate { code: 50000, .. })
        ));
        assert_eq!(problems.len(), 2);
        assert_eq!(build(text).len(), 1);
    }

    #[test]
    fn bracket_fields_that_would_need_escaping_are_refused() {
        for category in [
            "Lo[gin",
            "Lo|gin",
            "Lo]gin",
            "Lo\u{202e}gin",
            "Lo\u{200b}gin",
        ] {
            let text = format!(
                "[[entry]]\ncode = 50000\ncomponent = \"WebConsole\"\ncategory = \"{category}\"\n\
                 description = \"x\"\nformat = \"x\"\ndocumented = true\n"
            );
            let problems = validate(&parse(&text).unwrap());
            assert!(
                matches!(problems.as_slice(), [(0, CatalogError::Invalid { .. })]),
                "{category:?}: {problems:?}"
            );
        }
    }
}

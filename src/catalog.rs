//! The event code catalog, compiled in from `catalog/codes.toml`.
//!
//! STUB: the real loader is being written; the API below is the contract.

use crate::protocol::Component;

/// One catalog entry. A code may have several (52010, 52100).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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
    pub aliases: Vec<String>,
    /// Whether `format` is Nexthink's documented format.
    pub documented: bool,
}

/// Every entry for `code` (empty when uncatalogued).
pub fn lookup(code: u32) -> &'static [CodeInfo] {
    let _ = code;
    &[]
}

/// Whether the catalog lists `code`.
pub fn is_known(code: u32) -> bool {
    !lookup(code).is_empty()
}

/// Category used for codes without a documented one, chosen by range.
pub fn default_category(code: u32) -> &'static str {
    match Component::of_code(code) {
        Some(Component::Engine) => "General",
        Some(Component::Portal) => "SYSTEM",
        Some(Component::WebConsole) => "Appliance",
        Some(Component::Appliance) => "Appliance",
        None => "-",
    }
}

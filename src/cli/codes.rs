//! `nxaudit codes [--component C] [--json]`: prints the event code catalog.
//!
//! Operators use it to see what a code means and what line it produces, so
//! the text table shows the bracket exactly as the daemon writes it
//! (`[Console|Login|50000|{account}] Login successful`). `--json` is for
//! scripts and prints every catalog field. Printing takes any
//! `std::io::Write` so it is tested without a process.

use std::io::Write;

use anyhow::Context as _;

use super::Context;
use crate::catalog::Component;
use crate::catalog::{self, CodeInfo};

/// Arguments of `nxaudit codes`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Only this code: print everything the catalog says about it (every
    /// description a code has).
    #[arg(value_name = "CODE")]
    pub code: Option<u32>,
    /// Only this component: Engine, Portal, WebConsole (or Console),
    /// Appliance; case-insensitive.
    #[arg(long)]
    pub component: Option<String>,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the subcommand; returns the exit code (2 for an unknown component).
pub fn run(_ctx: &Context, args: &Args) -> anyhow::Result<i32> {
    let component = match args.component.as_deref() {
        None => None,
        Some(name) => match parse_component(name) {
            Some(c) => Some(c),
            None => {
                eprintln!(
                    "nxaudit codes: unknown component {name:?} \
                     (expected Engine, Portal, WebConsole, Console or Appliance)"
                );
                return Ok(2);
            }
        },
    };
    let mut entries = select(catalog::all(), component);
    if let Some(code) = args.code {
        entries.retain(|e| e.code == code);
        if entries.is_empty() {
            eprintln!(
                "nxaudit codes: {code} is not in the catalog{} (nxaudit codes lists them all)",
                match component {
                    Some(c) => format!(" of {c}"),
                    None => String::new(),
                }
            );
            return Ok(1);
        }
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let printed = if args.code.is_some() && !args.json {
        print_detail(&mut out, &entries)
    } else {
        print(&mut out, &entries, args.json)
    };
    match printed.and_then(|()| out.flush()) {
        Ok(()) => Ok(0),
        // `nxaudit codes | head` closes the pipe early: not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(e).context("writing the catalog to stdout"),
    }
}

/// Parses a component name, case-insensitively; `Console` is the Web
/// Console's name in log lines.
pub fn parse_component(name: &str) -> Option<Component> {
    match name.trim().to_ascii_lowercase().as_str() {
        "engine" => Some(Component::Engine),
        "portal" => Some(Component::Portal),
        "webconsole" | "console" => Some(Component::WebConsole),
        "appliance" => Some(Component::Appliance),
        _ => None,
    }
}

/// The entries of `component` (all when `None`), in catalog order.
pub fn select(entries: &[CodeInfo], component: Option<Component>) -> Vec<&CodeInfo> {
    entries
        .iter()
        .filter(|e| component.is_none() || component == Some(e.component))
        .collect()
}

/// The documented line of an entry as the daemon writes it, placeholders
/// kept: `[Console|Login|50000|{account}] Login successful`. `None` when
/// the format is not documented.
pub fn documented_line(e: &CodeInfo) -> Option<String> {
    let format = e.format.as_deref()?;
    let source = match e.component {
        Component::WebConsole => "Console",
        Component::Portal => "Portal",
        Component::Engine => "{engine}",
        Component::Appliance => "Appliance",
    };
    let account = e.account.as_deref().unwrap_or("{account}");
    Some(format!(
        "[{source}|{}|{}|{account}] {format}",
        e.category, e.code
    ))
}

/// Prints every field of `entries` (the descriptions of one code), one
/// block each: what `nxaudit codes CODE` shows.
pub fn print_detail(out: &mut impl Write, entries: &[&CodeInfo]) -> std::io::Result<()> {
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        writeln!(out, "code:         {}", e.code)?;
        writeln!(out, "component:    {}", e.component)?;
        writeln!(out, "category:     {}", e.category)?;
        writeln!(out, "description:  {}", e.description)?;
        match documented_line(e) {
            Some(l) if e.documented => writeln!(out, "line:         {l}")?,
            Some(l) => writeln!(out, "line:         {l} (not Nexthink's documented format)")?,
            None => writeln!(
                out,
                "line:         - (no documented format; the description is written)"
            )?,
        }
        for a in &e.aliases {
            writeln!(out, "also:         {a}")?;
        }
        if let Some(n) = &e.note {
            writeln!(out, "note:         {n}")?;
        }
    }
    Ok(())
}

/// Prints `entries` as a table or as a JSON array.
pub fn print(out: &mut impl Write, entries: &[&CodeInfo], json: bool) -> std::io::Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, entries)?;
        return writeln!(out);
    }
    let rows: Vec<[String; 5]> = entries
        .iter()
        .map(|e| {
            [
                e.code.to_string(),
                e.component.to_string(),
                e.category.clone(),
                e.description.clone(),
                documented_line(e).unwrap_or_else(|| "-".to_string()),
            ]
        })
        .collect();
    let header = ["CODE", "COMPONENT", "CATEGORY", "DESCRIPTION", "FORMAT"];
    let mut width = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: [&str; 5]| -> std::io::Result<()> {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(cell);
                let pad = width[i] - cell.chars().count() + 2;
                s.extend(std::iter::repeat(' ').take(pad));
            }
        }
        writeln!(out, "{}", s.trim_end())
    };
    line(header)?;
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3], &row[4]])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(component: Option<Component>, json: bool) -> String {
        let mut buf = Vec::new();
        print(&mut buf, &select(catalog::all(), component), json).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn detail_of_one_code() {
        let entries: Vec<&CodeInfo> = catalog::lookup(50000).iter().collect();
        let mut buf = Vec::new();
        print_detail(&mut buf, &entries).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("code:         50000"), "{text}");
        assert!(
            text.contains("[Console|Login|50000|{account}] Login successful"),
            "{text}"
        );
    }

    #[test]
    fn component_names() {
        assert_eq!(parse_component("console"), Some(Component::WebConsole));
        assert_eq!(parse_component("WEBCONSOLE"), Some(Component::WebConsole));
        assert_eq!(parse_component("Portal"), Some(Component::Portal));
        assert_eq!(parse_component("engine"), Some(Component::Engine));
        assert_eq!(parse_component("appliance"), Some(Component::Appliance));
        assert_eq!(parse_component("Finder"), None);
        assert_eq!(parse_component(""), None);
    }

    #[test]
    fn table_shows_the_documented_bracket() {
        let text = render(None, false);
        assert!(text.starts_with("CODE"));
        assert_eq!(text.lines().count(), 1 + catalog::all().len());
        let line = |code: &str| {
            text.lines()
                .find(|l| l.starts_with(code))
                .unwrap()
                .to_string()
        };
        assert!(line("50000").ends_with("[Console|Login|50000|{account}] Login successful"));
        assert!(line("20001").ends_with("[Portal|SYSTEM|20001|*system] Portal is starting"));
        assert!(line("10009").ends_with(
            "[{engine}|Database|10009|portal] Finder account creation:[{created_account}]"
        ));
        assert!(line("60001").contains("SSH logon"));
        assert!(line("60001").ends_with(" -"));
    }

    #[test]
    fn table_filters_by_component() {
        let text = render(Some(Component::Engine), false);
        assert_eq!(text.lines().count(), 1 + 26);
        assert!(text.lines().skip(1).all(|l| l.starts_with("10")));
    }

    #[test]
    fn json_has_every_field() {
        let text = render(Some(Component::WebConsole), true);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let arr = v.as_array().unwrap();
        assert_eq!(arr.len(), 52);
        let first = &arr[0];
        assert_eq!(first["code"], 50000);
        assert_eq!(first["component"], "WebConsole");
        assert_eq!(first["category"], "Login");
        assert_eq!(first["description"], "User logged in");
        assert_eq!(first["format"], "Login successful");
        assert_eq!(first["documented"], true);
        assert!(first["account"].is_null());
        assert!(first["aliases"].as_array().unwrap().is_empty());
        let undocumented = arr.iter().find(|e| e["code"] == 51111).unwrap();
        assert!(undocumented["format"].is_null());
        assert_eq!(undocumented["documented"], false);
    }

    #[test]
    fn empty_selection_prints_header_or_empty_array() {
        let mut buf = Vec::new();
        print(&mut buf, &[], true).unwrap();
        assert_eq!(String::from_utf8(buf).unwrap().trim(), "[]");
        let mut buf = Vec::new();
        print(&mut buf, &[], false).unwrap();
        assert_eq!(String::from_utf8(buf).unwrap().lines().count(), 1);
    }
}

//! The import graph of `src/` flows one way: no circle between modules,
//! so no module imports the module that starts it.
//!
//! Read from the sources, not from the compiler: every `crate::…` and
//! `super::…` path outside comments and `#[cfg(test)]` modules is resolved
//! to the file of the deepest module it names, and the files form a graph.
//! A child module using its own parent's items (`super::Config` from
//! `writer/rotate.rs`) is the parent's private business, not a layer: those
//! edges are left out, so the check is about files in different modules.
//!
//! Sources and sinks are plug-ins: the daemon starts what `sources::build`
//! and `sinks::build` return and names none of them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path (`["writer", "rotate"]`) and the file that holds it.
struct Module {
    path: Vec<String>,
    file: PathBuf,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every library module file under `src/` (binaries are leaves: nothing
/// can import them).
fn modules() -> Vec<Module> {
    let src = src_dir();
    let mut out = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let p = entry.expect("entry").path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "bin") {
                    stack.push(p);
                }
                continue;
            }
            if p.extension().map_or(true, |e| e != "rs") {
                continue;
            }
            let rel = p.strip_prefix(&src).expect("under src");
            let mut path: Vec<String> = rel
                .with_extension("")
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            if path.last().is_some_and(|l| l == "mod") || path == ["lib"] {
                path.pop();
            }
            out.push(Module { path, file: p });
        }
    }
    out
}

/// The code of a file without comments and without its test modules.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            // Skip the item that follows: a `mod … { … }` block by braces,
            // or a single line.
            let mut depth = 0i32;
            let mut opened = false;
            for l in lines.by_ref() {
                let code = l.split("//").next().unwrap_or("");
                depth += code.matches('{').count() as i32;
                depth -= code.matches('}').count() as i32;
                opened |= code.contains('{');
                if (opened && depth <= 0) || (!opened && code.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        if t.starts_with("//") {
            continue;
        }
        let code = match line.find("//") {
            // A `//` inside a string literal is rare in paths; good enough.
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Expands the use-tree starting at `s` (just after `crate::`/`super::`)
/// into full paths, each a list of segments.
fn tree(s: &[u8], i: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    loop {
        skip_ws(s, i);
        if *i < s.len() && s[*i] == b'{' {
            *i += 1;
            loop {
                skip_ws(s, i);
                if *i >= s.len() {
                    return;
                }
                if s[*i] == b'}' {
                    *i += 1;
                    return;
                }
                if s[*i] == b',' {
                    *i += 1;
                    continue;
                }
                tree(s, i, &path, out);
            }
        }
        let start = *i;
        while *i < s.len() && (s[*i].is_ascii_alphanumeric() || s[*i] == b'_') {
            *i += 1;
        }
        if *i == start {
            out.push(path);
            return;
        }
        let ident = String::from_utf8_lossy(&s[start..*i]).into_owned();
        if ident != "self" {
            path.push(ident);
        }
        skip_ws(s, i);
        if s[*i..].starts_with(b"::") {
            *i += 2;
            continue;
        }
        out.push(path);
        return;
    }
}

fn skip_ws(s: &[u8], i: &mut usize) {
    while *i < s.len() && s[*i].is_ascii_whitespace() {
        *i += 1;
    }
}

/// The module paths a file names through `crate::` and `super::`.
fn named_paths(module: &[String], code: &str) -> Vec<Vec<String>> {
    let s = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let boundary = i == 0 || !(s[i - 1].is_ascii_alphanumeric() || s[i - 1] == b'_');
        let rest = &s[i..];
        if boundary && rest.starts_with(b"crate::") {
            i += "crate::".len();
            tree(s, &mut i, &[], &mut out);
        } else if boundary && rest.starts_with(b"super::") {
            let mut base = module.to_vec();
            while s[i..].starts_with(b"super::") {
                base.pop();
                i += "super::".len();
            }
            tree(s, &mut i, &base, &mut out);
        } else {
            i += 1;
        }
    }
    out
}

/// Module-to-module edges (by module path), child-to-ancestor ones left out.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    let known: BTreeSet<Vec<String>> = mods.iter().map(|m| m.path.clone()).collect();
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in &mods {
        let text = std::fs::read_to_string(&m.file).expect("read module");
        let from = m.path.join("::");
        g.entry(from.clone()).or_default();
        for p in named_paths(&m.path, &code_of(&text)) {
            // The deepest module the path names.
            let Some(to) = (0..=p.len())
                .rev()
                .map(|n| p[..n].to_vec())
                .find(|q| known.contains(q))
            else {
                continue;
            };
            if to.is_empty() || to == m.path || m.path.starts_with(&to) {
                continue;
            }
            g.get_mut(&from).expect("entry").insert(to.join("::"));
        }
    }
    g
}

/// Strongly connected components with more than one module (Tarjan).
fn circles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'g> {
        g: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on: BTreeSet<&'g str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'g>(t: &mut T<'g>, v: &'g str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).expect("low");
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).expect("low");
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn import_graph_has_no_circle() {
    let g = graph();
    assert!(g.len() > 20, "found too few modules: {:?}", g.keys());
    let found = circles(&g);
    let mut msg = String::new();
    for c in &found {
        msg.push_str(&format!("\ncircle of {} modules:", c.len()));
        for m in c {
            let deps: Vec<&String> = g[m].iter().filter(|d| c.contains(d)).collect();
            msg.push_str(&format!("\n  {m} -> {deps:?}"));
        }
    }
    assert!(found.is_empty(), "import circles in src/:{msg}");
}

#[test]
fn circle_check_sees_a_planted_circle() {
    let mut g = graph();
    g.entry("record".into())
        .or_default()
        .insert("writer".into());
    g.entry("writer".into())
        .or_default()
        .insert("record".into());
    assert!(
        circles(&g)
            .iter()
            .any(|c| c.contains(&"record".to_string())),
        "a planted record <-> writer circle was not found"
    );
}

#[test]
fn use_trees_expand() {
    let code = "use crate::{catalog::{self, Component}, protocol};\nlet x = super::super::a::b(1);";
    let got = named_paths(&["x".into(), "y".into(), "z".into()], code);
    let want: Vec<Vec<String>> = vec![
        vec!["catalog".into()],
        vec!["catalog".into(), "Component".into()],
        vec!["protocol".into()],
        vec!["x".into(), "a".into(), "b".into()],
    ];
    assert_eq!(got, want);
}

#[test]
fn daemon_names_no_source_or_sink() {
    let text = std::fs::read_to_string(src_dir().join("daemon.rs")).expect("read daemon.rs");
    let code = code_of(&text);
    for plugin in [
        "sources::journal",
        "sources::syslog_intake",
        "sinks::file",
        "sinks::syslog",
    ] {
        assert!(
            !code.contains(plugin),
            "daemon.rs names {plugin}: register it in its build() instead"
        );
    }
    assert!(code.contains("sources::build(") && code.contains("sinks::build("));
}

//! The layer order of marten-pg's modules, checked over the source: a module may use the
//! modules below it, never one above it. A `use crate::x` (or `crate::x::..` path, or
//! `super::x` from a child folder) that points upward fails this test, unless it is one of
//! the known upward imports listed below, which the redesign (issue #13) is removing.
//! The list must shrink: an entry that no longer occurs fails the test too, so whoever
//! removes an upward import also removes its line.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// Bottom to top. Modules on one line form one layer; within a layer, earlier modules
/// must not use later ones either.
const LAYERS: &[&[&str]] = &[
    &[
        "json",
        "xid8",
        "validate",
        "id",
        "stream_key",
        "tenant_key",
        "event_tenant",
        "column_type",
        "trace",
        "sql_lexer",
    ],
    &["tables"],
    &["error_map"],
    &["connection"],
    &["schema"],
    &["unit_of_work"],
    &["documents", "events"],
    &["projections", "subscriptions"],
    &["store"],
    &["query"],
    &["session"],
    &["daemon", "status", "health"],
    &["tenancy"],
    &["private"],
];

/// Known upward imports, `from -> to`, still to be removed.
const KNOWN_UPWARD: &[&str] = &[];

fn rank(module: &str) -> Option<(usize, usize)> {
    LAYERS.iter().enumerate().find_map(|(layer, mods)| {
        mods.iter()
            .position(|m| *m == module)
            .map(|pos| (layer, pos))
    })
}

/// The top-level modules a file's code (comments aside) refers to.
fn references(text: &str, depth: usize) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for part in group[..end].split(',') {
                    out.insert(first_ident(part.trim()));
                }
            } else {
                out.insert(first_ident(rest));
            }
        }
        let parent = if depth >= 2 {
            "super::super::"
        } else {
            "super::"
        };
        if depth >= 1 {
            let mut rest = code;
            while let Some(at) = rest.find(parent) {
                rest = &rest[at + parent.len()..];
                out.insert(first_ident(rest));
            }
        }
    }
    out
}

fn first_ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn modules_import_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    files(&src, &mut paths);
    let mut unknown = Vec::new();
    let mut upward = BTreeSet::new();
    for path in paths {
        let rel = path.strip_prefix(&src).expect("under src");
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let top = parts[0].trim_end_matches(".rs").to_owned();
        if top == "lib" || top == "main" {
            continue;
        }
        let Some(from) = rank(&top) else {
            unknown.push(top);
            continue;
        };
        let text = fs::read_to_string(&path).expect("readable source");
        // A trailing test module may use anything.
        let text = text.split("#[cfg(test)]").next().unwrap_or("");
        for target in references(text, parts.len() - 1) {
            if target == top {
                continue;
            }
            let Some(to) = rank(&target) else {
                continue;
            };
            if to > from {
                upward.insert(format!("{top} -> {target}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "modules missing from LAYERS (give each a layer): {unknown:?}"
    );
    let known: BTreeSet<String> = KNOWN_UPWARD.iter().map(|s| (*s).to_owned()).collect();
    let new: Vec<&String> = upward.difference(&known).collect();
    let gone: Vec<&String> = known.difference(&upward).collect();
    assert!(
        new.is_empty(),
        "modules import a layer above them (see LAYERS in this file): {new:#?}"
    );
    assert!(
        gone.is_empty(),
        "these upward imports are gone: delete them from KNOWN_UPWARD: {gone:#?}"
    );
}

#[test]
fn the_scanner_sees_paths_groups_and_parents() {
    let text = "use crate::{store::X, events};\nlet a = crate::daemon::f(); // crate::cli\n";
    let refs = references(text, 0);
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["daemon", "events", "store"]
    );
    let refs = references("use super::session::S;", 1);
    assert!(refs.contains("session"));
    assert!(references("use super::session::S;", 0).is_empty());
}

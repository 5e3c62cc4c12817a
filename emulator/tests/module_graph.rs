//! The library's top-level modules form a graph without cycles, and none of them reaches up into
//! the crate root (`lib.rs`): each `crate::` path in `src/` is read as an edge from the module
//! whose file holds it to the module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The binary's own files: their `crate::` is `main.rs`, not the library.
const BINARY_FILES: [&str; 3] = ["main.rs", "cli.rs", "policy_cli.rs"];
const ROOT: &str = "(crate root)";

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/ca/csr.rs` and `src/ca.rs` belong to `ca`; `src/lib.rs` to the root.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    match first.strip_suffix(".rs") {
        Some("lib") => ROOT.to_owned(),
        Some(name) => name.to_owned(),
        None => first.into_owned(),
    }
}

fn ident(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The first segment of every `crate::` path in `code`, braces expanded (`crate::{a, b::c}`).
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        let after = &rest[at + "crate::".len()..];
        rest = after;
        // `$crate::` in a macro, or a longer word ending in `crate`.
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if c.is_whitespace() => {}
                    _ if item_start && depth == 0 => {
                        item_start = false;
                        out.push(ident(&group[i..]).to_owned());
                    }
                    _ => {}
                }
            }
        } else {
            out.push(ident(after).to_owned());
        }
    }
    out
}

/// The code of a file without its comments (`//` to the end of the line).
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| line.find("//").map_or(line, |at| &line[..at]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Edges between top-level modules, each with a file that makes it.
fn graph() -> (BTreeSet<String>, BTreeMap<(String, String), String>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| module_of(&src, f))
        .filter(|m| m != ROOT && !BINARY_FILES.contains(&format!("{m}.rs").as_str()))
        .collect();
    let mut edges = BTreeMap::new();
    for file in &files {
        let from = module_of(&src, file);
        if BINARY_FILES.contains(&format!("{from}.rs").as_str()) {
            continue;
        }
        let code = without_comments(&fs::read_to_string(file).unwrap());
        for first in crate_paths(&code) {
            let to = if modules.contains(&first) {
                first
            } else {
                ROOT.to_owned()
            };
            if to != from {
                let shown = file.strip_prefix(&src).unwrap().display().to_string();
                edges.entry((from.clone(), to)).or_insert(shown);
            }
        }
    }
    (modules, edges)
}

/// Every cycle's modules, one strongly connected component of more than one module each.
fn cycles(edges: &BTreeMap<(String, String), String>) -> Vec<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        next.entry(from).or_default().push(to);
    }
    let reaches = |start: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start];
        while let Some(m) = stack.pop() {
            for &n in next.get(m).into_iter().flatten() {
                if seen.insert(n) {
                    stack.push(n);
                }
            }
        }
        seen
    };
    let nodes: BTreeSet<&str> = edges
        .keys()
        .flat_map(|(a, b)| [a.as_str(), b.as_str()])
        .collect();
    let reach: BTreeMap<&str, BTreeSet<&str>> = nodes.iter().map(|&n| (n, reaches(n))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    for &n in &nodes {
        let component: Vec<String> = nodes
            .iter()
            .filter(|&&m| m != n && reach[n].contains(m) && reach[m].contains(n))
            .map(|m| m.to_string())
            .chain([n.to_owned()])
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if component.len() > 1 && !out.contains(&component) {
            out.push(component);
        }
    }
    out
}

#[test]
fn no_module_reaches_up_into_the_crate_root() {
    let (_, edges) = graph();
    let upward: Vec<String> = edges
        .iter()
        .filter(|((_, to), _)| to == ROOT)
        .map(|((from, _), file)| format!("{from} ({file})"))
        .collect();
    assert!(
        upward.is_empty(),
        "these modules use items of lib.rs: {upward:?}"
    );
}

#[test]
fn top_level_modules_import_each_other_in_no_cycle() {
    let (_, edges) = graph();
    let found = cycles(&edges);
    let explained: Vec<String> = found
        .iter()
        .map(|component| {
            let inside: Vec<String> = edges
                .iter()
                .filter(|((a, b), _)| component.contains(a) && component.contains(b))
                .map(|((a, b), file)| format!("{a} -> {b} ({file})"))
                .collect();
            format!("{component:?}: {}", inside.join(", "))
        })
        .collect();
    assert!(
        explained.is_empty(),
        "import cycles between modules: {explained:#?}"
    );
}

/// The parser itself: a check that finds nothing because it reads nothing would pass.
#[test]
fn the_graph_reader_sees_paths_and_cycles() {
    let code = "use crate::{a::X, b, c::{d, e}};\nlet y = crate::f::g(); $crate::h; notcrate::i;";
    assert_eq!(crate_paths(code), ["a", "b", "c", "f"]);
    assert_eq!(without_comments("x // crate::z\ny"), "x \ny");
    let edge = |a: &str, b: &str| ((a.to_owned(), b.to_owned()), String::new());
    let edges: BTreeMap<_, _> = [
        edge("a", "b"),
        edge("b", "c"),
        edge("c", "a"),
        edge("c", "d"),
    ]
    .into_iter()
    .collect();
    assert_eq!(cycles(&edges), [vec!["a", "b", "c"]]);
    let (modules, edges) = graph();
    assert!(modules.contains("service") && modules.contains("broker"));
    assert!(edges.contains_key(&("service".to_owned(), "registry".to_owned())));
}

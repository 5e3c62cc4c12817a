//! The table "The C API in each package" in docs/bindings.md against the header and the
//! sources of the Go, Node.js and Python packages: every function of `fleetprov.h` has a row,
//! and each row says of each package what its sources show (declared, or left out on purpose
//! with a reason). Only files are read: no Go, Node.js or Python is needed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const DOC: &str = "docs/bindings.md";
const HEADER: &str = "libfleetprov/include/fleetprov.h";
const TABLE_HEAD: &str = "| C function | Go | Node.js | Python |";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The files of `dir` (relative to the repository root) whose names end in `ext`, sorted.
fn files(dir: &str, ext: &str, skip_suffix: Option<&str>) -> Vec<String> {
    let path = root().join(dir);
    let mut out: Vec<String> = fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", path.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(ext) && !skip_suffix.is_some_and(|s| n.ends_with(s)))
        .map(|n| format!("{dir}/{n}"))
        .collect();
    out.sort();
    out
}

#[derive(Clone, Copy, PartialEq)]
enum Lang {
    /// C, Go and JavaScript: `//` and `/* */` comments; '', "" and `` strings.
    CLike,
    /// `#` comments; '', "" and triple-quoted strings.
    Python,
}

/// A source file split into its code (comments blanked out, string literals kept) and its
/// string literals (content and the offset of the opening quote in `code`).
struct Source {
    code: String,
    literals: Vec<(usize, String)>,
}

fn lex(text: &str, lang: Lang) -> Source {
    let b = text.as_bytes();
    let mut code = String::with_capacity(text.len());
    let mut literals = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let rest = &text[i..];
        let comment_end =
            if lang == Lang::CLike && rest.starts_with("//") || lang == Lang::Python && c == b'#' {
                Some(rest.find('\n').map_or(b.len(), |n| i + n))
            } else if lang == Lang::CLike && rest.starts_with("/*") {
                Some(rest[2..].find("*/").map_or(b.len(), |n| i + 2 + n + 2))
            } else {
                None
            };
        if let Some(end) = comment_end {
            code.push(' ');
            i = end;
            continue;
        }
        let quote: Option<&str> = match c {
            b'"' | b'\''
                if lang == Lang::Python
                    && (rest.starts_with("\"\"\"") || rest.starts_with("'''")) =>
            {
                Some(&rest[..3])
            }
            b'"' | b'\'' => Some(&rest[..1]),
            b'`' if lang == Lang::CLike => Some("`"),
            _ => None,
        };
        let Some(quote) = quote else {
            code.push(c as char);
            i += 1;
            continue;
        };
        let start = i + quote.len();
        let mut j = start;
        while j < b.len() && !text[j..].starts_with(quote) {
            // A backslash escapes the next character; a plain string ends at its line.
            if b[j] == b'\\' {
                j += 1;
            } else if b[j] == b'\n' && quote.len() == 1 && quote != "`" {
                break;
            }
            j += 1;
        }
        let end = j.min(b.len());
        literals.push((code.len(), text[start..end].to_string()));
        code.push_str(&text[i..(end + quote.len()).min(b.len())]);
        i = end + quote.len();
    }
    Source { code, literals }
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The identifiers that start with `fp_` and are followed by `(`, and the byte before each.
fn calls(text: &str) -> Vec<(Option<u8>, String)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(n) = text[i..].find("fp_") {
        let start = i + n;
        let mut end = start;
        while end < b.len() && is_ident(b[end]) {
            end += 1;
        }
        let before = start.checked_sub(1).map(|k| b[k]);
        let mut k = end;
        while k < b.len() && b[k].is_ascii_whitespace() {
            k += 1;
        }
        if !before.is_some_and(is_ident) && k < b.len() && b[k] == b'(' {
            out.push((before, text[start..end].to_string()));
        }
        i = end.max(start + 1);
    }
    out
}

/// The functions `fleetprov.h` declares, in its order.
fn header_functions() -> Vec<String> {
    let src = lex(&read(HEADER), Lang::CLike);
    let mut seen = BTreeSet::new();
    calls(&src.code)
        .into_iter()
        .map(|(_, name)| name)
        .filter(|name| seen.insert(name.clone()))
        .collect()
}

/// Go: `C.fp_x(` in the package's .go files (not its tests), `fp_x(` in its C shim.
fn go_functions() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for file in files("bindings/go", ".go", Some("_test.go")) {
        let code = lex(&read(&file), Lang::CLike).code;
        for (_, name) in calls(&code) {
            if find_call(&code, &name, "C.").is_some() {
                out.insert(name);
            }
        }
    }
    for file in files("bindings/go", ".c", None) {
        let code = lex(&read(&file), Lang::CLike).code;
        out.extend(
            calls(&code)
                .into_iter()
                .filter(|(before, _)| *before != Some(b'.'))
                .map(|(_, n)| n),
        );
    }
    out
}

/// Whether `prefix` + `name` + `(` occurs in `code` with `prefix` not part of a longer name.
fn find_call(code: &str, name: &str, prefix: &str) -> Option<usize> {
    let needle = format!("{prefix}{name}");
    let b = code.as_bytes();
    let mut i = 0;
    while let Some(n) = code[i..].find(&needle) {
        let at = i + n;
        let end = at + needle.len();
        let clean_start = at == 0 || !is_ident(b[at - 1]);
        let clean_end = end >= b.len() || !is_ident(b[end]);
        if clean_start && clean_end && code[end..].trim_start().starts_with('(') {
            return Some(at);
        }
        i = end;
    }
    None
}

/// Node.js: the functions named in koffi signatures (string literals "ret fp_x(args)"),
/// including those a helper builds from a template (`fp_client_options_set_${name}(` in a
/// `const setter = (name, ...) =>`, called as `setter('port', ...)`).
fn node_functions() -> BTreeSet<String> {
    let mut sources = files("bindings/node/lib", ".js", None);
    sources.push("bindings/node/index.js".to_string());
    let mut out = BTreeSet::new();
    for file in sources {
        let src = lex(&read(&file), Lang::CLike);
        for (at, lit) in &src.literals {
            out.extend(calls(lit).into_iter().map(|(_, n)| n));
            // A template: "fp_prefix_${param}(".
            let Some(dollar) = lit.find("${") else {
                continue;
            };
            let prefix_start = lit[..dollar]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(0, |k| k + 1);
            let prefix = &lit[prefix_start..dollar];
            if !prefix.starts_with("fp_") {
                continue;
            }
            // The helper: `const NAME = (` on the line that holds the template.
            let line_start = src.code[..*at].rfind('\n').map_or(0, |k| k + 1);
            let line = &src.code[line_start..*at];
            let Some(helper) = line
                .trim_start()
                .strip_prefix("const ")
                .and_then(|r| r.split([' ', '=']).next())
            else {
                panic!("{file}: a koffi signature template ({prefix}${{...}}) outside `const helper = (...) =>`: this test cannot tell which functions it declares");
            };
            // Its calls: helper('suffix', ...).
            let call = format!("{helper}(");
            let mut i = 0;
            while let Some(n) = src.code[i..].find(&call) {
                let after = i + n + call.len();
                let rest = src.code[after..].trim_start();
                if let Some(q) = rest
                    .chars()
                    .next()
                    .filter(|q| matches!(q, '\'' | '"' | '`'))
                {
                    if let Some(len) = rest[1..].find(q) {
                        out.insert(format!("{prefix}{}", &rest[1..1 + len]));
                    }
                }
                i = after;
            }
        }
    }
    out
}

/// Python: the functions the ctypes layer looks up by name (`_fn("fp_x", ...)`): string
/// literals that are exactly a function's name.
fn python_functions() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for file in files("bindings/python/src/fleetprov", ".py", None) {
        let src = lex(&read(&file), Lang::Python);
        out.extend(
            src.literals
                .into_iter()
                .map(|(_, lit)| lit)
                .filter(|lit| lit.starts_with("fp_") && lit.bytes().all(is_ident)),
        );
    }
    out
}

#[derive(Debug, PartialEq)]
enum Cell {
    Tested,
    Present,
    LeftOut,
}

struct Binding {
    name: &'static str,
    found: BTreeSet<String>,
    /// How this package declares a function (`{f}` stands for its name), for the messages.
    how: &'static str,
}

/// The table's rows: function name → (line number, one cell per package).
fn doc_rows(failures: &mut Vec<String>) -> BTreeMap<String, (usize, Vec<Cell>)> {
    let doc = read(DOC);
    let mut lines = doc
        .lines()
        .enumerate()
        .skip_while(|(_, l)| l.trim() != TABLE_HEAD);
    assert!(
        lines.next().is_some(),
        "{DOC} has no table headed `{TABLE_HEAD}` (the C API in each package)"
    );
    let mut rows = BTreeMap::new();
    for (n, line) in lines.skip(1).take_while(|(_, l)| l.starts_with('|')) {
        let n = n + 1;
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if cells.len() != 4 {
            failures.push(format!(
                "{DOC}:{n}: a row needs 4 cells (function, Go, Node.js, Python): {line}"
            ));
            continue;
        }
        let name = cells[0]
            .trim_matches('`')
            .trim_end_matches("()")
            .to_string();
        let mut parsed = Vec::new();
        for cell in &cells[1..] {
            parsed.push(if cell.starts_with("tested") {
                Cell::Tested
            } else if cell.starts_with("present") {
                Cell::Present
            } else if let Some(reason) = cell.strip_prefix("left out:") {
                if reason.trim().is_empty() {
                    failures.push(format!("{DOC}:{n}: `{name}`: \"left out:\" needs a reason after it"));
                }
                Cell::LeftOut
            } else {
                failures.push(format!(
                    "{DOC}:{n}: `{name}`: a cell starts with \"tested\", \"present\" or \"left out: <reason>\", not {cell:?}"
                ));
                Cell::LeftOut
            });
        }
        if rows.insert(name.clone(), (n, parsed)).is_some() {
            failures.push(format!("{DOC}:{n}: `{name}` has a second row"));
        }
    }
    rows
}

#[test]
fn every_c_function_is_in_each_binding_or_left_out_on_purpose() {
    let header = header_functions();
    assert!(
        header.len() > 50,
        "{HEADER}: found only {} functions: {header:?}",
        header.len()
    );
    let bindings = [
        Binding {
            name: "Go",
            found: go_functions(),
            how: "call `C.{f}(...)` in bindings/go/*.go nor `{f}(...)` in bindings/go/shim.c",
        },
        Binding {
            name: "Node.js",
            found: node_functions(),
            how: "koffi signature naming `{f}(...)` in bindings/node/lib/*.js or index.js",
        },
        Binding {
            name: "Python",
            found: python_functions(),
            how: "`_fn(\"{f}\", ...)` in bindings/python/src/fleetprov/*.py",
        },
    ];
    for b in &bindings {
        assert!(
            b.found.len() > 20,
            "found only {} functions in the {} package: {:?}",
            b.found.len(),
            b.name,
            b.found
        );
    }
    let mut failures = Vec::new();
    let rows = doc_rows(&mut failures);
    let how = |b: &Binding, f: &str| b.how.replace("{f}", f);

    for f in &header {
        let Some((line, cells)) = rows.get(f) else {
            let missing: Vec<&str> = bindings
                .iter()
                .filter(|b| !b.found.contains(f))
                .map(|b| b.name)
                .collect();
            let cells: Vec<&str> = bindings
                .iter()
                .map(|b| {
                    if b.found.contains(f) {
                        "present"
                    } else {
                        "left out: <why>"
                    }
                })
                .collect();
            let mut msg = format!("`{f}` ({HEADER}) has no row in the table in {DOC}.");
            for b in bindings.iter().filter(|b| !b.found.contains(f)) {
                msg += &format!(
                    "\n    It is missing from the {} package (no {}).",
                    b.name,
                    how(b, f)
                );
            }
            if !missing.is_empty() {
                msg += &format!(
                    "\n    Wrap it in {}, or mark it as left out on purpose with the reason.",
                    missing.join(" and ")
                );
            }
            msg += &format!(
                "\n    Add this row (in the header's order; write \"tested\" where the package's tests exercise it):\n    | `{f}` | {} |",
                cells.join(" | ")
            );
            failures.push(msg);
            continue;
        };
        for (b, cell) in bindings.iter().zip(cells) {
            let has = b.found.contains(f);
            match (cell, has) {
                (Cell::LeftOut, false) | (Cell::Tested | Cell::Present, true) => {}
                (Cell::LeftOut, true) => failures.push(format!(
                    "{DOC}:{line}: `{f}`: the {} package now has it, but its cell says \"left out\": write \"tested\" or \"present\"",
                    b.name
                )),
                (Cell::Tested | Cell::Present, false) => failures.push(format!(
                    "{DOC}:{line}: `{f}`: the table says the {} package has it, but it is missing there (no {}): wrap it, or write \"left out: <why>\"",
                    b.name,
                    how(b, f)
                )),
            }
        }
    }
    for (f, (line, _)) in &rows {
        if !header.contains(f) {
            failures.push(format!(
                "{DOC}:{line}: `{f}` is not a function of {HEADER}: remove its row"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "the binding table in {DOC} and the packages disagree ({} problems):\n  - {}\n",
        failures.len(),
        failures.join("\n  - ")
    );
}

#[test]
fn the_scanners_see_what_the_bindings_declare() {
    // The three ways a package names a function, each in a small sample.
    let go = lex(
        "x := C.fp_a(o) // C.fp_b(o)\n/* C.fp_c() */ s := \"C.fp_d(\"",
        Lang::CLike,
    );
    assert!(find_call(&go.code, "fp_a", "C.").is_some());
    assert!(find_call(&go.code, "fp_b", "C.").is_none());
    assert!(find_call(&go.code, "fp_c", "C.").is_none());
    let js = lex(
        "const f = (s) => lib.func(s); // 'int fp_x(void)'\nf('int fp_y(int a)');",
        Lang::CLike,
    );
    let in_literals: Vec<String> = js
        .literals
        .iter()
        .flat_map(|(_, l)| calls(l))
        .map(|(_, n)| n)
        .collect();
    assert_eq!(in_literals, ["fp_y"]);
    let py = lex(
        "# \"fp_q\"\nfp_r = _fn(\"fp_r\", c_int)\n\"\"\"fp_s is documented\"\"\"",
        Lang::Python,
    );
    let names: Vec<&str> = py.literals.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(names, ["fp_r", "fp_s is documented"]);
    // The header's callback typedefs are not functions.
    let h = lex(
        "typedef void (*fp_cb)(void *u);\nint fp_f(int a);",
        Lang::CLike,
    );
    let fns: Vec<String> = calls(&h.code).into_iter().map(|(_, n)| n).collect();
    assert_eq!(fns, ["fp_f"]);
}

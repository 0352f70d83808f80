//! The import graph of `src/` and `emulator/src/`: no module imports one above it, and no two
//! modules import each other, directly or through others. Read from the sources (every
//! `crate::…` and `super::…` path outside test code), so that a new arrow back up the layers
//! fails here rather than in a review.

#[path = "support/rust_source.rs"]
mod rust_source;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers of `src/`, lowest first: a module may import its own layer and the ones below.
const LAYERS: &[&[&str]] = &[
    // The pure core: no I/O.
    &["core"],
    // The Azure shell: the HTTP pipeline, credentials, the typed ARM client.
    &["azure"],
    // What the shell serves: where the Service Tags come from, what is remembered, where
    // messages go.
    &["source", "state", "notify"],
    // A validated run configuration, built from plain settings.
    &["config"],
    // One vault: observe → plan → gate → act → verify → record.
    &["reconcile"],
    // One run over the configured vaults, its report and the error policy.
    &["run"],
    // The edges.
    &["server"],
    &["cli"],
];

type Graph = BTreeMap<String, BTreeSet<String>>;

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

/// `a::b` for `src/a/b.rs` and `src/a/b/mod.rs`; `crate` for `lib.rs`/`main.rs`.
fn module_of(root: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    if parts.is_empty() {
        "crate".to_owned()
    } else {
        parts.join("::")
    }
}

/// The code of a file without comments, string and char literals, and without the items marked
/// `#[cfg(test)]` (wherever they are), with `::` written without spaces: what the compiler
/// resolves, and nothing a comment or a string could fake or hide.
fn code_of(text: &str) -> String {
    let stripped = rust_source::without_comments_and_literals(text);
    let without_tests = strip_test_items(&stripped);
    normalise_paths(&without_tests)
}

/// Removes each item marked `#[cfg(test)]`: the attribute, any attributes after it, and the item
/// up to its `;` or its balanced `{…}`.
fn strip_test_items(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at + "#[cfg(test)]".len()..];
        let mut depth = 0usize;
        let mut end = item.len();
        for (k, c) in item.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = k + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// `crate :: a ::b` → `crate::a::b`.
fn normalise_paths(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("::") {
        out.push_str(rest[..at].trim_end_matches(char::is_whitespace));
        out.push_str("::");
        rest = rest[at + 2..].trim_start_matches(char::is_whitespace);
    }
    out.push_str(rest);
    out
}

/// Every path written after `prefix` (`crate::` or `super::`), braces expanded one level:
/// `crate::{a::b, c}` gives `a::b` and `c`.
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(offset) = code[from..].find(prefix) {
        let at = from + offset;
        from = at + prefix.len();
        // Not the tail of a longer path (`foo::crate::`, the second `super::` of two).
        let before = code[..at].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = matching_brace(group);
            for item in split_top_level(&group[..end]) {
                found.push(leading_path(item.trim()));
            }
        } else {
            found.push(leading_path(rest));
        }
    }
    found.retain(|p| !p.is_empty());
    found
}

fn matching_brace(text: &str) -> usize {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    text.len()
}

fn split_top_level(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn leading_path(text: &str) -> String {
    let mut segments = Vec::new();
    let mut rest = text;
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        segments.push(&rest[..end]);
        match rest[end..].strip_prefix("::") {
            Some(next) if next.starts_with(|c: char| c.is_alphanumeric() || c == '_') => {
                rest = next
            }
            _ => break,
        }
    }
    segments.join("::")
}

/// The modules a file declares (`mod x;`, `pub mod x;`, `pub(crate) mod x;`).
fn declared_children(code: &str) -> Vec<String> {
    code.lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line.strip_suffix(';')?;
            let name = rest.rsplit_once("mod ")?.1.trim();
            let visibility = rest.rsplit_once("mod ")?.0.trim();
            (visibility.is_empty() || visibility.starts_with("pub"))
                .then(|| name.to_owned())
                .filter(|n| n.chars().all(|c| c.is_alphanumeric() || c == '_'))
        })
        .collect()
}

/// The longest prefix of `path` that is a module of `modules`, if any.
fn module_in(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let segments: Vec<&str> = path.split("::").collect();
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|candidate| modules.contains(candidate))
}

/// Module → the modules it imports.
fn graph(root: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    // Test-only files (`#[cfg(test)] mod tests;`) import freely.
    files.retain(|f| f.file_name().is_none_or(|n| n != "tests.rs"));
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(root, f)).collect();
    let mut graph = Graph::new();
    for file in &files {
        let module = module_of(root, file);
        let code = code_of(&fs::read_to_string(file).unwrap());
        let parent = module
            .rsplit_once("::")
            .map_or("crate", |(p, _)| p)
            .to_owned();
        let mut imports = BTreeSet::new();
        // `$crate::` in a macro is a `crate::` path too.
        for path in paths_after(&code, "crate::") {
            if let Some(target) = module_in(&path, &modules) {
                imports.insert(target);
            }
        }
        for path in paths_after(&code, "super::") {
            // `super::super::x`: one module further up per `super`.
            let mut base = parent.clone();
            let mut path = path.as_str();
            while let Some(rest) = path
                .strip_prefix("super::")
                .or((path == "super").then_some(""))
            {
                base = base
                    .rsplit_once("::")
                    .map_or("crate", |(p, _)| p)
                    .to_owned();
                path = rest;
            }
            let absolute = match (base.as_str(), path) {
                ("crate", path) => path.to_owned(),
                (base, "") => base.to_owned(),
                (base, path) => format!("{base}::{path}"),
            };
            if absolute.is_empty() {
                continue;
            }
            // `super::Item` is an import of the parent module itself.
            imports.insert(module_in(&absolute, &modules).unwrap_or_else(|| parent.clone()));
        }
        // `mod child;` and then `child::Item` (or `use child::Item`): an import of the child.
        for child in declared_children(&code) {
            let absolute = if module == "crate" {
                child.clone()
            } else {
                format!("{module}::{child}")
            };
            if modules.contains(&absolute) && !paths_after(&code, &format!("{child}::")).is_empty()
            {
                imports.insert(absolute);
            }
        }
        imports.remove(&module);
        imports.remove("crate");
        graph.entry(module).or_default().extend(imports);
    }
    graph
}

/// The strongly connected components of more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Walk<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'g>(walk: &mut Walk<'g>, node: &'g str) {
        let n = walk.index.len();
        walk.index.insert(node, n);
        walk.low.insert(node, n);
        walk.stack.push(node);
        walk.on_stack.insert(node);
        for next in walk.graph.get(node).into_iter().flatten() {
            let next = next.as_str();
            if !walk.index.contains_key(next) {
                visit(walk, next);
                let low = walk.low[next].min(walk.low[node]);
                walk.low.insert(node, low);
            } else if walk.on_stack.contains(next) {
                let low = walk.index[next].min(walk.low[node]);
                walk.low.insert(node, low);
            }
        }
        if walk.low[node] == walk.index[node] {
            let mut component = Vec::new();
            loop {
                let top = walk.stack.pop().unwrap();
                walk.on_stack.remove(top);
                component.push(top.to_owned());
                if top == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                walk.found.push(component);
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !walk.index.contains_key(node.as_str()) {
            visit(&mut walk, node);
        }
    }
    walk.found
}

fn layer_of(module: &str) -> Option<usize> {
    let top = module.split("::").next()?;
    LAYERS.iter().position(|layer| layer.contains(&top))
}

fn root(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

#[test]
fn src_has_no_import_circle() {
    let graph = graph(&root("src"));
    assert!(graph.len() > 30, "the sources were read: {graph:?}");
    assert_eq!(cycles(&graph), Vec::<Vec<String>>::new());
}

#[test]
fn no_module_of_src_imports_a_layer_above_it() {
    let graph = graph(&root("src"));
    let mut upward = Vec::new();
    for (module, imports) in &graph {
        let Some(own) = layer_of(module) else {
            continue;
        };
        for import in imports {
            let theirs = layer_of(import)
                .unwrap_or_else(|| panic!("{import} (imported by {module}) is in no layer"));
            if theirs > own {
                upward.push(format!("{module} -> {import}"));
            }
        }
    }
    assert_eq!(upward, Vec::<String>::new());
    for module in graph.keys() {
        assert!(
            module == "crate" || layer_of(module).is_some(),
            "{module} is in no layer: add it to LAYERS"
        );
    }
}

#[test]
fn no_import_is_hidden_from_this_reader() {
    // What would let an import past the reader above: the crate under another name, a module
    // file chosen by path, a macro exported to the whole crate.
    for root in [root("src"), root("emulator/src")] {
        let mut files = Vec::new();
        rust_files(&root, &mut files);
        for file in files {
            let code =
                rust_source::without_comments_and_literals(&fs::read_to_string(&file).unwrap());
            let code = normalise_paths(&code);
            for forbidden in [
                "crate as ",
                "self as ",
                "#[path",
                "#[macro_export]",
                "crate::self",
            ] {
                assert!(
                    !code.contains(forbidden),
                    "{} uses `{forbidden}`, which tests/layers.rs cannot follow",
                    file.display()
                );
            }
        }
    }
}

/// The emulator's layers as its `lib.rs` lists them (`//! 1 base  clock ids …: why`), lowest
/// first: module name → layer number.
fn emulator_layers(modules: &BTreeSet<String>) -> BTreeMap<String, usize> {
    let lib = fs::read_to_string(root("emulator/src/lib.rs")).unwrap();
    let mut layers: Vec<String> = Vec::new();
    for line in lib.lines().filter_map(|l| l.strip_prefix("//!")) {
        let line = line.trim();
        match line.split_once(' ') {
            Some((n, rest)) if n.parse::<usize>().is_ok() => layers.push(rest.to_owned()),
            _ if !layers.is_empty() && !line.is_empty() && !line.starts_with("```") => {
                let last = layers.last_mut().expect("checked");
                last.push(' ');
                last.push_str(line);
            }
            _ if line.starts_with("```") && !layers.is_empty() => break,
            _ => {}
        }
    }
    let mut of = BTreeMap::new();
    for (number, text) in layers.iter().enumerate() {
        // Drop the explanations in parentheses and after the colon; keep the module names.
        let mut names = String::new();
        let mut depth = 0;
        for c in text.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ if depth == 0 => names.push(c),
                _ => {}
            }
        }
        let names = names.split(':').next().unwrap_or_default();
        for name in names.split(|c: char| c.is_whitespace() || c == ',') {
            if modules.contains(name) {
                of.insert(name.to_owned(), number);
            }
        }
    }
    of
}

#[test]
fn no_module_of_the_emulator_imports_its_own_layer_or_one_above() {
    let graph = graph(&root("emulator/src"));
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    let layers = emulator_layers(&modules);
    let missing: Vec<&String> = modules
        .iter()
        .filter(|m| *m != "crate" && !layers.contains_key(*m))
        .collect();
    assert!(
        missing.is_empty(),
        "not in the layer list of emulator/src/lib.rs: {missing:?}"
    );
    let mut wrong = Vec::new();
    for (module, imports) in &graph {
        let Some(own) = layers.get(module) else {
            continue;
        };
        for import in imports {
            if layers.get(import).is_some_and(|theirs| theirs >= own) {
                wrong.push(format!("{module} -> {import}"));
            }
        }
    }
    assert_eq!(wrong, Vec::<String>::new());
}

#[test]
fn the_emulator_has_no_import_circle() {
    let graph = graph(&root("emulator/src"));
    assert!(graph.len() > 10, "the sources were read: {graph:?}");
    assert_eq!(cycles(&graph), Vec::<Vec<String>>::new());
}

#[test]
fn the_reader_sees_braced_and_relative_imports() {
    let code = "use crate::{a::b, c::{d, e}};\nuse super::f::G;\nlet x = crate::h::i();";
    assert_eq!(paths_after(code, "crate::"), ["a::b", "c", "h::i"]);
    assert_eq!(paths_after(code, "super::"), ["f::G"]);
    assert_eq!(
        declared_children("mod a;\npub mod b;\npub(crate) mod c;\nmod tests {"),
        ["a", "b", "c"]
    );
    assert_eq!(paths_after("use a::B;", "a::"), ["B"]);
    let with_comment = code_of("use crate::a; // crate::b\n#[cfg(test)]\nuse crate::c;");
    assert_eq!(paths_after(&with_comment, "crate::"), ["a"]);
    // A test module in the middle hides nothing after it; strings and comments fake nothing.
    let tricky = code_of(
        "#[cfg(test)]\nmod tests { use crate::t; }\nfn f() { let s = \"crate::s // \"; crate :: after::g(); }\n/* crate::c */ let r = r#\"crate::r\"#; let c = '\\''; use super::super::up;",
    );
    assert_eq!(paths_after(&tricky, "crate::"), ["after::g"]);
    assert_eq!(paths_after(&tricky, "super::"), ["super::up"]);
    let mut graph = Graph::new();
    graph.insert("a".into(), ["b".into()].into());
    graph.insert("b".into(), ["a".into()].into());
    assert_eq!(cycles(&graph), vec![vec!["a".to_owned(), "b".to_owned()]]);
}

//! The import graph of `src/` and `emulator/src/`: no module imports one above it, and no two
//! modules import each other, directly or through others. Read from the sources (every
//! `crate::…` and `super::…` path outside test code), so that a new arrow back up the layers
//! fails here rather than in a review.

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

/// The code of a file without its tests (a `#[cfg(test)]` module is the last item of a file by
/// this code base's convention) and without comments.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path written after `prefix` (`crate::` or `super::`), braces expanded one level:
/// `crate::{a::b, c}` gives `a::b` and `c`.
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        // Not the tail of a longer path (`foo::crate::`).
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
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
        for path in paths_after(&code, "crate::") {
            if let Some(target) = module_in(&path, &modules) {
                imports.insert(target);
            }
        }
        for path in paths_after(&code, "super::") {
            let absolute = if parent == "crate" {
                path
            } else {
                format!("{parent}::{path}")
            };
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
    let mut graph = Graph::new();
    graph.insert("a".into(), ["b".into()].into());
    graph.insert("b".into(), ["a".into()].into());
    assert_eq!(cycles(&graph), vec![vec!["a".to_owned(), "b".to_owned()]]);
}

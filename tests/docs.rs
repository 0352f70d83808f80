//! The documents stay true to the tree, and the repository stands alone.
//!
//! - Every repository path that README.md, ARCHITECTURE.md, BENCHMARKS.md, docs/*.md and
//!   fuzz/README.md name in code (inline or fenced) or as a link target exists, so that a file
//!   moved or a module split fails here rather than misleading a reader. A path into what the
//!   build or a tool writes (ignored by git, such as `fuzz/artifacts/`) need not exist.
//! - No file of the repository names a document that lives outside it: every Markdown document
//!   a file names (`*.md`, outside a URL) is one of the repository's own, so a fact the code or
//!   the docs rely on is stated with its public source (a Microsoft Learn page, a GitHub
//!   repository and path) instead of a pointer to notes a user never sees.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How a repository path mentioned in a document starts.
const REPOSITORY_DIRS: &[&str] = &[
    "src/",
    "tests/",
    "emulator/",
    "infra/",
    "scripts/",
    "docs/",
    "fuzz/",
    "benches/",
];

/// What a path may hold in place of a real name: `<target>`, `*.rs`, `{a,b}`, `crash-…`, `$bin`.
const PLACEHOLDERS: &[char] = &['<', '*', '{', '…', '$'];

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The documents whose paths are checked, relative to the repository.
fn documents() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = ["README.md", "ARCHITECTURE.md", "BENCHMARKS.md"]
        .iter()
        .map(PathBuf::from)
        .collect();
    let mut docs: Vec<PathBuf> = fs::read_dir(repository().join("docs"))
        .expect("reading docs/")
        .map(|entry| entry.expect("reading docs/").path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .map(|path| Path::new("docs").join(path.file_name().unwrap()))
        .collect();
    docs.sort();
    found.extend(docs);
    found.push(PathBuf::from("fuzz/README.md"));
    found
}

/// The code of a Markdown text: the inside of every inline code span (which may run over a line
/// break) and every fenced block, in order.
fn code_of(markdown: &str) -> Vec<String> {
    let mut code = Vec::new();
    let mut prose = String::new();
    let mut fence: Option<(String, String)> = None;
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        match &mut fence {
            Some((marker, block)) => {
                if trimmed.starts_with(marker.as_str()) {
                    code.push(std::mem::take(block));
                    fence = None;
                } else {
                    block.push_str(line);
                    block.push('\n');
                }
            }
            None if trimmed.starts_with("```") || trimmed.starts_with("~~~") => {
                code.extend(inline_code(&std::mem::take(&mut prose)));
                let marker: String = trimmed
                    .chars()
                    .take_while(|c| *c == '`' || *c == '~')
                    .collect();
                fence = Some((marker, String::new()));
            }
            None => {
                prose.push_str(line);
                prose.push('\n');
            }
        }
    }
    code.extend(inline_code(&prose));
    code
}

/// The insides of the inline code spans of `prose`: a run of backticks up to the next run of as
/// many backticks.
fn inline_code(prose: &str) -> Vec<String> {
    let mut spans = Vec::new();
    let mut rest = prose;
    while let Some(start) = rest.find('`') {
        let ticks = rest[start..].chars().take_while(|c| *c == '`').count();
        let body = &rest[start + ticks..];
        let closing = "`".repeat(ticks);
        let mut search = 0;
        let mut end = None;
        while let Some(at) = body[search..].find(&closing) {
            let at = search + at;
            let longer = body[at + ticks..].starts_with('`');
            if !longer {
                end = Some(at);
                break;
            }
            search = at + body[at..].chars().take_while(|c| *c == '`').count();
        }
        match end {
            Some(end) => {
                spans.push(body[..end].to_owned());
                rest = &body[end + ticks..];
            }
            // An unmatched run is literal text.
            None => rest = body,
        }
    }
    spans
}

/// The targets of the inline links of `markdown` (`[text](target)`), but for web addresses and
/// anchors within the same document; the anchor of a target is left off.
fn link_targets(markdown: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = markdown;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let end = rest
            .find(|c: char| c == ')' || c.is_whitespace())
            .unwrap_or(rest.len());
        let target = rest[..end].split('#').next().unwrap_or_default();
        if !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
            targets.push(target.to_owned());
        }
    }
    targets
}

/// The repository paths a piece of code names: each word that starts with one of
/// [`REPOSITORY_DIRS`], without trailing punctuation or a line number (`src/a.rs:12`).
fn repository_paths(code: &str) -> Vec<String> {
    let separators = |c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '"' | '\'' | '(' | ')' | '[' | ']' | '=' | ',' | ';' | '|'
            )
    };
    code.split(separators)
        .filter(|word| REPOSITORY_DIRS.iter().any(|dir| word.starts_with(dir)))
        .map(|word| {
            let word = word.trim_end_matches(['.', ':']);
            match word.rsplit_once(':') {
                Some((path, line))
                    if !line.is_empty() && line.chars().all(|c| c.is_ascii_digit() || c == '-') =>
                {
                    path.to_owned()
                }
                _ => word.to_owned(),
            }
        })
        .collect()
}

/// What must exist for `path` (relative to the repository) to be true: the path itself, or, for
/// a pattern, the directory before its first placeholder.
fn what_must_exist(path: &str) -> &str {
    match path.find(PLACEHOLDERS) {
        Some(at) => path[..at].rsplit_once('/').map_or("", |(dir, _)| dir),
        None => path,
    }
}

fn git(args: &[&str]) -> std::process::Output {
    Command::new("git")
        .args(args)
        .current_dir(repository())
        .output()
        .unwrap_or_else(|e| panic!("running git {args:?} (this test reads a git checkout): {e}"))
}

/// Whether git ignores `path`: something the build or a tool writes, not a file of the
/// repository.
fn ignored_by_git(path: &str) -> bool {
    git(&["check-ignore", "-q", "--no-index", path])
        .status
        .success()
}

/// Whether `path`, relative to the repository, names something in it.
fn exists(path: &str) -> bool {
    let needed = what_must_exist(path);
    needed.is_empty() || repository().join(needed).exists() || ignored_by_git(needed)
}

#[test]
fn every_repository_path_the_documents_name_exists() {
    let mut missing = Vec::new();
    let documents = documents();
    assert!(
        documents.len() > 5,
        "the documents were found: {documents:?}"
    );
    for document in &documents {
        let text = fs::read_to_string(repository().join(document))
            .unwrap_or_else(|e| panic!("reading {}: {e}", document.display()));
        for path in code_of(&text)
            .iter()
            .flat_map(|code| repository_paths(code))
        {
            if !exists(&path) {
                missing.push(format!("{}: `{path}`", document.display()));
            }
        }
        let base = document.parent().unwrap_or(Path::new(""));
        for target in link_targets(&text) {
            let path = normalise(&base.join(&target));
            if !exists(&path) {
                missing.push(format!("{}: link ({target})", document.display()));
            }
        }
    }
    missing.dedup();
    assert!(
        missing.is_empty(),
        "paths named in the documents that are not in the repository:\n{}",
        missing.join("\n")
    );
}

/// `a/../b` → `b`, as a path relative to the repository written with `/`.
fn normalise(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for component in path.components() {
        match component {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    parts.join("/")
}

/// Every Markdown document `text` names (`name.md`, with or without a directory), except in a
/// URL (a web page or another repository's file is a public source).
fn documents_named(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || "`()[]<>\"',;|".contains(c))
        .filter(|word| !word.contains("://"))
        .filter_map(|word| {
            let at = word.to_ascii_lowercase().find(".md")?;
            let end = at + 3;
            let after = word[end..].chars().next();
            if after.is_some_and(|c| c.is_alphanumeric()) {
                return None;
            }
            let path = &word[..end];
            let name = path.rsplit('/').next().unwrap_or(path);
            // A pattern (`*.md`) names no document.
            (name.len() > 3 && !name.contains(PLACEHOLDERS)).then(|| name.to_owned())
        })
        .collect()
}

#[test]
fn no_file_names_a_document_outside_the_repository() {
    // Tracked files, and new ones not yet added (but not what git ignores).
    let listed = git(&[
        "ls-files",
        "-z",
        "--cached",
        "--others",
        "--exclude-standard",
    ]);
    assert!(listed.status.success(), "git ls-files failed: {listed:?}");
    let files: Vec<String> = listed
        .stdout
        .split(|b| *b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect();
    assert!(files.len() > 100, "the files were listed: {files:?}");
    let ours: Vec<String> = files
        .iter()
        .filter(|f| f.to_ascii_lowercase().ends_with(".md"))
        .map(|f| f.rsplit('/').next().unwrap_or(f).to_ascii_lowercase())
        .collect();
    let mut found = Vec::new();
    // The fixtures are data as received; this file's reader examples name made-up documents.
    for file in files
        .iter()
        .filter(|f| !f.starts_with("tests/fixtures/") && *f != "tests/docs.rs")
    {
        // A file deleted in the working tree but not yet in the index has nothing to say.
        let Ok(bytes) = fs::read(repository().join(file)) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        for (number, line) in text.lines().enumerate() {
            for name in documents_named(line) {
                if !ours.contains(&name.to_ascii_lowercase()) {
                    found.push(format!("{file}:{} names {name}", number + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "files that name a document outside the repository (state the fact and its public source instead):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_readers_find_what_they_should() {
    let markdown = "See `src/a.rs:12` and `tests/b.rs`.\n\n```sh\nscripts/run -x=fuzz/d.dict\n```\nAnd ``code with ` inside src/c.rs`` and [x](../docs/e.md#part), [web](https://x.io/src/f).\n`runs over\nsrc/g/` line";
    let code = code_of(markdown);
    let paths: Vec<String> = code.iter().flat_map(|c| repository_paths(c)).collect();
    assert_eq!(
        paths,
        [
            "src/a.rs",
            "tests/b.rs",
            "scripts/run",
            "fuzz/d.dict",
            "src/c.rs",
            "src/g/"
        ]
    );
    assert_eq!(link_targets(markdown), ["../docs/e.md"]);
    assert_eq!(
        normalise(Path::new("docs/../fuzz/README.md")),
        "fuzz/README.md"
    );
    assert_eq!(what_must_exist("fuzz/corpus/<target>/"), "fuzz/corpus");
    assert_eq!(what_must_exist("fuzz/dict/*.dict"), "fuzz/dict");
    assert_eq!(what_must_exist("src/core/gate.rs"), "src/core/gate.rs");
    assert_eq!(
        documents_named("see notes.md, `docs/deploy.md`, https://x.io/a/readme.md, *.md and a.mdx"),
        ["notes.md", "deploy.md"]
    );
}

//! Replays the committed fuzz corpora (fuzz/corpus/<target>/) and the regression inputs of fixed
//! fuzz findings (fuzz/regressions/<target>/) through the same checks the cargo-fuzz targets run
//! (fuzz/checks.rs), on stable and without libFuzzer: the CI smoke of the fuzzing (fuzz/README.md).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[path = "../fuzz/checks.rs"]
mod checks;

type Check = fn(&[u8]);

const TARGETS: &[(&str, Check)] = &[
    ("service_tags", checks::service_tags),
    ("envelope", checks::envelope),
    ("event_grid", checks::event_grid),
    ("cidr", checks::cidr),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` on every file of `dir`; returns how many ran and the failures.
fn replay(dir: &Path, check: Check, failures: &mut Vec<String>) -> usize {
    let files = files(dir);
    for file in &files {
        let data = std::fs::read(file).expect("a readable corpus file");
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&data))) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(format!("{}: {message}", file.display()));
        }
    }
    files.len()
}

#[test]
fn every_committed_fuzz_input_passes_its_checks() {
    let mut failures = Vec::new();
    for &(target, check) in TARGETS {
        let corpus = replay(
            &fuzz_dir().join("corpus").join(target),
            check,
            &mut failures,
        );
        let regressions = replay(
            &fuzz_dir().join("regressions").join(target),
            check,
            &mut failures,
        );
        // A corpus that went missing would make this test pass vacuously.
        assert!(corpus > 0, "fuzz/corpus/{target} is empty or missing");
        println!("{target}: {corpus} corpus inputs, {regressions} regression inputs");
    }
    assert!(
        failures.is_empty(),
        "{} inputs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

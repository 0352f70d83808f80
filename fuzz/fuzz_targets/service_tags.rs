#![no_main]

use libfuzzer_sys::fuzz_target;

// The checks are shared with tests/fuzz_corpus.rs, which replays the committed corpora on stable.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::service_tags(data));

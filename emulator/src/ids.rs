//! Random and derived identifiers: access tokens, request ids, GUID-shaped principal ids.
//!
//! The emulator needs values that are unpredictable enough that a client cannot fake a token by
//! guessing, but it does not need cryptographic strength. `RandomState` gives a per-process random
//! SipHash key from the operating system; hashing a counter with it yields distinct pseudo-random
//! words without another dependency. Principal ids for user-assigned identities are derived with
//! FNV-1a instead, so the same selector always maps to the same id within and across runs.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static COUNTER: AtomicU64 = AtomicU64::new(0);
static KEYS: OnceLock<RandomState> = OnceLock::new();

/// A pseudo-random 64-bit word, different on every call.
pub(crate) fn random_u64() -> u64 {
    let keys = KEYS.get_or_init(RandomState::new);
    let mut hasher = keys.build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// A random GUID-shaped string, e.g. `3f2b9c1e-8d4a-4f60-9b7e-2c5d1a0e6f43`.
pub(crate) fn random_guid() -> String {
    format_guid(random_u64(), random_u64())
}

/// An opaque random bearer token.
pub(crate) fn random_token() -> String {
    format!(
        "tfemu.{:016x}{:016x}{:016x}",
        random_u64(),
        random_u64(),
        random_u64()
    )
}

/// A GUID-shaped id derived from `input` (case-insensitively) within `namespace`; stable across runs.
pub(crate) fn derived_guid(namespace: &str, input: &str) -> String {
    let text = format!("{namespace}:{}", input.to_ascii_lowercase());
    format_guid(
        fnv1a(0xcbf2_9ce4_8422_2325, &text),
        fnv1a(0x8422_2325_cbf2_9ce4, &text),
    )
}

fn fnv1a(basis: u64, text: &str) -> u64 {
    text.bytes().fold(basis, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn format_guid(high: u64, low: u64) -> String {
    // Set the version nibble to 4 and the variant bits to 10xx so the value looks like a v4 UUID.
    let high = (high & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let low = (low & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0xffff,
        low >> 48,
        low & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_have_the_canonical_shape_and_differ() {
        let a = random_guid();
        let b = random_guid();
        assert_ne!(a, b);
        let lengths: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(lengths, [8, 4, 4, 4, 12]);
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn derived_guids_are_stable_and_ignore_case() {
        assert_eq!(derived_guid("client", "ABC"), derived_guid("client", "abc"));
        assert_ne!(derived_guid("client", "abc"), derived_guid("object", "abc"));
    }

    #[test]
    fn tokens_are_unique() {
        assert_ne!(random_token(), random_token());
    }
}

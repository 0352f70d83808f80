//! How numbers are written for people: counts of rules, prefixes, tags, addresses and bytes in
//! every message and report carry thousands separators (`1,000`, `248,511`), so that the same
//! figure reads the same in a plan, a refusal and an error.

/// `12345` → `12,345`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A count for a message (`usize` or `u64`), with thousands separators.
pub fn count(n: impl TryInto<u64>) -> String {
    thousands(n.try_into().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        for (n, s) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (248_511, "248,511"),
            (1_234_567, "1,234,567"),
        ] {
            assert_eq!(thousands(n), s);
        }
        assert_eq!(count(2691usize), "2,691");
    }
}

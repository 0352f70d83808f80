//! IPv4 prefixes for firewall rules: strict parsing, the reserved ranges Azure refuses, and
//! lossless collapse.
//!
//! Rules are [`ipnet::Ipv4Net`] values in canonical form (no host bits; a single address is a
//! `/32`), which is also how Key Vault returns them. Internally the set algebra works on
//! half-open `u64` address ranges so that `0.0.0.0/0` (end 2^32) needs no special case.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// A half-open range of IPv4 addresses `[start, end)`, with `end <= 2^32`.
pub type Range = (u64, u64);

/// Builds a prefix from a network address and length. Host bits are cleared.
///
/// # Panics
/// If `len > 32`; callers pass lengths they have checked.
pub fn net(addr: u32, len: u8) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::from(addr), len)
        .expect("prefix length checked by the caller")
        .trunc()
}

/// The addresses a prefix covers, as a half-open range.
pub fn range(net: &Ipv4Net) -> Range {
    let start = u64::from(u32::from(net.network()));
    (start, start + size(net))
}

/// How many addresses a prefix covers.
pub fn size(net: &Ipv4Net) -> u64 {
    1u64 << (32 - u32::from(net.prefix_len()))
}

/// Why a rule string was refused. Messages name the input as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Not an IPv4 address or CIDR prefix at all.
    #[error("'{0}' is not an IPv4 address or CIDR prefix")]
    Invalid(String),
    /// An IPv6 address or prefix, which Key Vault does not take.
    #[error("'{0}' is IPv6; key vault firewall rules are IPv4 only")]
    Ipv6(String),
    /// The address has bits set beyond the prefix length, so its meaning is ambiguous.
    #[error("'{given}' has host bits set (did you mean '{network}'?)")]
    HostBits { given: String, network: Ipv4Net },
    /// The prefix lies in, or contains, a range that is no public address.
    #[error("'{given}' overlaps the reserved range {} ({}); {}", .reserved.net, .reserved.name, .reserved.why())]
    Reserved {
        given: String,
        reserved: &'static ReservedRange,
    },
}

/// Parses a firewall rule: `a.b.c.d` (taken as `/32`) or `a.b.c.d/len`, refusing host bits.
/// Reserved ranges are not checked here; see [`check_public`].
///
/// # Errors
/// [`RuleError::Invalid`], [`RuleError::Ipv6`] or [`RuleError::HostBits`].
pub fn parse_rule(text: &str) -> Result<Ipv4Net, RuleError> {
    let trimmed = text.trim();
    match parse_v4(trimmed.as_bytes()) {
        Some((addr, len)) => {
            let network = net(addr, len);
            if u32::from(network.network()) != addr {
                return Err(RuleError::HostBits {
                    given: trimmed.to_owned(),
                    network,
                });
            }
            Ok(network)
        }
        None if parse_v6(trimmed.as_bytes()).is_some() => Err(RuleError::Ipv6(trimmed.to_owned())),
        None => Err(RuleError::Invalid(trimmed.to_owned())),
    }
}

/// Parses `a.b.c.d` or `a.b.c.d/len` strictly (no leading zeros, no spaces, len ≤ 32).
/// Returns the address and the length (32 for a bare address). Host bits are not checked.
#[inline]
pub fn parse_v4(text: &[u8]) -> Option<(u32, u8)> {
    match parse_v4_at(text) {
        Some((addr, len, used)) if used == text.len() => Some((addr, len)),
        _ => None,
    }
}

#[inline(always)]
fn digit_at(text: &[u8], i: usize) -> Option<u32> {
    match text.get(i) {
        Some(&b) if b.is_ascii_digit() => Some(u32::from(b - b'0')),
        _ => None,
    }
}

/// Reads a decimal number of 1..=3 digits without a leading zero at `text[*i..]`.
#[inline(always)]
fn small_decimal(text: &[u8], i: &mut usize) -> Option<u32> {
    let first = digit_at(text, *i)?;
    *i += 1;
    let Some(second) = digit_at(text, *i) else {
        return Some(first);
    };
    if first == 0 {
        return None;
    }
    *i += 1;
    let Some(third) = digit_at(text, *i) else {
        return Some(first * 10 + second);
    };
    *i += 1;
    if digit_at(text, *i).is_some() {
        return None;
    }
    Some(first * 100 + second * 10 + third)
}

/// Reads an IPv4 address or prefix at the start of `text` and returns the address, the length
/// (32 for a bare address) and how many bytes it used; the caller decides what may follow. This
/// is the hot path of reading a Service Tags file (67,000 IPv4 prefixes), hence one pass and no
/// intermediate strings.
#[inline]
pub fn parse_v4_at(text: &[u8]) -> Option<(u32, u8, usize)> {
    let mut i = 0;
    let mut addr = 0u32;
    for octet in 0..4 {
        if octet > 0 {
            if text.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let value = small_decimal(text, &mut i)?;
        if value > 255 {
            return None;
        }
        addr = (addr << 8) | value;
    }
    if text.get(i) != Some(&b'/') {
        return Some((addr, 32, i));
    }
    i += 1;
    let len = small_decimal(text, &mut i)?;
    (len <= 32).then_some((addr, len as u8, i))
}

/// Reads 1..=`max_digits` decimal digits with no leading zero (except "0" itself).
#[inline]
fn decimal(text: &[u8], max_digits: usize) -> Option<(u32, usize)> {
    let mut value = 0u32;
    let mut used = 0;
    while used < text.len() && text[used].is_ascii_digit() {
        if used == max_digits {
            return None;
        }
        value = value * 10 + u32::from(text[used] - b'0');
        used += 1;
    }
    if used == 0 || (used > 1 && text[0] == b'0') {
        return None;
    }
    Some((value, used))
}

/// Parses an IPv6 address with an optional `/len` (≤ 128), as the standard library's
/// `Ipv6Addr` parser does (including `::` and an embedded dotted IPv4 tail). Returns the
/// address and the length (128 for a bare address).
pub fn parse_v6(text: &[u8]) -> Option<(u128, u8)> {
    let (addr_part, len) = match text.iter().position(|&b| b == b'/') {
        Some(slash) => {
            let (len, used) = decimal(&text[slash + 1..], 3)?;
            if slash + 1 + used != text.len() || len > 128 {
                return None;
            }
            (&text[..slash], len as u8)
        }
        None => (text, 128),
    };
    Some((parse_v6_addr(addr_part)?, len))
}

/// Hex digit values by byte; 0xFF for bytes that are not hex digits.
static HEX: [u8; 256] = {
    let mut table = [0xFF; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// The value of the hex digits at `start` and where they end. It reads at most five, one more
/// than a group may have, so that the caller sees an over-long group and refuses it.
fn hex_group(text: &[u8], start: usize) -> (u32, usize) {
    let mut pos = start;
    let mut value: u32 = 0;
    while pos < text.len() && pos - start < 5 {
        let d = HEX[usize::from(text[pos])];
        if d > 15 {
            break;
        }
        value = value * 16 + u32::from(d);
        pos += 1;
    }
    (value, pos)
}

fn parse_v6_addr(text: &[u8]) -> Option<u128> {
    let mut head = [0u16; 8];
    let mut tail = [0u16; 8];
    let (mut n_head, mut n_tail) = (0usize, 0usize);
    let mut compressed = false;
    let mut pos = 0;
    if text.starts_with(b"::") {
        compressed = true;
        pos = 2;
        if text.len() == 2 {
            return Some(0);
        }
    }
    loop {
        let groups = if compressed { &mut tail } else { &mut head };
        let count = if compressed { &mut n_tail } else { &mut n_head };
        let start = pos;
        let (value, end) = hex_group(text, start);
        pos = end;
        let digits = pos - start;
        if text.get(pos) == Some(&b'.') {
            // An embedded IPv4 address ends the text and fills two groups.
            let (v4, len) = parse_v4(&text[start..])?;
            if len != 32 || text[start..].contains(&b'/') || *count + 2 > 8 {
                return None;
            }
            groups[*count] = (v4 >> 16) as u16;
            groups[*count + 1] = v4 as u16;
            *count += 2;
            break;
        }
        if digits == 0 || digits > 4 || *count == 8 {
            return None;
        }
        groups[*count] = value as u16;
        *count += 1;
        match text.get(pos) {
            None => break,
            Some(b':') if text.get(pos + 1) == Some(&b':') => {
                if compressed {
                    return None;
                }
                compressed = true;
                pos += 2;
                if pos == text.len() {
                    break;
                }
            }
            Some(b':') => {
                pos += 1;
                if pos == text.len() {
                    return None;
                }
            }
            Some(_) => return None,
        }
    }
    let total = n_head + n_tail;
    if (compressed && total > 7) || (!compressed && total != 8) {
        return None;
    }
    let mut groups = [0u16; 8];
    groups[..n_head].copy_from_slice(&head[..n_head]);
    groups[8 - n_tail..].copy_from_slice(&tail[..n_tail]);
    Some(
        groups
            .iter()
            .fold(0u128, |acc, &g| (acc << 16) | u128::from(g)),
    )
}

/// A range of IPv4 space that no firewall kind takes as a rule (Key Vault and Storage refuse the
/// private ones; whether a registry does is UNVERIFIED), and that tagfence therefore drops from
/// Service Tags and refuses in static rules, for every kind.
#[derive(Debug, PartialEq, Eq)]
pub struct ReservedRange {
    pub net: Ipv4Net,
    pub name: &'static str,
}

impl ReservedRange {
    /// Whether Azure documents refusing the range: the RFC 1918 private ranges, which Key Vault
    /// and Storage document refusing.
    pub fn azure_refuses(&self) -> bool {
        self.name.contains("RFC 1918")
    }

    /// Why a rule in this range is refused: Key Vault documents refusing RFC 1918 ranges
    /// ("Virtual network service endpoints and private IP ranges ... are not supported",
    /// Microsoft Learn, "Configure Azure Key Vault networking settings"), and Storage too ("IP
    /// network rules are allowed only for public internet IP addresses", Microsoft Learn, "Azure
    /// Storage firewall rules"); the others tagfence refuses itself, as no pipeline reaches a
    /// public endpoint from them.
    pub fn why(&self) -> &'static str {
        if self.azure_refuses() {
            "key vault and storage refuse it"
        } else {
            "it is no public address (tagfence refuses it; Key Vault and Storage document refusing only RFC 1918 ranges)"
        }
    }
}

impl fmt::Display for ReservedRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.net, self.name)
    }
}

macro_rules! reserved {
    ($(($a:literal, $b:literal, $c:literal, $d:literal, $len:literal, $name:literal)),* $(,)?) => {
        [$(ReservedRange {
            net: match Ipv4Net::new_assert(Ipv4Addr::new($a, $b, $c, $d), $len) { n => n },
            name: $name,
        }),*]
    };
}

/// The IANA IPv4 special-purpose ranges that are not globally reachable (RFC 6890 and its
/// registry), plus multicast and the limited broadcast block, sorted by address. Key Vault
/// documents refusing RFC 1918 ranges; the rest can never be the source address of a pipeline
/// reaching a public endpoint, so a rule for them is a mistake either way.
pub static RESERVED: [ReservedRange; 15] = reserved![
    (0, 0, 0, 0, 8, "\"this network\", RFC 791"),
    (10, 0, 0, 0, 8, "private network, RFC 1918"),
    (100, 64, 0, 0, 10, "shared address space (CGNAT), RFC 6598"),
    (127, 0, 0, 0, 8, "loopback, RFC 1122"),
    (169, 254, 0, 0, 16, "link-local, RFC 3927"),
    (172, 16, 0, 0, 12, "private network, RFC 1918"),
    (192, 0, 0, 0, 24, "IETF protocol assignments, RFC 6890"),
    (192, 0, 2, 0, 24, "documentation (TEST-NET-1), RFC 5737"),
    (192, 88, 99, 0, 24, "6to4 relay anycast, RFC 7526"),
    (192, 168, 0, 0, 16, "private network, RFC 1918"),
    (198, 18, 0, 0, 15, "benchmarking, RFC 2544"),
    (198, 51, 100, 0, 24, "documentation (TEST-NET-2), RFC 5737"),
    (203, 0, 113, 0, 24, "documentation (TEST-NET-3), RFC 5737"),
    (224, 0, 0, 0, 4, "multicast, RFC 5771"),
    (
        240,
        0,
        0,
        0,
        4,
        "reserved for future use and broadcast, RFC 1112"
    ),
];

/// The first reserved range that overlaps `net`, if any.
pub fn reserved_overlap(net: &Ipv4Net) -> Option<&'static ReservedRange> {
    let (start, end) = range(net);
    RESERVED.iter().find(|r| {
        let (r_start, r_end) = range(&r.net);
        start < r_end && r_start < end
    })
}

/// Refuses a rule that overlaps a reserved range.
///
/// # Errors
/// [`RuleError::Reserved`] naming the range.
pub fn check_public(rule: Ipv4Net, given: &str) -> Result<Ipv4Net, RuleError> {
    match reserved_overlap(&rule) {
        Some(reserved) => Err(RuleError::Reserved {
            given: given.trim().to_owned(),
            reserved,
        }),
        None => Ok(rule),
    }
}

/// Splits `nets` into the public part and a count of prefixes that lost addresses to reserved
/// ranges (wholly dropped or trimmed). The public part may hold several prefixes where an input
/// prefix straddled a reserved range; it is not collapsed.
pub fn drop_reserved(nets: &[Ipv4Net], public: &mut Vec<Ipv4Net>) -> usize {
    let mut touched = 0;
    for n in nets {
        if reserved_overlap(n).is_none() {
            public.push(*n);
            continue;
        }
        touched += 1;
        let (start, end) = range(n);
        let mut cursor = start;
        for r in &RESERVED {
            let (r_start, r_end) = range(&r.net);
            if r_end <= cursor || r_start >= end {
                continue;
            }
            push_range_prefixes(cursor, r_start.max(cursor), public);
            cursor = r_end.min(end);
        }
        push_range_prefixes(cursor, end, public);
    }
    touched
}

/// Appends the fewest prefixes that cover exactly `[start, end)`.
pub fn push_range_prefixes(mut start: u64, end: u64, out: &mut Vec<Ipv4Net>) {
    while start < end {
        // The largest aligned block starting at `start` that fits before `end`.
        let mut block: u64 = if start == 0 {
            1 << 32
        } else {
            1 << start.trailing_zeros()
        };
        while block > end - start {
            block >>= 1;
        }
        out.push(net(start as u32, (32 - block.trailing_zeros()) as u8));
        start += block;
    }
}

/// Sorts and merges ranges in place into disjoint, non-adjacent ranges.
pub fn merge_ranges(ranges: &mut Vec<Range>) {
    ranges.sort_unstable();
    let mut merged = 0;
    for i in 0..ranges.len() {
        let (start, end) = ranges[i];
        if merged > 0 && start <= ranges[merged - 1].1 {
            ranges[merged - 1].1 = ranges[merged - 1].1.max(end);
        } else {
            ranges[merged] = (start, end);
            merged += 1;
        }
    }
    ranges.truncate(merged);
}

/// The lossless collapse: the fewest prefixes covering exactly the addresses of `nets`, sorted.
///
/// Why this is minimal: a prefix cannot span a gap between two merged ranges, and inside one
/// range the greedy largest-aligned-block decomposition is the unique minimal one.
pub fn collapse(nets: &[Ipv4Net]) -> Vec<Ipv4Net> {
    let mut ranges: Vec<Range> = nets.iter().map(range).collect();
    merge_ranges(&mut ranges);
    let mut out = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        push_range_prefixes(start, end, &mut out);
    }
    out
}

/// The number of addresses in the union of `nets`.
pub fn address_count(nets: &[Ipv4Net]) -> u64 {
    let mut ranges: Vec<Range> = nets.iter().map(range).collect();
    merge_ranges(&mut ranges);
    ranges.iter().map(|(s, e)| e - s).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Ipv4Net {
        text.parse().unwrap()
    }

    fn ps(texts: &[&str]) -> Vec<Ipv4Net> {
        texts.iter().map(|t| p(t)).collect()
    }

    #[test]
    fn parses_rules_in_both_written_forms() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("20.37.158.0/23", Ok("20.37.158.0/23")),
            ("40.74.28.1", Ok("40.74.28.1/32")),
            (" 40.74.28.1/32 ", Ok("40.74.28.1/32")),
            ("0.0.0.0/0", Ok("0.0.0.0/0")),
            (
                "20.37.158.1/23",
                Err("'20.37.158.1/23' has host bits set (did you mean '20.37.158.0/23'?)"),
            ),
            (
                "20.37.158.0/33",
                Err("'20.37.158.0/33' is not an IPv4 address or CIDR prefix"),
            ),
            (
                "20.37.158/24",
                Err("'20.37.158/24' is not an IPv4 address or CIDR prefix"),
            ),
            (
                "020.37.158.0/24",
                Err("'020.37.158.0/24' is not an IPv4 address or CIDR prefix"),
            ),
            (
                "20.37.158.0/024",
                Err("'20.37.158.0/024' is not an IPv4 address or CIDR prefix"),
            ),
            (
                "256.1.1.1",
                Err("'256.1.1.1' is not an IPv4 address or CIDR prefix"),
            ),
            (
                "1.2.3.4/",
                Err("'1.2.3.4/' is not an IPv4 address or CIDR prefix"),
            ),
            ("", Err("'' is not an IPv4 address or CIDR prefix")),
            (
                "2603:1030:a07:15::3d2/127",
                Err("'2603:1030:a07:15::3d2/127' is IPv6; key vault firewall rules are IPv4 only"),
            ),
        ];
        for (input, expected) in cases {
            let got = parse_rule(input)
                .map(|n| n.to_string())
                .map_err(|e| e.to_string());
            let expected = expected.map(str::to_owned).map_err(str::to_owned);
            assert_eq!(got, expected, "input {input:?}");
        }
    }

    #[test]
    fn finds_reserved_overlaps_including_supersets() {
        let cases: &[(&str, Option<&str>)] = &[
            ("10.1.2.3/32", Some("10.0.0.0/8")),
            ("172.31.255.255/32", Some("172.16.0.0/12")),
            ("172.32.0.0/16", None),
            ("100.64.0.0/10", Some("100.64.0.0/10")),
            ("100.128.0.0/9", None),
            ("96.0.0.0/3", Some("100.64.0.0/10")),
            ("0.0.0.0/0", Some("0.0.0.0/8")),
            ("224.0.0.1/32", Some("224.0.0.0/4")),
            ("255.255.255.255/32", Some("240.0.0.0/4")),
            ("20.37.158.0/23", None),
            ("1.0.0.0/8", None),
        ];
        for (input, expected) in cases {
            let got = reserved_overlap(&p(input)).map(|r| r.net.to_string());
            assert_eq!(got.as_deref(), *expected, "input {input}");
        }
    }

    #[test]
    fn reserved_table_is_sorted_and_disjoint() {
        for pair in RESERVED.windows(2) {
            assert!(
                range(&pair[0].net).1 <= range(&pair[1].net).0,
                "{} / {}",
                pair[0],
                pair[1]
            );
        }
    }

    #[test]
    fn drops_reserved_space_and_keeps_the_rest() {
        let mut public = Vec::new();
        let touched = drop_reserved(
            &ps(&["10.0.0.0/8", "8.0.0.0/6", "20.0.0.0/24"]),
            &mut public,
        );
        assert_eq!(touched, 2);
        assert_eq!(
            collapse(&public),
            ps(&["8.0.0.0/7", "11.0.0.0/8", "20.0.0.0/24"])
        );

        let mut public = Vec::new();
        drop_reserved(&ps(&["0.0.0.0/0"]), &mut public);
        let reserved: u64 = RESERVED.iter().map(|r| size(&r.net)).sum();
        assert_eq!(address_count(&public), (1u64 << 32) - reserved);
        assert!(public.iter().all(|n| reserved_overlap(n).is_none()));
    }

    #[test]
    fn collapses_to_the_fewest_prefixes() {
        let cases: &[(&[&str], &[&str])] = &[
            (&[], &[]),
            (&["1.2.3.4/32", "1.2.3.4/32"], &["1.2.3.4/32"]),
            (&["1.2.3.0/25", "1.2.3.128/25"], &["1.2.3.0/24"]),
            (&["1.2.3.0/24", "1.2.3.64/26"], &["1.2.3.0/24"]),
            (&["1.2.3.0/25", "1.2.4.0/25"], &["1.2.3.0/25", "1.2.4.0/25"]),
            // Adjacent but not aligned: two prefixes remain.
            (
                &["1.2.3.128/25", "1.2.4.0/25"],
                &["1.2.3.128/25", "1.2.4.0/25"],
            ),
            (
                &["1.2.3.1/32", "1.2.3.2/31", "1.2.3.0/32", "1.2.3.4/30"],
                &["1.2.3.0/29"],
            ),
            (&["128.0.0.0/1", "0.0.0.0/1"], &["0.0.0.0/0"]),
            (
                &["255.255.255.255/32", "255.255.255.254/32"],
                &["255.255.255.254/31"],
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(collapse(&ps(input)), ps(expected), "input {input:?}");
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn any_net() -> impl Strategy<Value = Ipv4Net> {
            // Cluster the addresses so that overlaps and adjacency are common.
            (0u32..64, 20u8..=32)
                .prop_map(|(i, len)| net(0x1400_0000 | (i << 8) | (i * 37 % 256), len))
        }

        fn addresses(nets: &[Ipv4Net]) -> std::collections::BTreeSet<u64> {
            nets.iter()
                .flat_map(|n| {
                    let (s, e) = range(n);
                    s..e
                })
                .collect()
        }

        proptest! {
            #[test]
            fn collapse_covers_exactly_the_input(nets in prop::collection::vec(any_net(), 0..40)) {
                let collapsed = collapse(&nets);
                prop_assert_eq!(addresses(&collapsed), addresses(&nets));
                // Canonical, sorted, disjoint and not mergeable with a neighbour.
                for pair in collapsed.windows(2) {
                    prop_assert!(range(&pair[0]).1 <= range(&pair[1]).0);
                    prop_assert!(pair[0].supernet().is_none() || pair[0].supernet() != pair[1].supernet() || pair[0].prefix_len() != pair[1].prefix_len());
                }
            }

            #[test]
            fn collapse_is_idempotent_and_order_independent(mut nets in prop::collection::vec(any_net(), 0..40), seed in any::<u64>()) {
                let once = collapse(&nets);
                prop_assert_eq!(collapse(&once), once.clone());
                // A deterministic shuffle.
                let mut state = seed | 1;
                for i in (1..nets.len()).rev() {
                    state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                    nets.swap(i, (state % (i as u64 + 1)) as usize);
                }
                prop_assert_eq!(collapse(&nets), once);
            }

            #[test]
            fn collapse_is_as_small_as_ipnet_aggregate(nets in prop::collection::vec(any_net(), 0..40)) {
                prop_assert_eq!(collapse(&nets).len(), Ipv4Net::aggregate(&nets).len());
            }

            #[test]
            fn v4_parser_agrees_with_std(text in "[0-9./]{0,20}") {
                let ours = parse_v4(text.as_bytes()).filter(|_| text.contains('/'));
                let theirs = text.parse::<Ipv4Net>().ok().filter(|_| text.contains('/'));
                prop_assert_eq!(ours.map(|(a, l)| (Ipv4Addr::from(a), l)), theirs.map(|n| (n.addr(), n.prefix_len())));
                let bare = parse_v4(text.as_bytes()).filter(|_| !text.contains('/')).map(|(a, _)| Ipv4Addr::from(a));
                prop_assert_eq!(bare, text.parse::<Ipv4Addr>().ok());
            }

            #[test]
            fn v6_parser_agrees_with_std_on_random_text(text in "[0-9a-fA-F:.]{0,42}") {
                let ours = parse_v6_addr(text.as_bytes());
                let theirs = text.parse::<std::net::Ipv6Addr>().ok().map(u128::from);
                prop_assert_eq!(ours, theirs, "text {:?}", text);
            }

            #[test]
            fn v6_parser_agrees_with_std_on_near_valid_text(
                groups in prop::collection::vec("[0-9a-f]{0,5}", 0..10),
                gap in 0usize..10,
                tail in prop::option::of("[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}"),
            ) {
                let mut text = String::new();
                for (i, g) in groups.iter().enumerate() {
                    if i > 0 { text.push(':'); }
                    if i == gap { text.push(':'); }
                    text.push_str(g);
                }
                if let Some(t) = tail { text.push(':'); text.push_str(&t); }
                let ours = parse_v6_addr(text.as_bytes());
                let theirs = text.parse::<std::net::Ipv6Addr>().ok().map(u128::from);
                prop_assert_eq!(ours, theirs, "text {:?}", text);
            }

            #[test]
            fn v6_parser_reads_what_std_writes(addr in any::<u128>(), len in 0u8..=128) {
                let text = format!("{}/{len}", std::net::Ipv6Addr::from(addr));
                prop_assert_eq!(parse_v6(text.as_bytes()), Some((addr, len)));
            }
        }
    }
}

//! IPv4 rule values, as every emulated firewall takes them: parsing an address or CIDR, Key
//! Vault's stored form, and the private ranges (RFC 1918) every kind refuses.
//!
//! Pure and in the base layer, so that each kind's validation (`acl` for Key Vault, `storage`,
//! `registries`) and the out-of-band edits (`firewall`) share one reading of a rule value.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// An address block IP rules may not touch.
pub(crate) struct ForbiddenRange {
    first: u32,
    last: u32,
    label: &'static str,
}

const fn block(octets: [u8; 4], prefix: u32, label: &'static str) -> ForbiddenRange {
    let first = u32::from_be_bytes(octets);
    ForbiddenRange {
        first,
        last: first | (u32::MAX >> prefix),
        label,
    }
}

/// The ranges Key Vault documents it refuses: RFC 1918's private networks (Microsoft Learn,
/// "Configure Azure Key Vault networking settings" / network-security: "IP address ranges
/// reserved for private networks (as defined in RFC 1918) are not allowed in IP rules. Private
/// networks include addresses that start with 10., 172.16-31, and 192.168."). Other
/// non-public blocks (0/8, 100.64/10, 127/8, 169.254/16, 224/4, 240/4) are accepted: whether
/// Key Vault refuses them is UNVERIFIED. The wording is that of an answer quoted in
/// Azure/azure-powershell#11471.
///
/// Storage documents the same three (Microsoft Learn, "Azure Storage network security
/// limitations": "IP address ranges reserved for private networks (as defined in RFC 1918)
/// aren't allowed in IP rules"; other reserved blocks UNVERIFIED there too). Container Registry
/// documents nothing about private ranges ("Configure public IP network rules" only speaks of
/// public addresses): that it refuses these is UNVERIFIED.
const FORBIDDEN_RANGES: [ForbiddenRange; 3] = [
    block([10, 0, 0, 0], 8, "private IP addresses"),
    block([172, 16, 0, 0], 12, "private IP addresses"),
    block([192, 168, 0, 0], 16, "private IP addresses"),
];

/// An IPv4 rule value that parsed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Ipv4Rule {
    /// The value as ARM stores it: `a.b.c.d/len` (a bare address gains `/32`; host bits kept).
    pub stored: String,
    /// Prefix length.
    pub prefix: u32,
    first: u32,
    last: u32,
}

/// Why a rule value is not an IPv4 rule.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RuleProblem {
    /// An IPv6 address or prefix.
    Ipv6,
    /// Not an address at all.
    Malformed,
}

/// Parses an ipRule value: an IPv4 address or `address/prefix`.
pub(crate) fn parse_ipv4_rule(value: &str) -> Result<Ipv4Rule, RuleProblem> {
    let (address_text, prefix_text) = match value.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (value, None),
    };
    let address: Ipv4Addr = address_text.parse().map_err(|_| {
        if address_text.parse::<Ipv6Addr>().is_ok() {
            RuleProblem::Ipv6
        } else {
            RuleProblem::Malformed
        }
    })?;
    let prefix = match prefix_text {
        None => 32,
        Some(text) => parse_prefix(text).ok_or(RuleProblem::Malformed)?,
    };
    let host_mask = u32::MAX.checked_shr(prefix).unwrap_or(0);
    let first = u32::from(address) & !host_mask;
    Ok(Ipv4Rule {
        stored: format!("{address}/{prefix}"),
        prefix,
        first,
        last: first | host_mask,
    })
}

/// A prefix length: 0–32, decimal digits only, no sign and no leading zero.
fn parse_prefix(text: &str) -> Option<u32> {
    let digits_only =
        !text.is_empty() && text.len() <= 2 && text.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (text.len() == 2 && text.starts_with('0')) {
        return None;
    }
    text.parse::<u32>().ok().filter(|prefix| *prefix <= 32)
}

/// The form an out-of-band edit of a vault is stored in (Key Vault's form): a bare IPv4 address gains `/32`; anything else
/// (including values ARM would refuse) is kept as typed.
pub(crate) fn stored_form(value: &str) -> String {
    match parse_ipv4_rule(value) {
        Ok(rule) if !value.contains('/') => rule.stored,
        _ => value.to_owned(),
    }
}

/// The first of [`FORBIDDEN_RANGES`] that `rule` overlaps, if any.
pub(crate) fn forbidden_range(rule: &Ipv4Rule) -> Option<&'static ForbiddenRange> {
    FORBIDDEN_RANGES
        .iter()
        .find(|range| rule.first <= range.last && range.first <= rule.last)
}

impl fmt::Display for ForbiddenRange {
    /// `10.0.0.0–10.255.255.255 (private IP addresses)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}–{} ({})",
            Ipv4Addr::from(self.first),
            Ipv4Addr::from(self.last),
            self.label
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_band_values_only_gain_slash_32() {
        assert_eq!(stored_form("1.2.3.4"), "1.2.3.4/32");
        assert_eq!(stored_form("1.2.3.4/24"), "1.2.3.4/24");
        assert_eq!(stored_form("10.0.0.1"), "10.0.0.1/32");
        assert_eq!(stored_form("nonsense"), "nonsense");
    }

    #[test]
    fn rules_parse_with_their_prefix_and_ranges_overlap() {
        let single = parse_ipv4_rule("52.174.10.21").unwrap();
        assert_eq!(
            (single.stored.as_str(), single.prefix),
            ("52.174.10.21/32", 32)
        );
        assert_eq!(parse_ipv4_rule("2001:db8::/64"), Err(RuleProblem::Ipv6));
        assert_eq!(parse_ipv4_rule("1.2.3.4/33"), Err(RuleProblem::Malformed));
        let range = forbidden_range(&parse_ipv4_rule("172.31.0.1").unwrap()).unwrap();
        assert_eq!(
            range.to_string(),
            "172.16.0.0–172.31.255.255 (private IP addresses)"
        );
        assert!(forbidden_range(&parse_ipv4_rule("20.37.158.0/23").unwrap()).is_none());
    }
}

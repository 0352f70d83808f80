//! Just-in-time grants, as pure decisions: which address a grant may open, for how long, and
//! whether a vault has room for one more. No clock: the caller passes `now`.
//!
//! A grant is one `a.b.c.d/32` rule on one vault until its expiry. It is a rule tagfence adds
//! itself, so it is tagfence's to remove once the grant ends (revoked or expired) — unless a
//! selected tag or another live grant still wants the same rule, or the rule was a person's
//! before the grant (then the grant added nothing and removes nothing).

use std::net::IpAddr;
use std::time::Duration;

use ipnet::Ipv4Net;

use super::cidr::{self, RuleError};

/// The longest a grant may live unless configured otherwise (`--grant-max-ttl`): long enough
/// for a pipeline job (Azure Pipelines' default job timeout is 60 minutes), short enough that
/// a forgotten one is not a standing rule.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(2 * 3600);
/// The largest `--grant-max-ttl` accepted: a grant living longer than a day is a standing rule,
/// which belongs in `--static-rule`.
pub const MAX_MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// The shortest grant: less than a minute cannot outlive the write that places it.
pub const MIN_TTL: Duration = Duration::from_secs(60);
/// The TTL of a grant that names none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30 * 60);
/// Live grants a vault may hold at once unless configured otherwise (`--grant-max-per-vault`).
pub const DEFAULT_MAX_LIVE: usize = 50;
/// How often the sweep looks for ended grants (the `function-sweep` timer, `0 */5 * * * *`):
/// a grant is gone at most this long (plus the sweep's own run) after it ends.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5 * 60);
/// Azure's virtual public address of the platform (168.63.129.16, Microsoft Learn, "What is IP
/// address 168.63.129.16?"): inside Azure it answers DNS, DHCP and health probes, and no
/// caller's traffic comes from it, so a grant for it can only be a mistake.
pub const AZURE_PLATFORM_ADDRESS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(168, 63, 129, 16);
/// The longest reason recorded with a grant, in characters.
pub const MAX_REASON_CHARS: usize = 200;

/// Why a grant was refused before anything was written. Each message names what was wrong and
/// what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantRefusal {
    #[error("'{0}' is an IPv6 address; tagfence writes IPv4 firewall rules only (grant the agent's public IPv4 address)")]
    Ipv6(IpAddr),
    #[error("{address} is not a public address ({range}); a grant opens the firewall to one public IPv4 address")]
    NotPublic { address: IpAddr, range: String },
    #[error("a grant of {} is longer than the longest allowed, {} (--grant-max-ttl)", duration_text(*.asked), duration_text(*.max))]
    TtlTooLong { asked: Duration, max: Duration },
    #[error("a grant of {} is shorter than the shortest allowed, {}", duration_text(*.asked), duration_text(MIN_TTL))]
    TtlTooShort { asked: Duration },
    #[error("the firewall holds {live} live grants, the most allowed (--grant-max-per-vault {max}); revoke one or wait for one to expire")]
    TooMany { live: usize, max: usize },
    #[error("the firewall has no room for the grant: it would hold {after} rules, over its limit of {limit} (grants never displace the rules of the selected tags)")]
    NoRoom { after: usize, limit: usize },
    #[error("the reason is {chars} characters long; at most {MAX_REASON_CHARS} are recorded")]
    ReasonTooLong { chars: usize },
    #[error("the reason holds a control character; give one line of plain text")]
    ReasonControl,
}

/// The rule a grant for `address` writes: `address/32`, if it is a public IPv4 address.
///
/// # Errors
/// [`GrantRefusal::Ipv6`] for an IPv6 address (an IPv4-mapped one is taken as its IPv4
/// address), [`GrantRefusal::NotPublic`] for one in a reserved range.
pub fn grant_rule(address: IpAddr) -> Result<Ipv4Net, GrantRefusal> {
    let v4 = match address {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4,
            None => return Err(GrantRefusal::Ipv6(address)),
        },
    };
    if v4 == AZURE_PLATFORM_ADDRESS {
        return Err(GrantRefusal::NotPublic {
            address: IpAddr::V4(v4),
            range:
                "Azure's platform address (DHCP, DNS, health probes inside Azure), never a caller's"
                    .to_owned(),
        });
    }
    let rule = Ipv4Net::new(v4, 32).expect("32 is a valid IPv4 prefix length");
    match cidr::check_public(rule, &v4.to_string()) {
        Ok(rule) => Ok(rule),
        Err(RuleError::Reserved { reserved, .. }) => Err(GrantRefusal::NotPublic {
            address: IpAddr::V4(v4),
            range: format!("{}, {}", reserved.net, reserved.name),
        }),
        Err(other) => unreachable!("a /32 of an IPv4 address parses: {other}"),
    }
}

/// Checks a grant's TTL against the vault's maximum.
///
/// # Errors
/// [`GrantRefusal::TtlTooLong`] or [`GrantRefusal::TtlTooShort`].
pub fn check_ttl(ttl: Duration, max: Duration) -> Result<(), GrantRefusal> {
    if ttl > max {
        return Err(GrantRefusal::TtlTooLong { asked: ttl, max });
    }
    if ttl < MIN_TTL {
        return Err(GrantRefusal::TtlTooShort { asked: ttl });
    }
    Ok(())
}

/// Checks the reason a grant is recorded with: one line of plain text, not too long.
///
/// # Errors
/// [`GrantRefusal::ReasonTooLong`] or [`GrantRefusal::ReasonControl`].
pub fn check_reason(reason: &str) -> Result<(), GrantRefusal> {
    let chars = reason.chars().count();
    if chars > MAX_REASON_CHARS {
        return Err(GrantRefusal::ReasonTooLong { chars });
    }
    // One line: no control character, and none of Unicode's line and paragraph separators.
    if reason
        .chars()
        .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
    {
        return Err(GrantRefusal::ReasonControl);
    }
    Ok(())
}

/// Why a duration text was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a duration; write it as a number with a unit: 90s, 30m, 2h or 1h30m")]
pub struct DurationError(pub String);

/// Parses a duration as a person writes one: `90s`, `30m`, `2h`, `1h30m` (units `s`, `m`, `h`,
/// each once, largest first; no unit is refused, as `30` could mean seconds or minutes).
///
/// # Errors
/// [`DurationError`] naming the text.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let error = || DurationError(text.to_owned());
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(error());
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    let mut last_unit = u64::MAX;
    for c in trimmed.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(error()),
        };
        if number.is_empty() || unit >= last_unit {
            return Err(error());
        }
        let value: u64 = number.parse().map_err(|_| error())?;
        total = value
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(error)?;
        number.clear();
        last_unit = unit;
    }
    if !number.is_empty() {
        return Err(error());
    }
    Ok(Duration::from_secs(total))
}

/// A duration as [`parse_duration`] reads it: `2h`, `30m`, `1h30m`, `90s`.
pub fn duration_text(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut text = String::new();
    if h > 0 {
        text.push_str(&format!("{h}h"));
    }
    if m > 0 {
        text.push_str(&format!("{m}m"));
    }
    if s > 0 || text.is_empty() {
        text.push_str(&format!("{s}s"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_ipv4_address_is_its_own_slash_32() {
        let rule = grant_rule("20.37.158.9".parse().unwrap()).unwrap();
        assert_eq!(rule.to_string(), "20.37.158.9/32");
        let mapped = grant_rule("::ffff:20.37.158.9".parse().unwrap()).unwrap();
        assert_eq!(mapped, rule);
    }

    #[test]
    fn private_reserved_and_ipv6_addresses_are_refused_by_name() {
        for private in [
            "10.1.2.3",
            "192.168.0.1",
            "127.0.0.1",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
        ] {
            let err = grant_rule(private.parse().unwrap()).unwrap_err();
            assert!(
                matches!(err, GrantRefusal::NotPublic { .. }),
                "{private}: {err}"
            );
            assert!(err.to_string().contains("not a public address"), "{err}");
        }
        let err = grant_rule("168.63.129.16".parse().unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("Azure's platform address"),
            "{err}"
        );
        let err = grant_rule("2001:db8::1".parse().unwrap()).unwrap_err();
        assert!(
            err.to_string()
                .contains("tagfence writes IPv4 firewall rules only"),
            "{err}"
        );
    }

    #[test]
    fn durations_read_as_people_write_them_and_nothing_else() {
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration(" 90s ").unwrap(), Duration::from_secs(90));
        for bad in [
            "",
            "30",
            "m",
            "30x",
            "1m1h",
            "1h1h",
            "-5m",
            "1.5h",
            "99999999999999999999h",
            "5124095576030432h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        for d in [60, 90, 1800, 5400, 7200, 86400] {
            let d = Duration::from_secs(d);
            assert_eq!(parse_duration(&duration_text(d)).unwrap(), d);
        }
    }

    #[test]
    fn ttls_and_reasons_are_held_to_their_limits() {
        assert!(check_ttl(Duration::from_secs(1800), DEFAULT_MAX_TTL).is_ok());
        let err = check_ttl(Duration::from_secs(3 * 3600), DEFAULT_MAX_TTL).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a grant of 3h is longer than the longest allowed, 2h (--grant-max-ttl)"
        );
        assert!(check_ttl(Duration::from_secs(10), DEFAULT_MAX_TTL).is_err());
        assert!(check_reason("release 1.2 pipeline").is_ok());
        assert!(check_reason("line\nbreak").is_err());
        assert!(check_reason("line\u{2028}separator").is_err());
        assert!(check_reason("Überprüfung des Release-Laufs ✓").is_ok());
        assert!(check_reason(&"x".repeat(MAX_REASON_CHARS + 1)).is_err());
    }
}

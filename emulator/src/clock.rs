//! Wall-clock helpers: epoch milliseconds and the .NET date format ARM puts in its messages.
//!
//! Token expiry is wall-clock time (clients compare `expires_on` with their own clock), so it uses
//! `SystemTime`; durations inside the emulator use `Instant`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, saturating at 0 for a clock set before 1970.
pub(crate) fn now_epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, duration_ms)
}

/// A duration in whole milliseconds, saturating at `u64::MAX`.
pub(crate) fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Formats epoch milliseconds the way ARM's .NET front end prints UTC times in error messages,
/// e.g. `8/9/2025 1:05:09 PM` (`M/d/yyyy h:mm:ss tt`).
pub(crate) fn dotnet_utc(epoch_ms: u64) -> String {
    let secs = epoch_ms / 1000;
    let days = secs / 86_400;
    let second_of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let hour = second_of_day / 3600;
    let minute = (second_of_day % 3600) / 60;
    let second = second_of_day % 60;
    let (hour12, meridiem) = match hour {
        0 => (12, "AM"),
        1..=11 => (hour, "AM"),
        12 => (12, "PM"),
        _ => (hour - 12, "PM"),
    };
    format!("{month}/{day}/{year} {hour12}:{minute:02}:{second:02} {meridiem}")
}

/// Formats epoch milliseconds as ARM's `systemData` times are written,
/// `2020-01-01T12:00:00.0000000Z` (RFC 3339, seven fraction digits: keyvault.json's examples).
pub(crate) fn rfc3339_utc(epoch_ms: u64) -> String {
    let secs = epoch_ms / 1000;
    let (year, month, day) = civil_from_days(secs / 86_400);
    let second_of_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:07}Z",
        second_of_day / 3600,
        (second_of_day % 3600) / 60,
        second_of_day % 60,
        (epoch_ms % 1000) * 10_000
    )
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day).
/// Howard Hinnant's `civil_from_days`, restricted to non-negative day counts.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_format_matches_known_instants() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.0000000Z");
        assert_eq!(
            rfc3339_utc(1_754_744_709_123),
            "2025-08-09T13:05:09.1230000Z"
        );
    }

    #[test]
    fn dotnet_format_matches_known_instants() {
        assert_eq!(dotnet_utc(0), "1/1/1970 12:00:00 AM");
        // 2025-08-09T13:05:09Z
        assert_eq!(dotnet_utc(1_754_744_709_000), "8/9/2025 1:05:09 PM");
        // 2024-02-29T11:59:59Z, a leap day
        assert_eq!(dotnet_utc(1_709_207_999_000), "2/29/2024 11:59:59 AM");
        // 2000-12-31T12:00:00Z
        assert_eq!(dotnet_utc(978_264_000_000), "12/31/2000 12:00:00 PM");
    }
}

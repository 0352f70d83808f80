//! The timer's schedule: an NCRONTAB expression from the `TAGFENCE_SCHEDULE` app setting
//! (`%TAGFENCE_SCHEDULE%` in `function-timer/function.json`). The Functions host fires the
//! timer; `serve` only validates the expression at start-up and reports the next run, so that a
//! typo shows in the log at once instead of as a timer that never fires.
//!
//! NCRONTAB has six fields, `{second} {minute} {hour} {day} {month} {day-of-week}`, with
//! Sunday = 0 (Microsoft Learn, "Timer trigger for Azure Functions"); five fields are accepted
//! too. `croner` reads it the same way; the `cron` crate would not (it numbers weekdays from
//! Sunday = 1).

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds};
use croner::Cron;

/// The documented default: every Wednesday at 06:30 UTC, after Microsoft's weekly publication.
pub const DEFAULT_SCHEDULE: &str = "0 30 6 * * 3";

/// A validated schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub expression: String,
    cron: Cron,
}

impl Schedule {
    /// Parses an NCRONTAB expression.
    ///
    /// # Errors
    /// A message naming the expression and what is wrong with it.
    pub fn parse(expression: &str) -> Result<Schedule, String> {
        let expression = expression.trim();
        let parser = CronParser::builder().seconds(Seconds::Optional).build();
        let cron = parser
            .parse(expression)
            .map_err(|e| format!("invalid schedule '{expression}' (TAGFENCE_SCHEDULE): {e}"))?;
        Ok(Schedule {
            expression: expression.to_owned(),
            cron,
        })
    }

    /// The next time the schedule fires after `now`, in UTC (Flex Consumption does not
    /// support `WEBSITE_TIME_ZONE`: Microsoft Learn, "Timer trigger for Azure Functions").
    pub fn next_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&now, false).ok()
    }

    /// A description for people, e.g. "At 06:30:00 on Wednesday".
    pub fn describe(&self) -> String {
        self.cron.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Timelike, Weekday};

    #[test]
    fn the_default_fires_on_wednesdays_at_0630_utc() {
        let schedule = Schedule::parse(DEFAULT_SCHEDULE).unwrap();
        // Thursday 2026-11-26 12:00 UTC → Wednesday 2026-12-02 06:30 UTC.
        let next = schedule
            .next_after(Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap())
            .unwrap();
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 12, 2, 6, 30, 0).unwrap());
        assert_eq!(next.weekday(), Weekday::Wed);
        // NCRONTAB's Sunday = 0: "3" is Wednesday, unlike the cron crate's Tuesday.
        let names = Schedule::parse("0 30 6 * * Wed").unwrap();
        assert_eq!(
            names.next_after(Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap()),
            Some(next)
        );
    }

    #[test]
    fn five_fields_are_minutes() {
        let schedule = Schedule::parse("15 2 * * 0").unwrap();
        let next = schedule
            .next_after(Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap())
            .unwrap();
        assert_eq!(
            (next.weekday(), next.hour(), next.minute()),
            (Weekday::Sun, 2, 15)
        );
    }

    #[test]
    fn a_typo_is_an_error_naming_the_expression() {
        let err = Schedule::parse("0 30 6 * * Wedn").unwrap_err();
        assert!(
            err.starts_with("invalid schedule '0 30 6 * * Wedn' (TAGFENCE_SCHEDULE): "),
            "{err}"
        );
        assert!(Schedule::parse("0 61 6 * * 3").is_err());
    }
}

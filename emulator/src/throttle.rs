//! ARM's token buckets and Resource Graph's query windows.
//!
//! ARM (Microsoft Learn, "Understand how Azure Resource Manager throttles requests",
//! <https://learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling>)
//! throttles with a token bucket per subscription, per security principal and per operation
//! type: reads 250 refilled at 25 per second, writes 200 at 10, deletes 200 at 10. A request that
//! finds its bucket empty gets 429 with `Retry-After`. The emulator keeps one bucket per
//! subscription and kind ([`Buckets`]), shared by every principal, as it always has for writes
//! (the tests use one identity, for which the two are the same). Reads are refused only when
//! [`crate::Config::read_throttle`] asks for it; otherwise they are counted for the
//! `x-ms-ratelimit-remaining-subscription-reads` header and never refused.
//!
//! Resource Graph (Microsoft Learn, "Guidance for throttled requests in Azure Resource Graph")
//! allows each user a number of queries in a time window ([`QuotaWindows`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::policy::{GraphQuota, Throttle};

/// Retry-After used when a bucket never refills (`refill_per_sec <= 0`).
const NEVER_REFILLS_RETRY_AFTER: u64 = 3600;

/// The kinds of ARM request that have their own bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    Read,
    Write,
    Delete,
}

impl Operation {
    /// The word ARM's 429 message uses (`Number of 'read' requests …`).
    pub fn word(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Delete => "delete",
        }
    }

    /// The header that reports what is left in the subscription's bucket (the read and write
    /// ones: Microsoft Learn, "Understand how Azure Resource Manager throttles requests"; the
    /// delete one is in ARM's answers to DELETE recorded in Azure/azure-sdk-for-js, e.g.
    /// `sdk/apimanagement/arm-apimanagement/recordings/node/apimanagement_test/recording_apimanagementservice_delete_test.js`, 2021).
    pub fn remaining_header(self) -> &'static str {
        match self {
            Operation::Read => "x-ms-ratelimit-remaining-subscription-reads",
            Operation::Write => "x-ms-ratelimit-remaining-subscription-writes",
            Operation::Delete => "x-ms-ratelimit-remaining-subscription-deletes",
        }
    }
}

/// How a kind of ARM request is budgeted.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Budgeting {
    /// Never refused; the header always says `reported`.
    Unlimited { reported: u32 },
    /// Counted in a bucket for the header, never refused.
    Counted(Throttle),
    /// A bucket that refuses requests when it is empty.
    Enforced(Throttle),
}

/// One kind of ARM request's buckets (reads, writes or deletes), one per subscription.
#[derive(Debug)]
pub(crate) struct Buckets {
    budgeting: Budgeting,
    buckets: HashMap<String, TokenBucket>,
}

impl Buckets {
    pub fn new(budgeting: Budgeting) -> Self {
        Buckets {
            budgeting,
            buckets: HashMap::new(),
        }
    }

    fn bucket(&mut self, limits: Throttle, subscription: &str, now: Instant) -> &mut TokenBucket {
        self.buckets
            .entry(subscription.to_ascii_lowercase())
            .or_insert_with(|| TokenBucket::new(limits, now))
    }

    /// Spends a token for `subscription`: `Ok(remaining)`, or `Err(retry_after_secs)` when an
    /// enforced bucket is empty.
    pub fn take(&mut self, subscription: &str, now: Instant) -> Result<u32, u64> {
        match self.budgeting {
            Budgeting::Unlimited { reported } => Ok(reported),
            Budgeting::Counted(limits) => Ok(self
                .bucket(limits, subscription, now)
                .take(now)
                .unwrap_or(0)),
            Budgeting::Enforced(limits) => self.bucket(limits, subscription, now).take(now),
        }
    }

    /// Tokens left for `subscription`, without spending one.
    pub fn peek(&mut self, subscription: &str, now: Instant) -> u32 {
        match self.budgeting {
            Budgeting::Unlimited { reported } => reported,
            Budgeting::Counted(limits) | Budgeting::Enforced(limits) => {
                self.bucket(limits, subscription, now).peek(now)
            }
        }
    }
}

/// One subscription's bucket.
#[derive(Debug)]
struct TokenBucket {
    limits: Throttle,
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limits: Throttle, now: Instant) -> Self {
        TokenBucket {
            limits,
            tokens: f64::from(limits.capacity),
            refilled_at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        let rate = self.limits.refill_per_sec.max(0.0);
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(self.limits.capacity));
        self.refilled_at = now;
    }

    /// Takes one token: `Ok(remaining)` or `Err(retry_after_secs)` (whole seconds until a token is
    /// available, at least 1).
    pub fn take(&mut self, now: Instant) -> Result<u32, u64> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(self.remaining())
        } else {
            let rate = self.limits.refill_per_sec;
            if rate.is_finite() && rate > 0.0 {
                // A float-to-int `as` cast saturates; the value is positive and finite here.
                Err((((1.0 - self.tokens) / rate).ceil() as u64).max(1))
            } else {
                Err(NEVER_REFILLS_RETRY_AFTER)
            }
        }
    }

    /// Remaining whole tokens after refilling, without taking one.
    pub fn peek(&mut self, now: Instant) -> u32 {
        self.refill(now);
        self.remaining()
    }

    fn remaining(&self) -> u32 {
        // `tokens` lies in [0, capacity], so the float-to-int cast cannot overflow.
        self.tokens.floor() as u32
    }
}

/// What a Resource Graph answer reports: queries left in the window and the time until it
/// resets (`x-ms-user-quota-remaining`, `x-ms-user-quota-resets-after`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct QuotaLeft {
    pub remaining: u32,
    pub resets_after: Duration,
}

impl QuotaLeft {
    /// `resets_after` as `hh:mm:ss`, rounded up to whole seconds (a client that waits that long
    /// finds the window reset).
    pub fn resets_after_text(&self) -> String {
        let secs = whole_seconds_up(self.resets_after);
        format!(
            "{:02}:{:02}:{:02}",
            secs / 3600,
            (secs / 60) % 60,
            secs % 60
        )
    }

    /// `Retry-After` for a refusal: the seconds until the window resets, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        whole_seconds_up(self.resets_after).max(1)
    }
}

fn whole_seconds_up(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// One principal's current window.
#[derive(Debug)]
struct Window {
    started: Instant,
    used: u32,
}

/// Resource Graph's quota: a window per principal (object id) that starts with its first query
/// and allows `quota.queries` queries until `quota.window` has passed. Microsoft Learn's example
/// ("Guidance for throttled requests in Azure Resource Graph"): an answer with 10 remaining
/// that resets after 00:00:03 allows 10 more queries in the next 3 seconds, after which the
/// headers read 15 and 00:00:05 again.
#[derive(Debug)]
pub(crate) struct QuotaWindows {
    quota: GraphQuota,
    windows: HashMap<String, Window>,
}

impl QuotaWindows {
    pub fn new(quota: GraphQuota) -> Self {
        QuotaWindows {
            quota,
            windows: HashMap::new(),
        }
    }

    /// What is left for a principal with no window open (a fresh one).
    pub fn full(&self) -> QuotaLeft {
        QuotaLeft {
            remaining: self.quota.queries,
            resets_after: self.quota.window,
        }
    }

    /// Forgets the windows that have ended.
    fn expire(&mut self, now: Instant) {
        let length = self.quota.window;
        self.windows
            .retain(|_, open| now.saturating_duration_since(open.started) < length);
    }

    /// Spends one query of `principal`'s window (opening one if none is open): `Ok(left)` after
    /// it, or `Err(left)` (nothing remaining) when the window is used up.
    pub fn take(&mut self, principal: &str, now: Instant) -> Result<QuotaLeft, QuotaLeft> {
        self.expire(now);
        let quota = self.quota;
        let window = self
            .windows
            .entry(principal.to_ascii_lowercase())
            .or_insert(Window {
                started: now,
                used: 0,
            });
        let spent = window.used < quota.queries;
        if spent {
            window.used += 1;
        }
        let left = left_in(quota, window, now);
        if spent {
            Ok(left)
        } else {
            Err(left)
        }
    }

    /// What is left for `principal` now, without spending.
    pub fn peek(&mut self, principal: &str, now: Instant) -> QuotaLeft {
        self.expire(now);
        match self.windows.get(&principal.to_ascii_lowercase()) {
            Some(window) => left_in(self.quota, window, now),
            None => self.full(),
        }
    }
}

fn left_in(quota: GraphQuota, window: &Window, now: Instant) -> QuotaLeft {
    QuotaLeft {
        remaining: quota.queries.saturating_sub(window.used),
        resets_after: quota
            .window
            .saturating_sub(now.saturating_duration_since(window.started)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_empty_bucket_refuses_with_a_whole_second_retry_and_refills() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(
            Throttle {
                capacity: 3,
                refill_per_sec: 1.0,
            },
            start,
        );
        assert_eq!(bucket.take(start), Ok(2));
        assert_eq!(bucket.take(start), Ok(1));
        assert_eq!(bucket.take(start), Ok(0));
        assert_eq!(bucket.take(start), Err(1));
        assert_eq!(bucket.take(start + Duration::from_millis(400)), Err(1));
        assert_eq!(bucket.take(start + Duration::from_millis(1000)), Ok(0));
        assert_eq!(bucket.peek(start + Duration::from_secs(100)), 3);
    }

    #[test]
    fn slow_refill_gives_a_longer_retry_after() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(
            Throttle {
                capacity: 1,
                refill_per_sec: 0.2,
            },
            start,
        );
        assert_eq!(bucket.take(start), Ok(0));
        assert_eq!(bucket.take(start), Err(5));
    }

    #[test]
    fn a_bucket_that_never_refills_says_so() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(
            Throttle {
                capacity: 0,
                refill_per_sec: 0.0,
            },
            start,
        );
        assert_eq!(bucket.take(start), Err(NEVER_REFILLS_RETRY_AFTER));
    }

    #[test]
    fn counted_buckets_never_refuse_and_enforced_ones_do() {
        let start = Instant::now();
        let small = Throttle {
            capacity: 2,
            refill_per_sec: 1.0,
        };
        let mut counted = Buckets::new(Budgeting::Counted(small));
        assert_eq!(counted.take("S", start), Ok(1));
        assert_eq!(counted.take("s", start), Ok(0));
        assert_eq!(counted.take("s", start), Ok(0));
        assert_eq!(counted.peek("other", start), 2);

        let mut enforced = Buckets::new(Budgeting::Enforced(small));
        assert_eq!(enforced.take("s", start), Ok(1));
        assert_eq!(enforced.take("S", start), Ok(0));
        assert_eq!(enforced.take("s", start), Err(1));
        assert_eq!(enforced.peek("s", start), 0);
        assert_eq!(enforced.take("t", start), Ok(1));

        let mut unlimited = Buckets::new(Budgeting::Unlimited { reported: 199 });
        assert_eq!(unlimited.take("s", start), Ok(199));
        assert_eq!(unlimited.peek("s", start), 199);
    }

    #[test]
    fn a_quota_window_opens_with_the_first_query_and_resets_after_its_length() {
        let start = Instant::now();
        let mut windows = QuotaWindows::new(GraphQuota {
            queries: 2,
            window: Duration::from_secs(5),
        });
        let fresh = windows.peek("oid", start);
        assert_eq!(
            (fresh.remaining, fresh.resets_after_text()),
            (2, "00:00:05".to_owned())
        );
        let first = windows.take("OID", start).unwrap();
        assert_eq!(first.remaining, 1);
        assert_eq!(first.resets_after_text(), "00:00:05");
        let later = start + Duration::from_millis(1200);
        let second = windows.take("oid", later).unwrap();
        assert_eq!(
            (second.remaining, second.resets_after_text()),
            (0, "00:00:04".to_owned())
        );
        let refused = windows.take("oid", later).unwrap_err();
        assert_eq!((refused.remaining, refused.retry_after_secs()), (0, 4));
        // Another principal has its own window.
        assert_eq!(windows.take("other", later).unwrap().remaining, 1);
        // The window ends 5 s after the first query.
        let reset = start + Duration::from_secs(5);
        assert_eq!(windows.peek("oid", reset), windows.full());
        assert_eq!(windows.take("oid", reset).unwrap().remaining, 1);
    }

    #[test]
    fn resets_after_reads_as_hours_minutes_and_seconds() {
        let left = |secs: f64| QuotaLeft {
            remaining: 0,
            resets_after: Duration::from_secs_f64(secs),
        };
        assert_eq!(left(3725.0).resets_after_text(), "01:02:05");
        assert_eq!(left(0.2).resets_after_text(), "00:00:01");
        assert_eq!(left(0.0).resets_after_text(), "00:00:00");
        assert_eq!(left(0.0).retry_after_secs(), 1);
    }
}

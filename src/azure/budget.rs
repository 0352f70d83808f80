//! ARM's read and write budgets, kept on the client side.
//!
//! ARM throttles with a token bucket per subscription, principal and operation type: writes
//! 200 tokens refilled at 10 per second, reads 250 refilled at 25 per second (Microsoft Learn,
//! "Understand how Azure Resource Manager throttles requests",
//! https://learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling).
//! Sending requests faster than that only buys 429s and `Retry-After` waits, and a long enough
//! 429 storm exhausts the retries. So tagfence keeps its own copy of each bucket and waits for a
//! token before each request: a thousand vaults then take as long as the budgets allow, with
//! (almost) no 429s. A copy is corrected downwards from
//! `x-ms-ratelimit-remaining-subscription-writes` (or `-reads`) on every response, since other
//! callers (people, pipelines) spend the same budget; it is never corrected upwards.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// ARM's write bucket size per subscription.
pub const ARM_WRITE_BURST: u32 = 200;
/// ARM's write bucket refill rate per subscription, per second.
pub const ARM_WRITE_REFILL_PER_SECOND: u32 = 10;

/// ARM's read bucket size per subscription.
pub const ARM_READ_BURST: u32 = 250;
/// ARM's read bucket refill rate per subscription, per second.
pub const ARM_READ_REFILL_PER_SECOND: u32 = 25;

/// The size and refill rate of a kind of request's buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetLimits {
    pub burst: u32,
    pub refill_per_second: u32,
}

impl BudgetLimits {
    /// ARM's writes: 200, +10 a second.
    pub const ARM_WRITES: BudgetLimits = BudgetLimits {
        burst: ARM_WRITE_BURST,
        refill_per_second: ARM_WRITE_REFILL_PER_SECOND,
    };
    /// ARM's reads: 250, +25 a second.
    pub const ARM_READS: BudgetLimits = BudgetLimits {
        burst: ARM_READ_BURST,
        refill_per_second: ARM_READ_REFILL_PER_SECOND,
    };
}

impl Default for BudgetLimits {
    /// ARM's writes (the budget tagfence kept first; [`BudgetLimits::ARM_READS`] for reads).
    fn default() -> Self {
        BudgetLimits::ARM_WRITES
    }
}

/// The response header with the writes left in the subscription's bucket.
pub const REMAINING_WRITES_HEADER: &str = "x-ms-ratelimit-remaining-subscription-writes";
/// The response header with the reads left in the subscription's bucket.
pub const REMAINING_READS_HEADER: &str = "x-ms-ratelimit-remaining-subscription-reads";

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets for one kind of request (reads or writes), one per subscription.
#[derive(Debug)]
pub struct Budget {
    burst: f64,
    refill_per_second: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Budget {
    /// Buckets of `limits.burst` tokens refilled at `limits.refill_per_second` (at least 1 each).
    pub fn with_limits(limits: BudgetLimits) -> Self {
        Budget::new(limits.burst, limits.refill_per_second)
    }

    /// Buckets of `burst` tokens refilled at `refill_per_second` (at least 1).
    pub fn new(burst: u32, refill_per_second: u32) -> Self {
        Budget {
            burst: f64::from(burst.max(1)),
            refill_per_second: f64::from(refill_per_second.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn with_bucket<T>(&self, subscription: &str, f: impl FnOnce(&mut Bucket) -> T) -> T {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let bucket = buckets
            .entry(subscription.to_ascii_lowercase())
            .or_insert(Bucket {
                tokens: self.burst,
                updated: now,
            });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.refill_per_second).min(self.burst);
        bucket.updated = now;
        f(bucket)
    }

    /// Takes a token for `subscription`, waiting for one if the bucket is empty; returns
    /// how long it waited.
    pub async fn acquire(&self, subscription: &str) -> Duration {
        let started = Instant::now();
        loop {
            let wait = self.with_bucket(subscription, |bucket| {
                if bucket.tokens >= 1.0 {
                    bucket.tokens -= 1.0;
                    None
                } else {
                    Some(Duration::from_secs_f64(
                        (1.0 - bucket.tokens) / self.refill_per_second,
                    ))
                }
            });
            match wait {
                None => return started.elapsed(),
                Some(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Lowers the bucket to what ARM says is left, when that is less.
    pub fn observe_remaining(&self, subscription: &str, remaining: u32) {
        self.with_bucket(subscription, |bucket| {
            bucket.tokens = bucket.tokens.min(f64::from(remaining));
        });
    }

    /// Tokens left for `subscription` now (for logs and tests).
    pub fn available(&self, subscription: &str) -> f64 {
        self.with_bucket(subscription, |bucket| bucket.tokens)
    }
}

/// The response header with the Resource Graph queries the caller has left in its window.
pub const GRAPH_QUOTA_REMAINING_HEADER: &str = "x-ms-user-quota-remaining";
/// The response header with the time (`hh:mm:ss`) until the caller's Resource Graph window
/// resets.
pub const GRAPH_QUOTA_RESETS_AFTER_HEADER: &str = "x-ms-user-quota-resets-after";

/// Resource Graph's own quota: a number of queries per user in a time window (the documented
/// example is 15 queries every 5 seconds, "subject to change"; Microsoft Learn, "Guidance for
/// throttled requests in Azure Resource Graph",
/// https://learn.microsoft.com/azure/governance/resource-graph/concepts/guidance-for-throttled-requests).
/// Every answer says how many queries are left and when the window resets; tagfence holds its
/// next query until then once nothing is left, instead of drawing a 429.
#[derive(Debug, Default)]
pub struct GraphQuota {
    resume_at: Mutex<Option<Instant>>,
}

impl GraphQuota {
    /// Waits until the quota allows another query; returns how long it waited.
    pub async fn wait(&self) -> Duration {
        let resume_at = *self
            .resume_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match resume_at {
            Some(at) if at > Instant::now() => {
                let waited = at - Instant::now();
                tokio::time::sleep_until(at).await;
                waited
            }
            _ => Duration::ZERO,
        }
    }

    /// Takes what an answer said: with no query left, the next waits for the window's reset.
    /// Values that cannot be read are ignored (the pipeline still honours a 429's
    /// `Retry-After`).
    pub fn observe(&self, remaining: Option<&str>, resets_after: Option<&str>) {
        let remaining = remaining.and_then(|r| r.trim().parse::<u64>().ok());
        let resets_after = resets_after.and_then(parse_hh_mm_ss);
        let mut resume_at = self
            .resume_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match (remaining, resets_after) {
            (Some(0), Some(after)) => {
                // A window longer than a minute is not what the documentation describes: the
                // wait is capped, and the pipeline's 429 handling covers the rest.
                *resume_at = Some(Instant::now() + after.min(Duration::from_secs(60)));
            }
            (Some(_), _) => *resume_at = None,
            _ => {}
        }
    }
}

/// `hh:mm:ss` (seconds may carry a fraction) as a duration.
pub fn parse_hh_mm_ss(text: &str) -> Option<Duration> {
    let mut parts = text.trim().split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let h: u64 = h.parse().ok()?;
    let m: u64 = m.parse().ok()?;
    let s: f64 = s.parse().ok()?;
    if m >= 60 || !(0.0..60.0).contains(&s) {
        return None;
    }
    // The header comes from the network: an hour count that overflows is unreadable, not a panic.
    let whole = h.checked_mul(3600)?.checked_add(m * 60)?;
    Duration::from_secs(whole).checked_add(Duration::from_secs_f64(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_burst_is_free_then_writes_follow_the_refill_rate() {
        let budget = Budget::new(200, 10);
        let started = Instant::now();
        for _ in 0..200 {
            assert_eq!(budget.acquire("s1").await, Duration::ZERO);
        }
        // 50 more writes need 5 s of refill; other subscriptions are unaffected.
        for _ in 0..50 {
            budget.acquire("s1").await;
        }
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_secs(5) && elapsed < Duration::from_millis(5100),
            "{elapsed:?}"
        );
        assert_eq!(budget.acquire("S2").await, Duration::ZERO);
    }

    #[test]
    fn quota_reset_times_are_read_as_resource_graph_writes_them() {
        assert_eq!(parse_hh_mm_ss("00:00:03"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_hh_mm_ss("01:02:03.5"),
            Some(Duration::from_millis(3_723_500))
        );
        for bad in [
            "",
            "3",
            "00:03",
            "00:60:00",
            "00:00:61",
            "a:b:c",
            "00:00:03:00",
            "-1:00:00",
            "5124095576030432:00:00",
            "18446744073709551615:59:59.9",
            "00:00:NaN",
        ] {
            assert_eq!(parse_hh_mm_ss(bad), None, "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_exhausted_graph_quota_holds_the_next_query_until_the_reset() {
        let quota = GraphQuota::default();
        assert_eq!(quota.wait().await, Duration::ZERO);
        quota.observe(Some("3"), Some("00:00:04"));
        assert_eq!(quota.wait().await, Duration::ZERO);
        quota.observe(Some("0"), Some("00:00:04"));
        let started = Instant::now();
        quota.wait().await;
        assert_eq!(started.elapsed(), Duration::from_secs(4));
        // Unreadable answers change nothing; a window of hours is capped at a minute.
        quota.observe(Some("lots"), Some("soon"));
        quota.observe(Some("0"), Some("05:00:00"));
        let started = Instant::now();
        quota.wait().await;
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn what_arm_reports_lowers_the_bucket_but_never_raises_it() {
        let budget = Budget::new(200, 10);
        budget.observe_remaining("s1", 3);
        assert_eq!(budget.available("s1"), 3.0);
        budget.observe_remaining("s1", 150);
        assert_eq!(budget.available("s1"), 3.0);
        for _ in 0..3 {
            assert_eq!(budget.acquire("s1").await, Duration::ZERO);
        }
        // The fourth waits for one token: 100 ms at 10/s.
        assert_eq!(budget.acquire("s1").await, Duration::from_millis(100));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(budget.available("s1"), 200.0);
    }
}

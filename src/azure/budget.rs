//! ARM's write budget, kept on the client side.
//!
//! ARM throttles writes with a token bucket per subscription and principal: 200 tokens,
//! refilled at 10 per second (Microsoft Learn, "Understand how Azure Resource Manager throttles
//! requests"). Sending writes faster than that only buys 429s and `Retry-After` waits, and a long
//! enough 429 storm exhausts the retries. So tagfence keeps its own copy of the bucket and waits
//! for a token before each write: a thousand vaults then take as long as the budget allows, with
//! (almost) no 429s. The copy is corrected downwards from
//! `x-ms-ratelimit-remaining-subscription-writes` on every write response, since other writers
//! (people, pipelines) spend the same budget; it is never corrected upwards.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// ARM's write bucket size per subscription.
pub const ARM_WRITE_BURST: u32 = 200;
/// ARM's write bucket refill rate per subscription, per second.
pub const ARM_WRITE_REFILL_PER_SECOND: u32 = 10;

/// The size and refill rate of the write buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetLimits {
    pub burst: u32,
    pub refill_per_second: u32,
}

impl Default for BudgetLimits {
    /// ARM's: 200 writes, +10 a second.
    fn default() -> Self {
        BudgetLimits {
            burst: ARM_WRITE_BURST,
            refill_per_second: ARM_WRITE_REFILL_PER_SECOND,
        }
    }
}

/// The response header with the writes left in the subscription's bucket.
pub const REMAINING_WRITES_HEADER: &str = "x-ms-ratelimit-remaining-subscription-writes";

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets for writes, one per subscription.
#[derive(Debug)]
pub struct WriteBudget {
    burst: f64,
    refill_per_second: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Default for WriteBudget {
    fn default() -> Self {
        WriteBudget::with_limits(BudgetLimits::default())
    }
}

impl WriteBudget {
    /// Buckets of `limits.burst` tokens refilled at `limits.refill_per_second` (at least 1 each).
    pub fn with_limits(limits: BudgetLimits) -> Self {
        WriteBudget::new(limits.burst, limits.refill_per_second)
    }

    /// Buckets of `burst` tokens refilled at `refill_per_second` (at least 1).
    pub fn new(burst: u32, refill_per_second: u32) -> Self {
        WriteBudget {
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

    /// Takes a write token for `subscription`, waiting for one if the bucket is empty; returns
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_burst_is_free_then_writes_follow_the_refill_rate() {
        let budget = WriteBudget::new(200, 10);
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

    #[tokio::test(start_paused = true)]
    async fn what_arm_reports_lowers_the_bucket_but_never_raises_it() {
        let budget = WriteBudget::new(200, 10);
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

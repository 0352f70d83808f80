//! Token buckets for ARM's per-subscription request limits (Microsoft Learn, "Understand how Azure
//! Resource Manager throttles requests").
//!
//! ARM's current model is a token bucket per subscription: writes have a bucket of 200 refilled
//! at 10 per second, and a request that finds the bucket empty gets 429 with `Retry-After`. The
//! read bucket (250 at 25/s) is UNVERIFIED, so reads are only counted for the
//! `x-ms-ratelimit-remaining-subscription-reads` header and never refused.

use std::time::Instant;

use crate::policy::Throttle;

/// Retry-After used when a bucket never refills (`refill_per_sec <= 0`).
const NEVER_REFILLS_RETRY_AFTER: u64 = 3600;

/// The read bucket ARM is believed to use; only reported, never enforced.
pub(crate) const READ_BUCKET: Throttle = Throttle {
    capacity: 250,
    refill_per_sec: 25.0,
};

/// One subscription's bucket.
#[derive(Debug)]
pub(crate) struct TokenBucket {
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
}

//! A token bucket per caller uid: `burst` calls at once, then `per_second` on average.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use std::time::Instant;

/// Past this many remembered uids, the buckets that are full again are forgotten.
const PRUNE_ABOVE: usize = 4096;

/// The rate limiter shared by every connection.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Arc<Mutex<HashMap<u32, Bucket>>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// A limiter refilling `per_second` tokens per second up to `burst`.
    pub fn new(per_second: f64, burst: u32) -> Self {
        RateLimiter {
            per_second,
            burst: f64::from(burst),
            buckets: Arc::default(),
        }
    }

    /// Takes one token from `uid`'s bucket; false when it is empty.
    pub fn allow(&self, uid: u32) -> bool {
        self.allow_at(uid, Instant::now())
    }

    /// [`RateLimiter::allow`] at the time `now`.
    fn allow_at(&self, uid: u32, now: Instant) -> bool {
        let Ok(mut map) = self.buckets.lock() else {
            return true;
        };
        if map.len() > PRUNE_ABOVE {
            map.retain(|_, b| self.refilled(*b, now) < self.burst);
        }
        let bucket = map.entry(uid).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let tokens = self.refilled(*bucket, now);
        if tokens < 1.0 {
            *bucket = Bucket { tokens, at: now };
            return false;
        }
        *bucket = Bucket {
            tokens: tokens - 1.0,
            at: now,
        };
        true
    }

    fn refilled(&self, b: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + elapsed * self.per_second).min(self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_the_rate_applies_per_uid() {
        let r = RateLimiter::new(2.0, 3);
        let t0 = Instant::now();
        assert!((0..3).all(|_| r.allow_at(7, t0)));
        assert!(!r.allow_at(7, t0), "the bucket is empty after the burst");
        assert!(r.allow_at(8, t0), "another uid has its own bucket");
        let later = t0 + std::time::Duration::from_millis(500);
        assert!(
            r.allow_at(7, later),
            "one token back after half a second at 2/s"
        );
        assert!(!r.allow_at(7, later));
    }
}

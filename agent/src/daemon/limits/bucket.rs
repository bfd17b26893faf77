//! The per-uid rate limit on Workload API calls: `burst` calls at once, then
//! `per_second` on average, kept by `governor`'s keyed limiter (GCRA, which admits
//! exactly what a token bucket of `burst` tokens refilled at `per_second` would).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// Past this many remembered uids, the uids whose allowance is full again are forgotten.
const PRUNE_ABOVE: usize = 4096;
/// How many calls pass between two looks at the number of remembered uids.
const PRUNE_CHECK_EVERY: u32 = 256;

/// governor's limiter keyed by uid, on the time of `C`.
type KeyedByUid<C> =
    RateLimiter<u32, DefaultKeyedStateStore<u32>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The rate limiter shared by every connection (cheap to clone).
#[derive(Clone)]
pub struct UidRateLimiter<C: Clock = DefaultClock> {
    limiter: Arc<KeyedByUid<C>>,
    calls: Arc<AtomicU32>,
}

impl UidRateLimiter {
    /// A limiter refilling `per_second` calls per second up to `burst` (the
    /// configuration allows `per_second` in (0, 1e6] and `burst` in 1 to 1e6).
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self::with_clock(per_second, burst, DefaultClock::default())
    }
}

impl<C: Clock> UidRateLimiter<C> {
    /// [`UidRateLimiter::new`] on the time of `clock`.
    fn with_clock(per_second: f64, burst: u32, clock: C) -> Self {
        let period = Duration::from_secs_f64(1.0 / per_second).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        UidRateLimiter {
            limiter: Arc::new(RateLimiter::dashmap_with_clock(quota, clock)),
            calls: Arc::default(),
        }
    }

    /// Takes one call from `uid`'s allowance; false when it is used up.
    pub fn allow(&self, uid: u32) -> bool {
        let calls = self.calls.fetch_add(1, Ordering::Relaxed);
        if calls.is_multiple_of(PRUNE_CHECK_EVERY) && self.limiter.len() > PRUNE_ABOVE {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter.check_key(&uid).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn a_burst_is_allowed_then_the_rate_applies_per_uid() {
        let clock = FakeRelativeClock::default();
        let r = UidRateLimiter::with_clock(2.0, 3, clock.clone());
        assert!((0..3).all(|_| r.allow(7)));
        assert!(!r.allow(7), "the allowance is used up after the burst");
        assert!(r.allow(8), "another uid has its own allowance");
        clock.advance(Duration::from_millis(500));
        assert!(r.allow(7), "one call back after half a second at 2/s");
        assert!(!r.allow(7));
    }

    #[test]
    fn uids_whose_allowance_is_full_again_are_forgotten() {
        let clock = FakeRelativeClock::default();
        let r = UidRateLimiter::with_clock(1000.0, 2, clock.clone());
        for uid in 0..=PRUNE_ABOVE as u32 {
            r.allow(uid);
        }
        assert_eq!(r.limiter.len(), PRUNE_ABOVE + 1);
        clock.advance(Duration::from_secs(1));
        // The next periodic look forgets every uid but the one calling.
        for _ in 0..PRUNE_CHECK_EVERY {
            r.allow(u32::MAX);
        }
        assert_eq!(r.limiter.len(), 1);
    }
}

//! The per-account request rate of the ACME server (`[acme] rate_limit`): governor's
//! keyed GCRA limiter, as the Workload API's per-uid limit (`daemon::limits`) uses it.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use governor::clock::DefaultClock;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// Past this many remembered accounts, those whose allowance is full again are forgotten.
const PRUNE_ABOVE: usize = 4096;

/// Requests allowed per account id.
pub struct AccountLimiter {
    limiter: RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>,
    calls: AtomicU32,
}

impl AccountLimiter {
    /// `burst` requests at once, refilled at `per_second`.
    pub fn new(per_second: f64, burst: u32) -> AccountLimiter {
        let period =
            Duration::from_secs_f64(1.0 / per_second.max(1e-6)).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        AccountLimiter {
            limiter: RateLimiter::dashmap(quota),
            calls: AtomicU32::new(0),
        }
    }

    /// Takes one request from `account`'s allowance; false when it is used up.
    pub fn allow(&self, account: &str) -> bool {
        if self
            .calls
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(256)
            && self.limiter.len() > PRUNE_ABOVE
        {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&account.to_string()).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_account_has_its_own_burst() {
        let l = AccountLimiter::new(0.001, 2);
        assert!(l.allow("a") && l.allow("a"));
        assert!(!l.allow("a"), "the third request at once is over the burst");
        assert!(l.allow("b"), "another account is not affected");
    }
}

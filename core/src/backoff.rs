//! One retry policy for every place that waits longer after each failure: the agent's
//! SVID and intermediate rotation, its JWT key preparation, the `fetch` client's
//! reconnects, and the Vault and AWS KMS request loops. Each names its numbers in one
//! constant; the arithmetic (doubling, cap, jitter) lives only here.
//!
//! A hand-written loop asks for [`Backoff::delay`] of its attempt number; a `backon`
//! retry takes [`Backoff::delays`], which is a `backon::Backoff` as it stands.

use std::time::Duration;

/// Exponential backoff: the first delay doubles with each further attempt up to a cap,
/// and is then multiplied by a random factor drawn uniformly from a jitter range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The delay before the first retry.
    pub first: Duration,
    /// The longest delay before jitter is applied.
    pub max: Duration,
    /// The range `[low, high]` of the random factor applied to the capped delay;
    /// `(1.0, 1.0)` means no jitter.
    pub jitter: (f64, f64),
}

impl Backoff {
    /// `first`, doubled with each attempt up to `max`, without jitter.
    pub const fn doubling(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            jitter: (1.0, 1.0),
        }
    }

    /// The same policy with each delay multiplied by a random factor in `[low, high]`:
    /// `(0.75, 1.25)` spreads it ±25 %, `(0.0, 1.0)` is "full jitter", `(1.0, 2.0)`
    /// waits up to twice as long. Requires `0 <= low <= high` (checked at compile
    /// time for a constant).
    pub const fn jittered(self, low: f64, high: f64) -> Self {
        assert!(
            0.0 <= low && low <= high,
            "jitter range must be 0 <= low <= high"
        );
        Backoff {
            jitter: (low, high),
            ..self
        }
    }

    /// The delay before retry number `attempt` (1-based; 0 counts as 1): `first`
    /// times 2^(attempt-1), at most `max`, then jittered.
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1);
        let capped = self
            .first
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(self.max);
        let (low, high) = self.jitter;
        if (low, high) == (1.0, 1.0) {
            capped
        } else {
            capped.mul_f64(rand::random_range(low..=high))
        }
    }

    /// The delays before retries 1, 2, 3, ... (endless in practice), for `backon`'s
    /// `Retryable::retry`.
    pub fn delays(self) -> impl Iterator<Item = Duration> + Send + Sync + Unpin {
        (1..=u32::MAX).map(move |attempt| self.delay(attempt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn without_jitter_the_delay_doubles_up_to_the_cap() {
        let policy = Backoff::doubling(MS * 500, MS * 60_000);
        let delays: Vec<_> = (0..=9).map(|n| policy.delay(n).as_millis()).collect();
        assert_eq!(
            delays,
            [
                500, 500, 1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000
            ]
        );
        assert_eq!(policy.delay(u32::MAX), MS * 60_000);
    }

    #[test]
    fn jitter_scales_the_capped_delay_within_its_range() {
        let spread = Backoff::doubling(MS * 50, MS * 2000).jittered(0.75, 1.25);
        let full = Backoff::doubling(MS * 25, MS * 1000).jittered(0.0, 1.0);
        for attempt in 1..40 {
            let d = spread.delay(attempt);
            let base = (MS * 50 * 2u32.pow((attempt - 1).min(10))).min(MS * 2000);
            assert!(d >= base.mul_f64(0.75) && d <= base.mul_f64(1.25), "{d:?}");
            assert!(full.delay(attempt) <= MS * 1000);
        }
        let draws: Vec<_> = (0..50).map(|_| full.delay(30)).collect();
        assert!(draws.iter().any(|d| *d != draws[0]), "jitter varies");
    }

    #[test]
    fn delays_yields_the_delay_of_each_attempt_in_turn() {
        let policy = Backoff::doubling(MS * 250, MS * 30_000);
        let first: Vec<_> = policy.delays().take(9).collect();
        let expected: Vec<_> = (1..=9).map(|n| policy.delay(n)).collect();
        assert_eq!(first, expected);
    }
}

//! How long a token's quick jobs (signatures) take: it tells the dispatcher whether a
//! signature may run straight on a runtime worker thread, as a software key's does, or
//! must first hand the worker's other tasks to another thread.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Quick jobs that take at most this run straight on the caller's worker thread
/// (tokio's guidance is 10 to 100 µs between awaits; a SoftHSM ECDSA P-256 signature
/// takes 60-90 µs here, a software issuance about 100 µs). Slower tokens (RSA on
/// SoftHSM, USB and network HSMs) hand the worker's other tasks to another thread
/// first (`block_in_place`).
const SHORT: Duration = Duration::from_micros(200);

/// How many recent durations are kept.
const KEPT: usize = 8;

/// How many of them must be short for the direct path: a busy machine that preempts a
/// signature now and then does not push a fast token off it, while a token that is
/// slow more than now and then leaves it within a few jobs.
const SHORT_ENOUGH: usize = 6;

/// The durations of a token's most recent quick jobs, in µs (`u32::MAX` where none was
/// measured yet, so a new token takes the cautious path for its first jobs).
pub(super) struct Pace {
    recent_us: [AtomicU32; KEPT],
    next: AtomicUsize,
}

impl Pace {
    /// A pace with nothing measured.
    pub(super) fn new() -> Self {
        Pace {
            recent_us: std::array::from_fn(|_| AtomicU32::new(u32::MAX)),
            next: AtomicUsize::new(0),
        }
    }

    /// Whether recent quick jobs were short enough to run straight on a worker thread.
    pub(super) fn is_short(&self) -> bool {
        let short = SHORT.as_micros() as u32;
        self.recent_us
            .iter()
            .filter(|d| d.load(Ordering::Relaxed) <= short)
            .count()
            >= SHORT_ENOUGH
    }

    /// Runs `job` and keeps its duration.
    pub(super) fn time<T>(&self, job: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = job();
        let took = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % KEPT;
        self.recent_us[slot].store(took, Ordering::Relaxed);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slow() {
        std::thread::sleep(Duration::from_millis(2));
    }

    #[test]
    fn a_token_is_short_after_enough_fast_jobs_and_until_slow_ones_add_up() {
        let pace = Pace::new();
        for _ in 0..SHORT_ENOUGH - 1 {
            pace.time(|| ());
        }
        assert!(!pace.is_short(), "too few measured");
        pace.time(|| ());
        assert!(pace.is_short());
        pace.time(slow);
        assert!(pace.is_short(), "one preempted job does not count");
        for _ in 0..KEPT - SHORT_ENOUGH {
            pace.time(slow);
        }
        assert!(!pace.is_short(), "3 slow of the last 8");
    }
}

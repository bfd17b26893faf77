//! Rates over fixed time windows, and paired rounds of a baseline and keyward run one
//! after the other (ABBA order) so that noise from the rest of the machine hits both.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Operations per second of `op`, run in a loop by `concurrency` tokio tasks until
/// `window` ends (operations in flight when it ends still count, over the real time).
pub async fn rate_tasks<F, Fut>(window: Duration, concurrency: usize, op: F) -> f64
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (op, stop, count) = (op.clone(), stop.clone(), count.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    op(count.fetch_add(1, Ordering::Relaxed)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("benchmark task panicked");
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Operations per second of `op(worker)`, run in a loop on `concurrency` OS threads
/// until `window` ends: for blocking baselines (a raw C_Sign, a raw aws-lc-rs sign).
pub fn rate_threads<F>(window: Duration, concurrency: usize, op: F) -> f64
where
    F: Fn(usize) + Sync,
{
    let stop = AtomicBool::new(false);
    let count = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for worker in 0..concurrency {
            let (op, stop, count) = (&op, &stop, &count);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    op(worker);
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(window);
        stop.store(true, Ordering::Relaxed);
    });
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// The per-round rates of a paired measurement.
#[derive(Debug, Default)]
pub struct Paired {
    /// The baseline's rate in each round.
    pub baseline: Vec<f64>,
    /// keyward's rate in each round.
    pub keyward: Vec<f64>,
}

impl Paired {
    /// Runs a short warm-up of each side, then `rounds` rounds of both sides, the
    /// order alternating (baseline first in even rounds, keyward first in odd ones).
    pub fn run(
        rounds: usize,
        mut baseline: impl FnMut(bool) -> f64,
        mut keyward: impl FnMut(bool) -> f64,
    ) -> Self {
        baseline(true);
        keyward(true);
        let mut p = Paired::default();
        for round in 0..rounds {
            if round % 2 == 0 {
                p.baseline.push(baseline(false));
                p.keyward.push(keyward(false));
            } else {
                p.keyward.push(keyward(false));
                p.baseline.push(baseline(false));
            }
        }
        p
    }

    /// The machine-readable line scripts/bench.sh reads: medians of both sides and
    /// their ratio (keyward / baseline), plus the settings they were taken with.
    pub fn line(&self, row: &str, concurrency: usize, window: Duration) -> String {
        let (b, k) = (median(&self.baseline), median(&self.keyward));
        format!(
            "kwbench row={row} baseline_per_s={b:.1} keyward_per_s={k:.1} ratio={:.3} \
             concurrency={concurrency} rounds={} window_s={:.1}",
            k / b,
            self.baseline.len(),
            window.as_secs_f64()
        )
    }
}

/// The median of `v` (the mean of the middle two for an even count); 0 when empty.
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// The window of a warm-up run: a quarter of the measured one, at least 200 ms.
pub fn warm_up(window: Duration) -> Duration {
    (window / 4).max(Duration::from_millis(200))
}

//! Rates over fixed time windows, and paired rounds of a baseline and keyward run one
//! after the other (ABBA order) so that noise from the rest of the machine hits both.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Operations per second of `op(task, i)`, run in a loop by `concurrency` tokio tasks
/// (`task` numbers them from 0, `i` numbers the operations) until `window` ends
/// (operations in flight when it ends still count, over the real time).
pub async fn rate_tasks<F, Fut>(window: Duration, concurrency: usize, op: F) -> f64
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let (op, stop, count) = (op.clone(), stop.clone(), count.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    op(task, count.fetch_add(1, Ordering::Relaxed)).await;
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

/// [`rate_tasks`] for a blocking `op(task, i)` (a raw baseline over aws-lc-rs or
/// `C_Sign`): run inline on the tasks, so on the same runtime threads keyward runs on,
/// each time after a `yield_now` as keyward's inline issuance does (without it, tasks
/// that never wait would keep the runtime from running its timers).
pub async fn rate_inline<F>(window: Duration, concurrency: usize, op: Arc<F>) -> f64
where
    F: Fn(usize, u64) + Send + Sync + 'static,
{
    rate_tasks(window, concurrency, move |task, i| {
        let op = op.clone();
        async move {
            tokio::task::yield_now().await;
            op(task, i);
        }
    })
    .await
}

/// Which sides of a paired measurement run: both, or one alone (`--only baseline` or
/// `--only keyward`, to profile one side with perf).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sides {
    /// Baseline and keyward, alternating.
    Both,
    /// The baseline alone.
    Baseline,
    /// keyward alone.
    Keyward,
}

impl std::str::FromStr for Sides {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "both" => Ok(Sides::Both),
            "baseline" => Ok(Sides::Baseline),
            "keyward" => Ok(Sides::Keyward),
            _ => Err(format!("'{s}': expected both, baseline or keyward")),
        }
    }
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
    /// order alternating (baseline first in even rounds, keyward first in odd ones);
    /// each round's rates go to stderr, for the log.
    /// A side that `sides` leaves out is not run (its rates stay empty).
    pub fn run(
        rounds: usize,
        sides: Sides,
        mut baseline: impl FnMut(bool) -> f64,
        mut keyward: impl FnMut(bool) -> f64,
    ) -> Self {
        let mut p = Paired::default();
        let mut base = |p: &mut Paired, warm: bool| {
            if sides != Sides::Keyward {
                let rate = baseline(warm);
                if !warm {
                    p.baseline.push(rate);
                }
            }
        };
        let mut kw = |p: &mut Paired, warm: bool| {
            if sides != Sides::Baseline {
                let rate = keyward(warm);
                if !warm {
                    p.keyward.push(rate);
                }
            }
        };
        base(&mut p, true);
        kw(&mut p, true);
        for round in 0..rounds {
            if round % 2 == 0 {
                base(&mut p, false);
                kw(&mut p, false);
            } else {
                kw(&mut p, false);
                base(&mut p, false);
            }
            let rate = |v: &[f64]| v.last().map_or("-".to_owned(), |r| format!("{r:.1}/s"));
            eprintln!(
                "   round {round}: baseline {}, keyward {}",
                rate(&p.baseline),
                rate(&p.keyward)
            );
        }
        p
    }

    /// keyward's rate over the baseline's in each round both sides ran (the two ran
    /// back to back, so a burst of load from elsewhere on the machine hits one round's
    /// pair more alike than two rounds).
    fn round_ratios(&self) -> Vec<f64> {
        self.baseline
            .iter()
            .zip(&self.keyward)
            .map(|(b, k)| k / b)
            .collect()
    }

    /// The machine-readable line scripts/bench.sh reads: medians of both sides' rates;
    /// the median of the rounds' ratios (keyward / baseline, paired by round) and the
    /// lowest and highest of them (0 when a side did not run); the settings.
    pub fn line(&self, row: &str, concurrency: usize, window: Duration) -> String {
        let (b, k) = (median(&self.baseline), median(&self.keyward));
        let ratios = self.round_ratios();
        let low = ratios.iter().copied().reduce(f64::min).unwrap_or(0.0);
        let high = ratios.iter().copied().reduce(f64::max).unwrap_or(0.0);
        format!(
            "kwbench row={row} baseline_per_s={b:.1} keyward_per_s={k:.1} ratio={:.3} \
             ratio_low={low:.3} ratio_high={high:.3} \
             concurrency={concurrency} rounds={} window_s={:.1}",
            median(&ratios),
            self.baseline.len().max(self.keyward.len()),
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

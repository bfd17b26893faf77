//! How the KeyService rows measure: a side (the socket, keyward in process, the raw
//! backend) runs for a window on C concurrent clients and gives its rate, p50/p99
//! latency and errors; a row runs its sides in rotating order over the rounds and
//! prints the medians as one `kwbench` line.

use std::fmt::Write as _;
use std::future::Future;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Settings;
use crate::measure::{median, rate_inline, rate_tasks, warm_up};

/// One side measured once: its rate, latency percentiles and failed operations.
#[derive(Clone, Copy, Default)]
pub(super) struct Sample {
    per_s: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
}

/// A way to run one side of a row for a window.
pub(super) type Side<'a> = Box<dyn FnMut(Duration) -> Sample + 'a>;

/// Latencies per task (a lock each, so tasks never wait on each other) and failures.
struct Latencies {
    per_task: Vec<Mutex<Vec<Duration>>>,
    errors: AtomicU64,
}

impl Latencies {
    fn new(tasks: usize) -> Arc<Self> {
        Arc::new(Latencies {
            per_task: (0..tasks).map(|_| Mutex::default()).collect(),
            errors: AtomicU64::new(0),
        })
    }

    /// Records one operation of `task` begun at `start`.
    fn record(&self, task: usize, start: Instant, ok: bool) {
        if ok {
            self.per_task[task]
                .lock()
                .expect("latencies")
                .push(start.elapsed());
        } else {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The sample of a window whose rate was `per_s`.
    fn sample(&self, per_s: f64) -> Sample {
        let mut all: Vec<Duration> = self
            .per_task
            .iter()
            .flat_map(|l| std::mem::take(&mut *l.lock().expect("latencies")))
            .collect();
        all.sort();
        let pct = |p: usize| {
            all.get(all.len().saturating_sub(1) * p / 100)
                .map_or(0.0, |d| d.as_secs_f64() * 1e6)
        };
        Sample {
            per_s,
            p50_us: pct(50),
            p99_us: pct(99),
            errors: self.errors.swap(0, Ordering::Relaxed),
        }
    }
}

/// A side running async `op()` on C tokio tasks (after a `yield_now`, as the PKCS#11
/// row does: an operation that answers at once never yields).
pub(super) fn tasks_side<'a, F, Fut>(rt: &'a tokio::runtime::Runtime, c: usize, op: F) -> Side<'a>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let lat = Latencies::new(c);
    Box::new(move |window| {
        let (op, l) = (op.clone(), lat.clone());
        let per_s = rt.block_on(rate_tasks(window, c, move |task, _| {
            let (op, l) = (op.clone(), l.clone());
            async move {
                tokio::task::yield_now().await;
                let start = Instant::now();
                l.record(task, start, op().await);
            }
        }));
        lat.sample(per_s)
    })
}

/// A side running blocking `op(task)` inline on C tokio tasks (`rate_inline`).
pub(super) fn inline_side<'a>(
    rt: &'a tokio::runtime::Runtime,
    c: usize,
    op: Arc<dyn Fn(usize) + Send + Sync>,
) -> Side<'a> {
    let lat = Latencies::new(c);
    Box::new(move |window| {
        let (op, l) = (op.clone(), lat.clone());
        let per_s = rt.block_on(rate_inline(
            window,
            c,
            Arc::new(move |task, _| {
                let start = Instant::now();
                op(task);
                l.record(task, start, true);
            }),
        ));
        lat.sample(per_s)
    })
}

/// The socket side: one `keys_load` run per window on grant `grant`.
pub(super) fn socket_side<'a>(
    load: &'a Path,
    socket: &'a Path,
    grant: &'a str,
    op: &'a str,
    c: usize,
) -> Side<'a> {
    Box::new(move |window| {
        let out = Command::new(load)
            .args(["--socket".as_ref(), socket.as_os_str()])
            .args(["--grant", grant, "--op", op, "--tasks", &c.to_string()])
            .args(["--seconds", &window.as_secs_f64().to_string()])
            .args(["--warm-up", &warm_up(window).as_secs_f64().to_string()])
            .output()
            .expect("run keys_load");
        let line = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "keys_load: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let field = |name: &str| -> f64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
                .unwrap_or_else(|| panic!("keys_load printed no {name}: {line}"))
        };
        if field("errors") > 0.0 {
            eprintln!("keys_load {grant}: {}", line.trim());
        }
        Sample {
            per_s: field("ops_per_s"),
            p50_us: field("p50_us"),
            p99_us: field("p99_us"),
            errors: field("errors") as u64,
        }
    })
}

/// Measures the named sides of one row (each warmed up once, then `rounds` rounds with
/// the order rotating) and returns its `kwbench` line.
pub(super) fn row(row: &str, s: &Settings, mut sides: Vec<(&str, Side<'_>)>) -> String {
    for (_, side) in &mut sides {
        side(warm_up(s.window));
    }
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); sides.len()];
    for round in 0..s.rounds {
        for k in 0..sides.len() {
            let i = (round + k) % sides.len();
            samples[i].push((sides[i].1)(s.window));
        }
    }
    let mut line = format!("kwbench row=keys-{row}");
    let mut errors = 0;
    for ((name, _), taken) in sides.iter().zip(&samples) {
        let med = |f: fn(&Sample) -> f64| median(&taken.iter().map(f).collect::<Vec<_>>());
        let _ = write!(
            line,
            " {name}_per_s={:.1} {name}_p50_us={:.0} {name}_p99_us={:.0}",
            med(|x| x.per_s),
            med(|x| x.p50_us),
            med(|x| x.p99_us)
        );
        errors += taken.iter().map(|x| x.errors).sum::<u64>();
    }
    let _ = write!(
        line,
        " errors={errors} concurrency={} rounds={} window_s={:.1}",
        s.concurrency,
        s.rounds,
        s.window.as_secs_f64()
    );
    line
}

//! Progress of a `sign-csr --batch` run on stderr: an `indicatif` bar with rate and ETA
//! on a terminal, a plain line every few seconds otherwise (logs, CI).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the plain report prints a line.
const LINE_INTERVAL: Duration = Duration::from_secs(2);

/// The progress report of one run over `total` CSRs to sign.
pub struct Progress {
    /// The bar, on a terminal; plain lines when `None`.
    bar: Option<ProgressBar>,
    /// CSRs this run attempts.
    total: u64,
    /// Attempted so far.
    done: u64,
    /// Refused so far.
    refused: u64,
    /// When the run started.
    started: Instant,
    /// When the last plain line was printed.
    last: Instant,
}

impl Progress {
    /// A report over `total` CSRs: a bar when stderr is a terminal.
    pub fn new(total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style =
                ProgressStyle::with_template("{wide_bar} {pos}/{len} {per_sec} ETA {eta} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        let now = Instant::now();
        Progress {
            bar,
            total,
            done: 0,
            refused: 0,
            started: now,
            last: now,
        }
    }

    /// One CSR attempted (`refused` when it was not signed).
    pub fn advance(&mut self, refused: bool) {
        self.done += 1;
        self.refused += u64::from(refused);
        match &self.bar {
            Some(bar) => {
                bar.inc(1);
                if refused {
                    bar.set_message(format!("{} refused", self.refused));
                }
            }
            None if self.last.elapsed() >= LINE_INTERVAL || self.done == self.total => {
                self.last = Instant::now();
                eprintln!(
                    "{}",
                    line(self.done, self.total, self.refused, self.started.elapsed())
                );
            }
            None => {}
        }
    }

    /// Ends the report (the summary follows on stdout).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}

/// A plain progress line: counts, rate and the time left at that rate.
fn line(done: u64, total: u64, refused: u64, elapsed: Duration) -> String {
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
    let eta = (total - done) as f64 / rate.max(1e-3);
    format!("{done}/{total} CSRs ({refused} refused), {rate:.0}/s, ETA {eta:.0} s")
}

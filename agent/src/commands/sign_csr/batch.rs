//! `keyward sign-csr --batch DIR --out DIR`: bulk provisioning. Every CSR file in DIR
//! is signed through the same issuance path as `sign-csr` (`CaIssuer::sign_csr`: the
//! CSR's signature checked, the certificate signed by the CA key and verified), many
//! at once on all cores, by tasks of a few CSRs each that a loop on a runtime worker
//! starts and collects ([`Signing`]); each signing task also prepares what recording
//! its certificates take (their PEM, their output, their records' fields). Results are
//! recorded in chunks on the blocking pool (`recorder.rs`), each one transaction: the
//! chain files in OUT (or, `--output-format jsonl`, one JSON Lines bundle for the
//! chunk), the certificates in one file of `issued/` and their records in one new file
//! (see `keyward_core::store::TakenSerials`), a part of the manifest (`manifest.rs`; the
//! whole manifest is written once, when the run ends), and one audit record naming
//! every certificate of the chunk; files are synced together, not one fsync each. A
//! bad CSR is refused in the manifest and the batch goes on; SIGINT stops taking new
//! CSRs, records those in flight and exits.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_core::check::ders_to_pem;
use keyward_core::fsutil;
use keyward_core::issuance::{CaIssuer, IssuedCertificate};
use keyward_core::store::{IssuedKind, NewCertificate, StateDir};
use keyward_core::{Error, chain_line};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinSet;

use super::bundle;
use super::manifest::Manifest;
use super::progress::Progress;
use super::recorder::{Chunk, Recorder, Signed};
use super::resume::{Job, Tally, Todo, plan};
use crate::backends::Backends;
use crate::cli::OutputFormat;
use crate::commands::audit;
use crate::commands::issue::issuing_ca;

/// Results recorded per transaction at most.
const CHUNK: usize = 1000;
/// Results wait at most this long before they are recorded.
const RECORD_INTERVAL: Duration = Duration::from_secs(1);
/// CSRs being signed at once, per core.
const IN_FLIGHT_PER_CORE: usize = 8;
/// CSRs one signing task signs in turn: fewer tasks to spawn, join and wake.
const PER_TASK: usize = 4;
/// Once fewer CSRs than a chunk are left to start, results are recorded as soon as
/// this many wait (and the recorder is free): the last chunks are recorded while the
/// last CSRs are signed, and little is left to record when signing ends.
const TAIL_CHUNK: usize = 100;

/// What every signing task of a run needs to prepare its certificate's recording.
struct Preparation {
    ca: CaIssuer,
    out: PathBuf,
    format: OutputFormat,
    /// The intermediates sent after each certificate, PEM.
    intermediates_pem: String,
}

impl Preparation {
    /// Signs `job`'s CSR (reading it first, unless the plan did) and prepares what
    /// recording the certificate takes; or the job and why it was refused.
    async fn sign(&self, mut job: Job, validity: Duration) -> Result<Signed, (Job, String)> {
        if let Err(reason) = job.load() {
            return Err((job, reason));
        }
        let csr = std::mem::take(&mut job.csr);
        let cert = match self.ca.sign_csr(&csr, validity).await {
            Ok(cert) => cert,
            Err(e) => return Err((job, chain_line(&e))),
        };
        let new = NewCertificate::new(
            IssuedKind::Csr,
            &cert.subject,
            Some(self.out.join(&job.cert)),
            self.ca.signer().uri(),
            &cert,
        );
        match self.output(&job, &cert, &new) {
            Ok(output) => Ok(Signed {
                job,
                new,
                serial: cert.serial_hex,
                subject: cert.subject,
                output,
            }),
            Err(e) => Err((job, chain_line(&e))),
        }
    }

    /// What goes to OUT for `cert` (its record to be: `new`), signed for `job`.
    fn output(
        &self,
        job: &Job,
        cert: &IssuedCertificate,
        new: &NewCertificate,
    ) -> Result<Vec<u8>, Error> {
        let chain_pem = format!("{}{}", new.cert_pem, self.intermediates_pem);
        match self.format {
            OutputFormat::Pem => Ok(chain_pem.into_bytes()),
            OutputFormat::Jsonl => {
                bundle::Line::new(&job.name, &job.sha256, cert, chain_pem).encode()
            }
        }
    }
}

/// Signs every CSR in `dir` not yet signed according to `out`'s manifest.
pub async fn sign_all(
    state: &StateDir,
    backends: &Backends,
    dir: &Path,
    out: &Path,
    validity: Duration,
    format: OutputFormat,
) -> Result<(), Error> {
    // Registered first: a SIGINT from now on is ours, never the default exit.
    let sigint = signal(SignalKind::interrupt())
        .map_err(|e| Error::io("cannot catch SIGINT".to_string(), e))?;
    let out = prepare_out(dir, out)?;
    let mut manifest = Manifest::load(&out)?;
    let Todo {
        queue,
        tally,
        refused: early_refusals,
    } = plan(state, dir, &out, &mut manifest, format)?;
    let ca = issuing_ca(state, backends).await?;
    audit::check(state)?;
    let mut progress = Progress::new((queue.len() + early_refusals.len()) as u64);
    let mut chunk = Chunk::default();
    for (job, reason) in early_refusals {
        progress.advance(true);
        chunk.refused.push((job, reason));
    }
    let preparation = Arc::new(Preparation {
        ca: ca.clone(),
        out: out.clone(),
        format,
        intermediates_pem: ders_to_pem(&ca.ca_chain().intermediates),
    });
    let recorder = Recorder::new(state.clone(), ca, out.clone(), manifest, tally, format)?;
    let signing = Signing {
        queue,
        chunk,
        progress,
        preparation,
        recorder,
        validity,
    };
    // On a worker, not on this thread: each signing task that ends wakes the loop, and
    // a wake-up of the thread that runs `block_on` is a futex call and a context
    // switch (about 1.8 a CSR), where a worker wakes a task of its own in its queue.
    let (mut tally, progress) = tokio::spawn(signing.run(sigint))
        .await
        .map_err(|e| Error::State(format!("the signing loop failed: {e}")))??;
    progress.finish();
    tally.refused.sort();
    summary(&tally, dir, &out, format);
    if tally.not_attempted > 0 {
        return Err(Error::State(format!(
            "interrupted: {} CSRs not attempted; run the same command again to sign them",
            tally.not_attempted
        )));
    }
    if !tally.refused.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{} of {} CSRs refused (listed above and in {})",
            tally.refused.len(),
            tally.files,
            Manifest::path(&out).display()
        )));
    }
    Ok(())
}

/// A run's signing loop: CSRs signed many at once, results recorded chunk by chunk.
struct Signing {
    /// CSRs not yet started.
    queue: VecDeque<Job>,
    /// Results not yet recorded.
    chunk: Chunk,
    /// The run's progress report.
    progress: Progress,
    /// What every signing task needs.
    preparation: Arc<Preparation>,
    /// Records the chunks.
    recorder: Recorder,
    /// The certificates' validity.
    validity: Duration,
}

impl Signing {
    /// Signs until the queue is done or `sigint` comes (then the CSRs in flight are
    /// finished) and records every result; returns the run's tally (with the CSRs not
    /// attempted) and its progress report.
    async fn run(mut self, mut sigint: Signal) -> Result<(Tally, Progress), Error> {
        let limit =
            std::thread::available_parallelism().map_or(1, usize::from) * IN_FLIGHT_PER_CORE;
        let mut in_flight: JoinSet<Vec<Result<Signed, (Job, String)>>> = JoinSet::new();
        // CSRs in the tasks of `in_flight`.
        let mut signing = 0;
        let mut last_record = Instant::now();
        let mut interrupted = false;
        loop {
            while !interrupted && signing < limit && !self.queue.is_empty() {
                let jobs: Vec<Job> = self.queue.drain(..PER_TASK.min(self.queue.len())).collect();
                signing += jobs.len();
                let (preparation, validity) = (self.preparation.clone(), self.validity);
                in_flight.spawn(async move {
                    let mut results = Vec::with_capacity(jobs.len());
                    for job in jobs {
                        results.push(preparation.sign(job, validity).await);
                    }
                    results
                });
            }
            if in_flight.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                _ = sigint.recv(), if !interrupted => {
                    interrupted = true;
                    eprintln!("interrupted: recording the {signing} CSRs in flight, then stopping");
                }
                Some(joined) = in_flight.join_next() => {
                    let results = joined.map_err(|e| Error::State(format!("a signing task failed: {e}")))?;
                    signing -= results.len();
                    for result in results {
                        self.progress.advance(result.is_err());
                        match result {
                            Ok(signed) => self.chunk.signed.push(signed),
                            Err(refused) => self.chunk.refused.push(refused),
                        }
                    }
                }
            }
            let waiting = self.chunk.signed.len() + self.chunk.refused.len();
            let due = waiting >= CHUNK
                || last_record.elapsed() >= RECORD_INTERVAL
                || (self.queue.len() < CHUNK && waiting >= TAIL_CHUNK);
            // While the chunk before is still being recorded, signing goes on and this
            // chunk grows.
            if due && self.recorder.idle() {
                self.recorder
                    .record(std::mem::take(&mut self.chunk))
                    .await?;
                last_record = Instant::now();
            }
        }
        self.recorder.record(self.chunk).await?;
        let mut tally = self.recorder.finish().await?;
        tally.not_attempted = self.queue.len();
        Ok((tally, self.progress))
    }
}

/// The output directory, created if needed, as an absolute path; never DIR itself.
fn prepare_out(dir: &Path, out: &Path) -> Result<PathBuf, Error> {
    let bad = |what: &Path, e| Error::io(format!("bad directory {}", what.display()), e);
    let out = std::path::absolute(out).map_err(|e| bad(out, e))?;
    if out.exists() && !out.is_dir() {
        return Err(Error::InvalidInput(format!(
            "--out {} exists and is not a directory",
            out.display()
        )));
    }
    fsutil::create_private_dir(&out)?;
    // Any user could otherwise plant certificates or mark CSRs as signed.
    fsutil::refuse_world_writable_dir(&out, "--out")?;
    let same = std::fs::canonicalize(dir).map_err(|e| bad(dir, e))?
        == std::fs::canonicalize(&out).map_err(|e| bad(&out, e))?;
    if same {
        return Err(Error::InvalidInput(
            "--out must be another directory than --batch".into(),
        ));
    }
    Ok(out)
}

/// Prints what the run did.
fn summary(tally: &Tally, dir: &Path, out: &Path, format: OutputFormat) {
    println!(
        "{} CSR files in {}: {} signed now, {} signed by an earlier run, {} refused, {} not attempted",
        tally.files,
        dir.display(),
        tally.signed,
        tally.earlier,
        tally.refused.len(),
        tally.not_attempted
    );
    for (name, reason) in &tally.refused {
        println!("  refused {name}: {reason}");
    }
    let how = match format {
        OutputFormat::Pem => "certificates (chain PEM, NAME.pem per CSR)",
        OutputFormat::Jsonl => "certificates (JSON Lines, certificates-NNNNNN.jsonl per chunk)",
    };
    println!(
        "{how} in {}, manifest {}",
        out.display(),
        Manifest::path(out).display()
    );
}

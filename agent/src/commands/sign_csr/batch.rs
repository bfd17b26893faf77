//! `keyward sign-csr --batch DIR --out DIR`: bulk provisioning. Every CSR file in DIR
//! is signed through the same issuance path as `sign-csr` (`CaIssuer::sign_csr`: the
//! CSR's signature checked, the certificate signed by the CA key and verified), many
//! at once on all cores. Results are recorded in chunks, each one transaction: the
//! chain files in OUT (or, `--output-format jsonl`, one JSON Lines bundle for the
//! chunk), the certificates in one file of `issued/` and the inventory (one write
//! each), the manifest, and
//! one audit record naming every certificate of the chunk; files are synced together,
//! not one fsync each. A bad CSR is refused in the manifest and the
//! batch goes on; SIGINT stops taking new CSRs, records those in flight and exits.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keyward_core::audit::Event;
use keyward_core::fsutil::{self, Replace};
use keyward_core::issuance::{CaIssuer, IssuedCertificate};
use keyward_core::store::{IssuedKind, NewCertificate, Operation, Plan, StateDir};
use keyward_core::{Error, chain_line};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::{JoinHandle, JoinSet};

use super::bundle;
use super::manifest::{Manifest, Outcome};
use super::progress::Progress;
use super::resume::{Job, Tally, Todo, plan};
use crate::backends::Backends;
use crate::cli::OutputFormat;
use crate::commands::audit;
use crate::commands::issue::{issuing_ca, write_delivery};

/// Results recorded per transaction at most.
const CHUNK: usize = 1000;
/// Results wait at most this long before they are recorded.
const RECORD_INTERVAL: Duration = Duration::from_secs(1);
/// CSRs being signed at once, per core.
const IN_FLIGHT_PER_CORE: usize = 8;

/// A CSR signed and not yet recorded.
struct Signed {
    job: Job,
    cert: IssuedCertificate,
}

/// Results gathered since the last record.
#[derive(Default)]
struct Chunk {
    signed: Vec<Signed>,
    refused: Vec<(Job, String)>,
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
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|e| Error::io("cannot catch SIGINT".to_string(), e))?;
    let out = prepare_out(dir, out)?;
    let mut manifest = Manifest::load(&out)?;
    let Todo {
        mut queue,
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
    let limit = std::thread::available_parallelism().map_or(1, usize::from) * IN_FLIGHT_PER_CORE;
    let mut in_flight: JoinSet<(Job, Result<IssuedCertificate, Error>)> = JoinSet::new();
    let mut recorder = Recorder {
        state,
        ca: &ca,
        out: &out,
        manifest,
        tally,
        format,
        next_bundle: bundle::files_in(&out)?.last().map_or(1, |(n, _)| n + 1),
        recording: None,
    };
    let mut last_record = Instant::now();
    let mut interrupted = false;
    loop {
        while !interrupted && in_flight.len() < limit {
            let Some(mut job) = queue.pop_front() else {
                break;
            };
            let ca = ca.clone();
            in_flight.spawn(async move {
                let csr = std::mem::take(&mut job.csr);
                let result = ca.sign_csr(&csr, validity).await;
                (job, result)
            });
        }
        if in_flight.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            _ = sigint.recv(), if !interrupted => {
                interrupted = true;
                eprintln!("interrupted: recording the {} CSRs in flight, then stopping", in_flight.len());
            }
            Some(joined) = in_flight.join_next() => {
                let (job, result) = joined.map_err(|e| Error::State(format!("a signing task failed: {e}")))?;
                progress.advance(result.is_err());
                match result {
                    Ok(cert) => chunk.signed.push(Signed { job, cert }),
                    Err(e) => chunk.refused.push((job, chain_line(&e))),
                }
            }
        }
        let due = chunk.signed.len() + chunk.refused.len() >= CHUNK
            || last_record.elapsed() >= RECORD_INTERVAL;
        // While the chunk before is still being recorded, signing goes on and this
        // chunk grows.
        if due && recorder.idle() {
            recorder.record(std::mem::take(&mut chunk)).await?;
            last_record = Instant::now();
        }
    }
    recorder.record(chunk).await?;
    let mut tally = recorder.finish().await?;
    progress.finish();
    tally.not_attempted = queue.len();
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
    let same = std::fs::canonicalize(dir).map_err(|e| bad(dir, e))?
        == std::fs::canonicalize(&out).map_err(|e| bad(&out, e))?;
    if same {
        return Err(Error::InvalidInput(
            "--out must be another directory than --batch".into(),
        ));
    }
    Ok(out)
}

/// Records the results of a run, one chunk at a time and in order, on the blocking
/// pool while signing goes on.
struct Recorder<'a> {
    state: &'a StateDir,
    ca: &'a CaIssuer,
    out: &'a Path,
    manifest: Manifest,
    tally: Tally,
    format: OutputFormat,
    /// The number of the next bundle file (`jsonl`).
    next_bundle: u32,
    /// The chunk being recorded.
    recording: Option<JoinHandle<Result<(), Error>>>,
}

impl Recorder<'_> {
    /// Whether no chunk is being recorded.
    fn idle(&self) -> bool {
        self.recording.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Records `chunk` once the chunk before it is recorded. Does nothing for an
    /// empty chunk.
    async fn record(&mut self, chunk: Chunk) -> Result<(), Error> {
        if chunk.signed.is_empty() && chunk.refused.is_empty() {
            return Ok(());
        }
        if let Some(previous) = self.recording.take() {
            joined(previous.await)?;
        }
        let (state, ca, out) = (self.state, self.ca, self.out);
        let (manifest, tally) = (&mut self.manifest, &mut self.tally);
        let bundle = (self.format == OutputFormat::Jsonl && !chunk.signed.is_empty()).then(|| {
            self.next_bundle += 1;
            bundle::file_name(self.next_bundle - 1)
        });
        let chain = ca.ca_chain();
        let mut news = Vec::with_capacity(chunk.signed.len());
        let mut listed = Vec::with_capacity(chunk.signed.len());
        let mut lines = Vec::new();
        for Signed { job, cert } in chunk.signed {
            let file = bundle.clone().unwrap_or(job.cert);
            let new = NewCertificate::new(
                IssuedKind::Csr,
                &cert.subject,
                Some(out.join(&file)),
                ca.signer().uri(),
                &cert,
            );
            listed.push(serde_json::json!({
                "serial": cert.serial_hex,
                "subject": cert.subject,
                "csr": job.name,
                "cert": file,
            }));
            if bundle.is_some() {
                lines.push(bundle::Line::new(&job.name, &job.sha256, &cert, &chain));
            }
            let outcome = Outcome::Signed {
                serial: cert.serial_hex,
                cert: file,
            };
            manifest.set(&job.name, &job.sha256, outcome);
            news.push(new);
        }
        for (job, reason) in chunk.refused {
            manifest.set(
                &job.name,
                &job.sha256,
                Outcome::Refused {
                    reason: reason.clone(),
                },
            );
            tally.refused.push((job.name, reason));
        }
        tally.signed += news.len();
        // Named in the pending record too: after a crash, resolve finds them there.
        NewCertificate::share_file(&mut news)?;
        let delivery = match bundle {
            Some(name) => Delivery::Bundle {
                path: out.join(name),
                data: bundle::encode(&lines)?,
            },
            None => Delivery::ChainFiles,
        };
        let manifest = manifest.to_json()?;
        let event = Event::new("certificates_issued")
            .with("kind", IssuedKind::Csr)
            .with("out", out.display().to_string())
            .with("count", news.len())
            .with("certificates", listed)
            .key("signing_key", ca.signer().uri());
        let (state, ca, out) = (state.clone(), ca.clone(), out.to_path_buf());
        let handle = tokio::runtime::Handle::current();
        self.recording = Some(tokio::task::spawn_blocking(move || {
            handle.block_on(record_chunk(
                &state, &ca, &out, news, delivery, &manifest, event,
            ))
        }));
        Ok(())
    }

    /// Waits for the last chunk; returns the tally.
    async fn finish(mut self) -> Result<Tally, Error> {
        if let Some(last) = self.recording.take() {
            joined(last.await)?;
        }
        Ok(self.tally)
    }
}

/// How the certificates of a chunk are delivered to OUT.
enum Delivery {
    /// Each to its own chain file, the `out` of its record.
    ChainFiles,
    /// All in one JSON Lines file, written in one step (never replacing a file).
    Bundle { path: PathBuf, data: Vec<u8> },
}

/// One transaction: the certificates delivered to `out`, then recorded in the
/// inventory, the manifest, and the audit record `event`; or, with nothing signed, the
/// manifest alone.
async fn record_chunk(
    state: &StateDir,
    ca: &CaIssuer,
    out: &Path,
    news: Vec<NewCertificate>,
    delivery: Delivery,
    manifest: &[u8],
    event: Event,
) -> Result<(), Error> {
    let manifest_path = Manifest::path(out);
    if news.is_empty() {
        return fsutil::write_atomic(
            &manifest_path,
            manifest,
            fsutil::PUBLIC_FILE_MODE,
            Replace::Allow,
        );
    }
    let op = Operation {
        name: "sign-csr --batch".into(),
        detail: format!("{} certificates to {}", news.len(), out.display()),
        plan: Plan::Certificates {
            certificates: news.clone(),
        },
    };
    let chain = ca.ca_chain();
    state
        .transaction(op, &|e| audit::record(state, e), async |tx| {
            tx.defer_sync();
            match &delivery {
                Delivery::ChainFiles => {
                    for new in &news {
                        write_delivery(tx, new, &chain)?;
                    }
                }
                Delivery::Bundle { path, data } => {
                    tx.write(path, data, fsutil::PUBLIC_FILE_MODE, Replace::Refuse)?;
                }
            }
            tx.record_issued_all(&news)?;
            tx.write(
                &manifest_path,
                manifest,
                fsutil::PUBLIC_FILE_MODE,
                Replace::Allow,
            )?;
            tx.audit(event);
            Ok(())
        })
        .await
}

/// The result of a recording task.
fn joined(result: Result<Result<(), Error>, tokio::task::JoinError>) -> Result<(), Error> {
    result.map_err(|e| Error::State(format!("recording the batch failed: {e}")))?
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

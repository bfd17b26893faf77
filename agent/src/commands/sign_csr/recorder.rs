//! The recording side of `sign-csr --batch`: results are recorded one chunk at a time
//! and in order, each chunk one transaction on the blocking pool while signing goes
//! on (see `batch.rs`). What a run keeps across chunks (the manifest, the inventory's
//! serials) travels with the recording task and comes back when it ends; the run's end
//! writes the whole manifest ([`Recorder::finish`]).

use std::path::{Path, PathBuf};

use keyward_core::Error;
use keyward_core::KeyUri;
use keyward_core::audit::Event;
use keyward_core::fsutil::{self, Replace};
use keyward_core::issuance::CaIssuer;
use keyward_core::store::{IssuedKind, NewCertificate, Operation, Plan, StateDir, TakenSerials};
use serde::Serialize;
use tokio::task::JoinHandle;

use super::bundle;
use super::manifest::{Manifest, Outcome};
use super::resume::{Job, Tally};
use crate::cli::OutputFormat;
use crate::commands::audit;

/// A CSR signed and not yet recorded, with what recording it takes.
pub struct Signed {
    /// The CSR file it was signed for.
    pub job: Job,
    /// Its inventory record to be (its `out` set when the chunk is recorded).
    pub new: NewCertificate,
    /// Its serial, upper-case hex.
    pub serial: String,
    /// Its subject.
    pub subject: String,
    /// `pem`: its chain file's content; `jsonl`: its bundle line.
    pub output: Vec<u8>,
}

/// Results gathered since the last record.
#[derive(Default)]
pub struct Chunk {
    /// Signed, in the order they finished.
    pub signed: Vec<Signed>,
    /// Refused, with the reason.
    pub refused: Vec<(Job, String)>,
}

/// Records the results of a run, one chunk at a time and in order, on the blocking
/// pool while signing goes on.
pub struct Recorder {
    state: StateDir,
    ca: CaIssuer,
    out: PathBuf,
    /// What the run keeps across chunks; with the recording task while one runs.
    books: Option<Books>,
    tally: Tally,
    format: OutputFormat,
    /// The number of the next bundle file (`jsonl`).
    next_bundle: u32,
    /// The chunk being recorded.
    recording: Option<JoinHandle<Result<Books, Error>>>,
}

/// What a run keeps across its chunks.
struct Books {
    manifest: Manifest,
    /// The inventory's serials, not read again per chunk.
    taken: TakenSerials,
}

impl Recorder {
    /// The recorder of a run into `out` that starts from `manifest` and `tally`.
    pub fn new(
        state: StateDir,
        ca: CaIssuer,
        out: PathBuf,
        manifest: Manifest,
        tally: Tally,
        format: OutputFormat,
    ) -> Result<Recorder, Error> {
        let next_bundle = bundle::next_in(&out)?;
        Ok(Recorder {
            state,
            ca,
            out,
            books: Some(Books {
                manifest,
                taken: TakenSerials::new(),
            }),
            tally,
            format,
            next_bundle,
            recording: None,
        })
    }

    /// Whether no chunk is being recorded.
    pub fn idle(&self) -> bool {
        self.recording.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the chunk being recorded, if any; returns the books.
    async fn books(&mut self) -> Result<Books, Error> {
        if let Some(previous) = self.recording.take() {
            self.books = Some(joined(previous.await)?);
        }
        self.books
            .take()
            .ok_or_else(|| Error::State("an earlier chunk of the batch was not recorded".into()))
    }

    /// Records `chunk` once the chunk before it is recorded. Does nothing for an
    /// empty chunk. Only the tally is kept here: the chunk's records are made on the
    /// blocking pool, so the signing loop goes back to starting CSRs at once.
    pub async fn record(&mut self, chunk: Chunk) -> Result<(), Error> {
        if chunk.signed.is_empty() && chunk.refused.is_empty() {
            return Ok(());
        }
        let mut books = self.books().await?;
        let bundle = (self.format == OutputFormat::Jsonl && !chunk.signed.is_empty()).then(|| {
            self.next_bundle += 1;
            bundle::file_name(self.next_bundle - 1)
        });
        self.tally.signed += chunk.signed.len();
        let refused = chunk.refused.iter();
        self.tally
            .refused
            .extend(refused.map(|(job, reason)| (job.name.clone(), reason.clone())));
        let (state, out) = (self.state.clone(), self.out.clone());
        let ca_key = self.ca.signer().uri().clone();
        let handle = tokio::runtime::Handle::current();
        self.recording = Some(tokio::task::spawn_blocking(move || {
            let (news, delivery, event) = prepare(chunk, bundle, &out, &ca_key, &mut books)?;
            handle
                .block_on(record_chunk(
                    &state, &out, news, delivery, &mut books, event,
                ))
                .map(|()| books)
        }));
        Ok(())
    }

    /// Waits for the last chunk, then writes the whole manifest (its parts folded in);
    /// returns the tally. The books are freed on a thread of their own.
    pub async fn finish(mut self) -> Result<Tally, Error> {
        let mut books = self.books().await?;
        let out = self.out;
        joined(
            tokio::task::spawn_blocking(move || {
                let compacted = books.manifest.compact(&out);
                // Freeing a manifest of ten thousand entries takes milliseconds of one
                // core; the run does not wait for it (nor fails when no thread can be
                // made: the books are then freed here).
                let _ = std::thread::Builder::new().spawn(move || drop(books));
                compacted
            })
            .await,
        )?;
        Ok(self.tally)
    }
}

/// One certificate as the chunk's audit record lists it.
#[derive(Serialize)]
struct Listed {
    serial: String,
    subject: String,
    csr: String,
    cert: String,
}

/// What recording `chunk` takes: its inventory records to be, its delivery (the
/// bundle file `bundle`, or a chain file each) and its audit record; the manifest in
/// `books` is told every outcome.
fn prepare(
    chunk: Chunk,
    bundle: Option<String>,
    out: &Path,
    ca_key: &KeyUri,
    books: &mut Books,
) -> Result<(Vec<NewCertificate>, Delivery, Event), Error> {
    let mut news = Vec::with_capacity(chunk.signed.len());
    let mut listed = Vec::with_capacity(chunk.signed.len());
    let mut outputs = Vec::with_capacity(chunk.signed.len());
    // Every certificate of a bundle goes to the same file.
    let bundle_path = bundle.as_ref().map(|name| out.join(name));
    for signed in chunk.signed {
        let Signed {
            job,
            mut new,
            serial,
            subject,
            output,
        } = signed;
        let file = bundle.clone().unwrap_or(job.cert);
        let path = bundle_path.clone().unwrap_or_else(|| out.join(&file));
        new.out = Some(path.clone());
        let outcome = Outcome::Signed {
            serial: serial.clone(),
            cert: file.clone(),
        };
        books.manifest.set(&job.name, &job.sha256, outcome);
        listed.push(Listed {
            serial,
            subject,
            csr: job.name,
            cert: file,
        });
        outputs.push((path, output));
        news.push(new);
    }
    for (job, reason) in chunk.refused {
        books
            .manifest
            .set(&job.name, &job.sha256, Outcome::Refused { reason });
    }
    // Named in the pending record too: after a crash, resolve finds them there.
    NewCertificate::share_file(&mut news)?;
    let delivery = match bundle_path {
        Some(path) => Delivery::Bundle {
            path,
            data: outputs
                .into_iter()
                .map(|(_, line)| line)
                .collect::<Vec<_>>()
                .concat(),
        },
        None => Delivery::ChainFiles(outputs),
    };
    let event = Event::new("certificates_issued")
        .with("kind", IssuedKind::Csr)
        .with("out", out.display().to_string())
        .with("count", news.len())
        .with("certificates", listed)
        .key("signing_key", ca_key);
    Ok((news, delivery, event))
}

/// How the certificates of a chunk are delivered to OUT.
enum Delivery {
    /// Each to its own chain file: path and content.
    ChainFiles(Vec<(PathBuf, Vec<u8>)>),
    /// All in one JSON Lines file, written in one step (never replacing a file).
    Bundle { path: PathBuf, data: Vec<u8> },
}

/// One transaction: the certificates delivered to `out`, then recorded in the
/// inventory, a part of the manifest, and the audit record `event`; or, with nothing
/// signed, the manifest's part alone.
async fn record_chunk(
    state: &StateDir,
    out: &Path,
    news: Vec<NewCertificate>,
    delivery: Delivery,
    books: &mut Books,
    event: Event,
) -> Result<(), Error> {
    let part = books.manifest.next_part(out)?;
    if news.is_empty() {
        return match part {
            Some((path, json)) => {
                fsutil::write_atomic(&path, &json, fsutil::PUBLIC_FILE_MODE, Replace::Refuse)
            }
            None => Ok(()),
        };
    }
    let op = Operation {
        name: "sign-csr --batch".into(),
        detail: format!("{} certificates to {}", news.len(), out.display()),
        plan: Plan::Certificates { certificates: news },
    };
    // The certificates are recorded from the plan, not from a copy of it.
    let Plan::Certificates { certificates: news } = &op.plan else {
        unreachable!("the plan was made above")
    };
    let taken = &mut books.taken;
    state
        .transaction(&op, &|e| audit::record(state, e), async |tx| {
            tx.defer_sync();
            match &delivery {
                Delivery::ChainFiles(files) => {
                    for (path, chain) in files {
                        tx.write(path, chain, fsutil::PUBLIC_FILE_MODE, Replace::Allow)?;
                    }
                }
                Delivery::Bundle { path, data } => {
                    tx.write(path, data, fsutil::PUBLIC_FILE_MODE, Replace::Refuse)?;
                }
            }
            tx.record_issued_all(news, taken)?;
            if let Some((path, json)) = &part {
                tx.write(path, json, fsutil::PUBLIC_FILE_MODE, Replace::Refuse)?;
            }
            tx.audit(event);
            Ok(())
        })
        .await
}

/// The result of a recording task.
fn joined<T>(result: Result<Result<T, Error>, tokio::task::JoinError>) -> Result<T, Error> {
    result.map_err(|e| Error::State(format!("recording the batch failed: {e}")))?
}

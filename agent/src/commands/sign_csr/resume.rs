//! What a `sign-csr --batch` run has left to do: the CSR files of the batch directory
//! that the manifest does not list as signed with their current content. A certificate
//! an interrupted run delivered and recorded but did not get into the manifest (killed
//! mid-transaction, then settled by `keyward pending resolve`) is taken into the
//! manifest rather than signed twice, whether it went to its own chain file or into a
//! JSON Lines bundle. A CSR file nothing was signed for yet is read and hashed by the
//! task that signs it, on all cores, rather than here before signing starts.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};

use keyward_core::Error;
use keyward_core::check::{pem_to_ders, summarize};
use keyward_core::store::{StateDir, sha256_hex};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use super::bundle;
use super::manifest::{Manifest, Outcome};
use crate::cli::OutputFormat;

/// A CSR file to sign.
pub struct Job {
    /// Its file name in DIR (the manifest's key).
    pub name: String,
    /// Its path.
    path: PathBuf,
    /// SHA-256 of its content (empty until [`Job::load`]).
    pub sha256: String,
    /// Its chain file's name in OUT (`--output-format pem`).
    pub cert: String,
    /// Its content (empty until [`Job::load`]).
    pub csr: Vec<u8>,
}

impl Job {
    /// Reads the file and hashes it, unless that was done; the reason it cannot.
    pub fn load(&mut self) -> Result<(), String> {
        if !self.sha256.is_empty() {
            return Ok(());
        }
        let csr = std::fs::read(&self.path).map_err(|e| format!("cannot read it: {e}"))?;
        self.sha256 = sha256_hex(&csr);
        self.csr = csr;
        Ok(())
    }
}

/// What the run did, for the summary.
#[derive(Default)]
pub struct Tally {
    /// CSR files in DIR.
    pub files: usize,
    /// Signed by an earlier run.
    pub earlier: usize,
    /// Signed by this run.
    pub signed: usize,
    /// CSR file name and reason.
    pub refused: Vec<(String, String)>,
    /// Left for the next run (interrupted).
    pub not_attempted: usize,
}

/// What a run has to do.
pub struct Todo {
    /// The CSRs to sign, in name order.
    pub queue: VecDeque<Job>,
    /// The tally before signing (files found, signed by an earlier run).
    pub tally: Tally,
    /// CSRs refused before signing, with the reason.
    pub refused: Vec<(Job, String)>,
}

/// The CSR files of `dir` (regular files, not hidden, by name) to sign into `out`.
/// A file is refused before signing when it cannot be read or (`pem`) another file has
/// its output name. Certificates found delivered and recorded are added to
/// `manifest`, which the run writes (with its first chunk, or at its end).
pub fn plan(
    state: &StateDir,
    dir: &Path,
    out: &Path,
    manifest: &mut Manifest,
    format: OutputFormat,
) -> Result<Todo, Error> {
    let files = csr_files(dir)?;
    let mut tally = Tally {
        files: files.len(),
        ..Tally::default()
    };
    let mut delivered = Delivered {
        state,
        out,
        recorded: None,
        bundled: None,
        in_out: None,
    };
    let mut queue = VecDeque::new();
    let mut refused = Vec::new();
    let mut outputs: HashMap<String, String> = HashMap::new();
    for (name, path) in files {
        let stem = Path::new(&name).file_stem().unwrap_or_default();
        let mut job = Job {
            cert: format!("{}.pem", stem.to_string_lossy()),
            name,
            path,
            sha256: String::new(),
            csr: Vec::new(),
        };
        if format == OutputFormat::Pem
            && let Some(first) = outputs.insert(job.cert.clone(), job.name.clone())
        {
            let reason = format!("its output {} is already {first}'s", job.cert);
            refused.push((job, reason));
            continue;
        }
        let listed = manifest.lists(&job.name);
        let candidates = if listed {
            None
        } else {
            Some(delivered.candidates(&job)?)
        };
        if candidates.as_ref().is_some_and(Vec::is_empty) {
            // Never signed into OUT: read where it is signed.
            queue.push_back(job);
            continue;
        }
        if let Err(reason) = job.load() {
            refused.push((job, reason));
            continue;
        }
        if manifest.is_signed(&job.name, &job.sha256) {
            tally.earlier += 1;
            continue;
        }
        let candidates = match candidates {
            Some(c) => c,
            None => delivered.candidates(&job)?,
        };
        if let Some((serial, cert)) = delivered.find(&job, candidates)? {
            manifest.set(&job.name, &job.sha256, Outcome::Signed { serial, cert });
            tally.earlier += 1;
            continue;
        }
        queue.push_back(job);
    }
    Ok(Todo {
        queue,
        tally,
        refused,
    })
}

/// The regular, not hidden files of `dir` with their names, sorted.
fn csr_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?;
    let mut files: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter(|e| match e.file_type() {
            // A symbolic link counts as what it points at.
            Ok(t) if t.is_symlink() => std::fs::metadata(e.path()).is_ok_and(|m| m.is_file()),
            Ok(t) => t.is_file(),
            Err(_) => false,
        })
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(name, _)| !name.starts_with('.'))
        .collect();
    files.sort();
    Ok(files)
}

/// Certificates (DER) found in OUT's bundles, by CSR file name, with their bundle file.
type Bundled = HashMap<String, Vec<(PathBuf, Vec<u8>)>>;

/// Certificates an earlier run delivered to OUT, looked up on first need.
struct Delivered<'a> {
    state: &'a StateDir,
    out: &'a Path,
    /// (serial, out path) of every certificate in the inventory.
    recorded: Option<HashSet<(String, PathBuf)>>,
    /// CSR file name → (bundle file, certificate DER) of every line of OUT's bundles.
    bundled: Option<Bundled>,
    /// The names of OUT's files: a chain file is read only when it is there.
    in_out: Option<HashSet<String>>,
}

/// Certificates (DER) in OUT that may be for a CSR, with the file holding each.
type Candidates = Vec<(PathBuf, Vec<u8>)>;

impl Delivered<'_> {
    /// The certificates in OUT that may be `job`'s: its chain file's, and those of
    /// bundle lines naming its CSR file.
    fn candidates(&mut self, job: &Job) -> Result<Candidates, Error> {
        let chain_file = self.out.join(&job.cert);
        let in_out = match &mut self.in_out {
            Some(names) => names,
            None => self.in_out.insert(file_names(self.out)?),
        };
        let mut candidates = Vec::new();
        if in_out.contains(&job.cert)
            && let Some(leaf) = first_certificate(&chain_file)
        {
            candidates.push((chain_file, leaf));
        }
        let bundled = match &mut self.bundled {
            Some(b) => b,
            None => self.bundled.insert(bundled_in(self.out)?),
        };
        candidates.extend(bundled.remove(&job.name).unwrap_or_default());
        Ok(candidates)
    }

    /// (serial, output file name) of a certificate among `candidates` that is for
    /// `job`'s CSR (loaded) and recorded in the inventory as delivered there.
    fn find(
        &mut self,
        job: &Job,
        candidates: Candidates,
    ) -> Result<Option<(String, String)>, Error> {
        if candidates.is_empty() {
            return Ok(None);
        }
        let recorded = match &mut self.recorded {
            Some(r) => r,
            None => self.recorded.insert(recorded_serials(self.state)?),
        };
        Ok(candidates.into_iter().find_map(|(path, leaf)| {
            let serial = delivered_for(&job.csr, &leaf, &path, recorded)?;
            let name = path.file_name()?.to_string_lossy().into_owned();
            Some((serial, name))
        }))
    }
}

/// The names of the entries of `dir`.
fn file_names(dir: &Path) -> Result<HashSet<String>, Error> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?;
    Ok(entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect())
}

/// The first certificate of the PEM file at `path`.
fn first_certificate(path: &Path) -> Option<Vec<u8>> {
    pem_to_ders(&std::fs::read(path).ok()?)
        .ok()?
        .into_iter()
        .next()
}

/// Every line of the bundles in `out`, by CSR file name.
fn bundled_in(out: &Path) -> Result<Bundled, Error> {
    let mut by_csr = Bundled::new();
    for (_, path) in bundle::files_in(out)? {
        for line in bundle::read(&path)? {
            if let Some(leaf) = line.leaf_der() {
                by_csr
                    .entry(line.csr)
                    .or_default()
                    .push((path.clone(), leaf));
            }
        }
    }
    Ok(by_csr)
}

/// (serial, out path) of every certificate in the inventory.
fn recorded_serials(state: &StateDir) -> Result<HashSet<(String, PathBuf)>, Error> {
    Ok(state
        .inventory()?
        .into_iter()
        .filter_map(|r| Some((r.serial_hex, r.out?)))
        .collect())
}

/// The serial of the certificate `leaf` found at `delivered` when the inventory
/// records it as delivered there and it carries the key of `csr`.
fn delivered_for(
    csr: &[u8],
    leaf: &[u8],
    delivered: &Path,
    recorded: &HashSet<(String, PathBuf)>,
) -> Option<String> {
    let serial = summarize(leaf).ok()?.serial_hex;
    if !recorded.contains(&(serial.clone(), delivered.to_path_buf())) {
        return None;
    }
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let csr_der = match pem::parse(csr) {
        Ok(block) => block.into_contents(),
        Err(_) => csr.to_vec(),
    };
    let (_, req) = X509CertificationRequest::from_der(&csr_der).ok()?;
    (req.certification_request_info.subject_pki.raw == cert.public_key().raw).then_some(serial)
}

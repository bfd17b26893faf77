//! [`FileSource`]: credentials from the PEM files `keyward issue` (cert.pem, key.pem,
//! ca.pem) or `keyward fetch` (cert.pem, key.pem, bundle.pem, and the CRLs in crl.pem)
//! write, reloaded when they change.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use keyward_core::Error;
use zeroize::Zeroizing;

use crate::credentials::{CredentialCell, Credentials};
use crate::revocation::RevocationLists;

/// How often [`FileSource::watch`] looks at the files' modification times.
pub const DEFAULT_POLL: Duration = Duration::from_secs(1);

/// What identifies one version of a file: its modification time and length.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
}

fn read(path: &Path) -> Result<Zeroizing<Vec<u8>>, Error> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))
}

/// The credential files, and the CRL file when there is one to watch.
#[derive(Debug, Clone)]
struct Paths {
    cert: PathBuf,
    key: PathBuf,
    bundle: PathBuf,
    crls: Option<PathBuf>,
}

impl Paths {
    fn stamps(&self) -> [Stamp; 4] {
        [
            stamp(&self.cert),
            stamp(&self.key),
            stamp(&self.bundle),
            self.crls.as_deref().and_then(stamp),
        ]
    }

    fn load(&self) -> Result<(Credentials, RevocationLists), Error> {
        let (cert, key, bundle) = (read(&self.cert)?, read(&self.key)?, read(&self.bundle)?);
        let creds = Credentials::from_pem(&cert, &key, &bundle).map_err(|e| match e {
            Error::InvalidInput(m) => Error::InvalidInput(format!(
                "{} / {} / {}: {m}",
                self.cert.display(),
                self.key.display(),
                self.bundle.display()
            )),
            other => other,
        })?;
        // A missing CRL file (written by an older `keyward fetch`) means no CRLs.
        let crls = match self.crls.as_deref().filter(|p| p.exists()) {
            None => RevocationLists::empty(),
            Some(path) => RevocationLists::from_pem(&read(path)?).map_err(|e| match e {
                Error::InvalidInput(m) => Error::InvalidInput(format!("{}: {m}", path.display())),
                other => other,
            })?,
        };
        Ok((creds, crls))
    }
}

/// Credentials read from files and reloaded by a watcher thread whenever a file's
/// modification time or size changes. A reload that fails (a half-written set, a key
/// that does not match) keeps the previous credentials and logs why; the thread stops
/// when the source is dropped.
pub struct FileSource {
    cell: CredentialCell,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("cell", &self.cell)
            .finish_non_exhaustive()
    }
}

impl FileSource {
    /// Loads `cert_pem` (chain, leaf first), `key_pem` and `bundle_pem` (ca.pem or
    /// bundle.pem) and watches them, polling every second. Fails when the first load
    /// fails.
    pub fn watch(
        cert_pem: impl AsRef<Path>,
        key_pem: impl AsRef<Path>,
        bundle_pem: impl AsRef<Path>,
    ) -> Result<Self, Error> {
        Self::watch_every(cert_pem, key_pem, bundle_pem, DEFAULT_POLL)
    }

    /// [`FileSource::watch`] with another polling interval.
    pub fn watch_every(
        cert_pem: impl AsRef<Path>,
        key_pem: impl AsRef<Path>,
        bundle_pem: impl AsRef<Path>,
        poll: Duration,
    ) -> Result<Self, Error> {
        Self::start(
            Paths {
                cert: cert_pem.as_ref().to_path_buf(),
                key: key_pem.as_ref().to_path_buf(),
                bundle: bundle_pem.as_ref().to_path_buf(),
                crls: None,
            },
            poll,
        )
    }

    /// Loads what `keyward fetch --out OUT` writes (OUT/cert.pem, key.pem, bundle.pem,
    /// and the CRLs peers are checked against in OUT/crl.pem) and watches it, polling
    /// every `poll`. Fails when the first load fails.
    pub fn watch_fetched(out: impl AsRef<Path>, poll: Duration) -> Result<Self, Error> {
        let out = out.as_ref();
        Self::start(
            Paths {
                cert: out.join("cert.pem"),
                key: out.join("key.pem"),
                bundle: out.join("bundle.pem"),
                crls: Some(out.join("crl.pem")),
            },
            poll,
        )
    }

    fn start(paths: Paths, poll: Duration) -> Result<Self, Error> {
        let mut seen = paths.stamps();
        let (creds, crls) = paths.load()?;
        let cell = CredentialCell::new(creds);
        cell.store_crls(crls);
        let (stop, stopped) = mpsc::channel::<()>();
        let task_cell = cell.clone();
        let thread = std::thread::Builder::new()
            .name("keyward-rustls-files".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(poll) {
                    let now = paths.stamps();
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    match paths.load() {
                        Ok((creds, crls)) => {
                            tracing::info!(spiffe_id = %creds.spiffe_id(), cert = %paths.cert.display(), crls = crls.len(), "credential files reloaded");
                            task_cell.store(creds);
                            task_cell.store_crls(crls);
                        }
                        Err(e) => tracing::warn!(
                            error = %keyward_core::chain_line(&e),
                            "credential files changed but do not load; keeping the current credentials"
                        ),
                    }
                }
            })
            .map_err(|e| Error::io("cannot start the credential file watcher thread", e))?;
        Ok(FileSource {
            cell,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The cell this source keeps current.
    pub fn cell(&self) -> &CredentialCell {
        &self.cell
    }
}

impl AsRef<CredentialCell> for FileSource {
    fn as_ref(&self) -> &CredentialCell {
        &self.cell
    }
}

impl Drop for FileSource {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

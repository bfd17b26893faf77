//! The state directory: CA material, the inventory of issued certificates, and records
//! of operations in progress, all written crash-safely.
//!
//! Layout (directories 0700):
//! ```text
//! STATE/.lock                 advisory lock: one writer at a time
//! STATE/ca/ca.json            manifest: key URIs and SHA-256 of each CA file (the commit point)
//! STATE/ca/root.pem           the trust anchor(s)
//! STATE/ca/intermediate.pem   the issuing intermediate, when there is one
//! STATE/issued/SERIAL.pem     every certificate keyward issued
//! STATE/inventory.json        one record per issued certificate
//! STATE/pending/*.json        operations started and not finished (reported on the next run)
//! STATE/revocations.json      revoked certificates and the last CRL number
//! STATE/crl.der, crl.pem      the CRL signed by the issuing CA
//! ```
//! Files are written before the manifest or inventory that names them, so a crash leaves
//! at worst an unreferenced file, which [`StateDir::problems`] reports.

mod inventory;
mod pending;
mod revocation;

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::{self, Replace};
use crate::{Error, KeyUri};

pub use inventory::{IssuedKind, IssuedRecord};
pub use pending::{Pending, PendingRecord};
pub use revocation::RevocationList;

const MANIFEST: &str = "ca/ca.json";
const ROOT_PEM: &str = "ca/root.pem";
const INTERMEDIATE_PEM: &str = "ca/intermediate.pem";

/// A keyward state directory (not touched on disk until a method needs it).
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

/// Proof that this process holds the state directory's write lock; released on drop.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// The CA as recorded in the state directory.
#[derive(Clone, Debug)]
pub struct CaState {
    /// The trust anchors (DER): the root keyward created, or the upstream root(s).
    pub roots: Vec<Vec<u8>>,
    /// The root's key when keyward holds it (`None` for an upstream root).
    pub root_key: Option<KeyUri>,
    /// The issuing intermediate (DER) and its key, when there is one.
    pub intermediate: Option<(Vec<u8>, KeyUri)>,
    /// Upstream CA certificates between the intermediate and the root, nearest first
    /// (only when an upstream authority with its own intermediates signed ours).
    pub upstream_intermediates: Vec<Vec<u8>>,
}

/// The CA certificate that signs new certificates, with its key and the chain above it.
#[derive(Clone, Debug)]
pub struct IssuingCa {
    /// The issuing certificate (DER).
    pub cert_der: Vec<u8>,
    /// Its key.
    pub key: KeyUri,
    /// The certificates above it, issuer first, up to and including the root (empty
    /// when the issuing certificate is the root).
    pub chain_der: Vec<Vec<u8>>,
}

impl CaState {
    /// The certificate and key that sign new certificates: the intermediate when there
    /// is one, else the root.
    pub fn issuing(&self) -> Result<IssuingCa, Error> {
        match (&self.intermediate, &self.root_key) {
            (Some((cert, key)), _) => Ok(IssuingCa {
                cert_der: cert.clone(),
                key: key.clone(),
                chain_der: self
                    .upstream_intermediates
                    .iter()
                    .chain(&self.roots)
                    .cloned()
                    .collect(),
            }),
            (None, Some(key)) => {
                let root = self.roots.first().cloned().ok_or_else(|| {
                    Error::State("the CA manifest names no root certificate".into())
                })?;
                Ok(IssuingCa {
                    cert_der: root,
                    key: key.clone(),
                    chain_der: Vec::new(),
                })
            }
            (None, None) => Err(Error::State(
                "the CA has an upstream root but no intermediate to issue with".into(),
            )),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    version: u32,
    root: CertEntry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    intermediate: Option<CertEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertEntry {
    file: String,
    sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<KeyUri>,
}

impl StateDir {
    /// A handle on the state directory at `root`; nothing is read or created yet.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Whether the directory exists.
    pub fn exists(&self) -> bool {
        self.root.is_dir()
    }

    /// Creates the directory (0700) if needed and takes the write lock.
    pub fn create_and_lock(&self) -> Result<StateLock, Error> {
        for sub in ["ca", "issued", "pending"] {
            fsutil::create_private_dir(&self.root.join(sub))?;
        }
        self.lock()
    }

    /// Takes the write lock on an existing directory, waiting for another keyward
    /// process to finish. Fails (changing nothing) if the directory does not exist.
    pub fn lock(&self) -> Result<StateLock, Error> {
        if !self.exists() {
            return Err(Error::State(format!(
                "no state directory at {} (run `keyward ca init` first)",
                self.root.display()
            )));
        }
        let path = self.root.join(".lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        file.lock()
            .map_err(|e| Error::io(format!("cannot lock {}", path.display()), e))?;
        // Holding the lock, no other keyward writer is mid-write here: what an earlier
        // crash left half-written goes now (the real files were never touched by it).
        for tmp in fsutil::stale_temporaries(&self.root) {
            match fs::remove_file(&tmp) {
                Ok(()) => {
                    tracing::warn!(file = %tmp.display(), "removed a temporary file left by an interrupted write")
                }
                Err(e) => {
                    tracing::warn!(file = %tmp.display(), error = %e, "cannot remove a temporary file left by an interrupted write")
                }
            }
        }
        Ok(StateLock { _file: file })
    }

    /// The CA, or `None` when none has been created.
    pub fn ca(&self) -> Result<Option<CaState>, Error> {
        let Some(m) = self.read_manifest()? else {
            return Ok(None);
        };
        let roots = crate::check::pem_to_ders(&self.read_checked(&m.root)?)?;
        let root_key = m.root.key.clone();
        let mut upstream_intermediates = Vec::new();
        let intermediate = match &m.intermediate {
            None => None,
            Some(e) => {
                let mut ders = crate::check::pem_to_ders(&self.read_checked(e)?)?.into_iter();
                let key = e.key.clone().ok_or_else(|| {
                    Error::State("the CA manifest names no key for the intermediate".into())
                })?;
                let first = ders.next().unwrap_or_default();
                upstream_intermediates.extend(ders);
                Some((first, key))
            }
        };
        Ok(Some(CaState {
            roots,
            root_key,
            intermediate,
            upstream_intermediates,
        }))
    }

    /// Like [`StateDir::ca`], but a missing CA is an error that says what to run.
    pub fn require_ca(&self) -> Result<CaState, Error> {
        self.ca()?.ok_or_else(|| {
            Error::State(format!(
                "no CA in {} (run `keyward ca init --key URI` first)",
                self.root.display()
            ))
        })
    }

    /// Records a new root CA (or upstream roots when `key` is `None`). Refuses to
    /// replace an existing CA.
    pub fn install_root(
        &self,
        _lock: &StateLock,
        roots_der: &[Vec<u8>],
        key: Option<&KeyUri>,
    ) -> Result<(), Error> {
        if self.read_manifest()?.is_some() {
            return Err(Error::State(format!(
                "a CA already exists in {}; keyward never replaces a CA",
                self.root.display()
            )));
        }
        let root = self.write_cert_file(ROOT_PEM, roots_der)?;
        let manifest = Manifest {
            version: 1,
            root: CertEntry {
                key: key.cloned(),
                ..root
            },
            intermediate: None,
        };
        self.write_manifest(&manifest)
    }

    /// Records the issuing intermediate under the existing root. Refuses to replace one.
    pub fn install_intermediate(
        &self,
        _lock: &StateLock,
        cert_der: &[u8],
        key: &KeyUri,
    ) -> Result<(), Error> {
        let mut m = self.read_manifest()?.ok_or_else(|| {
            Error::State(format!(
                "no CA in {} (run `keyward ca init` first)",
                self.root.display()
            ))
        })?;
        if m.intermediate.is_some() {
            return Err(Error::State(format!(
                "an intermediate CA already exists in {}; keyward never replaces it from the CLI",
                self.root.display()
            )));
        }
        let entry = self.write_cert_file(INTERMEDIATE_PEM, &[cert_der.to_vec()])?;
        m.intermediate = Some(CertEntry {
            key: Some(key.clone()),
            ..entry
        });
        self.write_manifest(&m)
    }

    /// Records an intermediate signed by an upstream authority, with the upstream chain
    /// above it (nearest first, the root last); keyward holds no root key then.
    /// Refuses an existing CA.
    pub fn install_upstream(
        &self,
        _lock: &StateLock,
        intermediate_der: &[u8],
        upstream_chain_der: &[Vec<u8>],
        key: &KeyUri,
    ) -> Result<(), Error> {
        if self.read_manifest()?.is_some() {
            return Err(Error::State(format!(
                "a CA already exists in {}; keyward never replaces a CA",
                self.root.display()
            )));
        }
        let (root_der, between) = upstream_chain_der
            .split_last()
            .ok_or_else(|| Error::InvalidInput("the upstream chain has no root".into()))?;
        let root = self.write_cert_file(ROOT_PEM, std::slice::from_ref(root_der))?;
        let mut inter_file = vec![intermediate_der.to_vec()];
        inter_file.extend(between.iter().cloned());
        let inter = self.write_cert_file(INTERMEDIATE_PEM, &inter_file)?;
        self.write_manifest(&Manifest {
            version: 1,
            root,
            intermediate: Some(CertEntry {
                key: Some(key.clone()),
                ..inter
            }),
        })
    }

    fn write_cert_file(&self, rel: &str, ders: &[Vec<u8>]) -> Result<CertEntry, Error> {
        let path = self.root.join(rel);
        fsutil::create_private_dir(path.parent().unwrap_or(&self.root))?;
        let pem = crate::check::ders_to_pem(ders);
        fsutil::write_atomic(
            &path,
            pem.as_bytes(),
            fsutil::PUBLIC_FILE_MODE,
            Replace::Allow,
        )?;
        Ok(CertEntry {
            file: rel.to_string(),
            sha256: sha256_hex(pem.as_bytes()),
            key: None,
        })
    }

    fn read_manifest(&self) -> Result<Option<Manifest>, Error> {
        let path = self.root.join(MANIFEST);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
        };
        serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| Error::State(format!("{} is corrupt: {e}", path.display())))
    }

    fn write_manifest(&self, m: &Manifest) -> Result<(), Error> {
        let json = serde_json::to_vec_pretty(m).expect("manifest serializes");
        fsutil::write_atomic(
            &self.root.join(MANIFEST),
            &json,
            fsutil::PUBLIC_FILE_MODE,
            Replace::Allow,
        )
    }

    /// Reads a file named by the manifest and checks it is the one the manifest recorded.
    fn read_checked(&self, e: &CertEntry) -> Result<Vec<u8>, Error> {
        let path = self.root.join(&e.file);
        let data = fs::read(&path)
            .map_err(|err| Error::io(format!("cannot read {}", path.display()), err))?;
        if sha256_hex(&data) != e.sha256 {
            return Err(Error::State(format!(
                "{} does not match the CA manifest (changed or truncated since it was written)",
                path.display()
            )));
        }
        Ok(data)
    }

    /// Everything wrong with the directory that a person should hear about: unfinished
    /// operations, CA files that do not match the manifest, inventory entries whose
    /// certificate file is missing or altered, and certificate files no record names.
    pub fn problems(&self) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        if !self.exists() {
            return Ok(out);
        }
        for p in self.unfinished()? {
            out.push(p.describe());
        }
        if let Err(e) = self.ca() {
            out.push(e.to_string());
        }
        for tmp in fsutil::stale_temporaries(&self.root) {
            out.push(format!(
                "{} is a temporary file left by an interrupted write (the next write removes it)",
                tmp.display()
            ));
        }
        out.extend(self.inventory_problems()?);
        out.extend(self.revocation_problems());
        Ok(out)
    }
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data))
}

#[cfg(test)]
mod tests;

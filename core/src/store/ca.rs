//! The CA in the state directory: its manifest (`ca/ca.json`, the commit point) and the
//! certificate files it names, read with their hashes checked and written by a
//! transaction; and [`StateDir::create_root`], the one way a root CA is made.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{AuditAppend, Operation, Plan, StateDir, Transaction, sha256_hex};
use crate::audit::Event;
use crate::fsutil::{self, Replace};
use crate::issuance::{self, CaChain, IssuedCertificate};
use crate::{Error, KeySigner, KeyUri};

const MANIFEST: &str = "ca/ca.json";
const ROOT_PEM: &str = "ca/root.pem";
const INTERMEDIATE_PEM: &str = "ca/intermediate.pem";

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

impl IssuingCa {
    /// What goes with the certificates it issues.
    pub fn ca_chain(&self) -> CaChain {
        CaChain::of(&self.cert_der, &self.chain_der)
    }
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

    /// Creates a self-signed root CA with `signer`, in one transaction named
    /// `operation` whose audit record goes through `audit`. Returns the new root, or
    /// `None` (changing nothing) when the directory already has a CA.
    pub async fn create_root(
        &self,
        signer: Arc<dyn KeySigner>,
        subject: &str,
        validity: Duration,
        operation: &str,
        audit: &AuditAppend<'_>,
    ) -> Result<Option<IssuedCertificate>, Error> {
        let root = issuance::self_signed_root(signer.clone(), subject, validity).await?;
        let op = Operation {
            name: operation.to_string(),
            detail: format!("root with key {}", signer.uri()),
            plan: Plan::Ca,
        };
        self.transaction(&op, audit, async |tx| {
            if tx.state().ca()?.is_some() {
                return Ok(None);
            }
            tx.install_root(std::slice::from_ref(&root.der), Some(signer.uri()))?;
            tx.audit(Event::issued("ca_root_created", &root.der, signer.uri()));
            Ok(Some(root.clone()))
        })
        .await
    }

    fn read_manifest(&self) -> Result<Option<Manifest>, Error> {
        fsutil::read_json(&self.root.join(MANIFEST))
    }

    /// Reads a file named by the manifest and checks it is the one the manifest recorded.
    fn read_checked(&self, e: &CertEntry) -> Result<Vec<u8>, Error> {
        let path = self.root.join(&e.file);
        let data = std::fs::read(&path)
            .map_err(|err| Error::io(format!("cannot read {}", path.display()), err))?;
        if sha256_hex(&data) != e.sha256 {
            return Err(Error::State(format!(
                "{} does not match the CA manifest (changed or truncated since it was written)",
                path.display()
            )));
        }
        Ok(data)
    }

    /// The error of an operation that would replace the CA.
    pub fn existing_ca(&self) -> Error {
        Error::State(format!(
            "a CA already exists in {}; keyward never replaces a CA",
            self.root.display()
        ))
    }
}

impl Transaction<'_> {
    /// Records a new root CA (or upstream roots when `key` is `None`). Refuses to
    /// replace an existing CA.
    pub fn install_root(
        &mut self,
        roots_der: &[Vec<u8>],
        key: Option<&KeyUri>,
    ) -> Result<(), Error> {
        if self.state().read_manifest()?.is_some() {
            return Err(self.state().existing_ca());
        }
        let root = self.write_cert_file(ROOT_PEM, roots_der)?;
        self.write_manifest(&Manifest {
            version: 1,
            root: CertEntry {
                key: key.cloned(),
                ..root
            },
            intermediate: None,
        })
    }

    /// Records the issuing intermediate under the existing root. Refuses to replace one.
    pub fn install_intermediate(&mut self, cert_der: &[u8], key: &KeyUri) -> Result<(), Error> {
        let state = self.state();
        let mut m = state.read_manifest()?.ok_or_else(|| {
            Error::State(format!(
                "no CA in {} (run `keyward ca init` first)",
                state.root.display()
            ))
        })?;
        if m.intermediate.is_some() {
            return Err(Error::State(format!(
                "an intermediate CA already exists in {}; keyward never replaces it from the CLI",
                state.root.display()
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
        &mut self,
        intermediate_der: &[u8],
        upstream_chain_der: &[Vec<u8>],
        key: &KeyUri,
    ) -> Result<(), Error> {
        if self.state().read_manifest()?.is_some() {
            return Err(self.state().existing_ca());
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

    /// Removes the CA files the manifest does not name (what a CA operation that
    /// crashed before its manifest left) and returns them.
    pub fn remove_uncommitted_ca_files(&mut self) -> Result<Vec<PathBuf>, Error> {
        let state = self.state();
        let named: Vec<String> = state
            .read_manifest()?
            .map(|m| {
                std::iter::once(m.root)
                    .chain(m.intermediate)
                    .map(|e| e.file)
                    .collect()
            })
            .unwrap_or_default();
        let mut removed = Vec::new();
        for rel in [ROOT_PEM, INTERMEDIATE_PEM] {
            let path = state.root.join(rel);
            if !named.iter().any(|f| f == rel) && path.exists() {
                self.remove(&path)?;
                removed.push(path);
            }
        }
        Ok(removed)
    }

    fn write_cert_file(&mut self, rel: &str, ders: &[Vec<u8>]) -> Result<CertEntry, Error> {
        let path = self.state().root.join(rel);
        self.create_dir(fsutil::parent_dir(&path))?;
        let pem = crate::check::ders_to_pem(ders);
        self.write(
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

    fn write_manifest(&mut self, m: &Manifest) -> Result<(), Error> {
        let path = self.state().root.join(MANIFEST);
        self.write_json(&path, m)
    }
}

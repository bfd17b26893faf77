//! The state directory: CA material, the inventory of issued certificates, records of
//! operations in progress and the agent's own records, all written crash-safely.
//!
//! Layout (directories 0700; JSON files 0600):
//! ```text
//! STATE/.lock                      advisory lock: one writer at a time
//! STATE/ca/ca.json                 manifest: key URIs and SHA-256 of each CA file (the commit point)
//! STATE/ca/root.pem                the trust anchor(s)
//! STATE/ca/intermediate.pem        the issuing intermediate, when there is one
//! STATE/issued/SERIAL.pem          every certificate keyward issued (or abandoned) alone
//! STATE/issued/batch-SERIAL.pem    a `sign-csr --batch` chunk's certificates, PEM blocks
//!                                  concatenated, named after the first one's serial
//! STATE/inventory.json             one record per certificate issued (or abandoned) alone
//! STATE/inventory.d/batch-SERIAL.json  the records of a `sign-csr --batch` chunk, written
//!                                  once; the inventory is inventory.json and these
//! STATE/pending/*.json             operations started and not finished (`keyward pending`)
//! STATE/revocations.json           revoked certificates and the last CRL number
//! STATE/crl.der, crl.pem           the CRL signed by the issuing CA
//! STATE/audit.jsonl, .head, .N     the audit log (see `crate::audit`)
//! STATE/agent/generations.json     the generations of the agent's intermediates and JWT keys
//! STATE/agent/intermediates.json   (before generations.json) its rotating intermediates
//! STATE/agent/jwt-keys.json        (before generations.json) its JWT signing keys
//! STATE/agent/upstream-crl.der     the upstream authority's CRL, as the agent last verified it
//! ```
//! Every change is made by a [`Transaction`]: under the lock, with a pending record, and
//! committed with its audit record or undone. Files are written before the manifest or
//! inventory record that names them, so a crash leaves at worst an unreferenced file and the
//! pending record, which [`StateDir::problems`] reports and `keyward pending resolve`
//! settles.

mod ca;
mod inventory;
mod pending;
mod revocation;
mod transaction;

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::fsutil;

pub use ca::{CaState, IssuingCa};
pub use inventory::{
    CertStatus, IssuedFiles, IssuedKind, IssuedRecord, NewCertificate, TakenSerials,
};
pub use pending::{PendingRecord, Plan};
pub use revocation::RevocationList;
pub use transaction::{AuditAppend, Operation, Transaction};

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

/// The agent's own records under `STATE/agent/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentRecord {
    /// `generations.json`: the journal of every kind of generation the agent rotates
    /// (its intermediates, local or upstream, and its JWT signing keys).
    Generations,
    /// `intermediates.json`: the generations of the agent's rotating intermediate, as
    /// agents before `generations.json` recorded them (read once to migrate).
    Intermediates,
    /// `jwt-keys.json`: the generations of the agent's JWT signing key, as agents
    /// before `generations.json` recorded them (read once to migrate).
    JwtKeys,
}

impl AgentRecord {
    fn relative_path(self) -> &'static str {
        match self {
            AgentRecord::Generations => "agent/generations.json",
            AgentRecord::Intermediates => "agent/intermediates.json",
            AgentRecord::JwtKeys => "agent/jwt-keys.json",
        }
    }
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
        self.refuse_world_writable()?;
        for sub in ["ca", "issued", "pending"] {
            fsutil::create_private_dir(&self.root.join(sub))?;
        }
        self.lock()
    }

    /// Takes the write lock on an existing directory, waiting for another keyward
    /// process to finish. Fails (changing nothing) if the directory does not exist, or
    /// if every user may write it or its `ca` directory.
    pub fn lock(&self) -> Result<StateLock, Error> {
        if !self.exists() {
            return Err(Error::State(format!(
                "no state directory at {} (run `keyward ca init` first)",
                self.root.display()
            )));
        }
        self.refuse_world_writable()?;
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

    /// Refuses the directory, or its `ca` directory, where they exist and every user
    /// may write them: any user could swap the CA's record for their own.
    fn refuse_world_writable(&self) -> Result<(), Error> {
        let ca = self.root.join("ca");
        for (dir, what) in [
            (&self.root, "the state directory"),
            (&ca, "the CA directory"),
        ] {
            if dir.is_dir() {
                fsutil::refuse_world_writable_dir(dir, what)?;
            }
        }
        Ok(())
    }

    /// Where the agent's record `which` is.
    fn agent_record_path(&self, which: AgentRecord) -> PathBuf {
        self.root.join(which.relative_path())
    }

    /// The agent's record `which`, or `None` when there is none yet.
    pub fn read_agent_record<T: DeserializeOwned>(
        &self,
        which: AgentRecord,
    ) -> Result<Option<T>, Error> {
        fsutil::read_json(&self.agent_record_path(which))
    }

    /// Replaces the agent's record `which` atomically, under the state directory's lock.
    pub fn write_agent_record<T: Serialize>(
        &self,
        which: AgentRecord,
        record: &T,
    ) -> Result<(), Error> {
        let path = self.agent_record_path(which);
        let _lock = self.lock()?;
        fsutil::create_private_dir(path.parent().unwrap_or(&self.root))?;
        fsutil::write_json(&path, record)
    }

    /// Removes the agent's record `which` (a record migrated into another), under the
    /// state directory's lock; nothing to remove is fine.
    pub fn remove_agent_record(&self, which: AgentRecord) -> Result<(), Error> {
        let path = self.agent_record_path(which);
        let _lock = self.lock()?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("cannot remove {}", path.display()), e)),
        }
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

/// Lower-case hex SHA-256 of `data`. Encoded through a buffer, where `hex::encode`
/// collects one `char` at a time into its string: a `sign-csr --batch` run takes three
/// of these a certificate.
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut text = [0u8; 64];
    hex::encode_to_slice(digest, &mut text).expect("64 hex digits for 32 bytes");
    String::from_utf8_lossy(&text).into_owned()
}

#[cfg(test)]
mod tests;

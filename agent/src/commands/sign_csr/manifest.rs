//! The manifest of a `sign-csr --batch` output directory (`OUT/manifest.json`): per CSR
//! file, its SHA-256 and what became of it. It is replaced atomically in the same
//! transaction that records the certificates it names, so a run stopped at any point
//! leaves it naming exactly what was signed, and the next run signs only the rest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use keyward_core::Error;
use keyward_core::fsutil;
use serde::{Deserialize, Serialize};

/// The manifest's file name in the output directory.
const FILE_NAME: &str = "manifest.json";

/// What became of one CSR file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Outcome {
    /// Signed and recorded: the certificate (chain) is in `cert`, next to the manifest.
    Signed {
        /// Serial number, upper-case hex.
        serial: String,
        /// The output file's name: its chain file, or the JSON Lines bundle holding it.
        cert: String,
    },
    /// Not signed, and why (tried again by the next run).
    Refused {
        /// The one-line reason.
        reason: String,
    },
}

/// One CSR file's line in the manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// SHA-256 (hex) of the CSR file as it was signed or refused.
    pub csr_sha256: String,
    /// What became of it.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The manifest: CSR file name → its entry.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Manifest {
    /// The entries, by CSR file name.
    pub csrs: BTreeMap<String, Entry>,
}

impl Manifest {
    /// Where the manifest of output directory `out` lives.
    pub fn path(out: &Path) -> PathBuf {
        out.join(FILE_NAME)
    }

    /// The manifest of `out`, empty when there is none yet.
    pub fn load(out: &Path) -> Result<Manifest, Error> {
        Ok(fsutil::read_json(&Self::path(out))?.unwrap_or_default())
    }

    /// Whether the CSR file `name` with content hash `sha256` was signed already.
    pub fn is_signed(&self, name: &str, sha256: &str) -> bool {
        self.csrs
            .get(name)
            .is_some_and(|e| e.csr_sha256 == sha256 && matches!(e.outcome, Outcome::Signed { .. }))
    }

    /// Records what became of the CSR file `name`.
    pub fn set(&mut self, name: &str, csr_sha256: &str, outcome: Outcome) {
        self.csrs.insert(
            name.to_string(),
            Entry {
                csr_sha256: csr_sha256.to_string(),
                outcome,
            },
        );
    }

    /// The manifest as written to disk.
    pub fn to_json(&self) -> Result<Vec<u8>, Error> {
        serde_json::to_vec_pretty(self)
            .map_err(|e| Error::State(format!("cannot encode the batch manifest: {e}")))
    }
}

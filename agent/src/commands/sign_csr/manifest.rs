//! The manifest of a `sign-csr --batch` output directory (`OUT/manifest.json`): per CSR
//! file, its SHA-256 and what became of it. It is replaced atomically in the same
//! transaction that records the certificates it names, so a run stopped at any point
//! leaves it naming exactly what was signed, and the next run signs only the rest.
//!
//! A run writes the whole manifest with every chunk, so each entry's JSON is made once
//! and kept: encoding every entry again per chunk made the run's cost grow with the
//! square of its size (at 50,000 CSRs, 6% of the run's CPU went to it).
//! The file is compact JSON, exactly what `serde_json::to_vec` gives for [`Manifest`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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

/// One CSR file's line in the manifest; made only by [`Manifest::set`], so its kept
/// JSON always matches its fields.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// SHA-256 (hex) of the CSR file as it was signed or refused.
    csr_sha256: String,
    /// What became of it.
    #[serde(flatten)]
    outcome: Outcome,
    /// `"NAME":{...}`, the entry as it appears in the file, once encoded.
    #[serde(skip)]
    json: OnceLock<Box<[u8]>>,
}

/// The manifest: CSR file name → its entry.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Manifest {
    /// The entries, by CSR file name.
    csrs: BTreeMap<String, Entry>,
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

    /// Whether the manifest says anything of the CSR file `name`.
    pub fn lists(&self, name: &str) -> bool {
        self.csrs.contains_key(name)
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
                json: OnceLock::new(),
            },
        );
    }

    /// The manifest as written to disk: `{"csrs":{...}}`, each entry encoded once.
    pub fn to_json(&self) -> Result<Vec<u8>, Error> {
        let encode_error =
            |e: serde_json::Error| Error::State(format!("cannot encode the batch manifest: {e}"));
        let mut out = Vec::with_capacity(16 + self.csrs.len() * 160);
        out.extend_from_slice(b"{\"csrs\":{");
        for (i, (name, entry)) in self.csrs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let json = match entry.json.get() {
                Some(json) => json,
                None => {
                    let mut json = serde_json::to_vec(name).map_err(encode_error)?;
                    json.push(b':');
                    serde_json::to_writer(&mut json, entry).map_err(encode_error)?;
                    entry.json.get_or_init(|| json.into())
                }
            };
            out.extend_from_slice(json);
        }
        out.extend_from_slice(b"}}");
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kept entries give the bytes serde_json gives for the whole manifest, also
    /// after entries are added and replaced between two writes.
    #[test]
    fn the_file_is_serde_jsons_encoding_of_the_manifest() {
        let mut m = Manifest::default();
        assert_eq!(m.to_json().unwrap(), serde_json::to_vec(&m).unwrap());
        let signed = |n: u32| Outcome::Signed {
            serial: format!("{n:032X}"),
            cert: format!("dev-{n}.pem"),
        };
        m.set("b.csr", &"ab".repeat(32), signed(2));
        m.set("a \"quoted\"\\é.csr", &"cd".repeat(32), signed(1));
        let first = m.to_json().unwrap();
        assert_eq!(first, serde_json::to_vec(&m).unwrap());
        m.set(
            "b.csr",
            &"ef".repeat(32),
            Outcome::Refused {
                reason: "its signature\ndoes not verify".into(),
            },
        );
        m.set("c.csr", &"01".repeat(32), signed(3));
        let second = m.to_json().unwrap();
        assert_eq!(second, serde_json::to_vec(&m).unwrap());
        let back: Manifest = serde_json::from_slice(&second).unwrap();
        assert_eq!(back.to_json().unwrap(), second);
        assert!(back.is_signed("c.csr", &"01".repeat(32)));
        assert!(!back.is_signed("b.csr", &"ef".repeat(32)));
        assert!(back.lists("b.csr") && !back.lists("d.csr"));
    }
}

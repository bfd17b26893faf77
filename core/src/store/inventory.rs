//! The inventory: one record per certificate keyward issued, and its certificate file.

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{StateDir, StateLock, sha256_hex};
use crate::fsutil::{self, Replace};
use crate::{Error, KeyUri};

const INVENTORY: &str = "inventory.json";

/// What kind of certificate a record describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssuedKind {
    /// A service certificate whose key keyward generated (`keyward issue`).
    Service,
    /// A certificate for a CSR (`keyward sign-csr`).
    Csr,
}

/// One issued certificate, as listed by `keyward status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IssuedRecord {
    /// Serial number, lower-case hex.
    pub serial_hex: String,
    /// How it was issued.
    pub kind: IssuedKind,
    /// The name given on the command line (or the CSR's subject).
    pub name: String,
    /// Subject distinguished name.
    pub subject: String,
    /// Subject alternative names, as `DNS:x`, `IP:x`, `URI:x`.
    pub sans: Vec<String>,
    /// Issuer distinguished name.
    pub issuer: String,
    /// URI of the key that signed it.
    pub ca_key: KeyUri,
    /// Start of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// When keyward issued it.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// Where the credentials were written (`--out`), if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out: Option<PathBuf>,
    /// The certificate file in the state directory, relative to it (set by the store).
    #[serde(default)]
    pub cert_file: String,
    /// SHA-256 of that file (set by the store).
    #[serde(default)]
    pub cert_sha256: String,
}

impl StateDir {
    /// Stores an issued certificate (PEM) and adds its record to the inventory.
    pub fn record_issued(
        &self,
        _lock: &StateLock,
        mut rec: IssuedRecord,
        cert_pem: &str,
    ) -> Result<(), Error> {
        let rel = format!("issued/{}.pem", rec.serial_hex);
        let path = self.root.join(&rel);
        fsutil::create_private_dir(path.parent().unwrap_or(&self.root))?;
        fsutil::write_atomic(
            &path,
            cert_pem.as_bytes(),
            fsutil::PUBLIC_FILE_MODE,
            Replace::Refuse,
        )?;
        rec.cert_file = rel;
        rec.cert_sha256 = sha256_hex(cert_pem.as_bytes());
        let mut all = self.inventory()?;
        all.push(rec);
        let json = serde_json::to_vec_pretty(&all).expect("inventory serializes");
        fsutil::write_atomic(
            &self.root.join(INVENTORY),
            &json,
            fsutil::PUBLIC_FILE_MODE,
            Replace::Allow,
        )
    }

    /// Every issued certificate's record, oldest first.
    pub fn inventory(&self) -> Result<Vec<IssuedRecord>, Error> {
        let path = self.root.join(INVENTORY);
        match fs::read(&path) {
            Ok(d) => serde_json::from_slice(&d)
                .map_err(|e| Error::State(format!("{} is corrupt: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
        }
    }

    /// Records whose file is missing or altered, and files in `issued/` no record names.
    pub(super) fn inventory_problems(&self) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        let records = match self.inventory() {
            Ok(r) => r,
            Err(e) => return Ok(vec![e.to_string()]),
        };
        for r in &records {
            let path = self.root.join(&r.cert_file);
            match fs::read(&path) {
                Ok(d) if sha256_hex(&d) == r.cert_sha256 => {}
                Ok(_) => out.push(format!(
                    "{} does not match its inventory record",
                    path.display()
                )),
                Err(_) => out.push(format!(
                    "{} named by the inventory is missing",
                    path.display()
                )),
            }
        }
        let dir = self.root.join("issued");
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = format!("issued/{}", e.file_name().to_string_lossy());
                if !records.iter().any(|r| r.cert_file == name) {
                    out.push(format!(
                        "{} is not in the inventory (an issuance was interrupted before it was recorded)",
                        self.root.join(&name).display()
                    ));
                }
            }
        }
        Ok(out)
    }
}

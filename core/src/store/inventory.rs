//! The inventory: one record per certificate keyward issued, and its certificate file.
//! A certificate signed by an operation that crashed before delivering it stays in the
//! inventory as abandoned, so its serial is never used again.

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{StateDir, Transaction, sha256_hex};
use crate::check::{pem_to_ders, summarize};
use crate::fsutil::{self, Replace};
use crate::issuance::IssuedCertificate;
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

/// Whether a recorded certificate went out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertStatus {
    /// Delivered to its `out` path.
    #[default]
    Issued,
    /// Signed by an operation that crashed before anything was delivered, and
    /// abandoned by `keyward pending resolve`: nobody holds it, nothing lists or
    /// revokes it, and its serial is never used again.
    Abandoned,
}

impl CertStatus {
    fn is_issued(&self) -> bool {
        *self == CertStatus::Issued
    }
}

/// One certificate in the inventory, as listed by `keyward status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IssuedRecord {
    /// Serial number, upper-case hex.
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
    /// When keyward recorded it.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// Where the credentials were written (`--out`), if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out: Option<PathBuf>,
    /// The certificate file in the state directory, relative to it.
    pub cert_file: String,
    /// SHA-256 of that file.
    pub cert_sha256: String,
    /// Whether it went out (absent in the file: issued).
    #[serde(default, skip_serializing_if = "CertStatus::is_issued")]
    pub status: CertStatus,
}

/// A certificate to add to the inventory, as the command that signed it knows it; the
/// store reads everything else from the certificate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewCertificate {
    /// How it was issued.
    pub kind: IssuedKind,
    /// The name given on the command line (or the CSR's subject).
    pub name: String,
    /// Where it is delivered: the `--out` directory of `issue`, the file of `sign-csr`.
    pub out: Option<PathBuf>,
    /// URI of the key that signed it.
    pub ca_key: KeyUri,
    /// The certificate, one PEM block.
    pub cert_pem: String,
}

impl NewCertificate {
    /// The record of `cert`, signed with `ca_key`.
    pub fn new(
        kind: IssuedKind,
        name: &str,
        out: Option<PathBuf>,
        ca_key: &KeyUri,
        cert: &IssuedCertificate,
    ) -> NewCertificate {
        NewCertificate {
            kind,
            name: name.to_string(),
            out,
            ca_key: ca_key.clone(),
            cert_pem: cert.pem(),
        }
    }

    /// The certificate (DER).
    pub fn cert_der(&self) -> Result<Vec<u8>, Error> {
        Ok(pem_to_ders(self.cert_pem.as_bytes())?.swap_remove(0))
    }

    /// The certificate's serial, upper-case hex.
    pub fn serial_hex(&self) -> Result<String, Error> {
        Ok(summarize(&self.cert_der()?)?.serial_hex)
    }
}

impl Transaction<'_> {
    /// Stores a delivered certificate in `issued/` and adds its record to the inventory.
    /// Refuses a serial the inventory already holds.
    pub fn record_issued(&mut self, new: &NewCertificate) -> Result<IssuedRecord, Error> {
        Ok(self
            .add_to_inventory(std::slice::from_ref(new), CertStatus::Issued)?
            .swap_remove(0))
    }

    /// [`Transaction::record_issued`] for many certificates at once: their files, then
    /// one write of the inventory (a bulk run records thousands per transaction).
    pub fn record_issued_all(
        &mut self,
        news: &[NewCertificate],
    ) -> Result<Vec<IssuedRecord>, Error> {
        self.add_to_inventory(news, CertStatus::Issued)
    }

    /// Records a certificate that was signed and never delivered, so that its serial is
    /// never used again.
    pub fn record_abandoned(&mut self, new: &NewCertificate) -> Result<IssuedRecord, Error> {
        Ok(self
            .add_to_inventory(std::slice::from_ref(new), CertStatus::Abandoned)?
            .swap_remove(0))
    }

    fn add_to_inventory(
        &mut self,
        news: &[NewCertificate],
        status: CertStatus,
    ) -> Result<Vec<IssuedRecord>, Error> {
        let mut all = self.state().all_records()?;
        let mut taken: HashSet<String> = all.iter().map(|r| r.serial_hex.clone()).collect();
        let mut added = Vec::with_capacity(news.len());
        for new in news {
            let rec = self.store_certificate(new, status, &taken)?;
            taken.insert(rec.serial_hex.clone());
            added.push(rec);
        }
        // The files the records name are durable before the inventory names them.
        self.sync()?;
        all.extend(added.iter().cloned());
        let inventory = self.state().root.join(INVENTORY);
        self.write_json(&inventory, &all)?;
        Ok(added)
    }

    /// Writes `new`'s file in `issued/` and returns its record; refuses a serial in
    /// `taken`.
    fn store_certificate(
        &mut self,
        new: &NewCertificate,
        status: CertStatus,
        taken: &HashSet<String>,
    ) -> Result<IssuedRecord, Error> {
        let s = summarize(&new.cert_der()?)?;
        if taken.contains(&s.serial_hex) {
            return Err(Error::AlreadyExists(format!(
                "serial {} is already in the inventory of {}",
                s.serial_hex,
                self.state().path().display()
            )));
        }
        let rec = IssuedRecord {
            cert_file: format!("issued/{}.pem", s.serial_hex),
            cert_sha256: sha256_hex(new.cert_pem.as_bytes()),
            serial_hex: s.serial_hex,
            kind: new.kind,
            name: new.name.clone(),
            subject: s.subject,
            sans: s.sans,
            issuer: s.issuer,
            ca_key: new.ca_key.clone(),
            not_before: s.not_before,
            not_after: s.not_after,
            issued_at: OffsetDateTime::now_utc(),
            out: new.out.clone(),
            status,
        };
        let path = self.state().root.join(&rec.cert_file);
        // A crash between this file and the inventory leaves the file: the same
        // certificate is taken as it is.
        if fs::read(&path)
            .ok()
            .is_none_or(|d| d != new.cert_pem.as_bytes())
        {
            self.create_dir(fsutil::parent_dir(&path))?;
            self.write(
                &path,
                new.cert_pem.as_bytes(),
                fsutil::PUBLIC_FILE_MODE,
                Replace::Refuse,
            )?;
        }
        Ok(rec)
    }
}

impl StateDir {
    /// Every certificate delivered, oldest first (abandoned ones are left out: see
    /// [`StateDir::abandoned`]).
    pub fn inventory(&self) -> Result<Vec<IssuedRecord>, Error> {
        let mut all = self.all_records()?;
        all.retain(|r| r.status == CertStatus::Issued);
        Ok(all)
    }

    /// Certificates signed and never delivered, whose serials stay taken.
    pub fn abandoned(&self) -> Result<Vec<IssuedRecord>, Error> {
        let mut all = self.all_records()?;
        all.retain(|r| r.status == CertStatus::Abandoned);
        Ok(all)
    }

    /// Every record in the inventory file, oldest first.
    fn all_records(&self) -> Result<Vec<IssuedRecord>, Error> {
        Ok(fsutil::read_json(&self.root.join(INVENTORY))?.unwrap_or_default())
    }

    /// Records whose file is missing or altered, and files in `issued/` no record names.
    pub(super) fn inventory_problems(&self) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        let records = match self.all_records() {
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

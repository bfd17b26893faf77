//! The inventory: one record per certificate keyward issued, and its certificate file
//! (its own, or one per chunk of `sign-csr --batch`; [`IssuedFiles`] reads either).
//! Records of certificates issued alone are in `inventory.json`, those of a bulk chunk
//! in a file of their own (see `chunk_records.rs`). A certificate signed by an
//! operation that crashed before delivering it stays in the inventory as abandoned, so
//! its serial is never used again.

mod cert_fields;
mod chunk_records;
mod issued_files;

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{StateDir, Transaction, sha256_hex};
use crate::check::pem_to_ders;
use crate::fsutil::{self, Replace};
use crate::issuance::IssuedCertificate;
use crate::{Error, KeyUri};
use cert_fields::CertFields;
pub use chunk_records::TakenSerials;
pub use issued_files::IssuedFiles;
use issued_files::is_one_block;

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
    /// The certificate file in the state directory, relative to it: its own, or the
    /// file its `sign-csr --batch` chunk shares.
    pub cert_file: String,
    /// SHA-256 of the certificate's PEM block (of a file of its own: the whole file).
    pub cert_sha256: String,
    /// Whether it went out (absent in the file: issued).
    #[serde(default, skip_serializing_if = "CertStatus::is_issued")]
    pub status: CertStatus,
}

/// A certificate to add to the inventory, as the command that signed it knows it; the
/// store takes everything else from the certificate.
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
    /// The file of `issued/` its chunk shares, set by [`NewCertificate::share_file`]
    /// before a [`Transaction::record_issued_all`] writes it: `keyward pending
    /// resolve` then finds it there after a crash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_file: Option<String>,
    /// What the record takes from the certificate, from the issuance that produced it
    /// (not kept in a pending record: read back, it is parsed from `cert_pem`).
    #[serde(skip)]
    pub(in crate::store) fields: Option<CertFields>,
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
            batch_file: None,
            fields: Some(CertFields::of_issued(cert)),
        }
    }

    /// What the record takes from the certificate: from its issuance, or parsed.
    fn fields(&self) -> Result<Cow<'_, CertFields>, Error> {
        match &self.fields {
            Some(fields) => Ok(Cow::Borrowed(fields)),
            None => CertFields::of_der(&self.cert_der()?).map(Cow::Owned),
        }
    }

    /// Marks `news` with the file of `issued/` that [`Transaction::record_issued_all`]
    /// writes them into, named after the first one's serial.
    pub fn share_file(news: &mut [NewCertificate]) -> Result<(), Error> {
        let Some(first) = news.first() else {
            return Ok(());
        };
        let file = first.shared_file_name()?;
        for new in news {
            new.batch_file = Some(file.clone());
        }
        Ok(())
    }

    /// The file of `issued/` a chunk starting with this certificate shares.
    fn shared_file_name(&self) -> Result<String, Error> {
        Ok(format!("issued/batch-{}.pem", self.serial_hex()?))
    }

    /// The certificate (DER).
    pub fn cert_der(&self) -> Result<Vec<u8>, Error> {
        Ok(pem_to_ders(self.cert_pem.as_bytes())?.swap_remove(0))
    }

    /// The certificate's serial, upper-case hex.
    pub fn serial_hex(&self) -> Result<String, Error> {
        Ok(self.fields()?.serial_hex.clone())
    }
}

impl Transaction<'_> {
    /// Stores a delivered certificate in `issued/` and adds its record to the inventory.
    /// Refuses a serial the inventory already holds.
    pub fn record_issued(&mut self, new: &NewCertificate) -> Result<IssuedRecord, Error> {
        self.add_alone(new, CertStatus::Issued)
    }

    /// [`Transaction::record_issued`] for a chunk of certificates at once: ONE file in
    /// `issued/` holds them all (their PEM blocks, in order; see
    /// [`NewCertificate::share_file`]), and ONE new file their records, so recording a
    /// chunk costs the same however many records the inventory holds (a bulk run
    /// records thousands per transaction). `taken` holds the inventory's serials; a run
    /// keeps it across its chunks, and it is brought up to date here.
    pub fn record_issued_all(
        &mut self,
        news: &[NewCertificate],
        taken: &mut TakenSerials,
    ) -> Result<Vec<IssuedRecord>, Error> {
        taken.refresh(self.state())?;
        let added = self.store_chunk(news, taken)?;
        // The file the records name is durable before the records are written.
        self.sync()?;
        self.write_chunk_records(&added, taken)?;
        Ok(added)
    }

    /// Records a certificate that was signed and never delivered, so that its serial is
    /// never used again.
    pub fn record_abandoned(&mut self, new: &NewCertificate) -> Result<IssuedRecord, Error> {
        self.add_alone(new, CertStatus::Abandoned)
    }

    /// Adds the record of `new`, its certificate in a file of its own, to
    /// `inventory.json`.
    fn add_alone(
        &mut self,
        new: &NewCertificate,
        status: CertStatus,
    ) -> Result<IssuedRecord, Error> {
        let mut alone = self.state().records_alone()?;
        let chunks = self.state().chunk_records()?;
        let taken: HashSet<&str> = alone
            .iter()
            .chain(&chunks)
            .map(|r| r.serial_hex.as_str())
            .collect();
        let rec = self.store_certificate(new, status, &taken)?;
        // The file the record names is durable before the inventory names it.
        self.sync()?;
        alone.push(rec.clone());
        let inventory = self.state().root.join(INVENTORY);
        self.write_json(&inventory, &alone)?;
        Ok(rec)
    }

    /// Stores the certificates of `news` in one file of `issued/`, named after the
    /// first, and returns their records; refuses a serial in `taken` or twice in the
    /// chunk.
    fn store_chunk(
        &mut self,
        news: &[NewCertificate],
        taken: &TakenSerials,
    ) -> Result<Vec<IssuedRecord>, Error> {
        let Some(first) = news.first() else {
            return Ok(Vec::new());
        };
        let file = first.shared_file_name()?;
        let mut added = Vec::with_capacity(news.len());
        let mut in_chunk = HashSet::with_capacity(news.len());
        let mut data = String::with_capacity(news.iter().map(|n| n.cert_pem.len()).sum());
        for new in news {
            if !is_one_block(&new.cert_pem) {
                return Err(Error::InvalidInput(format!(
                    "the certificate for {} is not one PEM block",
                    new.name
                )));
            }
            let rec = self.record_of(new, CertStatus::Issued, file.clone())?;
            if taken.contains(&rec.serial_hex) || !in_chunk.insert(rec.serial_hex.clone()) {
                return Err(self.serial_taken(&rec.serial_hex));
            }
            added.push(rec);
            data.push_str(&new.cert_pem);
        }
        self.write_unless_there(&file, data.as_bytes())?;
        Ok(added)
    }

    /// Stores `new` in a file of its own in `issued/` (or finds it in the file its chunk
    /// shares, where a crashed `sign-csr --batch` left it) and returns its record;
    /// refuses a serial in `taken`.
    fn store_certificate(
        &mut self,
        new: &NewCertificate,
        status: CertStatus,
        taken: &HashSet<&str>,
    ) -> Result<IssuedRecord, Error> {
        let mut rec = self.record_of(new, status, String::new())?;
        if taken.contains(rec.serial_hex.as_str()) {
            return Err(self.serial_taken(&rec.serial_hex));
        }
        if let Some(shared) = &new.batch_file {
            rec.cert_file = shared.clone();
            if IssuedFiles::new(&self.state().root).lookup(&rec).is_ok() {
                return Ok(rec);
            }
        }
        rec.cert_file = format!("issued/{}.pem", rec.serial_hex);
        self.write_unless_there(&rec.cert_file, new.cert_pem.as_bytes())?;
        Ok(rec)
    }

    /// The refusal of a serial the inventory holds already.
    fn serial_taken(&self, serial: &str) -> Error {
        Error::AlreadyExists(format!(
            "serial {serial} is already in the inventory of {}",
            self.state().path().display()
        ))
    }

    /// The record of `new`, its certificate in `cert_file`.
    fn record_of(
        &self,
        new: &NewCertificate,
        status: CertStatus,
        cert_file: String,
    ) -> Result<IssuedRecord, Error> {
        let fields = new.fields()?.into_owned();
        Ok(IssuedRecord {
            cert_file,
            cert_sha256: sha256_hex(new.cert_pem.as_bytes()),
            serial_hex: fields.serial_hex,
            kind: new.kind,
            name: new.name.clone(),
            subject: fields.subject,
            sans: fields.sans,
            issuer: fields.issuer,
            ca_key: new.ca_key.clone(),
            not_before: fields.not_before,
            not_after: fields.not_after,
            issued_at: OffsetDateTime::now_utc(),
            out: new.out.clone(),
            status,
        })
    }

    /// Writes `data` to the file `rel` of the state directory (public, never replacing
    /// a file), unless it holds `data` already: a crash between this file and the
    /// inventory leaves the file, taken as it is.
    fn write_unless_there(&mut self, rel: &str, data: &[u8]) -> Result<(), Error> {
        let path = self.state().root.join(rel);
        if fs::read(&path).is_ok_and(|d| d == data) {
            return Ok(());
        }
        self.create_dir(fsutil::parent_dir(&path))?;
        self.write(&path, data, fsutil::PUBLIC_FILE_MODE, Replace::Refuse)
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

    /// Every record, oldest first: those of `inventory.json` and of every bulk chunk.
    fn all_records(&self) -> Result<Vec<IssuedRecord>, Error> {
        let mut all = self.records_alone()?;
        all.extend(self.chunk_records()?);
        // Stable: a file's records keep their order.
        all.sort_by_key(|r| r.issued_at);
        Ok(all)
    }

    /// The records of `inventory.json`: certificates recorded one at a time.
    fn records_alone(&self) -> Result<Vec<IssuedRecord>, Error> {
        Ok(fsutil::read_json(&self.root.join(INVENTORY))?.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests;

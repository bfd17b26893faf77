//! The JSON Lines output of `sign-csr --batch --output-format jsonl`: one file per
//! recorded chunk, `OUT/certificates-NNNNNN.jsonl`, one line per certificate naming the
//! input CSR file, its serial, subject and expiry and the chain (PEM), the shape factory
//! provisioning tools and fleet registries import (AWS IoT bulk registration reads JSON
//! Lines too). Each file is written in one atomic step in the chunk's transaction, so it
//! is whole or absent; `keyward pending resolve` and a resumed run read it back.

use std::path::{Path, PathBuf};

use keyward_core::Error;
use keyward_core::check::pem_to_ders;
use keyward_core::issuance::IssuedCertificate;
use serde::{Deserialize, Serialize};

use super::numbered::NumberedFiles;

/// The bundle files: `certificates-NNNNNN.jsonl`.
const BUNDLES: NumberedFiles = NumberedFiles {
    prefix: "certificates-",
    suffix: ".jsonl",
};

/// One certificate of a bundle: one line of the file.
#[derive(Debug, Serialize, Deserialize)]
pub struct Line {
    /// The CSR file's name in the batch directory.
    pub csr: String,
    /// SHA-256 (hex) of that file as it was signed.
    pub csr_sha256: String,
    /// Serial number, upper-case hex.
    pub serial: String,
    /// Subject distinguished name.
    pub subject: String,
    /// End of validity (RFC 3339).
    pub not_after: String,
    /// The certificate followed by the intermediates, PEM.
    pub chain_pem: String,
}

impl Line {
    /// The line for `cert`, signed for the CSR file `csr` (content hash `csr_sha256`),
    /// with its chain (`chain_pem`: the certificate, then the intermediates).
    pub fn new(csr: &str, csr_sha256: &str, cert: &IssuedCertificate, chain_pem: String) -> Line {
        Line {
            csr: csr.to_string(),
            csr_sha256: csr_sha256.to_string(),
            serial: cert.serial_hex.clone(),
            subject: cert.subject.clone(),
            not_after: crate::commands::rfc3339(cert.not_after),
            chain_pem,
        }
    }

    /// The line as written to the file, newline included.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        // Sized once for the line: grown from serde_json's default 128 bytes, the
        // buffer of a line (about 1 KB with a P-256 certificate) was reallocated three
        // times per certificate.
        let mut data = Vec::with_capacity(self.encoded_len_estimate());
        serde_json::to_writer(&mut data, self)
            .map_err(|e| Error::State(format!("cannot encode a bundle line: {e}")))?;
        data.push(b'\n');
        Ok(data)
    }

    /// About the encoded line's length: the fields, the PEM's newlines escaped (one
    /// more byte per line of 64), the names and quotes.
    fn encoded_len_estimate(&self) -> usize {
        let fields = [
            &self.csr,
            &self.csr_sha256,
            &self.serial,
            &self.subject,
            &self.not_after,
            &self.chain_pem,
        ];
        fields.iter().map(|f| f.len()).sum::<usize>() + self.chain_pem.len() / 64 + 128
    }

    /// The certificate (DER), the first block of the chain.
    pub fn leaf_der(&self) -> Option<Vec<u8>> {
        pem_to_ders(self.chain_pem.as_bytes())
            .ok()?
            .into_iter()
            .next()
    }
}

/// The file name of bundle number `n`.
pub fn file_name(n: u32) -> String {
    BUNDLES.name(n)
}

/// Whether `path` names a bundle file (rather than one CSR's chain file).
pub fn is_bundle(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| BUNDLES.number_of(n).is_some())
}

/// The bundle files in `out`, by number.
pub fn files_in(out: &Path) -> Result<Vec<(u32, PathBuf)>, Error> {
    BUNDLES.in_dir(out)
}

/// The number the next bundle file in `out` gets.
pub fn next_in(out: &Path) -> Result<u32, Error> {
    BUNDLES.next_in(out)
}

/// The lines of the bundle file at `path`.
pub fn read(path: &Path) -> Result<Vec<Line>, Error> {
    let data =
        std::fs::read(path).map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    data.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice(l)
                .map_err(|e| Error::State(format!("bad line in {}: {e}", path.display())))
        })
        .collect()
}

/// Whether the bundle file at `path` holds the certificate `leaf` (DER).
pub fn holds(path: &Path, leaf: &[u8]) -> bool {
    let Ok(serial) = keyward_core::check::summarize(leaf).map(|s| s.serial_hex) else {
        return false;
    };
    let Ok(data) = std::fs::read(path) else {
        return false;
    };
    // Only the line naming the serial is decoded (resolve asks once per certificate).
    let needle = format!("\"serial\":\"{serial}\"");
    data.split(|b| *b == b'\n')
        .filter(|l| l.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .filter_map(|l| serde_json::from_slice::<Line>(l).ok())
        .any(|l| l.serial == serial && l.leaf_der().is_some_and(|d| d == leaf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_numbered_jsonl_files_are_bundles() {
        assert_eq!(file_name(42), "certificates-000042.jsonl");
        assert_eq!(BUNDLES.number_of(&file_name(42)), Some(42));
        assert!(is_bundle(Path::new("/out/certificates-000001.jsonl")));
        for name in [
            "certificates-1.jsonl",
            "certificates-00000a.jsonl",
            ".certificates-000001.jsonl.tmp-1-2",
            "dev-0001.pem",
            "manifest.json",
        ] {
            assert_eq!(BUNDLES.number_of(name), None, "{name}");
        }
    }

    #[test]
    fn a_line_fits_the_buffer_it_is_encoded_into() {
        let body = "A".repeat(64);
        let block = format!(
            "-----BEGIN CERTIFICATE-----\n{}-----END CERTIFICATE-----\n",
            format!("{body}\n").repeat(12)
        );
        let line = Line {
            csr: "device-0001.csr".into(),
            csr_sha256: "ab".repeat(32),
            serial: "7F".repeat(16),
            subject: "CN=device-0001,O=\"Example\\Works\"".into(),
            not_after: "2027-01-01T00:00:00Z".into(),
            chain_pem: block.repeat(2),
        };
        let encoded = line.encode().unwrap();
        assert!(
            encoded.len() <= line.encoded_len_estimate(),
            "{}",
            encoded.len()
        );
    }

    #[test]
    fn lines_read_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name(1));
        let line = |csr: &str| Line {
            csr: csr.into(),
            csr_sha256: "00".into(),
            serial: "1F".into(),
            subject: "CN=a".into(),
            not_after: "2027-01-01T00:00:00Z".into(),
            chain_pem: "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n".into(),
        };
        let data = [
            line("a.csr").encode().unwrap(),
            line("b.csr").encode().unwrap(),
        ]
        .concat();
        std::fs::write(&path, data).unwrap();
        let read: Vec<String> = read(&path).unwrap().into_iter().map(|l| l.csr).collect();
        assert_eq!(read, ["a.csr", "b.csr"]);
        assert_eq!(files_in(dir.path()).unwrap(), [(1, path)]);
    }
}

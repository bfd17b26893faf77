//! Certificate checks used by `verify` and `status`: summaries of certificates, PEM
//! bundles, chain verification up to a trust bundle, and expiry alert levels.
//!
//! Parsing is x509-parser's; every signature is checked with [`crate::verify_signature`],
//! the same function that checks backends' signatures.

mod alert;
mod chain;
mod crl;
mod names;
mod report;

use serde::Serialize;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::Error;

pub use alert::{AlertLevel, AlertThresholds, alert_level, days_left, renewal_alert_level};
pub use chain::verify_chain;
pub(crate) use chain::verify_signed_by;
pub(crate) use crl::parse_crl;
pub use crl::{check_crl, find_revoked, read_crl};
pub(crate) use names::{
    general_name_to_string, key_algorithm_name, key_type, name_to_string, rsa_encryption_bits,
    signature_algorithm,
};
pub use report::{StatusEntry, StatusReport, status_report};

/// What a person (or `status --json`) needs to know about one certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertSummary {
    /// Subject distinguished name, e.g. `CN=api.internal`.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Serial number in upper-case hex without separators (as `openssl x509 -serial`).
    pub serial_hex: String,
    /// Start of the validity window (RFC 3339 in JSON).
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of the validity window (RFC 3339 in JSON).
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Whether basicConstraints says this is a CA.
    pub is_ca: bool,
    /// Subject alternative names as `DNS:x`, `IP:x`, `URI:x`, `email:x`.
    pub sans: Vec<String>,
    /// The subject key: `ecdsa-p256`, `ecdsa-p384`, `ed25519`, `rsa-2048`, ...
    pub key_algorithm: String,
    /// SHA-256 of the DER certificate, upper-case hex pairs joined by `:` (as openssl prints it).
    pub sha256_fingerprint: String,
}

/// Parses one DER certificate, refusing trailing bytes.
pub(crate) fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, Error> {
    let (rest, cert) = X509Certificate::from_der(der)
        .map_err(|e| Error::InvalidInput(format!("malformed certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::InvalidInput(
            "malformed certificate: trailing bytes after the certificate".into(),
        ));
    }
    Ok(cert)
}

/// Converts an ASN.1 time to an `OffsetDateTime` (UTC).
pub(crate) fn to_datetime(t: x509_parser::time::ASN1Time) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t.timestamp()).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Upper-case hex of a serial number's bytes, without the DER sign padding.
pub(crate) fn serial_hex(raw: &[u8]) -> String {
    let mut s = raw;
    while s.len() > 1 && s[0] == 0 {
        s = &s[1..];
    }
    hex::encode_upper(s)
}

/// Summarizes one DER certificate.
pub fn summarize(der: &[u8]) -> Result<CertSummary, Error> {
    let cert = parse_cert(der)?;
    Ok(summary_of(&cert, der))
}

/// The summary of an already parsed certificate whose DER is `der`.
pub(crate) fn summary_of(cert: &X509Certificate<'_>, der: &[u8]) -> CertSummary {
    let sans = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .map(general_name_to_string)
            .collect(),
        _ => Vec::new(),
    };
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    let fingerprint: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    CertSummary {
        subject: name_to_string(cert.subject()),
        issuer: name_to_string(cert.issuer()),
        serial_hex: serial_hex(cert.raw_serial()),
        not_before: to_datetime(cert.validity().not_before),
        not_after: to_datetime(cert.validity().not_after),
        is_ca: cert.is_ca(),
        sans,
        key_algorithm: key_algorithm_name(cert.public_key()),
        sha256_fingerprint: fingerprint.join(":"),
    }
}

/// Extracts the DER of every `CERTIFICATE` block of a PEM text, in order. Other blocks
/// (keys, CSRs) are skipped; a text without any certificate, or a block that is not a
/// well-formed certificate, is an error naming the problem. A text that is itself one
/// DER certificate is accepted as well.
pub fn pem_to_ders(pem_text: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    if pem_text.first() == Some(&0x30) && parse_cert(pem_text).is_ok() {
        return Ok(vec![pem_text.to_vec()]);
    }
    let blocks = pem::parse_many(pem_text)
        .map_err(|e| Error::InvalidInput(format!("malformed PEM: {e}")))?;
    let mut ders = Vec::new();
    for block in blocks {
        if block.tag() != "CERTIFICATE" {
            continue;
        }
        let der = block.into_contents();
        parse_cert(&der).map_err(|e| {
            Error::InvalidInput(format!("PEM certificate #{}: {e}", ders.len() + 1))
        })?;
        ders.push(der);
    }
    if ders.is_empty() {
        return Err(Error::InvalidInput(
            "no PEM CERTIFICATE block found".to_string(),
        ));
    }
    Ok(ders)
}

/// Encodes DER certificates as concatenated PEM `CERTIFICATE` blocks (LF line endings).
pub fn ders_to_pem(ders: &[Vec<u8>]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    ders.iter()
        .map(|d| pem::encode_config(&pem::Pem::new("CERTIFICATE", d.clone()), config))
        .collect()
}

#[cfg(test)]
mod tests;

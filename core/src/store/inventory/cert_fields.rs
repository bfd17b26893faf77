//! What an inventory record takes from its certificate (serial, names, validity): from
//! the issuance that has just produced and checked it, or, for a certificate read back
//! (a pending record), parsed from it; both give exactly what `check::summarize` gives.

use time::OffsetDateTime;

use crate::Error;
use crate::check::summarize;
use crate::issuance::IssuedCertificate;

/// What a record takes from its certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CertFields {
    pub(super) serial_hex: String,
    pub(super) subject: String,
    pub(super) sans: Vec<String>,
    pub(super) issuer: String,
    pub(super) not_before: OffsetDateTime,
    pub(super) not_after: OffsetDateTime,
}

impl CertFields {
    /// The fields of `cert`, as the issuance that produced and checked it read them.
    pub(super) fn of_issued(cert: &IssuedCertificate) -> CertFields {
        CertFields {
            serial_hex: cert.serial_hex.clone(),
            subject: cert.subject.clone(),
            sans: cert.sans.clone(),
            issuer: cert.issuer.clone(),
            not_before: cert.not_before,
            not_after: cert.not_after,
        }
    }

    /// The fields of the certificate `der`, parsed.
    pub(super) fn of_der(der: &[u8]) -> Result<CertFields, Error> {
        let s = summarize(der)?;
        Ok(CertFields {
            serial_hex: s.serial_hex,
            subject: s.subject,
            sans: s.sans,
            issuer: s.issuer,
            not_before: s.not_before,
            not_after: s.not_after,
        })
    }
}

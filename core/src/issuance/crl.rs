//! Certificate revocation lists: the RFC 5280 reason codes, the revoked entries a CRL
//! lists, and [`CaIssuer::sign_crl`], which signs a CRL with the CA's key through the
//! same rcgen adapter as certificates (so any backend can hold the key) and checks the
//! signature before the CRL is returned.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use x509_parser::extensions::ParsedExtension;

use super::CaIssuer;
use crate::check::{self, parse_crl};
use crate::{Error, verify_signature};

/// Why a certificate was revoked: RFC 5280 CRLReason (certificateHold and the
/// attribute-authority codes are not offered: keyward only revokes for good).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RevocationReason {
    /// No reason given (RFC 5280 code 0; written as no reasonCode extension).
    Unspecified,
    /// The certificate's private key was (or may have been) compromised (1).
    KeyCompromise,
    /// The CA's key was compromised (2).
    CaCompromise,
    /// The subject's name or other information changed (3).
    AffiliationChanged,
    /// The certificate was replaced by another (4).
    Superseded,
    /// The certificate is no longer needed (5).
    CessationOfOperation,
    /// The subject is no longer allowed what the certificate grants (9).
    PrivilegeWithdrawn,
}

/// Every reason with its RFC 5280 name, kebab-case spelling and code.
const REASONS: [(RevocationReason, &str, &str, u8); 7] = [
    (
        RevocationReason::Unspecified,
        "unspecified",
        "unspecified",
        0,
    ),
    (
        RevocationReason::KeyCompromise,
        "keyCompromise",
        "key-compromise",
        1,
    ),
    (
        RevocationReason::CaCompromise,
        "caCompromise",
        "ca-compromise",
        2,
    ),
    (
        RevocationReason::AffiliationChanged,
        "affiliationChanged",
        "affiliation-changed",
        3,
    ),
    (RevocationReason::Superseded, "superseded", "superseded", 4),
    (
        RevocationReason::CessationOfOperation,
        "cessationOfOperation",
        "cessation-of-operation",
        5,
    ),
    (
        RevocationReason::PrivilegeWithdrawn,
        "privilegeWithdrawn",
        "privilege-withdrawn",
        9,
    ),
];

impl RevocationReason {
    /// The RFC 5280 CRLReason code.
    pub fn code(self) -> u8 {
        REASONS
            .iter()
            .find(|r| r.0 == self)
            .map(|r| r.3)
            .unwrap_or(0)
    }

    /// The reason for an RFC 5280 code (`None` for codes keyward does not issue).
    pub fn from_code(code: u8) -> Option<Self> {
        REASONS.iter().find(|r| r.3 == code).map(|r| r.0)
    }

    /// The RFC 5280 name, e.g. `keyCompromise`.
    pub fn as_str(self) -> &'static str {
        REASONS
            .iter()
            .find(|r| r.0 == self)
            .map(|r| r.1)
            .unwrap_or("unspecified")
    }

    fn rcgen(self) -> rcgen::RevocationReason {
        use rcgen::RevocationReason as R;
        match self {
            RevocationReason::Unspecified => R::Unspecified,
            RevocationReason::KeyCompromise => R::KeyCompromise,
            RevocationReason::CaCompromise => R::CaCompromise,
            RevocationReason::AffiliationChanged => R::AffiliationChanged,
            RevocationReason::Superseded => R::Superseded,
            RevocationReason::CessationOfOperation => R::CessationOfOperation,
            RevocationReason::PrivilegeWithdrawn => R::PrivilegeWithdrawn,
        }
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RevocationReason {
    type Err = Error;

    /// Accepts the RFC 5280 name (`keyCompromise`) or its kebab-case form (`key-compromise`).
    fn from_str(s: &str) -> Result<Self, Error> {
        REASONS
            .iter()
            .find(|r| r.1 == s || r.2 == s)
            .map(|r| r.0)
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "unknown revocation reason '{s}' (expected one of: {})",
                    REASONS.map(|r| r.1).join(", ")
                ))
            })
    }
}

/// One revoked certificate, as the state directory records it and a CRL lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedCert {
    /// Serial number, upper-case hex (as `keyward status` prints it).
    pub serial_hex: String,
    /// Why it was revoked.
    pub reason: RevocationReason,
    /// When keyward revoked it (whole seconds).
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
}

/// What a CRL says: its number, its window and the revoked certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlContents {
    /// The CRL number (increases with every CRL the CA signs).
    pub crl_number: u64,
    /// thisUpdate: when it was signed.
    pub this_update: OffsetDateTime,
    /// nextUpdate: when a newer one is due; verifiers reject it after this.
    pub next_update: OffsetDateTime,
    /// The revoked certificates, in the order listed.
    pub revoked: Vec<RevokedCert>,
}

/// A CRL keyward has just signed and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCrl {
    /// The DER CRL.
    pub der: Vec<u8>,
}

impl SignedCrl {
    /// The CRL as one PEM `X509 CRL` block (LF line endings).
    pub fn pem(&self) -> String {
        let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
        pem::encode_config(&pem::Pem::new("X509 CRL", self.der.clone()), config)
    }
}

impl CaIssuer {
    /// Signs a CRL listing `contents` with this CA's key: version 2, the CA's subject as
    /// issuer, authorityKeyIdentifier (the CA's subjectKeyIdentifier) and cRLNumber,
    /// each entry with its reasonCode (none for `unspecified`, as RFC 5280 asks). The
    /// CRL's signature is verified under the CA's public key before it is returned.
    pub async fn sign_crl(&self, contents: &CrlContents) -> Result<SignedCrl, Error> {
        let params = crl_params(contents, self.certificate_der())?;
        let spki = self.signer().public_key_spki_der().to_vec();
        let alg = self.signer().algorithm();
        let uri = self.signer().uri().to_string();
        let der = self
            .with_rcgen_issuer(
                move |issuer| params.signed_by(issuer).map(|crl| crl.der().to_vec()),
                "CRL",
            )
            .await?;
        let crl = parse_crl(&der).map_err(|e| {
            Error::Verification(format!("the CRL signed by {uri} does not parse: {e}"))
        })?;
        verify_signature(
            alg,
            &spki,
            crl.tbs_cert_list.as_ref(),
            &crl.signature_value.data,
        )
        .map_err(|_| {
            Error::Verification(format!(
                "the CRL just signed does not verify under the public key of {uri}; \
                 its backend returned a bad signature"
            ))
        })?;
        drop(crl);
        Ok(SignedCrl { der })
    }
}

/// rcgen's parameters for `contents`, with the AKI taken from the CA certificate's SKI
/// (so it matches whatever method made the SKI, e.g. an upstream CA's SHA-1).
fn crl_params(
    contents: &CrlContents,
    ca_cert_der: &[u8],
) -> Result<rcgen::CertificateRevocationListParams, Error> {
    let revoked_certs = contents
        .revoked
        .iter()
        .map(|r| {
            Ok(rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(&serial_bytes(&r.serial_hex)?),
                revocation_time: r.revoked_at,
                reason_code: Some(r.reason.rcgen()),
                invalidity_date: None,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let ca = check::parse_cert(ca_cert_der)?;
    if ca
        .key_usage()
        .ok()
        .flatten()
        .is_some_and(|k| !k.value.crl_sign())
    {
        return Err(Error::Unsupported(format!(
            "CA certificate '{}' has no keyUsage cRLSign, so it cannot sign CRLs",
            check::name_to_string(ca.subject())
        )));
    }
    let ski = ca
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        });
    let key_identifier_method = match ski {
        Some(ski) => rcgen::KeyIdMethod::PreSpecified(ski),
        None => rcgen::KeyIdMethod::Sha256,
    };
    Ok(rcgen::CertificateRevocationListParams {
        this_update: contents.this_update,
        next_update: contents.next_update,
        crl_number: rcgen::SerialNumber::from_slice(&contents.crl_number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method,
    })
}

/// The serial number bytes of an upper- or lower-case hex serial.
pub fn serial_bytes(serial_hex: &str) -> Result<Vec<u8>, Error> {
    let padded = if serial_hex.len() % 2 == 1 {
        format!("0{serial_hex}")
    } else {
        serial_hex.to_string()
    };
    let bytes = hex::decode(&padded)
        .map_err(|_| Error::InvalidInput(format!("serial '{serial_hex}' is not hexadecimal")))?;
    if bytes.is_empty() || bytes.len() > 20 {
        return Err(Error::InvalidInput(format!(
            "serial '{serial_hex}' must be 1 to 20 bytes"
        )));
    }
    Ok(bytes)
}

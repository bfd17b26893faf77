//! The post-issuance check: every certificate keyward produces is parsed back and its
//! signature verified under the issuer's public key before anyone sees it, so a backend
//! that returns a malformed or wrong signature is caught at once.

use time::OffsetDateTime;

use super::IssuedCertificate;
use x509_parser::certificate::{X509Certificate, X509CertificateParser};
use x509_parser::nom::Parser;

use crate::check::{name_to_string, serial_hex, to_datetime};
use aws_lc_rs::signature::ParsedPublicKey;

use crate::{Algorithm, Error, KeySigner, subject_public_key, verify_signature};

/// The issuing key, as the check needs it.
#[derive(Debug, Clone)]
pub(crate) struct IssuerKey {
    /// DER SubjectPublicKeyInfo of the issuing key.
    pub spki_der: Vec<u8>,
    /// How that key signs.
    pub alg: Algorithm,
    /// The key's URI, for error messages.
    pub uri: String,
    /// The public key decoded once for aws-lc (a CA checks every certificate it issues
    /// under the same key, so decoding the point per certificate is wasted work);
    /// `None` for RSA-PSS (two salt lengths are accepted, see [`verify_signature`]) and
    /// for a key aws-lc rejects, which then fails through [`verify_signature`].
    parsed: Option<ParsedPublicKey>,
}

impl IssuerKey {
    /// The check's view of `signer`.
    pub(crate) fn of(signer: &dyn KeySigner) -> Self {
        let spki_der = signer.public_key_spki_der().to_vec();
        let alg = signer.algorithm();
        let parsed = match alg {
            Algorithm::RsaPssSha256(_) => None,
            _ => subject_public_key(&spki_der)
                .ok()
                .and_then(|raw| ParsedPublicKey::new(alg.verification(), raw).ok()),
        };
        IssuerKey {
            spki_der,
            alg,
            uri: signer.uri().to_string(),
            parsed,
        }
    }

    /// Whether `signature` over `message` verifies under this key.
    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.parsed {
            Some(key) => key.verify_sig(message, signature).is_ok(),
            None => verify_signature(self.alg, &self.spki_der, message, signature).is_ok(),
        }
    }
}

/// Parses `der` (without decoding extensions: the check needs the signature, the key,
/// the names and the dates) and verifies its signature under `issuer`'s public key
/// with [`crate::verify_signature`].
fn parse_and_verify<'a>(der: &'a [u8], issuer: &IssuerKey) -> Result<X509Certificate<'a>, Error> {
    let (rest, cert) = X509CertificateParser::new()
        .with_deep_parse_extensions(false)
        .parse(der)
        .map_err(|e| {
            Error::Verification(format!(
                "the certificate signed by {} does not parse: {e}",
                issuer.uri
            ))
        })?;
    if !rest.is_empty() {
        return Err(Error::Verification(format!(
            "the certificate signed by {} has trailing bytes",
            issuer.uri
        )));
    }
    if !issuer.verifies(cert.tbs_certificate.as_ref(), &cert.signature_value.data) {
        return Err(Error::Verification(format!(
            "the certificate just issued does not verify under the public key of {}; \
             its backend returned a bad signature",
            issuer.uri
        )));
    }
    Ok(cert)
}

/// The post-issuance check on its own: `cert_der` must parse and its signature must
/// verify under `issuer`'s public key. Issuance runs it on every certificate; it is
/// public for callers that want to re-check certificates they load, and for benchmarks.
pub fn verify_issued(cert_der: &[u8], issuer: &dyn KeySigner) -> Result<(), Error> {
    parse_and_verify(cert_der, &IssuerKey::of(issuer)).map(|_| ())
}

/// Runs the post-issuance check on `der`, checks it carries `subject_key` (the raw
/// subjectPublicKey bits that were asked for), and describes it.
pub(crate) fn check_issued(
    der: Vec<u8>,
    issuer: &IssuerKey,
    subject_key: &[u8],
) -> Result<IssuedCertificate, Error> {
    let cert = parse_and_verify(&der, issuer)?;
    if cert.public_key().subject_public_key.data.as_ref() != subject_key {
        return Err(Error::Verification(format!(
            "the certificate signed by {} carries another public key than the one requested",
            issuer.uri
        )));
    }
    let not_before: OffsetDateTime = to_datetime(cert.validity().not_before);
    let not_after: OffsetDateTime = to_datetime(cert.validity().not_after);
    let serial = serial_hex(cert.raw_serial());
    let subject = name_to_string(cert.subject());
    drop(cert);
    Ok(IssuedCertificate {
        der,
        serial_hex: serial,
        subject,
        not_before,
        not_after,
    })
}

/// Checks that a CSR produced for `signer` parses and verifies under its public key.
pub(crate) fn check_csr(der: &[u8], issuer: &IssuerKey) -> Result<(), Error> {
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::prelude::FromDer;
    let (_, csr) = X509CertificationRequest::from_der(der).map_err(|e| {
        Error::Verification(format!(
            "the CSR signed by {} does not parse: {e}",
            issuer.uri
        ))
    })?;
    if !issuer.verifies(
        csr.certification_request_info.raw,
        &csr.signature_value.data,
    ) {
        return Err(Error::Verification(format!(
            "the CSR just signed does not verify under the public key of {}; \
             its backend returned a bad signature",
            issuer.uri
        )));
    }
    Ok(())
}

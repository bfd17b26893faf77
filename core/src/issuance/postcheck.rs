//! The post-issuance check: every certificate keyward produces is parsed back and its
//! signature verified under the issuer's public key before anyone sees it, so a backend
//! that returns a malformed or wrong signature is caught at once.
//!
//! Issuance reads back only what the check and the description need (the TBS bytes,
//! the signature, the serial, validity, subject and subject key) and skips the issuer
//! name and the extensions it has just encoded itself: about 4 µs less per certificate
//! than a full parse. [`verify_issued`], for certificates from elsewhere, parses fully.

use time::OffsetDateTime;

use super::IssuedCertificate;
use x509_parser::asn1_rs::{Class, FromDer, Tag};
use x509_parser::certificate::{Validity, X509Certificate, X509CertificateParser};
use x509_parser::nom::Parser;
use x509_parser::x509::{SubjectPublicKeyInfo, X509Name};

use crate::check::{general_name_to_string, name_to_string, serial_hex, to_datetime};
use crate::der::element;
use aws_lc_rs::signature::ParsedPublicKey;
use x509_parser::extensions::SubjectAlternativeName;
use x509_parser::oid_registry::OID_X509_EXT_SUBJECT_ALT_NAME;

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
        return Err(bad_signature(issuer));
    }
    Ok(cert)
}

fn bad_signature(issuer: &IssuerKey) -> Error {
    Error::Verification(format!(
        "the certificate just issued does not verify under the public key of {}; \
         its backend returned a bad signature",
        issuer.uri
    ))
}

/// The post-issuance check on its own: `cert_der` must parse and its signature must
/// verify under `issuer`'s public key. Issuance runs it on every certificate; it is
/// public for callers that want to re-check certificates they load, and for benchmarks.
pub fn verify_issued(cert_der: &[u8], issuer: &dyn KeySigner) -> Result<(), Error> {
    parse_and_verify(cert_der, &IssuerKey::of(issuer)).map(|_| ())
}

/// What the check reads of a certificate keyward has just encoded.
struct Parts<'a> {
    tbs: &'a [u8],
    signature: &'a [u8],
    serial: &'a [u8],
    issuer: X509Name<'a>,
    validity: Validity,
    subject: X509Name<'a>,
    subject_key: SubjectPublicKeyInfo<'a>,
    /// The content of the TBS's `[3]` (the SEQUENCE OF Extension), when there is one.
    extensions: Option<&'a [u8]>,
}

/// Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue } and,
/// in the TBS, the version, serial, signature, issuer, validity, subject, subject key
/// and where the extensions are (RFC 5280, 4.1), nothing after; `None` when `der` is
/// not laid out so.
fn parts(der: &[u8]) -> Option<Parts<'_>> {
    let (cert, rest) = element(der, Some(Tag::Sequence))?;
    let (tbs_element, after_tbs) = element(cert.data, Some(Tag::Sequence))?;
    let tbs = &cert.data[..cert.data.len() - after_tbs.len()];
    let (_, after_algorithm) = element(after_tbs, Some(Tag::Sequence))?;
    let (bits, end) = element(after_algorithm, Some(Tag::BitString))?;
    let signature = bits.data.strip_prefix(&[0])?;
    let mut fields = tbs_element.data;
    if let Some((version, rest)) = element(fields, None)
        && version.class() == Class::ContextSpecific
    {
        fields = rest;
    }
    let (serial, fields) = element(fields, Some(Tag::Integer))?;
    let (_, fields) = element(fields, Some(Tag::Sequence))?;
    let (fields, issuer) = X509Name::from_der(fields).ok()?;
    let (fields, validity) = Validity::from_der(fields).ok()?;
    let (fields, subject) = X509Name::from_der(fields).ok()?;
    let (mut fields, subject_key) = SubjectPublicKeyInfo::from_der(fields).ok()?;
    // issuerUniqueID [1], subjectUniqueID [2], extensions [3].
    let mut extensions = None;
    while let Some((field, after)) = element(fields, None) {
        if field.class() == Class::ContextSpecific && field.tag() == Tag(3) {
            extensions = Some(field.data);
        }
        fields = after;
    }
    (rest.is_empty() && end.is_empty()).then_some(Parts {
        tbs,
        signature,
        serial: serial.data,
        issuer,
        validity,
        subject,
        subject_key,
        extensions,
    })
}

/// The subject alternative names in `extensions` (the content of a TBS's `[3]`), as
/// [`crate::check::summarize`] lists them; only that extension is decoded.
fn sans_of(extensions: &[u8]) -> Vec<String> {
    let Some((list, _)) = element(extensions, Some(Tag::Sequence)) else {
        return Vec::new();
    };
    let mut rest = list.data;
    while let Some((extension, after)) = element(rest, Some(Tag::Sequence)) {
        rest = after;
        let Some((oid, mut value)) = element(extension.data, Some(Tag::Oid)) else {
            return Vec::new();
        };
        if oid.data != OID_X509_EXT_SUBJECT_ALT_NAME.as_bytes() {
            continue;
        }
        if let Some((_, after_critical)) = element(value, Some(Tag::Boolean)) {
            value = after_critical;
        }
        return element(value, Some(Tag::OctetString))
            .and_then(|(octets, _)| SubjectAlternativeName::from_der(octets.data).ok())
            .map(|(_, san)| {
                san.general_names
                    .iter()
                    .map(general_name_to_string)
                    .collect()
            })
            .unwrap_or_default();
    }
    Vec::new()
}

/// Runs the post-issuance check on `der`, checks it carries `subject_key` (the raw
/// subjectPublicKey bits that were asked for), and describes it.
pub(crate) fn check_issued(
    der: Vec<u8>,
    issuer: &IssuerKey,
    subject_key: &[u8],
) -> Result<IssuedCertificate, Error> {
    let cert = parts(&der).ok_or_else(|| {
        Error::Verification(format!(
            "the certificate signed by {} does not parse as X.509",
            issuer.uri
        ))
    })?;
    if !issuer.verifies(cert.tbs, cert.signature) {
        return Err(bad_signature(issuer));
    }
    if cert.subject_key.subject_public_key.data.as_ref() != subject_key {
        return Err(Error::Verification(format!(
            "the certificate signed by {} carries another public key than the one requested",
            issuer.uri
        )));
    }
    let not_before: OffsetDateTime = to_datetime(cert.validity.not_before);
    let not_after: OffsetDateTime = to_datetime(cert.validity.not_after);
    let serial = serial_hex(cert.serial);
    let subject = name_to_string(&cert.subject);
    let issuer_name = name_to_string(&cert.issuer);
    let sans = cert.extensions.map(sans_of).unwrap_or_default();
    drop(cert);
    Ok(IssuedCertificate {
        der,
        serial_hex: serial,
        subject,
        issuer: issuer_name,
        sans,
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

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};
    use x509_parser::prelude::FromDer;

    fn sample() -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["svc.example".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "svc.example");
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn parts_reads_what_a_full_parse_reads() {
        let der = sample();
        let p = parts(&der).expect("parts of an rcgen certificate");
        let (_, full) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(p.tbs, full.tbs_certificate.as_ref());
        assert_eq!(p.signature, full.signature_value.data.as_ref());
        assert_eq!(p.serial, full.raw_serial());
        assert_eq!(p.validity.not_after, full.validity().not_after);
        assert_eq!(name_to_string(&p.subject), name_to_string(full.subject()));
        assert_eq!(p.subject_key.raw, full.public_key().raw);
    }

    #[test]
    fn parts_refuses_what_is_not_one_certificate() {
        let der = sample();
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(parts(&trailing).is_none(), "trailing bytes");
        assert!(parts(&der[..der.len() - 1]).is_none(), "truncated");
        assert!(parts(&[0x30, 0x00]).is_none(), "empty sequence");
    }
}

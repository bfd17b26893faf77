//! Reading certificate signing requests: decode, verify the request's own signature,
//! keep only its names (SANs and CN) and its key. Whatever else a CSR asks for (CA:TRUE,
//! keyCertSign, other usages) is never granted.

use std::net::IpAddr;

use rcgen::{CertificateSigningRequestParams, DnType, DnValue, IsCa, KeyUsagePurpose, SanType};
use x509_parser::asn1_rs::Tag;
use x509_parser::oid_registry::OID_PKCS1_RSASSAPSS;

use super::adapter::SubjectKey;
use super::names::{check_dns_name, check_uri};
use crate::Error;
use crate::der::element;

/// What keyward takes from a CSR.
pub(crate) struct CsrRequest {
    /// The requester's public key.
    pub key: SubjectKey,
    /// The subject's common name, if it has one.
    pub common_name: Option<String>,
    /// DNS SANs, checked.
    pub dns: Vec<String>,
    /// IP SANs.
    pub ips: Vec<IpAddr>,
    /// URI SANs, checked.
    pub uris: Vec<String>,
}

fn malformed(why: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!("malformed CSR: {why}"))
}

/// The DER of a CSR given as PEM (`CERTIFICATE REQUEST`) or DER.
fn decode(input: &[u8]) -> Result<Vec<u8>, Error> {
    let trimmed = input.trim_ascii_start();
    if trimmed.is_empty() {
        return Err(malformed("the input is empty"));
    }
    if trimmed.starts_with(b"-----BEGIN") {
        let block = pem::parse(trimmed).map_err(malformed)?;
        if !matches!(
            block.tag(),
            "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST"
        ) {
            return Err(malformed(format!(
                "the PEM block is '{}', expected 'CERTIFICATE REQUEST'",
                block.tag()
            )));
        }
        return Ok(block.into_contents());
    }
    if trimmed[0] != 0x30 {
        return Err(malformed("neither PEM nor DER"));
    }
    Ok(input.to_vec())
}

/// Maps rcgen's CSR errors to one-line keyward errors.
fn map_csr_error(e: rcgen::Error) -> Error {
    match e {
        rcgen::Error::InvalidCertificationRequestSignature => {
            Error::InvalidInput("CSR signature does not verify".into())
        }
        rcgen::Error::UnsupportedSignatureAlgorithm => {
            Error::Unsupported("CSR signature algorithm is not supported".into())
        }
        rcgen::Error::UnsupportedExtension => Error::Unsupported(
            "CSR requests an extension keyward does not read (only subjectAltName, keyUsage, \
             extendedKeyUsage and basicConstraints are accepted)"
                .into(),
        ),
        rcgen::Error::InvalidNameType => Error::Unsupported(
            "CSR asks for a kind of subject alternative name keyward does not issue".into(),
        ),
        other => malformed(other),
    }
}

/// What is read of a CSR before rcgen parses it whole: its key and how it is signed.
struct Outline<'a> {
    /// The requester's SubjectPublicKeyInfo, DER.
    spki: &'a [u8],
    /// The content of the signature algorithm's OID.
    signature_algorithm: &'a [u8],
}

/// The outline of `der` (RFC 2986, 4): `CertificationRequest ::= SEQUENCE {
/// certificationRequestInfo SEQUENCE { version, subject, subjectPKInfo, attributes },
/// signatureAlgorithm, signature }` and nothing after it. Only the elements it reads
/// are checked here; rcgen's parse of the whole request checks the rest, so the request
/// is decoded once, not twice.
fn outline(der: &[u8]) -> Result<Outline<'_>, Error> {
    let not_a_request = || malformed("not a DER certification request");
    let (request, rest) = element(der, Some(Tag::Sequence)).ok_or_else(not_a_request)?;
    if !rest.is_empty() {
        return Err(malformed("trailing bytes after the request"));
    }
    let (info, after_info) =
        element(request.data, Some(Tag::Sequence)).ok_or_else(not_a_request)?;
    let (algorithm, _) = element(after_info, Some(Tag::Sequence)).ok_or_else(not_a_request)?;
    let (oid, _) = element(algorithm.data, Some(Tag::Oid)).ok_or_else(not_a_request)?;
    let (_, fields) = element(info.data, Some(Tag::Integer)).ok_or_else(not_a_request)?;
    let (_, fields) = element(fields, Some(Tag::Sequence)).ok_or_else(not_a_request)?;
    let (_, after_spki) = element(fields, Some(Tag::Sequence)).ok_or_else(not_a_request)?;
    Ok(Outline {
        spki: &fields[..fields.len() - after_spki.len()],
        signature_algorithm: oid.data,
    })
}

/// Decodes and checks a CSR (PEM or DER) and returns what a certificate may take from it.
pub(crate) fn read_csr(input: &[u8]) -> Result<CsrRequest, Error> {
    let der = decode(input)?;
    let outline = outline(&der)?;
    if outline.signature_algorithm == OID_PKCS1_RSASSAPSS.as_bytes() {
        return Err(Error::Unsupported(
            "CSR is signed with RSA-PSS, which keyward does not accept; sign the request with \
             PKCS#1 v1.5 (openssl's default)"
                .into(),
        ));
    }
    // rcgen parses the request whole, verifies its signature and decodes the requested
    // extensions.
    let params = CertificateSigningRequestParams::from_der(&der.as_slice().into())
        .map_err(map_csr_error)?
        .params;
    let key = SubjectKey::from_spki(outline.spki)?;

    let common_name = match params.distinguished_name.get(&DnType::CommonName) {
        None => None,
        Some(DnValue::Utf8String(s)) => Some(s.clone()),
        Some(DnValue::PrintableString(s)) => Some(s.as_str().to_owned()),
        Some(DnValue::Ia5String(s)) => Some(s.as_str().to_owned()),
        Some(_) => {
            return Err(Error::Unsupported(
                "CSR common name uses a string type keyward does not read (use UTF8String or PrintableString)"
                    .into(),
            ));
        }
    };
    if let Some(cn) = &common_name {
        super::names::check_common_name(cn).map_err(malformed)?;
    }

    let (mut dns, mut ips, mut uris) = (Vec::new(), Vec::new(), Vec::new());
    for san in &params.subject_alt_names {
        match san {
            SanType::DnsName(n) => {
                check_dns_name(n.as_str())?;
                dns.push(n.as_str().to_owned());
            }
            SanType::IpAddress(ip) => ips.push(*ip),
            SanType::URI(u) => {
                check_uri(u.as_str())?;
                uris.push(u.as_str().to_owned());
            }
            SanType::Rfc822Name(e) => {
                return Err(Error::Unsupported(format!(
                    "CSR asks for the email name '{}'; keyward issues DNS, IP and URI names only",
                    e.as_str()
                )));
            }
            _ => {
                return Err(Error::Unsupported(
                    "CSR asks for an otherName; keyward issues DNS, IP and URI names only".into(),
                ));
            }
        }
    }
    let wants_ca = matches!(params.is_ca, IsCa::Ca(_))
        || params
            .key_usages
            .iter()
            .any(|k| matches!(k, KeyUsagePurpose::KeyCertSign | KeyUsagePurpose::CrlSign));
    if wants_ca {
        tracing::warn!(
            common_name = common_name.as_deref().unwrap_or(""),
            "CSR asks for CA:TRUE or certificate signing; ignored, a service certificate is issued"
        );
    }
    if common_name.is_none() && dns.is_empty() && ips.is_empty() && uris.is_empty() {
        return Err(Error::InvalidInput(
            "CSR has neither a subject alternative name nor a common name".into(),
        ));
    }
    Ok(CsrRequest {
        key,
        common_name,
        dns,
        ips,
        uris,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::prelude::FromDer;

    fn request() -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["device-7.iot.internal".into()]).unwrap();
        params.serialize_request(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_outline_reads_what_a_full_parse_reads() {
        let der = request();
        let outline = outline(&der).unwrap();
        let (_, full) = X509CertificationRequest::from_der(&der).unwrap();
        assert_eq!(
            outline.spki,
            full.certification_request_info.subject_pki.raw
        );
        assert_eq!(
            outline.signature_algorithm,
            full.signature_algorithm.algorithm.as_bytes()
        );
    }

    #[test]
    fn a_request_with_bytes_after_it_is_refused() {
        let mut der = request();
        der.push(0);
        let e = read_csr(&der).err().unwrap().to_string();
        assert!(e.contains("trailing bytes after the request"), "{e}");
        let e = read_csr(&der[..der.len() - 2]).err().unwrap().to_string();
        assert!(e.contains("malformed CSR"), "{e}");
    }
}

//! What a `SignX509SVID` CSR asks for, checked: its signature verifies under its own
//! key (the caller holds the private key), it asks for exactly one URI SAN, and for no
//! CA powers (CA:TRUE, keyCertSign, cRLSign). Whether the names are the caller's is
//! checked against its entries by the service.

use std::net::IpAddr;

use tonic::Status;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// A checked CSR.
pub struct Asked {
    /// The key to certify, DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
    /// The one URI SAN (the SPIFFE ID asked for).
    pub spiffe_id: String,
    /// The DNS SANs asked for.
    pub dns: Vec<String>,
    /// The IP SANs asked for.
    pub ips: Vec<IpAddr>,
}

/// Reads and checks a DER CSR; a refusal is `InvalidArgument` (malformed, bad
/// signature) or `PermissionDenied` (CA powers asked for).
pub fn read(der: &[u8]) -> Result<Asked, Status> {
    let bad = |why: String| Status::invalid_argument(format!("the CSR {why}"));
    let (rest, csr) = X509CertificationRequest::from_der(der)
        .map_err(|e| bad(format!("is not a DER PKCS#10 request: {e}")))?;
    if !rest.is_empty() {
        return Err(bad("has trailing bytes".into()));
    }
    csr.verify_signature().map_err(|e| {
        bad(format!(
            "signature does not verify under its own key (no proof of possession): {e}"
        ))
    })?;
    let mut asked = Asked {
        spki: csr.certification_request_info.subject_pki.raw.to_vec(),
        spiffe_id: String::new(),
        dns: Vec::new(),
        ips: Vec::new(),
    };
    let mut uris = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        match ext {
            ParsedExtension::BasicConstraints(bc) if bc.ca => {
                return Err(Status::permission_denied(
                    "the CSR asks for CA:TRUE; an X.509-SVID is never a CA",
                ));
            }
            ParsedExtension::KeyUsage(ku) if ku.key_cert_sign() || ku.crl_sign() => {
                return Err(Status::permission_denied(
                    "the CSR asks for keyCertSign or cRLSign; an X.509-SVID signs no certificates",
                ));
            }
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::URI(u) => uris.push(u.to_string()),
                        GeneralName::DNSName(d) => asked.dns.push(d.to_string()),
                        GeneralName::IPAddress(b) => asked.ips.push(ip(b).ok_or_else(|| {
                            bad(format!("asks for an IP SAN of {} bytes", b.len()))
                        })?),
                        other => return Err(bad(format!("asks for an unsupported SAN: {other}"))),
                    }
                }
            }
            ParsedExtension::ParseError { error } => {
                return Err(bad(format!(
                    "has an extension that does not parse: {error}"
                )));
            }
            _ => {}
        }
    }
    match <[String; 1]>::try_from(uris) {
        Ok([id]) => asked.spiffe_id = id,
        Err(uris) => {
            return Err(bad(format!(
                "asks for {} URI SANs; it must ask for exactly one, the SPIFFE ID",
                uris.len()
            )));
        }
    }
    Ok(asked)
}

/// An IP SAN's octets as an address.
fn ip(octets: &[u8]) -> Option<IpAddr> {
    match octets.len() {
        4 => <[u8; 4]>::try_from(octets).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(octets).ok().map(IpAddr::from),
        _ => None,
    }
}

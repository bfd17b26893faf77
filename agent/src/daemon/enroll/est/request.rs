//! What an EST client asks for: the PKCS#10 body of `simpleenroll`/`simplereenroll`
//! (base64 DER, RFC 7030 4.2.1), checked before anything is written: it parses, its
//! signature verifies with its own key (proof of possession), and its names are the
//! ones the client may have.

use std::collections::BTreeSet;
use std::net::IpAddr;

use base64::Engine;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::X509Name;

/// A CSR whose signature verified, with its names.
#[derive(Debug)]
pub struct CheckedCsr {
    /// The CSR, DER.
    pub der: Vec<u8>,
    /// Its subject, DER.
    pub subject_der: Vec<u8>,
    /// Its subject as text (`CN=dev-42`), for logs and the inventory.
    pub subject: String,
    /// Its common name, when it has one.
    pub common_name: Option<String>,
    /// Its subject alternative names, as `DNS:x`, `IP:x`, `URI:x`.
    pub sans: BTreeSet<String>,
}

/// Decodes and checks the body of an enrollment request; the error is the reason to
/// give the client.
pub fn read(body: &[u8]) -> Result<CheckedCsr, String> {
    let text: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(&text)
        .map_err(|_| "the body is not a base64 PKCS#10 request (RFC 7030 4.2.1)".to_string())?;
    let (rest, csr) = X509CertificationRequest::from_der(&der)
        .map_err(|e| format!("the PKCS#10 request does not parse: {e}"))?;
    if !rest.is_empty() {
        return Err("the PKCS#10 request has trailing bytes".into());
    }
    csr.verify_signature()
        .map_err(|_| "the request's signature does not verify with its own key".to_string())?;
    let info = &csr.certification_request_info;
    let mut sans = BTreeSet::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            sans.extend(san.general_names.iter().map(general_name));
        }
    }
    Ok(CheckedCsr {
        subject_der: info.subject.as_raw().to_vec(),
        subject: info.subject.to_string(),
        common_name: common_name(&info.subject),
        sans,
        der,
    })
}

/// The first common name of `name`.
fn common_name(name: &X509Name<'_>) -> Option<String> {
    name.iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
}

/// A SAN as text: `DNS:x`, `IP:x`, `URI:x`, `email:x`, or its debug form.
fn general_name(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::DNSName(d) => format!("DNS:{d}"),
        GeneralName::URI(u) => format!("URI:{u}"),
        GeneralName::RFC822Name(e) => format!("email:{e}"),
        GeneralName::IPAddress(bytes) => match <[u8; 4]>::try_from(*bytes) {
            Ok(v4) => format!("IP:{}", IpAddr::from(v4)),
            Err(_) => match <[u8; 16]>::try_from(*bytes) {
                Ok(v6) => format!("IP:{}", IpAddr::from(v6)),
                Err(_) => format!("IP:{}", hex::encode(bytes)),
            },
        },
        other => format!("{other:?}"),
    }
}

impl CheckedCsr {
    /// The name its certificate gets in the inventory: `est:` and the common name (or
    /// the subject, without one).
    pub fn inventory_name(&self) -> String {
        format!(
            "est:{}",
            self.common_name.as_deref().unwrap_or(&self.subject)
        )
    }

    /// First enrollment with a bootstrap secret: the common name must be the device's
    /// name, and every SAN one its secret allows (`sans`: DNS names and IPs).
    pub fn check_bootstrap(&self, name: &str, sans: &[String]) -> Result<(), String> {
        if self.common_name.as_deref() != Some(name) {
            return Err(format!(
                "the request's common name must be the device name '{name}'"
            ));
        }
        let allowed: BTreeSet<String> = sans
            .iter()
            .map(|s| match s.parse::<IpAddr>() {
                Ok(ip) => format!("IP:{ip}"),
                Err(_) => format!("DNS:{s}"),
            })
            .collect();
        match self.sans.difference(&allowed).next() {
            None => Ok(()),
            Some(extra) => Err(format!(
                "the request asks for {extra}, which the bootstrap secret of '{name}' does not allow"
            )),
        }
    }

    /// Enrollment with a certificate (re-enrollment, or a manufacturer's device
    /// certificate): the subject must be the certificate's and every SAN one the
    /// certificate has (RFC 7030 4.2.2 asks for the same names; the CA adds the common
    /// name as a DNS SAN, so a request without SANs renews a certificate with that one).
    pub fn check_same_names(&self, cert: &X509Certificate<'_>) -> Result<(), String> {
        if self.subject_der != cert.subject().as_raw() {
            return Err(format!(
                "the request's subject '{}' is not the certificate's '{}'",
                self.subject,
                cert.subject()
            ));
        }
        let cert_sans: BTreeSet<String> = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|ext| ext.value.general_names.iter().map(general_name).collect())
            .unwrap_or_default();
        match self.sans.difference(&cert_sans).next() {
            None => Ok(()),
            Some(extra) => Err(format!(
                "the request asks for {extra}, which the certificate does not have"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr_b64(cn: &str, sans: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let der = params.serialize_request(&key).unwrap().der().to_vec();
        base64::engine::general_purpose::STANDARD
            .encode(der)
            .into_bytes()
    }

    #[test]
    fn a_good_request_reads_with_its_names() {
        let csr = read(&csr_b64("dev-42", &["dev-42.internal"])).unwrap();
        assert_eq!(csr.common_name.as_deref(), Some("dev-42"));
        assert!(csr.sans.contains("DNS:dev-42.internal"));
        csr.check_bootstrap("dev-42", &["dev-42.internal".into()])
            .unwrap();
        assert!(csr.check_bootstrap("dev-42", &[]).is_err());
        assert!(
            csr.check_bootstrap("dev-43", &["dev-42.internal".into()])
                .is_err()
        );
    }

    #[test]
    fn a_request_whose_signature_does_not_verify_is_refused() {
        let b64 = csr_b64("dev-42", &[]);
        let mut der = base64::engine::general_purpose::STANDARD
            .decode(&b64)
            .unwrap();
        let last = der.len() - 1;
        der[last] ^= 1;
        let tampered = base64::engine::general_purpose::STANDARD.encode(der);
        let err = read(tampered.as_bytes()).unwrap_err();
        assert!(err.contains("signature"), "{err}");
        assert!(read(b"not base64 at all!").is_err());
    }
}

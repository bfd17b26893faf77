//! Helpers shared by the integration tests: software keys, CAs, profiles, and
//! x509-parser shortcuts.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use keyward_core::issuance::{self, CaIssuer, IssuedCertificate, ServiceProfile};
use keyward_core::{Algorithm, KeySigner, KeyUri, RsaBits};
use keyward_software::SoftwareKey;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use zeroize::Zeroizing;

pub const DAY: u64 = 86_400;

/// The six algorithms rcgen can sign certificates with.
pub const RCGEN_ALGORITHMS: [Algorithm; 6] = [
    Algorithm::EcdsaP256Sha256,
    Algorithm::EcdsaP384Sha384,
    Algorithm::Ed25519,
    Algorithm::RsaPkcs1Sha256(RsaBits::B2048),
    Algorithm::RsaPkcs1Sha256(RsaBits::B3072),
    Algorithm::RsaPkcs1Sha256(RsaBits::B4096),
];

/// A `file:` URI naming an in-memory test key (nothing is written there).
pub fn uri(label: &str) -> KeyUri {
    KeyUri::parse(&format!("file:/nonexistent/keyward-tests/{label}.pem")).unwrap()
}

/// A fresh in-memory software key and its PKCS#8 DER.
pub fn key(alg: Algorithm, label: &str) -> (Arc<dyn KeySigner>, Zeroizing<Vec<u8>>) {
    let (k, pkcs8) = SoftwareKey::generate(alg, uri(label)).unwrap();
    (Arc::new(k), pkcs8)
}

/// A self-signed root CA of `alg` with `subject`, as an issuer.
pub async fn root(alg: Algorithm, subject: &str, validity: Duration) -> CaIssuer {
    let (k, _) = key(alg, &format!("root-{}", alg.name()));
    let cert = issuance::self_signed_root(k.clone(), subject, validity)
        .await
        .unwrap();
    CaIssuer::new(cert.der, vec![], k).unwrap()
}

/// An intermediate CA of `alg` under `parent`, as an issuer.
pub async fn intermediate(parent: &CaIssuer, alg: Algorithm, subject: &str) -> CaIssuer {
    let (k, _) = key(alg, &format!("int-{}", alg.name()));
    let cert = parent
        .issue_intermediate(
            k.public_key_spki_der(),
            subject,
            issuance::DEFAULT_INTERMEDIATE_VALIDITY,
        )
        .await
        .unwrap();
    let mut chain = vec![parent.certificate_der().to_vec()];
    chain.extend(parent.chain_der().iter().cloned());
    CaIssuer::new(cert.der, chain, k).unwrap()
}

/// A service profile valid for 90 days.
pub fn profile(cn: &str, dns: &[&str]) -> ServiceProfile {
    ServiceProfile {
        common_name: cn.to_string(),
        dns: dns.iter().map(|s| s.to_string()).collect(),
        ips: vec![],
        uris: vec![],
        validity: Duration::from_secs(90 * DAY),
    }
}

/// A service certificate for a fresh key of `alg`, with the key's PKCS#8.
pub async fn service(
    ca: &CaIssuer,
    alg: Algorithm,
    p: &ServiceProfile,
) -> (IssuedCertificate, Zeroizing<Vec<u8>>) {
    let (k, pkcs8) = key(alg, &format!("leaf-{}", p.common_name));
    let cert = ca.issue_service(k.public_key_spki_der(), p).await.unwrap();
    (cert, pkcs8)
}

/// Parses a DER certificate that must be well-formed.
pub fn parse(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) = X509Certificate::from_der(der).unwrap();
    assert!(rest.is_empty());
    cert
}

/// The chain a CA hands out with a leaf: the CA itself, then what is above it, minus the root.
pub fn untrusted_chain(ca: &CaIssuer) -> Vec<Vec<u8>> {
    let mut all = vec![ca.certificate_der().to_vec()];
    all.extend(ca.chain_der().iter().cloned());
    all.pop(); // the root is the trust anchor
    all
}

/// The root at the top of `ca`'s chain.
pub fn root_of(ca: &CaIssuer) -> Vec<u8> {
    ca.chain_der()
        .last()
        .cloned()
        .unwrap_or_else(|| ca.certificate_der().to_vec())
}

/// Asserts an error is one line and contains `want`.
pub fn assert_err<T: std::fmt::Debug>(
    r: Result<T, keyward_core::Error>,
    want: &str,
) -> keyward_core::Error {
    let e = r.expect_err("expected an error");
    let line = e.to_string();
    assert!(
        line.contains(want),
        "error {line:?} does not mention {want:?}"
    );
    assert!(!line.contains('\n'), "error is not one line: {line:?}");
    e
}

//! Service-certificate issuance as `keyward issue` does it, minus the files: a new
//! P-256 leaf key in memory, then `CaIssuer::issue_service` (which signs through the
//! CA's `KeySigner` and checks the result under the CA key before returning it).

use std::sync::Arc;
use std::time::Duration;

use keyward_core::issuance::{CaIssuer, ServiceProfile, self_signed_root};
use keyward_core::{Algorithm, KeySigner, KeyUri};
use keyward_software::SoftwareKey;

/// Validity of the benchmark's service certificates (and of OpenBao's, for row 3).
pub const LEAF_VALIDITY: Duration = Duration::from_secs(86_400);

/// The names of the `i`-th benchmark certificate: the CN (also a DNS SAN) and a
/// SPIFFE URI SAN, the same for keyward and for OpenBao PKI.
pub fn names(i: u64) -> (String, String) {
    (
        format!("svc-{i}.bench.internal"),
        format!("spiffe://bench.internal/svc-{i}"),
    )
}

/// A root CA over `signer`, ready to issue, and the to-be-signed bytes of one service
/// certificate it issued (the message the raw signing baselines sign).
pub async fn root_issuer(signer: Arc<dyn KeySigner>) -> (CaIssuer, Vec<u8>) {
    let root = self_signed_root(
        signer.clone(),
        "CN=keyward bench root",
        Duration::from_secs(365 * 86_400),
    )
    .await
    .expect("self-signed root for the benchmark CA");
    let ca = CaIssuer::new(root.der, Vec::new(), signer).expect("CA issuer");
    let der = issue_one(&ca, 0).await;
    let tbs = tbs_of(&der);
    (ca, tbs)
}

/// The TBSCertificate bytes of a DER certificate.
fn tbs_of(der: &[u8]) -> Vec<u8> {
    use x509_parser::prelude::FromDer;
    let (_, cert) =
        x509_parser::certificate::X509Certificate::from_der(der).expect("parse issued cert");
    cert.tbs_certificate.as_ref().to_vec()
}

/// One service certificate with a fresh leaf key; returns its DER.
pub async fn issue_one(ca: &CaIssuer, i: u64) -> Vec<u8> {
    let leaf_uri = KeyUri::file("/nonexistent/keyward-bench/leaf.pem").expect("leaf uri");
    let (leaf, pkcs8) =
        SoftwareKey::generate(Algorithm::EcdsaP256Sha256, leaf_uri).expect("leaf key");
    let (name, uri) = names(i);
    let profile = ServiceProfile {
        common_name: name.clone(),
        dns: vec![name],
        ips: Vec::new(),
        uris: vec![uri],
        validity: LEAF_VALIDITY,
    };
    let cert = ca
        .issue_service(leaf.public_key_spki_der(), &profile)
        .await
        .expect("issue a service certificate");
    std::hint::black_box(pkcs8);
    cert.der
}

//! What issuance reports of a certificate it has just signed and checked (serial,
//! subject, issuer, SANs, validity) is exactly what `check::summarize` reads from the
//! certificate: the inventory records it without parsing the certificate again.

mod common;

use std::time::Duration;

use common::*;
use keyward_core::issuance::{IssuedCertificate, ServiceProfile};
use keyward_core::{Algorithm, check};

/// The fields of `cert` as issuance reported them, beside `check::summarize`'s.
fn assert_as_summarized(cert: &IssuedCertificate) {
    let s = check::summarize(&cert.der).unwrap();
    assert_eq!(cert.serial_hex, s.serial_hex);
    assert_eq!(cert.subject, s.subject);
    assert_eq!(cert.issuer, s.issuer);
    assert_eq!(cert.sans, s.sans);
    assert_eq!(cert.not_before, s.not_before);
    assert_eq!(cert.not_after, s.not_after);
}

#[tokio::test]
async fn issuance_reports_what_summarize_reads_for_dns_ip_and_uri_names() {
    let root = root(
        Algorithm::EcdsaP256Sha256,
        "CN=Fields Root,O=Example \\, Inc.,C=DE",
        Duration::from_secs(3650 * DAY),
    )
    .await;
    let int = intermediate(&root, Algorithm::EcdsaP384Sha384, "CN=Fields Int,OU=Ops").await;
    let profile = ServiceProfile {
        common_name: "api.example.internal".into(),
        dns: vec![
            "api.example.internal".into(),
            "*.api.example.internal".into(),
        ],
        ips: vec!["10.1.2.3".parse().unwrap(), "fd00::1:2".parse().unwrap()],
        uris: vec![
            "spiffe://example.org/api".into(),
            "https://example.org/x".into(),
        ],
        validity: Duration::from_secs(30 * DAY),
    };
    for ca in [&root, &int] {
        for alg in [Algorithm::EcdsaP256Sha256, Algorithm::Ed25519] {
            let (cert, _) = service(ca, alg, &profile).await;
            assert_eq!(cert.sans.len(), 6, "{:?}", cert.sans);
            assert_as_summarized(&cert);
        }
    }
    // An intermediate has no SANs; a certificate from a CSR has the CSR's.
    let (k, _) = key(Algorithm::EcdsaP256Sha256, "sub-int");
    let sub = root
        .issue_intermediate(k.public_key_spki_der(), "CN=Sub", Duration::from_secs(DAY))
        .await
        .unwrap();
    assert!(sub.sans.is_empty());
    assert_as_summarized(&sub);
    let device = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![
        "dev-1.devices.internal".to_string(),
        "192.0.2.7".to_string(),
    ])
    .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dev-1.devices.internal");
    let csr = params.serialize_request(&device).unwrap();
    let cert = int
        .sign_csr(csr.pem().unwrap().as_bytes(), Duration::from_secs(DAY))
        .await
        .unwrap();
    assert_eq!(cert.sans, ["DNS:dev-1.devices.internal", "IP:192.0.2.7"]);
    assert_as_summarized(&cert);
}

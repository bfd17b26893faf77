//! CSR signing against the fixtures in testdata/csr (see its README for how they were made).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use keyward_core::issuance::{self, CaIssuer};
use keyward_core::{Algorithm, Error, check};
use time::OffsetDateTime;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

fn fixture(name: &str) -> Vec<u8> {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "testdata", "csr", name]
        .iter()
        .collect();
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn der_of(pem_csr: &[u8]) -> Vec<u8> {
    pem::parse(pem_csr).unwrap().into_contents()
}

async fn ca() -> CaIssuer {
    root(
        Algorithm::EcdsaP256Sha256,
        "CN=CSR Test Root",
        issuance::DEFAULT_ROOT_VALIDITY,
    )
    .await
}

const VALIDITY: Duration = Duration::from_secs(30 * DAY);

/// Signs a fixture and checks what every CSR-signed certificate must be: a verifying
/// service certificate carrying the request's key, not a CA, no certificate signing.
async fn sign_ok(name: &str) -> (Vec<u8>, check::CertSummary) {
    let ca = ca().await;
    let csr = fixture(name);
    let cert = ca
        .sign_csr(&csr, VALIDITY)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let path = check::verify_chain(
        &cert.der,
        &[],
        &[ca.certificate_der().to_vec()],
        OffsetDateTime::now_utc(),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let c = parse(&cert.der);
    let der = der_of(&csr);
    let (_, req) = X509CertificationRequest::from_der(&der).unwrap();
    assert_eq!(
        c.public_key().raw,
        req.certification_request_info.subject_pki.raw,
        "{name}: key copied"
    );
    assert!(!c.is_ca(), "{name}");
    let ku = c.key_usage().unwrap().unwrap().value;
    assert!(
        ku.digital_signature() && !ku.key_cert_sign() && !ku.crl_sign(),
        "{name}"
    );
    let span = cert.not_after - cert.not_before;
    assert_eq!(
        span,
        time::Duration::seconds(30 * DAY as i64 + 300),
        "{name}: validity"
    );
    (cert.der, path.into_iter().next().unwrap())
}

#[tokio::test]
async fn good_p256_csr_keeps_its_names_and_drops_the_rest_of_the_subject() {
    let (_, s) = sign_ok("good-p256.csr").await;
    assert_eq!(
        s.subject, "CN=p256.example.com",
        "O= from the CSR is not copied"
    );
    assert_eq!(
        s.sans,
        vec![
            "DNS:p256.example.com",
            "DNS:www.p256.example.com",
            "IP:10.0.0.1"
        ]
    );
    assert_eq!(s.key_algorithm, "ecdsa-p256");
}

#[tokio::test]
async fn good_rsa_csr_gets_key_encipherment_and_its_spiffe_uri() {
    let (der, s) = sign_ok("good-rsa.csr").await;
    assert_eq!(
        s.sans,
        vec![
            "DNS:rsa.example.com",
            "URI:spiffe://example.org/ns/prod/rsa"
        ]
    );
    assert_eq!(s.key_algorithm, "rsa-2048");
    assert!(
        parse(&der)
            .key_usage()
            .unwrap()
            .unwrap()
            .value
            .key_encipherment()
    );
}

#[tokio::test]
async fn good_ed25519_csr() {
    let (der, s) = sign_ok("good-ed25519.csr").await;
    assert_eq!(s.sans, vec!["DNS:ed25519.example.com"]);
    assert_eq!(s.key_algorithm, "ed25519");
    assert!(
        !parse(&der)
            .key_usage()
            .unwrap()
            .unwrap()
            .value
            .key_encipherment()
    );
}

#[tokio::test]
async fn cn_only_csr_gets_its_cn_as_dns_name() {
    let (_, s) = sign_ok("cn-only.csr").await;
    assert_eq!(s.sans, vec!["DNS:cn-only.example.com"]);
}

#[tokio::test]
async fn csr_asking_for_ca_true_gets_a_service_certificate() {
    let (der, s) = sign_ok("ca-true.csr").await;
    assert!(!s.is_ca);
    let c = parse(&der);
    assert!(!c.basic_constraints().unwrap().unwrap().value.ca);
    assert!(!c.key_usage().unwrap().unwrap().value.key_cert_sign());
    let eku = c.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
}

#[tokio::test]
async fn der_csr_is_accepted() {
    let ca = ca().await;
    let der = der_of(&fixture("good-p256.csr"));
    ca.sign_csr(&der, VALIDITY).await.unwrap();
}

#[tokio::test]
async fn bad_csrs_are_refused_with_one_clear_line() {
    let ca = ca().await;
    let cases: [(&str, &str); 5] = [
        ("broken-signature.csr", "CSR signature does not verify"),
        ("truncated.csr", "malformed CSR"),
        ("garbage.csr", "malformed CSR"),
        (
            "no-names.csr",
            "CSR has neither a subject alternative name nor a common name",
        ),
        ("rsa-pss.csr", "CSR is signed with RSA-PSS"),
    ];
    for (name, want) in cases {
        let e = assert_err(ca.sign_csr(&fixture(name), VALIDITY).await, want);
        if name == "rsa-pss.csr" {
            assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
        }
    }
    assert_err(
        ca.sign_csr(b"", VALIDITY).await,
        "malformed CSR: the input is empty",
    );
    assert_err(
        ca.sign_csr(ca_pem(&ca).as_bytes(), VALIDITY).await,
        "PEM block is 'CERTIFICATE'",
    );
}

fn ca_pem(ca: &CaIssuer) -> String {
    check::ders_to_pem(&[ca.certificate_der().to_vec()])
}

//! Interoperability: `openssl verify -x509_strict` accepts keyward's certificates for
//! every algorithm rcgen can sign with, with and without an intermediate, and the
//! certificates keyward makes from the CSR fixtures.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use keyward_core::issuance::{self, CaIssuer};
use keyward_core::{Algorithm, check};

/// Runs `openssl verify -x509_strict -CAfile ca.pem -untrusted chain.pem [extra] cert.pem`
/// in `dir` and panics with openssl's output unless it says OK.
fn openssl_verify(dir: &Path, extra: &[&str], what: &str) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args([
            "verify",
            "-x509_strict",
            "-CAfile",
            "ca.pem",
            "-untrusted",
            "chain.pem",
        ])
        .args(extra)
        .arg("cert.pem")
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl ({e}): install it (scripts/test.sh does)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("cert.pem: OK"),
        "{what}: openssl verify {extra:?} refused:\n{text}"
    );
}

/// Writes cert.pem, chain.pem (leaf first, then intermediates, as `keyward issue` does)
/// and ca.pem, then asks openssl to verify the leaf for TLS server and client use.
fn write_and_verify(dir: &Path, leaf: &[u8], ca: &CaIssuer, what: &str) {
    let mut chain = vec![leaf.to_vec()];
    chain.extend(untrusted_chain(ca));
    std::fs::write(dir.join("cert.pem"), check::ders_to_pem(&[leaf.to_vec()])).unwrap();
    std::fs::write(dir.join("chain.pem"), check::ders_to_pem(&chain)).unwrap();
    std::fs::write(dir.join("ca.pem"), check::ders_to_pem(&[root_of(ca)])).unwrap();
    openssl_verify(dir, &[], what);
    openssl_verify(dir, &["-purpose", "sslserver"], what);
    openssl_verify(dir, &["-purpose", "sslclient"], what);
}

async fn check_algorithm(alg: Algorithm) {
    let tmp = tempfile::tempdir().unwrap();
    let root = root(
        alg,
        "CN=Interop Root,O=keyward,C=NL",
        issuance::DEFAULT_ROOT_VALIDITY,
    )
    .await;
    let int = intermediate(&root, alg, "CN=Interop Intermediate,O=keyward").await;
    let mut p = profile("interop.example", &["www.interop.example"]);
    p.ips = vec!["192.0.2.7".parse().unwrap()];
    p.uris = vec!["spiffe://example.org/interop".into()];

    let (direct, _) = service(&root, alg, &p).await;
    let d = tmp.path().join("direct");
    std::fs::create_dir(&d).unwrap();
    write_and_verify(
        &d,
        &direct.der,
        &root,
        &format!("{alg} without intermediate"),
    );

    let (under_int, _) = service(&int, alg, &p).await;
    let i = tmp.path().join("intermediate");
    std::fs::create_dir(&i).unwrap();
    write_and_verify(
        &i,
        &under_int.der,
        &int,
        &format!("{alg} with intermediate"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_accepts_every_rcgen_algorithm_with_and_without_an_intermediate() {
    let tasks: Vec<_> = RCGEN_ALGORITHMS
        .into_iter()
        .map(|alg| tokio::spawn(check_algorithm(alg)))
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn openssl_accepts_certificates_signed_from_csrs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = root(
        Algorithm::EcdsaP384Sha384,
        "CN=CSR Interop Root",
        issuance::DEFAULT_ROOT_VALIDITY,
    )
    .await;
    let int = intermediate(
        &root,
        Algorithm::EcdsaP384Sha384,
        "CN=CSR Interop Intermediate",
    )
    .await;
    for name in [
        "good-p256.csr",
        "good-rsa.csr",
        "good-ed25519.csr",
        "cn-only.csr",
        "ca-true.csr",
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/csr")
            .join(name);
        let csr = std::fs::read(&path).unwrap();
        let cert = int
            .sign_csr(&csr, issuance::DEFAULT_SERVICE_VALIDITY)
            .await
            .unwrap();
        let d = tmp.path().join(name);
        std::fs::create_dir(&d).unwrap();
        write_and_verify(&d, &cert.der, &int, name);
    }
}

#[tokio::test]
async fn openssl_accepts_a_root_on_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let root = root(
        Algorithm::EcdsaP256Sha256,
        "CN=Lone Root",
        issuance::DEFAULT_ROOT_VALIDITY,
    )
    .await;
    let pem = check::ders_to_pem(&[root.certificate_der().to_vec()]);
    for f in ["cert.pem", "chain.pem", "ca.pem"] {
        std::fs::write(tmp.path().join(f), &pem).unwrap();
    }
    openssl_verify(tmp.path(), &["-check_ss_sig"], "root");
}

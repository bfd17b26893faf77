//! The backend conformance suite against OpenBao Transit, for all six key types, RSA
//! in both PKCS#1 v1.5 and PSS, and its wrapping part for `aes256-gcm96` keys.
#![forbid(unsafe_code)]

mod common;

use keyward_core::conformance::ConformanceSuite;
use keyward_core::{Algorithm, KeySigner, KeyUri, RsaBits, verify_signature};
use keyward_vault::TransitBackend;

async fn run(algorithms: &[Algorithm]) {
    let backend = TransitBackend::new(&common::root_settings()).unwrap();
    let run = common::unique("conf");
    ConformanceSuite::new(&backend, move |label| {
        common::transit(&format!("{run}-{label}"), "")
    })
    .run_all(algorithms)
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_ecdsa_p256_p384_and_ed25519() {
    run(&[
        Algorithm::EcdsaP256Sha256,
        Algorithm::EcdsaP384Sha384,
        Algorithm::Ed25519,
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_rsa_pkcs1_2048_3072_4096() {
    run(&[
        Algorithm::RsaPkcs1Sha256(RsaBits::B2048),
        Algorithm::RsaPkcs1Sha256(RsaBits::B3072),
        Algorithm::RsaPkcs1Sha256(RsaBits::B4096),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_rsa_pss_2048_3072_4096() {
    run(&[
        Algorithm::RsaPssSha256(RsaBits::B2048),
        Algorithm::RsaPssSha256(RsaBits::B3072),
        Algorithm::RsaPssSha256(RsaBits::B4096),
    ])
    .await;
}

/// The wrapping part: `aes256-gcm96` key-encryption keys, rotated with Transit's own
/// rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_wrapping() {
    let backend = TransitBackend::new(&common::root_settings()).unwrap();
    let run = common::unique("wrap");
    ConformanceSuite::new(&backend, move |label| {
        common::transit(&format!("{run}-{label}"), "")
    })
    .run_wrapping()
    .await;
}

/// An RSA Transit key opened for PSS signs PSS with a hash-length salt (what X.509
/// verifiers require), and the same key opened by default signs PKCS#1 v1.5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_key_opens_for_pss_or_pkcs1() {
    let backend = TransitBackend::new(&common::root_settings()).unwrap();
    let name = common::unique("pss-open");
    let KeyUri::Transit(t) = common::transit(&name, "") else {
        unreachable!()
    };
    let pss = Algorithm::RsaPssSha256(RsaBits::B2048);
    backend.generate_transit(&t, pss).await.unwrap();

    let as_pss = backend.open_transit(&t, Some(pss)).await.unwrap();
    assert_eq!(as_pss.algorithm(), pss);
    let msg = b"pss with a salt as long as the hash";
    let sig = as_pss.sign(msg).await.unwrap();
    let raw = keyward_core::subject_public_key(as_pss.public_key_spki_der()).unwrap();
    verify_pss_hash_length_salt(&raw, msg, &sig);

    let default = backend.open_transit(&t, None).await.unwrap();
    assert_eq!(
        default.algorithm(),
        Algorithm::RsaPkcs1Sha256(RsaBits::B2048)
    );
    let sig = default.sign(msg).await.unwrap();
    verify_signature(
        default.algorithm(),
        default.public_key_spki_der(),
        msg,
        &sig,
    )
    .unwrap();
    assert!(verify_signature(pss, default.public_key_spki_der(), msg, &sig).is_err());
}

/// Checks `sig` under RSA-PSS-SHA256 with a salt of exactly the hash length (aws-lc's
/// PSS verifier without the maximum-salt fallback keyward-core also accepts).
fn verify_pss_hash_length_salt(raw_rsa_public_key: &[u8], msg: &[u8], sig: &[u8]) {
    use aws_lc_rs::signature::{RSA_PSS_2048_8192_SHA256, UnparsedPublicKey};
    UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, raw_rsa_public_key)
        .verify(msg, sig)
        .expect("PSS signature with a hash-length salt");
}

//! The backend conformance suite against moto_server.

mod common;

use keyward_awskms::{AwsKmsBackend, KmsSettings};
use keyward_core::conformance::ConformanceSuite;
use keyward_core::{Algorithm, RsaBits};

/// moto hashes DIGEST messages again (it ignores MessageType), so the suite's
/// 10 000-byte message would get a wrong signature through the DIGEST path; moto takes
/// RAW messages of any length, so here they all go RAW. The DIGEST path has its own
/// test in signing.rs, which checks exactly what reaches moto.
const MOTO_RAW_LIMIT: usize = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_against_moto() {
    let backend = AwsKmsBackend::new(KmsSettings {
        raw_message_limit: MOTO_RAW_LIMIT,
        ..common::settings()
    });
    let prefix = common::run_prefix();
    let suite = ConformanceSuite::new(&backend, |label| common::alias_uri(&prefix, label));
    suite
        .run_all(&[
            Algorithm::EcdsaP256Sha256,
            Algorithm::EcdsaP384Sha384,
            Algorithm::RsaPkcs1Sha256(RsaBits::B2048),
            Algorithm::RsaPkcs1Sha256(RsaBits::B3072),
            Algorithm::RsaPkcs1Sha256(RsaBits::B4096),
            Algorithm::RsaPssSha256(RsaBits::B2048),
        ])
        .await;
}

/// The wrapping part. moto's RotateKeyOnDemand records the rotation (ListKeyRotations
/// lists it, so keyward's version goes up) but keeps the key material; old blobs decrypt
/// either way, since every CiphertextBlob names its material.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_wrapping_against_moto() {
    let backend = AwsKmsBackend::new(common::settings());
    let prefix = common::run_prefix();
    let suite = ConformanceSuite::new(&backend, |label| common::alias_uri(&prefix, label));
    suite.run_wrapping().await;
}

/// KMS picks the key material from the CiphertextBlob itself, so the version in a
/// blob's header is a label for the operator: changing it changes nothing KMS decrypts
/// (and never yields other plaintext), unlike file: and transit:, where it picks the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_blob_version_is_a_label() {
    use keyward_core::KeyBackend;
    let backend = AwsKmsBackend::new(common::settings());
    let uri = common::alias_uri(&common::run_prefix(), "wrap-label");
    let kek = backend.generate_wrapper(&uri).await.unwrap();
    let mut blob = kek.encrypt(b"payload", b"aad").await.unwrap();
    // Header: "KWRP", format, kind, scheme length, "awskms", then the version.
    let at = 7 + "awskms".len();
    blob[at..at + 4].copy_from_slice(&9u32.to_be_bytes());
    let plain = kek.decrypt(&blob, b"aad").await.unwrap();
    assert_eq!(&plain[..], b"payload");
}

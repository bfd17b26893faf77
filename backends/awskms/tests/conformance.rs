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

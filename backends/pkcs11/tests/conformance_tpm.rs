//! The backend conformance suite on a TPM: tpm2-pkcs11 on swtpm, for every algorithm
//! keyward uses that the TPM offers; what it lacks is refused by name.
#![forbid(unsafe_code)]

mod tpm;

use keyward_core::conformance::ConformanceSuite;
use keyward_core::{Algorithm, Error, KeyBackend, RsaBits};
use keyward_pkcs11::Pkcs11Backend;
use tpm::{StoreLock, TpmToken};

/// What swtpm's TPM 2.0 offers through tpm2-pkcs11: ECDSA P-256 and P-384, RSA up to
/// 3072 bits (PKCS#1 v1.5 and PSS).
const OFFERED: [Algorithm; 5] = [
    Algorithm::EcdsaP256Sha256,
    Algorithm::EcdsaP384Sha384,
    Algorithm::RsaPkcs1Sha256(RsaBits::B2048),
    Algorithm::RsaPssSha256(RsaBits::B2048),
    Algorithm::RsaPkcs1Sha256(RsaBits::B3072),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_every_algorithm_the_tpm_offers() {
    let _store = StoreLock::take();
    let token = TpmToken::shared();
    let backend = Pkcs11Backend::new(None);
    let suite = ConformanceSuite::new(&backend, |label| token.key_uri(label));
    suite.run_all(&OFFERED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_tpm_lacks_is_refused_by_name() {
    let _store = StoreLock::take();
    let token = TpmToken::shared();
    let backend = Pkcs11Backend::new(None);
    let e = backend
        .generate(&token.key_uri("ed"), Algorithm::Ed25519)
        .await
        .expect_err("the TPM has no Ed25519");
    assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
    let line = keyward_core::chain_line(&e);
    assert!(
        line.contains("token 'kw-tpm'") && line.contains("CKM_EC_EDWARDS_KEY_PAIR_GEN"),
        "{line}"
    );
    let e = backend
        .generate(
            &token.key_uri("rsa4096"),
            Algorithm::RsaPkcs1Sha256(RsaBits::B4096),
        )
        .await
        .expect_err("swtpm stops at RSA-3072");
    assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "unsupported: token 'kw-tpm' generates RSA keys of 1024 to 3072 bits, not 4096 (rsa-4096)"
    );
}

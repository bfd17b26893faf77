//! The backend conformance suite against SoftHSM, for every algorithm the token offers.
#![forbid(unsafe_code)]

mod common;

use common::TestToken;
use keyward_core::conformance::ConformanceSuite;
use keyward_core::{Algorithm, KeyType};
use keyward_pkcs11::{Pkcs11Backend, list_slots};

/// The algorithms whose key generation and signing mechanisms the token lists.
fn offered(token: &TestToken) -> Vec<Algorithm> {
    let slots = list_slots(&token.module, true).unwrap();
    let slot = slots
        .iter()
        .find(|s| s.label.as_deref() == Some(token.label.as_str()))
        .expect("test token listed");
    let mechs = slot.mechanisms.as_ref().expect("mechanisms asked for");
    let has = |m: &str| mechs.iter().any(|x| x == m);
    Algorithm::ALL
        .into_iter()
        .filter(|a| {
            let (keygen, sign) = match (a.key_type(), a) {
                (KeyType::EcP256 | KeyType::EcP384, _) => ("CKM_EC_KEY_PAIR_GEN", "CKM_ECDSA"),
                (KeyType::Ed25519, _) => ("CKM_EC_EDWARDS_KEY_PAIR_GEN", "CKM_EDDSA"),
                (KeyType::Rsa(_), Algorithm::RsaPssSha256(_)) => {
                    ("CKM_RSA_PKCS_KEY_PAIR_GEN", "CKM_SHA256_RSA_PKCS_PSS")
                }
                (KeyType::Rsa(_), _) => ("CKM_RSA_PKCS_KEY_PAIR_GEN", "CKM_SHA256_RSA_PKCS"),
            };
            has(keygen) && has(sign)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_every_algorithm_softhsm_offers() {
    let token = TestToken::new("conf");
    let algorithms = offered(&token);
    eprintln!(
        "SoftHSM offers: {}",
        algorithms
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    // SoftHSM 2.6 offers all of them; fewer means the module or its build changed.
    assert!(
        algorithms.contains(&Algorithm::EcdsaP256Sha256)
            && algorithms.contains(&Algorithm::RsaPkcs1Sha256(keyward_core::RsaBits::B2048)),
        "SoftHSM should offer at least ECDSA P-256 and RSA-2048: {algorithms:?}"
    );
    let backend = Pkcs11Backend::new(None);
    let suite = ConformanceSuite::new(&backend, |label| token.key_uri(label));
    suite.run_all(&algorithms).await;
}

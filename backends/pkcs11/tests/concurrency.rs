//! Many signs at once through the session pool.
#![forbid(unsafe_code)]

mod common;

use std::sync::Arc;

use common::TestToken;
use keyward_core::{Algorithm, KeyBackend, KeySigner, RsaBits, verify_signature};
use keyward_pkcs11::Pkcs11Backend;

async fn sign_many(signer: Arc<dyn KeySigner>, n: usize) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let signer = Arc::clone(&signer);
            tokio::spawn(async move {
                let msg = format!("concurrent message {i}").into_bytes();
                let sig = signer.sign(&msg).await?;
                verify_signature(signer.algorithm(), signer.public_key_spki_der(), &msg, &sig)
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        t.await
            .expect("signing task panicked")
            .unwrap_or_else(|e| panic!("sign {i} of {n}: {}", keyward_core::chain_line(&e)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_256_signs_all_verify() {
    let token = TestToken::new("conc");
    let backend = Pkcs11Backend::new(None);
    for (label, alg) in [
        ("p256", Algorithm::EcdsaP256Sha256),
        ("ed", Algorithm::Ed25519),
        ("rsa", Algorithm::RsaPssSha256(RsaBits::B2048)),
    ] {
        let signer = backend.generate(&token.key_uri(label), alg).await.unwrap();
        sign_many(signer, 256).await;
    }
}

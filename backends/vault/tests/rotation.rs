//! A Transit key rotated in OpenBao: keyward signs with the new version once it opens
//! the key again, a URI pinning the old version keeps signing with the old one, and a
//! signer opened before the rotation keeps its public key and notices the rotation.
#![forbid(unsafe_code)]

mod common;

use keyward_core::uri::TransitUri;
use keyward_core::{Algorithm, Error, KeyBackend, KeySigner, KeyUri, RsaBits, verify_signature};
use keyward_vault::TransitBackend;
use serde_json::json;

fn tu(uri: &KeyUri) -> &TransitUri {
    match uri {
        KeyUri::Transit(t) => t,
        _ => unreachable!(),
    }
}

async fn rotate_and_check(alg: Algorithm) {
    let backend = TransitBackend::new(&common::root_settings()).unwrap();
    let admin = common::Admin::shared();
    let name = common::unique(&format!("rot-{}", alg.name()));
    let latest_uri = common::transit(&name, "");
    let before = backend.generate(&latest_uri, alg).await.unwrap();
    let v1_key = before.public_key_spki_der().to_vec();
    assert_eq!(
        before.uri().to_string(),
        format!("transit:{name}?version=1")
    );

    admin
        .post(&format!("transit/keys/{name}/rotate"), json!({}))
        .await;

    // The signer opened before the rotation keeps version 1 and its public key.
    let msg = b"signed after the rotation";
    for _ in 0..2 {
        let sig = before.sign(msg).await.unwrap();
        verify_signature(alg, &v1_key, msg, &sig).unwrap();
    }
    // Opening the unpinned URI again signs with version 2.
    let after = backend
        .open_transit(tu(&latest_uri), Some(alg))
        .await
        .unwrap();
    assert_eq!(
        after.version(),
        2,
        "{alg}: open after rotation takes the latest"
    );
    let v2_key = after.public_key_spki_der().to_vec();
    assert_ne!(v1_key, v2_key, "{alg}: rotation gave the same public key");
    assert_eq!(after.uri().to_string(), format!("transit:{name}?version=2"));
    let sig = after.sign(msg).await.unwrap();
    verify_signature(alg, &v2_key, msg, &sig).unwrap();
    assert!(
        verify_signature(alg, &v1_key, msg, &sig).is_err(),
        "{alg}: the new version's signature verifies under the old key"
    );
    let reopened = backend.open(&latest_uri).await.unwrap();
    assert_eq!(reopened.public_key_spki_der(), &v2_key[..]);

    // A URI pinning version 1 still signs with version 1.
    let pinned = backend
        .open(&common::transit(&name, "version=1"))
        .await
        .unwrap();
    assert_eq!(pinned.public_key_spki_der(), &v1_key[..]);
    let sig = pinned.sign(msg).await.unwrap();
    verify_signature(pinned.algorithm(), &v1_key, msg, &sig).unwrap();

    // A version that does not exist is NotFound, naming it.
    match backend.open(&common::transit(&name, "version=3")).await {
        Err(Error::NotFound(m)) => assert!(m.contains("latest is 2"), "{m}"),
        other => panic!("{alg}: open of version 3 gave {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_ecdsa_key_signs_with_new_version_and_pinned_uri_keeps_old() {
    rotate_and_check(Algorithm::EcdsaP256Sha256).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_ed25519_key_signs_with_new_version_and_pinned_uri_keeps_old() {
    rotate_and_check(Algorithm::Ed25519).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_rsa_pss_key_signs_with_new_version_and_pinned_uri_keeps_old() {
    rotate_and_check(Algorithm::RsaPssSha256(RsaBits::B2048)).await;
}

/// A signer opened without a pinned version notices the rotation from the `vault:vN:`
/// prefix and reports it, while its signatures keep matching its public key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signer_reports_rotation_and_keeps_its_public_key() {
    let backend = TransitBackend::new(&common::root_settings()).unwrap();
    let admin = common::Admin::shared();
    let name = common::unique("rot-report");
    let uri = common::transit(&name, "");
    let alg = Algorithm::EcdsaP256Sha256;
    backend.generate(&uri, alg).await.unwrap();
    let signer = backend.open_transit(tu(&uri), None).await.unwrap();
    assert_eq!(signer.rotated_to(), None);
    signer.sign(b"before").await.unwrap();
    assert_eq!(signer.rotated_to(), None);

    admin
        .post(&format!("transit/keys/{name}/rotate"), json!({}))
        .await;
    admin
        .post(&format!("transit/keys/{name}/rotate"), json!({}))
        .await;
    let sig = signer.sign(b"after").await.unwrap();
    verify_signature(alg, signer.public_key_spki_der(), b"after", &sig).unwrap();
    assert_eq!(signer.rotated_to(), Some(3));
    assert_eq!(signer.version(), 1);

    // A signer opened on a pinned URI never reports rotation: it asked for its version.
    let pinned = backend
        .open_transit(tu(&common::transit(&name, "version=2")), None)
        .await
        .unwrap();
    pinned.sign(b"pinned").await.unwrap();
    assert_eq!(pinned.rotated_to(), None);
    assert_eq!(pinned.version(), 2);
}

//! Key-encryption keys on tokens: core's wrapping conformance part on SoftHSM (a fresh
//! token per test), what the KEK objects look like on the token, how a rotation by
//! another opener is noticed, and the refusal on a TPM without AES-GCM.
#![forbid(unsafe_code)]

mod common;
mod tpm;

use common::TestToken;
use keyward_core::conformance::ConformanceSuite;
use keyward_core::wrap::{BlobKind, blob};
use keyward_core::{Error, KeyBackend, chain_line};
use keyward_pkcs11::{Pkcs11Backend, RELIST_AFTER, list_slots};
use tpm::{StoreLock, TpmToken};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrapping_conformance_on_softhsm() {
    let token = TestToken::new("wrap");
    let backend = Pkcs11Backend::new(None);
    let suite = ConformanceSuite::new(&backend, |label| token.key_uri(label));
    suite.run_wrapping().await;
}

/// Each version is its own AES-256 secret key, labelled as the URI's object, with the
/// version as a 4-byte CKA_ID, sensitive and not extractable, as `hsm keys` lists it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_version_is_a_sensitive_non_extractable_aes_key() {
    let token = TestToken::new("wrap-obj");
    let backend = Pkcs11Backend::new(None);
    let kek = backend
        .generate_wrapper(&token.key_uri("db-kek"))
        .await
        .unwrap_or_else(|e| panic!("generate: {}", chain_line(&e)));
    assert_eq!(kek.rotate().await.unwrap(), 2);
    let keys = backend.list_keys(&token.token_uri()).await.unwrap();
    let shown: Vec<_> = keys
        .iter()
        .map(|k| {
            (
                k.label.as_str(),
                k.id.as_str(),
                k.class.as_str(),
                k.key_type.as_str(),
                k.size.as_deref(),
                k.sensitive,
                k.extractable,
            )
        })
        .collect();
    let version = |id| {
        (
            "db-kek",
            id,
            "secret",
            "AES",
            Some("256"),
            Some(true),
            Some(false),
        )
    };
    assert_eq!(shown, [version("00000001"), version("00000002")]);
}

/// A KEK opened before another opener rotated it decrypts the new version's blobs at
/// once (an unknown version is looked up) and encrypts under it once its listing is
/// older than `RELIST_AFTER`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_by_another_opener_is_noticed() {
    let token = TestToken::new("wrap-other");
    let backend = Pkcs11Backend::new(None);
    let uri = token.key_uri("kek");
    backend.generate_wrapper(&uri).await.unwrap();
    let here = backend.open_wrapper(&uri).await.unwrap();
    let there = backend.open_wrapper(&uri).await.unwrap();
    assert_eq!(version_of(&here.encrypt(b"x", b"").await.unwrap()), 1);
    assert_eq!(there.rotate().await.unwrap(), 2);
    let from_there = there.encrypt(b"rotated", b"a").await.unwrap();
    assert_eq!(version_of(&from_there), 2);
    let plain = here.decrypt(&from_there, b"a").await.unwrap();
    assert_eq!(&plain[..], b"rotated");
    tokio::time::sleep(RELIST_AFTER + RELIST_AFTER / 2).await;
    assert_eq!(version_of(&here.encrypt(b"x", b"").await.unwrap()), 2);
}

/// URIs that cannot name a KEK, and a blob of a version that is not on the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_uris_and_missing_versions_are_refused_by_name() {
    let token = TestToken::new("wrap-bad");
    let backend = Pkcs11Backend::new(None);
    let with_id = token.with_path("object=kek;id=%01", "");
    let e = backend.generate_wrapper(&with_id).await.unwrap_err();
    assert!(
        chain_line(&e).contains("CKA_IDs are its version numbers"),
        "{e}"
    );
    let private = token.with_path("object=kek;type=private", "");
    let e = backend.generate_wrapper(&private).await.unwrap_err();
    assert!(chain_line(&e).contains("names a secret key"), "{e}");
    let kek = backend
        .generate_wrapper(&token.key_uri("kek"))
        .await
        .unwrap();
    let mut sealed = blob::decode(
        &kek.encrypt(b"x", b"").await.unwrap(),
        "pkcs11",
        BlobKind::Payload,
    )
    .unwrap();
    sealed.version = 9;
    let future = blob::encode("pkcs11", BlobKind::Payload, &sealed);
    match kek.decrypt(&future, b"").await {
        Err(Error::NotFound(m)) => {
            assert!(m.contains("version 9 of key-encryption key 'kek'"), "{m}")
        }
        other => panic!("a blob of version 9 gave {other:?}"),
    }
}

/// tpm2-pkcs11 on swtpm: a TPM encrypts with AES in the modes TPM2_EncryptDecrypt
/// has, none of them GCM, so a KEK there is refused naming `CKM_AES_GCM`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tpm_without_aes_gcm_is_refused_by_name() {
    let _store = StoreLock::take();
    let token = TpmToken::shared();
    let slots = list_slots(&token.module, true).unwrap();
    let mechanisms = slots
        .iter()
        .find(|s| s.label.as_deref() == Some(token.label.as_str()))
        .and_then(|s| s.mechanisms.clone())
        .expect("the TPM token and its mechanisms");
    eprintln!("TPM mechanisms: {}", mechanisms.join(", "));
    assert!(
        !mechanisms.iter().any(|m| m == "CKM_AES_GCM"),
        "the TPM offers CKM_AES_GCM now: run the wrapping conformance part on it instead"
    );
    let backend = Pkcs11Backend::new(None);
    let e = backend
        .generate_wrapper(&token.key_uri("kek"))
        .await
        .expect_err("no KEK without AES-GCM");
    assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
    let line = chain_line(&e);
    assert!(
        line.contains("token 'kw-tpm'") && line.contains("CKM_AES_GCM"),
        "{line}"
    );
}

fn version_of(payload: &[u8]) -> u32 {
    blob::decode(payload, "pkcs11", BlobKind::Payload)
        .unwrap()
        .version
}

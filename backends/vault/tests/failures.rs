//! Failures in plain words: a stopped server (Unavailable within the deadline), a sealed
//! one, unknown keys, unsupported types, a missing mount, an untrusted TLS certificate.
#![forbid(unsafe_code)]

mod common;

use std::time::{Duration, Instant};

use keyward_core::{Algorithm, Error, KeyBackend, verify_signature};
use keyward_vault::{TransitBackend, VaultSettings};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_server_gives_unavailable_within_the_deadline() {
    let mut bao = common::PrivateBao::start().await;
    let deadline = Duration::from_secs(2);
    let backend = TransitBackend::new(&bao.settings(deadline)).unwrap();
    let uri = common::transit("ca", "");
    let signer = backend
        .generate(&uri, Algorithm::EcdsaP256Sha256)
        .await
        .unwrap();
    signer.sign(b"while it runs").await.unwrap();

    bao.stop();
    for what in ["sign", "open", "generate"] {
        let started = Instant::now();
        let result = match what {
            "sign" => signer.sign(b"after the stop").await.map(|_| ()),
            "open" => backend.open(&uri).await.map(|_| ()),
            _ => backend
                .generate(&common::transit("other", ""), Algorithm::Ed25519)
                .await
                .map(|_| ()),
        };
        let took = started.elapsed();
        let err = result.expect_err("the server is stopped");
        assert!(
            err.is_retryable(),
            "{what}: expected Unavailable, got {err:?}"
        );
        let line = err.to_string();
        assert!(
            line.contains(&bao.addr) && line.contains("unreachable"),
            "{what}: {line}"
        );
        assert!(
            took <= deadline + Duration::from_millis(500),
            "{what}: gave up after {took:?}, past the {deadline:?} deadline"
        );
    }
}

/// An HTTP 500 is sent again (with backoff, at most twice more); a 4xx is not. Counted
/// in the server's audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_and_client_errors_are_not() {
    let bao = common::PrivateBao::start_audited().await;
    let admin = bao.admin();
    let backend = TransitBackend::new(&bao.settings(Duration::from_secs(5))).unwrap();
    backend
        .generate(&common::transit("k", ""), Algorithm::EcdsaP256Sha256)
        .await
        .unwrap();
    admin.post("transit/keys/k/rotate", json!({})).await;
    let pinned_v2 = backend
        .open(&common::transit("k", "version=2"))
        .await
        .unwrap();

    // Delete the key and create it again: version 2 no longer exists, and OpenBao
    // answers a sign request for it with HTTP 500.
    admin
        .post("transit/keys/k/config", json!({ "deletion_allowed": true }))
        .await;
    admin
        .api(reqwest::Method::DELETE, "transit/keys/k", None)
        .await;
    admin
        .post("transit/keys/k", json!({ "type": "ecdsa-p256" }))
        .await;
    let before = bao.requests_to("transit/sign/k");
    let err = pinned_v2.sign(b"version 2 is gone").await.unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    assert!(err.to_string().contains("HTTP 500"), "{err}");
    assert_eq!(
        bao.requests_to("transit/sign/k") - before,
        3,
        "one try and two retries"
    );

    // A 4xx (the key is gone) is final at once.
    admin
        .post("transit/keys/k/config", json!({ "deletion_allowed": true }))
        .await;
    admin
        .api(reqwest::Method::DELETE, "transit/keys/k", None)
        .await;
    let before = bao.requests_to("transit/sign/k");
    let err = pinned_v2.sign(b"the key is gone").await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    assert_eq!(
        bao.requests_to("transit/sign/k") - before,
        1,
        "a 4xx is not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_server_is_named_as_sealed() {
    let bao = common::PrivateBao::start().await;
    let backend = TransitBackend::new(&bao.settings(Duration::from_secs(5))).unwrap();
    let signer = backend
        .generate(&common::transit("ca", ""), Algorithm::EcdsaP256Sha256)
        .await
        .unwrap();
    bao.admin()
        .api(reqwest::Method::PUT, "sys/seal", None)
        .await;

    let err = signer.sign(b"sealed").await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("sealed"), "{err}");
    let err = backend.client().check().await.unwrap_err();
    assert!(
        err.is_retryable() && err.to_string().contains("sealed"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_is_not_found_naming_the_uri() {
    let backend = TransitBackend::new(&common::root_settings()).unwrap();
    let name = common::unique("never");
    let uri = common::transit(&name, "");
    match backend.open(&uri).await {
        Err(Error::NotFound(m)) => assert_eq!(m, format!("transit:{name}")),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_deleted_in_vault_is_not_found_when_signing() {
    let admin = common::Admin::shared();
    let backend = TransitBackend::new(&common::root_settings()).unwrap();
    let name = common::unique("deleted");
    let signer = backend
        .generate(&common::transit(&name, ""), Algorithm::EcdsaP256Sha256)
        .await
        .unwrap();
    admin
        .post(
            &format!("transit/keys/{name}/config"),
            json!({ "deletion_allowed": true }),
        )
        .await;
    admin
        .api(
            reqwest::Method::DELETE,
            &format!("transit/keys/{name}"),
            None,
        )
        .await;
    match signer.sign(b"gone").await {
        Err(Error::NotFound(m)) => assert!(m.contains(&name), "{m}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_key_types_are_named() {
    let admin = common::Admin::shared();
    let backend = TransitBackend::new(&common::root_settings()).unwrap();
    for kind in ["aes256-gcm96", "ecdsa-p521"] {
        let name = common::unique("unsupported");
        admin
            .post(&format!("transit/keys/{name}"), json!({ "type": kind }))
            .await;
        match backend.open(&common::transit(&name, "")).await {
            Err(Error::Unsupported(m)) => assert!(m.contains(kind), "{m}"),
            other => panic!("{kind}: expected Unsupported, got {other:?}"),
        }
    }
    // A key opened for an algorithm of another key type.
    let name = common::unique("wrong-alg");
    let uri = common::transit(&name, "");
    backend
        .generate(&uri, Algorithm::EcdsaP256Sha256)
        .await
        .unwrap();
    let keyward_core::KeyUri::Transit(t) = &uri else {
        unreachable!()
    };
    let err = backend
        .open_transit(t, Some(Algorithm::Ed25519))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Unsupported(_)) && err.to_string().contains("ecdsa-p256"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_refuses_an_existing_name_of_another_type_and_keeps_it() {
    let backend = TransitBackend::new(&common::root_settings()).unwrap();
    let uri = common::transit(&common::unique("exists"), "");
    let first = backend.generate(&uri, Algorithm::Ed25519).await.unwrap();
    match backend.generate(&uri, Algorithm::EcdsaP384Sha384).await {
        Err(Error::AlreadyExists(m)) => assert!(m.starts_with("transit:exists-"), "{m}"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    let again = backend.open(&uri).await.unwrap();
    assert_eq!(again.algorithm(), Algorithm::Ed25519);
    assert_eq!(again.public_key_spki_der(), first.public_key_spki_der());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_mount_is_named() {
    let backend = TransitBackend::new(&common::root_settings()).unwrap();
    let err = backend
        .open(&common::transit("k", "mount=no-such-transit"))
        .await
        .unwrap_err();
    let line = err.to_string();
    assert!(
        line.contains("no-such-transit/keys/k") && line.contains("mount"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server_is_trusted_through_the_ca_file_only() {
    let bao = common::PrivateBao::start_tls().await;
    let mut settings = bao.settings(Duration::from_secs(5));
    let untrusted = TransitBackend::new(&settings).unwrap();
    let err = untrusted.open(&common::transit("k", "")).await.unwrap_err();
    assert!(
        !err.is_retryable(),
        "a certificate problem is not retried: {err:?}"
    );
    assert!(err.to_string().contains("VAULT_CACERT"), "{err}");

    settings.ca_file = Some(bao.ca_file());
    let backend = TransitBackend::new(&settings).unwrap();
    let signer = backend
        .generate(&common::transit("k", ""), Algorithm::EcdsaP256Sha256)
        .await
        .unwrap();
    let sig = signer.sign(b"over TLS").await.unwrap();
    verify_signature(
        signer.algorithm(),
        signer.public_key_spki_der(),
        b"over TLS",
        &sig,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_from_the_script_environment_reach_the_server() {
    let settings = VaultSettings::from_env().unwrap();
    assert_eq!(settings.address, common::addr());
    let backend = TransitBackend::from_env().unwrap();
    backend.client().check().await.unwrap();
}

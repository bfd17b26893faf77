//! Failures against moto_server: each one a clear error of the right kind, in time.

mod common;

use std::time::{Duration, Instant};

use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use keyward_awskms::{AwsKmsBackend, KmsSettings};
use keyward_core::{Algorithm, Error, KeyBackend, KeyUri};

/// A short deadline for the failure tests, and what the clock may add to it.
const DEADLINE: Duration = Duration::from_secs(2);
const SLACK: Duration = Duration::from_millis(1500);

/// Creates a KMS key with the SDK and names it `alias/PREFIX/LABEL`.
async fn raw_key(
    backend: &AwsKmsBackend,
    uri: &KeyUri,
    usage: KeyUsageType,
    spec: KeySpec,
) -> String {
    let client = backend.sdk_client(common::kms(uri)).await.unwrap();
    let meta = client
        .create_key()
        .key_usage(usage)
        .key_spec(spec)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    client
        .create_alias()
        .alias_name(common::kms(uri).key_id())
        .target_key_id(meta.key_id())
        .send()
        .await
        .unwrap();
    meta.key_id().to_string()
}

fn backend_message(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(e @ Error::Backend { .. }) => {
            eprintln!("{}", keyward_core::chain_line(&e));
            e.to_string()
        }
        other => panic!("expected a Backend error, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_alias_is_not_found() {
    let backend = AwsKmsBackend::new(common::settings());
    let uri = common::alias_uri(&common::run_prefix(), "never-created");
    match backend.open(&uri).await {
        Err(Error::NotFound(m)) => assert!(m.contains("never-created"), "{m}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn disabled_key_is_refused_as_disabled() {
    let backend = AwsKmsBackend::new(common::settings());
    let uri = common::alias_uri(&common::run_prefix(), "disabled");
    let key_id = raw_key(
        &backend,
        &uri,
        KeyUsageType::SignVerify,
        KeySpec::EccNistP256,
    )
    .await;
    let client = backend.sdk_client(common::kms(&uri)).await.unwrap();
    client.disable_key().key_id(&key_id).send().await.unwrap();
    let m = backend_message(backend.open(&uri).await);
    assert!(m.contains("is disabled"), "{m}");
    assert!(m.contains(&uri.to_string()), "{m}");
}

#[tokio::test]
async fn encrypt_decrypt_key_is_refused_naming_its_usage() {
    let backend = AwsKmsBackend::new(common::settings());
    let uri = common::alias_uri(&common::run_prefix(), "encrypt");
    raw_key(
        &backend,
        &uri,
        KeyUsageType::EncryptDecrypt,
        KeySpec::SymmetricDefault,
    )
    .await;
    let m = backend_message(backend.open(&uri).await);
    assert!(
        m.contains("has usage ENCRYPT_DECRYPT, not SIGN_VERIFY"),
        "{m}"
    );
}

#[tokio::test]
async fn existing_alias_is_already_exists_and_keeps_its_key() {
    let backend = AwsKmsBackend::new(common::settings());
    let uri = common::alias_uri(&common::run_prefix(), "taken");
    let key_id = raw_key(
        &backend,
        &uri,
        KeyUsageType::EncryptDecrypt,
        KeySpec::SymmetricDefault,
    )
    .await;
    assert!(matches!(
        backend.generate(&uri, Algorithm::EcdsaP256Sha256).await,
        Err(Error::AlreadyExists(_))
    ));
    let client = backend.sdk_client(common::kms(&uri)).await.unwrap();
    let meta = client
        .describe_key()
        .key_id(common::kms(&uri).key_id())
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(
        meta.key_id(),
        key_id,
        "the alias must still name the old key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_generates_leave_one_key_and_no_enabled_orphan() {
    let backend = std::sync::Arc::new(AwsKmsBackend::new(common::settings()));
    let uri = common::alias_uri(&common::run_prefix(), "race");
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (backend, uri) = (backend.clone(), uri.clone());
            tokio::spawn(async move { backend.generate(&uri, Algorithm::EcdsaP256Sha256).await })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(signer) => winners.push(signer),
            Err(Error::AlreadyExists(_)) => {}
            Err(e) => panic!("expected success or AlreadyExists, got {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one generate wins the alias");

    // Every key made for this alias, other than the one it names, is being deleted.
    let client = backend.sdk_client(common::kms(&uri)).await.unwrap();
    let aliased = client
        .describe_key()
        .key_id(common::kms(&uri).key_id())
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    let keys: Vec<_> = client
        .list_keys()
        .into_paginator()
        .items()
        .send()
        .collect::<Result<_, _>>()
        .await
        .unwrap();
    let alias_name = common::kms(&uri).key_id().to_string();
    let mut made = 0;
    for entry in &keys {
        let meta = client
            .describe_key()
            .key_id(entry.key_id().unwrap())
            .send()
            .await
            .unwrap()
            .key_metadata
            .unwrap();
        if !meta.description().is_some_and(|d| d.ends_with(&alias_name)) {
            continue;
        }
        made += 1;
        if meta.key_id() != aliased.key_id() {
            assert_eq!(
                meta.key_state(),
                Some(&aws_sdk_kms::types::KeyState::PendingDeletion),
                "orphan key {} left behind",
                meta.key_id()
            );
        }
    }
    assert!(made >= 1);
    eprintln!(
        "{made} keys created by 4 racing generates; all but the aliased one pending deletion"
    );
}

#[tokio::test]
async fn unreachable_endpoint_is_unavailable_within_the_deadline() {
    common::endpoint();
    let dead = format!("http://127.0.0.1:{}", common::closed_port());
    let backend = AwsKmsBackend::new(KmsSettings {
        deadline: DEADLINE,
        ..common::settings_for(&dead)
    });
    let uri = common::alias_uri(&common::run_prefix(), "unreachable");
    let start = Instant::now();
    let result = backend.open(&uri).await;
    let elapsed = start.elapsed();
    match result {
        Err(e @ Error::Unavailable { .. }) => {
            eprintln!("{elapsed:?}: {}", keyward_core::chain_line(&e));
            let m = e.to_string();
            assert!(m.contains(&dead) && m.contains("unreachable"), "{m}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(elapsed < DEADLINE + SLACK, "took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stopped_mid_run_is_unavailable_without_hanging() {
    let mut moto = common::PrivateMoto::start();
    let backend = AwsKmsBackend::new(KmsSettings {
        deadline: DEADLINE,
        ..common::settings_for(&moto.endpoint)
    });
    let uri = common::alias_uri(&common::run_prefix(), "stopped");
    backend
        .generate(&uri, Algorithm::EcdsaP256Sha256)
        .await
        .unwrap();
    let signer = backend.open(&uri).await.unwrap();
    signer.sign(b"before").await.unwrap();
    moto.stop();

    let start = Instant::now();
    let result = signer.sign(b"after").await;
    let elapsed = start.elapsed();
    match result {
        Err(e @ Error::Unavailable { .. }) => {
            eprintln!("{elapsed:?}: {}", keyward_core::chain_line(&e));
            let m = e.to_string();
            assert!(m.contains(&moto.endpoint), "{m}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(elapsed < DEADLINE + SLACK, "took {elapsed:?}");
}

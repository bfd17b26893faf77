//! End-to-end: key-encryption keys made and rotated through the CLI (`keyward key
//! generate --algorithm aes-256`, `keyward key rotate`) in each backend that has them
//! (software, Transit, KMS, PKCS#11 on SoftHSM), with data encrypted before the
//! rotation still decrypting after it.

mod common;

use std::path::Path;

use common::*;
use keyward::backends::Backends;
use keyward_core::wrap::{BlobKind, blob};
use keyward_core::{KeyUri, KeyWrapper};
use tempfile::TempDir;

/// Generates a KEK at `key` with the CLI, encrypts a payload and a data key through the
/// library, rotates with the CLI, and checks old blobs decrypt, new ones name version 2,
/// and both steps are in the audit log.
async fn rotate_then_old_data_still_decrypts(state: &Path, key: &str) {
    let out = common::generate_key(state, key, "aes-256");
    assert!(out.contains("(version 1)"), "{out}");
    let uri = KeyUri::parse(key).unwrap();
    let backends = Backends::default();
    let kek = open(&backends, &uri).await;
    let scheme = uri.scheme();
    let old_payload = kek.encrypt(b"card 4111", b"record=1").await.unwrap();
    let old_key = kek.generate_data_key().await.unwrap();
    assert_eq!(version_of(&old_payload, scheme), 1);

    let out = keyward_ok(state, &["key", "rotate", "--key", key]);
    assert!(out.contains("to version 2"), "{out}");

    // The same open KEK and a newly opened one both see the rotation.
    for kek in [kek, open(&backends, &uri).await] {
        assert_eq!(kek.current_version().await.unwrap(), 2);
        let plain = kek.decrypt(&old_payload, b"record=1").await.unwrap();
        assert_eq!(&plain[..], b"card 4111");
        let data_key = kek.unwrap_data_key(&old_key.wrapped).await.unwrap();
        assert_eq!(data_key, old_key.plaintext);
        let new_payload = kek.encrypt(b"card 4111", b"record=1").await.unwrap();
        assert_eq!(version_of(&new_payload, scheme), 2);
        assert!(kek.decrypt(&new_payload, b"record=2").await.is_err());
    }
    let log = audit_log(state);
    assert!(
        log.contains("\"key_generated\"") && log.contains("\"key_rotated\""),
        "{log}"
    );
}

async fn open(backends: &Backends, uri: &KeyUri) -> std::sync::Arc<dyn KeyWrapper> {
    backends
        .for_uri(uri)
        .await
        .unwrap()
        .open_wrapper(uri)
        .await
        .unwrap()
}

fn version_of(payload: &[u8], scheme: &str) -> u32 {
    blob::decode(payload, scheme, BlobKind::Payload)
        .unwrap()
        .version
}

/// The state directory's audit log (`audit.jsonl`), as text.
fn audit_log(state: &Path) -> String {
    std::fs::read_to_string(state.join("audit.jsonl")).expect("audit log")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn software_kek_rotates_and_old_data_decrypts() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("keys/db-kek");
    let key = format!("file:{}", dir.display());
    rotate_then_old_data_still_decrypts(&tmp.path().join("state"), &key).await;
    assert_eq!(mode(&dir), 0o700);
    for v in ["v1.key", "v2.key"] {
        assert_eq!(mode(&dir.join(v)), 0o600, "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transit_kek_rotates_and_old_data_decrypts() {
    required_env("KEYWARD_TEST_VAULT_ADDR");
    let tmp = TempDir::new().unwrap();
    let key = format!("transit:{}", unique("kw-kek"));
    rotate_then_old_data_still_decrypts(&tmp.path().join("state"), &key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_kek_rotates_and_old_data_decrypts() {
    required_env("KEYWARD_TEST_KMS_ENDPOINT");
    let tmp = TempDir::new().unwrap();
    let key = format!("awskms:alias/{}", unique("kw-kek"));
    rotate_then_old_data_still_decrypts(&tmp.path().join("state"), &key).await;
}

/// A KEK on SoftHSM: generated and rotated by the CLI, old blobs decrypt, a tampered
/// blob is refused naming the failed check, and `hsm keys` shows one sensitive,
/// non-extractable AES-256 object per version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs11_kek_rotates_and_old_data_decrypts() {
    let module = required_env("KEYWARD_TEST_PKCS11_MODULE");
    let tmp = TempDir::new().unwrap();
    let (token, pin) = softhsm_token(tmp.path(), "kw-kek");
    let query = format!("module-path={module}&pin-source=file:{}", pin.display());
    let key = format!("pkcs11:token={token};object=db-kek?{query}");
    let state = tmp.path().join("state");
    rotate_then_old_data_still_decrypts(&state, &key).await;

    let uri = KeyUri::parse(&key).unwrap();
    let kek = open(&Backends::default(), &uri).await;
    let mut tampered = kek.encrypt(b"card 4111", b"record=1").await.unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let e = kek.decrypt(&tampered, b"record=1").await.unwrap_err();
    let line = keyward_core::chain_line(&e);
    assert!(
        line.contains("cannot decrypt payload (key version 2)")
            && line.contains("AES-256-GCM authentication failed"),
        "{line}"
    );

    let listed = keyward_ok(
        &state,
        &[
            "hsm",
            "keys",
            "--key",
            &format!("pkcs11:token={token}?{query}"),
            "--json",
        ],
    );
    let keys: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let keys: Vec<_> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let field = |name: &str| k[name].to_string();
            [
                "label",
                "id",
                "class",
                "key_type",
                "size",
                "sensitive",
                "extractable",
            ]
            .map(field)
            .join(" ")
        })
        .collect();
    assert_eq!(
        keys,
        [
            r#""db-kek" "00000001" "secret" "AES" "256" true false"#,
            r#""db-kek" "00000002" "secret" "AES" "256" true false"#,
        ],
        "{listed}"
    );
}

#[test]
fn kek_errors_are_one_line() {
    let tmp = TempDir::new().unwrap();
    let state = tmp.path().join("state");
    let kek = format!("file:{}", tmp.path().join("kek").display());
    keyward_fails(&state, &["key", "rotate", "--key", &kek], "key not found");
    common::generate_key(&state, &kek, "aes-256");
    keyward_fails(
        &state,
        &["key", "generate", "--key", &kek, "--algorithm", "aes-256"],
        "already exists",
    );
    let signing = format!("file:{}", tmp.path().join("ca.pem").display());
    common::generate_key(&state, &signing, "ecdsa-p256");
    keyward_fails(
        &state,
        &["key", "rotate", "--key", &signing],
        "a software key-encryption key is a directory",
    );
    keyward_fails(
        &state,
        &[
            "key",
            "generate",
            "--key",
            "pkcs11:token=t;object=kek;id=%01?module-path=/nonexistent.so&pin-value=1",
            "--algorithm",
            "aes-256",
        ],
        "CKA_IDs are its version numbers",
    );
}

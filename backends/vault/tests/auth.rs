//! Authentication against the real server: AppRole login, token renewal before the lease
//! ends, a new login once the token reaches its max TTL, token files, and the
//! permission error of a token without the sign policy.
#![forbid(unsafe_code)]

mod common;

use std::time::Duration;

use keyward_core::{Algorithm, Error, KeyBackend, KeySigner, verify_signature};
use keyward_vault::{AppRoleAuth, TransitBackend, VaultAuth, VaultSettings};
use serde_json::json;
use zeroize::Zeroizing;

/// Creates a P-256 Transit key as root and a policy that may read and sign with it.
async fn key_and_sign_policy(admin: &common::Admin, prefix: &str) -> (String, String) {
    let name = common::unique(prefix);
    admin
        .post(
            &format!("transit/keys/{name}"),
            json!({ "type": "ecdsa-p256" }),
        )
        .await;
    let policy = format!("{name}-signer");
    admin
        .policy(
            &policy,
            &format!(
                "path \"transit/keys/{name}\" {{ capabilities = [\"read\"] }}\n\
                 path \"transit/sign/{name}\" {{ capabilities = [\"update\"] }}\n"
            ),
        )
        .await;
    (name, policy)
}

/// Enables AppRole at a fresh mount with one role; returns settings whose role_id and
/// secret_id files live in `dir`.
async fn approle(
    admin: &common::Admin,
    policy: &str,
    token_ttl: &str,
    token_max_ttl: &str,
    dir: &std::path::Path,
) -> VaultSettings {
    let mount = common::unique("approle");
    admin
        .post(&format!("sys/auth/{mount}"), json!({ "type": "approle" }))
        .await;
    admin
        .post(
            &format!("auth/{mount}/role/keyward"),
            json!({
                "token_policies": [policy],
                "token_ttl": token_ttl,
                "token_max_ttl": token_max_ttl,
            }),
        )
        .await;
    let role_id = admin
        .get(&format!("auth/{mount}/role/keyward/role-id"))
        .await["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret_id = admin
        .post(&format!("auth/{mount}/role/keyward/secret-id"), json!({}))
        .await["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(dir.join("role_id"), format!("{role_id}\n")).unwrap();
    std::fs::write(dir.join("secret_id"), secret_id).unwrap();
    VaultSettings::new(
        &common::addr(),
        VaultAuth::AppRole(AppRoleAuth {
            mount,
            role_id_file: dir.join("role_id"),
            secret_id_file: dir.join("secret_id"),
        }),
    )
    .unwrap()
}

async fn sign_ok(signer: &dyn KeySigner, msg: &[u8]) {
    let sig = signer.sign(msg).await.unwrap_or_else(|e| {
        panic!("sign: {}", keyward_core::chain_line(&e));
    });
    verify_signature(signer.algorithm(), signer.public_key_spki_der(), msg, &sig).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_login_and_token_renewal() {
    let admin = common::Admin::shared();
    let (name, policy) = key_and_sign_policy(&admin, "approle-renew").await;
    let dir = tempfile::tempdir().unwrap();
    let settings = approle(&admin, &policy, "3s", "1h", dir.path()).await;
    let backend = TransitBackend::new(&settings).unwrap();
    let signer = backend.open(&common::transit(&name, "")).await.unwrap();
    sign_ok(&*signer, b"right after login").await;
    let status = backend.client().auth_status();
    assert_eq!((status.method, status.logins), ("approle", 1), "{status:?}");
    assert!(
        status
            .expires_in
            .is_some_and(|t| t <= Duration::from_secs(3)),
        "{status:?}"
    );

    // Past the first lease: only renewal keeps the token alive without a second login.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    sign_ok(&*signer, b"after the first lease would have ended").await;
    let status = backend.client().auth_status();
    assert_eq!(
        status.logins, 1,
        "the token was replaced instead of renewed: {status:?}"
    );
    assert!(status.renewals >= 2, "{status:?}");
    assert_eq!(status.failures, 0, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_at_its_max_ttl_is_replaced_by_a_new_approle_login() {
    let admin = common::Admin::shared();
    let (name, policy) = key_and_sign_policy(&admin, "approle-maxttl").await;
    let dir = tempfile::tempdir().unwrap();
    let settings = approle(&admin, &policy, "2s", "4s", dir.path()).await;
    let backend = TransitBackend::new(&settings).unwrap();
    let signer = backend.open(&common::transit(&name, "")).await.unwrap();
    sign_ok(&*signer, b"first token").await;

    tokio::time::sleep(Duration::from_secs(6)).await;
    sign_ok(&*signer, b"after the first token's max TTL").await;
    let status = backend.client().auth_status();
    assert!(
        status.logins >= 2,
        "no new login after the max TTL: {status:?}"
    );
    assert!(status.renewals >= 1, "{status:?}");
}

/// A token revoked behind keyward's back is refused; keyward logs in again and the
/// request goes through (a refused token older than 10 s is replaced once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_approle_token_is_replaced_by_a_new_login() {
    let admin = common::Admin::shared();
    let (name, policy) = key_and_sign_policy(&admin, "approle-revoked").await;
    let dir = tempfile::tempdir().unwrap();
    let settings = approle(&admin, &policy, "1h", "1h", dir.path()).await;
    let VaultAuth::AppRole(role) = &settings.auth else {
        unreachable!()
    };
    let mount = role.mount.clone();
    let backend = TransitBackend::new(&settings).unwrap();
    let signer = backend.open(&common::transit(&name, "")).await.unwrap();
    sign_ok(&*signer, b"first token").await;

    tokio::time::sleep(Duration::from_secs(11)).await;
    admin
        .post(
            &format!("sys/leases/revoke-prefix/auth/{mount}/login"),
            json!({}),
        )
        .await;
    sign_ok(&*signer, b"after the revocation").await;
    let status = backend.client().auth_status();
    assert_eq!(status.logins, 2, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_token_is_renewed_before_its_lease_ends() {
    let admin = common::Admin::shared();
    let (name, policy) = key_and_sign_policy(&admin, "token-renew").await;
    let token = admin.token(&[&policy], "3s").await;
    let settings =
        VaultSettings::new(&common::addr(), VaultAuth::Token(Zeroizing::new(token))).unwrap();
    let backend = TransitBackend::new(&settings).unwrap();
    let signer = backend.open(&common::transit(&name, "")).await.unwrap();
    sign_ok(&*signer, b"fresh token").await;

    tokio::time::sleep(Duration::from_millis(5500)).await;
    sign_ok(&*signer, b"after the token's first lease").await;
    let status = backend.client().auth_status();
    assert_eq!((status.method, status.logins), ("token", 0), "{status:?}");
    assert!(status.renewals >= 1, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_file_is_read_and_never_shown() {
    let admin = common::Admin::shared();
    let (name, policy) = key_and_sign_policy(&admin, "token-file").await;
    let token = admin.token(&[&policy], "1h").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let settings = VaultSettings::new(&common::addr(), VaultAuth::TokenFile(file)).unwrap();
    let backend = TransitBackend::new(&settings).unwrap();
    let signer = backend.open(&common::transit(&name, "")).await.unwrap();
    sign_ok(&*signer, b"token from a file").await;
    assert_eq!(backend.client().auth_status().logins, 1);
    for shown in [
        format!("{settings:?}"),
        format!("{backend:?}"),
        format!("{signer:?}"),
    ] {
        assert!(
            !shown.contains(&token),
            "token leaked into Debug output: {shown}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_without_sign_policy_gets_permission_denied_naming_the_path() {
    let admin = common::Admin::shared();
    let name = common::unique("no-sign");
    admin
        .post(
            &format!("transit/keys/{name}"),
            json!({ "type": "ecdsa-p256" }),
        )
        .await;
    let policy = format!("{name}-reader");
    admin
        .policy(
            &policy,
            &format!("path \"transit/keys/{name}\" {{ capabilities = [\"read\"] }}\n"),
        )
        .await;
    let token = admin.token(&[&policy], "1h").await;
    let settings =
        VaultSettings::new(&common::addr(), VaultAuth::Token(Zeroizing::new(token))).unwrap();
    let backend = TransitBackend::new(&settings).unwrap();
    let signer = backend.open(&common::transit(&name, "")).await.unwrap();

    let err = signer.sign(b"not allowed").await.unwrap_err();
    let line = err.to_string();
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    assert!(
        line.contains("permission denied") && line.contains(&format!("transit/sign/{name}")),
        "{line}"
    );

    // Generating elsewhere is refused the same way, and creates nothing.
    let other = common::unique("no-create");
    let err = backend
        .generate(&common::transit(&other, ""), Algorithm::EcdsaP256Sha256)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!("transit/keys/{other}")),
        "{err}"
    );

    // State unchanged: the key is as it was, the other one does not exist.
    let root = TransitBackend::new(&common::root_settings()).unwrap();
    let again = root.open(&common::transit(&name, "")).await.unwrap();
    assert_eq!(again.public_key_spki_der(), signer.public_key_spki_der());
    assert_eq!(again.uri().to_string(), format!("transit:{name}?version=1"));
    assert!(matches!(
        root.open(&common::transit(&other, "")).await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_approle_secret_is_refused_in_plain_words() {
    let admin = common::Admin::shared();
    let (name, policy) = key_and_sign_policy(&admin, "approle-bad").await;
    let dir = tempfile::tempdir().unwrap();
    let settings = approle(&admin, &policy, "1h", "1h", dir.path()).await;
    std::fs::write(dir.path().join("secret_id"), "not-the-secret-id").unwrap();
    let backend = TransitBackend::new(&settings).unwrap();
    let err = backend.open(&common::transit(&name, "")).await.unwrap_err();
    let line = err.to_string();
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    assert!(
        line.contains("/login") && !line.contains("not-the-secret-id"),
        "{line}"
    );
}

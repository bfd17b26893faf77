//! End-to-end: a CA key in AWS KMS (moto_server), driven through the CLI.

mod common;

use common::*;
use tempfile::TempDir;

#[test]
fn kms_root_issues_verifiable_certificates() {
    required_env("KEYWARD_TEST_KMS_ENDPOINT");
    for alg in ["ecdsa-p256", "rsa-2048"] {
        let tmp = TempDir::new().unwrap();
        let key = format!("awskms:alias/{}", unique("kw-e2e"));
        root_ca_issues_verifiable_certificate(tmp.path(), &key, alg, "ecdsa-p256");
    }
}

#[test]
fn kms_errors_change_nothing() {
    required_env("KEYWARD_TEST_KMS_ENDPOINT");
    let tmp = TempDir::new().unwrap();
    let state = tmp.path().join("state");
    let before = snapshot(tmp.path());
    keyward_fails(
        &state,
        &[
            "ca",
            "init",
            "--key",
            &format!("awskms:alias/{}", unique("missing")),
        ],
        "not found",
    );
    keyward_fails(
        &state,
        &[
            "key",
            "generate",
            "--key",
            &format!("awskms:alias/{}", unique("ed")),
            "--algorithm",
            "ed25519",
        ],
        "ed25519",
    );
    assert_eq!(snapshot(tmp.path()), before);
}

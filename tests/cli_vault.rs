//! End-to-end: a CA key in OpenBao Transit, driven through the CLI.

mod common;

use common::*;
use tempfile::TempDir;

#[test]
fn transit_root_issues_verifiable_certificates() {
    required_env("KEYWARD_TEST_VAULT_ADDR");
    for alg in ["ecdsa-p256", "ed25519", "rsa-3072"] {
        let tmp = TempDir::new().unwrap();
        let key = format!("transit:{}", unique("kw-e2e"));
        root_ca_issues_verifiable_certificate(tmp.path(), &key, alg, "ecdsa-p256");
    }
}

#[test]
fn transit_errors_change_nothing() {
    required_env("KEYWARD_TEST_VAULT_ADDR");
    let tmp = TempDir::new().unwrap();
    let state = tmp.path().join("state");
    let before = snapshot(tmp.path());
    keyward_fails(
        &state,
        &[
            "ca",
            "init",
            "--key",
            &format!("transit:{}", unique("missing")),
        ],
        "not found",
    );
    assert_eq!(snapshot(tmp.path()), before);
}

/// `curl` against the OpenBao started by scripts/test.sh; returns the body.
fn bao(method: &str, path: &str, body: Option<&str>) -> String {
    String::from_utf8_lossy(&vault_api(method, path, body)).to_string()
}

#[test]
fn ca_keeps_issuing_after_its_transit_key_rotates() {
    required_env("KEYWARD_TEST_VAULT_ADDR");
    let tmp = TempDir::new().unwrap();
    let state = tmp.path().join("state");
    let name = unique("kw-rot");
    let key = format!("transit:{name}");
    common::generate_key(&state, &key, "ecdsa-p256");
    keyward_ok(&state, &["ca", "init", "--key", &key]);
    let manifest = std::fs::read_to_string(state.join("ca/ca.json")).unwrap();
    assert!(
        manifest.contains(&format!("transit:{name}?version=1")),
        "the CA key is stored pinned: {manifest}"
    );
    bao("POST", &format!("transit/keys/{name}/rotate"), None);
    let out = tmp.path().join("svc");
    keyward_ok(
        &state,
        &[
            "issue",
            "--name",
            "api",
            "--dns",
            "api.internal",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    openssl_verify(&out);
    // The latest version is a different key: a new CA made with it differs from the first.
    let shown = keyward_ok(&state, &["key", "show", "--key", &key, "--json"]);
    assert!(shown.contains("version=2"), "{shown}");
}

#[test]
fn upstream_intermediate_verifies_against_openbao_root_alone() {
    required_env("KEYWARD_TEST_VAULT_ADDR");
    let tmp = TempDir::new().unwrap();
    let state = tmp.path().join("state");
    let key = format!("file:{}/keys/inter.pem", tmp.path().display());
    common::generate_key(&state, &key, "ecdsa-p256");
    keyward_ok(
        &state,
        &[
            "ca",
            "intermediate",
            "--key",
            &key,
            "--subject",
            "CN=node-1 issuing CA",
            "--validity",
            "30d",
            "--upstream",
            "vault-pki:pki",
        ],
    );
    let out = tmp.path().join("svc");
    keyward_ok(
        &state,
        &[
            "issue",
            "--name",
            "api",
            "--dns",
            "api.internal",
            "--validity",
            "1d",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let bao_root = tmp.path().join("bao-root.pem");
    std::fs::write(&bao_root, bao("GET", "pki/ca/pem", None)).unwrap();
    openssl(&[
        "verify",
        "-x509_strict",
        "-CAfile",
        bao_root.to_str().unwrap(),
        "-untrusted",
        out.join("chain.pem").to_str().unwrap(),
        out.join("cert.pem").to_str().unwrap(),
    ]);
    let served =
        keyward_core::check::pem_to_ders(&std::fs::read(out.join("ca.pem")).unwrap()).unwrap();
    let bao = keyward_core::check::pem_to_ders(&std::fs::read(&bao_root).unwrap()).unwrap();
    assert_eq!(served, bao, "the bundle served is OpenBao's root");
    keyward_fails(
        &state,
        &[
            "ca",
            "intermediate",
            "--key",
            &key,
            "--upstream",
            "vault-pki:pki",
        ],
        "already exists",
    );
}

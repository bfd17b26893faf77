//! End-to-end: the agent with its CA key in each real backend (SoftHSM, moto KMS,
//! OpenBao Transit) serves SVIDs that openssl verifies against the served bundle.

mod agent_common;
mod common;

use agent_common::*;
use common::{generate_key, openssl, required_env, softhsm_token, unique};
use tempfile::TempDir;

/// Starts an agent whose CA key is `key` (created here), fetches the caller's SVID as
/// root and verifies it with openssl.
fn agent_serves_verifiable_svids(dir: TempDir, key: &str) {
    generate_key(&dir.path().join("state"), key, "ecdsa-p256");
    let mut agent = Agent::with_ca_key(dir, key, &entry("backend-test", 0, "1h", ""));
    agent.start();
    let out = agent.out_dir("svid", 0);
    let fetched = fetch_as(0, &agent.socket, &out);
    assert!(
        fetched.status.success(),
        "fetch: {}\n{}",
        String::from_utf8_lossy(&fetched.stderr),
        agent.log()
    );
    let bundle = out.join("bundle.pem");
    let cert = out.join("cert.pem");
    openssl(&[
        "verify",
        "-x509_strict",
        "-CAfile",
        bundle.to_str().unwrap(),
        "-untrusted",
        cert.to_str().unwrap(),
        cert.to_str().unwrap(),
    ]);
    let leaf = keyward_core::check::pem_to_ders(&std::fs::read(&cert).unwrap()).unwrap();
    assert_eq!(
        uri_sans(&leaf[0]),
        vec![format!("spiffe://{TRUST_DOMAIN}/backend-test")]
    );
    agent.stop();
}

#[test]
fn agent_with_ca_key_in_softhsm() {
    let module = required_env("KEYWARD_TEST_PKCS11_MODULE");
    let dir = TempDir::new().unwrap();
    let (token, pin) = softhsm_token(dir.path(), "kw-agent");
    let key = format!(
        "pkcs11:token={token};object=agent-ca?module-path={module}&pin-source=file:{}",
        pin.display()
    );
    agent_serves_verifiable_svids(dir, &key);
}

#[test]
fn agent_with_ca_key_in_kms() {
    required_env("KEYWARD_TEST_KMS_ENDPOINT");
    agent_serves_verifiable_svids(
        TempDir::new().unwrap(),
        &format!("awskms:alias/{}", unique("kw-agent")),
    );
}

#[test]
fn agent_with_ca_key_in_transit() {
    required_env("KEYWARD_TEST_VAULT_ADDR");
    agent_serves_verifiable_svids(
        TempDir::new().unwrap(),
        &format!("transit:{}", unique("kw-agent")),
    );
}

//! End-to-end: keys in a TPM (tpm2-pkcs11 on swtpm, through tpm2-abrmd), driven through
//! the CLI: every algorithm the TPM offers, `hsm keys` showing them sensitive and not
//! extractable, what the TPM lacks refused by name, and a CA whose root and
//! intermediate keys are in the TPM issuing certificates that openssl verifies.

mod common;
mod tpm_common;

use common::{keyward_fails, keyward_ok, openssl_verify};
use tempfile::TempDir;
use tpm_common::TpmToken;

#[test]
fn tpm_keys_of_every_offered_algorithm_are_generated_listed_and_protected() {
    let tmp = TempDir::new().unwrap();
    let state = tmp.path().join("state");
    let tpm = TpmToken::take();
    for (label, alg) in [
        ("k-p256", "ecdsa-p256"),
        ("k-p384", "ecdsa-p384"),
        ("k-rsa2048", "rsa-2048"),
    ] {
        let uri = tpm.key_uri(label);
        keyward_ok(
            &state,
            &["key", "generate", "--key", &uri, "--algorithm", alg],
        );
        let shown = keyward_ok(&state, &["key", "show", "--key", &uri, "--json"]);
        assert!(shown.contains(alg), "{shown}");
    }
    for (label, size) in [
        ("k-p256", "P-256"),
        ("k-p384", "P-384"),
        ("k-rsa2048", "2048"),
    ] {
        let private = tpm.listed_private(&state, &tpm.token, label);
        assert_eq!(private["size"], size, "{private}");
        assert_eq!(private["sensitive"], true, "{private}");
        assert_eq!(private["extractable"], false, "{private}");
    }
    keyward_fails(
        &state,
        &[
            "key",
            "generate",
            "--key",
            &tpm.key_uri("k-ed"),
            "--algorithm",
            "ed25519",
        ],
        "token 'kw-tpm' does not offer CKM_EC_EDWARDS_KEY_PAIR_GEN, needed for generating ed25519 keys",
    );
    keyward_fails(
        &state,
        &[
            "key",
            "generate",
            "--key",
            &tpm.key_uri("k-rsa4096"),
            "--algorithm",
            "rsa-4096",
        ],
        "token 'kw-tpm' generates RSA keys of 1024 to 3072 bits, not 4096 (rsa-4096)",
    );
    keyward_fails(
        &state,
        &[
            "key",
            "generate",
            "--key",
            &tpm.key_uri("k-p256"),
            "--algorithm",
            "ecdsa-p256",
        ],
        "already",
    );
}

#[test]
fn tpm_root_and_intermediate_issue_verifiable_certificates() {
    let tmp = TempDir::new().unwrap();
    let state = tmp.path().join("state");
    let tpm = TpmToken::take();
    let root = tpm.key_uri("root-ca");
    let inter = tpm.key_uri("issuing-ca");
    for (uri, alg) in [(&root, "ecdsa-p384"), (&inter, "ecdsa-p256")] {
        keyward_ok(
            &state,
            &["key", "generate", "--key", uri, "--algorithm", alg],
        );
    }
    keyward_ok(
        &state,
        &["ca", "init", "--key", &root, "--subject", "CN=TPM Root"],
    );
    keyward_ok(
        &state,
        &[
            "ca",
            "intermediate",
            "--key",
            &inter,
            "--subject",
            "CN=TPM Issuing",
        ],
    );
    for name in ["api", "db"] {
        let out = tmp.path().join(name);
        keyward_ok(
            &state,
            &[
                "issue",
                "--name",
                name,
                "--dns",
                &format!("{name}.internal"),
                "--out",
                out.to_str().unwrap(),
            ],
        );
        openssl_verify(&out);
        let cert = std::fs::read_to_string(out.join("cert.pem")).unwrap();
        keyward_ok(
            &state,
            &["verify", "--cert", out.join("cert.pem").to_str().unwrap()],
        );
        assert!(cert.contains("BEGIN CERTIFICATE"));
    }
}

#[test]
fn tpm_rsa_root_signs_pkcs1() {
    let tmp = TempDir::new().unwrap();
    let state = tmp.path().join("state");
    let tpm = TpmToken::take();
    let root = tpm.key_uri("rsa-root");
    common::generate_key(&state, &root, "rsa-2048");
    keyward_ok(
        &state,
        &["ca", "init", "--key", &root, "--subject", "CN=TPM RSA Root"],
    );
    let out = tmp.path().join("svc");
    common::issue_named(&state, "svc", &out);
    openssl_verify(&out);
}

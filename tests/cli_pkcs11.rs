//! End-to-end: a CA whose key never leaves SoftHSM, driven through the CLI.

mod common;

use common::*;
use tempfile::TempDir;

fn module() -> String {
    required_env("KEYWARD_TEST_PKCS11_MODULE")
}

fn key_uri(token: &str, object: &str, pin_file: &std::path::Path) -> String {
    format!(
        "pkcs11:token={token};object={object}?module-path={}&pin-source=file:{}",
        module(),
        pin_file.display()
    )
}

#[test]
fn softhsm_root_and_intermediate_in_two_tokens_issue_verifiable_certificates() {
    let tmp = TempDir::new().unwrap();
    let state = tmp.path().join("state");
    let (root_token, root_pin) = softhsm_token(tmp.path(), "kw-root");
    let (inter_token, inter_pin) = softhsm_token(tmp.path(), "kw-inter");
    let root = key_uri(&root_token, "root-ca", &root_pin);
    let inter = key_uri(&inter_token, "issuing-ca", &inter_pin);
    common::generate_key(&state, &root, "ecdsa-p384");
    common::generate_key(&state, &inter, "ecdsa-p256");
    let shown = keyward_ok(&state, &["key", "show", "--key", &root, "--json"]);
    assert!(shown.contains("ecdsa-p384"), "{shown}");
    keyward_ok(
        &state,
        &["ca", "init", "--key", &root, "--subject", "CN=HSM Root"],
    );
    keyward_ok(
        &state,
        &[
            "ca",
            "intermediate",
            "--key",
            &inter,
            "--subject",
            "CN=HSM Issuing",
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
            "--out",
            out.to_str().unwrap(),
        ],
    );
    openssl_verify(&out);
    // The manifest records the key by URI, never the PIN itself.
    let manifest = std::fs::read_to_string(state.join("ca/ca.json")).unwrap();
    assert!(
        manifest.contains(&root_token) && manifest.contains("pin-source"),
        "{manifest}"
    );
    let pin = std::fs::read_to_string(&root_pin).unwrap();
    assert!(!manifest.contains(&pin));
}

#[test]
fn rsa_root_on_softhsm() {
    let tmp = TempDir::new().unwrap();
    let (token, pin) = softhsm_token(tmp.path(), "kw-rsa");
    let root = key_uri(&token, "root-rsa", &pin);
    root_ca_issues_verifiable_certificate(tmp.path(), &root, "rsa-2048", "ed25519");
}

#[test]
fn hsm_slots_and_keys_list_the_token_and_its_key() {
    let tmp = TempDir::new().unwrap();
    let state = tmp.path().join("state");
    let (token, pin) = softhsm_token(tmp.path(), "kw-list");
    let key = key_uri(&token, "listed-key", &pin);
    common::generate_key(&state, &key, "ecdsa-p256");
    let slots = keyward_ok(&state, &["hsm", "slots", "--module", &module()]);
    assert!(slots.contains(&token), "{slots}");
    let slots_json = keyward_ok(
        &state,
        &[
            "hsm",
            "slots",
            "--module",
            &module(),
            "--mechanisms",
            "--json",
        ],
    );
    assert!(slots_json.contains("ECDSA"), "{slots_json}");
    let token_uri = format!(
        "pkcs11:token={token}?module-path={}&pin-source=file:{}",
        module(),
        pin.display()
    );
    let keys = keyward_ok(&state, &["hsm", "keys", "--key", &token_uri]);
    assert!(keys.contains("listed-key"), "{keys}");
    assert_eq!(
        files_in(&state),
        ["audit.jsonl", "audit.jsonl.head"],
        "hsm and key commands write nothing but key generate's audit record"
    );
}

#[test]
fn hsm_errors_are_plain_and_change_nothing() {
    let tmp = TempDir::new().unwrap();
    let state = tmp.path().join("state");
    let (token, pin) = softhsm_token(tmp.path(), "kw-err");
    let good = key_uri(&token, "ca", &pin);
    common::generate_key(&state, &good, "ecdsa-p256");
    let wrong_pin = tmp.path().join("wrong.pin");
    std::fs::write(&wrong_pin, "not-the-pin-4711").unwrap();
    let cases = [
        (key_uri(&token, "ca", &wrong_pin), "PIN incorrect"),
        (
            key_uri("no-such-token-label", "ca", &pin),
            "no-such-token-label",
        ),
        (key_uri(&token, "no-such-object", &pin), "not found"),
        (
            format!(
                "pkcs11:token={token};object=ca?module-path=/nonexistent/libpkcs11.so&pin-source=file:{}",
                pin.display()
            ),
            "/nonexistent/libpkcs11.so",
        ),
    ];
    for (uri, needle) in cases {
        let before = snapshot(tmp.path());
        let line = keyward_fails(&state, &["ca", "init", "--key", &uri], needle);
        assert!(!line.contains("not-the-pin-4711"), "PIN leaked: {line}");
        assert_eq!(snapshot(tmp.path()), before, "state changed by {uri}");
    }
    assert_eq!(files_in(&state), ["audit.jsonl", "audit.jsonl.head"]);
}

/// The names of the files in `dir`, sorted.
fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn opening_a_token_key_prints_nothing_on_stderr() {
    let tmp = TempDir::new().unwrap();
    let state = tmp.path().join("state");
    let (token, pin) = softhsm_token(tmp.path(), "kw-quiet");
    let key = key_uri(&token, "quiet", &pin);
    common::generate_key(&state, &key, "ecdsa-p256");
    let out = keyward(&state, &["key", "show", "--key", &key]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "stderr must stay clean"
    );
}

//! End-to-end: `keyward.v1.KeyService` on the agent's socket, driven by the
//! `keyward crypto` client. For each real backend (software, OpenBao Transit, moto
//! KMS, SoftHSM for signing) a caller signs and checks the signature with openssl
//! against the public key the agent returns, makes and unwraps data keys, encrypts and
//! decrypts payloads, and still decrypts after `keyward key rotate`. Refusals: a grant
//! the caller lacks (also as uid 65534 with an entry of its own, and with none), an op
//! the grant does not list, a tampered wrapped key, other associated data; each ends
//! with a clear status and nothing on stdout. Every op is in the audit log, without
//! data.

mod agent_common;
mod common;
mod keys_common;

use std::path::{Path, PathBuf};

use agent_common::*;
use common::{keyward_ok, openssl, required_env, softhsm_token, unique};
use keys_common::*;
use tempfile::TempDir;

/// A grant line for the entry's `keys` list.
fn grant(name: &str, key: &str, ops: &[&str]) -> String {
    let ops: Vec<String> = ops.iter().map(|o| format!("\"{o}\"")).collect();
    format!(
        "{{ name = \"{name}\", key = \"{key}\", ops = [{}] }}",
        ops.join(", ")
    )
}

/// An agent with an entry for root holding `grants`, and one for uid 65534 holding none.
fn agent_with_grants(grants: &[String]) -> Agent {
    let keys = format!("keys = [\n  {},\n]", grants.join(",\n  "));
    let entries = format!(
        "{}\n{}",
        entry("app", 0, "1h", &keys),
        entry("nobody", NOBODY, "1h", "")
    );
    let mut agent = Agent::new(&entries);
    agent.start();
    agent
}

/// Sign and PublicKey through the agent with grant `sig`: openssl verifies the
/// signature with the returned public key.
fn signs_verifiably(agent: &Agent, tmp: &Path) {
    let message = b"pay 10 EUR to bob".to_vec();
    let msg = tmp.join("msg");
    std::fs::write(&msg, &message).unwrap();
    let sig = tmp.join("sig");
    std::fs::write(
        &sig,
        crypto(
            agent,
            &["sign", "--key", "sig", "--algorithm", "ecdsa-p256"],
            &message,
        ),
    )
    .unwrap();
    let public = tmp.join("pub.pem");
    std::fs::write(&public, crypto(agent, &["public-key", "--key", "sig"], b"")).unwrap();
    let out = openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        public.to_str().unwrap(),
        "-signature",
        sig.to_str().unwrap(),
        msg.to_str().unwrap(),
    ]);
    assert!(out.contains("Verified OK"), "{out}");
    refused(
        0,
        agent,
        &["sign", "--key", "sig", "--algorithm", "ecdsa-p384"],
        &message,
        "InvalidArgument",
    );
}

/// Data keys and payloads through the agent with grant `kek`, before and after the
/// KEK is rotated (`state` is where `keyward key rotate` runs).
fn envelope_round_trips(agent: &Agent, tmp: &Path, kek: &str, state: &Path) {
    let (plain, wrapped) = data_key(agent, tmp, "dk1");
    assert_eq!(plain.len(), 32);
    assert_eq!(unwrap_key(agent, &wrapped), plain);
    let sealed = crypto(
        agent,
        &["encrypt", "--key", "kek", "--aad", "row=7"],
        b"card 4111",
    );
    let opened = crypto(
        agent,
        &["decrypt", "--key", "kek", "--aad", "row=7"],
        &sealed,
    );
    assert_eq!(opened, b"card 4111");
    refused(
        0,
        agent,
        &["decrypt", "--key", "kek", "--aad", "row=8"],
        &sealed,
        "InvalidArgument",
    );
    let mut tampered = wrapped.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    refused(
        0,
        agent,
        &["decrypt", "--key", "kek", "--data-key"],
        &tampered,
        "InvalidArgument",
    );
    refused(
        0,
        agent,
        &["encrypt", "--key", "kek"],
        &vec![0u8; 4097],
        "4096-byte limit",
    );

    keyward_ok(state, &["key", "rotate", "--key", kek]);
    assert_eq!(
        unwrap_key(agent, &wrapped),
        plain,
        "old data key after rotation"
    );
    let opened = crypto(
        agent,
        &["decrypt", "--key", "kek", "--aad", "row=7"],
        &sealed,
    );
    assert_eq!(opened, b"card 4111", "old payload after rotation");
    let (plain2, wrapped2) = data_key(agent, tmp, "dk2");
    assert_ne!(wrapped2, wrapped);
    assert_eq!(unwrap_key(agent, &wrapped2), plain2);
}

/// Refusals that hold whatever the backend: an unknown grant, an op a grant lacks, a
/// caller (uid 65534) with an entry but no grant. Then the audit log names every
/// operation and refusal and holds no data.
fn refusals_and_audit(agent: &Agent) {
    refused(
        0,
        agent,
        &["public-key", "--key", "nope"],
        b"",
        "PermissionDenied",
    );
    refused(
        0,
        agent,
        &["sign", "--key", "kek"],
        b"m",
        "does not allow sign",
    );
    refused(
        0,
        agent,
        &["decrypt", "--key", "kek-make-only", "--data-key"],
        b"x",
        "does not allow decrypt",
    );
    refused(
        0,
        agent,
        &["encrypt", "--key", "sig"],
        b"m",
        "does not allow encrypt",
    );
    for args in [
        &["public-key", "--key", "sig"][..],
        &[
            "data-key",
            "--key",
            "kek",
            "--wrapped-out",
            "/tmp/never-written",
        ][..],
        &["decrypt", "--key", "kek", "--data-key"][..],
    ] {
        refused(NOBODY, agent, args, b"x", "PermissionDenied");
    }
    assert!(!Path::new("/tmp/never-written").exists());
    // The audit writer appends on its own task: wait (up to 10 s) for the last refusal.
    let needles = [
        "\"key_operation\"",
        "\"grant\":\"kek\"",
        "\"op\":\"generate-data-key\"",
        "no key grant named 'sig'",
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let audit = loop {
        let audit = std::fs::read_to_string(agent.state.join("audit.jsonl")).expect("audit log");
        if needles.iter().all(|n| audit.contains(n)) || std::time::Instant::now() > deadline {
            break audit;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    for needle in needles {
        assert!(
            audit.contains(needle),
            "no {needle} in the audit log:\n{audit}"
        );
    }
    assert!(!audit.contains("card 4111"), "payload in the audit log");
}

/// The whole matrix for one backend: `sig_key` signs, `kek` (if any) wraps.
fn key_service_against(sig_key: &str, kek: Option<&str>) {
    let keys = TempDir::new().unwrap();
    let state = keys.path().join("state");
    generate(&state, sig_key, "ecdsa-p256");
    let mut grants = vec![grant("sig", sig_key, &["sign", "public-key"])];
    if let Some(kek) = kek {
        generate(&state, kek, "aes-256");
        grants.push(grant(
            "kek",
            kek,
            &["generate-data-key", "encrypt", "decrypt"],
        ));
        grants.push(grant("kek-make-only", kek, &["generate-data-key"]));
    }
    let mut agent = agent_with_grants(&grants);
    let tmp = keys.path();
    signs_verifiably(&agent, tmp);
    if let Some(kek) = kek {
        envelope_round_trips(&agent, tmp, kek, &state);
        refusals_and_audit(&agent);
    }
    agent.stop();
}

fn file_key(dir: &Path, name: &str) -> String {
    format!("file:{}", dir.join(name).display())
}

/// Where software keys of a test live: a directory that outlives the test's agent.
fn key_dir() -> (TempDir, PathBuf) {
    let dir = TempDir::new().unwrap();
    let path = dir.path().to_path_buf();
    (dir, path)
}

#[test]
fn key_service_with_software_keys() {
    let (_keep, dir) = key_dir();
    key_service_against(&file_key(&dir, "sig.pem"), Some(&file_key(&dir, "kek")));
}

#[test]
fn key_service_with_transit_keys() {
    required_env("KEYWARD_TEST_VAULT_ADDR");
    key_service_against(
        &format!("transit:{}", unique("kw-sig")),
        Some(&format!("transit:{}", unique("kw-kek"))),
    );
}

#[test]
fn key_service_with_kms_keys() {
    required_env("KEYWARD_TEST_KMS_ENDPOINT");
    key_service_against(
        &format!("awskms:alias/{}", unique("kw-sig")),
        Some(&format!("awskms:alias/{}", unique("kw-kek"))),
    );
}

#[test]
fn key_service_with_softhsm_keys() {
    let module = required_env("KEYWARD_TEST_PKCS11_MODULE");
    let (_keep, dir) = key_dir();
    let (token, pin) = softhsm_token(&dir, "kw-keys");
    let key = |object: &str| {
        format!(
            "pkcs11:token={token};object={object}?module-path={module}&pin-source=file:{}",
            pin.display()
        )
    };
    key_service_against(&key("app-sig"), Some(&key("app-kek")));
}

#[test]
fn a_caller_no_entry_matches_gets_nothing() {
    let (_keep, dir) = key_dir();
    let state = dir.join("state");
    let sig = file_key(&dir, "sig.pem");
    generate(&state, &sig, "ecdsa-p256");
    let keys = format!("keys = [{}]", grant("sig", &sig, &["sign", "public-key"]));
    let mut agent = Agent::new(&entry("app", 0, "1h", &keys));
    agent.start();
    refused(
        NOBODY,
        &agent,
        &["public-key", "--key", "sig"],
        b"",
        "PermissionDenied",
    );
    refused(
        NOBODY,
        &agent,
        &["sign", "--key", "sig"],
        b"m",
        "no workload entry matches",
    );
    agent.stop();
}

#[test]
fn a_grant_added_by_a_reload_is_served_and_one_removed_is_refused() {
    let (_keep, dir) = key_dir();
    let sig = file_key(&dir, "sig.pem");
    generate(&dir.join("state"), &sig, "ecdsa-p256");
    let mut agent = Agent::new(&entry("app", 0, "1h", ""));
    agent.start();
    refused(
        0,
        &agent,
        &["public-key", "--key", "sig"],
        b"",
        "no key grant named 'sig'",
    );
    let keys = format!("keys = [{}]", grant("sig", &sig, &["public-key"]));
    agent.write_config(&entry("app", 0, "1h", &keys));
    agent.signal("HUP");
    wait_for("the new grant", std::time::Duration::from_secs(20), || {
        crypto_as(0, &agent, &["public-key", "--key", "sig"], b"")
            .status
            .success()
    });
    agent.write_config(&entry("app", 0, "1h", ""));
    agent.signal("HUP");
    wait_for(
        "the grant's removal",
        std::time::Duration::from_secs(20),
        || {
            !crypto_as(0, &agent, &["public-key", "--key", "sig"], b"")
                .status
                .success()
        },
    );
    refused(
        0,
        &agent,
        &["public-key", "--key", "sig"],
        b"",
        "no key grant named 'sig'",
    );
    agent.stop();
}

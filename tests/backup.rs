//! End-to-end: `keyward backup` and `keyward restore` rebuild a working state directory
//! with the same CA, keep HSM keys out of the archive, and refuse bad input without
//! writing anything.

mod agent_common;
mod backup_common;
mod common;

use std::path::Path;

use agent_common::*;
use backup_common::*;
use common::*;
use keyward_core::backup;
use tempfile::TempDir;

/// (role, serial, name) of every certificate `status --json` lists.
fn inventory(state: &Path) -> Vec<(String, String, String)> {
    let v: serde_json::Value =
        serde_json::from_str(&keyward_ok(state, &["status", "--json"])).unwrap();
    v["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let f = |k: &str| c[k].as_str().unwrap().to_string();
            (f("role"), f("serial_hex"), f("name"))
        })
        .collect()
}

fn issue(state: &Path, out: &Path) {
    keyward_ok(
        state,
        &[
            "issue",
            "--name",
            "api",
            "--dns",
            "api.internal",
            "--out",
            s(out),
        ],
    );
}

/// `openssl verify` of `dir`'s certificate against `ca_pem` (not `dir/ca.pem`).
fn openssl_verify_against(dir: &Path, ca_pem: &Path) {
    openssl(&[
        "verify",
        "-x509_strict",
        "-CAfile",
        s(ca_pem),
        "-untrusted",
        s(&dir.join("chain.pem")),
        s(&dir.join("cert.pem")),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn software_ca_with_intermediate_round_trips_to_a_working_state_and_agent() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let root_key = format!("file:{}/keys/root.pem", dir.display());
    let inter_key = format!("file:{}/keys/issuing.pem", dir.display());
    let state = root_ca(dir, &root_key, "ecdsa-p256");
    common::generate_key(&state, &inter_key, "ecdsa-p384");
    keyward_ok(&state, &["ca", "intermediate", "--key", &inter_key]);
    issue(&state, &dir.join("svc1"));
    let original_root = std::fs::read(state.join("ca/root.pem")).unwrap();
    let original_inventory = inventory(&state);
    assert_eq!(original_inventory.len(), 3, "root, intermediate, one leaf");

    let archive = backup_to(&state, dir, "state.kwb");
    let sealed = std::fs::read(&archive).unwrap();
    for plain in [&b"PRIVATE KEY"[..], b"BEGIN CERTIFICATE", b"inventory"] {
        assert!(!sealed.windows(plain.len()).any(|w| w == plain));
    }
    let payload = open_archive(&archive);
    let keys = &payload.manifest().keys;
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| k.included && k.state_file.is_none()));
    assert_eq!(keys[0].uri, root_key);

    // The keys are gone (a new machine): restore puts them back at their recorded paths.
    let original_keys = dir.join("keys.orig");
    std::fs::rename(dir.join("keys"), &original_keys).unwrap();
    let agent_dir = TempDir::new().unwrap();
    let mut agent = Agent::with_ca_key(agent_dir, &inter_key, &entry("api", 0, "1h", ""));
    let restored = agent.state.clone();
    let pass = passphrase_file(dir, PASSPHRASE);
    // Writing outside the state directory needs the operator's explicit yes: without it
    // the paths are listed and nothing is written.
    let out = keyward(&restored, &restore_args(s(&archive), s(&pass)));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for name in ["root.pem", "issuing.pem"] {
        let listed = format!(
            "outside the state directory: {}",
            dir.join("keys").join(name).display()
        );
        assert!(stderr.contains(&listed), "{stderr}");
    }
    assert!(stderr.contains("--allow-outside-state"), "{stderr}");
    assert!(!restored.exists() && !dir.join("keys").exists());
    let mut args = restore_args(s(&archive), s(&pass)).to_vec();
    args.push("--allow-outside-state");
    keyward_ok(&restored, &args);
    for name in ["root.pem", "issuing.pem"] {
        let key = dir.join("keys").join(name);
        assert_eq!(
            std::fs::read(&key).unwrap(),
            std::fs::read(original_keys.join(name)).unwrap()
        );
        assert_eq!(mode(&key), 0o600);
    }
    assert_eq!(mode(&dir.join("keys")), 0o700);
    for d in ["", "ca", "issued"] {
        assert_eq!(mode(&restored.join(d)), 0o700, "{d}");
    }
    assert_eq!(
        std::fs::read(restored.join("ca/root.pem")).unwrap(),
        original_root
    );
    assert_eq!(inventory(&restored), original_inventory);

    // The restored state issues certificates that chain to the ORIGINAL root.
    issue(&restored, &dir.join("svc2"));
    openssl_verify_against(&dir.join("svc2"), &state.join("ca/root.pem"));

    // An agent on the restored state serves the original root as its bundle.
    agent.start();
    let svid = raw::fetch_x509(raw::channel(&agent.socket).await, true)
        .await
        .expect("fetch an SVID from the restored agent");
    let original_root_der = keyward_core::check::pem_to_ders(&original_root).unwrap();
    assert_eq!(svid.svids[0].bundle, original_root_der.concat());
    agent.stop();
}

#[test]
fn restore_never_overwrites_a_different_key_and_identical_keys_are_kept() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let key = software_key(dir);
    let state = root_ca(dir, &key, "ed25519");
    let archive = backup_to(&state, dir, "a.kwb");
    let pass = passphrase_file(dir, PASSPHRASE);

    // The original key is still there and identical: fine, left alone.
    let same = dir.join("same");
    let out = keyward_ok(&same, &restore_args(s(&archive), s(&pass)));
    assert!(out.contains("identical"), "{out}");
    issue(&same, &dir.join("svc"));

    // A different file at the key's path: refused, nothing written.
    let key_path = dir.join("keys/ca.pem");
    std::fs::rename(&key_path, dir.join("moved.pem")).unwrap();
    std::fs::write(&key_path, "something else").unwrap();
    let other = dir.join("other");
    keyward_fails(
        &other,
        &restore_args(s(&archive), s(&pass)),
        "never overwrites a key",
    );
    assert!(!other.exists());
    assert_eq!(std::fs::read(&key_path).unwrap(), b"something else");
}

#[test]
fn softhsm_ca_key_is_recorded_by_uri_only_and_the_restored_state_issues_with_it() {
    let module = required_env("KEYWARD_TEST_PKCS11_MODULE");
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let (token, pin_file) = softhsm_token(dir, "kw-backup");
    let pin = std::fs::read_to_string(&pin_file).unwrap();
    let key = format!(
        "pkcs11:token={token};object=root-ca?module-path={module}&pin-source=file:{}",
        pin_file.display()
    );
    let state = root_ca(dir, &key, "ecdsa-p256");
    issue(&state, &dir.join("svc1"));
    let archive = backup_to(&state, dir, "hsm.kwb");

    let payload = open_archive(&archive);
    let keys = &payload.manifest().keys;
    assert_eq!(keys.len(), 1);
    assert!(keys[0].uri.starts_with("pkcs11:"), "{}", keys[0].uri);
    assert!(keys[0].uri.contains(&format!("token={token}")));
    assert!(!keys[0].included, "an HSM key is never exported");
    assert!(keys[0].size.is_none() && keys[0].sha256.is_none());
    let plain = payload.plaintext();
    assert!(!plain.windows(pin.len()).any(|w| w == pin.as_bytes()));
    assert!(!plain.windows(11).any(|w| w == b"PRIVATE KEY"));

    let restored = dir.join("restored");
    let pass = passphrase_file(dir, PASSPHRASE);
    let out = keyward_ok(&restored, &restore_args(s(&archive), s(&pass)));
    assert!(out.contains("not in the archive"), "{out}");
    issue(&restored, &dir.join("svc2"));
    openssl_verify_against(&dir.join("svc2"), &state.join("ca/root.pem"));
    assert_eq!(inventory(&restored).len(), 3);
}

#[test]
fn wrong_passphrase_and_damaged_archives_fail_cleanly_and_write_nothing() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let key = software_key(dir);
    let state = root_ca(dir, &key, "ecdsa-p256");
    let archive = backup_to(&state, dir, "good.kwb");
    let good = std::fs::read(&archive).unwrap();
    let pass = passphrase_file(dir, PASSPHRASE);
    let target = dir.join("target");
    // The key is missing, so a restore that got as far as writing would write it.
    std::fs::rename(dir.join("keys"), dir.join("keys.away")).unwrap();

    let wrong = passphrase_file(dir, "not the passphrase");
    keyward_fails(
        &target,
        &restore_args(s(&archive), s(&wrong)),
        "wrong passphrase or corrupted archive",
    );
    assert!(!target.exists());

    let mid = backup::HEADER_LEN + (good.len() - backup::HEADER_LEN) / 2;
    let damaged: Vec<(&str, Vec<u8>, &str)> = vec![
        ("magic", flip(&good, 0), "not a keyward backup"),
        (
            "salt",
            flip(&good, 30),
            "wrong passphrase or corrupted archive",
        ),
        (
            "nonce",
            flip(&good, 45),
            "wrong passphrase or corrupted archive",
        ),
        ("kdf memory", flip(&good, 11), "corrupted archive"),
        (
            "ciphertext",
            flip(&good, mid),
            "wrong passphrase or corrupted archive",
        ),
        (
            "tag",
            flip(&good, good.len() - 1),
            "wrong passphrase or corrupted archive",
        ),
        (
            "truncated",
            good[..good.len() - 7].to_vec(),
            "corrupted archive",
        ),
        (
            "header only",
            good[..backup::HEADER_LEN].to_vec(),
            "corrupted archive",
        ),
        ("empty", Vec::new(), "not a keyward backup"),
    ];
    for (what, bytes, needle) in damaged {
        let bad = dir.join(format!("bad-{}", what.replace(' ', "-")));
        std::fs::write(&bad, bytes).unwrap();
        keyward_fails(&target, &restore_args(s(&bad), s(&pass)), needle);
        assert!(!target.exists(), "{what}: the target was created");
    }
    assert!(!dir.join("keys").exists(), "no key was written");
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".restore-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary directories left behind");
}

fn flip(data: &[u8], at: usize) -> Vec<u8> {
    let mut v = data.to_vec();
    v[at] ^= 0x40;
    v
}

#[test]
fn restore_into_a_non_empty_dir_and_backup_over_a_file_are_refused() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let key = software_key(dir);
    let state = root_ca(dir, &key, "ecdsa-p256");
    let archive = backup_to(&state, dir, "a.kwb");
    let pass = passphrase_file(dir, PASSPHRASE);

    // Into an existing state directory, or any directory holding a file: refused.
    let before = snapshot(&state);
    keyward_fails(&state, &restore_args(s(&archive), s(&pass)), "not empty");
    assert_eq!(snapshot(&state), before);
    let busy = dir.join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "mine").unwrap();
    keyward_fails(&busy, &restore_args(s(&archive), s(&pass)), "not empty");
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1);

    // An empty directory is fine.
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    keyward_ok(&empty, &restore_args(s(&archive), s(&pass)));
    assert_eq!(mode(&empty), 0o700);
    assert!(empty.join("ca/ca.json").exists());

    // backup --out over an existing file: refused, the file untouched.
    let existing = dir.join("existing.kwb");
    std::fs::write(&existing, "keep me").unwrap();
    keyward_fails(
        &state,
        &[
            "backup",
            "--out",
            s(&existing),
            "--passphrase-file",
            s(&pass),
        ],
        "already exists",
    );
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");

    // An empty passphrase is refused.
    let blank = passphrase_file(dir, "");
    let out = dir.join("blank.kwb");
    keyward_fails(
        &state,
        &["backup", "--out", s(&out), "--passphrase-file", s(&blank)],
        "empty passphrase",
    );
    assert!(!out.exists());
}

#[test]
fn a_state_with_its_key_inside_is_restored_elsewhere_with_the_uri_rewritten() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let state = dir.join("state");
    let key = format!("file:{}/keys/ca.pem", state.display());
    let state = root_ca(dir, &key, "ecdsa-p256");
    let archive = backup_to(&state, dir, "inside.kwb");
    let payload = open_archive(&archive);
    assert_eq!(
        payload.manifest().keys[0].state_file.as_deref(),
        Some("keys/ca.pem")
    );

    let moved = dir.join("moved");
    let pass = passphrase_file(dir, PASSPHRASE);
    keyward_ok(&moved, &restore_args(s(&archive), s(&pass)));
    assert_eq!(mode(&moved.join("keys/ca.pem")), 0o600);
    let manifest = std::fs::read_to_string(moved.join("ca/ca.json")).unwrap();
    assert!(
        manifest.contains(&format!("file:{}/keys/ca.pem", moved.display())),
        "{manifest}"
    );
    // Issuing from the moved copy works even with the original gone.
    std::fs::remove_dir_all(&state).unwrap();
    issue(&moved, &dir.join("svc"));
    openssl_verify(&dir.join("svc"));
}

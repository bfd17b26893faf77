//! `keyward pending` and `keyward pending resolve`: each command that changes state is
//! killed at each of its writes in turn (strace's fault injection: the write it is
//! killed at never happens), `pending` lists what was interrupted, `pending resolve`
//! settles it, and the state directory is checked clean (nothing pending, no warnings,
//! every certificate verifying with openssl, no serial twice, the audit chain intact).

mod common;
mod crash_common;
mod inventory_common;

use std::path::Path;
use std::process::Command;

use common::*;
use crash_common::{
    Write, assert_resolved_and_clean, device_csr, key_generate, kill_at_write, software_ca,
};
use inventory_common::records;
use tempfile::TempDir;

/// Runs the command `args(run)` for run 0, 1, 2, ..., killing run `n` at its `n`-th
/// write of each kind until a run finishes (so every write of the command is a crash
/// point once). After each kill, `pending` lists the interrupted `operation` (when it
/// got past its pending record), `pending resolve` settles it and `check(run)` and the
/// clean-state checks run. Returns how many runs were killed.
fn crash_at_every_write(
    state: &Path,
    operation: &str,
    mut args: impl FnMut(usize) -> Vec<String>,
    mut check: impl FnMut(usize),
) -> usize {
    let mut run = 0;
    let mut killed = 0;
    for write in [Write::Replacing, Write::New] {
        for n in 1.. {
            let a = args(run);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            let was_killed = kill_at_write(state, &a, write, n);
            if was_killed {
                killed += 1;
                let listed = keyward_ok(state, &["pending"]);
                // The first replacing write is the pending record itself.
                if matches!(write, Write::New) || n > 1 {
                    assert!(
                        listed.contains(&format!("  {operation}  ")),
                        "{write:?} {n}: {listed}"
                    );
                }
                keyward_ok(state, &["pending", "resolve"]);
            }
            assert_resolved_and_clean(state);
            check(run);
            run += 1;
            if !was_killed {
                break;
            }
        }
    }
    killed
}

/// The inventory record of the certificate named `name`, if any.
fn record_named(state: &Path, name: &str) -> Option<serde_json::Value> {
    records(state).into_iter().find(|r| r["name"] == name)
}

#[test]
fn issue_killed_at_every_write_is_finished_or_abandoned() {
    let (tmp, state) = software_ca();
    let out = |run: usize| tmp.path().join(format!("out{run}"));
    let mut abandoned = 0;
    let killed = crash_at_every_write(
        &state,
        "issue",
        |run| {
            let out = out(run).display().to_string();
            [
                "issue",
                "--name",
                &format!("c{run}"),
                "--dns",
                "c.internal",
                "--out",
                &out,
            ]
            .map(String::from)
            .to_vec()
        },
        |run| {
            // The key went out exactly when the certificate is recorded as issued.
            let key = out(run).join("key.pem").exists();
            let rec = record_named(&state, &format!("c{run}"));
            let status = rec.map(|r| r["status"].as_str().unwrap_or("issued").to_string());
            // Nothing half-written (a key's temporary above all) stays beside the files.
            let names: Vec<String> = std::fs::read_dir(out(run))
                .into_iter()
                .flatten()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert!(
                names.iter().all(|n| !n.contains(".tmp-")),
                "run {run}: {names:?}"
            );
            match (key, status.as_deref()) {
                (true, Some("issued")) => {}
                // Killed at its pending record: nothing happened at all.
                (false, None) => {}
                (false, Some("abandoned")) => abandoned += 1,
                other => panic!("run {run}: (key delivered, inventory status) = {other:?}"),
            }
        },
    );
    assert!(
        killed >= 6,
        "issue has at least 6 writes before its audit record: {killed}"
    );
    assert!(
        abandoned >= 1,
        "the kill before the key leaves a serial to abandon"
    );
    // An abandoned serial is not listed, exported or revoked.
    let inventory = records(&state);
    let gone = inventory
        .iter()
        .find(|r| r["status"] == "abandoned")
        .unwrap();
    let serial = gone["serial_hex"].as_str().unwrap();
    let name = gone["name"].as_str().unwrap();
    let status = keyward_ok(&state, &["status"]);
    assert!(!status.contains(serial), "{status}");
    keyward_fails(&state, &["revoke", "--serial", serial], "abandoned");
    keyward_fails(
        &state,
        &["export", "--name", name, "--format", "k8s-secret"],
        name,
    );
}

#[test]
fn sign_csr_killed_at_every_write_is_finished_or_abandoned() {
    let (tmp, state) = software_ca();
    let csr = device_csr(tmp.path());
    let out = |run: usize| tmp.path().join(format!("dev{run}.pem"));
    let killed = crash_at_every_write(
        &state,
        "sign-csr",
        |run| {
            let out = out(run).display().to_string();
            ["sign-csr", "--csr", csr.to_str().unwrap(), "--out", &out]
                .map(String::from)
                .to_vec()
        },
        |run| {
            let delivered = out(run).exists();
            let recorded = records(&state)
                .iter()
                .any(|r| r["out"] == out(run).display().to_string());
            assert!(
                !delivered || recorded,
                "run {run}: delivered and not recorded"
            );
        },
    );
    assert!(killed >= 3, "{killed}");
}

#[test]
fn ca_init_killed_at_every_write_is_undone_and_can_run_again() {
    let tmp = TempDir::new().unwrap();
    let key = software_key(tmp.path());
    key_generate(&tmp.path().join("keys-state"), &key);
    for write in [Write::Replacing, Write::New] {
        for n in 1.. {
            let state = tmp.path().join(format!("state-{write:?}-{n}"));
            let init = ["ca", "init", "--key", &key, "--subject", "CN=Crash Root"];
            if !kill_at_write(&state, &init, write, n) {
                break;
            }
            keyward_ok(&state, &["pending", "resolve"]);
            // The manifest commits a CA; without it the files are gone and init runs again.
            if !state.join("ca/ca.json").exists() {
                assert!(!state.join("ca/root.pem").exists(), "{write:?} {n}");
                assert!(keyward_ok(&state, &["pending"]).starts_with("no unfinished"));
                keyward_ok(&state, &init);
            }
            assert_resolved_and_clean(&state);
            let out = tmp.path().join(format!("svc-{write:?}-{n}"));
            issue_named(&state, "after", &out);
            openssl_verify(&out);
            assert_resolved_and_clean(&state);
        }
    }
}

#[test]
fn ca_intermediate_killed_at_every_write_is_undone_and_can_run_again() {
    let tmp = TempDir::new().unwrap();
    let inter_key = format!("file:{}/keys/issuing.pem", tmp.path().display());
    let mut done = 0;
    for n in 1.. {
        let dir = tmp.path().join(format!("run{n}"));
        let state = root_ca(&dir, &software_key(&dir), "ecdsa-p256");
        if n == 1 {
            key_generate(&state, &inter_key);
        }
        let inter = [
            "ca",
            "intermediate",
            "--key",
            &inter_key,
            "--subject",
            "CN=Crash Issuing",
        ];
        let killed = kill_at_write(&state, &inter, Write::Replacing, n);
        if killed {
            keyward_ok(&state, &["pending", "resolve"]);
            assert_resolved_and_clean(&state);
            if !std::fs::read_to_string(state.join("ca/ca.json"))
                .unwrap()
                .contains("intermediate")
            {
                assert!(!state.join("ca/intermediate.pem").exists(), "run {n}");
                keyward_ok(&state, &inter);
            }
        }
        // Issued under the intermediate, verified through it.
        let out = dir.join("svc");
        issue_named(&state, "svc", &out);
        openssl_verify(&out);
        assert_eq!(
            openssl(&[
                "x509",
                "-noout",
                "-issuer",
                "-in",
                out.join("cert.pem").to_str().unwrap()
            ])
            .trim(),
            "issuer=CN = Crash Issuing"
        );
        assert_resolved_and_clean(&state);
        done += 1;
        if !killed {
            break;
        }
    }
    assert!(done >= 3, "{done}");
}

#[test]
fn revoke_and_crl_killed_at_every_write_leave_the_crl_matching_the_list() {
    let (tmp, state) = software_ca();
    // The CRL as openssl prints it, once its signature checks out under the root
    // (`openssl crl` exits 0 either way: it says which on stderr).
    let crl_verifies = |state: &Path| {
        let out = Command::new("openssl")
            .args(["crl", "-noout", "-text", "-in"])
            .arg(state.join("crl.pem"))
            .arg("-CAfile")
            .arg(state.join("ca/root.pem"))
            .output()
            .expect("openssl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("verify OK"), "{stderr}");
        String::from_utf8(out.stdout).unwrap()
    };
    let mut serials = Vec::new();
    let killed = crash_at_every_write(
        &state,
        "revoke",
        |run| {
            let serial = issue_named(
                &state,
                &format!("r{run}"),
                &tmp.path().join(format!("r{run}")),
            );
            serials.push(serial.clone());
            ["revoke", "--serial", &serial].map(String::from).to_vec()
        },
        |_| {},
    );
    assert!(killed >= 3, "{killed}");
    // The CRL lists exactly the revocations the list records.
    let list: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("revocations.json")).unwrap()).unwrap();
    let crl = crl_verifies(&state);
    for serial in &serials {
        let recorded = list["revoked"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["serial_hex"] == serial.as_str());
        assert_eq!(crl.contains(serial.as_str()), recorded, "{serial}:\n{crl}");
    }
    let before = list["crl_number"].as_u64().unwrap();
    let killed = crash_at_every_write(&state, "crl", |_| vec!["crl".to_string()], |_| {});
    assert!(killed >= 3, "{killed}");
    let list: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("revocations.json")).unwrap()).unwrap();
    assert!(list["crl_number"].as_u64().unwrap() > before);
    crl_verifies(&state);
}

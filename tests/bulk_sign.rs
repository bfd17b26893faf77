//! Bulk provisioning, `keyward sign-csr --batch DIR --out DIR` (issue 20, item 3):
//! 2,000 CSRs made by rcgen (PEM and DER; 3 of them malformed), the run interrupted
//! with SIGINT part-way and run again; afterwards exactly the good CSRs are signed,
//! once each, in the output directory, the manifest, the inventory and the audit log;
//! certificates verify with `openssl verify` and carry the CSR's key; the 3 refusals
//! are named with their reasons. Also a run with the CA key in SoftHSM, and a batch
//! killed at a write (strace) that `keyward pending resolve` settles.

mod common;
mod crash_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use crash_common::{Write, assert_resolved_and_clean, kill_at_write};
use rcgen::{CertificateParams, KeyPair};
use tempfile::TempDir;

/// The CSR files that are not CSRs, and why.
const MALFORMED: [&str; 3] = ["dev-0017.csr", "dev-0999.csr", "dev-1500.csr"];

/// Writes `n` CSR files `dev-NNNN.csr` into `dir` (every fifth one DER, the rest PEM),
/// where the [`MALFORMED`] ones are: text that is no CSR, a truncated DER CSR, and a
/// CSR whose signature was altered. Returns the names of the good ones.
fn make_csrs(dir: &Path, n: usize) -> BTreeSet<String> {
    std::fs::create_dir_all(dir).unwrap();
    let mut good = BTreeSet::new();
    for i in 0..n {
        let name = format!("dev-{i:04}.csr");
        let key = KeyPair::generate().expect("leaf key");
        let params = CertificateParams::new(vec![format!("dev-{i:04}.devices.internal")])
            .expect("CSR parameters");
        let csr = params.serialize_request(&key).expect("CSR");
        let der = csr.der().to_vec();
        let content = match MALFORMED.iter().position(|m| *m == name) {
            Some(0) => b"this is not a certificate signing request\n".to_vec(),
            Some(1) => der[..der.len() / 2].to_vec(),
            Some(_) => {
                let mut bad = der;
                let last = bad.len() - 3;
                bad[last] ^= 0x55;
                bad
            }
            None if i % 5 == 0 => {
                good.insert(name.clone());
                der
            }
            None => {
                good.insert(name.clone());
                csr.pem().expect("PEM").into_bytes()
            }
        };
        std::fs::write(dir.join(&name), content).unwrap();
    }
    good
}

/// `keyward --state-dir STATE sign-csr --batch CSRS --out OUT`, started.
fn batch(state: &Path, csrs: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(keyward_bin());
    cmd.arg("--state-dir")
        .arg(state)
        .args(["sign-csr", "--batch"])
        .arg(csrs)
        .arg("--out")
        .arg(out)
        .env_remove("KEYWARD_LOG");
    cmd
}

/// The manifest: CSR file name → (status, serial if signed, reason if refused).
fn manifest(out: &Path) -> BTreeMap<String, serde_json::Value> {
    let text = std::fs::read(out.join("manifest.json")).unwrap_or_default();
    if text.is_empty() {
        return BTreeMap::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&text).expect("manifest is JSON");
    serde_json::from_value(v["csrs"].clone()).expect("manifest csrs")
}

/// CSR file names the manifest lists as signed, with their serials.
fn signed_in(manifest: &BTreeMap<String, serde_json::Value>) -> BTreeMap<String, String> {
    manifest
        .iter()
        .filter(|(_, e)| e["status"] == "signed")
        .map(|(n, e)| (n.clone(), e["serial"].as_str().unwrap().to_string()))
        .collect()
}

/// Serials of the certificates the inventory holds, with their `out` paths.
fn inventory(state: &Path) -> Vec<(String, PathBuf)> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("inventory.json")).unwrap()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "csr" && r.get("status").is_none())
        .map(|r| {
            (
                r["serial_hex"].as_str().unwrap().to_string(),
                PathBuf::from(r["out"].as_str().unwrap()),
            )
        })
        .collect()
}

/// Serials named by the `certificates_issued` records of the audit log.
fn audited_serials(state: &Path) -> Vec<String> {
    let log = std::fs::read_to_string(state.join("audit.jsonl")).unwrap();
    log.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["event"] == "certificates_issued")
        .flat_map(|r| {
            r["fields"]["certificates"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["serial"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Checks that the manifest, the output directory, the inventory and the audit log
/// agree: every CSR the manifest lists as signed has its chain file, a record and an
/// audit entry, each once; nothing else was signed.
fn assert_consistent(state: &Path, out: &Path) -> BTreeMap<String, String> {
    let signed = signed_in(&manifest(out));
    let inventory = inventory(state);
    let audited = audited_serials(state);
    let manifest_serials: BTreeSet<&String> = signed.values().collect();
    let inventory_serials: BTreeSet<&String> = inventory.iter().map(|(s, _)| s).collect();
    assert_eq!(
        inventory.len(),
        inventory_serials.len(),
        "a serial twice in the inventory"
    );
    assert_eq!(
        audited.len(),
        audited.iter().collect::<BTreeSet<_>>().len(),
        "a serial audited twice"
    );
    assert_eq!(
        manifest_serials, inventory_serials,
        "manifest and inventory differ"
    );
    assert_eq!(
        manifest_serials,
        audited.iter().collect(),
        "manifest and audit log differ"
    );
    let outs: BTreeSet<&PathBuf> = inventory.iter().map(|(_, o)| o).collect();
    assert_eq!(
        outs.len(),
        inventory.len(),
        "two certificates delivered to one file"
    );
    for name in signed.keys() {
        let cert = out.join(name.replace(".csr", ".pem"));
        assert!(
            outs.contains(&cert),
            "{} is not in the inventory",
            cert.display()
        );
        assert!(cert.is_file(), "{} is missing", cert.display());
    }
    signed
}

/// `openssl verify -x509_strict` of the chain file `cert` under the state's root, and
/// its public key is the one of the CSR `csr`.
fn assert_verifies_for(state: &Path, cert: &Path, csr: &Path) {
    let root = state.join("ca/root.pem");
    let verified = openssl(&[
        "verify",
        "-x509_strict",
        "-CAfile",
        root.to_str().unwrap(),
        cert.to_str().unwrap(),
    ]);
    assert!(verified.contains(": OK"), "{verified}");
    let form = if std::fs::read(csr).unwrap().starts_with(b"-----") {
        "PEM"
    } else {
        "DER"
    };
    let csr_key = openssl(&[
        "req",
        "-in",
        csr.to_str().unwrap(),
        "-inform",
        form,
        "-noout",
        "-pubkey",
    ]);
    let cert_key = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-pubkey"]);
    assert_eq!(
        csr_key,
        cert_key,
        "{} does not carry the key of {}",
        cert.display(),
        csr.display()
    );
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The summary names each of the `malformed` CSRs with a reason, and only them.
fn assert_refusals_named(stdout: &str, malformed: &[&str]) {
    let refused: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("  refused "))
        .collect();
    assert_eq!(refused.len(), malformed.len(), "{stdout}");
    for name in malformed {
        let line = refused
            .iter()
            .find(|l| l.starts_with(&format!("  refused {name}: ")))
            .unwrap_or_else(|| panic!("{name} is not named in the summary:\n{stdout}"));
        assert!(line.contains("CSR"), "no reason for {name}: {line}");
    }
}

#[test]
fn two_thousand_csrs_interrupted_and_resumed_are_each_signed_once() {
    let tmp = TempDir::new().unwrap();
    // An RSA-4096 CA key: each signature takes milliseconds, so the run is still going
    // when the SIGINT comes.
    let state = root_ca(tmp.path(), &software_key(tmp.path()), "rsa-4096");
    let csrs = tmp.path().join("csrs");
    let out = tmp.path().join("out");
    let good = make_csrs(&csrs, 2000);

    // First run: SIGINT once some CSRs are recorded.
    let child = batch(&state, &csrs, &out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while signed_in(&manifest(&out)).len() < 50 {
        assert!(Instant::now() < deadline, "no CSR recorded within 120 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let first = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&first);
    assert!(!first.status.success(), "an interrupted run exits non-zero");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let after_first = assert_consistent(&state, &out);
    assert!(
        after_first.len() < good.len(),
        "the SIGINT came after the whole batch:\n{stdout}"
    );
    assert!(
        stdout.contains(&format!("{} signed now", after_first.len())),
        "{stdout}"
    );

    // Second run: the rest, nothing twice.
    let second = batch(&state, &csrs, &out).output().unwrap();
    let (stdout, stderr) = text(&second);
    assert!(!second.status.success(), "refusals make the exit non-zero");
    assert!(stderr.contains("3 of 2000 CSRs refused"), "{stderr}");
    assert!(
        stdout.contains(&format!(
            "{} signed now, {} signed by an earlier run, 3 refused, 0 not attempted",
            good.len() - after_first.len(),
            after_first.len()
        )),
        "{stdout}"
    );
    assert_refusals_named(&stdout, &MALFORMED);
    let signed = assert_consistent(&state, &out);
    assert_eq!(signed.keys().cloned().collect::<BTreeSet<_>>(), good);
    for (name, serial) in &after_first {
        assert_eq!(&signed[name], serial, "{name} was signed again");
    }
    for name in [
        "dev-0000.csr",
        "dev-0001.csr",
        "dev-1234.csr",
        "dev-1999.csr",
    ] {
        let cert = out.join(name.replace(".csr", ".pem"));
        assert_verifies_for(&state, &cert, &csrs.join(name));
    }
    keyward_ok(
        &state,
        &[
            "audit",
            "verify",
            state.join("audit.jsonl").to_str().unwrap(),
        ],
    );
    let status = keyward_ok(&state, &["status", "--json"]);
    let listed = signed
        .values()
        .filter(|serial| status.contains(serial.as_str()));
    assert_eq!(
        listed.count(),
        good.len(),
        "`status` lists every certificate"
    );

    // Third run: nothing left to sign.
    let third = batch(&state, &csrs, &out).output().unwrap();
    let (stdout, _) = text(&third);
    assert!(
        stdout.contains(&format!(
            "0 signed now, {} signed by an earlier run",
            good.len()
        )),
        "{stdout}"
    );
    assert_eq!(assert_consistent(&state, &out), signed);
}

#[test]
fn batch_with_the_ca_key_in_softhsm() {
    let tmp = TempDir::new().unwrap();
    let (token, pin) = softhsm_token(tmp.path(), "kw-bulk");
    let key = format!(
        "pkcs11:token={token};object=bulk-ca?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:{}",
        pin.display()
    );
    let state = root_ca(tmp.path(), &key, "ecdsa-p256");
    let csrs = tmp.path().join("csrs");
    let out = tmp.path().join("out");
    // 500 CSRs, of which dev-0017 is malformed.
    let good = make_csrs(&csrs, 500);
    let run = batch(&state, &csrs, &out).output().unwrap();
    let (stdout, _) = text(&run);
    assert!(
        stdout.contains("499 signed now, 0 signed by an earlier run, 1 refused"),
        "{stdout}"
    );
    assert_refusals_named(&stdout, &MALFORMED[..1]);
    let signed = assert_consistent(&state, &out);
    assert_eq!(signed.keys().cloned().collect::<BTreeSet<_>>(), good);
    for name in ["dev-0000.csr", "dev-0003.csr", "dev-0499.csr"] {
        assert_verifies_for(
            &state,
            &out.join(name.replace(".csr", ".pem")),
            &csrs.join(name),
        );
    }
}

#[test]
fn batch_killed_at_a_write_is_settled_by_pending_resolve_and_not_signed_again() {
    let tmp = TempDir::new().unwrap();
    let state = root_ca(tmp.path(), &software_key(tmp.path()), "ecdsa-p256");
    let csrs = tmp.path().join("csrs");
    let out = tmp.path().join("out");
    // 15 good CSRs (the first malformed one is dev-0017): one chunk.
    let good = make_csrs(&csrs, 15);
    let (c, o) = (csrs.to_str().unwrap(), out.to_str().unwrap());
    let args = ["sign-csr", "--batch", c, "--out", o];
    // Killed at the 8th new file of the chunk's transaction: every chain file is
    // delivered, 7 certificates are in issued/, the inventory names none of them.
    assert!(
        kill_at_write(&state, &args, Write::New, 8),
        "the batch was not killed"
    );
    let listed = keyward_ok(&state, &["pending"]);
    assert!(listed.contains("sign-csr --batch"), "{listed}");
    let resolved = keyward_ok(&state, &["pending", "resolve"]);
    assert!(resolved.contains("finished"), "{resolved}");
    assert_resolved_and_clean(&state);
    assert_eq!(inventory(&state).len(), good.len());
    // The next run finds them delivered and recorded: nothing is signed twice.
    let run = batch(&state, &csrs, &out).output().unwrap();
    let (stdout, stderr) = text(&run);
    assert!(run.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("0 signed now, 15 signed by an earlier run"),
        "{stdout}"
    );
    assert_resolved_and_clean(&state);
    let signed = signed_in(&manifest(&out));
    assert_eq!(signed.keys().cloned().collect::<BTreeSet<_>>(), good);
    assert_eq!(inventory(&state).len(), good.len());
}

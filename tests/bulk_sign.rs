//! Bulk provisioning, `keyward sign-csr --batch DIR --out DIR` (issue 20, item 3), in
//! both output formats (a chain file per CSR, the default; `--output-format jsonl`, one
//! JSON Lines bundle per chunk): 5,000 CSRs made by rcgen (PEM and DER; 3 of them
//! malformed), the run interrupted with SIGINT part-way and run again; afterwards
//! exactly the good CSRs are signed, once each, in the output, the manifest, the
//! inventory and the audit log; certificates verify with `openssl verify` and carry the
//! CSR's key; the 3 refusals are named with their reasons. Also a run with the CA key
//! in SoftHSM, batches killed at a write (strace) that `keyward pending resolve`
//! settles, a run's end cut short before its whole manifest is written (by hand) and
//! one killed as it removes the manifest's parts (the next run reads the parts and
//! folds them in), and an OUT every user may write, refused though uid 65534 planted
//! the parts' directory there as a link.

mod bulk_common;
mod common;
mod crash_common;
mod inventory_common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bulk_common::*;
use common::*;
use crash_common::{Write, assert_resolved_and_clean, kill_at_write, kill_at_write_to};
use tempfile::TempDir;

#[test]
fn five_thousand_csrs_interrupted_and_resumed_are_each_signed_once() {
    interrupted_and_resumed(Format::Pem);
}

#[test]
fn five_thousand_csrs_into_jsonl_bundles_interrupted_and_resumed_are_each_signed_once() {
    interrupted_and_resumed(Format::Jsonl);
}

/// The SIGINT-and-resume run of 5,000 CSRs, written in `format`.
fn interrupted_and_resumed(format: Format) {
    let tmp = TempDir::new().unwrap();
    // An RSA-4096 CA key: each signature takes milliseconds, so the run is still going
    // when the SIGINT comes. It comes once a chunk is recorded: a second in at the
    // earliest (the recording interval), later when the recording shares the cores with
    // the signing and other tests. With 2,000 CSRs a fast 2-core VM (840 signatures a
    // second) had signed them all by then, in a full test run.
    let state = root_ca(tmp.path(), &software_key(tmp.path()), "rsa-4096");
    let csrs = tmp.path().join("csrs");
    let out = tmp.path().join("out");
    let good = make_csrs(&csrs, 5000);

    // First run: SIGINT once some CSRs are recorded.
    let child = batch(&state, &csrs, &out, format)
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
    let after_first = format.assert_consistent(&state, &out);
    assert!(
        after_first.len() < good.len(),
        "the SIGINT came after the whole batch:\n{stdout}"
    );
    assert!(
        stdout.contains(&format!("{} signed now", after_first.len())),
        "{stdout}"
    );

    // Second run: the rest, nothing twice.
    let second = batch(&state, &csrs, &out, format).output().unwrap();
    let (stdout, stderr) = text(&second);
    assert!(!second.status.success(), "refusals make the exit non-zero");
    assert!(stderr.contains("3 of 5000 CSRs refused"), "{stderr}");
    assert!(
        stdout.contains(&format!(
            "{} signed now, {} signed by an earlier run, 3 refused, 0 not attempted",
            good.len() - after_first.len(),
            after_first.len()
        )),
        "{stdout}"
    );
    assert_refusals_named(&stdout, &MALFORMED);
    let signed = format.assert_consistent(&state, &out);
    assert_eq!(signed.keys().cloned().collect::<BTreeSet<_>>(), good);
    for (name, serial) in &after_first {
        assert_eq!(&signed[name], serial, "{name} was signed again");
    }
    for name in [
        "dev-0000.csr",
        "dev-0001.csr",
        "dev-1234.csr",
        "dev-4999.csr",
    ] {
        let cert = format.chain_of(&out, name, tmp.path());
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
    let status: serde_json::Value =
        serde_json::from_str(&keyward_ok(&state, &["status", "--json"])).unwrap();
    let serials: BTreeSet<&str> = status["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["serial_hex"].as_str().unwrap())
        .collect();
    let listed = signed
        .values()
        .filter(|serial| serials.contains(serial.as_str()));
    assert_eq!(
        listed.count(),
        good.len(),
        "`status` lists every certificate"
    );

    // Third run: nothing left to sign.
    let third = batch(&state, &csrs, &out, format).output().unwrap();
    let (stdout, _) = text(&third);
    assert!(
        stdout.contains(&format!(
            "0 signed now, {} signed by an earlier run",
            good.len()
        )),
        "{stdout}"
    );
    assert_eq!(format.assert_consistent(&state, &out), signed);
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
    let run = batch(&state, &csrs, &out, Format::Pem).output().unwrap();
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
    // Killed at the chunk's records file, its second new file (after its
    // certificates' file in issued/; its pending record and 15 chain files replace):
    // every chain file is delivered, the 15 certificates are in their one file in
    // issued/, the inventory names none of them.
    assert!(
        kill_at_write(&state, &args, Write::New, 2),
        "the batch was not killed"
    );
    let issued = std::fs::read_dir(state.join("issued")).unwrap().count();
    assert_eq!(issued, 1, "the chunk's certificates are in one file");
    let listed = keyward_ok(&state, &["pending"]);
    assert!(listed.contains("sign-csr --batch"), "{listed}");
    let resolved = keyward_ok(&state, &["pending", "resolve"]);
    assert!(resolved.contains("finished"), "{resolved}");
    assert_resolved_and_clean(&state);
    assert_eq!(inventory(&state).len(), good.len());
    // The next run finds them delivered and recorded: nothing is signed twice.
    run_succeeds_with(
        &state,
        &csrs,
        &out,
        Format::Pem,
        "0 signed now, 15 signed by an earlier run",
    );
    assert_resolved_and_clean(&state);
    let signed = signed_in(&ended_manifest(&out));
    assert_eq!(signed.keys().cloned().collect::<BTreeSet<_>>(), good);
    assert_eq!(inventory(&state).len(), good.len());
}

/// A `--output-format jsonl` batch of 15 good CSRs (one chunk) in `tmp`, killed by
/// `kill` (given the state directory, the arguments and OUT; it says whether it killed
/// the run); returns the state, CSR and output directories and the good CSRs.
fn bundle_batch_killed(
    tmp: &Path,
    kill: impl FnOnce(&Path, &[&str], &Path) -> bool,
) -> (PathBuf, PathBuf, PathBuf, BTreeSet<String>) {
    let state = root_ca(tmp, &software_key(tmp), "ecdsa-p256");
    let (csrs, out) = (tmp.join("csrs"), tmp.join("out"));
    let good = make_csrs(&csrs, 15);
    let (c, o) = (csrs.to_str().unwrap(), out.to_str().unwrap());
    let args = [
        "sign-csr",
        "--batch",
        c,
        "--out",
        o,
        "--output-format",
        "jsonl",
    ];
    assert!(kill(&state, &args, &out), "the batch was not killed");
    (state, csrs, out, good)
}

/// [`bundle_batch_killed`] at the `n`-th new file of its transaction, and settled by
/// `keyward pending resolve`; returns what resolve printed and the state, CSR and
/// output directories.
fn bundle_batch_killed_at_new_file(tmp: &Path, n: usize) -> (String, PathBuf, PathBuf, PathBuf) {
    let (state, csrs, out, _) = bundle_batch_killed(tmp, |state, args, _| {
        kill_at_write(state, args, Write::New, n)
    });
    let listed = keyward_ok(&state, &["pending"]);
    assert!(listed.contains("sign-csr --batch"), "{listed}");
    let resolved = keyward_ok(&state, &["pending", "resolve"]);
    assert_settled(&state);
    (resolved, state, csrs, out)
}

/// Nothing pending, `status` reports no problem and warns about nothing, and the audit
/// log verifies (what `assert_resolved_and_clean` checks, for bundles).
fn assert_settled(state: &Path) {
    let listed = keyward_ok(state, &["pending"]);
    assert!(listed.starts_with("no unfinished operations"), "{listed}");
    let out = keyward(state, &["status", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("warning"),
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    let log = state.join("audit.jsonl");
    keyward_ok(state, &["audit", "verify", log.to_str().unwrap()]);
}

#[test]
fn bundle_batch_killed_after_its_bundle_is_finished_by_resolve_and_not_signed_again() {
    let tmp = TempDir::new().unwrap();
    // The bundle is the chunk's first new file, its certificates' file in issued/ the
    // second; killed at that one, the bundle is out and the inventory names none of them.
    let (resolved, state, csrs, out) = bundle_batch_killed_at_new_file(tmp.path(), 2);
    assert!(resolved.contains("finished"), "{resolved}");
    assert_eq!(inventory(&state).len(), 15);
    next_jsonl_run_signs_none_again(&state, &csrs, &out);
    // Recorded by resolve (its audit record names them), then taken into the manifest.
    let (signed, inventory) = (signed_in(&ended_manifest(&out)), inventory(&state));
    assert_eq!(signed.len(), 15);
    let serials: BTreeSet<&String> = inventory.iter().map(|(s, _)| s).collect();
    assert_eq!(
        serials,
        signed.values().collect(),
        "manifest and inventory differ"
    );
    assert_bundles_match(&out, &signed, &inventory);
    let cert = chain_from_bundle(&out, "dev-0003.csr", tmp.path());
    assert_verifies_for(&state, &cert, &csrs.join("dev-0003.csr"));
}

#[test]
fn bundle_batch_killed_before_its_bundle_is_abandoned_by_resolve_and_signed_again() {
    let tmp = TempDir::new().unwrap();
    // Killed as the bundle is put in place: nothing went out.
    let (resolved, state, csrs, out) = bundle_batch_killed_at_new_file(tmp.path(), 1);
    assert!(resolved.contains("abandoned"), "{resolved}");
    assert!(bundle_lines(&out).is_empty(), "a bundle went out");
    assert_eq!(inventory(&state).len(), 0);
    run_succeeds_with(
        &state,
        &csrs,
        &out,
        Format::Jsonl,
        "15 signed now, 0 signed by an earlier run",
    );
    assert_settled(&state);
    assert_eq!(assert_bundles_consistent(&state, &out).len(), 15);
}

/// [`bundle_batch_killed`] by `kill` at its end, where it writes the whole manifest
/// (the chunk recorded with its part); checks that nothing is pending, that the manifest
/// read as a run reads it lists the 15 as signed, and that the next run signs nothing
/// again and folds the part in. Returns what was in OUT after the kill:
/// (`manifest.json`, `manifest.d/part-000001.json`).
fn bundle_batch_killed_at_its_end(
    kill: impl FnOnce(&Path, &[&str], &Path) -> bool,
) -> (bool, bool) {
    let tmp = TempDir::new().unwrap();
    let (state, csrs, out, good) = bundle_batch_killed(tmp.path(), kill);
    let left = (
        out.join("manifest.json").exists(),
        out.join("manifest.d/part-000001.json").is_file(),
    );
    assert_settled(&state);
    let listed = manifest(&out);
    assert_eq!(listed.len(), 15, "{listed:?}");
    assert_eq!(
        signed_in(&listed).into_keys().collect::<BTreeSet<_>>(),
        good
    );
    next_jsonl_run_signs_none_again(&state, &csrs, &out);
    assert_eq!(assert_bundles_consistent(&state, &out).len(), 15);
    left
}

/// The next `--output-format jsonl` run over the 15 CSRs of [`bundle_batch_killed`]
/// finds them all signed, and leaves the state settled.
fn next_jsonl_run_signs_none_again(state: &Path, csrs: &Path, out: &Path) {
    run_succeeds_with(
        state,
        csrs,
        out,
        Format::Jsonl,
        "0 signed now, 15 signed by an earlier run",
    );
    assert_settled(state);
}

#[test]
fn a_run_that_ended_before_its_whole_manifest_was_written_is_read_from_its_part() {
    // What a kill just before the whole manifest's rename leaves: the chunk recorded,
    // its part in manifest.d, no manifest.json. Made by hand, not by strace: strace
    // counts each thread's calls on its own, and the run's end writes the manifest on
    // another thread than the chunk's transaction, so "the run's third rename" was
    // reached only when the two happened to share a thread. A one-chunk run's part
    // holds every entry its whole manifest holds.
    let left = bundle_batch_killed_at_its_end(|state, args, out| {
        keyward_ok(state, args);
        std::fs::create_dir(out.join("manifest.d")).unwrap();
        std::fs::rename(
            out.join("manifest.json"),
            out.join("manifest.d/part-000001.json"),
        )
        .unwrap();
        true
    });
    assert_eq!(
        left,
        (false, true),
        "(manifest.json, its part) after the kill"
    );
}

#[test]
fn batch_killed_as_it_removes_the_manifests_parts_is_read_the_same() {
    let left = bundle_batch_killed_at_its_end(|state, args, out| {
        kill_at_write_to(state, args, Write::Replacing, &out.join("manifest.d"))
    });
    assert_eq!(
        left,
        (true, true),
        "(manifest.json, its part) after the kill"
    );
}

#[test]
fn an_out_every_user_may_write_is_refused_before_signing_whatever_was_planted_in_it() {
    let tmp = TempDir::new().unwrap();
    let state = root_ca(tmp.path(), &software_key(tmp.path()), "ecdsa-p256");
    let csrs = tmp.path().join("csrs");
    make_csrs(&csrs, 15);
    // An OUT the user made writable by every user, and a directory of root's that the
    // attacker (uid 65534) wants root's files in: it plants `manifest.d` as a link
    // there (a part or a forged manifest would do as well).
    let (out, target) = (tmp.path().join("out"), tmp.path().join("target"));
    std::fs::create_dir(&out).unwrap();
    std::fs::create_dir(&target).unwrap();
    let mode = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap()
    };
    mode(tmp.path(), 0o755);
    mode(&out, 0o777);
    let planted = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "ln",
            "-s",
        ])
        .arg(&target)
        .arg(out.join("manifest.d"))
        .status()
        .unwrap();
    assert!(planted.success(), "uid 65534 could not plant the link");

    let run = batch(&state, &csrs, &out, Format::Jsonl).output().unwrap();
    let (stdout, stderr) = text(&run);
    assert!(!run.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("can be written by every user"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(std::fs::read_dir(&target).unwrap().next().is_none());
    assert!(bundle_lines(&out).is_empty(), "nothing signed");
    assert!(inventory(&state).is_empty(), "nothing recorded");
}

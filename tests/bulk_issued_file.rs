//! `sign-csr --batch` keeps each recorded chunk's certificates in ONE file of the state
//! directory's `issued/` (issue 19, item 5), not one file per certificate: the file is
//! the chunk's PEM blocks one after another, which openssl reads as a chain
//! (`crl2pkcs7 -nocrl -certfile`); each inventory record finds its own block in it
//! (its serial, verified by `openssl verify`, with its CSR's key); `keyward status`
//! reports nothing, and reports a block replaced in such a file by its serial.

mod common;
mod crash_common;
mod inventory_common;

#[allow(dead_code)]
mod bulk_common;

use std::collections::BTreeMap;
use std::path::Path;

use bulk_common::{
    Format, MALFORMED, assert_verifies_for, make_csrs, manifest, run_succeeds_with, signed_in,
};
use common::{keyward, openssl, root_ca, software_key};
use crash_common::record_block;
use tempfile::TempDir;

/// The inventory records, by the file of `issued/` that holds them (in order).
fn records_by_file(state: &Path) -> BTreeMap<String, Vec<serde_json::Value>> {
    let inventory = inventory_common::records(state);
    let mut by_file: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for rec in inventory {
        let file = rec["cert_file"].as_str().unwrap().to_string();
        by_file.entry(file).or_default().push(rec);
    }
    by_file
}

/// `keyward status --json`'s problems.
fn problems(state: &Path) -> Vec<String> {
    let out = keyward(state, &["status", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn each_chunk_of_a_batch_is_one_issued_file_that_openssl_reads_as_a_chain() {
    let tmp = TempDir::new().unwrap();
    let state = root_ca(tmp.path(), &software_key(tmp.path()), "ecdsa-p256");
    let (csrs, out) = (tmp.path().join("csrs"), tmp.path().join("out"));
    // More than one chunk (at most 1,000 certificates each).
    let good = make_csrs(&csrs, 1200);
    for bad in MALFORMED {
        let _ = std::fs::remove_file(csrs.join(bad));
    }
    run_succeeds_with(
        &state,
        &csrs,
        &out,
        Format::Jsonl,
        &format!("{} signed now", good.len()),
    );

    let by_file = records_by_file(&state);
    assert!(by_file.len() >= 2, "{} chunk files", by_file.len());
    assert_eq!(by_file.values().map(Vec::len).sum::<usize>(), good.len());
    let issued: Vec<String> = std::fs::read_dir(state.join("issued"))
        .unwrap()
        .map(|e| format!("issued/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    assert_eq!(issued.len(), by_file.len(), "{issued:?}");
    let csr_of: BTreeMap<String, String> = signed_in(&manifest(&out))
        .into_iter()
        .map(|(csr, serial)| (serial, csr))
        .collect();
    for (file, records) in &by_file {
        let first = records[0]["serial_hex"].as_str().unwrap();
        assert_eq!(file, &format!("issued/batch-{first}.pem"));
        // openssl reads the whole file as a chain of certificates.
        let path = state.join(file);
        let p7 = tmp.path().join("chunk.p7");
        openssl(&[
            "crl2pkcs7",
            "-nocrl",
            "-certfile",
            path.to_str().unwrap(),
            "-out",
            p7.to_str().unwrap(),
        ]);
        let printed = openssl(&["pkcs7", "-in", p7.to_str().unwrap(), "-print_certs"]);
        assert_eq!(
            printed.matches("-----BEGIN CERTIFICATE-----").count(),
            records.len(),
            "{file}"
        );
        assert!(
            openssl(&["x509", "-in", path.to_str().unwrap(), "-noout", "-serial"]).contains(first)
        );
        // Each record's own block is its certificate, which verifies.
        for rec in [
            &records[0],
            &records[records.len() / 2],
            records.last().unwrap(),
        ] {
            let own = tmp.path().join("own.pem");
            std::fs::write(&own, record_block(&state, rec)).unwrap();
            let serial = openssl(&["x509", "-in", own.to_str().unwrap(), "-noout", "-serial"]);
            assert_eq!(
                serial.trim(),
                format!("serial={}", rec["serial_hex"].as_str().unwrap())
            );
            let csr = csrs.join(&csr_of[rec["serial_hex"].as_str().unwrap()]);
            assert_verifies_for(&state, &own, &csr);
        }
    }
    assert_eq!(problems(&state), Vec::<String>::new());

    // A certificate in a chunk's file replaced by another: reported by its serial.
    let (file, records) = by_file.iter().next().unwrap();
    let victim = &records[1];
    let other = &records[2];
    let path = state.join(file);
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        &record_block(&state, victim),
        &record_block(&state, other),
        1,
    );
    std::fs::write(&path, text).unwrap();
    let reported = problems(&state);
    let serial = victim["serial_hex"].as_str().unwrap();
    assert!(
        reported
            .iter()
            .any(|p| p.contains(serial) && p.contains("does not match")),
        "{reported:?}"
    );
}

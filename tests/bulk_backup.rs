//! End-to-end: a state directory that `sign-csr --batch` recorded into (each chunk's
//! records in a file of their own under `inventory.d/`) is carried whole by `keyward
//! backup` and `keyward restore`: every record comes back, and the restored state
//! reports no problem.

mod backup_common;
#[allow(dead_code)] // the helpers of the bulk tests; this one uses few
mod bulk_common;
mod common;
mod inventory_common;

use backup_common::*;
use bulk_common::{Format, batch, make_csrs};
use common::*;
use tempfile::TempDir;

#[test]
fn a_backup_of_a_state_with_a_bulk_run_restores_every_record() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let state = root_ca(dir, &software_key(dir), "ecdsa-p256");
    issue_named(&state, "before", &dir.join("svc-before"));
    // 30 CSR files, one of them malformed (refused: the run exits non-zero).
    let good = make_csrs(&dir.join("csrs"), 30);
    let run = batch(&state, &dir.join("csrs"), &dir.join("out"), Format::Jsonl)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&run.stdout).contains(&format!("{} signed now", good.len())),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
    issue_named(&state, "after", &dir.join("svc-after"));
    let records = inventory_common::records(&state);
    assert_eq!(records.len(), good.len() + 2);
    let chunk_files = std::fs::read_dir(state.join("inventory.d"))
        .unwrap()
        .count();
    assert!(chunk_files >= 1, "the batch's records are in inventory.d");

    let archive = backup_to(&state, dir, "state.kwb");
    let restored = dir.join("restored");
    let pass = passphrase_file(dir, PASSPHRASE);
    let mut args = restore_args(s(&archive), s(&pass)).to_vec();
    args.push("--allow-outside-state");
    keyward_ok(&restored, &args);
    assert_eq!(inventory_common::records(&restored), records);
    let status: serde_json::Value =
        serde_json::from_str(&keyward_ok(&restored, &["status", "--json"])).unwrap();
    assert_eq!(status["problems"], serde_json::json!([]), "{status}");
    // The restored inventory still refuses what it holds: a new issue gets a new serial
    // and lands beside the batch's records.
    issue_named(&restored, "restored", &dir.join("svc-restored"));
    assert_eq!(
        inventory_common::records(&restored).len(),
        records.len() + 1
    );
}

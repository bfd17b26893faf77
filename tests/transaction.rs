//! The transaction behind every change, seen from outside: a command whose audit
//! append fails exits non-zero and changes nothing (issue 17: the append used to come
//! after the change was committed, so the change stayed).

mod common;
mod crash_common;
mod inventory_common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use crash_common::{assert_resolved_and_clean, device_csr, key_generate, software_ca};

/// Runs `keyward --state-dir STATE ARGS` unable to write past `limit` bytes into any
/// file (RLIMIT_FSIZE, with SIGXFSZ ignored so the write fails with EFBIG).
fn keyward_with_file_limit(state: &Path, args: &[&str], limit: u64) -> Output {
    Command::new("sh")
        .args(["-c", r#"trap '' XFSZ; exec prlimit --fsize="$0" -- "$@""#])
        .arg(limit.to_string())
        .arg(keyward_bin())
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("KEYWARD_LOG")
        .output()
        .expect("run sh and prlimit")
}

#[test]
fn a_failed_audit_append_changes_nothing() {
    let (tmp, state) = software_ca();
    let victim = issue_named(&state, "victim", &tmp.path().join("victim"));
    let inter_key = format!("file:{}/keys/issuing.pem", tmp.path().display());
    key_generate(&state, &inter_key);
    let csr = device_csr(tmp.path());
    // Grow the log past every state file these commands write, then cap file sizes a
    // little past the log's size: every write succeeds but the audit append, which
    // writes part of its line (a full disk does the same) and must cut it off again.
    for k in 0.. {
        if std::fs::metadata(state.join("audit.jsonl")).unwrap().len() > 6000 {
            break;
        }
        let pad = format!("file:{}/keys/pad{k}.pem", tmp.path().display());
        key_generate(&state, &pad);
    }
    let limit = std::fs::metadata(state.join("audit.jsonl")).unwrap().len() + 40;
    let out = tmp.path().join("new");
    let signed = tmp.path().join("dev.pem");
    let commands: Vec<Vec<&str>> = vec![
        vec![
            "issue",
            "--name",
            "new",
            "--dns",
            "new.internal",
            "--out",
            out.to_str().unwrap(),
        ],
        vec![
            "sign-csr",
            "--csr",
            csr.to_str().unwrap(),
            "--out",
            signed.to_str().unwrap(),
        ],
        vec!["revoke", "--serial", &victim],
        vec!["crl"],
        vec![
            "ca",
            "intermediate",
            "--key",
            &inter_key,
            "--subject",
            "CN=Issuing",
        ],
    ];
    let before = snapshot(&state);
    for args in &commands {
        let run = keyward_with_file_limit(&state, args, limit);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains("error: cannot write the audit log"),
            "{args:?}: {stderr}"
        );
        assert_eq!(
            snapshot(&state),
            before,
            "{args:?} changed the state directory"
        );
        assert!(
            !out.exists() && !signed.exists(),
            "{args:?} left its output"
        );
    }
    // Without the limit the same commands work, and nothing is left to resolve.
    for args in &commands {
        keyward_ok(&state, args);
    }
    // The new intermediate issues from now on: the CRL is its to sign.
    keyward_ok(&state, &["crl"]);
    openssl_verify(&out);
    assert_resolved_and_clean(&state);
}

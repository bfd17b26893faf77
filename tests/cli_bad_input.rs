//! Bad input to the CLI: a non-zero exit, one clear error line naming the cause, and the
//! state directory byte-for-byte unchanged.

mod common;

use common::*;
use tempfile::TempDir;

/// Runs a failing command and checks the state directory did not change.
fn fails_unchanged(state: &std::path::Path, args: &[&str], needle: &str) {
    let before = snapshot(state);
    keyward_fails(state, args, needle);
    assert_eq!(snapshot(state), before, "state changed by failing {args:?}");
}

/// `issue --name a --dns a.internal --out OUT`.
fn issue_a(out: &str) -> [&str; 7] {
    ["issue", "--name", "a", "--dns", "a.internal", "--out", out]
}

#[test]
fn before_any_ca() {
    let tmp = TempDir::new().unwrap();
    let state = tmp.path().join("state");
    let out = tmp.path().join("out");
    fails_unchanged(&state, &issue_a(out.to_str().unwrap()), "ca init");
    assert!(
        !state.exists() && !out.exists(),
        "issue before ca init created files"
    );
    fails_unchanged(
        &state,
        &["ca", "init", "--key", "file:/nonexistent/dir/ca.pem"],
        "key not found",
    );
    fails_unchanged(
        &state,
        &["ca", "init", "--key", "gcpkms:x"],
        "unknown scheme 'gcpkms'",
    );
    fails_unchanged(
        &state,
        &["ca", "init", "--key", "pkcs11:slot-id=1"],
        "slot-id",
    );
    fails_unchanged(
        &state,
        &["ca", "init", "--key", "file:/x.pem", "--validity", "10q"],
        "invalid duration '10q'",
    );
    fails_unchanged(
        &state,
        &[
            "key",
            "generate",
            "--key",
            &format!("file:{}/k.pem", tmp.path().display()),
            "--algorithm",
            "rsa-1024",
        ],
        "unknown algorithm 'rsa-1024'",
    );
    fails_unchanged(&state, &["status"], "ca init");
    assert!(!state.exists());
}

#[test]
fn with_a_ca() {
    let tmp = TempDir::new().unwrap();
    let key = software_key(tmp.path());
    let state = root_ca(tmp.path(), &key, "ecdsa-p256");
    let out = tmp.path().join("out");
    let out_s = out.to_str().unwrap();

    fails_unchanged(&state, &["ca", "init", "--key", &key], "already exists");
    fails_unchanged(
        &state,
        &[
            "key",
            "generate",
            "--key",
            &key,
            "--algorithm",
            "ecdsa-p256",
        ],
        "already exists",
    );
    fails_unchanged(
        &state,
        &["issue", "--name", "a", "--dns", "bad name!", "--out", out_s],
        "bad name!",
    );
    fails_unchanged(
        &state,
        &[
            "issue",
            "--name",
            "a",
            "--dns",
            "a.internal",
            "--algorithm",
            "dsa",
            "--out",
            out_s,
        ],
        "unknown algorithm 'dsa'",
    );
    fails_unchanged(
        &state,
        &[
            "issue",
            "--name",
            "a",
            "--dns",
            "a.internal",
            "--validity",
            "0d",
            "--out",
            out_s,
        ],
        "invalid duration '0d'",
    );
    assert!(!out.exists());

    let garbage = tmp.path().join("garbage.csr");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    )
    .unwrap();
    let cert_out = tmp.path().join("dev.pem");
    fails_unchanged(
        &state,
        &[
            "sign-csr",
            "--csr",
            garbage.to_str().unwrap(),
            "--out",
            cert_out.to_str().unwrap(),
        ],
        "CSR",
    );
    fails_unchanged(
        &state,
        &[
            "sign-csr",
            "--csr",
            "/nonexistent.csr",
            "--out",
            cert_out.to_str().unwrap(),
        ],
        "/nonexistent.csr",
    );

    // A CSR whose signature is broken: flip a byte inside the signature.
    let dev_key = tmp.path().join("dev.key");
    let csr = tmp.path().join("dev.csr");
    openssl_csr(
        &dev_key,
        &csr,
        "/CN=dev",
        &[
            "-outform",
            "DER",
            "-addext",
            "subjectAltName=DNS:dev.internal",
        ],
    );
    let mut der = std::fs::read(&csr).unwrap();
    let n = der.len();
    der[n - 5] ^= 0x55;
    let broken = tmp.path().join("broken.csr");
    std::fs::write(&broken, &der).unwrap();
    fails_unchanged(
        &state,
        &[
            "sign-csr",
            "--csr",
            broken.to_str().unwrap(),
            "--out",
            cert_out.to_str().unwrap(),
        ],
        "signature",
    );
    assert!(!cert_out.exists());

    // Issuing into a directory that already holds a key never overwrites it.
    keyward_ok(
        &state,
        &[
            "issue",
            "--name",
            "a",
            "--dns",
            "a.internal",
            "--out",
            out_s,
        ],
    );
    let key_before = std::fs::read(out.join("key.pem")).unwrap();
    fails_unchanged(
        &state,
        &[
            "issue",
            "--name",
            "b",
            "--dns",
            "b.internal",
            "--out",
            out_s,
        ],
        "never overwrites",
    );
    assert_eq!(std::fs::read(out.join("key.pem")).unwrap(), key_before);
}

#[test]
fn interrupted_operation_is_reported() {
    let tmp = TempDir::new().unwrap();
    let key = software_key(tmp.path());
    let state = root_ca(tmp.path(), &key, "ecdsa-p256");
    // What a crash between writing a certificate and recording it leaves behind.
    std::fs::write(state.join("issued/00ff.pem"), "x").unwrap();
    std::fs::write(
        state.join("pending/issue-1-1.json"),
        r#"{"operation":"issue","detail":"serial 00ff to /tmp/x","started_at":"2026-01-01T00:00:00Z"}"#,
    ).unwrap();
    let out = keyward(&state, &["status"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning: an earlier `issue`"), "{stderr}");
    assert!(
        stderr.contains("00ff.pem is not in the inventory"),
        "{stderr}"
    );
}

/// The attack as uid 65534 on a state directory a careless `chmod` opened to every user:
/// it can plant files there (or swap the CA's record); keyward then refuses to write, by
/// name, and changes nothing until the mode is mended.
#[test]
fn a_state_directory_every_user_may_write_is_refused_and_left_as_it_is() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new().unwrap();
    let state = root_ca(tmp.path(), &software_key(tmp.path()), "ecdsa-p256");
    let out = tmp.path().join("out");
    let mode = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    let issue = issue_a(out.to_str().unwrap());
    mode(tmp.path(), 0o755);
    for (dir, what) in [
        (state.clone(), "the state directory"),
        (state.join("ca"), "the CA directory"),
    ] {
        mode(&state, 0o755);
        mode(&dir, 0o777);
        let planted = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "touch"])
            .arg(dir.join("planted-by-65534"))
            .status()
            .unwrap();
        assert!(
            planted.success(),
            "uid 65534 could not write {}",
            dir.display()
        );
        let line = keyward_fails(&state, &issue, "can be written by every user");
        assert!(line.contains(what), "{line}");
        fails_unchanged(&state, &issue, "chmod o-w");
        assert!(!out.exists(), "issued into {}", out.display());
        mode(&dir, 0o700);
    }
    keyward_ok(&state, &issue);
}

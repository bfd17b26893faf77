//! End-to-end: `keyward fetch` writes the caller's SVID to files, and with `--watch`
//! rewrites them on every rotation and runs its command.

mod agent_common;
mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use agent_common::*;
use common::{keyward_bin, mode, openssl};

fn serial_of(path: &std::path::Path) -> Option<String> {
    let pem = std::fs::read(path).ok()?;
    let ders = keyward_core::check::pem_to_ders(&pem).ok()?;
    ders.first().map(|d| serial(d))
}

fn check_files(dir: &std::path::Path) {
    assert_eq!(mode(&dir.join("key.pem")), 0o600);
    let out = Command::new("openssl")
        .args(["verify", "-x509_strict", "-CAfile"])
        .arg(dir.join("bundle.pem"))
        .arg("-untrusted")
        .arg(dir.join("cert.pem"))
        .arg(dir.join("cert.pem"))
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert_pub = openssl(&[
        "x509",
        "-in",
        dir.join("cert.pem").to_str().unwrap(),
        "-noout",
        "-pubkey",
    ]);
    let key_pub = openssl(&[
        "pkey",
        "-in",
        dir.join("key.pem").to_str().unwrap(),
        "-pubout",
    ]);
    assert_eq!(cert_pub, key_pub, "key.pem does not match cert.pem");
}

#[test]
fn fetch_writes_cert_key_and_bundle_that_openssl_verifies() {
    let mut agent = Agent::new(&entry("files", 0, "1h", ""));
    agent.start();
    let out = agent.dir.path().join("svid");
    let o = Command::new(keyward_bin())
        .args(["fetch", "--out"])
        .arg(&out)
        .env("SPIFFE_ENDPOINT_SOCKET", agent.endpoint())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("spiffe://example.org/files"));
    check_files(&out);
    let chain =
        keyward_core::check::pem_to_ders(&std::fs::read(out.join("cert.pem")).unwrap()).unwrap();
    assert_eq!(
        uri_sans(&chain[0]),
        vec!["spiffe://example.org/files".to_string()]
    );
    agent.stop();
}

#[test]
fn fetch_watch_rewrites_the_files_on_rotation_and_runs_its_command() {
    let mut agent = Agent::new(&entry("watched", 0, "4s", ""));
    agent.start();
    let out = agent.dir.path().join("svid");
    let hook = agent.dir.path().join("hook.log");
    let mut child = Command::new(keyward_bin())
        .args(["fetch", "--watch", "--out"])
        .arg(&out)
        .arg("--exec")
        .arg(format!("echo \"$KEYWARD_SVID_DIR\" >> {}", hook.display()))
        .env("SPIFFE_ENDPOINT_SOCKET", agent.endpoint())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let hook_runs = || {
        std::fs::read_to_string(&hook)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    wait_for(
        "the first write and hook run",
        Duration::from_secs(20),
        || hook_runs() >= 1,
    );
    let first = serial_of(&out.join("cert.pem")).expect("cert.pem written");
    check_files(&out);
    wait_for(
        "a rotation to be written (ttl 4 s)",
        Duration::from_secs(30),
        || hook_runs() >= 2 && serial_of(&out.join("cert.pem")).is_some_and(|s| s != first),
    );
    check_files(&out);
    let log = std::fs::read_to_string(&hook).unwrap();
    assert!(
        log.lines().all(|l| l == out.to_str().unwrap()),
        "the command sees KEYWARD_SVID_DIR: {log}"
    );
    let _ = child.kill();
    let _ = child.wait();
    agent.stop();
}

//! End-to-end secret hygiene: a run through every command with distinctive secrets (a
//! SoftHSM PIN, a Vault token, an AWS secret key, a backup passphrase, software private
//! keys), then a search of every file keyward wrote and everything it printed: no secret
//! appears outside the private key files themselves, which are 0600 in 0700 directories.

mod agent_common;
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use agent_common::*;
use common::*;
use tempfile::TempDir;

const PIN: &str = "pin-Zq7xW3-hygiene";
const BAD_PIN: &str = "pin-Wr0ng9-hygiene";
const AWS_SECRET: &str = "awsSecret-Kp4vT8-hygiene-0123456789abcdef";
const PASSPHRASE: &str = "passphrase-Hx2mR6-hygiene";
const BAD_TOKEN: &str = "hvs-badtoken-Jn5qL1-hygiene";

/// Runs keyward with extra environment and keeps everything it printed.
struct Runner {
    envs: Vec<(String, String)>,
    printed: Vec<(String, Vec<u8>)>,
}

impl Runner {
    fn run(&mut self, state: &Path, args: &[&str]) -> Output {
        let out = Command::new(keyward_bin())
            .arg("--state-dir")
            .arg(state)
            .args(args)
            .env("KEYWARD_LOG", "debug")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run keyward");
        let label = format!("keyward {args:?}");
        self.printed
            .push((format!("{label} stdout"), out.stdout.clone()));
        self.printed
            .push((format!("{label} stderr"), out.stderr.clone()));
        out
    }

    fn ok(&mut self, state: &Path, args: &[&str]) -> String {
        let out = self.run(state, args);
        assert!(
            out.status.success(),
            "keyward {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    fn fails(&mut self, state: &Path, args: &[&str], needle: &str) {
        let out = self.run(state, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "keyward {args:?} succeeded");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// A SoftHSM token with the distinctive PIN; returns its label.
fn token_with_pin() -> String {
    let conf = PathBuf::from(required_env("SOFTHSM2_CONF"));
    let label = unique("hyg");
    let label = label[..label.len().min(32)].to_string();
    let lock = std::fs::File::create(conf.with_extension("init-lock")).expect("lock file");
    lock.lock().expect("lock the token directory");
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", &label, "--pin", PIN])
        .args(["--so-pin", "so-secret-1"])
        .output()
        .expect("softhsm2-util");
    drop(lock);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    label
}

/// A child token of the test root token with a distinctive id.
fn vault_child_token() -> String {
    let id = format!("hvs-hygiene-{}", unique("t").replace('-', ""));
    let out = Command::new("curl")
        .args(["-sf", "-X", "POST", "-H"])
        .arg(format!("X-Vault-Token: {}", required_env("VAULT_TOKEN")))
        .args(["-H", "Content-Type: application/json", "-d"])
        .arg(format!(r#"{{"id":"{id}"}}"#))
        .arg(format!(
            "{}/v1/auth/token/create",
            required_env("VAULT_ADDR")
        ))
        .output()
        .expect("curl");
    assert!(out.status.success(), "token create failed");
    id
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Every regular file under `dir` except those under `skip`, and every directory.
fn walk(dir: &Path, skip: &[PathBuf], files: &mut Vec<PathBuf>, dirs: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.unwrap().path();
        if skip.contains(&p) {
            continue;
        }
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            dirs.push(p.clone());
            walk(&p, skip, files, dirs);
        } else if meta.is_file() {
            files.push(p);
        }
    }
}

fn is_private_key(bytes: &[u8]) -> bool {
    String::from_utf8_lossy(bytes).contains("PRIVATE KEY-----")
}

/// A few 40-character pieces of a PEM private key's base64 body.
fn key_body_pieces(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 40)
        .take(3)
        .map(|l| l[..40].to_string())
        .collect()
}

#[test]
fn no_secret_leaves_its_place() {
    let module = required_env("KEYWARD_TEST_PKCS11_MODULE");
    required_env("KEYWARD_TEST_KMS_ENDPOINT");
    required_env("KEYWARD_TEST_VAULT_ADDR");
    let token = vault_child_token();
    let label = token_with_pin();

    let tmp = TempDir::new().unwrap();
    // Inputs written by the test, not by keyward: never searched.
    let inputs = tmp.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    let pin_file = inputs.join("pin");
    std::fs::write(&pin_file, PIN).unwrap();
    let pass_file = inputs.join("pass");
    std::fs::write(&pass_file, format!("{PASSPHRASE}\n")).unwrap();

    let mut r = Runner {
        envs: vec![
            ("AWS_SECRET_ACCESS_KEY".into(), AWS_SECRET.into()),
            ("VAULT_TOKEN".into(), token.clone()),
        ],
        printed: Vec::new(),
    };
    let state = tmp.path().join("state");
    let root = format!("file:{}/keys/root.pem", tmp.path().display());
    let hsm_base = format!("pkcs11:token={label}");
    let hsm_q = format!("?module-path={module}&pin-source=file:{}", s(&pin_file));
    let hsm_int = format!("{hsm_base};object=int{hsm_q}");
    let hsm_pv = format!("{hsm_base};object=pv?module-path={module}&pin-value={PIN}");
    let kms = format!("awskms:alias/{}", unique("hyg"));
    let transit = format!("transit:{}", unique("hyg"));

    r.ok(
        &state,
        &[
            "key",
            "generate",
            "--key",
            &root,
            "--algorithm",
            "ecdsa-p256",
        ],
    );
    r.ok(
        &state,
        &[
            "key",
            "generate",
            "--key",
            &hsm_int,
            "--algorithm",
            "ecdsa-p256",
        ],
    );
    r.ok(
        &state,
        &[
            "key",
            "generate",
            "--key",
            &hsm_pv,
            "--algorithm",
            "ecdsa-p256",
        ],
    );
    r.ok(
        &state,
        &[
            "key",
            "generate",
            "--key",
            &kms,
            "--algorithm",
            "ecdsa-p256",
        ],
    );
    r.ok(
        &state,
        &[
            "key",
            "generate",
            "--key",
            &transit,
            "--algorithm",
            "ecdsa-p256",
        ],
    );
    for k in [&root, &hsm_int, &hsm_pv, &kms, &transit] {
        r.ok(&state, &["key", "show", "--key", k, "--json"]);
    }
    r.ok(
        &state,
        &["hsm", "keys", "--key", &format!("{hsm_base}{hsm_q}")],
    );
    r.ok(
        &state,
        &[
            "hsm",
            "keys",
            "--key",
            &format!("{hsm_base}?module-path={module}&pin-value={PIN}"),
        ],
    );
    r.ok(&state, &["hsm", "slots", "--module", &module]);

    r.ok(
        &state,
        &["ca", "init", "--key", &root, "--subject", "CN=hygiene root"],
    );
    r.ok(&state, &["ca", "intermediate", "--key", &hsm_int]);
    let svc = tmp.path().join("svc");
    r.ok(
        &state,
        &[
            "issue",
            "--name",
            "api",
            "--dns",
            "api.internal",
            "--out",
            s(&svc),
        ],
    );
    let svc2 = tmp.path().join("svc2");
    r.ok(
        &state,
        &[
            "issue",
            "--name",
            "old",
            "--dns",
            "old.internal",
            "--out",
            s(&svc2),
        ],
    );
    let csr = inputs.join("dev.csr");
    openssl_csr(
        &inputs.join("dev.key"),
        &csr,
        "/CN=dev",
        &["-addext", "subjectAltName=DNS:dev.internal"],
    );
    r.ok(
        &state,
        &[
            "sign-csr",
            "--csr",
            s(&csr),
            "--out",
            s(&tmp.path().join("dev.pem")),
        ],
    );
    r.ok(&state, &["status"]);
    let status: serde_json::Value =
        serde_json::from_str(&r.ok(&state, &["status", "--json"])).unwrap();
    r.ok(&state, &["verify", "--cert", s(&svc.join("cert.pem"))]);
    let old_serial = status["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "old")
        .expect("old in status")["serial_hex"]
        .as_str()
        .unwrap()
        .to_string();
    r.ok(
        &state,
        &["revoke", "--serial", &old_serial, "--reason", "superseded"],
    );
    r.ok(&state, &["crl"]);
    // export prints the service key (that is its job): it is searched for the other secrets.
    let export = r.ok(
        &state,
        &["export", "--name", "api", "--format", "k8s-secret"],
    );
    let archive = tmp.path().join("backup.kwb");
    r.ok(
        &state,
        &[
            "backup",
            "--out",
            s(&archive),
            "--passphrase-file",
            s(&pass_file),
        ],
    );
    let restored = tmp.path().join("restored");
    r.ok(
        &restored,
        &["restore", s(&archive), "--passphrase-file", s(&pass_file)],
    );
    r.ok(&restored, &["status"]);
    r.ok(&state, &["audit", "verify", s(&state.join("audit.jsonl"))]);

    // Failures print errors: none of them may carry a secret.
    let bad_pin = format!("{hsm_base};object=int?module-path={module}&pin-value={BAD_PIN}");
    r.fails(&state, &["key", "show", "--key", &bad_pin], "error:");
    r.fails(&state, &["hsm", "keys", "--key", &bad_pin], "error:");
    let wrong_pin_file = inputs.join("wrong-pin");
    std::fs::write(&wrong_pin_file, BAD_PIN).unwrap();
    let bad_pin_src = format!(
        "{hsm_base};object=int?module-path={module}&pin-source=file:{}",
        s(&wrong_pin_file)
    );
    r.fails(&state, &["key", "show", "--key", &bad_pin_src], "error:");
    r.envs[1].1 = BAD_TOKEN.into();
    r.fails(&state, &["key", "show", "--key", &transit], "error:");
    r.envs[1].1 = token.clone();
    r.envs[0].1 = format!("{AWS_SECRET}-wrong");
    let _ = r.run(&state, &["key", "show", "--key", &kms]);
    r.envs[0].1 = AWS_SECRET.into();
    let wrong_pass = inputs.join("wrong-pass");
    std::fs::write(&wrong_pass, "not-the-passphrase\n").unwrap();
    r.fails(
        &tmp.path().join("restored-bad"),
        &["restore", s(&archive), "--passphrase-file", s(&wrong_pass)],
        "error:",
    );

    // The agent, at debug level, with the HSM root (PIN from a file) and a software
    // intermediate it rotates itself, serving one fetch.
    let agent_dir = TempDir::new().unwrap();
    let agent_keys = agent_dir.path().join("keys");
    let workloads = format!(
        "[ca.intermediate]\nkey = \"file:{}/int-{{n}}.pem\"\nttl = \"1d\"\n\n{}",
        agent_keys.display(),
        entry("api", 0, "1h", "")
    );
    let mut agent = Agent::with_ca_key(agent_dir, &hsm_int, &workloads);
    agent.env("KEYWARD_LOG", "debug");
    agent.env("AWS_SECRET_ACCESS_KEY", AWS_SECRET);
    agent.env("VAULT_TOKEN", &token);
    agent.start();
    let fetched = agent.dir.path().join("fetched");
    let out = fetch_as(0, &agent.socket, &fetched);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    r.printed.push(("fetch stdout".into(), out.stdout));
    r.printed.push(("fetch stderr".into(), out.stderr));
    std::thread::sleep(Duration::from_secs(2));
    agent.stop();
    assert!(agent.log().contains("DEBUG"), "debug logging was on");

    // Everything keyward wrote: both directories minus the test's own inputs.
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    walk(
        tmp.path(),
        std::slice::from_ref(&inputs),
        &mut files,
        &mut dirs,
    );
    let agent_skip = [agent.config.clone()];
    walk(agent.dir.path(), &agent_skip, &mut files, &mut dirs);

    let mut key_files = Vec::new();
    let mut secrets: BTreeMap<String, String> = BTreeMap::new();
    secrets.insert(PIN.into(), "the PIN".into());
    secrets.insert(BAD_PIN.into(), "the wrong PIN".into());
    secrets.insert(AWS_SECRET.into(), "the AWS secret key".into());
    secrets.insert(token.clone(), "the Vault token".into());
    secrets.insert(BAD_TOKEN.into(), "the bad Vault token".into());
    secrets.insert(PASSPHRASE.into(), "the backup passphrase".into());
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        if is_private_key(&bytes) {
            assert_eq!(mode(f), 0o600, "private key {} is not 0600", f.display());
            for piece in key_body_pieces(&String::from_utf8_lossy(&bytes)) {
                secrets.insert(piece, format!("key body of {}", f.display()));
            }
            key_files.push(f.clone());
        }
    }
    // root, restored root? (restored keys go back to their recorded path), two issued
    // keys, the agent's intermediate and the fetched key at least.
    assert!(key_files.len() >= 5, "{key_files:?}");

    let mut searched = 0;
    let mut leaks = Vec::new();
    for f in files.iter().filter(|f| !key_files.contains(f)) {
        let text = String::from_utf8_lossy(&std::fs::read(f).unwrap()).to_string();
        searched += 1;
        for (secret, what) in &secrets {
            if text.contains(secret.as_str()) {
                leaks.push(format!("{what} in {}", f.display()));
            }
        }
    }
    for (label, bytes) in &r.printed {
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains("panicked"), "{label}: {text}");
        for (secret, what) in &secrets {
            if text.contains(secret.as_str()) && !label.contains("\"export\"") {
                leaks.push(format!("{what} in {label}"));
            }
        }
    }
    for (secret, what) in &secrets {
        if !what.starts_with("key body") && export.contains(secret.as_str()) {
            leaks.push(format!("{what} in export output"));
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    assert!(searched >= 20, "searched only {searched} files");
    for must in ["audit.jsonl", "agent.log", "backup.kwb"] {
        assert!(
            files.iter().any(|f| f.ends_with(must)),
            "{must} was searched"
        );
    }

    // Every directory keyward created is 0700, except the agent's socket directory,
    // which the test config makes reachable (the socket itself carries socket_mode).
    for d in &dirs {
        if d == agent.socket.parent().unwrap() {
            continue;
        }
        assert_eq!(mode(d), 0o700, "directory {} is not 0700", d.display());
    }
}

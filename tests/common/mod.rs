//! Helpers shared by the end-to-end tests: run the `keyward` binary, snapshot a
//! directory, run openssl.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `keyward` binary built by this workspace (`KEYWARD_BIN` overrides).
pub fn keyward_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KEYWARD_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("keyward");
    assert!(
        bin.exists(),
        "{} not built: run the tests through scripts/test.sh (or cargo build -p keyward)",
        bin.display()
    );
    bin
}

/// Runs `keyward --state-dir STATE ARGS...` and returns its output.
pub fn keyward(state: &Path, args: &[&str]) -> Output {
    Command::new(keyward_bin())
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("KEYWARD_LOG")
        .output()
        .expect("run keyward")
}

/// Runs keyward and asserts success, returning stdout.
pub fn keyward_ok(state: &Path, args: &[&str]) -> String {
    let out = keyward(state, args);
    assert!(
        out.status.success(),
        "keyward {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Runs keyward, asserts a non-zero exit with exactly one `error:` line on stderr
/// that contains `needle`, and returns that line.
pub fn keyward_fails(state: &Path, args: &[&str], needle: &str) -> String {
    let out = keyward(state, args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "keyward {args:?} succeeded; expected failure ({needle})"
    );
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(
        errors.len(),
        1,
        "expected one error line for {args:?}, got:\n{stderr}"
    );
    assert!(
        errors[0].contains(needle),
        "error for {args:?} does not mention '{needle}': {}",
        errors[0]
    );
    errors[0].to_string()
}

/// Every file and directory under `dir` with its mode and contents.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return out;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            let meta = std::fs::symlink_metadata(&p).expect("metadata");
            let mode = meta.permissions().mode() & 0o7777;
            let rel = p.strip_prefix(dir).expect("prefix").to_path_buf();
            if meta.is_dir() {
                out.insert(rel, (mode, Vec::new()));
                stack.push(p);
            } else if meta.is_file() {
                out.insert(rel, (mode, std::fs::read(&p).expect("read")));
            } else {
                // A socket or symlink: its presence and mode, not its contents.
                out.insert(rel, (mode, Vec::new()));
            }
        }
    }
    out
}

/// `openssl verify -x509_strict -CAfile ca.pem -untrusted chain.pem cert.pem` in `dir`.
pub fn openssl_verify(dir: &Path) {
    let out = Command::new("openssl")
        .args(["verify", "-x509_strict", "-CAfile"])
        .arg(dir.join("ca.pem"))
        .arg("-untrusted")
        .arg(dir.join("chain.pem"))
        .arg(dir.join("cert.pem"))
        .output()
        .expect("openssl is installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "openssl rejected {}: {}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs openssl with `args`, asserting success; returns stdout.
pub fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A CSR for a new P-256 key, made by `openssl req` with `-subj SUBJECT` and any further
/// `extra` arguments (`-addext ...`, `-outform DER`): the key is written to `key`, the
/// CSR to `csr`.
pub fn openssl_csr(key: &Path, csr: &Path, subject: &str, extra: &[&str]) {
    let key = key.to_str().expect("utf-8 path");
    let csr = csr.to_str().expect("utf-8 path");
    let mut args = vec![
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key,
        "-out",
        csr,
        "-subj",
        subject,
    ];
    args.extend_from_slice(extra);
    openssl(&args);
}

/// The permission bits of `p`.
pub fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o7777
}

/// A name unique to this test run, for keys in servers that outlive one test.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// An environment variable that scripts/test.sh sets; panics with the hint otherwise.
pub fn required_env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} not set: run the tests through scripts/test.sh"))
}

/// A fresh SoftHSM token with a unique label; returns (label, pin file path).
/// Token creation is serialized across test processes with a lock file beside the
/// SoftHSM configuration: concurrent `--init-token` runs on one token directory collide.
pub fn softhsm_token(dir: &Path, prefix: &str) -> (String, PathBuf) {
    let conf = PathBuf::from(required_env("SOFTHSM2_CONF"));
    let label = unique(prefix);
    let label = label[..label.len().min(32)].to_string();
    let pin = format!("pin-{}", &label[label.len().saturating_sub(6)..]);
    let lock = std::fs::File::create(conf.with_extension("init-lock")).expect("token lock file");
    lock.lock().expect("lock the token directory");
    let out = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            &label,
            "--pin",
            &pin,
            "--so-pin",
            "so-secret-1",
        ])
        .output()
        .expect("softhsm2-util is installed (scripts/test.sh installs it)");
    drop(lock);
    assert!(
        out.status.success(),
        "softhsm2-util: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pin_file = dir.join(format!("{label}.pin"));
    std::fs::write(&pin_file, &pin).unwrap();
    (label, pin_file)
}

/// A root CA in `dir/state` with a new `alg` key at `key` (any backend): `key generate`
/// then `ca init`. Returns the state directory.
pub fn root_ca(dir: &Path, key: &str, alg: &str) -> PathBuf {
    let state = dir.join("state");
    keyward_ok(
        &state,
        &["key", "generate", "--key", key, "--algorithm", alg],
    );
    keyward_ok(
        &state,
        &[
            "ca",
            "init",
            "--key",
            key,
            "--subject",
            &format!("CN=Test Root {alg},O=keyward"),
        ],
    );
    state
}

/// `keyward key generate --key KEY --algorithm ALG` with state in `state`; its output.
pub fn generate_key(state: &Path, key: &str, alg: &str) -> String {
    keyward_ok(
        state,
        &["key", "generate", "--key", key, "--algorithm", alg],
    )
}

/// The `file:` URI of a software CA key inside `dir`.
pub fn software_key(dir: &Path) -> String {
    format!("file:{}/keys/ca.pem", dir.display())
}

/// The whole path with a CA key in any backend: [`root_ca`] with `key`, then a service
/// certificate (new `leaf_alg` key) issued to `dir/svc` and verified by openssl.
/// Returns the state directory.
pub fn root_ca_issues_verifiable_certificate(
    dir: &Path,
    key: &str,
    alg: &str,
    leaf_alg: &str,
) -> PathBuf {
    let state = root_ca(dir, key, alg);
    let out = dir.join("svc");
    let out_s = out.to_str().expect("utf-8 path");
    keyward_ok(
        &state,
        &[
            "issue",
            "--name",
            "api",
            "--dns",
            "api.internal",
            "--algorithm",
            leaf_alg,
            "--out",
            out_s,
        ],
    );
    openssl_verify(&out);
    state
}

/// `keyward issue --name NAME --dns name.internal --out OUT` (a new ECDSA P-256 key; the
/// DNS name is NAME in lower case with other characters than letters and digits as `-`);
/// returns the certificate's serial as openssl prints it (upper-case hex).
pub fn issue_named(state: &Path, name: &str, out: &Path) -> String {
    keyward_ok(
        state,
        &[
            "issue",
            "--name",
            name,
            "--dns",
            &format!(
                "{}.internal",
                name.to_lowercase()
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "-")
            ),
            "--out",
            out.to_str().expect("utf-8 path"),
        ],
    );
    let serial = openssl(&[
        "x509",
        "-noout",
        "-serial",
        "-in",
        out.join("cert.pem").to_str().expect("utf-8 path"),
    ]);
    serial
        .trim()
        .strip_prefix("serial=")
        .expect("serial=")
        .to_string()
}

/// One call to the API of the OpenBao dev server scripts/test.sh starts (`VAULT_ADDR`,
/// `VAULT_TOKEN`), through curl; the body of the answer, bytes (a CRL is DER). A
/// non-2xx answer fails the test with curl's error.
pub fn vault_api(method: &str, path: &str, body: Option<&str>) -> Vec<u8> {
    let addr = required_env("VAULT_ADDR");
    let token = required_env("VAULT_TOKEN");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-f", "-X", method])
        .args(["-H", &format!("X-Vault-Token: {token}")]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "-d", b]);
    }
    let out = cmd.arg(format!("{addr}/v1/{path}")).output().expect("curl");
    assert!(
        out.status.success(),
        "curl {method} {path} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

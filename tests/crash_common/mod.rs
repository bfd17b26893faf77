//! Helpers for the crash and failure tests: a CA and its inputs, killing `keyward` at a
//! random moment or at an exact write (strace's fault injection), and the checks that
//! a state directory is clean after `keyward pending resolve`.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::common::{keyward, keyward_ok, openssl, openssl_csr, root_ca, software_key};

/// A software root CA in a fresh directory.
pub fn software_ca() -> (TempDir, PathBuf) {
    let tmp = TempDir::new().unwrap();
    let state = root_ca(tmp.path(), &software_key(tmp.path()), "ecdsa-p256");
    (tmp, state)
}

/// A CSR for a new P-256 key (`CN=device-7`), made by openssl in `dir`.
pub fn device_csr(dir: &Path) -> PathBuf {
    let csr = dir.join("dev.csr");
    openssl_csr(&dir.join("dev.key"), &csr, "/CN=device-7", &[]);
    csr
}

/// `keyward key generate --key KEY --algorithm ecdsa-p256`.
pub fn key_generate(state: &Path, key: &str) {
    crate::common::generate_key(state, key, "ecdsa-p256");
}

/// A small deterministic generator for kill moments (xorshift64*), seeded from
/// `KEYWARD_CRASH_SEED` or the clock (printed, so a run can be replayed).
pub struct Moments(u64);

impl Moments {
    /// A generator for this run.
    pub fn new() -> Self {
        let seed = std::env::var("KEYWARD_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("crash moments seed: {seed} (KEYWARD_CRASH_SEED replays it)");
        Moments(seed)
    }

    /// A moment in [0, max).
    pub fn below(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        max.mul_f64((r >> 11) as f64 / (1u64 << 53) as f64)
    }
}

/// Starts `cmd`, lets it run for `after`, and kills it with SIGKILL (if still running).
pub fn kill_after(mut cmd: Command, after: Duration) {
    let mut child = cmd.spawn().expect("spawn keyward");
    std::thread::sleep(after);
    let _ = child.kill();
    child.wait().unwrap();
}

/// The file system calls a kill can be aimed at: every atomic write ends in one of them.
#[derive(Clone, Copy, Debug)]
pub enum Write {
    /// A write that may replace its file (`rename`).
    Replacing,
    /// A write that must not replace anything (`link`).
    New,
}

impl Write {
    fn syscalls(self) -> &'static str {
        match self {
            Write::Replacing => "rename,renameat,renameat2",
            Write::New => "link,linkat",
        }
    }
}

/// Runs `keyward --state-dir STATE ARGS` under strace, killed with SIGKILL as it
/// enters its `n`-th write of kind `write` (1-based; that write does not happen).
/// Returns whether it was killed (false: it finished first, successfully).
pub fn kill_at_write(state: &Path, args: &[&str], write: Write, n: usize) -> bool {
    kill_under_strace(state, args, write, n, None)
}

/// [`kill_at_write`] at the first call of kind `write` whose first path is `path`
/// (absolute, as keyward names it): a rename of `path`, not one onto it (strace 6.1's
/// `-P` did not match a `rename` by its second path when tried).
pub fn kill_at_write_to(state: &Path, args: &[&str], write: Write, path: &Path) -> bool {
    kill_under_strace(state, args, write, 1, Some(path))
}

/// `keyward ARGS` under strace, killed at the `n`-th write of kind `write` (of those
/// naming `path`, when given).
fn kill_under_strace(
    state: &Path,
    args: &[&str],
    write: Write,
    n: usize,
    path: Option<&Path>,
) -> bool {
    let set = write.syscalls();
    let mut strace = Command::new("strace");
    strace.args(["-f", "-qq", "-o", "/dev/null"]);
    if let Some(path) = path {
        strace.arg("-P").arg(path);
    }
    let status = strace
        .arg("-e")
        .arg(format!("trace={set}"))
        .arg("-e")
        .arg(format!("inject={set}:signal=KILL:when={n}"))
        .arg(crate::common::keyward_bin())
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("KEYWARD_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("strace is installed (scripts/test.sh installs it)");
    match status.signal() {
        Some(9) => true,
        _ => {
            assert!(
                status.success(),
                "keyward {args:?} under strace failed without being killed: {status}"
            );
            false
        }
    }
}

/// The PEM block of the inventory record `rec` in its file in `issued/` (a file of its
/// own, or its `sign-csr --batch` chunk's): the one whose SHA-256 the record holds.
pub fn record_block(state: &Path, rec: &serde_json::Value) -> String {
    let file = state.join(rec["cert_file"].as_str().unwrap());
    let text = std::fs::read_to_string(&file).unwrap();
    let sha = rec["cert_sha256"].as_str().unwrap();
    let starts: Vec<usize> = text.match_indices("-----BEGIN ").map(|(i, _)| i).collect();
    let ends = starts.iter().skip(1).copied().chain([text.len()]);
    starts
        .iter()
        .zip(ends)
        .map(|(&s, e)| &text[s..e])
        .find(|block| keyward_core::store::sha256_hex(block.as_bytes()) == sha)
        .unwrap_or_else(|| panic!("{} holds no block with SHA-256 {sha}", file.display()))
        .to_string()
}

/// After `keyward pending resolve`: nothing is pending, the next command warns about
/// nothing, every certificate in the inventory verifies against the CA with openssl
/// (and every file in `issued/` is named by a record), its delivered files agree with
/// it, no serial appears twice, and `keyward audit verify` passes.
pub fn assert_resolved_and_clean(state: &Path) {
    let listed = keyward_ok(state, &["pending"]);
    assert!(listed.starts_with("no unfinished operations"), "{listed}");
    let out = keyward(state, &["status", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "status: {stderr}");
    assert!(
        !stderr.contains("warning"),
        "the next command warns: {stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");

    let ca_root = state.join("ca/root.pem");
    let inter = state.join("ca/intermediate.pem");
    let verify = |cert: &Path| {
        let mut args = vec![
            "verify",
            "-x509_strict",
            "-CAfile",
            ca_root.to_str().unwrap(),
        ];
        if inter.exists() {
            args.extend(["-untrusted", inter.to_str().unwrap()]);
        }
        args.push(cert.to_str().unwrap());
        openssl(&args);
    };
    let inventory = crate::inventory_common::records(state);
    let mut serials = BTreeSet::new();
    let mut cert_files = BTreeSet::new();
    let scratch = TempDir::new().unwrap();
    for rec in &inventory {
        let serial = rec["serial_hex"].as_str().unwrap();
        assert!(serials.insert(serial.to_string()), "serial {serial} twice");
        let name = rec["cert_file"].as_str().unwrap();
        cert_files.insert(name.to_string());
        let own = scratch.path().join(format!("{serial}.pem"));
        std::fs::write(&own, record_block(state, rec)).unwrap();
        verify(&own);
        if rec["status"] == "abandoned" {
            continue;
        }
        let out = Path::new(rec["out"].as_str().unwrap());
        let delivered = if rec["kind"] == "service" {
            crate::common::openssl_verify(out);
            out.join("cert.pem")
        } else {
            out.to_path_buf()
        };
        let leaf = openssl(&[
            "x509",
            "-noout",
            "-serial",
            "-in",
            delivered.to_str().unwrap(),
        ]);
        assert_eq!(leaf.trim(), format!("serial={serial}"), "{}", out.display());
    }
    for e in std::fs::read_dir(state.join("issued")).unwrap() {
        let name = format!("issued/{}", e.unwrap().file_name().to_string_lossy());
        assert!(cert_files.contains(&name), "{name} is in no record");
    }
    let log = state.join("audit.jsonl");
    let verified = keyward_ok(
        Path::new("/nonexistent-state"),
        &["audit", "verify", log.to_str().unwrap()],
    );
    assert!(verified.starts_with("ok: "), "{verified}");
}

//! Shared by the KeyService tests: `keyward crypto` run as a given uid against a test
//! agent, refusals checked (one clear line, nothing on stdout), and keys made for it.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use crate::agent_common::{Agent, executable_by_anyone};
use std::path::Path;

use crate::common::{keyward_bin, keyward_ok};

/// `keyward crypto ARGS --socket S` as `uid`, with `input` on stdin.
pub fn crypto_as(uid: u32, agent: &Agent, args: &[&str], input: &[u8]) -> Output {
    let mut cmd = Command::new(executable_by_anyone(&keyward_bin()));
    cmd.arg("crypto")
        .args(args)
        .arg("--socket")
        .arg(&agent.socket)
        .current_dir("/")
        .env_remove("KEYWARD_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if uid != 0 {
        cmd.uid(uid).gid(uid);
    }
    let mut child = cmd.spawn().expect("run keyward crypto");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).expect("stdin");
    }
    child.wait_with_output().expect("keyward crypto")
}

/// `keyward crypto ARGS` as root; its stdout, or a panic with its stderr.
pub fn crypto(agent: &Agent, args: &[&str], input: &[u8]) -> Vec<u8> {
    let out = crypto_as(0, agent, args, input);
    assert!(
        out.status.success(),
        "keyward crypto {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    out.stdout
}

/// A data key from the grant `kek` (`keyward crypto data-key`), its wrapped form written
/// to `dir/name`: (plaintext, wrapped).
pub fn data_key(agent: &Agent, dir: &Path, name: &str) -> (Vec<u8>, Vec<u8>) {
    let wrapped_at = dir.join(name);
    let plain = crypto(
        agent,
        &[
            "data-key",
            "--key",
            "kek",
            "--wrapped-out",
            wrapped_at.to_str().unwrap(),
        ],
        b"",
    );
    (plain, std::fs::read(&wrapped_at).unwrap())
}

/// The plaintext of a data key `wrapped` under the grant `kek`.
pub fn unwrap_key(agent: &Agent, wrapped: &[u8]) -> Vec<u8> {
    crypto(agent, &["decrypt", "--key", "kek", "--data-key"], wrapped)
}

/// Asserts `keyward crypto ARGS` as `uid` fails with `needle` in its error and writes
/// nothing to stdout.
pub fn refused(uid: u32, agent: &Agent, args: &[&str], input: &[u8], needle: &str) {
    let out = crypto_as(uid, agent, args, input);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded as uid {uid}");
    assert!(err.contains(needle), "{args:?} as uid {uid}: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(out.stdout.is_empty(), "{args:?} wrote {:?}", out.stdout);
}

/// `keyward key generate --key KEY --algorithm ALGORITHM` with the state in `state`.
pub fn generate(state: &Path, key: &str, algorithm: &str) {
    keyward_ok(
        state,
        &["key", "generate", "--key", key, "--algorithm", algorithm],
    );
}

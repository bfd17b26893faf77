//! End-to-end: `keyward agent` runs with two glibc malloc arenas (it executes itself
//! once with `MALLOC_ARENA_MAX=2`, keeping its process id, arguments and other
//! variables), serves as usual, stops on SIGTERM, and leaves a limit the caller set alone.
//! And the binary's other memory setting: it stays position-independent (ASLR) with its
//! relative relocations packed (RELR, agent/build.rs), read with binutils' `readelf`.

mod agent_common;
mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agent_common::*;
use common::keyward_bin;

/// A running agent, killed on drop if a failed assertion left it running.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `keyward agent` for `agent`'s configuration, with `MALLOC_ARENA_MAX` set to
/// `arenas` or removed, and waits until its socket accepts connections.
fn spawn(agent: &Agent, arenas: Option<&str>) -> Running {
    let mut cmd = Command::new(keyward_bin());
    cmd.arg("agent")
        .arg("--config")
        .arg(&agent.config)
        .env("KEYWARD_ARENA_TEST_MARK", "kept")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match arenas {
        Some(v) => cmd.env("MALLOC_ARENA_MAX", v),
        None => cmd.env_remove("MALLOC_ARENA_MAX"),
    };
    let child = Running(cmd.spawn().expect("start keyward agent"));
    wait_for("the agent's socket", Duration::from_secs(60), || {
        std::os::unix::net::UnixStream::connect(&agent.socket).is_ok()
    });
    child
}

/// The process's `MALLOC_*` and `KEYWARD_*` variables, one `NAME=value` per entry.
fn environ(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("read environ");
    raw.split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .filter(|v| v.starts_with("MALLOC_") || v.starts_with("KEYWARD_"))
        .collect()
}

/// Sends SIGTERM and asserts a clean exit.
fn stop(mut agent: Running) {
    let child = &mut agent.0;
    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(ok.success(), "kill -TERM failed");
    let mut status = None;
    wait_for("the agent's exit", Duration::from_secs(20), || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    assert!(
        status.unwrap().success(),
        "the agent exited with {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_reexecutes_with_two_arenas_and_serves() {
    let uid = nix_uid();
    let agent = Agent::new(&entry("svc", uid, "1h", ""));
    let child = spawn(&agent, None);
    let env = environ(child.0.id());
    assert!(
        env.iter().any(|v| v == "MALLOC_ARENA_MAX=2"),
        "the running agent (same pid as spawned) has MALLOC_ARENA_MAX=2: {env:?}"
    );
    assert!(
        env.iter().any(|v| v == "KEYWARD_ARENA_TEST_MARK=kept"),
        "the caller's other variables survive the re-exec"
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.0.id())).expect("cmdline");
    let args: Vec<&[u8]> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .collect();
    assert_eq!(
        &args[1..],
        [
            &b"agent"[..],
            b"--config",
            agent.config.as_os_str().as_encoded_bytes()
        ],
        "the re-executed agent has the same arguments"
    );
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", child.0.id())).expect("comm");
    let name = keyward_bin();
    let name = name.file_name().unwrap().to_string_lossy();
    assert_eq!(
        comm.trim_end(),
        &name[..name.len().min(15)],
        "the re-executed agent keeps its name (ps, pgrep)"
    );
    let response = raw::fetch_x509(raw::channel(&agent.socket).await, true)
        .await
        .expect("the re-executed agent serves an SVID");
    assert_eq!(response.svids[0].spiffe_id, "spiffe://example.org/svc");
    stop(child);
}

#[test]
fn agent_keeps_the_callers_arena_limit() {
    let uid = nix_uid();
    let agent = Agent::new(&entry("svc", uid, "1h", ""));
    let child = spawn(&agent, Some("3"));
    let env = environ(child.0.id());
    assert!(
        env.iter().any(|v| v == "MALLOC_ARENA_MAX=3"),
        "a limit the caller set is left alone: {env:?}"
    );
    stop(child);
}

/// This process's uid (the agent entry names it).
fn nix_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// What `readelf ARGS` prints for the keyward binary.
fn readelf(args: &[&str]) -> String {
    let out = Command::new("readelf")
        .args(args)
        .arg(keyward_bin())
        .output()
        .expect("run readelf (binutils)");
    assert!(out.status.success(), "readelf {args:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_binary_is_position_independent_with_packed_relocations() {
    let header = readelf(&["-h"]);
    assert!(
        header
            .lines()
            .any(|l| l.trim_start().starts_with("Type:") && l.contains("DYN")),
        "not a position-independent executable:\n{header}"
    );
    let dynamic = readelf(&["-d"]);
    assert!(
        dynamic.contains("(RELR)"),
        "no packed relative relocations:\n{dynamic}"
    );
}

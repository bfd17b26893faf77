//! End-to-end: a connection's attestation is remembered for its later calls only while
//! the caller is what was attested. A raw HTTP/2 client (tests/clients/exec_h2.py, on
//! python-hyper's hyperframe and hpack) is attested as the granted executable on its
//! first call, then changes on the same connection before a second call: it exec()s an
//! executable the entry does not name (refused, no DATA frame), exec()s the granted
//! executable again (served), or, run as root, drops to uid 65534 (refused). The agent
//! sees these changes through the kernel's process events (the fingerprint's two stat
//! calls are tested in the agent's unit tests).

mod agent_common;
mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use agent_common::*;
use serde_json::Value;

const EXEC_H2: (&str, &str) = ("exec_h2.py", include_str!("clients/exec_h2.py"));

/// The Python interpreter of the clients' venv (scripts/pyclients.sh).
fn python() -> PathBuf {
    PathBuf::from(std::env::var("KEYWARD_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "KEYWARD_TEST_PYTHON not set: the Python clients' venv comes from \
             scripts/pyclients.sh; run the tests through scripts/with-backends.sh"
        )
    }))
}

/// A copy of the Python interpreter at `DIR/NAME/python3`, executable by anyone: two
/// copies are two files, which a `path` selector tells apart.
fn interpreter_copy(dir: &Path, name: &str) -> PathBuf {
    let real = std::fs::canonicalize(python()).expect("the interpreter's real file");
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let copy = dir.join("python3");
    std::fs::copy(&real, &copy).expect("copy the interpreter");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    copy
}

/// The venv's site-packages, where hyperframe and hpack are installed.
fn site_packages() -> String {
    let out = Command::new(python())
        .args([
            "-c",
            "import hpack, os; print(os.path.dirname(os.path.dirname(hpack.__file__)))",
        ])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "hpack is not installed in the clients' venv (scripts/pyclients.sh):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

/// An agent granting `spiffe://example.org/granted` to `uid` running `DIR/granted/python3`;
/// returns it (started) with the granted and the other interpreter copy.
fn agent_granting(uid: u32) -> (Agent, PathBuf, PathBuf) {
    let mut agent = Agent::new("");
    let granted = interpreter_copy(agent.dir.path(), "granted");
    let other = interpreter_copy(agent.dir.path(), "other");
    agent.write_config(&format!(
        "[[workload]]\nspiffe_id = \"spiffe://{TRUST_DOMAIN}/granted\"\nttl = \"1h\"\n\
         selectors = {{ uid = {uid}, path = \"{}\" }}\n",
        granted.display()
    ));
    agent.start();
    // Run as root, the agent checks a kept attestation against the kernel's process
    // events (not the fingerprint): these tests are what shows they see an exec and
    // an id change. It says which once its socket serves (after it is bound).
    let said = "a connection's remembered attestation is checked";
    wait_for(said, std::time::Duration::from_secs(10), || {
        agent.log().contains(said)
    });
    let log = agent.log();
    assert!(
        log.contains("checked against the kernel's process events"),
        "the agent does not use process events:\n{log}"
    );
    (agent, granted, other)
}

/// Runs exec_h2.py with the interpreter `exe` as `uid`: `first SOCKET MODE ARG`.
fn run(agent: &Agent, exe: &Path, uid: u32, mode: &str, arg: &str) -> Value {
    let script = client_file(agent, EXEC_H2);
    let out = Command::new(exe)
        .arg(&script)
        .arg("first")
        .arg(&agent.socket)
        .args([mode, arg])
        .env("PYTHONPATH", site_packages())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir("/")
        .uid(uid)
        .gid(uid)
        .output()
        .expect("run exec_h2.py");
    assert!(
        out.status.success(),
        "exec_h2.py {mode} as uid {uid} failed ({}):\n{}\nagent log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "exec_h2.py printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The first call was served: a complete response message on stream 1.
fn assert_served(call: &Value, what: &str) {
    assert_eq!(call["ended"], "message", "{what}: {call}");
    assert!(call["data_frames"].as_u64() >= Some(1), "{what}: {call}");
    assert!(call["data_bytes"].as_u64() > Some(100), "{what}: {call}");
}

/// The call was refused: PermissionDenied (gRPC status 7) in a trailers-only answer,
/// no DATA frame, and a message containing `why`.
fn assert_refused(call: &Value, why: &str, what: &str) {
    assert_eq!(
        call["data_frames"], 0,
        "{what}: the caller got DATA: {call}"
    );
    assert_eq!(call["ended"], "END_STREAM", "{what}: {call}");
    assert_eq!(call["headers"]["grpc-status"], "7", "{what}: {call}");
    // gRPC percent-encodes the message; the reasons checked hold only spaces.
    let message = call["headers"]["grpc-message"].as_str().unwrap_or_default();
    assert!(message.replace("%20", " ").contains(why), "{what}: {call}");
}

#[test]
fn exec_into_an_executable_the_entry_does_not_name_is_refused_on_the_same_connection() {
    let (mut agent, granted, other) = agent_granting(NOBODY);
    let got = run(&agent, &granted, NOBODY, "exec", &other.to_string_lossy());
    assert_eq!(got["exe"], other.to_string_lossy().as_ref(), "{got}");
    assert_served(&got["first"], "the granted interpreter");
    assert_refused(
        &got["second"],
        "no workload entry matches",
        "after exec into another interpreter",
    );
    agent.stop();
}

#[test]
fn exec_into_the_granted_executable_is_still_served_on_the_same_connection() {
    let (mut agent, granted, _other) = agent_granting(NOBODY);
    let got = run(&agent, &granted, NOBODY, "exec", &granted.to_string_lossy());
    assert_eq!(got["exe"], granted.to_string_lossy().as_ref(), "{got}");
    assert_served(&got["first"], "the granted interpreter");
    assert_served(&got["second"], "after exec into the granted interpreter");
    agent.stop();
}

#[test]
fn a_root_caller_that_drops_to_another_uid_is_refused_on_the_same_connection() {
    let (mut agent, granted, _other) = agent_granting(0);
    let got = run(&agent, &granted, 0, "setuid", &NOBODY.to_string());
    assert_served(&got["first"], "root running the granted interpreter");
    assert_refused(
        &got["second"],
        "not as the uid 0",
        "after setresuid to 65534",
    );
    agent.stop();
}

//! The README's Python KeyService example, run as written: stubs generated from the
//! published proto (agent/proto/keyward/v1/keys.proto) by `grpcio-tools`, the client on
//! `grpcio` (both pinned in scripts/pyclients.sh), against an agent granting the
//! example's two keys (software): envelope encryption round-trips, the signature
//! verifies with `cryptography`, and an unknown grant is PERMISSION_DENIED.

mod agent_common;
mod common;
mod keys_common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use agent_common::*;
use keys_common::generate;
use tempfile::TempDir;

/// The ```python block right after the `<!-- keys-python-example -->` marker.
fn readme_example() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let after = readme
        .split_once("<!-- keys-python-example -->\n```python\n")
        .expect("the README's KeyService example")
        .1;
    after
        .split_once("\n```")
        .expect("end of the example")
        .0
        .to_string()
        + "\n"
}

/// `python ARGS` as `uid` in `dir`, with the agent's endpoint; its stdout.
fn python(agent: &Agent, dir: &Path, uid: u32, args: &[&str]) -> Vec<u8> {
    let python = std::env::var("KEYWARD_TEST_PYTHON")
        .expect("KEYWARD_TEST_PYTHON not set: run the tests through scripts/with-backends.sh");
    let mut cmd = Command::new(&python);
    cmd.args(args)
        .current_dir(dir)
        .env("PYTHONPATH", dir)
        .env("SPIFFE_ENDPOINT_SOCKET", agent.endpoint());
    if uid != 0 {
        cmd.uid(uid).gid(uid);
    }
    let out = cmd.output().expect("run python");
    assert!(
        out.status.success(),
        "python {args:?} as uid {uid}: {}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    out.stdout
}

#[test]
fn the_readme_python_example_runs_against_the_agent() {
    let keys = TempDir::new().unwrap();
    let state = keys.path().join("state");
    let kek = format!("file:{}", keys.path().join("db-kek").display());
    let sig = format!("file:{}", keys.path().join("payments.pem").display());
    generate(&state, &kek, "aes-256");
    generate(&state, &sig, "ecdsa-p256");
    let grants = format!(
        "keys = [\n  {{ name = \"db-kek\", key = \"{kek}\", ops = [\"generate-data-key\", \"decrypt\"] }},\n  \
         {{ name = \"payments-signing\", key = \"{sig}\", ops = [\"sign\", \"public-key\"] }},\n]"
    );
    let mut agent = Agent::new(&entry("payments", 0, "1h", &grants));
    agent.start();

    let dir = agent.dir.path().join("python");
    std::fs::create_dir_all(&dir).unwrap();
    let proto = Path::new(env!("CARGO_MANIFEST_DIR")).join("agent/proto");
    let include = format!("-I{}", proto.display());
    let out = format!("--python_out={}", dir.display());
    let grpc_out = format!("--grpc_python_out={}", dir.display());
    python(
        &agent,
        &dir,
        0,
        &[
            "-m",
            "grpc_tools.protoc",
            &include,
            &out,
            &grpc_out,
            "keyward/v1/keys.proto",
        ],
    );
    std::fs::write(dir.join("example.py"), readme_example()).unwrap();
    let printed = python(&agent, &dir, 0, &["example.py"]);
    let result: serde_json::Value = serde_json::from_slice(&printed)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&printed)));
    assert_eq!(result["plaintext"], "card 4111", "{result}");
    assert_eq!(result["algorithm"], "ecdsa-p256", "{result}");
    assert_eq!(result["denied"], "PERMISSION_DENIED", "{result}");
    agent.stop();
}

//! End-to-end: `keyward agent` against Workload API clients nobody here wrote. PyPI's
//! `spiffe` package (py-spiffe, on gRPC C-core, which sends the socket path as the
//! HTTP/2 `:authority`) and a raw `grpcio` call whose `:authority` is set to the socket
//! path, as grpc-java sends it. The Python scripts are tests/clients/*.py; their venv
//! comes from scripts/pyclients.sh (KEYWARD_TEST_PYTHON), and without it these tests
//! fail. Node's `@grpc/grpc-js` (tests/clients/grpc_js.js, which sends `localhost`)
//! likewise needs scripts/nodeclients.sh (KEYWARD_TEST_NODE_MODULES). The Rust `spiffe`
//! crate fetches and validates in agent_workload_api.rs and agent_jwt.rs.

mod agent_common;
mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;

use agent_common::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use prost::Message;
use serde_json::{Value, json};

/// py-spiffe's `WorkloadApiClient` and `X509Source` (modes x509, jwt, rotation, denied).
const PY_SPIFFE: (&str, &str) = ("py_spiffe.py", include_str!("clients/py_spiffe.py"));
/// A generic `grpcio` FetchX509SVID call with the socket path as `:authority`.
const GRPC_RAW: (&str, &str) = ("grpc_raw.py", include_str!("clients/grpc_raw.py"));
/// A `@grpc/grpc-js` FetchX509SVID call through `@grpc/proto-loader`.
const GRPC_JS: (&str, &str) = ("grpc_js.js", include_str!("clients/grpc_js.js"));
/// The Workload API proto the agent is built from, which the Node client loads.
const WORKLOAD_PROTO: (&str, &str) = (
    "workload.proto",
    include_str!("../agent/proto/workload.proto"),
);

/// Runs the `@grpc/grpc-js` client as `uid` against the agent's socket; returns whether
/// it exited successfully and the JSON object it printed.
fn run_grpc_js(agent: &Agent, uid: u32) -> (bool, Value) {
    let modules = std::env::var("KEYWARD_TEST_NODE_MODULES").unwrap_or_else(|_| {
        panic!(
            "KEYWARD_TEST_NODE_MODULES not set: the Node client's packages come from \
             scripts/nodeclients.sh; run the tests through scripts/with-backends.sh or \
             scripts/test.sh"
        )
    });
    let script = client_file(agent, GRPC_JS);
    let proto = client_file(agent, WORKLOAD_PROTO);
    let out = Command::new("node")
        .arg(&script)
        .arg(&proto)
        .arg(&agent.socket)
        .env("NODE_PATH", &modules)
        .current_dir("/")
        .uid(uid)
        .gid(uid)
        .output()
        .unwrap_or_else(|e| panic!("cannot run node: {e}"));
    let answer = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "grpc_js.js as uid {uid} printed no JSON ({e}, {}):\n{}\n{}\nagent log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            agent.log()
        )
    });
    (out.status.success(), answer)
}

/// The certificates of a concatenated DER chain.
fn split_ders(mut ders: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !ders.is_empty() {
        let (rest, _) = x509_parser::parse_x509_certificate(ders).expect("a DER certificate");
        out.push(ders[..ders.len() - rest.len()].to_vec());
        ders = rest;
    }
    out
}

#[test]
fn py_spiffe_fetches_x509_and_jwt_svids_and_bundles_that_verify() {
    let mut agent = Agent::new(&entry("py", 0, "1h", ""));
    agent.start();
    let x509 = run_python(&agent, PY_SPIFFE, 0, &["x509"]);
    assert_eq!(x509["spiffe_id"], "spiffe://example.org/py");
    assert_eq!(x509["key_matches_leaf"], true, "the key is the leaf's");
    let roots: Vec<String> = keyward_core::check::pem_to_ders(&agent.root_pem())
        .unwrap()
        .iter()
        .map(|d| STANDARD.encode(d))
        .collect();
    assert_eq!(x509["roots"], json!(roots), "the bundle is the agent's CA");

    let jwt = run_python(&agent, PY_SPIFFE, 0, &["jwt"]);
    assert_eq!(
        jwt,
        json!({
            "spiffe_id": "spiffe://example.org/py",
            "validated_by_agent": "spiffe://example.org/py",
            "validated_offline": "spiffe://example.org/py",
            "audience": ["web"],
            "jwt_authorities": 1,
        })
    );
    agent.stop();
}

#[test]
fn a_py_spiffe_x509_source_sees_the_rotated_svid() {
    let mut agent = Agent::new(&entry("short", 0, "4s", ""));
    agent.start();
    let seen = run_python(&agent, PY_SPIFFE, 0, &["rotation"]);
    assert_eq!(seen["spiffe_id"], "spiffe://example.org/short");
    let serials = seen["serials"].as_array().expect("serials");
    assert_ne!(serials[0], serials[1], "a new certificate");
    assert_eq!(seen["new_key"], true, "a new key");
    agent.stop();
}

#[test]
fn a_raw_grpcio_call_with_the_socket_path_as_authority_gets_an_svid() {
    let mut agent = Agent::new(&entry("raw", 0, "1h", ""));
    agent.start();
    let socket = agent.socket.to_str().expect("UTF-8 path").to_string();
    let answer = run_python(&agent, GRPC_RAW, 0, &[&socket]);
    assert_eq!(answer["status"], "OK", "{answer}");
    let bytes = STANDARD
        .decode(answer["response"].as_str().expect("response"))
        .expect("base64");
    let response = raw::X509SvidResponse::decode(&bytes[..]).expect("an X509SVIDResponse");
    let svid = &response.svids[0];
    assert_eq!(svid.spiffe_id, "spiffe://example.org/raw");
    let chain = split_ders(&svid.x509_svid);
    assert_eq!(uri_sans(&chain[0]), ["spiffe://example.org/raw"]);
    verify(&chain, &split_ders(&svid.bundle));
    agent.stop();
}

#[test]
fn an_unentitled_uid_gets_permission_denied_from_each_python_client() {
    let mut agent = Agent::new(&entry("py", 0, "1h", ""));
    agent.start();
    let calls = run_python(&agent, PY_SPIFFE, NOBODY, &["denied"]);
    assert_eq!(
        calls,
        json!({
            "fetch_x509_svid": "PERMISSION_DENIED",
            "fetch_x509_bundles": "PERMISSION_DENIED",
            "fetch_jwt_svid": "PERMISSION_DENIED",
            "validate_jwt_svid": "PERMISSION_DENIED",
            "fetch_jwt_bundles": "PERMISSION_DENIED",
        })
    );
    let socket = agent.socket.to_str().expect("UTF-8 path").to_string();
    let raw = run_python(&agent, GRPC_RAW, NOBODY, &[&socket]);
    assert_eq!(raw["status"], "PERMISSION_DENIED", "{raw}");
    assert!(raw.get("response").is_none(), "no key material: {raw}");
    agent.stop();
}

/// The socket's services are chosen by the service name in the path (the agent's own
/// dispatch, not tonic's router): a path naming another service, a method the service
/// does not have, or no method gets `UNIMPLEMENTED` from gRPC C-core's client, and the
/// Workload API still answers on the same socket.
#[test]
fn grpcio_gets_unimplemented_for_a_service_or_method_the_socket_does_not_serve() {
    let mut agent = Agent::new(&entry("raw", 0, "1h", ""));
    agent.start();
    let socket = agent.socket.to_str().expect("UTF-8 path").to_string();
    for path in [
        "/grpc.health.v1.Health/Check",
        "/SpiffeWorkloadAPI/NoSuchMethod",
        "/keyward.v1.KeyService/NoSuchMethod",
        "/envoy.service.secret.v3.SecretDiscoveryService/NoSuchMethod",
        "/SpiffeWorkloadAPI/",
        "/spiffeworkloadapi/FetchX509SVID",
    ] {
        let answer = run_python(&agent, GRPC_RAW, 0, &[&socket, path]);
        assert_eq!(answer["status"], "UNIMPLEMENTED", "{path}: {answer}");
    }
    let answer = run_python(&agent, GRPC_RAW, 0, &[&socket]);
    assert_eq!(answer["status"], "OK", "{answer}");
    agent.stop();
}

#[test]
fn grpc_js_gets_a_verifying_svid_and_an_unentitled_uid_permission_denied() {
    let mut agent = Agent::new(&entry("node", 0, "1h", ""));
    agent.start();
    let (ok, answer) = run_grpc_js(&agent, 0);
    assert!(ok, "grpc-js as root failed: {answer}");
    assert_eq!(answer["status"], "OK", "{answer}");
    assert_eq!(answer["spiffe_id"], "spiffe://example.org/node");
    let der = |field: &str| {
        split_ders(
            &STANDARD
                .decode(answer[field].as_str().expect(field))
                .expect("base64"),
        )
    };
    let chain = der("x509_svid");
    assert_eq!(uri_sans(&chain[0]), ["spiffe://example.org/node"]);
    verify(&chain, &der("bundle"));

    let (ok, denied) = run_grpc_js(&agent, NOBODY);
    assert!(!ok, "grpc-js as uid {NOBODY} succeeded: {denied}");
    assert_eq!(denied["status"], "PERMISSION_DENIED", "{denied}");
    assert_eq!(denied["code"], 7, "{denied}");
    assert!(
        denied.get("x509_svid").is_none(),
        "no key material: {denied}"
    );
    agent.stop();
}

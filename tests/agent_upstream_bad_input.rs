//! End-to-end: bad input from or about the upstream authority while the agent has a
//! current intermediate from OpenBao PKI. An unknown mount, an unknown role, a signing
//! request OpenBao refuses (the real dev server), an answer whose certificate does not
//! carry the CSR's key, and one that does not chain to the root (a proxy in front of
//! OpenBao answers those two): each gives one clear line in the log and in `/readyz`,
//! the current intermediate keeps serving, and nothing is recorded.

mod agent_common;
mod common;
mod metrics_common;
mod upstream_common;

use std::time::Duration;

use common::{required_env, unique};
use metrics_common::{get, metrics_addr, plain};
use upstream_common::*;

/// The line every failed preparation logs.
const FAILED: &str = "cannot prepare the next upstream intermediate CA";

/// Gets generation 1 from `vault-pki:pki`, restarts the agent with `authority` (and
/// the Vault address `vault`), waits for the next preparation to fail, and checks what
/// that failure did and did not do. `key_made` says whether the failure comes after
/// generation 2's key was made (a refusal of the signed request) or before it (the
/// mount or role is checked first). Returns the `/readyz` body.
async fn current_then(
    authority: &str,
    vault: Option<&str>,
    needle: &str,
    key_made: bool,
) -> String {
    let bao = required_env("VAULT_ADDR");
    let root = bao_root(&bao, "pki");
    // The next intermediate is due 20 s after the first.
    let mut agent = upstream_agent("vault-pki:pki", "40s", "20s", "10s");
    agent.start();
    assert_eq!(generations(&agent), [1]);
    agent.stop();
    let recorded = journal(&agent);
    let first = recorded["generations"][0]["detail"]["cert"].clone();

    write_config(&agent, authority, "40s", "20s", "10s");
    if let Some(addr) = vault {
        agent.env("VAULT_ADDR", addr);
    }
    let earlier = agent.log().len();
    agent.start();
    let addr = metrics_addr(&agent.log()[earlier..]);
    let failed = async || plain(&agent.log()[earlier..]).contains(FAILED);
    eventually(
        "the next preparation to fail",
        Duration::from_secs(60),
        failed,
    )
    .await;

    // One clear line, naming the cause, in the log and in /readyz.
    let log = plain(&agent.log()[earlier..]);
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(FAILED)).collect();
    assert!(
        lines.iter().all(|l| l.contains(needle)),
        "{needle}: {lines:#?}"
    );
    let ready = get(addr, "/readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.body.contains(needle), "{needle}: {}", ready.body);
    assert_eq!(ready.body.lines().count(), 1, "{}", ready.body);

    // The current intermediate keeps serving; nothing is recorded.
    let chain = fetch_verified(&agent, &root).await.unwrap();
    let served = keyward_core::check::ders_to_pem(&chain[1..2]);
    assert_eq!(serde_json::Value::from(served), first);
    assert_eq!(journal(&agent), recorded, "the journal is unchanged");
    assert_eq!(
        key_file(&agent, 2).exists(),
        key_made,
        "generation 2's key (reused by the next attempt)"
    );
    agent.stop();
    ready.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_mount_keeps_the_current_intermediate() {
    let mount = unique("no-such-pki");
    current_then(&format!("vault-pki:{mount}"), None, &mount, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_role_keeps_the_current_intermediate() {
    let body = current_then(
        "vault-pki:pki?role=no-such-role",
        None,
        "no PKI role 'no-such-role'",
        false,
    )
    .await;
    assert!(body.contains("pki/"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signing_request_openbao_refuses_keeps_the_current_intermediate() {
    // A mount whose root allows no intermediate below it (max_path_length 0):
    // OpenBao refuses to sign with HTTP 400.
    let bao = required_env("VAULT_ADDR");
    let mount = unique("pki-nopath");
    bao_call(
        &bao,
        "POST",
        &format!("sys/mounts/{mount}"),
        Some(r#"{"type":"pki","config":{"max_lease_ttl":"87600h"}}"#),
    );
    bao_call(
        &bao,
        "POST",
        &format!("{mount}/root/generate/internal"),
        Some(
            r#"{"common_name":"root without intermediates","key_type":"ec","ttl":"87600h","max_path_length":0}"#,
        ),
    );
    current_then(
        &format!("vault-pki:{mount}"),
        None,
        "cannot issue further CA certificates",
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_for_another_key_keeps_the_current_intermediate() {
    let proxy = TamperingUpstream::start(&required_env("VAULT_ADDR"), Tamper::OtherKey).await;
    current_then(
        "vault-pki:pki",
        Some(&proxy.addr),
        "another public key than the CSR's",
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_does_not_chain_keeps_the_current_intermediate() {
    let proxy = TamperingUpstream::start(&required_env("VAULT_ADDR"), Tamper::ForeignSigner).await;
    current_then("vault-pki:pki", Some(&proxy.addr), "did not sign", true).await;
}

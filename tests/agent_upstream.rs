//! End-to-end: the agent's intermediates signed by OpenBao PKI (`[ca.upstream]`). With
//! no intermediate it gets one at start, serves SVIDs chaining to the OpenBao root
//! (checked with openssl), rotates it several times while clients fetch without a
//! failure, continues with the same generations after a restart in the middle of an
//! overlap, and keeps serving its current intermediate while the upstream is stopped
//! (`/readyz` and the metrics say why) until it is back.

mod agent_common;
mod backend_common;
mod common;
mod metrics_common;
mod upstream_common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agent_common::*;
use backend_common::PrivateServer;
use common::required_env;
use metrics_common::{get, metrics_addr, scrape};
use tokio::sync::Mutex;
use upstream_common::*;

/// Fetches continuously until stopped: counts failures and keeps one chain per
/// intermediate seen, in order.
struct Fetcher {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u64, Vec<String>)>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A chain as fetched, and when.
type Seen = (Vec<Vec<u8>>, time::OffsetDateTime);

impl Fetcher {
    fn start(agent: Arc<Agent>, root: Vec<u8>) -> Fetcher {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (stop2, seen2) = (stop.clone(), seen.clone());
        let task = tokio::spawn(async move {
            let (mut ok, mut failures) = (0u64, Vec::new());
            while !stop2.load(Ordering::SeqCst) {
                match fetch_verified(&agent, &root).await {
                    Ok(chain) => {
                        ok += 1;
                        let mut seen = seen2.lock().await;
                        if seen.last().is_none_or(|(c, _)| c[1] != chain[1]) {
                            seen.push((chain, time::OffsetDateTime::now_utc()));
                        }
                    }
                    Err(e) => failures.push(e),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (ok, failures)
        });
        Fetcher { stop, task, seen }
    }

    async fn intermediates(&self) -> usize {
        self.seen.lock().await.len()
    }

    /// Stops; returns the fetches that succeeded and the chains seen.
    async fn finish(self) -> (u64, Vec<Seen>) {
        self.stop.store(true, Ordering::SeqCst);
        let (ok, failures) = self.task.await.unwrap();
        assert!(failures.is_empty(), "failed fetches: {failures:?}");
        (ok, self.seen.lock().await.clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intermediates_from_openbao_rotate_under_load_and_survive_a_restart_mid_overlap() {
    let bao = required_env("VAULT_ADDR");
    let root = bao_root(&bao, "pki");
    // Each intermediate lives 40 s: the next is prepared after 20 s and takes over 10 s
    // later, so one takes over every 20 s.
    let mut agent = upstream_agent("vault-pki:pki", "40s", "20s", "10s");
    agent.start();
    assert_eq!(generations(&agent), [1], "one intermediate from the start");
    let (chain, bundle) = fetch(&agent).await.unwrap();
    assert_eq!(
        bundle,
        std::slice::from_ref(&root),
        "the bundle is the OpenBao root"
    );
    openssl_verify(agent.dir.path(), &chain, &root);

    // Fetch continuously until the next generation is prepared (the overlap starts).
    let agent = Arc::new(agent);
    let fetcher = Fetcher::start(agent.clone(), root.clone());
    eventually(
        "the second intermediate prepared",
        Duration::from_secs(60),
        async || generations(&agent).len() == 2,
    )
    .await;
    let (ok, seen) = fetcher.finish().await;
    assert!(ok > 10, "{ok} fetches");
    let before = journal(&agent);
    let serving = fetch(&agent).await.unwrap().0[1].clone();

    // A restart mid-overlap continues with the same generations.
    let mut agent = Arc::into_inner(agent).expect("the fetcher is done");
    agent.stop();
    agent.start();
    assert_eq!(
        journal(&agent),
        before,
        "the same generations after the restart"
    );
    // The second takes over 10 s after it was prepared: well after this restart.
    let after = fetch_verified(&agent, &root).await.unwrap();
    assert_eq!(
        after[1], serving,
        "the same intermediate issues after the restart"
    );

    // Three more take-overs while clients fetch, not one failing.
    let agent = Arc::new(agent);
    let fetcher = Fetcher::start(agent.clone(), root.clone());
    eventually(
        "three more intermediates",
        Duration::from_secs(120),
        async || fetcher.intermediates().await >= 4,
    )
    .await;
    let (ok2, seen2) = fetcher.finish().await;
    eprintln!("{} fetches, all verified", ok + ok2);
    let distinct: BTreeSet<&Vec<u8>> = seen.iter().chain(&seen2).map(|(c, _)| &c[1]).collect();
    assert!(distinct.len() >= 4, "{} intermediates", distinct.len());
    for (chain, at) in &seen2 {
        openssl_verify_at(agent.dir.path(), chain, &root, *at);
    }
    assert!(journal(&agent)["last"].as_u64().unwrap() >= 4);
    for n in 1..=4 {
        assert!(key_file(&agent, n).exists(), "a key per generation");
    }

    // Every generation change is in the audit log.
    let audit = std::fs::read_to_string(agent.state.join("audit.jsonl")).unwrap();
    for event in [
        "generation_prepared",
        "generation_activated",
        "generation_retired",
    ] {
        let count = audit
            .lines()
            .filter(|l| l.contains(event) && l.contains("upstream_intermediate"))
            .count();
        assert!(count >= 3, "{event}: {count} records");
    }
    Arc::into_inner(agent).unwrap().stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_upstream_leaves_the_current_intermediate_serving_and_the_agent_unready() {
    let bao = PrivateServer::bao();
    bao_call(
        &bao.addr,
        "POST",
        "sys/mounts/pki",
        Some(r#"{"type":"pki","config":{"max_lease_ttl":"87600h"}}"#),
    );
    bao_call(
        &bao.addr,
        "POST",
        "pki/root/generate/internal",
        Some(r#"{"common_name":"private root","key_type":"ec","ttl":"87600h"}"#),
    );
    let root = bao_root(&bao.addr, "pki");
    // The next intermediate is due 60 s after the first.
    let mut agent = upstream_agent("vault-pki:pki", "120s", "60s", "20s");
    agent.env("VAULT_ADDR", &bao.addr);
    agent.env("VAULT_TOKEN", "root");
    agent.env("VAULT_CLIENT_TIMEOUT", "2s");
    agent.start();
    let addr = metrics_addr(&agent.log());
    wait_for("ready", Duration::from_secs(20), || {
        get(addr, "/readyz").status == 200
    });
    let first = fetch_verified(&agent, &root).await.unwrap()[1].clone();

    bao.signal("STOP");
    let not_ready = async || get(addr, "/readyz").status == 503;
    eventually(
        "/readyz to say not ready",
        Duration::from_secs(90),
        not_ready,
    )
    .await;
    let why = get(addr, "/readyz").body;
    assert!(
        why.contains("upstream_intermediate (generation 1 still serving): cannot prepare the next upstream intermediate CA"),
        "{why}"
    );
    let m = scrape(addr);
    let kind = [("kind", "upstream_intermediate")];
    assert!(m.value("keyward_generation_prepare_failures", &kind) >= Some(1.0));
    assert_eq!(m.value("keyward_generation_active", &kind), Some(1.0));
    assert_eq!(m.value("keyward_ready", &[]), Some(0.0));
    // Workloads keep getting SVIDs from the current intermediate.
    let served = fetch_verified(&agent, &root).await.unwrap();
    assert_eq!(served[1], first);
    assert_eq!(
        generations(&agent),
        [1],
        "nothing recorded while the upstream is down"
    );
    let log = metrics_common::plain(&agent.log());
    let line = log
        .lines()
        .find(|l| l.contains("cannot prepare the next upstream intermediate CA"))
        .expect("a log line");
    assert!(
        line.contains(&bao.addr),
        "the line names the upstream: {line}"
    );

    bao.signal("CONT");
    eventually(
        "the next intermediate",
        Duration::from_secs(60),
        async || generations(&agent) == [1, 2],
    )
    .await;
    wait_for("ready again", Duration::from_secs(20), || {
        get(addr, "/readyz").status == 200
    });
    let m = scrape(addr);
    assert_eq!(
        m.value("keyward_generation_prepare_failures", &kind),
        Some(0.0)
    );
    assert!(metrics_common::plain(&agent.log()).contains("was prepared after"));
    agent.stop();
}

/// An agent with `[ca.upstream]` whose state directory holds an intermediate made by
/// hand (`keyward ca intermediate --upstream`) with `key`; returns it (DER).
fn hand_made(agent: &Agent, key: &str) -> Vec<u8> {
    common::generate_key(&agent.state, key, "ecdsa-p256");
    common::keyward_ok(
        &agent.state,
        &[
            "ca",
            "intermediate",
            "--key",
            key,
            "--validity",
            "1h",
            "--upstream",
            "vault-pki:pki",
        ],
    );
    let pem = std::fs::read(agent.state.join("ca/intermediate.pem")).unwrap();
    keyward_core::check::pem_to_ders(&pem).unwrap().remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_made_intermediate_with_the_first_key_is_adopted_as_generation_one() {
    let root = bao_root(&required_env("VAULT_ADDR"), "pki");
    let mut agent = upstream_agent("vault-pki:pki", "1h", "20m", "1h");
    let key = format!("file:{}", key_file(&agent, 1).display());
    let made = hand_made(&agent, &key);
    agent.start();
    assert_eq!(generations(&agent), [1]);
    let chain = fetch_verified(&agent, &root).await.unwrap();
    assert_eq!(chain[1], made, "the hand-made intermediate issues");
    assert!(!key_file(&agent, 2).exists(), "no new generation");
    agent.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_made_intermediate_with_another_key_is_left_and_a_new_generation_starts() {
    let root = bao_root(&required_env("VAULT_ADDR"), "pki");
    let mut agent = upstream_agent("vault-pki:pki", "1h", "20m", "1h");
    let key = format!("file:{}/keys/by-hand.pem", agent.dir.path().display());
    let made = hand_made(&agent, &key);
    let ca_files = common::snapshot(&agent.state.join("ca"));
    agent.start();
    assert_eq!(generations(&agent), [1]);
    let chain = fetch_verified(&agent, &root).await.unwrap();
    assert_ne!(chain[1], made, "a new intermediate issues");
    assert!(
        key_file(&agent, 1).exists(),
        "with the template's first key"
    );
    assert_eq!(
        common::snapshot(&agent.state.join("ca")),
        ca_files,
        "the hand-made CA is left as it is"
    );
    agent.stop();
}

//! End-to-end: the agent restarted mid-run keeps its CA, serves workloads again and
//! takes over the socket an earlier (killed) run left behind.

mod agent_common;
mod common;

use std::time::Duration;

use agent_common::*;
use spiffe::{TrustDomain, WorkloadApiClient};

async fn fetch(agent: &Agent) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let c = WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .expect("connect");
    let ctx = c.fetch_x509_context().await.expect("fetch X.509 context");
    let svid = ctx.default_svid().expect("an SVID");
    let td = TrustDomain::new("example.org").unwrap();
    let chain = svid
        .cert_chain()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    let roots = ctx
        .bundle_set()
        .get(&td)
        .unwrap()
        .authorities()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    (chain, roots)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_keeps_its_ca_and_replaces_the_stale_socket() {
    let mut agent = Agent::new(&entry("api", 0, "1h", ""));
    agent.start();
    let root = agent.root_pem();
    let (chain1, roots1) = fetch(&agent).await;
    verify(&chain1, &roots1);

    // A crash leaves the socket file behind.
    agent.kill();
    assert!(agent.socket.exists(), "SIGKILL leaves the socket file");
    agent.start();
    assert_eq!(agent.root_pem(), root, "the CA survives the restart");
    let (chain2, roots2) = fetch(&agent).await;
    assert_eq!(roots2, roots1, "the same bundle is served");
    verify(&chain2, &roots1);
    assert!(
        agent.log().contains("replacing the stale socket"),
        "{}",
        agent.log()
    );

    // A clean stop removes the socket, and the next start needs no clean-up.
    agent.stop();
    assert!(!agent.socket.exists());
    agent.start();
    let (chain3, _) = fetch(&agent).await;
    verify(&chain3, &roots1);
    assert_eq!(agent.root_pem(), root);
    agent.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_rotates_its_intermediate_and_reuses_it_after_a_restart() {
    let mut agent = Agent::new(&entry("api", 0, "3s", ""));
    let key = format!(
        "file:{}/keys/intermediate-{{n}}.pem",
        agent.dir.path().display()
    );
    let config = std::fs::read_to_string(&agent.config).unwrap().replace(
        "subject = \"CN=agent test root\"\n",
        &format!("subject = \"CN=agent test root\"\n\n[ca.intermediate]\nkey = \"{key}\"\nttl = \"40s\"\nrotate_before = \"16s\"\n"),
    );
    std::fs::write(&agent.config, config).unwrap();
    agent.start();
    let (chain, roots) = fetch(&agent).await;
    assert_eq!(chain.len(), 2, "leaf and the agent's intermediate");
    verify(&chain, &roots);
    let first_intermediate = chain[1].clone();

    // Restarted within the intermediate's life: the same intermediate issues.
    agent.stop();
    agent.start();
    let (chain, _) = fetch(&agent).await;
    assert_eq!(
        chain[1], first_intermediate,
        "the intermediate survives a restart"
    );

    // ttl 40 s, rotate_before 16 s: the next intermediate is prepared at 24 s and joins
    // the bundle, takes over issuing at 32 s, and the first leaves the bundle at 40 s
    // (the third is prepared at 48 s).
    // SVIDs chain to the root throughout; during the overlap the bundle carries both.
    let root = roots.clone();
    let mut overlap_seen = false;
    let mut rotated = None;
    for _ in 0..80 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (chain, bundle) = fetch(&agent).await;
        verify(&chain, &root);
        verify(&chain, &bundle);
        if bundle != root {
            assert_eq!(bundle.len(), 3, "root and two intermediates");
            assert_eq!(bundle[..1], root[..], "the root stays first");
            assert!(bundle.contains(&first_intermediate), "the old one is kept");
            overlap_seen = true;
        }
        if chain[1] != first_intermediate {
            assert!(
                overlap_seen,
                "the new intermediate was in the bundle before it issued"
            );
            assert!(bundle.contains(&chain[1]) && bundle.contains(&first_intermediate));
            rotated = Some(chain);
            break;
        }
    }
    let rotated = rotated.expect("a new intermediate within 40 s");
    assert_eq!(
        uri_sans(&rotated[0]),
        vec!["spiffe://example.org/api".to_string()]
    );
    let record = std::fs::read_to_string(agent.state.join("agent/generations.json")).unwrap();
    assert!(record.contains("\"n\": 2"), "{record}");
    assert!(
        agent.dir.path().join("keys/intermediate-2.pem").exists(),
        "a fresh key per generation"
    );
    // When the first intermediate expires (40 s), the overlap ends: the root alone
    // until the third is prepared.
    let mut ended = false;
    for _ in 0..40 {
        let (chain, bundle) = fetch(&agent).await;
        verify(&chain, &bundle);
        if bundle == root {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(ended, "the expired intermediate left the bundle");
    agent.stop();
}

//! End-to-end against a real `keyward agent`: workloads fed by `AgentSource` complete
//! mTLS, unlisted IDs and foreign CAs are refused, SVID rotations reach a long-lived
//! server, and an agent restart leaves existing credentials serving.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::agent::*;
use common::*;
use keyward_rustls::{
    AgentSource, Authorizer, CredentialCell, Credentials, client_config, server_config,
};

const SERVER: &str = "spiffe://example.org/server";
const CLIENT: &str = "spiffe://example.org/client";
const NOBODY: u32 = 65534;
const DAEMON: u32 = 1;

fn stdout(o: &std::process::Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_fed_by_the_agent_complete_mtls_and_unlisted_ids_and_foreign_cas_are_refused() {
    let mut agent = Agent::new(
        &[
            entry("server", 0, "1h"),
            entry("client", NOBODY, "1h"),
            entry("intruder", DAEMON, "1h"),
        ]
        .concat(),
    );
    agent.start();
    let source = AgentSource::connect(Some(&agent.endpoint()))
        .await
        .expect("connect to the agent");
    assert_eq!(source.cell().load().spiffe_id(), &id(SERVER));
    let mut srv =
        EchoServer::start(server_config(&source, Authorizer::exact(id(CLIENT))).unwrap()).await;

    // The client workload: another process, another user, its own SVID from the agent.
    let out = echo_client_as(
        NOBODY,
        &agent,
        srv.addr,
        &["--server-id", SERVER, "--message", "ping"],
    );
    assert!(out.status.success(), "{}", stdout(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("server: {SERVER}")) && text.contains("echo: ping"),
        "{text}"
    );
    assert_eq!(srv.outcome().await.unwrap(), CLIENT);

    // A workload the agent names spiffe://example.org/intruder is refused by the server.
    let out = echo_client_as(DAEMON, &agent, srv.addr, &["--message", "ping"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let err = srv.outcome().await.unwrap_err();
    assert!(
        err.contains("spiffe://example.org/intruder is not authorized"),
        "{err}"
    );

    // A client with the allowed ID from another CA (trusting the agent's bundle) is refused.
    let other = Ca::new("other").await;
    let (chain, key) = other.leaf("client.test", &[CLIENT]).await;
    let chain: Vec<&[u8]> = chain.iter().map(|c| c.as_slice()).collect();
    let bundle: Vec<Vec<u8>> = source
        .cell()
        .load()
        .bundle()
        .iter()
        .map(|c| c.to_vec())
        .collect();
    let bundle: Vec<&[u8]> = bundle.iter().map(|c| c.as_slice()).collect();
    let stranger = CredentialCell::new(Credentials::from_der(&chain, &key, &bundle).unwrap());
    let cfg = Arc::new(client_config(&stranger, Authorizer::exact(id(SERVER))).unwrap());
    assert!(echo(srv.addr, &cfg).await.is_err());
    let err = srv.outcome().await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    source.shutdown().await;
    agent.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_lived_server_presents_a_new_certificate_after_each_of_three_agent_rotations() {
    let mut agent = Agent::new(&entry("server", 0, "4s"));
    agent.start();
    let server_source = AgentSource::connect(Some(&agent.endpoint())).await.unwrap();
    let client_source = AgentSource::connect(Some(&agent.endpoint())).await.unwrap();
    let mut srv =
        EchoServer::start(server_config(&server_source, Authorizer::any()).unwrap()).await;
    let client = Arc::new(client_config(&client_source, Authorizer::exact(id(SERVER))).unwrap());
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 4 {
        let leaf = echo(srv.addr, &client)
            .await
            .unwrap_or_else(|e| panic!("handshake {}: {e}", seen.len()));
        assert_eq!(srv.outcome().await.unwrap(), SERVER);
        if seen.last() != Some(&leaf) {
            assert!(
                !seen.contains(&leaf),
                "a rotation brings a certificate not seen before"
            );
            seen.push(leaf);
        }
        assert!(
            Instant::now() < deadline,
            "only {} certificates in 60 s:\n{}",
            seen.len(),
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server_source.shutdown().await;
    client_source.shutdown().await;
    agent.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_an_agent_restart_existing_credentials_serve_and_new_handshakes_succeed_once_it_is_back()
 {
    let mut agent = Agent::new(&[entry("server", 0, "1h"), entry("client", NOBODY, "1h")].concat());
    agent.start();
    let server_source = AgentSource::connect(Some(&agent.endpoint())).await.unwrap();
    let client_source = AgentSource::connect(Some(&agent.endpoint())).await.unwrap();
    let mut srv =
        EchoServer::start(server_config(&server_source, Authorizer::any()).unwrap()).await;
    let client = Arc::new(client_config(&client_source, Authorizer::exact(id(SERVER))).unwrap());
    let before = echo(srv.addr, &client).await.unwrap();
    srv.outcome().await.unwrap();

    agent.stop();
    // The agent is gone: the credentials both sides hold keep serving new handshakes.
    for _ in 0..5 {
        assert_eq!(
            echo(srv.addr, &client)
                .await
                .expect("handshake while the agent is down"),
            before
        );
        srv.outcome().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    agent.start();
    // A workload started after the restart gets an SVID and completes mTLS.
    let out = echo_client_as(
        NOBODY,
        &agent,
        srv.addr,
        &["--server-id", SERVER, "--message", "ping"],
    );
    let seen = srv.outcome().await;
    assert!(out.status.success(), "{}\nserver: {seen:?}", stdout(&out));
    assert_eq!(seen.unwrap(), CLIENT);
    // The long-lived sources reconnect: the server picks up the SVID the restarted
    // agent issued, and handshakes keep succeeding throughout.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leaf = echo(srv.addr, &client)
            .await
            .expect("handshake after the restart");
        srv.outcome().await.unwrap();
        if leaf != before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server never received an SVID from the restarted agent:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server_source.shutdown().await;
    client_source.shutdown().await;
    agent.stop();
}

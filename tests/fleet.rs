//! The fleet end to end (issue 18), real processes only: three keyward agents, one per
//! node of the 3-node OpenBao raft cluster scripts/with-backends.sh starts, each getting
//! and rotating its own intermediate (a new one every minute) from the cluster's PKI
//! root through its own AppRole, keys in files (agents 1 and 3) and in SoftHSM (agent
//! 2). While clients fetch SVIDs from all three sockets and workloads of agents 1 and 3
//! complete mutual TLS with each other through keyward-rustls, the raft leader is
//! SIGKILLed just before the first renewal is due, and restarted once every agent has
//! renewed. Asserted: not one fetch or handshake failed; every agent renewed through the
//! new leader (its journal, its audit log, the certificate as the cluster stores it, the
//! SVIDs it served) and again once the killed node had rejoined; revoking agent 2's
//! intermediates in the cluster makes the servers of agents 1 and 3 refuse agent 2's
//! SVID, accepted before, within a CRL interval, and the rest of the operator's steps
//! for a lost node (tidy, a new AppRole secret) keep it so. Printed: the time from the
//! kill to the first renewal, and from the revocation to the refusals.

mod agent_common;
mod common;
mod fleet_common;
mod metrics_common;
mod raft_common;
mod upstream_common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_common::wait_for;
use fleet_common::traffic::{Fetcher, Handshakes, TlsServer, exchange, held_svid};
use fleet_common::{
    CRL_REFRESH, FleetAgent, KeyStore, MOUNT, Nodes, intermediate_subject, stored_certificate,
    unexpired_named,
};
use keyward_rustls::{AgentSource, Authorizer, SpiffeId, client_config, server_config};
use raft_common::RaftCluster;
use time::OffsetDateTime;
use upstream_common::bao_root;

/// How long an agent may take to renew once its renewal is due, a leader election and
/// the Vault client's 60 s deadline included (a liveness bound).
const RENEWAL_WITHIN: Duration = Duration::from_secs(150);
/// How long after a revocation the servers may still accept the revoked SVID: one CRL
/// interval, plus the delivery to the workloads (a liveness bound).
const REFUSAL_WITHIN: Duration = Duration::from_secs(CRL_REFRESH.as_secs() + 25);
/// How long before the first renewal is due the leader is killed, so that the
/// renewals start during the election.
const KILL_AHEAD: Duration = Duration::from_secs(1);
/// The fewest fetches and handshakes each client must have made (about five a second
/// for two minutes are expected).
const AT_LEAST: u64 = 100;

fn sleep_until(at: OffsetDateTime) {
    let left = at - OffsetDateTime::now_utc();
    std::thread::sleep(Duration::try_from(left).unwrap_or(Duration::ZERO));
}

/// Each agent's newest generation number.
fn newest(fleet: &[FleetAgent; 3]) -> [u64; 3] {
    fleet.each_ref().map(FleetAgent::newest)
}

/// Waits until every agent has a generation newer than `before`; returns, per agent,
/// how long after `since` that was seen.
fn wait_renewed(fleet: &[FleetAgent; 3], before: [u64; 3], since: Instant) -> [Duration; 3] {
    let mut seen = [None; 3];
    wait_for("a renewal by every agent", RENEWAL_WITHIN, || {
        for (i, agent) in fleet.iter().enumerate() {
            if seen[i].is_none() && agent.newest() > before[i] {
                seen[i] = Some(since.elapsed());
            }
        }
        seen.iter().all(Option::is_some)
    });
    seen.map(Option::unwrap)
}

fn seconds(times: &[Duration]) -> String {
    let each: Vec<String> = times
        .iter()
        .enumerate()
        .map(|(i, t)| format!("agent {} {:.1} s", i + 1, t.as_secs_f64()))
        .collect();
    each.join(", ")
}

#[test]
fn a_fleet_rides_out_a_leader_kill_mid_renewal_and_refuses_a_revoked_node() {
    let cluster = RaftCluster::take();
    let started = Instant::now();
    let root = bao_root(cluster.addr(1), MOUNT);
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut fleet = [
        FleetAgent::new(&cluster, 1, KeyStore::File, Nodes::VaultAddr),
        FleetAgent::new(&cluster, 2, KeyStore::SoftHsm, Nodes::Config),
        FleetAgent::new(&cluster, 3, KeyStore::File, Nodes::VaultAddr),
    ];
    for agent in &mut fleet {
        agent.agent.start();
        assert_eq!(agent.newest(), 1, "agent {} serves generation 1", agent.n);
    }
    let ids = fleet
        .each_ref()
        .map(|a| a.spiffe_id.parse::<SpiffeId>().unwrap());

    // Traffic: fetches from every agent; agent 3's workload calls agent 1's and agent
    // 1's calls agent 3's. The servers admit agent 2's workload too (until revoked).
    let fetchers = fleet
        .each_ref()
        .map(|a| Fetcher::start(rt.handle(), &a.agent.endpoint(), &a.spiffe_id, &root));
    let source = |a: &FleetAgent| {
        rt.block_on(AgentSource::connect(Some(&a.agent.endpoint())))
            .unwrap_or_else(|e| panic!("agent {}'s Workload API: {e}", a.n))
    };
    let (source1, source3) = (source(&fleet[0]), source(&fleet[2]));
    let admit = |a: usize, b: usize| Authorizer::one_of([ids[a].clone(), ids[b].clone()]);
    let server1 = TlsServer::start(server_config(&source1, admit(1, 2)).unwrap());
    let server3 = TlsServer::start(server_config(&source3, admit(0, 1)).unwrap());
    let mut handshakes = [
        Handshakes::start(
            client_config(&source3, Authorizer::exact(ids[0].clone())).unwrap(),
            server1.addr,
        ),
        Handshakes::start(
            client_config(&source1, Authorizer::exact(ids[2].clone())).unwrap(),
            server3.addr,
        ),
    ];

    // SIGKILL the leader just before the first agent's renewal is due.
    let leader = cluster.wait_leader(None);
    let due = fleet.each_ref().map(FleetAgent::next_prepare);
    sleep_until(*due.iter().min().unwrap() - KILL_AHEAD);
    let before = newest(&fleet);
    cluster.kill(leader);
    let (killed_at, killed_at_utc) = (Instant::now(), OffsetDateTime::now_utc());
    let renewed = wait_renewed(&fleet, before, killed_at);
    let due_after_kill = due.map(|d| Duration::try_from(d - killed_at_utc).unwrap_or_default());
    println!(
        "fleet: raft leader node {leader} SIGKILLed; renewals were due {} after the kill; \
         first renewal through the new leader {:.1} s after the kill ({})",
        seconds(&due_after_kill),
        renewed.iter().min().unwrap().as_secs_f64(),
        seconds(&renewed)
    );
    assert!(
        cluster.pid(leader).is_none(),
        "node {leader} stayed down through the renewals"
    );
    let new_leader = cluster.wait_leader(Some(leader));
    let mut through_new_leader = Vec::new();
    for (agent, n) in fleet.iter().zip(before) {
        let renewal = agent
            .intermediates()
            .into_iter()
            .find(|g| g.n == n + 1)
            .unwrap_or_else(|| panic!("agent {}'s generation {} in its journal", agent.n, n + 1));
        assert!(
            renewal.signed_by(&root),
            "agent {}'s generation {} is signed by the cluster's root",
            agent.n,
            renewal.n
        );
        assert_eq!(
            stored_certificate(&cluster, new_leader, &renewal.vault_serial()),
            renewal.der,
            "agent {}'s generation {} is the certificate the cluster signed",
            agent.n,
            renewal.n
        );
        assert!(
            agent.audited_preparations().contains(&renewal.n),
            "agent {}'s audit log records generation {}",
            agent.n,
            renewal.n
        );
        through_new_leader.push(renewal);
    }

    // The killed node comes back and rejoins; every agent renews once more.
    cluster.restart(leader);
    cluster.wait_rejoined(leader);
    let rejoined_at = Instant::now();
    let renewed_again = wait_renewed(&fleet, newest(&fleet), rejoined_at);
    println!(
        "fleet: node {leader} rejoined {:.1} s after the kill; renewed again after it \
         rejoined: {}",
        (rejoined_at - killed_at).as_secs_f64(),
        seconds(&renewed_again)
    );
    for ((agent, fetcher), renewal) in fleet.iter().zip(&fetchers).zip(&through_new_leader) {
        assert!(
            fetcher.served(&renewal.der),
            "agent {} served SVIDs chained to generation {}",
            agent.n,
            renewal.n
        );
    }

    // Node 2 is lost: the operator revokes its intermediates in the cluster. A workload
    // holding its SVID was accepted by agents 1's and 3's servers until then.
    let lost = &fleet[1];
    let held = rt.block_on(held_svid(&lost.agent.endpoint()));
    let client2 = Arc::new(client_config(&held, Authorizer::any()).unwrap());
    for server in [&server1, &server3] {
        exchange(&client2, server.addr).expect("agent 2's SVID accepted before the revocation");
    }
    // The operator finds them by their subject, every one agent 2's journal holds.
    let active = cluster.wait_leader(None);
    let found = unexpired_named(&cluster, active, &intermediate_subject(lost.n));
    let now = OffsetDateTime::now_utc();
    for g in lost.intermediates().iter().filter(|g| g.not_after > now) {
        assert!(
            found.iter().any(|(_, der)| *der == g.der),
            "the operator finds agent 2's generation {} in the cluster",
            g.n
        );
    }
    let chained_to_found = |cell: &keyward_rustls::CredentialCell| {
        let through = cell.load().chain()[1].to_vec();
        found.iter().any(|(_, der)| *der == through)
    };
    assert!(
        chained_to_found(&held),
        "the held SVID chains to one of them"
    );
    for (serial, _) in &found {
        let body = serde_json::json!({ "serial_number": serial }).to_string();
        let answer = cluster.root_call(active, "POST", &format!("{MOUNT}/revoke"), Some(&body));
        assert_eq!(answer.status, 200, "revoke: {}", answer.text());
    }
    let revoked_at = Instant::now();
    let mut refused = [None; 2];
    wait_for(
        "agents 1 and 3 refusing agent 2's SVID",
        REFUSAL_WITHIN,
        || {
            for (i, server) in [&server1, &server3].iter().enumerate() {
                if refused[i].is_none()
                    && let Err(e) = exchange(&client2, server.addr)
                {
                    assert!(
                        e.contains("CertificateRevoked"),
                        "refused, but not as revoked: {e}"
                    );
                    refused[i] = Some(revoked_at.elapsed());
                }
            }
            refused.iter().all(Option::is_some)
        },
    );
    println!(
        "fleet: agent 2's SVID refused after the revocation of its {} intermediates: by \
         agent 1's server {:.1} s, by agent 3's {:.1} s (CRL interval {CRL_REFRESH:?})",
        found.len(),
        refused[0].unwrap().as_secs_f64(),
        refused[1].unwrap().as_secs_f64()
    );

    // The rest of the runbook: tidy, and a new secret_id for node 2's AppRole.
    let tidy = cluster.root_call(
        active,
        "POST",
        &format!("{MOUNT}/tidy"),
        Some(r#"{"tidy_cert_store":true,"tidy_revoked_certs":true}"#),
    );
    assert_eq!(tidy.status, 202, "tidy: {}", tidy.text());
    wait_for("the tidy to finish", Duration::from_secs(60), || {
        let status = cluster.root_call(active, "GET", &format!("{MOUNT}/tidy-status"), None);
        status.status == 200 && status.json()["data"]["state"] == "Finished"
    });
    let old_secret = cluster.replace_secret_id(2, active);
    let refused_login = cluster.approle_login_with(2, &old_secret, active);
    assert_eq!(
        refused_login.status,
        400,
        "a login with the destroyed secret_id: {}",
        refused_login.text()
    );
    cluster.approle_login(2, active);
    // A workload holding agent 2's SVID of now (its agent made none since) is refused.
    let held = rt.block_on(held_svid(&lost.agent.endpoint()));
    assert!(chained_to_found(&held), "agent 2 still issues from them");
    let client2 = Arc::new(client_config(&held, Authorizer::any()).unwrap());
    for server in [&server1, &server3] {
        let e = exchange(&client2, server.addr).expect_err("still refused after the tidy");
        assert!(e.contains("CertificateRevoked"), "{e}");
    }

    // All along, not one fetch from any agent failed, nor one handshake between the
    // workloads of agents 1 and 3.
    for f in &fetchers {
        f.stop();
    }
    for h in &mut handshakes {
        h.stop();
    }
    let mut counts = Vec::new();
    for (agent, f) in fleet.iter().zip(&fetchers) {
        let t = &f.tally;
        counts.push(format!("agent {}: {} fetches", agent.n, t.ok()));
        assert_eq!(
            t.failed(),
            0,
            "failed fetches from agent {}: {:?}",
            agent.n,
            t.errors()
        );
        assert!(t.ok() >= AT_LEAST, "agent {}: {} fetches", agent.n, t.ok());
    }
    for (name, h) in ["agent 3 to agent 1", "agent 1 to agent 3"]
        .iter()
        .zip(&handshakes)
    {
        let t = &h.tally;
        counts.push(format!("{name}: {} handshakes", t.ok()));
        assert_eq!(t.failed(), 0, "failed handshakes {name}: {:?}", t.errors());
        assert!(t.ok() >= AT_LEAST, "{name}: {} handshakes", t.ok());
    }
    let retried: Vec<usize> = fleet.iter().map(FleetAgent::failed_preparations).collect();
    println!(
        "fleet: {}; failed preparation attempts per agent {retried:?}; {:.0} s in all",
        counts.join(", "),
        started.elapsed().as_secs_f64()
    );
}

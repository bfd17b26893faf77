//! keyward's Vault/OpenBao client against the 3-node OpenBao raft cluster (issue 18,
//! item 3): one sign-intermediate call rides out a SIGKILL of the leader with no retry
//! by the caller (the time it took is printed), and so does an AppRole login; a dead
//! or sealed node first in the address list is passed over, by the library and by
//! `keyward ca intermediate` with a comma-separated VAULT_ADDR; a request every node
//! would refuse (403, 400) fails on the first node without any other being asked.

mod agent_common;
mod common;
mod raft_common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{generate_key, issue_named, keyward_bin, openssl_verify};
use keyward_core::Error;
use keyward_core::check::pem_to_ders;
use keyward_vault::{VaultClient, VaultSettings, sign_intermediate_with};
use raft_common::RaftCluster;
use rcgen::{CertificateParams, KeyPair};

/// The client deadline for a cluster (`VAULT_CLIENT_TIMEOUT`), as the README advises:
/// longer than a raft election, which took 10-30 s here.
const CLUSTER_DEADLINE: &str = "60s";

/// A runtime for the client's async calls (the cluster harness blocks, so it stays out).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The variables a node's agent would have: VAULT_ADDR listing `nodes` in order, the
/// AppRole credential files of role `node-{role}`, the cluster deadline. No token, so
/// AppRole is the auth method.
fn agent_env(cluster: &RaftCluster, nodes: &[&str], role: usize) -> HashMap<&'static str, String> {
    let approle = cluster.dir.join(format!("approle/node-{role}"));
    HashMap::from([
        ("VAULT_ADDR", nodes.join(",")),
        (
            "VAULT_ROLE_ID_FILE",
            approle.join("role_id").display().to_string(),
        ),
        (
            "VAULT_SECRET_ID_FILE",
            approle.join("secret_id").display().to_string(),
        ),
        ("VAULT_CLIENT_TIMEOUT", CLUSTER_DEADLINE.to_string()),
    ])
}

/// A client configured from [`agent_env`].
fn client(cluster: &RaftCluster, nodes: &[&str], role: usize) -> VaultClient {
    let vars = agent_env(cluster, nodes, role);
    let settings = VaultSettings::from_vars(None, |k| vars.get(k).cloned()).expect("settings");
    assert_eq!(
        settings.addresses(),
        nodes,
        "VAULT_ADDR lists the nodes in order"
    );
    VaultClient::new(&settings).expect("client")
}

/// Nodes `order` of the cluster as addresses.
fn addrs(cluster: &RaftCluster, order: [usize; 3]) -> Vec<&str> {
    order.iter().map(|&n| cluster.addr(n)).collect()
}

/// The other two nodes than `node`, in ascending order.
fn others(node: usize) -> [usize; 2] {
    let mut o = [node % 3 + 1, (node + 1) % 3 + 1];
    o.sort_unstable();
    o
}

/// SIGKILLs a standby (the cluster keeps its leader); returns that standby, the other
/// one and the leader.
fn kill_a_standby(cluster: &RaftCluster) -> [usize; 3] {
    let leader = cluster.wait_leader(None);
    let [down, up] = others(leader);
    cluster.kill(down);
    [down, up, leader]
}

/// An intermediate CSR for a new P-256 key, PEM; Vault takes its subject.
fn intermediate_csr() -> String {
    let key = KeyPair::generate().expect("P-256 key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CSR parameters");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "vault_cluster test node");
    params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .expect("serialize the CSR")
}

/// One sign-intermediate through `client` at mount `mount`; keyward checks the answer
/// (a CA for the CSR's key, chaining to a self-signed root), and the root must be
/// `root`, when given. Returns that root.
async fn sign(
    client: &VaultClient,
    mount: &str,
    csr: &str,
    root: Option<&[u8]>,
) -> Result<Vec<u8>, Error> {
    let signed = sign_intermediate_with(client, mount, csr, "", Duration::from_secs(3600)).await?;
    if let Some(root) = root {
        assert_eq!(signed.root_der, root, "the cluster's one root signed it");
    }
    Ok(signed.root_der)
}

/// [`sign`] of a new CSR at `pki`.
async fn sign_new(client: &VaultClient, root: Option<&[u8]>) -> Result<Vec<u8>, Error> {
    sign(client, "pki", &intermediate_csr(), root).await
}

/// What an agent does first: log in and look the token up (`check`), then sign.
async fn check_and_sign(client: &VaultClient) -> Result<Vec<u8>, Error> {
    client.check().await?;
    sign_new(client, None).await
}

#[test]
fn a_signing_and_a_login_ride_out_a_leader_failover() {
    let cluster = RaftCluster::take();
    let rt = runtime();
    let leader = cluster.wait_leader(None);
    let [a, b] = others(leader);
    // The leader first: requests go there until it dies.
    let nodes = addrs(&cluster, [leader, a, b]);
    let warm = client(&cluster, &nodes, a);
    let root = rt
        .block_on(sign_new(&warm, None))
        .expect("signing before the failover");
    assert_eq!(warm.address(), cluster.addr(leader), "the leader answered");
    // A second node's client that has not logged in yet: its login meets the failover.
    let cold = client(&cluster, &nodes, b);

    cluster.kill(leader);
    let killed_at = Instant::now();
    let timed = async |c| (sign_new(c, Some(&root)).await, killed_at.elapsed());
    let (warm_signed, cold_signed) =
        rt.block_on(async { tokio::join!(timed(&warm), timed(&cold)) });
    let new_leader = cluster.wait_leader(Some(leader));
    println!(
        "vault client failover: one sign-intermediate call succeeded {:.1} s after SIGKILL of \
         leader node {leader} (through {}); a first AppRole login and signing {:.1} s after; \
         new leader node {new_leader}; deadline {CLUSTER_DEADLINE}",
        warm_signed.1.as_secs_f64(),
        warm.address(),
        cold_signed.1.as_secs_f64(),
    );
    warm_signed
        .0
        .expect("signing through the failover, in one call");
    cold_signed
        .0
        .expect("login and signing through the failover, in one call");
    for c in [&warm, &cold] {
        assert_ne!(c.address(), cluster.addr(leader), "a survivor answered");
        assert_eq!(c.auth_status().logins, 1, "one login serves every node");
    }

    // The killed node comes back and rejoins; the clients keep working.
    cluster.restart(leader);
    cluster.wait_rejoined(leader);
    rt.block_on(sign_new(&warm, Some(&root)))
        .expect("signing once the killed node is back");
}

#[test]
fn a_dead_first_node_is_passed_over_by_the_client_and_the_cli() {
    let cluster = RaftCluster::take();
    let rt = runtime();
    let order @ [dead, live, _] = kill_a_standby(&cluster);
    let nodes = addrs(&cluster, order);

    let c = client(&cluster, &nodes, dead);
    rt.block_on(check_and_sign(&c))
        .expect("login, lookup and signing past the dead node");
    assert_ne!(c.address(), cluster.addr(dead), "a live node answered");

    // The CLI: a node's intermediate from `keyward ca intermediate`, VAULT_ADDR listing
    // the three nodes with the dead one first, AppRole login.
    let tmp = tempfile::TempDir::new().unwrap();
    let state = tmp.path().join("state");
    let key = format!("file:{}/keys/intermediate.pem", tmp.path().display());
    generate_key(&state, &key, "ecdsa-p256");
    let mut cmd = Command::new(keyward_bin());
    cmd.arg("--state-dir").arg(&state).args([
        "ca",
        "intermediate",
        "--key",
        &key,
        "--subject",
        "CN=node issuing CA",
        "--upstream",
        "vault-pki:pki",
    ]);
    for name in ["VAULT_TOKEN", "BAO_TOKEN", "BAO_ADDR", "KEYWARD_LOG"] {
        cmd.env_remove(name);
    }
    let out = cmd
        .envs(agent_env(&cluster, &nodes, dead))
        .output()
        .expect("run keyward");
    assert!(
        out.status.success(),
        "keyward ca intermediate past the dead node: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svc = tmp.path().join("svc");
    issue_named(&state, "api", &svc);
    openssl_verify(&svc);
    let root = cluster.call(live, "GET", "pki/ca/pem", None, None);
    assert_eq!(root.status, 200, "pki/ca/pem: {}", root.text());
    let served = std::fs::read(svc.join("ca.pem")).unwrap();
    assert_eq!(
        pem_to_ders(&served).unwrap(),
        pem_to_ders(&root.body).unwrap(),
        "the bundle served is the cluster's root"
    );

    cluster.restart(dead);
    cluster.wait_rejoined(dead);
}

#[test]
fn a_sealed_first_node_is_passed_over() {
    let cluster = RaftCluster::take();
    let rt = runtime();
    let order @ [sealed, ..] = kill_a_standby(&cluster);
    cluster.restart_sealed(sealed);
    assert!(!cluster.unsealed(sealed), "node {sealed} came back sealed");

    let c = client(&cluster, &addrs(&cluster, order), sealed);
    rt.block_on(check_and_sign(&c))
        .expect("login, lookup and signing past the sealed node");
    assert_ne!(
        c.address(),
        cluster.addr(sealed),
        "an unsealed node answered"
    );
    assert!(!cluster.unsealed(sealed), "node {sealed} is still sealed");

    // Alone, a sealed node is an error naming it as sealed.
    let alone = client(&cluster, &[cluster.addr(sealed)], sealed);
    let err = rt.block_on(alone.check()).unwrap_err();
    let line = err.to_string();
    assert!(
        err.is_retryable() && line.contains("sealed") && line.contains(cluster.addr(sealed)),
        "{line}"
    );

    cluster.unseal(sealed);
    cluster.wait_rejoined(sealed);
}

/// A TCP address that counts the connections made to it and closes each at once (to a
/// client, a node that fails every request).
struct CountingAddress {
    addr: String,
    connections: Arc<AtomicUsize>,
}

impl CountingAddress {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        CountingAddress { addr, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

#[test]
fn requests_every_node_refuses_fail_on_the_first_node_alone() {
    let cluster = RaftCluster::take();
    let rt = runtime();
    let counting = CountingAddress::start();
    // Node 1 answers; were a refusal sent on, it would go to the counting address next.
    let nodes = [
        cluster.addr(1),
        &counting.addr,
        cluster.addr(2),
        cluster.addr(3),
    ];
    let c = client(&cluster, &nodes, 1);
    rt.block_on(c.check())
        .expect("login and lookup through node 1");

    // The error of signing `csr` at `mount`, which must name node 1 and each of `needles`.
    let refused = |mount: &str, csr: &str, needles: &[&str]| {
        let started = Instant::now();
        let line = rt
            .block_on(sign(&c, mount, csr, None))
            .unwrap_err()
            .to_string();
        println!("final after {:.2?}: {line}", started.elapsed());
        for needle in needles.iter().chain([&cluster.addr(1)]) {
            assert!(line.contains(needle), "'{needle}' in {line}");
        }
    };

    // 403: node-1's policy grants no other mount.
    refused(
        "elsewhere",
        &intermediate_csr(),
        &["permission denied", "elsewhere/root/sign-intermediate"],
    );

    // 400: OpenBao refuses a CSR whose signature does not verify.
    let mut der = pem::parse(intermediate_csr())
        .expect("CSR PEM")
        .into_contents();
    let in_signature = der.len() - 5; // the signature is the CSR's last field
    der[in_signature] ^= 0xff;
    let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    refused("pki", &tampered, &["HTTP 400", "request signature invalid"]);
    assert_eq!(counting.connections(), 0, "no other address was asked");

    // The control: a client that starts at the counting address gets past it.
    let [first, ..] = nodes;
    let via = client(&cluster, &[&counting.addr, first], 1);
    rt.block_on(sign_new(&via, None))
        .expect("signing past a failing address");
    assert!(
        counting.connections() >= 1,
        "the counting address was tried first"
    );
}

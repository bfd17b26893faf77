//! The fleet of tests/fleet.rs (issue 18): three keyward agents, one per node of the
//! OpenBao raft cluster, each with its own state directory, socket, metrics port,
//! AppRole and intermediate key backend, whose `[ca.upstream]` has the cluster's PKI
//! sign intermediates that live a few minutes; and what the test reads of them: the
//! generations in each agent's journal and audit log, and their serials as OpenBao
//! names them. `traffic` has the clients that use the fleet meanwhile.
#![allow(dead_code)]

pub mod traffic;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::agent_common::{Agent, TRUST_DOMAIN, entry};
use crate::common::{required_env, softhsm_token};
use crate::metrics_common::with_metrics;
use crate::raft_common::RaftCluster;
use crate::upstream_common::journal;

/// The PKI mount the cluster's root lives in (scripts/openbao-raft.sh).
pub const MOUNT: &str = "pki";
/// Each intermediate's lifetime: a new generation every `ttl - rotate_before`.
pub const INTERMEDIATE_TTL: &str = "2m";
/// How long before an intermediate expires the next one is prepared (it takes over
/// half-way through this lead).
pub const ROTATE_BEFORE: Duration = Duration::from_secs(60);
/// The SVIDs' lifetime.
pub const SVID_TTL: &str = "30s";
/// How often the agents fetch the cluster's CRL.
pub const CRL_REFRESH: Duration = Duration::from_secs(5);
/// The Vault client's deadline for one operation: longer than a raft election.
pub const VAULT_CLIENT_TIMEOUT: &str = "60s";

/// Where an agent keeps its intermediates' keys.
#[derive(Clone, Copy, Debug)]
pub enum KeyStore {
    /// PKCS#8 files in the agent's directory.
    File,
    /// A SoftHSM token of its own, its PIN in a file.
    SoftHsm,
}

/// How an agent is told the cluster's nodes.
#[derive(Clone, Copy, Debug)]
pub enum Nodes {
    /// `VAULT_ADDR`, comma-separated.
    VaultAddr,
    /// `[vault] addresses` in its configuration (`VAULT_ADDR` unset).
    Config,
}

/// The subject of agent `n`'s intermediates, by which an operator finds them in the
/// cluster.
pub fn intermediate_subject(n: usize) -> String {
    format!("CN=keyward node-{n} intermediate")
}

/// One node's agent.
pub struct FleetAgent {
    /// Its number, as its raft node's and its AppRole's (`node-N`).
    pub n: usize,
    /// The agent process and its directory.
    pub agent: Agent,
    /// The SPIFFE ID of its one workload (the test process, uid 0).
    pub spiffe_id: String,
}

impl FleetAgent {
    /// Agent `n` (not started): intermediates in `keys`, the cluster's nodes listed as
    /// `nodes` starting at its own, AppRole `node-n`.
    pub fn new(cluster: &RaftCluster, n: usize, keys: KeyStore, nodes: Nodes) -> FleetAgent {
        let dir = TempDir::new().expect("tempdir");
        let key = match keys {
            KeyStore::File => format!("file:{}/keys/intermediate-{{n}}.pem", dir.path().display()),
            KeyStore::SoftHsm => {
                let module = required_env("KEYWARD_TEST_PKCS11_MODULE");
                let (token, pin) = softhsm_token(dir.path(), &format!("kw-fleet-{n}"));
                format!(
                    "pkcs11:token={token};object=intermediate-{{n}}?module-path={module}&pin-source=file:{}",
                    pin.display()
                )
            }
        };
        let mut agent = Agent::with_ca_key(dir, "", "");
        let own_first: Vec<&str> = (0..3).map(|i| cluster.addr((n - 1 + i) % 3 + 1)).collect();
        let vault = match nodes {
            Nodes::VaultAddr => {
                agent.env("VAULT_ADDR", &own_first.join(","));
                String::new()
            }
            Nodes::Config => {
                agent.env("VAULT_ADDR", "");
                let quoted: Vec<String> = own_first.iter().map(|a| format!("\"{a}\"")).collect();
                format!("[vault]\naddresses = [{}]\n\n", quoted.join(", "))
            }
        };
        let approle = cluster.dir.join(format!("approle/node-{n}"));
        for (name, value) in [
            (
                "VAULT_ROLE_ID_FILE",
                approle.join("role_id").display().to_string(),
            ),
            (
                "VAULT_SECRET_ID_FILE",
                approle.join("secret_id").display().to_string(),
            ),
            ("VAULT_CLIENT_TIMEOUT", VAULT_CLIENT_TIMEOUT.to_string()),
            // The dev server's token and address (with-backends.sh) are not this
            // cluster's: an empty value counts as unset.
            ("VAULT_TOKEN", String::new()),
            ("BAO_TOKEN", String::new()),
            ("BAO_ADDR", String::new()),
        ] {
            agent.env(name, &value);
        }
        let path = format!("node-{n}/api");
        let subject = intermediate_subject(n);
        let config = format!(
            "[agent]\nsocket = \"{}\"\nsocket_mode = \"0666\"\nstate_dir = \"{}\"\n\
             trust_domain = \"{TRUST_DOMAIN}\"\n\n\
             [ca.upstream]\nauthority = \"vault-pki:{MOUNT}\"\nkey = \"{key}\"\n\
             subject = \"{subject}\"\nttl = \"{INTERMEDIATE_TTL}\"\n\
             rotate_before = \"{}s\"\ncrl_refresh = \"{}s\"\n\n{vault}{}",
            agent.socket.display(),
            agent.state.display(),
            ROTATE_BEFORE.as_secs(),
            CRL_REFRESH.as_secs(),
            with_metrics(&entry(&path, 0, SVID_TTL, "")),
        );
        std::fs::write(&agent.config, config).expect("write the agent's configuration");
        FleetAgent {
            n,
            agent,
            spiffe_id: format!("spiffe://{TRUST_DOMAIN}/{path}"),
        }
    }

    /// The intermediates in its journal, oldest first.
    pub fn intermediates(&self) -> Vec<Intermediate> {
        journal(&self.agent)["generations"]
            .as_array()
            .map(|all| all.iter().map(Intermediate::from_journal).collect())
            .unwrap_or_default()
    }

    /// The number of its newest generation (0 before the first).
    pub fn newest(&self) -> u64 {
        journal(&self.agent)["last"].as_u64().unwrap_or(0)
    }

    /// When its next generation is due to be prepared: `rotate_before` ahead of the
    /// newest one's expiry, as the agent schedules it.
    pub fn next_prepare(&self) -> OffsetDateTime {
        let newest = self.intermediates().pop().expect("a first generation");
        newest.not_after - ROTATE_BEFORE
    }

    /// The generations its audit log records as prepared.
    pub fn audited_preparations(&self) -> Vec<u64> {
        let path = self.agent.state.join("audit.jsonl");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("an audit record"))
            .filter(|r| {
                r["event"] == "generation_prepared"
                    && r["fields"]["kind"] == "upstream_intermediate"
            })
            .map(|r| r["fields"]["generation"].as_u64().expect("the generation"))
            .collect()
    }

    /// Its log lines that say a preparation failed (a renewal retried).
    pub fn failed_preparations(&self) -> usize {
        self.agent
            .log()
            .lines()
            .filter(|l| l.contains("cannot prepare the next"))
            .count()
    }

    /// The directory its AppRole credentials are in.
    pub fn approle_dir(&self, cluster: &RaftCluster) -> PathBuf {
        cluster.dir.join(format!("approle/node-{}", self.n))
    }
}

/// One intermediate as an agent's journal records it.
#[derive(Clone, Debug)]
pub struct Intermediate {
    /// The generation number.
    pub n: u64,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Its notAfter.
    pub not_after: OffsetDateTime,
}

impl Intermediate {
    fn from_journal(entry: &Value) -> Intermediate {
        let pem = entry["detail"]["cert"].as_str().expect("detail.cert");
        let der = keyward_core::check::pem_to_ders(pem.as_bytes())
            .expect("a PEM certificate")
            .remove(0);
        let not_after = keyward_core::check::summarize(&der)
            .expect("a certificate")
            .not_after;
        Intermediate {
            n: entry["n"].as_u64().expect("n"),
            der,
            not_after,
        }
    }

    /// Whether `root` (DER) signed it.
    pub fn signed_by(&self, root: &[u8]) -> bool {
        let (_, cert) = X509Certificate::from_der(&self.der).expect("a certificate");
        let (_, root) = X509Certificate::from_der(root).expect("the root certificate");
        cert.issuer() == root.subject() && cert.verify_signature(Some(root.public_key())).is_ok()
    }

    /// Its serial number as OpenBao writes it (`pki/cert/SERIAL`, `pki/revoke`).
    pub fn vault_serial(&self) -> String {
        vault_serial(&self.der)
    }
}

/// The serial number of `der` as OpenBao writes it: lower-case hex pairs joined by `:`,
/// without leading zero bytes.
pub fn vault_serial(der: &[u8]) -> String {
    let (_, cert) = X509Certificate::from_der(der).expect("a certificate");
    let raw = cert.raw_serial();
    let start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len() - 1);
    let pairs: Vec<String> = raw[start..].iter().map(|b| format!("{b:02x}")).collect();
    pairs.join(":")
}

/// What an operator finds of a lost node's intermediates in the cluster: the
/// certificates it signed (`LIST pki/certs`, read through `via` with the root token)
/// whose subject is `subject` and that have not expired, as `(serial, DER)`.
pub fn unexpired_named(cluster: &RaftCluster, via: usize, subject: &str) -> Vec<(String, Vec<u8>)> {
    let listed = cluster.root_call(via, "LIST", &format!("{MOUNT}/certs"), None);
    assert_eq!(listed.status, 200, "{MOUNT}/certs: {}", listed.text());
    let now = OffsetDateTime::now_utc();
    let mut found = Vec::new();
    for key in listed.json()["data"]["keys"].as_array().expect("keys") {
        let serial = key.as_str().expect("a serial").replace('-', ":");
        let der = stored_certificate(cluster, via, &serial);
        let summary = keyward_core::check::summarize(&der).expect("a certificate");
        if summary.subject == subject && summary.not_after > now {
            found.push((serial, der));
        }
    }
    found
}

/// The certificate with `serial` as the cluster stores it (`pki/cert/SERIAL`, read
/// through `node`), DER.
pub fn stored_certificate(cluster: &RaftCluster, node: usize, serial: &str) -> Vec<u8> {
    let answer = cluster.call(node, "GET", &format!("{MOUNT}/cert/{serial}"), None, None);
    assert_eq!(
        answer.status,
        200,
        "{MOUNT}/cert/{serial}: {}",
        answer.text()
    );
    let pem = answer.json()["data"]["certificate"]
        .as_str()
        .expect("data.certificate")
        .to_string();
    keyward_core::check::pem_to_ders(pem.as_bytes())
        .expect("a PEM certificate")
        .remove(0)
}

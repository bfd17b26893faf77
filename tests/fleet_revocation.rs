//! Fleet revocation end to end, against the OpenBao dev server (scripts/with-backends.sh)
//! and real agents: two nodes whose intermediates one PKI mount signs. Revoking node
//! 2's intermediate there (`pki/revoke`) makes node 1 serve the upstream CRL in its
//! Workload API within a refresh, `keyward verify` refuse node 2's SVIDs naming the
//! serial, and a keyward-rustls server fed by node 1 refuse a client holding node 2's
//! SVID (accepted before). A CRL from the upstream that does not verify (another key
//! under the same name) or is older than the one kept is not served.

mod agent_common;
mod common;
mod metrics_common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_common::*;
use common::*;
use keyward_rustls::{AgentSource, Authorizer, client_config, server_config};
use tempfile::TempDir;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

/// How often the nodes fetch the upstream CRL.
const CRL_REFRESH: &str = "2s";
/// Generous bound for "within one refresh" (fetch, then the agent's 2 s CRL poll).
const WITHIN: Duration = Duration::from_secs(30);

/// A PKI mount of its own on the dev server (so revocations stay in this test), with a
/// root CA named `root_cn`; removed on drop.
struct Mount {
    name: String,
}

impl Mount {
    fn new(root_cn: &str) -> Mount {
        let name = unique("fleet");
        vault_api(
            "POST",
            &format!("sys/mounts/{name}"),
            Some(r#"{"type":"pki","config":{"max_lease_ttl":"87600h"}}"#),
        );
        let root = format!(
            r#"{{"common_name":"{root_cn}","key_type":"ec","key_bits":256,"ttl":"8760h"}}"#
        );
        vault_api(
            "POST",
            &format!("{name}/root/generate/internal"),
            Some(&root),
        );
        Mount { name }
    }

    fn authority(&self) -> String {
        format!("vault-pki:{}", self.name)
    }

    fn root_pem(&self) -> Vec<u8> {
        vault_api("GET", &format!("{}/ca/pem", self.name), None)
    }

    fn crl(&self) -> Vec<u8> {
        vault_api("GET", &format!("{}/crl", self.name), None)
    }

    /// Revokes the certificate with `serial` (`aa:bb:...`, as Vault writes serials).
    fn revoke(&self, serial: &str) {
        let body = format!(r#"{{"serial_number":"{serial}"}}"#);
        vault_api("POST", &format!("{}/revoke", self.name), Some(&body));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| {
            vault_api("DELETE", &format!("sys/mounts/{}", self.name), None)
        });
    }
}

/// A node: an agent whose intermediates `authority` signs, fetching its CRL every
/// [`CRL_REFRESH`]; `extra` is more TOML (workloads, `[vault]`, `[metrics]`).
fn node(authority: &str, extra: &str) -> Agent {
    let agent = Agent::with_ca_key(TempDir::new().expect("tempdir"), "unused", "");
    write_node_config(&agent, authority, extra);
    agent
}

fn write_node_config(agent: &Agent, authority: &str, extra: &str) {
    let text = format!(
        "[agent]\nsocket = \"{}\"\nsocket_mode = \"0666\"\nstate_dir = \"{}\"\n\
         trust_domain = \"{TRUST_DOMAIN}\"\n\n\
         [ca.upstream]\nauthority = \"{authority}\"\n\
         key = \"file:{}/keys/intermediate-{{n}}.pem\"\nttl = \"1h\"\nrotate_before = \"20m\"\n\
         crl_refresh = \"{CRL_REFRESH}\"\n\n{extra}\n",
        agent.socket.display(),
        agent.state.display(),
        agent.dir.path().display(),
    );
    std::fs::write(&agent.config, text).expect("write config");
}

/// The serial of a certificate as Vault writes it (`aa:bb:...`, no leading zero byte).
fn vault_serial(der: &[u8]) -> String {
    let (_, cert) = X509Certificate::from_der(der).expect("certificate");
    let s = cert.raw_serial_as_string();
    s.strip_prefix("00:").map(str::to_string).unwrap_or(s)
}

/// Whether the DER CRL `crl` lists the certificate `cert_der`.
fn lists(crl: &[u8], cert_der: &[u8]) -> bool {
    let (_, cert) = X509Certificate::from_der(cert_der).expect("certificate");
    let (_, crl) = CertificateRevocationList::from_der(crl).expect("CRL");
    crl.iter_revoked_certificates()
        .any(|r| r.raw_serial() == cert.raw_serial())
}

/// The CRLs in the agent's X509SVIDResponse.
async fn served_crls(agent: &Agent) -> Vec<Vec<u8>> {
    raw::fetch_x509(raw::channel(&agent.socket).await, true)
        .await
        .expect("FetchX509SVID")
        .crl
}

/// A TLS handshake in memory between `server` and `client`: `Err` names the side that
/// refused and why.
fn handshake(server: rustls::ServerConfig, client: rustls::ClientConfig) -> Result<(), String> {
    let name = rustls::pki_types::ServerName::try_from("peer.invalid").unwrap();
    let mut c =
        rustls::Connection::from(rustls::ClientConnection::new(Arc::new(client), name).unwrap());
    let mut s = rustls::Connection::from(rustls::ServerConnection::new(Arc::new(server)).unwrap());
    for _ in 0..10 {
        pump(&mut c, &mut s).map_err(|e| format!("server: {e}"))?;
        pump(&mut s, &mut c).map_err(|e| format!("client: {e}"))?;
        if !s.is_handshaking() && !c.is_handshaking() {
            return Ok(());
        }
    }
    Err("the handshake did not finish".into())
}

/// Carries what `from` has to send to `to`, which processes it.
fn pump(from: &mut rustls::Connection, to: &mut rustls::Connection) -> Result<(), rustls::Error> {
    let mut wire = Vec::new();
    from.write_tls(&mut wire).unwrap();
    let mut rd = &wire[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
        to.process_new_packets()?;
    }
    Ok(())
}

/// Waits (up to [`WITHIN`]) until `cond` holds.
async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WITHIN;
    while !cond().await {
        assert!(Instant::now() < deadline, "not within {WITHIN:?}: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_nodes_intermediate_upstream_makes_the_other_node_refuse_its_svids() {
    let mount = Mount::new("fleet test root");
    let mut node1 = node(&mount.authority(), &entry("server", 0, "1h", ""));
    let mut node2 = node(&mount.authority(), &entry("client", 0, "1h", ""));
    node1.start();
    node2.start();
    let source1 = AgentSource::connect(Some(&node1.endpoint()))
        .await
        .expect("node 1's Workload API");
    let source2 = AgentSource::connect(Some(&node2.endpoint()))
        .await
        .expect("node 2's Workload API");
    let node2_chain = source2.cell().load().chain().to_vec();
    let node2_intermediate = node2_chain[1].to_vec();
    let serial_hex = keyward_core::check::summarize(&node2_intermediate)
        .unwrap()
        .serial_hex;

    let tmp = TempDir::new().unwrap();
    let svid2 = tmp.path().join("node2-svid.pem");
    let ders: Vec<Vec<u8>> = node2_chain.iter().map(|c| c.to_vec()).collect();
    std::fs::write(&svid2, keyward_core::check::ders_to_pem(&ders)).unwrap();
    let root = tmp.path().join("root.pem");
    std::fs::write(&root, mount.root_pem()).unwrap();
    let (svid2, root) = (svid2.to_str().unwrap(), root.to_str().unwrap());
    let verify = ["verify", "--cert", svid2, "--ca", root];

    // Before: node 1's server accepts node 2's client; verify accepts its SVID.
    let server = || server_config(&source1, Authorizer::any()).unwrap();
    let client2 = || client_config(&source2, Authorizer::any()).unwrap();
    handshake(server(), client2()).expect("accepted before the revocation");
    keyward_ok(&node1.state, &verify);

    mount.revoke(&vault_serial(&node2_intermediate));
    eventually(
        "node 1 serves a CRL listing node 2's intermediate",
        async || {
            served_crls(&node1)
                .await
                .iter()
                .any(|c| lists(c, &node2_intermediate))
        },
    )
    .await;

    // The CRL itself, as openssl reads it: issued by the mount's root, listing the serial.
    let crl = served_crls(&node1)
        .await
        .into_iter()
        .find(|c| lists(c, &node2_intermediate))
        .unwrap();
    let crl_file = tmp.path().join("upstream.crl");
    std::fs::write(&crl_file, &crl).unwrap();
    let text = openssl(&[
        "crl",
        "-inform",
        "DER",
        "-in",
        crl_file.to_str().unwrap(),
        "-noout",
        "-text",
    ]);
    assert!(text.contains("fleet test root"), "{text}");
    assert!(
        text.contains(&format!("Serial Number: {serial_hex}")),
        "{text}"
    );

    // keyward verify, with node 1's state (its upstream CRL), and with --crl alone.
    let line = keyward_fails(&node1.state, &verify, "revoked");
    assert!(line.contains(&serial_hex), "{line}");
    let elsewhere = tmp.path().join("no-state");
    keyward_ok(&elsewhere, &verify);
    let crl_arg = crl_file.to_str().unwrap();
    let line = keyward_fails(
        &elsewhere,
        &["verify", "--cert", svid2, "--ca", root, "--crl", crl_arg],
        "revoked",
    );
    assert!(line.contains(&serial_hex), "{line}");

    // node 1's workload refuses node 2's client from the next handshake on, and still
    // accepts node 1's own SVIDs (the same CRLs, another intermediate of the same name).
    eventually("node 1's server refuses node 2's client", async || {
        handshake(server(), client2()).is_err()
    })
    .await;
    let refused = handshake(server(), client2()).unwrap_err();
    assert!(
        refused.starts_with("server:") && refused.contains("Revoked"),
        "{refused}"
    );
    let client1 = client_config(&source1, Authorizer::any()).unwrap();
    handshake(server(), client1).expect("node 1's own SVID is still accepted");
    assert!(!source1.cell().crls().is_empty());
}

/// An HTTP server standing in for the upstream: it answers `GET /v1/MOUNT/crl` with
/// the CRL the test sets, and everything else with 503.
struct FakeUpstream {
    addr: String,
    crl: Arc<Mutex<Vec<u8>>>,
    crl_answers: Arc<AtomicUsize>,
}

impl FakeUpstream {
    fn start(mount: &str, crl: Vec<u8>) -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let crl = Arc::new(Mutex::new(crl));
        let crl_answers = Arc::new(AtomicUsize::new(0));
        let (served, answers) = (crl.clone(), crl_answers.clone());
        let crl_path = format!("GET /v1/{mount}/crl ");
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let (status, body) = if head.starts_with(crl_path.as_bytes()) {
                    answers.fetch_add(1, Ordering::SeqCst);
                    ("200 OK", served.lock().unwrap().clone())
                } else {
                    let e = br#"{"errors":["the fake upstream only answers the CRL"]}"#;
                    ("503 Service Unavailable", e.to_vec())
                };
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                );
                let _ = conn.write_all(&body);
            }
        });
        FakeUpstream {
            addr,
            crl,
            crl_answers,
        }
    }

    /// Serves `crl` from now on and waits until the agent has fetched it twice.
    fn serve_and_wait(&self, crl: Vec<u8>) {
        *self.crl.lock().unwrap() = crl;
        let seen = self.crl_answers.load(Ordering::SeqCst);
        wait_for("two fetches of the fake upstream's CRL", WITHIN, || {
            self.crl_answers.load(Ordering::SeqCst) >= seen + 2
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_that_does_not_verify_or_is_older_is_not_served_and_the_kept_one_stays() {
    let mount = Mount::new("fleet test root");
    // Another root under the very same name: its CRL names our root as its issuer but
    // is signed by another key.
    let impostor = Mount::new("fleet test root");
    let older = mount.crl();
    vault_api("GET", &format!("{}/crl/rotate", mount.name), None);
    let mut node = node(&mount.authority(), &entry("server", 0, "1h", ""));
    node.start();
    let kept_path = node.state.join("agent/upstream-crl.der");
    wait_for("the upstream CRL stored", WITHIN, || {
        std::fs::read(&kept_path).is_ok_and(|k| k == mount.crl())
    });
    let kept = std::fs::read(&kept_path).unwrap();
    assert_ne!(kept, older, "the rotated CRL is a new one");
    node.stop();

    // Restarted against an upstream that answers only bad CRLs: the kept CRL is served
    // at once, and stays.
    let fake = FakeUpstream::start(&mount.name, impostor.crl());
    let extra = format!(
        "[vault]\naddresses = [\"{}\"]\n\n{}",
        fake.addr,
        metrics_common::with_metrics(&entry("server", 0, "1h", ""))
    );
    write_node_config(&node, &mount.authority(), &extra);
    node.start();
    assert_eq!(served_crls(&node).await, vec![kept.clone()]);
    fake.serve_and_wait(older);
    assert_eq!(served_crls(&node).await, vec![kept.clone()]);
    fake.serve_and_wait(impostor.crl());
    // SIGHUP fetches at once too (the reload reads the same configuration).
    let before = fake.crl_answers.load(Ordering::SeqCst);
    node.signal("HUP");
    wait_for("a fetch after SIGHUP", WITHIN, || {
        fake.crl_answers.load(Ordering::SeqCst) > before
    });
    assert_eq!(served_crls(&node).await, vec![kept.clone()]);
    assert_eq!(std::fs::read(&kept_path).unwrap(), kept);

    let log = metrics_common::plain(&node.log());
    assert!(log.contains("older CRL"), "{log}");
    assert!(
        log.contains("does not verify under the key of its issuer 'CN=fleet test root'"),
        "{log}"
    );
    let metrics = metrics_common::get(metrics_common::metrics_addr(&node.log()), "/metrics");
    let down = format!(
        "keyward_backend_up{{backend=\"vault-pki:{} CRL\"}} 0",
        mount.name
    );
    assert!(metrics.body.contains(&down), "{}", metrics.body);
}

//! Helpers for agents whose intermediates Vault/OpenBao PKI signs (`[ca.upstream]`):
//! their configuration, their journal, fetching and verifying SVIDs against the
//! OpenBao root, and an upstream that answers `sign-intermediate` wrongly (a proxy in
//! front of the real OpenBao that forwards everything else).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use spiffe::{TrustDomain, WorkloadApiClient};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::agent_common::{Agent, TRUST_DOMAIN, entry};
use crate::metrics_common::with_metrics;

/// An agent (not started) whose `[ca.upstream]` is `authority`, each intermediate
/// living `ttl` with `rotate_before`, one workload for root with SVIDs of `svid_ttl`,
/// metrics on a port the system picks.
pub fn upstream_agent(authority: &str, ttl: &str, rotate_before: &str, svid_ttl: &str) -> Agent {
    let agent = Agent::with_ca_key(TempDir::new().unwrap(), "", "");
    write_config(&agent, authority, ttl, rotate_before, svid_ttl);
    agent
}

/// Rewrites `agent`'s configuration (see [`upstream_agent`]).
pub fn write_config(
    agent: &Agent,
    authority: &str,
    ttl: &str,
    rotate_before: &str,
    svid_ttl: &str,
) {
    let text = format!(
        "[agent]\nsocket = \"{}\"\nstate_dir = \"{}\"\ntrust_domain = \"{TRUST_DOMAIN}\"\n\n\
         [ca.upstream]\nauthority = \"{authority}\"\nkey = \"file:{}/keys/intermediate-{{n}}.pem\"\n\
         ttl = \"{ttl}\"\nrotate_before = \"{rotate_before}\"\n\n{}",
        agent.socket.display(),
        agent.state.display(),
        agent.dir.path().display(),
        with_metrics(&entry("api", 0, svid_ttl, "")),
    );
    std::fs::write(&agent.config, text).unwrap();
}

/// The `upstream_intermediate` section of the agent's journal (`Null` when none).
pub fn journal(agent: &Agent) -> serde_json::Value {
    std::fs::read(agent.state.join("agent/generations.json"))
        .ok()
        .map(|d| serde_json::from_slice::<serde_json::Value>(&d).unwrap())
        .map_or(serde_json::Value::Null, |v| {
            v["kinds"]["upstream_intermediate"].clone()
        })
}

/// The generation numbers in the journal, oldest first.
pub fn generations(agent: &Agent) -> Vec<u64> {
    journal(agent)["generations"]
        .as_array()
        .map(|a| a.iter().map(|g| g["n"].as_u64().unwrap()).collect())
        .unwrap_or_default()
}

/// The key file of generation `n`.
pub fn key_file(agent: &Agent, n: u64) -> std::path::PathBuf {
    agent.dir.path().join(format!("keys/intermediate-{n}.pem"))
}

/// The root certificate (DER) of the PKI mount `mount` of the OpenBao at `addr`.
pub fn bao_root(addr: &str, mount: &str) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sf", "-m", "10"])
        .arg(format!("{addr}/v1/{mount}/ca/pem"))
        .output()
        .expect("curl");
    assert!(out.status.success(), "GET {mount}/ca/pem: {out:?}");
    keyward_core::check::pem_to_ders(&out.stdout)
        .unwrap()
        .remove(0)
}

/// A call to the OpenBao API at `addr` with the root token; panics on failure.
pub fn bao_call(addr: &str, method: &str, path: &str, body: Option<&str>) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-sf", "-m", "10", "-X", method, "-H", "X-Vault-Token: root"]);
    if let Some(b) = body {
        cmd.args(["-d", b]);
    }
    let out = cmd.arg(format!("{addr}/v1/{path}")).output().expect("curl");
    assert!(out.status.success(), "{method} {path}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// One FetchX509SVID from the agent: the SVID's chain (leaf first) and the bundle.
pub async fn fetch(agent: &Agent) -> Result<(Vec<Vec<u8>>, Vec<Vec<u8>>), String> {
    let c = WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let ctx = c
        .fetch_x509_context()
        .await
        .map_err(|e| format!("fetch: {e}"))?;
    let svid = ctx.default_svid().ok_or("no SVID")?;
    let chain = svid
        .cert_chain()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    let td = TrustDomain::new(TRUST_DOMAIN).unwrap();
    let bundle = ctx
        .bundle_set()
        .get(&td)
        .ok_or("no bundle")?
        .authorities()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    Ok((chain, bundle))
}

/// Fetches and checks that the SVID chains to `root` alone and to the bundle served;
/// returns the chain.
pub async fn fetch_verified(agent: &Agent, root: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let (chain, bundle) = fetch(agent).await?;
    let now = time::OffsetDateTime::now_utc();
    for anchors in [vec![root.to_vec()], bundle] {
        keyward_core::check::verify_chain(&chain[0], &chain[1..], &anchors, now)
            .map_err(|e| format!("the SVID does not verify: {e}"))?;
    }
    Ok(chain)
}

/// `openssl verify` of `chain` (leaf first) against `root` alone, in `dir`, as of now.
pub fn openssl_verify(dir: &Path, chain: &[Vec<u8>], root: &[u8]) {
    openssl_verify_at(dir, chain, root, time::OffsetDateTime::now_utc());
}

/// `openssl verify` of `chain` (leaf first) against `root` alone, in `dir`, as of `at`.
pub fn openssl_verify_at(dir: &Path, chain: &[Vec<u8>], root: &[u8], at: time::OffsetDateTime) {
    let pem = |ders: &[Vec<u8>]| keyward_core::check::ders_to_pem(ders);
    std::fs::write(dir.join("leaf.pem"), pem(&chain[..1])).unwrap();
    std::fs::write(dir.join("untrusted.pem"), pem(&chain[1..])).unwrap();
    std::fs::write(dir.join("root.pem"), pem(&[root.to_vec()])).unwrap();
    crate::common::openssl(&[
        "verify",
        "-x509_strict",
        "-attime",
        &at.unix_timestamp().to_string(),
        "-CAfile",
        dir.join("root.pem").to_str().unwrap(),
        "-untrusted",
        dir.join("untrusted.pem").to_str().unwrap(),
        dir.join("leaf.pem").to_str().unwrap(),
    ]);
}

/// How the tampering upstream answers `sign-intermediate`.
#[derive(Clone, Copy, Debug)]
pub enum Tamper {
    /// A real certificate from OpenBao, for another key than the CSR's.
    OtherKey,
    /// A CA certificate for the CSR's key, signed by a CA nobody trusts, with OpenBao's
    /// root as its chain.
    ForeignSigner,
}

/// A proxy in front of a real OpenBao that forwards every request but
/// `sign-intermediate`, which it answers as [`Tamper`] says.
pub struct TamperingUpstream {
    /// Its base URL.
    pub addr: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TamperingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TamperingUpstream {
    /// Starts the proxy in front of the OpenBao at `real` (`http://127.0.0.1:PORT`).
    pub async fn start(real: &str, tamper: Tamper) -> TamperingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let real = real.trim_start_matches("http://").to_string();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let real = real.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(conn, &real, tamper).await {
                        eprintln!("tampering upstream: {e}");
                    }
                });
            }
        });
        TamperingUpstream { addr, task }
    }
}

/// One request head (request line and headers, without the blank line) and body.
async fn read_request(conn: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let end = loop {
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other("closed before the request ended"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut body = buf[end + 4..].to_vec();
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.trim().parse::<usize>().unwrap());
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok((head, body))
}

/// Sends `head` (its Content-Length and Connection replaced) with `body` to `real` and
/// returns the whole raw response.
async fn forward(real: &str, head: &str, body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut lines: Vec<String> = head
        .split("\r\n")
        .filter(|l| {
            let name = l
                .split(':')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            name != "connection" && name != "content-length"
        })
        .map(str::to_string)
        .collect();
    lines.push(format!("Content-Length: {}", body.len()));
    lines.push("Connection: close".into());
    let mut out = TcpStream::connect(real).await?;
    out.write_all(format!("{}\r\n\r\n", lines.join("\r\n")).as_bytes())
        .await?;
    out.write_all(body).await?;
    let mut response = Vec::new();
    out.read_to_end(&mut response).await?;
    Ok(response)
}

/// A 200 JSON answer.
fn json_response(value: &serde_json::Value) -> Vec<u8> {
    let body = value.to_string();
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn handle(mut conn: TcpStream, real: &str, tamper: Tamper) -> std::io::Result<()> {
    let (head, body) = read_request(&mut conn).await?;
    let path = head.split(' ').nth(1).unwrap_or("").to_string();
    let response = if path.ends_with("/root/sign-intermediate") {
        let mut request: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let csr = request["csr"].as_str().unwrap().to_string();
        match tamper {
            Tamper::OtherKey => {
                let other = rcgen::KeyPair::generate().unwrap();
                let params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
                request["csr"] = params
                    .serialize_request(&other)
                    .unwrap()
                    .pem()
                    .unwrap()
                    .into();
                forward(real, &head, request.to_string().as_bytes()).await?
            }
            Tamper::ForeignSigner => {
                let mount = path
                    .trim_start_matches("/v1/")
                    .trim_end_matches("/root/sign-intermediate");
                let root_head = format!("GET /v1/{mount}/ca/pem HTTP/1.1\r\nHost: {real}");
                let raw = forward(real, &root_head, b"").await?;
                let text = String::from_utf8_lossy(&raw);
                let root_pem = &text[text.find("-----BEGIN").unwrap()..];
                json_response(&serde_json::json!({ "data": {
                    "certificate": foreign_ca_for(&csr),
                    "issuing_ca": root_pem,
                    "ca_chain": [root_pem],
                }}))
            }
        }
    } else {
        forward(real, &head, &body).await?
    };
    conn.write_all(&response).await?;
    conn.shutdown().await
}

/// A CA certificate for the key of `csr_pem`, signed by a fresh CA.
fn foreign_ca_for(csr_pem: &str) -> String {
    let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
    csr.params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    csr.params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "nobody trusts this CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = rcgen::Issuer::new(params, key);
    csr.signed_by(&issuer).unwrap().pem()
}

/// Polls `cond` every 200 ms until it holds; panics with `what` after `timeout`.
pub async fn eventually(what: &str, timeout: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

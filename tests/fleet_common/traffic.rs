//! What uses the fleet while the test takes the cluster's leader down: SVIDs fetched
//! from every agent without pause ([`Fetcher`]: one-shot fetches on new connections and
//! a long-lived stream, every answer checked to chain to the cluster's root), and
//! mutual TLS between workloads of different agents over real TCP connections
//! through keyward-rustls ([`TlsServer`], [`Handshakes`], [`exchange`]). Every outcome
//! is counted in a [`Tally`], failures with their reason.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use keyward_rustls::{CredentialCell, Credentials};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection, StreamOwned};
use spiffe::{TrustDomain, WorkloadApiClient, X509Context};
use tokio::runtime::Handle;
use tokio_stream::StreamExt;

use crate::agent_common::TRUST_DOMAIN;

/// The pause between two fetches, and between two handshakes, of one client.
const PACE: Duration = Duration::from_millis(200);
/// How long one TLS exchange may block on its socket.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How many failure reasons a tally keeps.
const KEPT_ERRORS: usize = 20;

/// Counts of successes and failures, and the first failures' reasons.
#[derive(Default)]
pub struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    /// Counts `outcome`.
    pub fn record(&self, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::SeqCst);
                let mut errors = self.errors.lock().unwrap();
                if errors.len() < KEPT_ERRORS {
                    errors.push(e);
                }
            }
        }
    }

    /// How many succeeded.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    /// How many failed.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    /// The first failures' reasons.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

/// Checks one answer of an agent: its default SVID is `spiffe_id`, chains to `root`
/// now, and its bundle holds `root`. Returns the intermediate it chains through.
fn check(ctx: &X509Context, spiffe_id: &str, root: &[u8]) -> Result<Vec<u8>, String> {
    let svid = ctx.default_svid().ok_or("no SVID")?;
    if svid.spiffe_id().to_string() != spiffe_id {
        return Err(format!("SVID for {}, not {spiffe_id}", svid.spiffe_id()));
    }
    let chain: Vec<Vec<u8>> = svid
        .cert_chain()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    let now = time::OffsetDateTime::now_utc();
    keyward_core::check::verify_chain(&chain[0], &chain[1..], &[root.to_vec()], now)
        .map_err(|e| format!("the SVID does not chain to the cluster's root: {e}"))?;
    let td = TrustDomain::new(TRUST_DOMAIN).unwrap();
    let bundle = ctx.bundle_set().get(&td).ok_or("no bundle")?;
    if !bundle.authorities().iter().any(|c| c.as_bytes() == root) {
        return Err("the bundle lacks the cluster's root".into());
    }
    chain
        .get(1)
        .cloned()
        .ok_or_else(|| "no intermediate in the chain".into())
}

/// SVIDs fetched from one agent until stopped: a fetch on a new connection every
/// [`PACE`], and one stream kept open (its end counts as a failure; it is opened
/// again). Every answer is checked ([`check`]).
pub struct Fetcher {
    /// Fetches and stream messages, and their failures.
    pub tally: Arc<Tally>,
    intermediates: Arc<Mutex<BTreeSet<Vec<u8>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fetcher {
    /// Starts fetching from the agent at `endpoint` (`unix:///path`) on `rt`.
    pub fn start(rt: &Handle, endpoint: &str, spiffe_id: &str, root: &[u8]) -> Fetcher {
        let tally = Arc::new(Tally::default());
        let intermediates = Arc::new(Mutex::new(BTreeSet::new()));
        let take = {
            let (tally, intermediates) = (tally.clone(), intermediates.clone());
            let (spiffe_id, root) = (spiffe_id.to_string(), root.to_vec());
            move |ctx: Result<X509Context, String>| {
                let checked = ctx.and_then(|c| check(&c, &spiffe_id, &root));
                tally.record(checked.map(|i| {
                    intermediates.lock().unwrap().insert(i);
                }));
            }
        };
        let once = {
            let (endpoint, take) = (endpoint.to_string(), take.clone());
            async move {
                loop {
                    take(fetch_once(&endpoint).await);
                    tokio::time::sleep(PACE).await;
                }
            }
        };
        let streamed = {
            let endpoint = endpoint.to_string();
            async move {
                loop {
                    match open_stream(&endpoint).await {
                        Ok(mut stream) => {
                            while let Some(ctx) = stream.next().await {
                                take(ctx.map_err(|e| format!("stream: {e}")));
                            }
                            take(Err("the stream ended".into()));
                        }
                        Err(e) => take(Err(e)),
                    }
                    tokio::time::sleep(PACE).await;
                }
            }
        };
        Fetcher {
            tally,
            intermediates,
            tasks: vec![rt.spawn(once), rt.spawn(streamed)],
        }
    }

    /// Whether an SVID chaining through `intermediate` (DER) was served.
    pub fn served(&self, intermediate: &[u8]) -> bool {
        self.intermediates.lock().unwrap().contains(intermediate)
    }

    /// Stops fetching.
    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn connect(endpoint: &str) -> Result<WorkloadApiClient, String> {
    WorkloadApiClient::connect_to(endpoint)
        .await
        .map_err(|e| format!("connect: {e}"))
}

async fn fetch_once(endpoint: &str) -> Result<X509Context, String> {
    let answer = connect(endpoint).await?.fetch_x509_context().await;
    answer.map_err(|e| format!("fetch: {e}"))
}

async fn open_stream(
    endpoint: &str,
) -> Result<impl tokio_stream::Stream<Item = Result<X509Context, spiffe::WorkloadApiError>>, String>
{
    let stream = connect(endpoint).await?.stream_x509_contexts().await;
    stream.map_err(|e| format!("stream: {e}"))
}

/// The SVID the agent at `endpoint` serves now, with its key and bundle, in a cell of
/// its own: a workload holding that SVID, which no later rotation changes.
pub async fn held_svid(endpoint: &str) -> CredentialCell {
    let ctx = fetch_once(endpoint).await.expect("an SVID");
    let svid = ctx.default_svid().expect("an SVID").clone();
    let td = TrustDomain::new(TRUST_DOMAIN).unwrap();
    let chain = svid
        .cert_chain()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        svid.private_key().as_bytes().to_vec(),
    ));
    let bundle = ctx
        .bundle_set()
        .get(&td)
        .expect("a bundle")
        .authorities()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
        .collect();
    CredentialCell::new(Credentials::new(chain, key, bundle).expect("usable credentials"))
}

/// A TLS server on loopback that answers `pong` to a client's `ping` after the
/// handshake its configuration verifies; one connection at a time, until dropped.
pub struct TlsServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its side of every connection (the reasons it refused clients).
    pub tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TlsServer {
    /// Starts serving with `config`.
    pub fn start(config: ServerConfig) -> TlsServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let (tally, stop) = (Arc::new(Tally::default()), Arc::new(AtomicBool::new(false)));
        let config = Arc::new(config);
        let thread = {
            let (tally, stop) = (tally.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let served = conn
                        .map_err(|e| format!("accept: {e}"))
                        .and_then(|c| answer(c, config.clone()));
                    tally.record(served);
                }
            })
        };
        TlsServer {
            addr,
            tally,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection of [`TlsServer`].
fn answer(tcp: TcpStream, config: Arc<ServerConfig>) -> Result<(), String> {
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let conn = ServerConnection::new(config).map_err(|e| e.to_string())?;
    let mut tls = StreamOwned::new(conn, tcp);
    let mut ping = [0u8; 4];
    tls.read_exact(&mut ping)
        .map_err(|e| format!("server: {e}"))?;
    if &ping != b"ping" {
        return Err(format!("server: the client sent {ping:?}"));
    }
    tls.write_all(b"pong").map_err(|e| format!("server: {e}"))?;
    tls.conn.send_close_notify();
    tls.flush().map_err(|e| format!("server: {e}"))
}

/// One mutual-TLS exchange with the server at `addr`: a new TCP connection, the
/// handshake, `ping` sent and `pong` read back (in TLS 1.3 a server's refusal of the
/// client's certificate arrives as an alert only then).
pub fn exchange(config: &Arc<ClientConfig>, addr: SocketAddr) -> Result<(), String> {
    let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let name = ServerName::try_from("peer.invalid").unwrap();
    let conn = ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
    let mut tls = StreamOwned::new(conn, tcp);
    tls.write_all(b"ping").map_err(|e| format!("client: {e}"))?;
    let mut pong = [0u8; 4];
    tls.read_exact(&mut pong)
        .map_err(|e| format!("client: {e}"))?;
    if &pong != b"pong" {
        return Err(format!("client: the server sent {pong:?}"));
    }
    Ok(())
}

/// A client making [`exchange`]s with one server, one every [`PACE`], until stopped.
pub struct Handshakes {
    /// The exchanges and their failures.
    pub tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Handshakes {
    /// Starts the exchanges with `config` against the server at `addr`.
    pub fn start(config: ClientConfig, addr: SocketAddr) -> Handshakes {
        let (tally, stop) = (Arc::new(Tally::default()), Arc::new(AtomicBool::new(false)));
        let config = Arc::new(config);
        let thread = {
            let (tally, stop) = (tally.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    tally.record(exchange(&config, addr));
                    std::thread::sleep(PACE);
                }
            })
        };
        Handshakes {
            tally,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops after the exchange under way.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Handshakes {
    fn drop(&mut self) {
        self.stop();
    }
}

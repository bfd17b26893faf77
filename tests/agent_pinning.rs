//! End-to-end: connection pinning (issue 16, attack 4). A local user (uid 65534) opens
//! as many connections as `max_connections` allows, each sending only the HEADERS of
//! a FetchX509SVID call and answering pings. Its connections past the per-uid cap are
//! closed at once, its held calls end after the request deadline (and the idle timeout
//! then closes their connections), it receives no key bytes, and root, another uid, is
//! served meanwhile.

mod agent_common;
mod common;
mod metrics_common;
mod relay_common;

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use agent_common::*;
use metrics_common::{metrics_addr, scrape, with_metrics};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tonic::codegen::http;

/// `[agent] max_connections` in the test; the per-uid cap is its default quarter.
const MAX_CONNECTIONS: usize = 8;
/// The default `max_connections_per_uid` for [`MAX_CONNECTIONS`].
const PER_UID: usize = MAX_CONNECTIONS / 4;
/// `[agent] idle_timeout` in the test.
const IDLE: Duration = Duration::from_secs(3);

/// The relay's pipes as one connection, keeping every byte the agent sent and telling
/// `settled` once the agent has answered or closed.
struct Recorded {
    from_agent: ChildStdout,
    to_agent: ChildStdin,
    received: Arc<Mutex<Vec<u8>>>,
    settled: Option<mpsc::UnboundedSender<()>>,
}

impl AsyncRead for Recorded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.from_agent).poll_read(cx, buf);
        if read.is_ready() {
            let got = &buf.filled()[before..];
            this.received.lock().unwrap().extend_from_slice(got);
            if let Some(tx) = this.settled.take() {
                let _ = tx.send(());
            }
        }
        read
    }
}

impl AsyncWrite for Recorded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().to_agent).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().to_agent).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().to_agent).poll_shutdown(cx)
    }
}

/// What happened to one pinning connection, timed from its start.
struct Pinned {
    /// The call's `grpc-status` and the number of response DATA bytes, or why the
    /// call failed without an answer.
    call: Result<(Option<String>, usize), String>,
    /// When the call ended.
    call_ended: Duration,
    /// When the agent closed the connection.
    closed: Duration,
    /// Every byte the agent sent on the connection.
    received: Vec<u8>,
}

impl std::fmt::Debug for Pinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pinned")
            .field("call", &self.call)
            .field("call_ended", &self.call_ended)
            .field("closed", &self.closed)
            .field("received_bytes", &self.received.len())
            .finish()
    }
}

/// Opens a connection as uid 65534 and sends the HEADERS of a FetchX509SVID call,
/// never its body, answering the agent's pings until the agent closes the connection.
async fn pin(socket: PathBuf, settled: mpsc::UnboundedSender<()>) -> Pinned {
    let start = Instant::now();
    let mut relay = relay_common::perl_as(NOBODY, Path::new("/usr/bin/perl"), &socket, &["stay"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the relay as uid 65534");
    let received = Arc::new(Mutex::new(Vec::new()));
    let io = Recorded {
        from_agent: relay.stdout.take().expect("relay stdout"),
        to_agent: relay.stdin.take().expect("relay stdin"),
        received: received.clone(),
        settled: Some(settled),
    };
    let (client, connection) = h2::client::handshake(io).await.expect("HTTP/2 preface");
    let connection = tokio::spawn(async move {
        let _ = connection.await;
        start.elapsed()
    });
    // `client` stays alive until the agent closes: the h2 client would otherwise end
    // the connection itself once its last handle is gone.
    let call = headers_only_call(client.clone()).await;
    let call_ended = start.elapsed();
    let closed = tokio::time::timeout(Duration::from_secs(30), connection)
        .await
        .expect("the agent closes the connection within 30 s")
        .expect("connection task");
    drop(client);
    let received = received.lock().unwrap().clone();
    Pinned {
        call,
        call_ended,
        closed,
        received,
    }
}

/// Sends the HEADERS of a FetchX509SVID call without END_STREAM and waits for the answer.
async fn headers_only_call(
    client: h2::client::SendRequest<prost::bytes::Bytes>,
) -> Result<(Option<String>, usize), String> {
    let mut client = client.ready().await.map_err(|e| e.to_string())?;
    let request = http::Request::post("http://agent/SpiffeWorkloadAPI/FetchX509SVID")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("workload.spiffe.io", "true")
        .body(())
        .expect("request");
    let (response, _body_never_sent) = client
        .send_request(request, false)
        .map_err(|e| e.to_string())?;
    let response = response.await.map_err(|e| e.to_string())?;
    let grpc_status = |h: &http::HeaderMap| {
        h.get("grpc-status")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let mut status = grpc_status(response.headers());
    let mut body = response.into_body();
    let mut data = 0;
    while let Some(chunk) = body.data().await {
        data += chunk.map_err(|e| e.to_string())?.len();
    }
    if let Some(trailers) = body.trailers().await.map_err(|e| e.to_string())? {
        status = status.or(grpc_status(&trailers));
    }
    Ok((status, data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_uid_holding_every_connection_it_may_does_not_keep_root_from_its_svid() {
    let mut agent = Agent::new(&with_metrics(&entry("legit", 0, "1h", "")));
    let config = std::fs::read_to_string(&agent.config).expect("config");
    let limits = format!(
        "max_connections = {MAX_CONNECTIONS}\nidle_timeout = \"{}s\"\n",
        IDLE.as_secs()
    );
    let config = config.replacen("\n[ca]", &format!("{limits}\n[ca]"), 1);
    std::fs::write(&agent.config, config).expect("config");
    agent.start();
    let addr = metrics_addr(&agent.log());

    // The attacker opens as many connections as the agent allows in all.
    let (settled_tx, mut settled) = mpsc::unbounded_channel();
    let attackers: Vec<_> = (0..MAX_CONNECTIONS)
        .map(|_| tokio::spawn(pin(agent.socket.clone(), settled_tx.clone())))
        .collect();
    for _ in 0..MAX_CONNECTIONS {
        tokio::time::timeout(Duration::from_secs(10), settled.recv())
            .await
            .expect("every attacker connection is answered or closed within 10 s");
    }

    // Root is served while the attacker holds all it may.
    let start = Instant::now();
    let served = tokio::time::timeout(Duration::from_secs(2), async {
        raw::fetch_x509(raw::channel(&agent.socket).await, true).await
    })
    .await;
    let took = start.elapsed();
    eprintln!("root's fetch with the attacker's connections open took {took:?}");
    let svid = served
        .expect("root is served within 2 s")
        .expect("root receives its SVID");
    assert_eq!(svid.svids[0].spiffe_id, "spiffe://example.org/legit");
    let key = &svid.svids[0].x509_svid_key;

    let mut pinned = Vec::new();
    for a in attackers {
        pinned.push(a.await.expect("attacker task"));
    }
    eprintln!("attacker connections: {pinned:#?}");
    let (held, refused): (Vec<_>, Vec<_>) = pinned.iter().partition(|p| !p.received.is_empty());
    assert_eq!(
        held.len(),
        PER_UID,
        "connections the agent served: {pinned:#?}"
    );
    for p in &refused {
        assert!(
            p.closed < Duration::from_secs(2),
            "a connection past the cap was not closed at once: {p:#?}"
        );
    }
    for p in &held {
        assert_eq!(
            p.call,
            Ok((Some("4".to_string()), 0)),
            "a held call ends with DEADLINE_EXCEEDED and no message: {p:#?}"
        );
        assert!(
            p.call_ended > Duration::from_secs(1) && p.call_ended < Duration::from_secs(10),
            "a held call ends at its deadline (2 s): {p:#?}"
        );
        assert!(
            p.closed < p.call_ended + IDLE + Duration::from_secs(5),
            "the idle timeout closes a connection after its call ended: {p:#?}"
        );
    }
    for p in &pinned {
        assert!(
            !p.received.windows(key.len()).any(|w| w == key.as_slice()),
            "the attacker received root's key"
        );
    }

    let m = scrape(addr);
    let denied = |reason| {
        m.value("keyward_workload_api_denied_total", &[("reason", reason)])
            .unwrap_or(0.0)
    };
    assert_eq!(
        denied("too_many_connections_uid"),
        (MAX_CONNECTIONS - PER_UID) as f64
    );
    assert_eq!(denied("request_timeout"), PER_UID as f64);
    agent.stop();
}

//! Several addresses against fake nodes in front of the shared OpenBao server: a
//! standby's redirect is followed only to a configured node, never to another host (the
//! token would go there), and a refused connection moves the request on. The raft
//! cluster's failover itself is tests/vault_cluster.rs at the workspace root.
#![forbid(unsafe_code)]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keyward_vault::{VaultAuth, VaultClient, VaultSettings};
use zeroize::Zeroizing;

/// A fake node on loopback that counts its connections and answers each request with
/// `reply` (or closes it unanswered when `reply` is empty).
struct FakeNode {
    addr: String,
    connections: Arc<AtomicUsize>,
}

impl FakeNode {
    fn start(reply: impl Fn() -> String + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let _ = stream.write_all(reply().as_bytes());
            }
        });
        FakeNode { addr, connections }
    }

    /// A node that closes every connection without an answer.
    fn closing() -> Self {
        Self::start(String::new)
    }

    /// A standby that redirects every request to `to` + the request's API path
    /// (`lookup-self`, the one request these tests make).
    fn redirecting_to(to: &str) -> Self {
        let location = format!("{to}/v1/auth/token/lookup-self");
        Self::start(move || {
            format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
        })
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A client for `nodes` in this order with the shared server's root token.
fn client(nodes: &[&str], deadline: Duration) -> VaultClient {
    let token = VaultAuth::Token(Zeroizing::new(common::root_token()));
    let mut settings = VaultSettings::new(nodes[0], token).unwrap();
    settings.set_addresses(nodes).unwrap();
    settings.request_deadline = deadline;
    VaultClient::new(&settings).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_an_unlisted_host_is_not_followed() {
    let elsewhere = FakeNode::closing();
    let standby = FakeNode::redirecting_to(&elsewhere.addr);
    let shared = common::addr();

    // The request moves on to the next configured node instead.
    let c = client(&[&standby.addr, &shared], Duration::from_secs(5));
    c.check().await.unwrap();
    assert_eq!(c.address(), shared, "the configured node answered");

    // Alone, the standby's redirect is an error naming where it pointed.
    let alone = client(&[&standby.addr], Duration::from_millis(500));
    let line = alone.check().await.unwrap_err().to_string();
    assert!(
        line.contains("307") && line.contains(&elsewhere.addr) && line.contains("not a configured"),
        "{line}"
    );
    assert!(standby.connections() >= 2, "the standby was asked");
    assert_eq!(elsewhere.connections(), 0, "the unlisted host never was");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_a_configured_node_goes_there_next() {
    let shared = common::addr();
    let standby = FakeNode::redirecting_to(&shared);
    let skipped = FakeNode::closing();
    // In list order `skipped` would come next; the redirect names the shared server.
    let c = client(
        &[&standby.addr, &skipped.addr, &shared],
        Duration::from_secs(5),
    );
    c.check().await.unwrap();
    assert_eq!(c.address(), shared);
    settle().await;
    assert_eq!(skipped.connections(), 0, "the redirect's target came first");

    // The next requests start at the node that answered last.
    let asked = standby.connections();
    assert!(asked >= 1, "the standby was asked first");
    c.check().await.unwrap();
    c.check().await.unwrap();
    assert_eq!(
        standby.connections(),
        asked,
        "the standby is not asked again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_drops_connections_is_passed_over() {
    let shared = common::addr();
    let broken = FakeNode::closing();
    let c = client(&[&broken.addr, &shared], Duration::from_secs(5));
    c.check().await.unwrap();
    assert_eq!(c.address(), shared);
    settle().await;
    let asked = broken.connections();
    assert!(asked >= 1, "the broken node was asked first");
    c.check().await.unwrap();
    assert_eq!(broken.connections(), asked, "and then no more");
}

/// Lets the token's background task finish its first lookup (sent when the token is
/// first used), which also starts at the first node.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

//! The enrollment listener: TCP at `[acme] listen`, TLS with rustls (the certificate
//! from [`ServerCert`], optional client certificates from [`ClientRoots`]), HTTP/1.1
//! (hyper's server with a header read timeout) in front of an axum router. Each
//! connection runs on its own task with a handshake deadline, so a slow or silent
//! client never holds up the others, and at most [`MAX_CONNECTIONS`] are open; each
//! request carries the connection's [`Peer`] (`axum::extract::ConnectInfo<Peer>`): its
//! address and verified certificate chain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use keyward_core::Error;
use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::client_auth::ClientRoots;
use super::server_cert::ServerCert;

/// How long a client has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request's headers once connected or after the
/// previous response (a silent connection is closed).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections open at once; further clients wait to be accepted.
const MAX_CONNECTIONS: usize = 1024;

/// Who is on the other end of a request's connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// The certificate chain the client presented (leaf first), verified during the
    /// handshake against this CA's or the manufacturer CA's roots; empty without one.
    pub chain: Arc<Vec<CertificateDer<'static>>>,
}

/// The bound listener, ready to serve a router.
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    tls: Arc<ServerConfig>,
}

impl Listener {
    /// Binds `addr`, serving `cert` and accepting client certificates `clients` verifies.
    pub async fn bind(
        addr: SocketAddr,
        cert: Arc<ServerCert>,
        clients: &ClientRoots,
    ) -> Result<Listener, Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| {
                Error::backend_with("cannot configure TLS for the enrollment listener", e)
            })?
            .with_client_cert_verifier(clients.tls_verifier())
            .with_cert_resolver(cert);
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(format!("cannot listen for enrollment on {addr}"), e))?;
        Ok(Listener {
            tcp,
            tls: Arc::new(tls),
        })
    }

    /// The address actually bound (the port, when `[acme] listen` named port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.tcp
            .local_addr()
            .map_err(|e| Error::io("the enrollment listener has no address", e))
    }

    /// Serves `app` on every connection that completes the handshake, until the task
    /// is aborted.
    pub fn serve(self, app: Router) -> tokio::task::JoinHandle<()> {
        let acceptor = TlsAcceptor::from(self.tls);
        tokio::spawn(accept_loop(self.tcp, acceptor, app))
    }
}

/// Accepts TCP connections (at most [`MAX_CONNECTIONS`] open) and serves each on its
/// own task.
async fn accept_loop(tcp: TcpListener, acceptor: TlsAcceptor, app: Router) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, addr) = match tcp.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "enrollment listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    return tracing::debug!(%addr, error = %e, "enrollment TLS handshake failed");
                }
                Err(_) => return tracing::debug!(%addr, "enrollment TLS handshake timed out"),
            };
            let chain = tls
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
                .unwrap_or_default();
            let peer = ConnectInfo(Peer {
                addr,
                chain: Arc::new(chain),
            });
            let service = app.map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(peer.clone());
                req.map(Body::new)
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service))
                .await;
            if let Err(e) = served {
                tracing::debug!(%addr, error = %e, "enrollment connection ended with an error");
            }
        });
    }
}

//! Helpers for the integration tests: in-process CAs and SPIFFE identities issued with
//! keyward-core, and a TLS echo server and client over loopback TCP.
#![allow(dead_code)]

pub mod agent;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use keyward_core::issuance::{self, CaIssuer, ServiceProfile};
use keyward_core::{Algorithm, KeySigner, KeyUri};
use keyward_rustls::Credentials;
use keyward_software::SoftwareKey;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use zeroize::Zeroizing;

pub const ALG: Algorithm = Algorithm::EcdsaP256Sha256;

fn key(label: &str) -> (Arc<dyn KeySigner>, Zeroizing<Vec<u8>>) {
    let uri = KeyUri::parse(&format!(
        "file:/nonexistent/keyward-rustls-tests/{label}.pem"
    ))
    .unwrap();
    let (k, pkcs8) = SoftwareKey::generate(ALG, uri).unwrap();
    (Arc::new(k), pkcs8)
}

/// A root CA and an intermediate under it (the intermediate issues the leaves).
pub struct Ca {
    pub root_der: Vec<u8>,
    /// The root, which signed the intermediate (and signs CRLs listing it).
    pub root: CaIssuer,
    pub issuer: CaIssuer,
}

impl Ca {
    pub async fn new(name: &str) -> Ca {
        let (rk, _) = key(&format!("{name}-root"));
        let root_cert = issuance::self_signed_root(
            rk.clone(),
            &format!("CN={name} root"),
            issuance::DEFAULT_ROOT_VALIDITY,
        )
        .await
        .unwrap();
        let root = CaIssuer::new(root_cert.der.clone(), vec![], rk).unwrap();
        let (ik, _) = key(&format!("{name}-int"));
        let int_cert = root
            .issue_intermediate(
                ik.public_key_spki_der(),
                &format!("CN={name} intermediate"),
                issuance::DEFAULT_INTERMEDIATE_VALIDITY,
            )
            .await
            .unwrap();
        let issuer = CaIssuer::new(int_cert.der, vec![root_cert.der.clone()], ik).unwrap();
        Ca {
            root_der: root_cert.der,
            root,
            issuer,
        }
    }

    /// A leaf with the given URI SANs (none: a DNS-only certificate); returns the chain
    /// (leaf, intermediate) and the PKCS#8 key.
    pub async fn leaf(&self, cn: &str, uris: &[&str]) -> (Vec<Vec<u8>>, Zeroizing<Vec<u8>>) {
        let (k, pkcs8) = key(cn);
        let profile = ServiceProfile {
            common_name: cn.to_string(),
            dns: vec![],
            ips: vec![],
            uris: uris.iter().map(|s| s.to_string()).collect(),
            validity: Duration::from_secs(3600),
        };
        let cert = self
            .issuer
            .issue_service(k.public_key_spki_der(), &profile)
            .await
            .unwrap();
        (
            vec![cert.der, self.issuer.certificate_der().to_vec()],
            pkcs8,
        )
    }

    /// Credentials for `spiffe_id`, trusting this CA's root.
    pub async fn creds(&self, spiffe_id: &str) -> Credentials {
        let cn = spiffe_id.rsplit('/').next().unwrap().to_string() + ".test";
        let (chain, pkcs8) = self.leaf(&cn, &[spiffe_id]).await;
        self.creds_from(&chain, &pkcs8)
    }

    /// Credentials from a chain and key, trusting this CA's root.
    pub fn creds_from(&self, chain: &[Vec<u8>], pkcs8: &Zeroizing<Vec<u8>>) -> Credentials {
        let chain: Vec<&[u8]> = chain.iter().map(|c| c.as_slice()).collect();
        Credentials::from_der(&chain, pkcs8, &[&self.root_der]).unwrap()
    }

    /// Writes cert.pem (chain), key.pem and ca.pem for `spiffe_id` into `dir`, the way
    /// `keyward issue` lays them out; returns the leaf DER.
    pub async fn write_files(&self, dir: &Path, spiffe_id: &str) -> Vec<u8> {
        let cn = spiffe_id.rsplit('/').next().unwrap().to_string() + ".test";
        let (chain, pkcs8) = self.leaf(&cn, &[spiffe_id]).await;
        let pem_of = |tag: &str, ders: &[Vec<u8>]| {
            ders.iter()
                .map(|d| pem::encode(&pem::Pem::new(tag, d.clone())))
                .collect::<String>()
        };
        // Write to temporary names and rename, as keyward does.
        for (name, text) in [
            (
                "ca.pem",
                pem_of("CERTIFICATE", std::slice::from_ref(&self.root_der)),
            ),
            ("key.pem", pem_of("PRIVATE KEY", &[pkcs8.to_vec()])),
            ("cert.pem", pem_of("CERTIFICATE", &chain)),
        ] {
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, dir.join(name)).unwrap();
        }
        chain[0].clone()
    }
}

/// What the echo server saw for one connection: the client's SPIFFE ID, or the error.
pub type Outcome = Result<String, String>;

/// A TLS echo server on 127.0.0.1 that keeps accepting until dropped.
pub struct EchoServer {
    pub addr: SocketAddr,
    outcomes: mpsc::UnboundedReceiver<Outcome>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoServer {
    pub async fn start(config: ServerConfig) -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (tx, outcomes) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let r = async {
                        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
                        let peer = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .ok_or("no client certificate")?[0]
                            .clone();
                        let id = keyward_rustls::peer_spiffe_id(&peer)?;
                        let mut buf = [0u8; 4];
                        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
                        tls.write_all(&buf).await.map_err(|e| e.to_string())?;
                        tls.shutdown().await.map_err(|e| e.to_string())?;
                        Ok(id.to_string())
                    }
                    .await;
                    let _ = tx.send(r);
                });
            }
        });
        EchoServer {
            addr,
            outcomes,
            task,
        }
    }

    /// The outcome of the next connection.
    pub async fn outcome(&mut self) -> Outcome {
        tokio::time::timeout(Duration::from_secs(20), self.outcomes.recv())
            .await
            .expect("the server saw no connection")
            .expect("server task gone")
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects, sends "ping", expects it back; returns the server's leaf certificate.
pub async fn echo(addr: SocketAddr, config: &Arc<ClientConfig>) -> Result<Vec<u8>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("keyward.invalid").unwrap();
    let mut tls = TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    if &buf != b"ping" {
        return Err("wrong echo".into());
    }
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].to_vec())
}

pub fn id(s: &str) -> keyward_rustls::SpiffeId {
    keyward_rustls::SpiffeId::new(s).unwrap()
}

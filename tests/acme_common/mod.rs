//! The agent's ACME server for tests and the ACME benchmark: an agent whose CA key is
//! in a fresh SoftHSM token, serving `[acme]` on a free port with `[acme.testing]`
//! pointing the test names at 127.0.0.1; certbot (scripts/pyclients.sh) run against it;
//! and an RFC 8737 challenge server (rustls) for tls-alpn-01.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;

use crate::agent_common::{Agent, wait_for};
use crate::common::{generate_key, openssl, required_env, softhsm_token};

/// The names `[acme.testing] resolve` points at 127.0.0.1.
pub const NAMES: [&str; 3] = ["web.internal", "alpn.internal", "other.internal"];

/// A running agent with the ACME server, its CA key in a fresh SoftHSM token.
pub struct AcmeAgent {
    pub agent: Agent,
    /// `https://127.0.0.1:PORT/acme/directory`.
    pub directory: String,
    /// The `[acme.testing] http_port` (certbot's `--http-01-port`).
    pub http_port: u16,
    /// The `[acme.testing] tls_port`.
    pub tls_port: u16,
    /// The root certificate (the listener's trust anchor and the chains').
    pub bundle: PathBuf,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

pub fn start() -> AcmeAgent {
    let module = required_env("KEYWARD_TEST_PKCS11_MODULE");
    let dir = TempDir::new().unwrap();
    let (token, pin) = softhsm_token(dir.path(), "kw-acme");
    let key = format!(
        "pkcs11:token={token};object=acme-ca?module-path={module}&pin-source=file:{}",
        pin.display()
    );
    let state = dir.path().join("state");
    generate_key(&state, &key, "ecdsa-p256");
    let (listen, http_port, tls_port) = (free_port(), free_port(), free_port());
    let resolve: Vec<String> = NAMES
        .iter()
        .map(|n| format!("\"{n}\" = \"127.0.0.1\""))
        .collect();
    let acme = format!(
        "[acme]\nlisten = \"127.0.0.1:{listen}\"\nallowed = [\"*.internal\"]\nvalidity = \"72h\"\n\
         challenges = [\"http-01\", \"tls-alpn-01\"]\n\n\
         [acme.testing]\nhttp_port = {http_port}\ntls_port = {tls_port}\nresolve = {{ {} }}\n",
        resolve.join(", ")
    );
    let mut agent = Agent::with_ca_key(dir, &key, &acme);
    agent.start();
    wait_for("the ACME listener", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", listen)).is_ok()
    });
    let bundle = agent.dir.path().join("ca-bundle.pem");
    std::fs::write(&bundle, agent.root_pem()).unwrap();
    AcmeAgent {
        directory: format!("https://127.0.0.1:{listen}/acme/directory"),
        agent,
        http_port,
        tls_port,
        bundle,
    }
}

/// The Python of the certbot venv (scripts/pyclients.sh).
pub fn python() -> String {
    required_env("KEYWARD_TEST_PYTHON")
}

/// The `certbot` of that venv.
pub fn certbot() -> PathBuf {
    Path::new(&python()).with_file_name("certbot")
}

impl AcmeAgent {
    /// Runs `certbot ARGS` with its directories under the agent's and this CA trusted.
    pub fn certbot(&self, args: &[&str]) -> Output {
        let base = self.agent.dir.path().join("certbot");
        let dirs = ["config", "work", "logs"].map(|d| base.join(d).display().to_string());
        Command::new(certbot())
            .args(args)
            .args([
                "--non-interactive",
                "--config-dir",
                &dirs[0],
                "--work-dir",
                &dirs[1],
                "--logs-dir",
                &dirs[2],
            ])
            .env("REQUESTS_CA_BUNDLE", &self.bundle)
            .output()
            .expect("run certbot")
    }

    pub fn certbot_ok(&self, args: &[&str]) -> String {
        let out = self.certbot(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "certbot {args:?} failed:\n{text}\nagent log:\n{}",
            self.agent.log()
        );
        text
    }

    /// `certbot certonly` in standalone http-01 mode for `name`.
    pub fn certonly(&self, name: &str) -> Output {
        let port = self.http_port.to_string();
        self.certbot(&[
            "certonly",
            "--standalone",
            "--preferred-challenges",
            "http",
            "--http-01-port",
            &port,
            "--http-01-address",
            "127.0.0.1",
            "--server",
            &self.directory,
            "--agree-tos",
            "--register-unsafely-without-email",
            "-d",
            name,
        ])
    }

    pub fn live(&self, name: &str, file: &str) -> PathBuf {
        self.agent
            .dir
            .path()
            .join("certbot/config/live")
            .join(name)
            .join(file)
    }

    /// `openssl verify -x509_strict` of `cert` under the root, with the chain certbot saved.
    pub fn verify(&self, cert: &Path, chain: &Path) {
        let (bundle, cert) = (self.bundle.to_str().unwrap(), cert.to_str().unwrap());
        let chain_text = std::fs::read_to_string(chain).unwrap_or_default();
        let mut args = vec!["verify", "-x509_strict", "-CAfile", bundle];
        let chain = chain.to_str().unwrap();
        if chain_text.contains("BEGIN CERTIFICATE") {
            args.extend(["-untrusted", chain]);
        }
        args.push(cert);
        assert!(
            openssl(&args).contains(": OK"),
            "openssl verify failed for {cert}"
        );
    }

    /// certbot's debug log of its last run, which holds the server's problem documents
    /// (its console shows only their `detail`).
    pub fn certbot_log(&self) -> String {
        std::fs::read_to_string(self.agent.dir.path().join("certbot/logs/letsencrypt.log")).unwrap()
    }

    pub fn state(&self) -> &Path {
        &self.agent.state
    }
}

pub fn serial_of(pem: &Path) -> String {
    let ders = keyward_core::check::pem_to_ders(&std::fs::read(pem).unwrap()).unwrap();
    keyward_core::check::summarize(&ders[0]).unwrap().serial_hex
}

pub fn revoked_serials(state: &Path) -> String {
    openssl(&[
        "crl",
        "-in",
        state.join("crl.pem").to_str().unwrap(),
        "-noout",
        "-text",
    ])
}

/// Serves the RFC 8737 challenge certificate for `name` (acmeIdentifier = `digest`) with
/// ALPN `acme-tls/1` to every connection.
pub async fn serve_challenge(listener: tokio::net::TcpListener, name: &str, digest: Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(&digest)];
    let cert = params.self_signed(&key).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    // Not `with_single_cert`: webpki refuses the critical acmeIdentifier extension.
    let signing_key = provider
        .key_provider
        .load_private_key(rustls::pki_types::PrivateKeyDer::Pkcs8(
            key.serialize_der().into(),
        ))
        .unwrap();
    let certified = rustls::sign::CertifiedKey::new(vec![cert.der().clone()], signing_key);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ChallengeCert(Arc::new(certified))));
    config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
            }
        });
    }
}

/// Answers every handshake with the challenge certificate.
#[derive(Debug)]
pub struct ChallengeCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for ChallengeCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

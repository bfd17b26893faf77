//! Challenge validation: http-01 (RFC 8555 section 8.3), fetching the key authorization
//! from the client's port 80, and tls-alpn-01 (RFC 8737), a TLS handshake with ALPN
//! `acme-tls/1` whose self-signed certificate carries the key authorization's digest in
//! the critical acmeIdentifier extension. `[acme.testing]` moves the ports and pins
//! names to addresses, as pebble does; without it the standard ports and DNS are used.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use keyward_core::HashAlg;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::AsyncWriteExt;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

use super::identifiers::Identifier;
use super::problem::Problem;

/// How long one validation may take (connect, handshake, response).
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest http-01 response read.
const MAX_HTTP01_BODY: usize = 4096;
/// The ALPN protocol of tls-alpn-01.
const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// id-pe-acmeIdentifier (RFC 8737 section 6.1).
const ACME_IDENTIFIER_OID: &str = "1.3.6.1.5.5.7.1.31";

/// Where validations connect to.
#[derive(Debug, Clone)]
pub struct Targets {
    /// The http-01 port (80 unless `[acme.testing] http_port`).
    pub http_port: u16,
    /// The tls-alpn-01 port (443 unless `[acme.testing] tls_port`).
    pub tls_port: u16,
    /// Names answered from here instead of DNS (`[acme.testing] resolve`).
    pub resolve: HashMap<String, IpAddr>,
}

impl Default for Targets {
    fn default() -> Self {
        Targets {
            http_port: 80,
            tls_port: 443,
            resolve: HashMap::new(),
        }
    }
}

/// Runs validations.
#[derive(Debug, Clone)]
pub struct Validator {
    targets: Targets,
    http: reqwest::Client,
    tls: Arc<rustls::ClientConfig>,
}

impl Validator {
    /// A validator connecting to `targets`.
    pub fn new(targets: Targets) -> Result<Validator, keyward_core::Error> {
        let mut http = reqwest::Client::builder()
            .no_proxy()
            .timeout(VALIDATION_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3));
        for (name, ip) in &targets.resolve {
            http = http.resolve(name, SocketAddr::new(*ip, 0));
        }
        let http = http.build().map_err(|e| {
            keyward_core::Error::backend(format!("cannot build the http-01 client: {e}"))
        })?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| keyward_core::Error::backend(format!("tls-alpn-01 client: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChallengeCertificate(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth();
        tls.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        Ok(Validator {
            targets,
            http,
            tls: Arc::new(tls),
        })
    }

    /// Validates challenge `kind` for `id`: Ok when the client answered with
    /// `key_authorization`.
    pub async fn validate(
        &self,
        kind: &str,
        id: &Identifier,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), Problem> {
        match kind {
            "http-01" => self.http01(id, token, key_authorization).await,
            "tls-alpn-01" => {
                tokio::time::timeout(VALIDATION_TIMEOUT, self.tls_alpn01(id, key_authorization))
                    .await
                    .unwrap_or_else(|_| {
                        Err(Problem::connection(format!(
                            "tls-alpn-01 for {}: timed out",
                            id.value
                        )))
                    })
            }
            other => Err(Problem::malformed(format!(
                "unknown challenge type {other}"
            ))),
        }
    }

    async fn http01(&self, id: &Identifier, token: &str, expected: &str) -> Result<(), Problem> {
        let host = match id.value.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
            _ => id.value.clone(),
        };
        let url = format!(
            "http://{host}:{}/.well-known/acme-challenge/{token}",
            self.targets.http_port
        );
        let unreachable = |e: reqwest::Error| {
            Problem::connection(format!("http-01 for {}: cannot fetch {url}: {e}", id.value))
        };
        let mut response = self.http.get(&url).send().await.map_err(unreachable)?;
        if !response.status().is_success() {
            return Err(Problem::incorrect_response(format!(
                "http-01 for {}: {url} answered {}",
                id.value,
                response.status()
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_HTTP01_BODY {
                return Err(Problem::incorrect_response(format!(
                    "http-01 for {}: the response is longer than a key authorization",
                    id.value
                )));
            }
        }
        if String::from_utf8_lossy(&body).trim() != expected {
            return Err(Problem::incorrect_response(format!(
                "http-01 for {}: the response is not the key authorization",
                id.value
            )));
        }
        Ok(())
    }

    async fn tls_alpn01(&self, id: &Identifier, expected: &str) -> Result<(), Problem> {
        if id.kind != "dns" {
            return Err(Problem::malformed(
                "tls-alpn-01 is offered for dns identifiers only",
            ));
        }
        let addr = self.address(&id.value, self.targets.tls_port).await?;
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| {
            Problem::connection(format!(
                "tls-alpn-01 for {}: cannot connect to {addr}: {e}",
                id.value
            ))
        })?;
        let name = ServerName::try_from(id.value.clone())
            .map_err(|_| Problem::malformed(format!("'{}' is not a server name", id.value)))?;
        let mut tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| {
                Problem::tls(format!(
                    "tls-alpn-01 for {}: handshake with {addr} failed: {e}",
                    id.value
                ))
            })?;
        let (_, conn) = tls.get_ref();
        if conn.alpn_protocol() != Some(ACME_TLS_ALPN) {
            return Err(Problem::tls(format!(
                "tls-alpn-01 for {}: the server did not negotiate acme-tls/1",
                id.value
            )));
        }
        let cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .ok_or_else(|| Problem::tls(format!("tls-alpn-01 for {}: no certificate", id.value)))?;
        let _ = tls.shutdown().await;
        check_challenge_certificate(&cert, &id.value, expected)
    }

    /// The address of `name`: from `[acme.testing] resolve`, else DNS.
    async fn address(&self, name: &str, port: u16) -> Result<SocketAddr, Problem> {
        if let Some(ip) = self.targets.resolve.get(name) {
            return Ok(SocketAddr::new(*ip, port));
        }
        tokio::net::lookup_host((name, port))
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| Problem::connection(format!("cannot resolve {name}")))
    }
}

/// RFC 8737 section 3: exactly one dNSName, `name`, and a critical acmeIdentifier
/// extension holding SHA-256 of the key authorization.
fn check_challenge_certificate(
    der: &[u8],
    name: &str,
    key_authorization: &str,
) -> Result<(), Problem> {
    let bad = |why: &str| Problem::incorrect_response(format!("tls-alpn-01 for {name}: {why}"));
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|_| bad("the certificate does not parse"))?;
    let mut dns_names = Vec::new();
    let mut digest = None;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for n in &san.general_names {
                    match n {
                        GeneralName::DNSName(d) => dns_names.push(d.to_ascii_lowercase()),
                        _ => return Err(bad("the certificate names more than the identifier")),
                    }
                }
            }
            _ if ext.oid.to_id_string() == ACME_IDENTIFIER_OID => {
                if !ext.critical {
                    return Err(bad("the acmeIdentifier extension is not critical"));
                }
                digest = Some(ext.value.to_vec());
            }
            _ => {}
        }
    }
    if dns_names != [name] {
        return Err(bad(
            "the certificate's subjectAltName is not exactly the identifier",
        ));
    }
    let mut want = vec![0x04, 0x20];
    want.extend(HashAlg::Sha256.digest(key_authorization.as_bytes()));
    match digest {
        Some(d) if d == want => Ok(()),
        Some(_) => Err(bad(
            "the acmeIdentifier digest is not that of the key authorization",
        )),
        None => Err(bad("the certificate has no acmeIdentifier extension")),
    }
}

/// A challenge certificate is self-signed by design and carries a critical extension
/// webpki does not know: its chain is not checked, only that the server holds its key
/// (the TLS 1.3 handshake signature, checked against the certificate's public key) and,
/// afterwards, its contents. TLS 1.2 is not offered: rustls checks 1.2 signatures only
/// through webpki, which refuses such certificates.
#[derive(Debug)]
struct ChallengeCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for ChallengeCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(
            "tls-alpn-01 validation speaks TLS 1.3 only".into(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let (_, parsed) = X509Certificate::from_der(cert.as_ref()).map_err(|_| {
            rustls::Error::General("the challenge certificate does not parse".into())
        })?;
        let spki = SubjectPublicKeyInfoDer::from(parsed.tbs_certificate.subject_pki.raw);
        rustls::crypto::verify_tls13_signature_with_raw_key(message, &spki, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

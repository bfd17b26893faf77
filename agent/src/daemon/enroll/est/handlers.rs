//! The EST endpoints and how each client is authenticated before its request is read.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use cms::cert::x509::attr::Attribute;
use cms::cert::x509::der::asn1::SetOfVec;
use cms::cert::x509::der::oid::db::rfc5912::{ECDSA_WITH_SHA_256, ID_EC_PUBLIC_KEY, SECP_256_R_1};
use cms::cert::x509::der::{Any, Encode};
use keyward_core::audit::Event;
use keyward_core::store::{IssuedKind, NewCertificate, Operation, Plan};
use keyward_core::{Error, IssuedCertificate};
use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

use super::super::Peer;
use super::super::client_auth::split_bundle;
use super::request::{self, CheckedCsr};
use super::{EstState, Refusal, bootstrap, certs_only};

/// `GET cacerts`: the roots and the intermediates certificates are issued under.
pub async fn cacerts(State(st): State<Arc<EstState>>) -> Result<Response, Refusal> {
    let view = st.ca.view();
    let mut certs = split_bundle(&view.bundle).map_err(|e| Refusal::internal(&e))?;
    certs.extend(view.intermediates.iter().cloned());
    certs_only::response(&certs).map_err(|e| Refusal::internal(&e))
}

/// `GET csrattrs`: sign the request with ECDSA P-256 / SHA-256 (RFC 7030 4.5.2).
pub async fn csrattrs() -> Result<Response, Refusal> {
    let encode = || -> Result<Vec<u8>, cms::cert::x509::der::Error> {
        let mut curve = SetOfVec::new();
        curve.insert(Any::encode_from(&SECP_256_R_1)?)?;
        let key_type = Attribute {
            oid: ID_EC_PUBLIC_KEY,
            values: curve,
        };
        vec![
            Any::encode_from(&ECDSA_WITH_SHA_256)?,
            Any::encode_from(&key_type)?,
        ]
        .to_der()
    };
    let der = encode()
        .map_err(|e| Refusal::internal(&Error::backend(format!("cannot encode csrattrs: {e}"))))?;
    let mut response = (
        StatusCode::OK,
        base64::engine::general_purpose::STANDARD.encode(der),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/csrattrs"),
    );
    headers.insert(
        "content-transfer-encoding",
        HeaderValue::from_static("base64"),
    );
    Ok(response)
}

/// How a first enrollment was authenticated.
enum FirstEnrollment {
    /// A bootstrap secret: the device's name and the SANs it may ask for.
    Secret { name: String, sans: Vec<String> },
    /// A device certificate from the manufacturer CA (DER).
    Device(Vec<u8>),
}

/// `POST simpleenroll`: a first certificate for a device.
pub async fn simpleenroll(
    State(st): State<Arc<EstState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let refuse = |r: Refusal| r.noted(&st, "simpleenroll", peer.addr);
    let who = first_enrollment(&st, &peer, &headers)
        .await
        .map_err(refuse)?;
    let csr = read_csr(&headers, &body).map_err(refuse)?;
    let (name, device) = match &who {
        FirstEnrollment::Secret { name, sans } => {
            csr.check_bootstrap(name, sans)
                .map_err(|why| refuse(Refusal::forbidden(why)))?;
            (format!("est:{name}"), Some(name.as_str()))
        }
        FirstEnrollment::Device(der) => {
            let cert = parse(der).map_err(refuse)?;
            csr.check_same_names(&cert)
                .map_err(|why| refuse(Refusal::forbidden(why)))?;
            (csr.inventory_name(), None)
        }
    };
    let cert = issue(&st, &csr, &name, device, &peer)
        .await
        .map_err(refuse)?;
    certs_only::response(&[cert.der]).map_err(|e| refuse(Refusal::internal(&e)))
}

/// `POST simplereenroll`: a new certificate for a client holding a current one.
pub async fn simplereenroll(
    State(st): State<Arc<EstState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let refuse = |r: Refusal| r.noted(&st, "simplereenroll", peer.addr);
    let leaf = current_certificate(&st, &peer).map_err(refuse)?;
    let csr = read_csr(&headers, &body).map_err(refuse)?;
    let cert = parse(&leaf).map_err(refuse)?;
    csr.check_same_names(&cert)
        .map_err(|why| refuse(Refusal::forbidden(why)))?;
    let name = csr.inventory_name();
    let issued = issue(&st, &csr, &name, None, &peer).await.map_err(refuse)?;
    certs_only::response(&[issued.der]).map_err(|e| refuse(Refusal::internal(&e)))
}

/// Authenticates a first enrollment: HTTP Basic with an unused bootstrap secret, or a
/// device certificate from the manufacturer CA.
async fn first_enrollment(
    st: &Arc<EstState>,
    peer: &Peer,
    headers: &HeaderMap,
) -> Result<FirstEnrollment, Refusal> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let (name, secret) = basic_credentials(value)
            .ok_or_else(|| Refusal::unauthorized("the Authorization header is not HTTP Basic"))?;
        let _slot = st
            .secret_checks
            .acquire()
            .await
            .map_err(|_| Refusal::internal(&Error::backend("the EST server is stopping")))?;
        let state = st.state.clone();
        let checked = tokio::task::spawn_blocking(move || bootstrap::check(&state, &name, &secret))
            .await
            .map_err(|e| Refusal::internal(&Error::backend(format!("secret check failed: {e}"))))?;
        return match checked {
            Ok(record) => Ok(FirstEnrollment::Secret {
                name: record.name,
                sans: record.sans,
            }),
            Err(bootstrap::Refused::Used) => Err(Refusal::unauthorized(
                "this bootstrap secret has been used; each enrolls once",
            )),
            Err(bootstrap::Refused::Wrong) => {
                Err(Refusal::unauthorized("unknown device name or wrong secret"))
            }
        };
    }
    match peer.chain.first() {
        Some(leaf) if st.clients.issued_by_manufacturer(&peer.chain) => {
            Ok(FirstEnrollment::Device(leaf.to_vec()))
        }
        Some(_) => Err(Refusal::forbidden(
            "first enrollment needs a bootstrap secret or a manufacturer certificate",
        )),
        None => Err(Refusal::unauthorized(
            "authenticate with a bootstrap secret (HTTP Basic) or a manufacturer certificate",
        )),
    }
}

/// The user and password of an HTTP Basic `Authorization` value.
fn basic_credentials(value: &HeaderValue) -> Option<(String, Zeroizing<String>)> {
    let encoded = value.to_str().ok()?.strip_prefix("Basic ")?.trim();
    let decoded = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?,
    );
    let text = std::str::from_utf8(&decoded).ok()?;
    let (user, secret) = text.split_once(':')?;
    Some((user.to_string(), Zeroizing::new(secret.to_string())))
}

/// The client's certificate (DER) for re-enrollment: presented in the handshake,
/// issued by this CA, in its inventory and not revoked.
fn current_certificate(st: &EstState, peer: &Peer) -> Result<Vec<u8>, Refusal> {
    let Some(leaf) = peer.chain.first() else {
        return Err(Refusal::unauthorized(
            "re-enrollment needs the client's current certificate (TLS client authentication)",
        ));
    };
    if !st.clients.issued_here(&peer.chain) {
        return Err(Refusal::forbidden(
            "the client certificate was not issued by this CA",
        ));
    }
    let serial = keyward_core::check::summarize(leaf)
        .map_err(|e| Refusal::bad_request(format!("the client certificate: {e}")))?
        .serial_hex;
    if !in_inventory(st, leaf, &serial).map_err(|e| Refusal::internal(&e))? {
        return Err(Refusal::forbidden(format!(
            "certificate {serial} is not in this CA's inventory"
        )));
    }
    let revoked = st.state.revocations().map_err(|e| Refusal::internal(&e))?;
    if revoked.find(&serial).is_some() {
        return Err(Refusal::forbidden(format!(
            "certificate {serial} is revoked"
        )));
    }
    Ok(leaf.to_vec())
}

/// Whether the inventory holds exactly `leaf` under `serial`.
fn in_inventory(st: &EstState, leaf: &CertificateDer<'_>, serial: &str) -> Result<bool, Error> {
    let Some(record) = st
        .state
        .inventory()?
        .into_iter()
        .find(|r| r.serial_hex.eq_ignore_ascii_case(serial))
    else {
        return Ok(false);
    };
    let pem = st.state.issued_pem(&record)?;
    let stored = keyward_core::check::pem_to_ders(&pem)?;
    Ok(stored
        .first()
        .is_some_and(|der| der.as_slice() == leaf.as_ref()))
}

/// The request body as a checked CSR (`Content-Type: application/pkcs10`).
fn read_csr(headers: &HeaderMap, body: &[u8]) -> Result<CheckedCsr, Refusal> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if media.as_deref() != Some("application/pkcs10") {
        return Err(Refusal {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            reason: "the request must be Content-Type: application/pkcs10".into(),
        });
    }
    request::read(body).map_err(Refusal::bad_request)
}

/// A certificate the handshake verified, parsed.
fn parse(der: &[u8]) -> Result<X509Certificate<'_>, Refusal> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| Refusal::bad_request(format!("the client certificate does not parse: {e}")))
}

/// Signs `csr` and records it as `name`, with the use of `device`'s bootstrap secret,
/// in one transaction; the certificate is returned only once all of it is on disk.
async fn issue(
    st: &EstState,
    csr: &CheckedCsr,
    name: &str,
    device: Option<&str>,
    peer: &Peer,
) -> Result<IssuedCertificate, Refusal> {
    let _one = st.issuing.lock().await;
    // A secret another request spent meanwhile signs nothing (the transaction below
    // checks again, under the state lock).
    if let Some(device) = device
        && !bootstrap::unused(&st.state, device)
    {
        return Err(Refusal::unauthorized(
            "this bootstrap secret has been used; each enrolls once",
        ));
    }
    let view = st.ca.view();
    let cert = view
        .issuer
        .sign_csr(&csr.der, st.settings.validity)
        .await
        .map_err(|e| match e {
            Error::InvalidInput(why) => Refusal::bad_request(why),
            e => Refusal::internal(&e),
        })?;
    let key = view.issuer.signer().uri();
    let new = NewCertificate::new(IssuedKind::Csr, name, None, key, &cert);
    let op = Operation {
        name: "est enroll".into(),
        detail: format!("serial {} for {name}", cert.serial_hex),
        plan: Plan::Certificate(Box::new(new.clone())),
    };
    let event = Event::issued("certificate_issued", &cert.der, key)
        .with("kind", IssuedKind::Csr)
        .with("name", name)
        .with("via", "est")
        .with("peer", peer.addr.to_string());
    let audit = |e| {
        st.audit.record(e);
        Ok(())
    };
    st.state
        .transaction(&op, &audit, async |tx| {
            if let Some(device) = device {
                bootstrap::mark_used(tx, device, &cert.serial_hex)?;
            }
            tx.record_issued(&new)?;
            tx.audit(event);
            Ok(())
        })
        .await
        .map_err(|e| match e {
            Error::AlreadyExists(why) => Refusal::unauthorized(why),
            e => Refusal::internal(&e),
        })?;
    tracing::info!(serial = %cert.serial_hex, %name, peer = %peer.addr, "EST issued a certificate");
    Ok(cert)
}

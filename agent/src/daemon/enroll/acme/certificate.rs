//! Finalize, certificate download and revocation (RFC 8555 sections 7.4, 7.4.2, 7.6):
//! the CSR must name exactly the order's identifiers; it is signed by the agent's CA
//! through the same issuance path as `keyward sign-csr`, recorded in the inventory and
//! the audit log in one transaction; revocation writes the revocation list and a new
//! CRL as `keyward revoke` does.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use keyward_core::audit::{Caller, Event};
use keyward_core::issuance::{RevocationReason, RevokedCert};
use keyward_core::store::{IssuedKind, NewCertificate, Operation, Plan};
use keyward_core::{Error, chain_line};
use serde::Deserialize;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509CertificationRequest};

use super::identifiers::Identifier;
use super::jws::{Signed, Signer};
use super::order::{order_json, order_status, owned_order};
use super::problem::Problem;
use super::store::{IssuedChain, Order};
use super::{AcmeState, CRL_VALIDITY, Post, json_response};
use crate::commands::revoke::save_next_crl;

#[derive(Deserialize)]
struct Finalize {
    csr: String,
}

/// POST /acme/order/{id}/finalize.
pub async fn finalize(
    State(st): State<Arc<AcmeState>>,
    Path(id): Path<String>,
    post: Post,
) -> Result<Response, Problem> {
    let (account, payload) = post.signed.account()?;
    let request: Finalize = Signed::json(&payload)?;
    let csr = B64
        .decode(request.csr.trim_end_matches('='))
        .map_err(|_| Problem::bad_csr("the csr is not base64url DER"))?;
    let guard = st.records.lock().await;
    let mut order = owned_order(&st, &id, &account)?;
    let status = order_status(&st, &order)?;
    if status != "ready" {
        return Err(Problem::order_not_ready(format!(
            "the order is {status}, not ready"
        )));
    }
    check_csr_names(&csr, &order.identifiers)?;
    order.processing = true;
    st.store.put(&order.id, &order)?;
    drop(guard);
    let issued = issue(&st, &order, &csr).await;
    let _guard = st.records.lock().await;
    order.processing = false;
    let outcome = match issued {
        Ok(serial) => {
            order.certificate = Some(serial);
            Ok(())
        }
        // A CSR the CA refuses leaves the order ready for another CSR.
        Err(Error::InvalidInput(why)) => Err(Problem::bad_csr(why)),
        Err(e) => {
            let problem = Problem::server_internal(format!("issuance failed: {}", chain_line(&e)));
            order.error = Some(problem.to_json());
            Err(problem)
        }
    };
    st.store.put(&order.id, &order)?;
    outcome?;
    let location = format!("{}/acme/order/{}", post.base, order.id);
    Ok(json_response(
        StatusCode::OK,
        &order_json(&st, &order, &post.base)?,
        Some(&location),
    ))
}

/// The names of a CSR (subjectAltName dNSName and iPAddress, and the CN) must be the
/// order's identifiers, no more and no fewer.
fn check_csr_names(csr: &[u8], ordered: &[Identifier]) -> Result<(), Problem> {
    let (_, req) = X509CertificationRequest::from_der(csr)
        .map_err(|e| Problem::bad_csr(format!("the CSR does not parse: {e}")))?;
    let mut names = BTreeSet::new();
    for cn in req.certification_request_info.subject.iter_common_name() {
        let cn = cn
            .as_str()
            .map_err(|_| Problem::bad_csr("the CSR's CN is not text"))?;
        names.insert(canonical_name(cn));
    }
    for ext in req.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for n in &san.general_names {
                match n {
                    GeneralName::DNSName(d) => names.insert(canonical_name(d)),
                    GeneralName::IPAddress(b) => names.insert(ip_name(b)?),
                    other => {
                        return Err(Problem::bad_csr(format!(
                            "the CSR asks for a name ACME did not validate: {other}"
                        )));
                    }
                };
            }
        }
    }
    let wanted: BTreeSet<String> = ordered
        .iter()
        .map(|i| match i.kind.as_str() {
            "dns" => format!("dns:{}", i.value),
            _ => format!("ip:{}", i.value),
        })
        .collect();
    if names != wanted {
        return Err(Problem::bad_csr(format!(
            "the CSR names {} but the order is for {}",
            names.iter().cloned().collect::<Vec<_>>().join(", "),
            wanted.iter().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(())
}

fn canonical_name(name: &str) -> String {
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => format!("ip:{ip}"),
        Err(_) => format!("dns:{}", name.to_ascii_lowercase()),
    }
}

fn ip_name(bytes: &[u8]) -> Result<String, Problem> {
    let ip: std::net::IpAddr = match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).map(Into::into).map_err(|_| ()),
        16 => <[u8; 16]>::try_from(bytes).map(Into::into).map_err(|_| ()),
        _ => Err(()),
    }
    .map_err(|()| Problem::bad_csr("the CSR has a malformed IP address"))?;
    Ok(format!("ip:{ip}"))
}

/// Signs `csr` for `order` and records it (inventory, audit log, ACME record); returns
/// the certificate's id (its serial).
async fn issue(st: &AcmeState, order: &Order, csr: &[u8]) -> Result<String, Error> {
    let view = st.ca.view();
    let cert = view.issuer.sign_csr(csr, st.settings.validity).await?;
    let name = format!("acme:{}", order.identifiers[0].value);
    let new = NewCertificate::new(
        IssuedKind::Csr,
        &name,
        None,
        view.issuer.signer().uri(),
        &cert,
    );
    let op = Operation {
        name: "acme finalize".into(),
        detail: format!("serial {} for order {}", cert.serial_hex, order.id),
        plan: Plan::Certificate(Box::new(new.clone())),
    };
    let audit = |e: Event| {
        st.audit.record(e);
        Ok(())
    };
    let chain = IssuedChain {
        serial_hex: cert.serial_hex.clone(),
        account: order.account.clone(),
        chain_pem: acme_chain_pem(&view.issuer, &cert.der),
    };
    st.state
        .transaction(&op, &audit, async |tx| {
            tx.record_issued(&new)?;
            tx.audit(
                Event::issued("certificate_issued", &cert.der, &new.ca_key)
                    .with("kind", "acme")
                    .with("account", &order.account)
                    .with("order", &order.id)
                    .with("identifiers", &order.identifiers),
            );
            Ok(())
        })
        .await?;
    st.store.put(&chain.serial_hex, &chain)?;
    Ok(cert.serial_hex)
}

/// The chain served for `leaf`: the leaf, then its issuer and the certificates above it
/// but the root; when the root itself issued the leaf, the root, since clients (certbot)
/// expect the issuer after the leaf.
fn acme_chain_pem(issuer: &keyward_core::issuance::CaIssuer, leaf: &[u8]) -> String {
    let chain = issuer.ca_chain();
    let above = if chain.intermediates.is_empty() {
        chain.roots
    } else {
        chain.intermediates
    };
    keyward_core::check::ders_to_pem(&[vec![leaf.to_vec()], above].concat())
}

/// POST /acme/cert/{id} (POST-as-GET): the certificate and its intermediates.
pub async fn download(
    State(st): State<Arc<AcmeState>>,
    Path(id): Path<String>,
    post: Post,
) -> Result<Response, Problem> {
    let (account, _) = post.signed.account()?;
    let chain: IssuedChain = st
        .store
        .get(&id)?
        .ok_or_else(|| Problem::not_found("certificate"))?;
    if chain.account != account.id {
        return Err(Problem::unauthorized(
            "the certificate belongs to another account",
        ));
    }
    Ok((
        [(header::CONTENT_TYPE, "application/pem-certificate-chain")],
        chain.chain_pem,
    )
        .into_response())
}

#[derive(Deserialize)]
struct Revoke {
    certificate: String,
    #[serde(default)]
    reason: Option<u8>,
}

/// POST /acme/revoke-cert: by the account that ordered the certificate, or signed with
/// the certificate's own key (`jwk`).
pub async fn revoke(State(st): State<Arc<AcmeState>>, post: Post) -> Result<Response, Problem> {
    let request: Revoke = Signed::json(&post.signed.payload)?;
    let der = B64
        .decode(request.certificate.trim_end_matches('='))
        .map_err(|_| Problem::malformed("the certificate is not base64url DER"))?;
    let summary = keyward_core::check::summarize(&der).map_err(|e| {
        Problem::malformed(format!(
            "the certificate does not parse: {}",
            chain_line(&e)
        ))
    })?;
    let chain: IssuedChain = st
        .store
        .get(&summary.serial_hex)?
        .filter(|c: &IssuedChain| {
            keyward_core::check::pem_to_ders(c.chain_pem.as_bytes())
                .is_ok_and(|d| d.first() == Some(&der))
        })
        .ok_or_else(|| Problem::not_found("certificate issued through this ACME server"))?;
    let allowed = match &post.signed.signer {
        Signer::Account(a) => a.id == chain.account,
        Signer::Key { thumbprint, .. } => {
            certificate_key_thumbprint(&der).as_deref() == Some(thumbprint)
        }
    };
    if !allowed {
        return Err(Problem::unauthorized(
            "only the account that ordered a certificate, or its key, may revoke it",
        ));
    }
    let reason = RevocationReason::from_code(request.reason.unwrap_or(0)).ok_or_else(|| {
        Problem::bad_revocation_reason(format!(
            "reason {} is not one this CA uses",
            request.reason.unwrap_or(0)
        ))
    })?;
    revoke_serial(&st, &summary.serial_hex, reason).await?;
    Ok(StatusCode::OK.into_response())
}

/// Adds `serial_hex` to the revocation list and signs the next CRL, in one transaction.
async fn revoke_serial(
    st: &AcmeState,
    serial_hex: &str,
    reason: RevocationReason,
) -> Result<(), Problem> {
    let issuer = st.ca.view().issuer;
    let op = Operation {
        name: "acme revoke".into(),
        detail: format!("serial {serial_hex}"),
        plan: Plan::Revocations {
            serial_hex: Some(serial_hex.to_string()),
        },
    };
    let audit = |e: Event| {
        st.audit.record(e);
        Ok(())
    };
    let result = st
        .state
        .transaction(&op, &audit, async |tx| {
            let mut list = tx.state().revocations()?;
            if list.find(serial_hex).is_some() {
                return Err(Error::AlreadyExists(format!(
                    "certificate {serial_hex} is already revoked"
                )));
            }
            let now = OffsetDateTime::now_utc();
            list.revoked.push(RevokedCert {
                serial_hex: serial_hex.to_string(),
                reason,
                revoked_at: now.replace_nanosecond(0).unwrap_or(now),
            });
            save_next_crl(tx, &issuer, &mut list, CRL_VALIDITY).await?;
            tx.audit(
                Event::revoked(serial_hex, &reason.to_string(), &Caller::this_process())
                    .with("via", "acme")
                    .with("crl_number", list.crl_number),
            );
            Ok(())
        })
        .await;
    match result {
        Err(Error::AlreadyExists(why)) => Err(Problem::already_revoked(why)),
        other => other.map_err(Problem::from),
    }
}

/// The RFC 7638 thumbprint of a certificate's public key (EC or RSA).
fn certificate_key_thumbprint(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let spki = cert.public_key();
    let key = match spki.parsed().ok()? {
        x509_parser::public_key::PublicKey::EC(_) => {
            DecodingKey::from_ec_der(&spki.subject_public_key.data)
        }
        x509_parser::public_key::PublicKey::RSA(_) => {
            DecodingKey::from_rsa_der(&spki.subject_public_key.data)
        }
        _ => return None,
    };
    Jwk::from_decoding_key(&key, None)
        .ok()?
        .thumbprint(ThumbprintHash::SHA256)
        .ok()
}

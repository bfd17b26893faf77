//! The ACME server (RFC 8555) on the enrollment listener: machines that are not on the
//! agent's node get certificates from the same CA with any ACME client (certbot,
//! instant-acme, ...). [`router`] is an axum `Router` under `/acme/`; the listener
//! (`enroll`) merges it with EST's and serves it over HTTPS.
//!
//! Accounts are keys (JWS ES256/ES384/RS256; the account id is the key's RFC 7638
//! thumbprint); orders name identifiers from `[acme] allowed`; each identifier is proven
//! with http-01 or tls-alpn-01; finalize signs the CSR through the CA's usual issuance
//! path, recorded in the inventory and the audit log; revocation writes the CRL as
//! `keyward revoke` does. Every refusal is a problem document with an ACME error type.

mod account;
mod certificate;
mod identifiers;
mod jws;
mod limit;
mod nonce;
mod order;
mod problem;
mod store;
#[cfg(test)]
mod tests;
mod validate;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use keyward_core::Error;
use keyward_core::store::StateDir;
use serde_json::{Value, json};

pub use identifiers::AllowedPattern;
pub use validate::Targets;

use super::super::audit::Audit;
use super::super::ca::AgentCa;
use jws::{Expect, Signed};
use limit::AccountLimiter;
use nonce::Nonces;
use problem::Problem;
use store::Store;
use validate::Validator;

/// Identifiers one order may name at most.
const MAX_IDENTIFIERS_PER_ORDER: usize = 100;
/// How long a new order and its authorizations stay usable.
const ORDER_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// How long a CRL written by an ACME revocation is valid (as `keyward revoke`'s default).
const CRL_VALIDITY: Duration = Duration::from_secs(7 * 86_400);

/// The ACME settings (`[acme]`, except the listener's own keys).
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// `allowed`: the identifiers clients may order.
    pub allowed: Vec<AllowedPattern>,
    /// `validity`: how long issued certificates are valid.
    pub validity: Duration,
    /// `challenges`: the challenge types offered (`http-01`, `tls-alpn-01`).
    pub challenges: Vec<String>,
    /// `rate_limit`: requests per second per account, refilled.
    pub per_second: f64,
    /// `rate_limit`: requests an account may make at once.
    pub burst: u32,
    /// Where validations connect (`[acme.testing]` moves it).
    pub targets: Targets,
}

/// What the ACME handlers share.
pub struct AcmeState {
    settings: AcmeSettings,
    ca: AgentCa,
    state: StateDir,
    audit: Audit,
    store: Store,
    nonces: Nonces,
    limiter: AccountLimiter,
    validator: Validator,
    /// Serializes the read-modify-write of orders and authorizations.
    records: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for AcmeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeState")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl AcmeState {
    /// The server's state: records under `state`'s `acme/`, certificates from `ca`,
    /// issuances and revocations in `audit`.
    pub fn new(
        settings: AcmeSettings,
        ca: AgentCa,
        state: StateDir,
        audit: Audit,
    ) -> Result<Arc<AcmeState>, Error> {
        Ok(Arc::new(AcmeState {
            store: Store::open(state.path())?,
            nonces: Nonces::new(nonce::DEFAULT_CAPACITY),
            limiter: AccountLimiter::new(settings.per_second, settings.burst),
            validator: Validator::new(settings.targets.clone())?,
            records: tokio::sync::Mutex::new(()),
            settings,
            ca,
            state,
            audit,
        }))
    }
}

/// The ACME server's routes under `/acme/`.
pub fn router(state: Arc<AcmeState>) -> Router {
    Router::new()
        .route("/acme/directory", get(directory))
        .route("/acme/new-nonce", get(new_nonce).head(new_nonce))
        .route("/acme/new-account", post(account::new_account))
        .route("/acme/acct/{id}", post(account::account))
        .route("/acme/acct/{id}/orders", post(account::orders))
        .route("/acme/new-order", post(order::new_order))
        .route("/acme/order/{id}", post(order::order))
        .route("/acme/order/{id}/finalize", post(certificate::finalize))
        .route("/acme/authz/{id}", post(order::authorization))
        .route("/acme/chall/{id}/{kind}", post(order::challenge))
        .route("/acme/cert/{id}", post(certificate::download))
        .route("/acme/revoke-cert", post(certificate::revoke))
        .layer(middleware::from_fn_with_state(state.clone(), replay_nonce))
        .with_state(state)
}

/// Every ACME response carries a fresh nonce and the directory's `index` link (RFC 8555
/// sections 6.5 and 7.1); a method a resource does not answer is a problem document.
async fn replay_nonce(State(st): State<Arc<AcmeState>>, req: Request, next: Next) -> Response {
    let index =
        base_url(req.headers(), req.uri()).map(|b| format!("<{b}/acme/directory>;rel=\"index\""));
    let mut response = next.run(req).await;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && response.headers().get(header::CONTENT_TYPE).is_none()
    {
        response = Problem::method_not_allowed(
            "ACME resources answer POST (the directory and newNonce GET)",
        )
        .into_response();
    }
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&st.nonces.issue()) {
        headers.insert("replay-nonce", v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(v) = index.and_then(|i| HeaderValue::from_str(&i).ok()) {
        headers.append(header::LINK, v);
    }
    response
}

async fn directory(headers: HeaderMap, uri: axum::http::Uri) -> Result<Response, Problem> {
    let b =
        base_url(&headers, &uri).ok_or_else(|| Problem::malformed("the request names no host"))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "newNonce": format!("{b}/acme/new-nonce"),
            "newAccount": format!("{b}/acme/new-account"),
            "newOrder": format!("{b}/acme/new-order"),
            "revokeCert": format!("{b}/acme/revoke-cert"),
            "meta": { "externalAccountRequired": false },
        }),
        None,
    ))
}

async fn new_nonce(method: axum::http::Method) -> StatusCode {
    if method == axum::http::Method::HEAD {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    }
}

/// `https://HOST` of a request: the URL clients sign (`url`) and are sent to.
fn base_url(headers: &HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    let host = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| headers.get(header::HOST)?.to_str().ok().map(str::to_string))?;
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    ok.then(|| format!("https://{host}"))
}

/// A JSON body with `status` and, for a created or found resource, `Location`.
fn json_response(status: StatusCode, body: &Value, location: Option<&str>) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    if let Some(v) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// The largest ACME request body accepted (a CSR or a certificate fits many times over).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// A signed POST whose JWS checked out (see [`AcmeState::verify`]): the extractor every
/// POST handler takes, so none can forget the checks.
struct Post {
    base: String,
    signed: Signed,
}

impl FromRequest<Arc<AcmeState>> for Post {
    type Rejection = Problem;

    async fn from_request(req: Request, st: &Arc<AcmeState>) -> Result<Post, Problem> {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
            .await
            .map_err(|_| {
                Problem::malformed(format!(
                    "the request body is over {MAX_BODY_BYTES} bytes or unreadable"
                ))
            })?;
        st.verify(&parts.headers, &parts.uri, &body)
    }
}

impl AcmeState {
    /// Checks the JWS of a POST to `path` (see [`jws::verify`]); an account's request
    /// also takes one from its rate allowance.
    fn verify(
        &self,
        headers: &HeaderMap,
        uri: &axum::http::Uri,
        body: &[u8],
    ) -> Result<Post, Problem> {
        let base = base_url(headers, uri)
            .ok_or_else(|| Problem::malformed("the request names no host"))?;
        let url = format!("{base}{}", uri.path());
        let account_prefix = format!("{base}/acme/acct/");
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let signed = jws::verify(
            content_type,
            body,
            &Expect {
                url: &url,
                account_prefix: &account_prefix,
                nonces: &self.nonces,
                store: &self.store,
            },
        )?;
        if let jws::Signer::Account(a) = &signed.signer
            && !self.limiter.allow(&a.id)
        {
            return Err(Problem::rate_limited(
                format!(
                    "account {} is over its request rate ([acme] rate_limit)",
                    a.id
                ),
                1,
            ));
        }
        Ok(Post { base, signed })
    }
}

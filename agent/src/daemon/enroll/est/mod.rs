//! The EST server (RFC 7030) under `/.well-known/est/`: `cacerts` (the CA
//! certificates), `csrattrs` (what a request should look like), `simpleenroll` (first
//! enrollment, authenticated by a one-use bootstrap secret over HTTP Basic or by a
//! device certificate from `[est] manufacturer_ca`) and `simplereenroll` (renewal,
//! authenticated by the client's current certificate from this CA, not revoked).
//!
//! Every request is checked before anything is written (see [`request`]); every
//! certificate is signed through the CA's usual issuance path and recorded in the
//! inventory and the audit log in one transaction with the bootstrap secret's use.

mod bootstrap;
mod certs_only;
mod handlers;
mod request;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use keyward_core::audit::Event;
use keyward_core::store::StateDir;

pub use bootstrap::add as add_bootstrap_secret;

use super::super::audit::Audit;
use super::super::ca::AgentCa;
use super::super::config::EstSettings;
use super::client_auth::ClientRoots;

/// The realm named in `WWW-Authenticate` when a client must authenticate.
const REALM: &str = "Basic realm=\"keyward EST\", charset=\"UTF-8\"";

/// Bootstrap secrets checked at once (Argon2id, ~19 MiB each).
const MAX_SECRET_CHECKS: usize = 4;

/// What the EST handlers share.
#[derive(Debug)]
pub struct EstState {
    settings: EstSettings,
    ca: AgentCa,
    state: StateDir,
    audit: Audit,
    clients: ClientRoots,
    /// One issuance at a time: each holds the state directory's lock, which blocks
    /// its thread while another holds it.
    issuing: tokio::sync::Mutex<()>,
    /// Bounds the secret checks in progress: each Argon2 hash takes ~19 MiB, so a flood
    /// of Basic requests waits here instead of exhausting memory.
    secret_checks: tokio::sync::Semaphore,
}

impl EstState {
    /// The server's state: certificates from `ca` valid as `settings` say, recorded in
    /// `state` and `audit`; client certificates classified by `clients`.
    pub fn new(
        settings: EstSettings,
        ca: AgentCa,
        state: StateDir,
        audit: Audit,
        clients: ClientRoots,
    ) -> Arc<EstState> {
        Arc::new(EstState {
            settings,
            ca,
            state,
            audit,
            clients,
            issuing: tokio::sync::Mutex::new(()),
            secret_checks: tokio::sync::Semaphore::new(MAX_SECRET_CHECKS),
        })
    }
}

/// EST's routes under `/.well-known/est/`.
pub fn router(state: Arc<EstState>) -> Router {
    Router::new()
        .route("/.well-known/est/cacerts", get(handlers::cacerts))
        .route("/.well-known/est/csrattrs", get(handlers::csrattrs))
        .route(
            "/.well-known/est/simpleenroll",
            post(handlers::simpleenroll),
        )
        .route(
            "/.well-known/est/simplereenroll",
            post(handlers::simplereenroll),
        )
        .with_state(state)
}

/// A refused EST request: the status and one line for the client (never a secret).
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    reason: String,
}

impl Refusal {
    /// 401: the client must authenticate (or did so wrongly).
    fn unauthorized(reason: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::UNAUTHORIZED,
            reason: reason.into(),
        }
    }

    /// 403: authenticated, but not allowed this.
    fn forbidden(reason: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::FORBIDDEN,
            reason: reason.into(),
        }
    }

    /// 400: the request itself is wrong.
    fn bad_request(reason: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            reason: reason.into(),
        }
    }

    /// 500: the server failed (the cause goes to the log, not to the client).
    fn internal(e: &keyward_core::Error) -> Refusal {
        tracing::error!(error = %keyward_core::chain_line(e), "EST request failed");
        Refusal {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            reason: "the server could not complete the request".into(),
        }
    }

    /// Logs and audits this refusal of `endpoint` for `peer`.
    fn noted(self, st: &EstState, endpoint: &str, peer: SocketAddr) -> Refusal {
        tracing::info!(%peer, endpoint, status = self.status.as_u16(), reason = %self.reason, "EST request refused");
        st.audit.note(
            Event::new("est_refused")
                .with("endpoint", endpoint)
                .with("peer", peer.to_string())
                .with("status", self.status.as_u16())
                .with("reason", &self.reason),
        );
        self
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.reason),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM));
        }
        response
    }
}

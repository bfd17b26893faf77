//! The HTTP layer: one `reqwest` client per server or cluster, the token on every
//! request, failover from node to node and retries with exponential backoff on 5xx and
//! network errors within one deadline, and Vault's answers turned into
//! `keyward_core::Error`s.
//!
//! Why plain reqwest and not vaultrs 0.8 (one HTTP path for everything):
//! - vaultrs 0.8 is built on reqwest 0.13 while keyward uses 0.12: two HTTP stacks, and
//!   the benchmark's "same HTTP client settings" would compare different clients;
//! - vaultrs keeps the token as a plain `String` inside `Debug`-printable settings and
//!   swaps it only through `&mut self`, which fights zeroizing, redaction and renewal
//!   behind a shared client;
//! - keyward needs the raw status and error list of every answer (sealed server,
//!   permission denied on which path, 5xx to retry) and fields vaultrs lacks
//!   (`salt_length`); the Transit, token, AppRole and PKI calls used here are a few
//!   small JSON bodies.

pub(crate) mod auth;
mod errors;
mod nodes;
mod renewal;
mod retry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keyward_core::Error;
use reqwest::Method;
use reqwest::header::HeaderValue;
use serde::Deserialize;
use serde::de::DeserializeOwned;

pub(crate) use auth::AuthBlock;
pub use auth::AuthStatus;
pub(crate) use retry::SentOnce;

use crate::settings::VaultSettings;

/// A connection to one Vault/OpenBao server or the nodes of one cluster: HTTP client,
/// token (kept fresh by a background task) and deadline. Cheap to clone; clones share
/// the token.
///
/// On a cluster, one token serves every node: raft replicates it, so one login (and
/// each renewal) goes through whichever node answers, like any other request.
#[derive(Clone)]
pub struct VaultClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    http: reqwest::Client,
    nodes: nodes::Nodes,
    namespace: Option<HeaderValue>,
    deadline: Duration,
    pub(crate) auth: auth::AuthState,
}

impl std::fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultClient")
            .field("addresses", &self.inner.nodes.all())
            .field("auth", &self.inner.auth.method_name())
            .finish_non_exhaustive()
    }
}

/// How a request carries the token (logins carry none: `call_anonymous`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenUse {
    /// The current token; on "permission denied" a refreshable token is renewed by a
    /// new login and the request sent once more.
    Current,
    /// The current token, never refreshed (renewal and lookup of the token itself).
    NoRefresh,
}

/// Vault's JSON envelope around every answer.
#[derive(Deserialize)]
pub(crate) struct Envelope<T> {
    /// The payload, absent on 204 answers.
    #[serde(default = "Option::default")]
    pub data: Option<T>,
    /// Login and renewal answers carry the token and its lease here.
    #[serde(default)]
    pub auth: Option<AuthBlock>,
    /// Non-fatal remarks (e.g. a TTL cut to the mount's maximum).
    #[serde(default)]
    pub warnings: Option<Vec<String>>,
}

impl VaultClient {
    /// A client for `settings`; no network traffic until the first request (the first
    /// request logs in when the auth method is AppRole or a token file).
    pub fn new(settings: &VaultSettings) -> Result<Self, Error> {
        let namespace = match &settings.namespace {
            Some(ns) => Some(HeaderValue::from_str(ns).map_err(|_| {
                Error::InvalidInput(format!(
                    "Vault namespace '{ns}' is not a valid header value"
                ))
            })?),
            None => None,
        };
        Ok(VaultClient {
            inner: Arc::new(Inner {
                http: settings.http_client()?,
                nodes: nodes::Nodes::new(&settings.addresses())?,
                namespace,
                deadline: settings.request_deadline,
                auth: auth::AuthState::new(settings.auth.clone()),
            }),
        })
    }

    /// The address requests go to first: the node that answered last (the first
    /// configured one until any has).
    pub fn address(&self) -> &str {
        self.inner.nodes.addr(self.inner.nodes.first_to_try())
    }

    /// Every node's address, in the configured order.
    pub fn addresses(&self) -> &[String] {
        self.inner.nodes.all()
    }

    /// The deadline of one operation, retries included.
    pub fn deadline(&self) -> Duration {
        self.inner.deadline
    }

    /// Logs in if needed and checks a node (of a cluster: any) is unsealed and accepts
    /// the token. A sealed node answers every request but the seal status with "Vault
    /// is sealed", which moves the request on to the next node; with every node sealed
    /// the error says so.
    pub async fn check(&self) -> Result<(), Error> {
        self.call::<serde_json::Value>(
            Method::GET,
            "auth/token/lookup-self",
            None,
            TokenUse::Current,
        )
        .await
        .map(|_| ())
    }

    /// Sends one JSON request to `/v1/{path}` and decodes the envelope of the answer.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        token: TokenUse,
    ) -> Result<Envelope<T>, Error> {
        let bytes = self.send(&method, path, body, token).await?;
        self.decode(path, &bytes)
    }

    /// [`VaultClient::call`] without a token (logins). Separate from `call` so that
    /// obtaining a token never statically depends on obtaining a token.
    pub(crate) async fn call_anonymous<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Envelope<T>, Error> {
        let deadline = Instant::now() + self.inner.deadline;
        let bytes = self
            .send_with(&method, path, body, None, deadline)
            .await
            .map_err(|f| f.error)?;
        self.decode(path, &bytes)
    }

    fn decode<T: DeserializeOwned>(&self, path: &str, bytes: &[u8]) -> Result<Envelope<T>, Error> {
        if bytes.is_empty() {
            return Ok(Envelope {
                data: None,
                auth: None,
                warnings: None,
            });
        }
        let env: Envelope<T> =
            serde_json::from_slice(bytes).map_err(|e| self.decode_error(path, e))?;
        for w in env.warnings.iter().flatten() {
            tracing::warn!(vault = %self.address(), path, warning = %w, "Vault/OpenBao warning");
        }
        Ok(env)
    }

    pub(crate) fn decode_error(&self, path: &str, e: serde_json::Error) -> Error {
        Error::backend_with(
            format!(
                "Vault/OpenBao at {} answered {path} with unexpected JSON",
                self.address()
            ),
            e,
        )
    }

    /// Sends with the token as `token_use` says; a "permission denied" under
    /// `TokenUse::Current` gets one more try with a newly obtained token, if the auth
    /// method can obtain one. One deadline covers it all.
    pub(crate) async fn send(
        &self,
        method: &Method,
        path: &str,
        body: Option<&[u8]>,
        token_use: TokenUse,
    ) -> Result<Bytes, Error> {
        let deadline = Instant::now() + self.inner.deadline;
        let (token, generation) = self.token().await?;
        match self
            .send_with(method, path, body, Some(&token), deadline)
            .await
        {
            Ok(b) => Ok(b),
            Err(f)
                if f.denied
                    && token_use == TokenUse::Current
                    && self.refresh_after_denial(generation).await =>
            {
                let (token, _) = self.token().await?;
                self.send_with(method, path, body, Some(&token), deadline)
                    .await
                    .map_err(|f| f.error)
            }
            Err(f) => Err(f.error),
        }
    }
}

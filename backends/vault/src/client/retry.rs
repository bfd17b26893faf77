//! One request on the wire: sent to a cluster's nodes in turn, retried with exponential
//! backoff within one deadline, and the final error in plain words.
//!
//! A request starts at the node that answered last. A connection error, a timeout, a
//! 5xx, a sealed node, a 429 or a redirect moves it on to the next node at once; after
//! a round over every node it pauses (backoff), then goes round again until the
//! deadline. A standby's redirect is followed only to a configured node (the token goes
//! nowhere else); to any other address it just moves the request on. Any other 4xx is
//! final at once: every node would refuse it alike.
//!
//! A request whose answer was lost (the node died after acting on it) is sent again to
//! another node, so the operation may happen twice. Every request keyward makes is
//! harmless to repeat: a Transit signature or a second signed intermediate for the same
//! key, a token renewal, a login (it uses one more of a secret_id's uses, if limited),
//! and a Transit key creation (which never overwrites, see `generate_transit`). The one
//! request that is not, Transit `rotate`, goes through [`VaultClient::send_once`]
//! instead, and its caller decides from the key's version whether to send it again.

use std::time::{Duration, Instant};

use bytes::Bytes;
use keyward_core::Error;
use keyward_core::backoff::Backoff;
use reqwest::header::{CONTENT_TYPE, HeaderValue, LOCATION};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::VaultClient;
use super::errors::{self, Verdict};
use super::nodes::Round;

/// At most this many retries of an HTTP 500 answer (often a lasting logical error in
/// Vault) per configured node; other 5xx and network errors are retried until the
/// deadline.
const MAX_500_RETRIES: u32 = 2;
/// The pause before each round of retries: 50 ms doubling up to 2 s, then ±25 % jitter.
const BACKOFF: Backoff =
    Backoff::doubling(Duration::from_millis(50), Duration::from_secs(2)).jittered(0.75, 1.25);
/// On a cluster, one attempt gets at most this share of the deadline, so a node that
/// accepts and then hangs (partitioned, stopped) leaves time to try the others.
const ATTEMPT_SHARE: u32 = 3;

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<String>,
}

/// A request that failed for good: the error, and whether it was "permission denied".
pub(crate) struct Failed {
    pub(crate) denied: bool,
    pub(crate) error: Error,
}

impl From<Error> for Failed {
    fn from(error: Error) -> Self {
        Failed {
            denied: false,
            error,
        }
    }
}

/// The outcome of a request sent exactly once.
pub(crate) enum SentOnce {
    /// Vault acted and answered 2xx.
    Done,
    /// Vault answered that the request is wrong or refused (a final 4xx): it did not act.
    Refused(Error),
    /// No answer, or one that does not say whether Vault acted (5xx, a lost
    /// connection, a timeout) or that another node must serve (sealed, redirect).
    Unknown(Error),
}

/// Why the last attempt failed, kept to build the final error.
enum Failure {
    Status(u16, Vec<String>),
    Network(reqwest::Error),
    /// A node of a cluster took its whole share of the deadline.
    Timeout(Duration),
}

/// One HTTP answer: status, where a redirect points, and the whole body.
struct Reply {
    status: StatusCode,
    location: Option<String>,
    body: Bytes,
}

impl VaultClient {
    /// Sends until a 2xx answer (its body is returned), a final error, or `deadline`.
    pub(crate) async fn send_with(
        &self,
        method: &Method,
        path: &str,
        body: Option<&[u8]>,
        token: Option<&str>,
        deadline: Instant,
    ) -> Result<Bytes, Failed> {
        let nodes = &self.inner.nodes;
        let started = Instant::now();
        let attempt_limit = if nodes.len() > 1 {
            self.inner.deadline / ATTEMPT_SHARE
        } else {
            self.inner.deadline
        };
        let max_server_errors = MAX_500_RETRIES * nodes.len() as u32;
        let mut node = nodes.first_to_try();
        let mut attempts: u32 = 0;
        let mut rounds: u32 = 0;
        let mut round = Round::new(nodes);
        let mut server_errors: u32 = 0;
        loop {
            attempts += 1;
            let addr = nodes.addr(node);
            let url = format!("{addr}/v1/{path}");
            let remaining = deadline.saturating_duration_since(Instant::now());
            let limit = remaining.min(attempt_limit);
            let outcome = tokio::time::timeout(limit, self.once(method, &url, body, token)).await;
            let mut sealed = false;
            let mut redirect = None;
            let failure = match outcome {
                Err(_) if limit == remaining => {
                    return Err(self.deadline_error(addr, method, path).into());
                }
                Err(_) => Failure::Timeout(limit),
                Ok(Ok(reply)) if reply.status.is_success() => {
                    nodes.answered(node);
                    return Ok(reply.body);
                }
                Ok(Ok(reply)) => {
                    let code = reply.status.as_u16();
                    let mut errors = parse_errors(&reply.body);
                    let verdict = errors::verdict(code, &errors);
                    let fatal = verdict == Verdict::Final
                        || (verdict == Verdict::ServerError && server_errors >= max_server_errors);
                    if fatal {
                        return Err(Failed {
                            denied: code == StatusCode::FORBIDDEN.as_u16(),
                            error: errors::status_error(addr, method, path, code, &errors),
                        });
                    }
                    match verdict {
                        Verdict::ServerError => server_errors += 1,
                        Verdict::Sealed => sealed = true,
                        _ => {}
                    }
                    if let Some(location) = reply.location {
                        match nodes.redirect_target(&location) {
                            Some(target) => redirect = Some(target),
                            None => errors.push(format!(
                                "redirected to {location}, which is not a configured address"
                            )),
                        }
                    }
                    Failure::Status(code, errors)
                }
                Ok(Err(e)) if e.is_builder() => {
                    return Err(Error::backend_with(
                        format!("cannot build the request {method} {url}"),
                        e,
                    )
                    .into());
                }
                Ok(Err(e)) if untrusted_certificate(&e) => {
                    return Err(Error::backend_with(
                        format!(
                            "the TLS certificate of Vault/OpenBao at {addr} is not trusted or \
                             not valid for its name: set VAULT_CACERT to the CA that issued it"
                        ),
                        e,
                    )
                    .into());
                }
                Ok(Err(e)) => Failure::Network(e),
            };
            if let Some(next) = round.next(node, sealed, redirect) {
                tracing::debug!(vault = %addr, next = %nodes.addr(next), path, attempts, "trying the next Vault/OpenBao node");
                node = next;
                continue;
            }
            if round.all_sealed() {
                // Every node is sealed: an operator must unseal one first.
                return Err(self
                    .final_error(failure, node, method, path, attempts, started)
                    .into());
            }
            rounds += 1;
            round = Round::new(nodes);
            let next = nodes.after(node);
            let delay = BACKOFF.delay(rounds);
            if Instant::now() + delay >= deadline {
                return Err(self
                    .final_error(failure, node, method, path, attempts, started)
                    .into());
            }
            tracing::debug!(vault = %addr, next = %nodes.addr(next), path, attempts, ?delay, "retrying Vault request");
            tokio::time::sleep(delay).await;
            node = next;
        }
    }

    /// Sends once, with the current token, to the node that answered last: never again,
    /// so a request whose answer is lost is not repeated. The caller looks at the
    /// result to decide whether sending again is safe.
    pub(crate) async fn send_once(
        &self,
        method: &Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> SentOnce {
        let (token, _) = match self.token().await {
            Ok(t) => t,
            Err(e) => return SentOnce::Refused(e),
        };
        let nodes = &self.inner.nodes;
        let node = nodes.first_to_try();
        let addr = nodes.addr(node);
        let url = format!("{addr}/v1/{path}");
        let limit = self.inner.deadline;
        let started = Instant::now();
        let failure =
            match tokio::time::timeout(limit, self.once(method, &url, body, Some(&token))).await {
                Err(_) => Failure::Timeout(limit),
                Ok(Ok(reply)) if reply.status.is_success() => {
                    nodes.answered(node);
                    return SentOnce::Done;
                }
                Ok(Ok(reply)) => {
                    let code = reply.status.as_u16();
                    let errors = parse_errors(&reply.body);
                    if errors::verdict(code, &errors) == Verdict::Final {
                        return SentOnce::Refused(errors::status_error(
                            addr, method, path, code, &errors,
                        ));
                    }
                    Failure::Status(code, errors)
                }
                Ok(Err(e)) => Failure::Network(e),
            };
        SentOnce::Unknown(self.final_error(failure, node, method, path, 1, started))
    }

    /// One HTTP exchange; the whole body is read.
    async fn once(
        &self,
        method: &Method,
        url: &str,
        body: Option<&[u8]>,
        token: Option<&str>,
    ) -> Result<Reply, reqwest::Error> {
        let mut req = self.inner.http.request(method.clone(), url);
        if let Some(t) = token {
            // Checked to be a valid header value when the token was obtained.
            if let Ok(mut v) = HeaderValue::from_str(t) {
                v.set_sensitive(true);
                req = req.header("X-Vault-Token", v);
            }
        }
        if let Some(ns) = &self.inner.namespace {
            req = req.header("X-Vault-Namespace", ns.clone());
        }
        if let Some(b) = body {
            req = req
                .header(CONTENT_TYPE, "application/json")
                .body(b.to_vec());
        }
        let resp = req.send().await?;
        let status = resp.status();
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_string);
        let body = resp.bytes().await?;
        Ok(Reply {
            status,
            location,
            body,
        })
    }

    fn deadline_error(&self, addr: &str, method: &Method, path: &str) -> Error {
        Error::unavailable(
            format!(
                "Vault/OpenBao at {addr} did not answer {method} {path} within {:?}",
                self.inner.deadline
            ),
            None,
        )
    }

    /// The error after the last attempt, to `node`, failed with `failure`.
    fn final_error(
        &self,
        failure: Failure,
        node: usize,
        method: &Method,
        path: &str,
        attempts: u32,
        started: Instant,
    ) -> Error {
        let addr = self.inner.nodes.addr(node);
        let count = self.inner.nodes.len();
        let tries = if count > 1 {
            format!("{attempts} attempts over {count} addresses")
        } else {
            format!("{attempts} attempts")
        };
        match failure {
            Failure::Status(code, errors) => {
                errors::status_error(addr, method, path, code, &errors)
            }
            Failure::Network(e) => Error::unavailable(
                format!(
                    "Vault/OpenBao at {addr} unreachable ({tries} in {:.1?})",
                    started.elapsed()
                ),
                Some(Box::new(e)),
            ),
            Failure::Timeout(limit) => Error::unavailable(
                format!(
                    "Vault/OpenBao at {addr} did not answer {method} {path} within {limit:?} \
                     ({tries} in {:.1?})",
                    started.elapsed()
                ),
                None,
            ),
        }
    }
}

/// Whether a transport error is the server's certificate failing verification (no
/// retry will help; the CA file is wrong or missing).
fn untrusted_certificate(e: &reqwest::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.to_string().contains("invalid peer certificate") {
            return true;
        }
        cur = err.source();
    }
    false
}

fn parse_errors(bytes: &[u8]) -> Vec<String> {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(b) => b.errors,
        Err(_) => {
            let text = String::from_utf8_lossy(bytes);
            let text = text.trim();
            if text.is_empty() {
                Vec::new()
            } else {
                vec![text.chars().take(200).collect()]
            }
        }
    }
}

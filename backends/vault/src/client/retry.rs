//! One request on the wire: retries with exponential backoff on 5xx and network
//! errors, within one deadline, and the final error in plain words.

use std::time::{Duration, Instant};

use bytes::Bytes;
use keyward_core::Error;
use keyward_core::backoff::Backoff;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::{VaultClient, errors};

/// At most this many retries of an HTTP 500 answer (often a lasting logical error in
/// Vault); 502-504 and network errors are retried until the deadline.
const MAX_500_RETRIES: u32 = 2;
/// The pause before each retry: 50 ms doubling up to 2 s, then ±25 % jitter.
const BACKOFF: Backoff =
    Backoff::doubling(Duration::from_millis(50), Duration::from_secs(2)).jittered(0.75, 1.25);

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

/// Why the last attempt failed, kept to build the final error.
enum Failure {
    Status(u16, Vec<String>),
    Network(reqwest::Error),
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
        let started = Instant::now();
        let url = format!("{}/v1/{path}", self.inner.addr);
        let mut attempts: u32 = 0;
        let mut server_errors: u32 = 0;
        loop {
            attempts += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let outcome =
                tokio::time::timeout(remaining, self.once(method, &url, body, token)).await;
            let failure = match outcome {
                Err(_) => return Err(self.deadline_error(method, path).into()),
                Ok(Ok((status, bytes))) if status.is_success() => return Ok(bytes),
                Ok(Ok((status, bytes))) => {
                    let code = status.as_u16();
                    let errors = parse_errors(&bytes);
                    let fatal = !errors::retryable_status(code, &errors)
                        || (code == 500 && server_errors >= MAX_500_RETRIES);
                    if fatal {
                        return Err(Failed {
                            denied: code == StatusCode::FORBIDDEN.as_u16(),
                            error: errors::status_error(
                                &self.inner.addr,
                                method,
                                path,
                                code,
                                &errors,
                            ),
                        });
                    }
                    if code == 500 {
                        server_errors += 1;
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
                            "the TLS certificate of Vault/OpenBao at {} is not trusted or not \
                             valid for its name: set VAULT_CACERT to the CA that issued it",
                            self.inner.addr
                        ),
                        e,
                    )
                    .into());
                }
                Ok(Err(e)) => Failure::Network(e),
            };
            let delay = BACKOFF.delay(attempts);
            if Instant::now() + delay >= deadline {
                return Err(self
                    .final_error(failure, method, path, attempts, started)
                    .into());
            }
            tracing::debug!(vault = %self.inner.addr, path, attempts, ?delay, "retrying Vault request");
            tokio::time::sleep(delay).await;
        }
    }

    /// One HTTP exchange; the whole body is read.
    async fn once(
        &self,
        method: &Method,
        url: &str,
        body: Option<&[u8]>,
        token: Option<&str>,
    ) -> Result<(StatusCode, Bytes), reqwest::Error> {
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
        let bytes = resp.bytes().await?;
        Ok((status, bytes))
    }

    fn deadline_error(&self, method: &Method, path: &str) -> Error {
        Error::unavailable(
            format!(
                "Vault/OpenBao at {} did not answer {method} {path} within {:?}",
                self.inner.addr, self.inner.deadline
            ),
            None,
        )
    }

    fn final_error(
        &self,
        failure: Failure,
        method: &Method,
        path: &str,
        attempts: u32,
        started: Instant,
    ) -> Error {
        match failure {
            Failure::Status(code, errors) => {
                errors::status_error(&self.inner.addr, method, path, code, &errors)
            }
            Failure::Network(e) => Error::unavailable(
                format!(
                    "Vault/OpenBao at {} unreachable ({attempts} attempts in {:.1?})",
                    self.inner.addr,
                    started.elapsed()
                ),
                Some(Box::new(e)),
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

//! Every KMS call goes through [`Limits::call`]: it takes a concurrency slot, retries
//! throttling and transient failures with exponential back-off and full jitter, and
//! gives up as `Unavailable` when the deadline would be passed.

use std::future::Future;
use std::time::{Duration, Instant};

use aws_sdk_kms::error::SdkError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use keyward_core::backoff::Backoff;
use keyward_core::{Error, KeyUri};
use tokio::sync::Semaphore;
use tokio::time::timeout_at;

use crate::client::KmsClient;
use crate::errors::Failure;

/// First back-off ceiling; it doubles with each attempt up to [`BACKOFF_CAP`].
const BACKOFF_BASE: Duration = Duration::from_millis(25);
/// Largest back-off ceiling.
const BACKOFF_CAP: Duration = Duration::from_secs(1);
/// Full jitter: a uniform pause between zero and the exponentially growing ceiling.
const BACKOFF: Backoff = Backoff::doubling(BACKOFF_BASE, BACKOFF_CAP).jittered(0.0, 1.0);

/// Whether an operation may safely be sent twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Idempotency {
    /// Reads and signatures: retry every transient failure.
    Safe,
    /// CreateKey: retry only when KMS cannot have acted (throttled, connection refused),
    /// so that a lost answer never leaves a second, orphaned key behind.
    Unsafe,
}

/// Why a failed attempt may succeed later.
enum Transient {
    /// No answer: connection refused or reset, timeout, truncated response.
    Unreachable,
    /// KMS asked us to slow down.
    Throttled(String),
    /// KMS answered with a server-side failure.
    ServerError(String),
}

/// The backend's concurrency limit and deadline, shared by all its keys.
#[derive(Debug)]
pub(crate) struct Limits {
    slots: Semaphore,
    max: usize,
    deadline: Duration,
}

impl Limits {
    /// At most `max` requests in flight (at least one); each operation bounded by `deadline`.
    pub(crate) fn new(max: usize, deadline: Duration) -> Self {
        let max = max.max(1);
        Limits {
            slots: Semaphore::new(max),
            max,
            deadline,
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the deadline is near.
    /// `op` and `subject` (the key URI) name the operation in error messages.
    pub(crate) async fn call<T, E, F, Fut>(
        &self,
        client: &KmsClient,
        op: &'static str,
        subject: &KeyUri,
        idempotency: Idempotency,
        mut attempt: F,
    ) -> Result<T, Failure<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let start = Instant::now();
        let deadline = tokio::time::Instant::from_std(start + self.deadline);
        let Ok(permit) = timeout_at(deadline, self.slots.acquire()).await else {
            return Err(Failure::Done(Error::unavailable(
                format!(
                    "AWS KMS {op} for {subject}: all {} request slots stayed busy for {:?}",
                    self.max, self.deadline
                ),
                None,
            )));
        };
        let _permit = permit.map_err(|e| Failure::Done(Error::backend_with("KMS limiter", e)))?;
        let mut tries = 0u32;
        loop {
            tries += 1;
            let err = match timeout_at(deadline, attempt()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => e,
                Err(_) => {
                    return Err(Failure::Done(Error::unavailable(
                        format!(
                            "AWS KMS at {} unreachable: no answer to {op} for {subject} within {:?} ({})",
                            client.endpoint(),
                            self.deadline,
                            attempts(tries)
                        ),
                        None,
                    )));
                }
            };
            let kind = match classify(&err) {
                Some(kind) => kind,
                None => return Err(Failure::fatal(err, op, subject, client.endpoint())),
            };
            let delay = BACKOFF.delay(tries);
            let may_retry = idempotency == Idempotency::Safe
                || matches!(kind, Transient::Throttled(_))
                || connection_refused(&err);
            if !may_retry || tokio::time::Instant::now() + delay >= deadline {
                let what = match kind {
                    Transient::Unreachable => "unreachable".to_string(),
                    Transient::Throttled(code) => format!("kept throttling ({code})"),
                    Transient::ServerError(code) => format!("kept failing ({code})"),
                };
                return Err(Failure::Done(Error::unavailable(
                    format!(
                        "AWS KMS at {} {what}: {op} for {subject} gave up after {} in {:.1} s",
                        client.endpoint(),
                        attempts(tries),
                        start.elapsed().as_secs_f64()
                    ),
                    Some(Box::new(err)),
                )));
            }
            tracing::debug!(op, key = %subject, attempt = tries, ?delay, "retrying AWS KMS call");
            tokio::time::sleep(delay).await;
        }
    }
}

/// `Some` for failures a later attempt may not repeat; `None` for final ones.
fn classify<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Option<Transient> {
    match err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => Some(Transient::Unreachable),
        SdkError::DispatchFailure(d) => {
            let transient = d.is_io()
                || d.is_timeout()
                || d.as_other()
                    .is_some_and(|k| k != aws_smithy_types::retry::ErrorKind::ClientError);
            transient.then_some(Transient::Unreachable)
        }
        SdkError::ServiceError(ctx) => {
            let code = ctx.err().code().unwrap_or("").to_string();
            let status = ctx.raw().status().as_u16();
            match code.as_str() {
                "ThrottlingException"
                | "Throttling"
                | "ThrottledException"
                | "TooManyRequestsException"
                | "RequestLimitExceeded" => Some(Transient::Throttled(code)),
                "KMSInternalException"
                | "DependencyTimeoutException"
                | "KeyUnavailableException"
                | "InternalFailure"
                | "ServiceUnavailable" => Some(Transient::ServerError(code)),
                _ if status == 429 => Some(Transient::Throttled(format!("HTTP {status}"))),
                _ if matches!(status, 500 | 502 | 503 | 504) => {
                    Some(Transient::ServerError(format!("HTTP {status}")))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn attempts(n: u32) -> String {
    if n == 1 {
        "1 attempt".into()
    } else {
        format!("{n} attempts")
    }
}

/// Whether the connection was refused, so the request surely never reached KMS.
fn connection_refused(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests;

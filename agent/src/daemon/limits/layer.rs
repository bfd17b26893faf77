//! The tower layer around the socket's gRPC services (`services`): per call, it takes a
//! token from the caller's rate-limit bucket (or answers `ResourceExhausted`) and puts
//! the request body under the request deadline ([`RequestDeadline`]; for a request
//! that is a stream which stays open, its first message).
//!
//! A call is not counted as in progress here: the connection's [`ConnInfo`] (which
//! tonic puts in every request's extensions) reaches the service, whose caller gate
//! counts the call only once the caller is attested, so calls no one is entitled to
//! cannot keep a connection from closing when idle.

use std::future::{Ready, ready};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::Either;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};

use super::bucket::UidRateLimiter;
use super::conn::ConnInfo;
use super::deadline::RequestDeadline;
use crate::daemon::config::CallerLimits;
use crate::daemon::metrics::Metrics;
use crate::daemon::sds::STREAMING_REQUEST_PATHS;

/// Builds [`CallerGuard`] services.
#[derive(Clone)]
pub struct CallerGuardLayer {
    limiter: UidRateLimiter,
    request_timeout: Duration,
    metrics: Metrics,
}

impl CallerGuardLayer {
    /// A layer enforcing the rate limit and request timeout of `limits`, counting
    /// refusals in `metrics`.
    pub fn new(limits: &CallerLimits, metrics: Metrics) -> Self {
        CallerGuardLayer {
            limiter: UidRateLimiter::new(limits.rate_per_second, limits.rate_burst),
            request_timeout: limits.request_timeout,
            metrics,
        }
    }
}

impl<S> tower::Layer<S> for CallerGuardLayer {
    type Service = CallerGuard<S>;

    fn layer(&self, inner: S) -> CallerGuard<S> {
        CallerGuard {
            inner,
            limiter: self.limiter.clone(),
            request_timeout: self.request_timeout,
            metrics: self.metrics.clone(),
        }
    }
}

/// The services, guarded (see the module documentation).
#[derive(Clone)]
pub struct CallerGuard<S> {
    inner: S,
    limiter: UidRateLimiter,
    request_timeout: Duration,
    metrics: Metrics,
}

impl<S> tower::Service<Request<Body>> for CallerGuard<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    /// The services' own future, or a refusal ready at once: no box of its own.
    type Future = Either<Ready<Result<Response<Body>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let uid = req.extensions().get::<ConnInfo>().map(|info| info.peer.uid);
        if let Some(uid) = uid
            && !self.limiter.allow(uid)
        {
            self.metrics.denied("rate_limited");
            tracing::debug!(uid, "call refused: rate limit");
            let status = Status::resource_exhausted(
                "too many calls from this uid; slow down (see [agent] rate_limit)",
            );
            return Either::Left(ready(Ok(status.into_http())));
        }
        let (timeout, metrics) = (self.request_timeout, self.metrics.clone());
        let req = if STREAMING_REQUEST_PATHS.contains(&req.uri().path()) {
            req.map(|body| Body::new(RequestDeadline::first_message(body, timeout, metrics)))
        } else {
            req.map(|body| Body::new(RequestDeadline::new(body, timeout, metrics)))
        };
        Either::Right(self.inner.call(req))
    }
}

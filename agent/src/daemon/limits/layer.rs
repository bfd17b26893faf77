//! The tower layer around the gRPC routes: per call, it takes a token from the
//! caller's rate-limit bucket (or answers `ResourceExhausted`), counts the call as in
//! progress on its connection until the response body ends, and copies the peer's
//! credentials where the service looks for them.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body as HttpBody, Frame, SizeHint};
use prost::bytes::Bytes;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};

use super::bucket::RateLimiter;
use super::conn::{CallInProgress, ConnInfo};
use crate::daemon::config::CallerLimits;
use crate::daemon::metrics::Metrics;

/// Builds [`CallerGuard`] services.
#[derive(Clone)]
pub struct CallerGuardLayer {
    limiter: RateLimiter,
    metrics: Metrics,
}

impl CallerGuardLayer {
    /// A layer enforcing the rate limit of `limits`, counting refusals in `metrics`.
    pub fn new(limits: &CallerLimits, metrics: Metrics) -> Self {
        CallerGuardLayer {
            limiter: RateLimiter::new(limits.rate_per_second, limits.rate_burst),
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
            metrics: self.metrics.clone(),
        }
    }
}

/// The routes, guarded (see the module documentation).
#[derive(Clone)]
pub struct CallerGuard<S> {
    inner: S,
    limiter: RateLimiter,
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
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let info = req.extensions().get::<ConnInfo>().cloned();
        let mut call = None;
        if let Some(info) = info {
            let uid = info.uds.peer_cred.map(|c| c.uid());
            if let Some(uid) = uid
                && !self.limiter.allow(uid)
            {
                self.metrics.denied("rate_limited");
                tracing::debug!(uid, "call refused: rate limit");
                let status = Status::resource_exhausted(
                    "too many calls from this uid; slow down (see [agent] rate_limit)",
                );
                return Box::pin(std::future::ready(Ok(status.into_http())));
            }
            call = Some(info.activity.start());
            req.extensions_mut().insert(info.uds);
        }
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| Body::new(Counted { body, _call: call })))
        })
    }
}

/// A response body that keeps its call counted as in progress until it is dropped.
struct Counted {
    body: Body,
    _call: Option<CallInProgress>,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

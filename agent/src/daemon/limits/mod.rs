//! Bounds on what callers of the agent's socket can make it hold: a cap on open
//! connections, an idle timeout for connections with no call in progress, a token
//! bucket of calls per uid, and the file descriptor limit raised so the cap (not
//! the kernel) is what refuses connections.
//!
//! The pieces: [`incoming`] accepts connections (closing those beyond the cap at once)
//! and wraps each in a [`conn::LimitedStream`] that ends itself when idle; the
//! [`layer::CallerGuardLayer`] around the gRPC routes counts the calls in progress on
//! each connection and answers `ResourceExhausted` to a uid past its rate.

mod bucket;
mod conn;
mod layer;

use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tokio::net::UnixListener;
use tokio::sync::Semaphore;

pub use conn::LimitedStream;
pub use layer::CallerGuardLayer;

use super::config::CallerLimits;
use super::metrics::Metrics;

/// How long accepting pauses after an accept error (e.g. out of file descriptors),
/// so the loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The accepted connections of `listener`, each wrapped with its idle timeout; a
/// connection beyond `limits.max_connections` open at once is closed at once.
pub fn incoming(
    listener: UnixListener,
    limits: CallerLimits,
    metrics: Metrics,
) -> impl Stream<Item = std::io::Result<LimitedStream>> {
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    futures_util::stream::unfold(
        (listener, slots, metrics),
        move |(listener, slots, metrics)| async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot accept a connection on the socket");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    metrics.denied("too_many_connections");
                    tracing::debug!("connection refused: max_connections reached");
                    drop(stream);
                    continue;
                };
                let conn = LimitedStream::new(stream, permit, limits.idle_timeout);
                return Some((Ok(conn), (listener, slots, metrics)));
            }
        },
    )
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit, so `max_connections`
/// open connections fit; logs (and carries on with the old limit) if it cannot.
pub fn raise_fd_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    if now.current == now.maximum {
        return;
    }
    let raised = Rlimit {
        current: now.maximum,
        maximum: now.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::debug!(limit = ?now.maximum, "raised the open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
}

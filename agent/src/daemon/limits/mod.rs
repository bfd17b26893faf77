//! Bounds on what callers of the agent's socket can make it hold: a cap on open
//! connections in all and per uid, an idle timeout for connections with no call in
//! progress, a deadline for a call's request to arrive, a token bucket of calls per
//! uid, and the file descriptor limit raised so the cap (not the kernel) is what
//! refuses connections.
//!
//! The pieces: [`incoming`] accepts connections (closing at once those beyond the
//! total or their uid's share, [`slots`]) and wraps each in a [`conn::LimitedStream`]
//! that ends itself when idle; the [`layer::CallerGuardLayer`] around the gRPC services
//! answers `ResourceExhausted` to a uid past its rate and puts each request body under
//! its [`deadline`].

mod bucket;
mod conn;
mod deadline;
mod layer;
mod slots;

use std::time::Duration;

use futures_util::Stream;
use tokio::io::Interest;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

pub use conn::{CallInProgress, ConnInfo, LimitedStream};
pub use layer::CallerGuardLayer;

use super::config::CallerLimits;
use super::metrics::Metrics;
use slots::ConnectionSlots;

/// How long accepting pauses after an accept error (e.g. out of file descriptors),
/// so the loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The accepted connections of `listener`, each wrapped with its idle timeout; a
/// connection beyond `limits.max_connections` open at once, or beyond
/// `limits.max_connections_per_uid` from its uid, is closed at once.
///
/// A connection is handed to the HTTP/2 server only once the caller has sent its first
/// bytes: until then it costs a small waiting task rather than the server's buffers,
/// and it is closed if nothing arrives within the idle timeout.
pub fn incoming(
    listener: UnixListener,
    limits: CallerLimits,
    metrics: Metrics,
) -> impl Stream<Item = std::io::Result<LimitedStream>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, limits, metrics, tx));
    ReceiverStream::new(rx).map(Ok)
}

/// Accepts until the server drops its end of `tx` (at shutdown, closing the listener).
async fn accept_loop(
    listener: UnixListener,
    limits: CallerLimits,
    metrics: Metrics,
    tx: mpsc::Sender<LimitedStream>,
) {
    let slots = ConnectionSlots::new(&limits);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = tx.closed() => return,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a connection on the socket");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let cred = match stream.peer_cred() {
            Ok(cred) => cred,
            Err(e) => {
                tracing::warn!(error = %e, "connection refused: no peer credentials");
                continue;
            }
        };
        let uid = cred.uid();
        let slot = match slots.take(uid) {
            Ok(slot) => slot,
            Err(full) => {
                metrics.denied(full.metric_reason());
                tracing::debug!(uid, ?full, "connection refused: no free slot");
                continue;
            }
        };
        let tx = tx.clone();
        let since = Instant::now();
        tokio::spawn(async move {
            match tokio::time::timeout(limits.idle_timeout, first_bytes(&stream)).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(_) => {
                    tracing::debug!("closing a connection that sent nothing");
                    return;
                }
            }
            let conn = LimitedStream::new(stream, cred, slot, limits.idle_timeout, since);
            let _ = tx.send(conn).await;
        });
    }
}

/// Waits until the caller has sent something (true) or hung up (false), without
/// reading it: readiness alone may be reported before any byte arrives.
async fn first_bytes(stream: &UnixStream) -> bool {
    use rustix::net::{RecvFlags, recv};
    loop {
        if stream.readable().await.is_err() {
            return false;
        }
        let mut probe = [0u8; 1];
        let peeked = stream.try_io(Interest::READABLE, || {
            recv(stream, &mut probe, RecvFlags::PEEK | RecvFlags::DONTWAIT)
                .map(|(n, _)| n)
                .map_err(std::io::Error::from)
        });
        match peeked {
            Ok(n) => return n > 0,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return false,
        }
    }
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

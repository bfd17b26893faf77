//! One accepted connection: closed (its reads end) once it has had no call in
//! progress for the idle timeout, counted against `max_connections` and its uid's
//! `max_connections_per_uid` until dropped.
//!
//! "No call in progress" covers a caller that never completes the HTTP/2 preface, one
//! that never sends a request, and one whose calls have all finished; an open stream
//! keeps its connection (dead peers there are found by HTTP/2 keepalive pings).

use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tokio::net::unix::UCred;
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

use super::slots::ConnectionSlot;
use crate::daemon::attest::Peer;
use crate::daemon::h2_authority::AuthorityFilter;

/// What the calls on one connection share: the peer's credentials and its activity.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer bound at accept (credentials and a pidfd), which attestation checks.
    pub peer: Arc<Peer>,
    /// The connection's calls in progress.
    pub activity: Arc<Activity>,
}

/// The calls in progress on a connection and when the last one ended.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    last_end: Mutex<Instant>,
}

/// Counts one call as in progress until dropped.
#[derive(Debug)]
pub struct CallInProgress(Arc<Activity>);

impl Activity {
    /// Marks a call as started; it ends when the returned guard is dropped.
    pub fn start(self: &Arc<Self>) -> CallInProgress {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        CallInProgress(self.clone())
    }

    /// When the connection becomes idle-expired; `None` while a call is in progress.
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let last = *self.last_end.lock().unwrap_or_else(|p| p.into_inner());
        Some(last + idle)
    }
}

impl Drop for CallInProgress {
    fn drop(&mut self) {
        *self.0.last_end.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An accepted Unix stream that reports end-of-file once idle for too long.
#[derive(Debug)]
pub struct LimitedStream {
    /// The socket, behind the filter that lets h2 take any `:authority`.
    inner: AuthorityFilter<UnixStream>,
    info: ConnInfo,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    expired: bool,
    _slot: ConnectionSlot,
}

impl LimitedStream {
    /// Wraps `inner` (accepted at `since`, with the SO_PEERCRED credentials `cred` read
    /// then), holding its connection slot (in all and in its uid's share) until dropped.
    pub fn new(
        inner: UnixStream,
        cred: UCred,
        slot: ConnectionSlot,
        idle: Duration,
        since: Instant,
    ) -> Self {
        let now = since;
        let peer = Peer::bind(
            inner.as_fd(),
            cred.uid(),
            cred.gid(),
            cred.pid(),
            since.elapsed(),
        );
        let info = ConnInfo {
            peer: Arc::new(peer),
            activity: Arc::new(Activity {
                in_flight: AtomicUsize::new(0),
                last_end: Mutex::new(now),
            }),
        };
        LimitedStream {
            inner: AuthorityFilter::new(inner),
            info,
            idle,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
            expired: false,
            _slot: slot,
        }
    }

    /// Whether the idle timeout has passed with no call in progress; otherwise the
    /// timer is re-armed (and registered with `cx`) for the next possible expiry.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        while !self.expired && self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            match self.info.activity.idle_deadline(self.idle) {
                None => self.timer.as_mut().reset(now + self.idle),
                Some(deadline) if deadline > now => self.timer.as_mut().reset(deadline),
                Some(_) => {
                    tracing::debug!(uid = self.info.peer.uid, pid = ?self.info.peer.pid, "closing an idle connection");
                    self.expired = true;
                }
            }
        }
        self.expired
    }
}

impl Connected for LimitedStream {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.idle_expired(cx) {
            // End of file: the HTTP/2 connection ends and the socket is closed.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    /// h2 writes a response's frames with one `writev` when its transport can: one
    /// system call (and one wakeup of the client) per response instead of one per frame.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::daemon::config::CallerLimits;
    use crate::daemon::limits::slots::ConnectionSlots;

    #[tokio::test]
    async fn a_response_goes_out_in_one_vectored_write() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let cred = ours.peer_cred().unwrap();
        let slot = ConnectionSlots::new(&CallerLimits::default())
            .take(cred.uid())
            .unwrap();
        let mut conn =
            LimitedStream::new(ours, cred, slot, Duration::from_secs(60), Instant::now());
        assert!(conn.is_write_vectored(), "h2 batches frames only then");
        let frames = [
            IoSlice::new(b"head"),
            IoSlice::new(b"data"),
            IoSlice::new(b"trailers"),
        ];
        let n = conn.write_vectored(&frames).await.unwrap();
        assert_eq!(n, 16, "every slice in one call");
        drop(conn);
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"headdatatrailers");
    }
}

//! The request deadline: a call whose request body has not ended within
//! `[agent] request_timeout` of its headers fails with `DeadlineExceeded`, so a caller
//! cannot hold a call (and with it a connection) by never finishing its request.
//!
//! tonic decodes a unary or server-streaming request by reading the body to its end
//! (the message, then END_STREAM or trailers) before it calls the method, and drops the
//! body then. A deadline on the body's end therefore covers exactly "headers to decoded
//! request": it starts when the layer sees the headers and no longer applies once the
//! body has ended. A call whose request is a stream that stays open (Envoy's SDS
//! `StreamSecrets`) has the deadline on its first message instead.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body as HttpBody, Frame, SizeHint};
use prost::bytes::Bytes;
use tokio::time::{Instant, Sleep};
use tonic::Status;
use tonic::body::Body;

use crate::daemon::metrics::Metrics;

/// A request body that fails once its deadline passes before it has ended.
pub struct RequestDeadline {
    body: Body,
    /// When the body must have ended; `None` once it has.
    deadline: Option<Instant>,
    /// The timer for `deadline`, armed only when the body first has to be waited for:
    /// a request that arrives with its headers (nearly every one) never touches the
    /// runtime's timer wheel.
    timer: Option<Pin<Box<Sleep>>>,
    expired: bool,
    metrics: Metrics,
    /// For a streamed request: how much of its first message has arrived (the deadline
    /// is disarmed once all of it has).
    first_message: Option<FirstMessage>,
}

/// How much of a gRPC request's first message has arrived: a 5-byte prefix (a flag
/// and the big-endian length), then that many bytes.
#[derive(Default)]
struct FirstMessage {
    prefix: [u8; 5],
    /// Bytes of the message, prefix included, seen so far.
    seen: usize,
}

impl FirstMessage {
    /// Takes in the next bytes of the body; true once the first message is whole.
    fn arrived(&mut self, mut data: &[u8]) -> bool {
        let prefix = self.prefix.len();
        if self.seen < prefix {
            let n = (prefix - self.seen).min(data.len());
            self.prefix[self.seen..self.seen + n].copy_from_slice(&data[..n]);
            self.seen += n;
            data = &data[n..];
            if self.seen < prefix {
                return false;
            }
        }
        self.seen = self.seen.saturating_add(data.len());
        let [_, length @ ..] = self.prefix;
        self.seen - prefix >= u32::from_be_bytes(length) as usize
    }
}

impl RequestDeadline {
    /// `body`, which must end within `timeout` from now (a refusal counted in `metrics`).
    pub fn new(body: Body, timeout: Duration, metrics: Metrics) -> Self {
        RequestDeadline {
            body,
            deadline: Some(Instant::now() + timeout),
            timer: None,
            expired: false,
            metrics,
            first_message: None,
        }
    }

    /// `body`, a stream of messages that stays open, whose first message must arrive
    /// within `timeout` from now.
    pub fn first_message(body: Body, timeout: Duration, metrics: Metrics) -> Self {
        RequestDeadline {
            first_message: Some(FirstMessage::default()),
            ..RequestDeadline::new(body, timeout, metrics)
        }
    }

    fn expired_status() -> Status {
        Status::deadline_exceeded(
            "the request did not arrive in time (see [agent] request_timeout)",
        )
    }
}

impl HttpBody for RequestDeadline {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Some(Err(Self::expired_status())));
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Some(deadline) = this.deadline {
            // Checked on every poll, a frame ready or not: a caller sending frames
            // without end (or trickling them) must still end in time. A frame that is
            // ready needs only a look at the clock; the timer wakes a waiting call.
            let passed = match polled {
                Poll::Ready(_) => Instant::now() >= deadline,
                Poll::Pending => this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)))
                    .as_mut()
                    .poll(cx)
                    .is_ready(),
            };
            if passed {
                this.expired = true;
                this.metrics.denied("request_timeout");
                tracing::debug!("call refused: the request did not end within request_timeout");
                return Poll::Ready(Some(Err(Self::expired_status())));
            }
        }
        let Poll::Ready(frame) = polled else {
            return Poll::Pending;
        };
        let first_arrived = match (&mut this.first_message, &frame) {
            (Some(first), Some(Ok(f))) => f.data_ref().is_some_and(|d| first.arrived(d)),
            _ => false,
        };
        if frame.is_none() || this.body.is_end_stream() || first_arrived {
            this.deadline = None;
            this.timer = None;
            this.first_message = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        !self.expired && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A request body: some frames, then either its end or nothing ever again.
    struct Sent {
        frames: VecDeque<Bytes>,
        ends: bool,
    }

    impl HttpBody for Sent {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            match self.frames.pop_front() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None if self.ends => Poll::Ready(None),
                None => Poll::Pending,
            }
        }
    }

    fn deadline(frames: &[&'static [u8]], ends: bool, timeout: Duration) -> RequestDeadline {
        let sent = Sent {
            frames: frames.iter().map(|f| Bytes::from_static(f)).collect(),
            ends,
        };
        RequestDeadline::new(Body::new(sent), timeout, Metrics::default())
    }

    async fn next(body: &mut RequestDeadline) -> Option<Result<Frame<Bytes>, Status>> {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
    }

    #[tokio::test]
    async fn a_request_that_never_ends_fails_at_its_deadline() {
        let mut body = deadline(&[b"message"], false, Duration::from_millis(100));
        let first = next(&mut body).await.expect("a frame").expect("data");
        assert_eq!(first.into_data().ok().as_deref(), Some(&b"message"[..]));
        let err = tokio::time::timeout(Duration::from_secs(5), next(&mut body))
            .await
            .expect("the deadline ends the wait")
            .expect("an item")
            .expect_err("an error");
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
        assert!(!body.is_end_stream());
        let again = next(&mut body).await.expect("an item").expect_err("still");
        assert_eq!(again.code(), tonic::Code::DeadlineExceeded);
    }

    #[tokio::test]
    async fn a_request_whose_frames_never_stop_still_fails_at_its_deadline() {
        let frames = [&b"x"[..]; 64];
        let mut body = deadline(&frames, false, Duration::from_millis(100));
        next(&mut body).await.expect("a frame").expect("in time");
        assert!(body.timer.is_none(), "no timer while frames are ready");
        tokio::time::sleep(Duration::from_millis(150)).await;
        let err = next(&mut body)
            .await
            .expect("an item")
            .expect_err("the next frame is ready, but late");
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    }

    #[tokio::test]
    async fn a_streamed_request_is_held_to_its_deadline_until_its_first_message_is_whole() {
        let timeout = Duration::from_millis(100);
        // A 3-byte message in three frames, then nothing: the stream stays open.
        let frames: [&'static [u8]; 3] = [b"\0\0\0", b"\0\x03a", b"bc"];
        let sent = Sent {
            frames: frames.iter().map(|f| Bytes::from_static(f)).collect(),
            ends: false,
        };
        let mut body = RequestDeadline::first_message(Body::new(sent), timeout, Metrics::default());
        for _ in frames {
            assert!(next(&mut body).await.expect("a frame").is_ok());
        }
        assert!(
            body.deadline.is_none(),
            "no deadline once the first message is whole"
        );
        // Only a part of the first message: the deadline still applies.
        let sent = Sent {
            frames: [Bytes::from_static(b"\0\0\0\0\x03ab")].into(),
            ends: false,
        };
        let mut body = RequestDeadline::first_message(Body::new(sent), timeout, Metrics::default());
        assert!(next(&mut body).await.expect("a frame").is_ok());
        let err = tokio::time::timeout(Duration::from_secs(5), next(&mut body))
            .await
            .expect("the deadline ends the wait")
            .expect("an item")
            .expect_err("an error");
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    }

    #[tokio::test]
    async fn a_request_that_ends_in_time_is_passed_on_and_the_deadline_disarmed() {
        let mut body = deadline(&[b"a", b"b"], true, Duration::from_millis(100));
        assert!(next(&mut body).await.expect("a").is_ok());
        assert!(next(&mut body).await.expect("b").is_ok());
        assert!(next(&mut body).await.is_none(), "the end is passed on");
        assert!(body.deadline.is_none(), "no deadline after the end");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            next(&mut body).await.is_none(),
            "no error after the deadline"
        );
    }
}

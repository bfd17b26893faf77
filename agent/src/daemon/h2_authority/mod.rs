//! A transport in front of h2 that makes the socket accept any HTTP/2 `:authority`.
//!
//! gRPC C-core clients (Python `grpcio`, hence the Python `spiffe` package; C++, Ruby,
//! PHP) and grpc-java send the socket path (`/run/keyward/agent.sock`) as the
//! `:authority` of a `unix:` target. h2, under tonic, parses it as an RFC 3986
//! authority and resets the stream with PROTOCOL_ERROR when that fails
//! (hyperium/h2 PR 487, open for years). The agent answers from the caller's kernel
//! credentials, never from the authority, so the authority carries nothing it needs.
//!
//! Why a transport and not a patched h2: a `[patch.crates-io]` of h2 would pin the
//! whole HTTP stack to a fork that has to be rebased on every h2 release, and the
//! project takes its dependencies as published. This wrapper sits on the bytes h2
//! reads, uses a maintained HPACK codec (`loona-hpack`) and h2's own authority check
//! (the `http` crate), and leaves h2 itself untouched.
//!
//! What it does, client→server only: the 24-byte preface and every frame other than
//! HEADERS/CONTINUATION pass through unchanged (payloads not yet read are read straight
//! into h2's buffer). Each request or trailer header block (HEADERS plus CONTINUATIONs
//! up to END_HEADERS) is decoded with the client's HPACK context, stripped of a
//! `:authority` that is empty or that h2 would reject, re-encoded with a context of
//! its own (kept in step with h2's decoder, since this wrapper is h2's only input) and
//! re-framed; see [`block`]. A block that repeats the previous one while neither HPACK
//! context has changed reuses its rewrite without decoding ([`reuse`]), which spares
//! loona-hpack's costly Huffman decoding on nearly every request. Server→client bytes
//! are not touched. A malformed or over-limit header block ends the connection with an
//! I/O error.

mod block;
mod reuse;
mod scan;
#[cfg(test)]
mod tests;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use self::block::{FrameHead, HeaderBlocks, Next};

/// The client connection preface (`PRI * HTTP/2.0...`), passed through unchecked.
const PREFACE_LEN: usize = 24;
/// How many client bytes are read ahead to find frame boundaries (per connection; a
/// request's frames are a few hundred bytes, and longer payloads are read straight
/// into h2's buffer).
const READ_AHEAD: usize = 4 * 1024;

/// A client connection whose request header blocks are rewritten on the way to h2.
#[derive(Debug)]
pub struct AuthorityFilter<S> {
    inner: S,
    /// Client bytes read ahead: `ahead[start..end]` is not handed on yet.
    ahead: Box<[u8]>,
    start: usize,
    end: usize,
    /// Rewritten header frames: `rewritten[sent..]` is not handed on yet.
    rewritten: Vec<u8>,
    sent: usize,
    state: State,
    blocks: HeaderBlocks,
}

/// Where the client's byte stream is.
#[derive(Debug)]
enum State {
    /// This many bytes (the preface, or a frame with its 9-byte head) go on unchanged.
    PassThrough(usize),
    /// At the start of a frame.
    FrameStart,
    /// This many payload bytes of a HEADERS or CONTINUATION frame are still to come.
    HeaderPayload(usize),
}

impl<S> AuthorityFilter<S> {
    /// Wraps a freshly accepted connection (nothing read from it yet).
    pub fn new(inner: S) -> Self {
        AuthorityFilter {
            inner,
            ahead: vec![0; READ_AHEAD].into_boxed_slice(),
            start: 0,
            end: 0,
            rewritten: Vec::new(),
            sent: 0,
            state: State::PassThrough(PREFACE_LEN),
            blocks: HeaderBlocks::default(),
        }
    }

    /// The bytes read ahead and not handed on yet.
    fn buffered(&self) -> usize {
        self.end - self.start
    }
}

impl<S: AsyncRead + Unpin> AuthorityFilter<S> {
    /// Reads more client bytes behind those already buffered; `Ok(0)` at end of file.
    fn read_ahead(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.start > 0 {
            self.ahead.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        let mut free = ReadBuf::new(&mut self.ahead[self.end..]);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut free))?;
        let n = free.filled().len();
        self.end += n;
        Poll::Ready(Ok(n))
    }

    /// Hands on at most `left` unchanged bytes, from the read-ahead buffer if it has
    /// any, else read from the client straight into `buf`; returns how many (0 at end
    /// of file).
    fn pass_through(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        left: usize,
    ) -> Poll<io::Result<usize>> {
        if self.buffered() > 0 {
            let n = left.min(self.buffered()).min(buf.remaining());
            buf.put_slice(&self.ahead[self.start..self.start + n]);
            self.start += n;
            return Poll::Ready(Ok(n));
        }
        let dst = buf.initialize_unfilled_to(left.min(buf.remaining()));
        let mut direct = ReadBuf::new(dst);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut direct))?;
        let n = direct.filled().len();
        buf.advance(n);
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFilter<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.sent < this.rewritten.len() {
                let n = (this.rewritten.len() - this.sent).min(buf.remaining());
                buf.put_slice(&this.rewritten[this.sent..this.sent + n]);
                this.sent += n;
                if this.sent == this.rewritten.len() {
                    this.rewritten.clear();
                    this.rewritten.shrink_to(READ_AHEAD);
                    this.sent = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            match this.state {
                State::PassThrough(0) => this.state = State::FrameStart,
                State::PassThrough(left) => {
                    // Zero bytes is end of file, which h2 sees as such.
                    let n = ready!(this.pass_through(cx, buf, left))?;
                    this.state = State::PassThrough(left - n);
                    return Poll::Ready(Ok(()));
                }
                State::FrameStart if this.buffered() < FrameHead::LEN => {
                    if ready!(this.read_ahead(cx))? == 0 {
                        return Poll::Ready(Ok(()));
                    }
                }
                State::FrameStart => {
                    let head = FrameHead::parse(&this.ahead[this.start..]);
                    this.state = match this.blocks.frame(head)? {
                        Next::PassThrough => State::PassThrough(FrameHead::LEN + head.len),
                        Next::HeaderPayload => {
                            this.start += FrameHead::LEN;
                            State::HeaderPayload(head.len)
                        }
                    };
                }
                State::HeaderPayload(0) => {
                    this.blocks.frame_end(&mut this.rewritten)?;
                    this.state = State::FrameStart;
                }
                State::HeaderPayload(left) => {
                    if this.buffered() == 0 && ready!(this.read_ahead(cx))? == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    let n = left.min(this.buffered());
                    this.blocks.payload(&this.ahead[this.start..this.start + n]);
                    this.start += n;
                    this.state = State::HeaderPayload(left - n);
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFilter<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
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

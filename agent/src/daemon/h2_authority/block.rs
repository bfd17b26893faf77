//! The header blocks of one client connection: gathered from HEADERS and CONTINUATION
//! frames, decoded with the client's HPACK context, stripped of an `:authority` h2
//! would reject, re-encoded with the context h2's decoder mirrors, and re-framed.
//!
//! h2's server decoder keeps the default 4096-byte dynamic table (tonic sets no
//! header table size), so the encoder here keeps that size and never announces
//! another; the client may only use up to 4096 bytes too, which is what its decoder
//! here allows. Frames go out no larger than 16384 bytes, the maximum h2 accepts
//! unless tonic's `max_frame_size` is raised (the agent does not raise it).

use std::io;

use loona_hpack::{Decoder, Encoder};

use super::reuse::LastRewrite;
use super::scan::BlockScan;

/// Frame types and flags (RFC 9113 section 6).
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The stream dependency and weight a HEADERS frame with PRIORITY carries.
const PRIORITY_LEN: usize = 5;

/// The dynamic table size h2's decoder uses (SETTINGS_HEADER_TABLE_SIZE default).
const TABLE_SIZE: usize = 4096;
/// The largest frame payload h2 accepts (SETTINGS_MAX_FRAME_SIZE default).
const MAX_FRAME: usize = 16 * 1024;
/// The most encoded bytes one header block may gather: twice the header list size h2
/// is told to accept (a block is never longer than the list it encodes, which counts
/// 32 bytes per field on top of names and values). A larger one ends the connection.
pub const MAX_BLOCK: usize = 2 * super::super::MAX_HEADER_BYTES as usize;
/// The largest decoded header list (name + value + 32 per field, as HTTP/2 counts it)
/// re-encoded for h2, which refuses anything over half of it itself; a larger one
/// ends the connection.
pub const MAX_DECODED: usize = MAX_BLOCK;
/// The most Huffman-coded strings one header block may hold. loona-hpack builds its
/// Huffman table anew for each string (about 30 µs; loona issue 229), so without a
/// bound two bytes of a client's input could buy that much CPU. A gRPC client's first
/// request holds about ten; later ones mostly refer to its dynamic table.
pub const MAX_HUFFMAN_STRINGS: usize = 32;

/// The 9 bytes that start every HTTP/2 frame.
#[derive(Debug, Clone, Copy)]
pub struct FrameHead {
    /// Payload length.
    pub len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHead {
    /// The size of a frame head on the wire.
    pub const LEN: usize = 9;

    /// Reads a frame head from the first [`Self::LEN`] bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> FrameHead {
        FrameHead {
            len: usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]),
            kind: bytes[3],
            flags: bytes[4],
            stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        }
    }

    /// Appends a frame head for a payload of `len` bytes to `out`.
    fn write(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
        let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
        out.extend_from_slice(&[len[1], len[2], len[3], kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
    }
}

/// What follows a frame head.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// The frame goes to h2 unchanged.
    PassThrough,
    /// Its payload belongs to a header block, fed through [`HeaderBlocks::payload`].
    HeaderPayload,
}

/// A header block being gathered.
#[derive(Debug)]
struct OpenBlock {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; PRIORITY_LEN]>,
    /// Flags of the frame whose payload is arriving.
    frame_flags: u8,
    /// Whether that frame is the HEADERS frame (whose pad length, priority and
    /// padding are still in `fragment`).
    in_headers_frame: bool,
    /// The header block fragment so far.
    fragment: Vec<u8>,
}

/// The HPACK contexts of one connection and the header block being gathered.
pub struct HeaderBlocks {
    /// The client's context, as the client's encoder keeps it.
    decoder: Decoder<'static>,
    /// The context h2's decoder mirrors.
    encoder: Encoder<'static>,
    /// The last block rewritten, while both contexts are as it left them.
    last: LastRewrite,
    open: Option<OpenBlock>,
}

impl std::fmt::Debug for HeaderBlocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderBlocks")
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

impl Default for HeaderBlocks {
    fn default() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        HeaderBlocks {
            decoder,
            encoder: Encoder::new(),
            last: LastRewrite::default(),
            open: None,
        }
    }
}

/// The error that ends a connection whose header frames cannot be rewritten.
fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("HTTP/2 client sent {what}"),
    )
}

impl HeaderBlocks {
    /// Takes the head of the next client frame and says what to do with its payload.
    pub fn frame(&mut self, head: FrameHead) -> io::Result<Next> {
        let fragment = match (&mut self.open, head.kind) {
            (None, HEADERS) => {
                let block = self.open.insert(OpenBlock {
                    stream: head.stream,
                    end_stream: head.flags & END_STREAM != 0,
                    priority: None,
                    frame_flags: head.flags,
                    in_headers_frame: true,
                    fragment: Vec::new(),
                });
                &mut block.fragment
            }
            (Some(block), CONTINUATION) if block.stream == head.stream => {
                block.frame_flags = head.flags;
                block.in_headers_frame = false;
                &mut block.fragment
            }
            (Some(_), _) => return Err(malformed("a frame inside a header block")),
            // Anything else (a CONTINUATION outside a block too) is h2's to judge.
            (None, _) => return Ok(Next::PassThrough),
        };
        if head.len > MAX_FRAME {
            return Err(malformed(
                "a header frame over 16 KiB (h2's frame size limit)",
            ));
        }
        if fragment.len() + head.len > MAX_BLOCK {
            return Err(malformed("a header block over 32 KiB"));
        }
        fragment.reserve(head.len);
        Ok(Next::HeaderPayload)
    }

    /// Adds payload bytes of the current HEADERS or CONTINUATION frame.
    pub fn payload(&mut self, bytes: &[u8]) {
        if let Some(block) = &mut self.open {
            block.fragment.extend_from_slice(bytes);
        }
    }

    /// Ends the current header frame: after END_HEADERS, appends the rewritten block's
    /// frames to `out`.
    pub fn frame_end(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        let Some(mut block) = self.open.take() else {
            return Ok(());
        };
        if block.in_headers_frame {
            strip_headers_frame(&mut block)?;
            block.in_headers_frame = false;
        }
        if block.frame_flags & END_HEADERS == 0 {
            self.open = Some(block);
            return Ok(());
        }
        let scan =
            BlockScan::of(&block.fragment).ok_or_else(|| malformed("a header block cut short"))?;
        if scan.huffman_strings > MAX_HUFFMAN_STRINGS {
            return Err(malformed(
                "a header block with over 32 Huffman-coded strings",
            ));
        }
        if let Some(encoded) = self.last.get(&block.fragment) {
            write_frames(out, &block, encoded);
            return Ok(());
        }
        let encoded = self.rewrite(&block.fragment)?;
        write_frames(out, &block, &encoded);
        self.last.record(block.fragment, &scan, encoded);
        Ok(())
    }

    /// The kept rewrite, for tests that compare reuse with a fresh rewrite.
    #[cfg(test)]
    pub fn last_rewrite(&mut self) -> &mut LastRewrite {
        &mut self.last
    }

    /// Decodes `fragment` and re-encodes its fields without an `:authority` h2 would
    /// reject.
    fn rewrite(&mut self, fragment: &[u8]) -> io::Result<Vec<u8>> {
        let mut encoded = Vec::with_capacity(fragment.len());
        let mut decoded = 0usize;
        let encoder = &mut self.encoder;
        self.decoder
            .decode_with_cb(fragment, |name, value| {
                decoded = decoded.saturating_add(name.len() + value.len() + 32);
                if decoded > MAX_DECODED || (&*name == b":authority" && !h2_accepts(&value)) {
                    return;
                }
                // Writing to a Vec cannot fail.
                let _ = encoder.encode_header_into((&name, &value), &mut encoded);
            })
            .map_err(|e| malformed(&format!("an undecodable header block ({e})")))?;
        if decoded > MAX_DECODED {
            return Err(malformed("a header list over 32 KiB"));
        }
        Ok(encoded)
    }
}

/// Whether h2 takes `authority` as a request's `:authority` (it parses it as an
/// `http::uri::Authority` and resets the stream if that fails).
fn h2_accepts(authority: &[u8]) -> bool {
    http::uri::Authority::try_from(authority).is_ok()
}

/// Takes the pad length and priority fields off the HEADERS frame payload that starts
/// `block.fragment`, and its padding off the end.
fn strip_headers_frame(block: &mut OpenBlock) -> io::Result<()> {
    let payload = &block.fragment;
    let mut skip = 0;
    let mut pad = 0;
    if block.frame_flags & PADDED != 0 {
        pad = usize::from(
            *payload
                .first()
                .ok_or_else(|| malformed("an empty PADDED frame"))?,
        );
        skip = 1;
    }
    if block.frame_flags & PRIORITY != 0 {
        let fields = payload
            .get(skip..skip + PRIORITY_LEN)
            .ok_or_else(|| malformed("a HEADERS frame too short for its priority"))?;
        let mut priority = [0; PRIORITY_LEN];
        priority.copy_from_slice(fields);
        block.priority = Some(priority);
        skip += PRIORITY_LEN;
    }
    if skip + pad > payload.len() {
        return Err(malformed("a HEADERS frame with more padding than payload"));
    }
    let end = payload.len() - pad;
    block.fragment.truncate(end);
    block.fragment.drain(..skip);
    Ok(())
}

/// Appends `encoded` as a HEADERS frame (with the block's END_STREAM and priority)
/// and as many CONTINUATION frames as the frame size limit needs.
fn write_frames(out: &mut Vec<u8>, block: &OpenBlock, encoded: &[u8]) {
    let priority = block.priority.as_ref().map_or(&[][..], |p| &p[..]);
    let (first, mut rest) = encoded.split_at(encoded.len().min(MAX_FRAME - priority.len()));
    let mut flags = if rest.is_empty() { END_HEADERS } else { 0 };
    if block.end_stream {
        flags |= END_STREAM;
    }
    if block.priority.is_some() {
        flags |= PRIORITY;
    }
    out.reserve(encoded.len() + priority.len() + FrameHead::LEN * (2 + encoded.len() / MAX_FRAME));
    FrameHead::write(
        out,
        priority.len() + first.len(),
        HEADERS,
        flags,
        block.stream,
    );
    out.extend_from_slice(priority);
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(rest.len().min(MAX_FRAME));
        let flags = if after.is_empty() { END_HEADERS } else { 0 };
        FrameHead::write(out, chunk.len(), CONTINUATION, flags, block.stream);
        out.extend_from_slice(chunk);
        rest = after;
    }
}

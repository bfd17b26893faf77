//! Tests of the `:authority` filter: the blocks h2 receives (decoded here with a
//! decoder of their own, as h2's mirrors the filter's encoder) in [`framing`], hostile
//! input in [`hostile`], a reused rewrite against a fresh one in [`reuse`], and a real
//! h2 server behind the filter in [`h2_server`]. This file holds what they share:
//! hand-encoded frames and HPACK, and a reader of what h2 would see.

mod framing;
mod h2_server;
mod hostile;
mod reuse;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use loona_hpack::Decoder;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use super::AuthorityFilter;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SOCKET_PATH: &[u8] = b"/tmp/x/agent.sock";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK string literal (no Huffman).
fn string(s: &[u8]) -> Vec<u8> {
    let mut out = loona_hpack::encoder::encode_integer(s.len(), 7);
    out.extend_from_slice(s);
    out
}

/// The Huffman code of `n` times "a" (5 bits, 00011), as an HPACK string.
fn huffman_a(n: usize) -> Vec<u8> {
    let mut bits: Vec<bool> = (0..n)
        .flat_map(|_| [false, false, false, true, true])
        .collect();
    while !bits.len().is_multiple_of(8) {
        bits.push(true); // padding: the most significant bits of EOS
    }
    let code: Vec<u8> = bits
        .chunks(8)
        .map(|byte| byte.iter().fold(0, |acc, &b| acc << 1 | u8::from(b)))
        .collect();
    let mut out = loona_hpack::encoder::encode_integer(code.len(), 7);
    out[0] |= 0x80;
    out.extend(code);
    out
}

/// A field with a literal name, `first` selecting the representation (0x00 without
/// indexing, 0x40 with incremental indexing).
fn literal(first: u8, name: &[u8], value: &[u8]) -> Vec<u8> {
    [vec![first], string(name), string(value)].concat()
}

/// The pseudo-headers of a gRPC call, static-table indexed where HPACK allows.
fn request_start() -> Vec<u8> {
    // :method POST (3), :scheme http (6), then :path with the static name (4).
    [
        vec![0x83, 0x86, 0x04],
        string(b"/SpiffeWorkloadAPI/FetchX509SVID"),
    ]
    .concat()
}

fn fields(list: &[(&str, &[u8])]) -> Fields {
    list.iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.to_vec()))
        .collect()
}

fn call_fields(authority: Option<&[u8]>) -> Fields {
    let mut list: Vec<(&str, &[u8])> = vec![
        (":method", b"POST"),
        (":scheme", b"http"),
        (":path", b"/SpiffeWorkloadAPI/FetchX509SVID"),
    ];
    if let Some(a) = authority {
        list.push((":authority", a));
    }
    list.push(("workload.spiffe.io", b"true"));
    fields(&list)
}

/// A request header block with `authority` sent as a literal with an indexed name.
fn call_block(authority: Option<&[u8]>) -> Vec<u8> {
    let mut block = request_start();
    if let Some(a) = authority {
        block.extend([vec![0x01], string(a)].concat());
    }
    block.extend(literal(0x00, b"workload.spiffe.io", b"true"));
    block
}

/// A reader that hands out at most `chunk` bytes per read.
struct Trickle {
    data: Vec<u8>,
    at: usize,
    chunk: usize,
}

impl AsyncRead for Trickle {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = this
            .chunk
            .min(buf.remaining())
            .min(this.data.len() - this.at);
        buf.put_slice(&this.data[this.at..this.at + n]);
        this.at += n;
        Poll::Ready(Ok(()))
    }
}

/// What h2 would read when the client sends `input` in reads of `chunk` bytes,
/// itself reading `into` bytes at a time.
async fn filter(input: &[u8], chunk: usize, into: usize) -> io::Result<Vec<u8>> {
    let mut filtered = AuthorityFilter::new(Trickle {
        data: input.to_vec(),
        at: 0,
        chunk,
    });
    let mut out = Vec::new();
    let mut buf = vec![0; into];
    loop {
        let n = filtered.read(&mut buf).await?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// A frame as h2 sees it: header blocks joined and decoded with one decoder for the
/// connection (as h2's own), other frames raw.
#[derive(Debug, PartialEq)]
enum Seen {
    Headers {
        stream: u32,
        flags: u8,
        priority: Vec<u8>,
        fields: Fields,
        frames: usize,
    },
    Other(Vec<u8>),
}

/// Splits what h2 reads into frames, checking the preface and frame sizes.
fn seen(output: &[u8]) -> Vec<Seen> {
    assert_eq!(&output[..PREFACE.len()], PREFACE);
    let mut h2_decoder = Decoder::new();
    let mut rest = &output[PREFACE.len()..];
    let mut seen = Vec::new();
    // The block being gathered: its frame facts (fields still empty) and its bytes.
    let mut open: Option<(Seen, Vec<u8>)> = None;
    while !rest.is_empty() {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        assert!(len <= 16 * 1024, "a frame of {len} bytes");
        let (kind, flags) = (rest[3], rest[4]);
        let stream = u32::from_be_bytes(rest[5..9].try_into().unwrap());
        let (whole, after) = rest.split_at(9 + len);
        let payload = &whole[9..];
        rest = after;
        match kind {
            HEADERS => {
                assert!(open.is_none());
                assert_eq!(flags & PADDED, 0, "padding left in");
                let (priority, block) = payload.split_at(if flags & PRIORITY != 0 { 5 } else { 0 });
                let facts = Seen::Headers {
                    stream,
                    flags,
                    priority: priority.to_vec(),
                    fields: Vec::new(),
                    frames: 1,
                };
                open = Some((facts, block.to_vec()));
            }
            CONTINUATION => {
                let Some((
                    Seen::Headers {
                        stream: s,
                        flags: f,
                        frames,
                        ..
                    },
                    block,
                )) = &mut open
                else {
                    panic!("CONTINUATION outside a block");
                };
                assert_eq!(*s, stream);
                block.extend_from_slice(payload);
                *frames += 1;
                *f |= flags & END_HEADERS;
            }
            _ => {
                assert!(open.is_none(), "a frame inside a header block");
                seen.push(Seen::Other(whole.to_vec()));
            }
        }
        if matches!(kind, HEADERS | CONTINUATION) && flags & END_HEADERS != 0 {
            let (mut facts, block) = open.take().unwrap();
            if let Seen::Headers { fields, .. } = &mut facts {
                *fields = h2_decoder
                    .decode(&block)
                    .expect("h2 cannot decode the block");
            }
            seen.push(facts);
        }
    }
    assert!(open.is_none(), "a header block left open");
    seen
}

/// The fields of the only header block in `output`.
fn only_fields(output: &[u8]) -> Fields {
    match &seen(output)[..] {
        [Seen::Headers { fields, .. }] => fields.clone(),
        other => panic!("expected one header block, h2 saw {other:?}"),
    }
}

fn request(block: &[u8]) -> Vec<u8> {
    [PREFACE, &frame(HEADERS, END_HEADERS | END_STREAM, 1, block)].concat()
}

//! The kept rewrite: a repeated block is served from it, and what h2 reads is byte for
//! byte what a fresh loona decode and re-encode gives, across insertions and table size
//! updates on the client's side and insertions on the filter's own encoder.

use super::*;
use crate::daemon::h2_authority::block::{FrameHead, HeaderBlocks, Next};
use crate::daemon::h2_authority::reuse::LastRewrite;

/// Sends `blocks` as the requests of one connection and returns what h2 reads for each
/// and whether each was served from the kept rewrite. Without `reuse`, the kept
/// rewrite is forgotten before each block, so every block goes through loona.
fn rewrite_all(blocks: &[Vec<u8>], reuse: bool) -> (Vec<Vec<u8>>, Vec<bool>) {
    let mut connection = HeaderBlocks::default();
    let mut outputs = Vec::new();
    let mut served = Vec::new();
    for (stream, block) in (1..).step_by(2).zip(blocks) {
        if !reuse {
            *connection.last_rewrite() = LastRewrite::default();
        }
        served.push(connection.last_rewrite().get(block).is_some());
        let whole = frame(HEADERS, END_HEADERS | END_STREAM, stream, block);
        let head = FrameHead::parse(&whole);
        assert_eq!(connection.frame(head).unwrap(), Next::HeaderPayload);
        connection.payload(&whole[FrameHead::LEN..]);
        let mut output = Vec::new();
        connection.frame_end(&mut output).unwrap();
        outputs.push(output);
    }
    (outputs, served)
}

/// Sends `blocks` with reuse and checks what h2 reads against fresh rewrites; returns
/// h2's outputs, the fields h2 decodes from them, and which blocks were reused.
fn reused_against_fresh(blocks: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<Fields>, Vec<bool>) {
    let (reused, served) = rewrite_all(blocks, true);
    let (fresh, fresh_served) = rewrite_all(blocks, false);
    assert!(!fresh_served.contains(&true));
    assert_eq!(reused, fresh, "a reused rewrite differs from loona's");
    let fields = seen(&[PREFACE.to_vec(), reused.concat()].concat())
        .into_iter()
        .map(|frame| match frame {
            Seen::Headers { fields, .. } => fields,
            other => panic!("expected a header block, h2 saw {other:?}"),
        })
        .collect();
    (reused, fields, served)
}

/// A first request adding `:authority` (the socket path, index 63 after it) and
/// `x-call: 1` (index 62) to the client's table.
fn first() -> Vec<u8> {
    [
        request_start(),
        [vec![0x41], string(SOCKET_PATH)].concat(),
        literal(0x40, b"x-call", b"1"),
    ]
    .concat()
}

/// A later request, as h2 and gRPC C-core send them: a Huffman-coded `:path` literal
/// that is never indexed, then the authority and `x-call` by index (63, 62).
fn again() -> Vec<u8> {
    [vec![0x83, 0x86, 0x04], huffman_a(10), vec![0xbf, 0xbe]].concat()
}

/// The fields of [`again`] when the client's table holds `newest` and `older`.
fn again_fields(older: (&str, &[u8]), newest: (&str, &[u8])) -> Fields {
    let mut list: Vec<(&str, &[u8])> = vec![
        (":method", b"POST"),
        (":scheme", b"http"),
        (":path", b"aaaaaaaaaa"),
    ];
    list.extend([older, newest].into_iter().filter(|(name, value)| {
        *name != ":authority" || http::uri::Authority::try_from(*value).is_ok()
    }));
    fields(&list)
}

#[test]
fn a_repeated_block_is_served_as_loona_would_rewrite_it() {
    let (_, fields, served) = reused_against_fresh(&[first(), again(), again(), again()]);
    assert_eq!(served, [false, false, true, true]);
    let expected = again_fields((":authority", SOCKET_PATH), ("x-call", b"1"));
    assert_eq!(fields[1..], [expected.clone(), expected.clone(), expected]);
    // A block too large to keep is rewritten each time.
    let large = [request_start(), literal(0x00, b"x-large", &[b'x'; 5000])].concat();
    let (_, _, served) = reused_against_fresh(&[large.clone(), large.clone(), large]);
    assert_eq!(served, [false, false, false]);
}

#[test]
fn an_insertion_by_the_client_drops_the_kept_rewrite() {
    // x-call: 2 becomes index 62, pushing x-call: 1 to 63: the same bytes as before
    // now mean other fields.
    let insert = [request_start(), literal(0x40, b"x-call", b"2")].concat();
    let blocks = [first(), again(), again(), insert, again(), again()];
    let (_, fields, served) = reused_against_fresh(&blocks);
    assert_eq!(served, [false, false, true, false, false, true]);
    assert_eq!(
        fields[2],
        again_fields((":authority", SOCKET_PATH), ("x-call", b"1"))
    );
    assert_eq!(fields[4], again_fields(("x-call", b"1"), ("x-call", b"2")));
    // A repeated block that inserts, though its rewrite does not (the filter's encoder
    // knows :authority from the static table): each copy adds an entry.
    let localhost = [request_start(), vec![0x41], string(b"localhost")].concat();
    let blocks = [first(), localhost.clone(), localhost, again()];
    let (_, fields, served) = reused_against_fresh(&blocks);
    assert_eq!(served, [false; 4]);
    let authority: (&str, &[u8]) = (":authority", b"localhost");
    assert_eq!(fields[3], again_fields(authority, authority));
}

#[test]
fn an_identical_block_after_a_table_size_update_is_rewritten_afresh() {
    // Size 0 empties the table, 4096 restores it, then a valid authority and x-call: 3
    // take indexes 63 and 62.
    let resize = [
        vec![0x20, 0x3f, 0xe1, 0x1f],
        request_start(),
        [vec![0x41], string(b"localhost")].concat(),
        literal(0x40, b"x-call", b"3"),
    ]
    .concat();
    let blocks = [first(), again(), again(), resize, again()];
    let (_, fields, served) = reused_against_fresh(&blocks);
    assert_eq!(served, [false, false, true, false, false]);
    assert_eq!(
        fields[4],
        again_fields((":authority", b"localhost"), ("x-call", b"3"))
    );
}

#[test]
fn a_block_the_filters_encoder_indexes_is_not_kept() {
    // The client never indexes x-new, but the filter's encoder inserts it the first
    // time (so h2's table does too) and refers to it by index afterwards.
    let plain = [request_start(), literal(0x00, b"x-new", b"v")].concat();
    let (outputs, fields, served) = reused_against_fresh(&[plain.clone(), plain.clone(), plain]);
    assert_eq!(served, [false, false, true]);
    assert_ne!(outputs[0][FrameHead::LEN..], outputs[1][FrameHead::LEN..]);
    assert_eq!(outputs[1][FrameHead::LEN..], outputs[2][FrameHead::LEN..]);
    assert!(
        fields
            .iter()
            .all(|f| f[3] == (b"x-new".to_vec(), b"v".to_vec()))
    );
}

//! Hostile and broken client input: every over-limit or malformed header block ends
//! the connection with an error, truncation ends it like the client did, and random
//! frames never panic.

use super::*;
use crate::daemon::h2_authority::block::{MAX_BLOCK, MAX_DECODED, MAX_HUFFMAN_STRINGS};

/// The error `input` ends the connection with.
async fn refused(input: &[u8]) -> String {
    match filter(input, 1000, 1000).await {
        Err(e) => {
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            e.to_string()
        }
        Ok(out) => panic!("accepted; h2 would read {} bytes", out.len()),
    }
}

#[tokio::test]
async fn hostile_header_frames_end_the_connection() {
    let block = call_block(Some(SOCKET_PATH));
    let huge = [
        &[0xff, 0xff, 0xff, HEADERS, END_HEADERS, 0, 0, 0, 1][..],
        &[0; 100],
    ]
    .concat();
    assert!(
        refused(&[PREFACE, &huge].concat())
            .await
            .contains("over 16 KiB")
    );
    // Gathered across CONTINUATIONs past the block limit.
    let mut input = [PREFACE, &frame(HEADERS, 0, 1, &block)].concat();
    for _ in 0..=MAX_BLOCK / 16000 {
        input.extend(frame(CONTINUATION, 0, 1, &[0; 16000]));
    }
    assert!(refused(&input).await.contains("over 32 KiB"));
    // An index past both tables; a table size update past the 4096 bytes h2 allows; a
    // block ending in a size update; a string longer than the block; an integer of
    // more than 5 bytes.
    for bad in [
        &[0xff, 0x80, 0x01][..],
        &[0x3f, 0xe2, 0x1f, 0x82],
        &[0x82, 0x20],
    ] {
        assert!(
            refused(&request(bad)).await.contains("undecodable"),
            "{bad:?}"
        );
    }
    for bad in [
        &[0x00, 0x7f, 0x10, b'a'][..],
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    ] {
        assert!(
            refused(&request(bad)).await.contains("cut short"),
            "{bad:?}"
        );
    }
    // A decoded list past the limit from a short block: one 4000-byte entry indexed
    // over and over.
    let mut block = literal(0x40, b"x-big", &[b'x'; 4000]);
    block.extend(vec![0xbe; MAX_DECODED / 4000 + 1]);
    assert!(
        refused(&request(&block))
            .await
            .contains("header list over 32 KiB")
    );
    // More Huffman-coded strings than the limit (each costs loona-hpack a new table);
    // the limit itself passes.
    // accept-charset (static name 15) with an empty Huffman-coded value, n times.
    let empty_huffman = |n| [vec![0x82, 0x86, 0x84], [0x0f, 0x00, 0x80].repeat(n)].concat();
    let out = filter(&request(&empty_huffman(MAX_HUFFMAN_STRINGS)), 1000, 1000)
        .await
        .unwrap();
    assert_eq!(only_fields(&out).len(), 3 + MAX_HUFFMAN_STRINGS);
    assert!(
        refused(&request(&empty_huffman(MAX_HUFFMAN_STRINGS + 1)))
            .await
            .contains("Huffman")
    );
    // Padding longer than the payload; priority fields cut short.
    assert!(
        refused(
            &[
                PREFACE,
                &frame(HEADERS, END_HEADERS | PADDED, 1, &[200, 0x82])
            ]
            .concat()
        )
        .await
        .contains("padding")
    );
    assert!(
        refused(&[PREFACE, &frame(HEADERS, END_HEADERS | PRIORITY, 1, &[0, 0])].concat())
            .await
            .contains("priority")
    );
    assert!(
        refused(&[PREFACE, &frame(HEADERS, END_HEADERS | PADDED, 1, &[])].concat())
            .await
            .contains("PADDED")
    );
    // Another frame, or another stream's CONTINUATION, inside a block.
    let open = [PREFACE, &frame(HEADERS, 0, 1, &block)].concat();
    assert!(
        refused(&[&open[..], &frame(DATA, 0, 1, b"x")].concat())
            .await
            .contains("inside a header block")
    );
    assert!(
        refused(&[&open[..], &frame(CONTINUATION, END_HEADERS, 3, &[])].concat())
            .await
            .contains("inside a header block")
    );
}

#[tokio::test]
async fn truncated_input_ends_like_the_client_did() {
    let whole = request(&call_block(Some(SOCKET_PATH)));
    for cut in [10, PREFACE.len() + 4, PREFACE.len() + 9, whole.len() - 1] {
        let out = filter(&whole[..cut], 3, 5).await.unwrap();
        assert_eq!(out, whole[..cut.min(PREFACE.len())], "cut at {cut}");
    }
    // A pass-through frame cut short is handed on as far as it came.
    let data = [PREFACE, &frame(DATA, 0, 1, &[7; 50])].concat();
    assert_eq!(filter(&data[..60], 7, 9).await.unwrap(), data[..60]);
}

#[tokio::test]
async fn random_frames_never_panic_nor_grow_without_bound() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    for _ in 0..2000 {
        let mut input = PREFACE.to_vec();
        for _ in 0..rng.random_range(1..6) {
            let kind = if rng.random_bool(0.7) {
                HEADERS + 8 * rng.random_range(0..2)
            } else {
                rng.random_range(0..10)
            };
            let len = rng.random_range(0..300);
            let payload: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            input.extend(frame(kind, rng.random(), rng.random_range(0..4), &payload));
        }
        if let Ok(out) = filter(&input, rng.random_range(1..64), rng.random_range(1..64)).await {
            // A re-encoded block is no larger than its decoded size, which is capped.
            assert!(out.len() <= input.len() + 5 * (MAX_DECODED + 2 * 9));
        }
    }
}

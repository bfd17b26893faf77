//! What h2 receives: authorities dropped or kept, the client's HPACK table followed,
//! blocks re-framed, padding stripped, other frames passed in order.

use super::*;

#[tokio::test]
async fn an_authority_h2_would_reject_is_dropped_and_the_rest_kept() {
    for bad in [SOCKET_PATH, b"", b"unix:/tmp/x/agent.sock", b"a b"] {
        for (chunk, into) in [(1, 1), (3, 7), (64 * 1024, 8 * 1024)] {
            let out = filter(&request(&call_block(Some(bad))), chunk, into)
                .await
                .unwrap();
            assert_eq!(only_fields(&out), call_fields(None), "authority {bad:?}");
        }
    }
}

#[tokio::test]
async fn a_valid_authority_or_none_is_unchanged() {
    for good in [&b"localhost"[..], b"example.org:443", b"[::1]:8080"] {
        let out = filter(&request(&call_block(Some(good))), 5, 100)
            .await
            .unwrap();
        assert_eq!(only_fields(&out), call_fields(Some(good)));
    }
    let out = filter(&request(&call_block(None)), 5, 100).await.unwrap();
    assert_eq!(only_fields(&out), call_fields(None));
    // Huffman-coded, as most clients send it.
    let block = [
        request_start(),
        vec![0x01],
        huffman_a(20),
        literal(0x00, b"workload.spiffe.io", b"true"),
    ]
    .concat();
    let out = filter(&request(&block), 5, 100).await.unwrap();
    assert_eq!(only_fields(&out), call_fields(Some(&[b'a'; 20])));
}

#[tokio::test]
async fn the_clients_dynamic_table_is_followed_across_requests() {
    // Request 1 adds :authority (path) and x-call: 1 to the client's table; requests
    // 2 and 3 refer to them by index (62 = newest).
    let first = [
        request_start(),
        [vec![0x41], string(SOCKET_PATH)].concat(),
        literal(0x40, b"x-call", b"1"),
    ]
    .concat();
    let again = [request_start(), vec![0xbf, 0xbe]].concat();
    let input = [
        PREFACE,
        &frame(HEADERS, END_HEADERS | END_STREAM, 1, &first),
        &frame(HEADERS, END_HEADERS | END_STREAM, 3, &again),
        &frame(HEADERS, END_HEADERS | END_STREAM, 5, &again),
    ]
    .concat();
    let out = filter(&input, 2, 11).await.unwrap();
    let want = fields(&[
        (":method", b"POST"),
        (":scheme", b"http"),
        (":path", b"/SpiffeWorkloadAPI/FetchX509SVID"),
        ("x-call", b"1"),
    ]);
    let blocks: Vec<_> = seen(&out)
        .into_iter()
        .map(|s| match s {
            Seen::Headers { stream, fields, .. } => (stream, fields),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        blocks,
        vec![(1, want.clone()), (3, want.clone()), (5, want)]
    );
}

#[tokio::test]
async fn a_large_block_arrives_split_and_leaves_in_frames_h2_accepts() {
    let big = |c: u8| vec![c; 9000];
    let block = [
        call_block(Some(SOCKET_PATH)),
        literal(0x00, b"x-a", &big(b'a')),
        literal(0x00, b"x-b", &big(b'b')),
        literal(0x00, b"x-c", &big(b'c')),
    ]
    .concat();
    // The client's own split: HEADERS and three CONTINUATIONs of uneven sizes.
    let (a, rest) = block.split_at(100);
    let (b, rest) = rest.split_at(15000);
    let (c, d) = rest.split_at(7);
    let input = [
        PREFACE,
        &frame(HEADERS, END_STREAM, 7, a),
        &frame(CONTINUATION, 0, 7, b),
        &frame(CONTINUATION, 0, 7, c),
        &frame(CONTINUATION, END_HEADERS, 7, d),
    ]
    .concat();
    let out = filter(&input, 4096, 1000).await.unwrap();
    let mut want = call_fields(None);
    want.extend(fields(&[
        ("x-a", &big(b'a')),
        ("x-b", &big(b'b')),
        ("x-c", &big(b'c')),
    ]));
    match &seen(&out)[..] {
        [
            Seen::Headers {
                stream: 7,
                flags,
                fields,
                frames,
                ..
            },
        ] => {
            assert_eq!(*flags, END_STREAM | END_HEADERS);
            assert_eq!(*fields, want);
            assert_eq!(
                *frames, 2,
                "27 KiB re-encoded fits one HEADERS + one CONTINUATION"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn padding_is_stripped_and_priority_and_end_stream_kept() {
    let block = call_block(Some(SOCKET_PATH));
    let priority = [0x80, 0, 0, 3, 200];
    let payload = [&[10][..], &priority, &block, &[0; 10]].concat();
    let input = [
        PREFACE,
        &frame(
            HEADERS,
            END_HEADERS | END_STREAM | PADDED | PRIORITY,
            9,
            &payload,
        ),
    ]
    .concat();
    let out = filter(&input, 3, 50).await.unwrap();
    assert_eq!(
        seen(&out),
        vec![Seen::Headers {
            stream: 9,
            flags: END_HEADERS | END_STREAM | PRIORITY,
            priority: priority.to_vec(),
            fields: call_fields(None),
            frames: 1,
        }]
    );
}

#[tokio::test]
async fn other_frames_and_trailers_pass_in_order() {
    let settings = frame(SETTINGS, 0, 0, &[0, 4, 0, 1, 0, 0]);
    let data = frame(DATA, 0, 1, &[0, 0, 0, 0, 2, 8, 1]);
    let window = frame(WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]);
    let trailers = literal(0x00, b"x-trailer", b"t");
    let input = [
        PREFACE,
        &settings,
        &frame(HEADERS, END_HEADERS, 1, &call_block(Some(SOCKET_PATH))),
        &data,
        &window,
        &frame(HEADERS, END_HEADERS | END_STREAM, 1, &trailers),
    ]
    .concat();
    for (chunk, into) in [(1, 1), (5, 3), (64 * 1024, 64 * 1024)] {
        let out = filter(&input, chunk, into).await.unwrap();
        let seen = seen(&out);
        assert_eq!(seen.len(), 5);
        assert_eq!(seen[0], Seen::Other(settings.clone()));
        assert!(
            matches!(&seen[1], Seen::Headers { fields, flags: END_HEADERS, .. } if *fields == call_fields(None))
        );
        assert_eq!(seen[2], Seen::Other(data.clone()));
        assert_eq!(seen[3], Seen::Other(window.clone()));
        assert!(matches!(&seen[4], Seen::Headers { fields, flags, .. }
            if *fields == fields_of(b"x-trailer", b"t") && *flags == END_HEADERS | END_STREAM));
    }
}

fn fields_of(name: &[u8], value: &[u8]) -> Fields {
    vec![(name.to_vec(), value.to_vec())]
}

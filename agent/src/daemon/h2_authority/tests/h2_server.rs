//! A real h2 server behind the filter: it serves a request whose `:authority` is a
//! socket path (also through the client's dynamic table), and without the filter it
//! resets that stream, so dropping the filter fails this test.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// What a real h2 server answered to a request on `stream`.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Response,
    Reset(u32),
}

/// Runs an h2 server on one end of a pipe, the filter in front of it if `filtered`,
/// sends it `requests` (header blocks, one stream each) and returns its answers.
async fn h2_answers(filtered: bool, requests: &[Vec<u8>]) -> Vec<Answer> {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    if filtered {
        tokio::spawn(serve(Box::new(AuthorityFilter::new(server)) as Box<dyn Io>));
    } else {
        tokio::spawn(serve(Box::new(server) as Box<dyn Io>));
    }
    let mut out = [PREFACE, &frame(SETTINGS, 0, 0, &[])].concat();
    for (i, block) in requests.iter().enumerate() {
        let stream = 1 + 2 * u32::try_from(i).unwrap();
        out.extend(frame(HEADERS, END_HEADERS | END_STREAM, stream, block));
    }
    client.write_all(&out).await.unwrap();
    let mut answers = Vec::new();
    let read = async {
        while answers.len() < requests.len() {
            let mut head = [0; 9];
            client.read_exact(&mut head).await.unwrap();
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let mut payload = vec![0; len];
            client.read_exact(&mut payload).await.unwrap();
            match head[3] {
                HEADERS => answers.push(Answer::Response),
                RST_STREAM => answers.push(Answer::Reset(u32::from_be_bytes(
                    payload[..4].try_into().unwrap(),
                ))),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("h2 answered within 5 s");
    answers
}

/// Answers every request with an empty 200 response until the client goes away.
async fn serve(io: Box<dyn Io>) {
    let Ok(mut conn) = h2::server::handshake(io).await else {
        return;
    };
    while let Some(Ok((_, mut respond))) = conn.accept().await {
        let _ = respond.send_response(http::Response::new(()), true);
    }
}

/// A connection h2 can serve.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

#[tokio::test]
async fn h2_serves_a_socket_path_authority_only_through_the_filter() {
    const PROTOCOL_ERROR: u32 = 1;
    let path_authority = call_block(Some(SOCKET_PATH));
    // The second call reuses the path from the client's dynamic table.
    let indexed = [request_start(), [vec![0x41], string(SOCKET_PATH)].concat()].concat();
    let reused = [request_start(), vec![0xbe]].concat();
    let requests = vec![path_authority, indexed, reused];
    assert_eq!(
        h2_answers(false, &requests[..1]).await,
        vec![Answer::Reset(PROTOCOL_ERROR)],
        "h2 itself resets a stream whose :authority is a path"
    );
    assert_eq!(h2_answers(true, &requests).await, vec![Answer::Response; 3]);
}

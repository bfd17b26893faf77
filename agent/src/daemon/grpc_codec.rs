//! The protobuf codec of every gRPC service the agent serves, and of the clients
//! generated beside them (build.rs names it): prost's, with smaller buffers than
//! tonic's 8 KiB for the messages a call reads and writes.
//!
//! tonic starts each call's read buffer at 8 KiB, while the requests on the socket are
//! tens of bytes (an empty `X509SVIDRequest`, a key name and a digest). An allocation
//! that big bypasses glibc's per-thread cache (which serves allocations of up to 1,032
//! bytes), so with the agent's limited malloc arenas (`commands::arenas`; one when this
//! was measured) every call took an arena's lock to allocate it and again to free it,
//! and the two runtime workers queued on that lock under load. A 1 KiB buffer is served
//! from the cache; a bigger message grows it as it arrives.
//!
//! A streaming call keeps its write buffer for as long as the stream is open, and a
//! workload keeps its `FetchX509SVID` stream open for its whole life: 2 KiB holds an
//! X509-SVID response with one SVID (1,044 bytes with an EC P-256 key and a one-
//! certificate bundle) and a bigger message grows it, where 8 KiB sat mostly unused
//! in every open stream.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::ProstCodec;

/// The read buffer a call starts with: the largest allocation glibc's per-thread cache
/// keeps, rounded down to a power of two.
const READ_BUFFER: usize = 1024;
/// The write buffer a call starts with.
const WRITE_BUFFER: usize = 2048;
/// How much tonic encodes before it hands a write on (its default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// Prost's codec with a [`READ_BUFFER`] read buffer and a [`WRITE_BUFFER`] write buffer.
#[derive(Debug, Clone, Copy)]
pub struct SmallBuffers<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBuffers<T, U> {
    fn default() -> Self {
        SmallBuffers(PhantomData)
    }
}

impl<T, U> Codec for SmallBuffers<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(WRITE_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(READ_BUFFER, YIELD_THRESHOLD))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::codec::{Decoder, Encoder};

    #[test]
    fn reads_and_writes_start_small() {
        let mut codec = SmallBuffers::<prost_types::Duration, prost_types::Duration>::default();
        let reads = format!("{:?}", codec.decoder().buffer_settings());
        assert!(reads.contains("buffer_size: 1024,"), "{reads}");
        let writes = format!("{:?}", codec.encoder().buffer_settings());
        assert!(writes.contains("buffer_size: 2048,"), "{writes}");
    }

    #[tokio::test]
    async fn a_request_bigger_than_the_first_buffer_is_read_whole() {
        use prost::Message;
        use prost_types::{ListValue, Value, value::Kind};
        // 50 strings of 100 bytes: 5,200 bytes encoded, every byte ASCII (so the frame
        // can be a `String` body, which http-body implements).
        let value = Value {
            kind: Some(Kind::StringValue("a".repeat(100))),
        };
        let list = ListValue {
            values: vec![value; 50],
        };
        let message = list.encode_to_vec();
        assert!(message.len() > 5 * READ_BUFFER);
        let mut frame = vec![0u8];
        frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(&message);
        let body = String::from_utf8(frame).expect("an ASCII frame");
        let mut codec = SmallBuffers::<ListValue, ListValue>::default();
        let mut reads = tonic::Streaming::new_request(codec.decoder(), body, None, None);
        assert_eq!(reads.message().await.unwrap(), Some(list));
        assert_eq!(reads.message().await.unwrap(), None);
    }
}

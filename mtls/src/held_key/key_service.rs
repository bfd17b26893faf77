//! The one call of `keyward.v1.KeyService` the held-key source makes, `SignX509SVID`,
//! over the agent's socket. The two messages are declared by hand with prost (the
//! fields of agent/proto/keyward/v1/keys.proto), as `agent_crls` declares the Workload
//! API message it reads, so keyward-rustls needs no protoc and no copy of the agent.

use keyward_core::Error;
use spiffe::transport::Endpoint;
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;

/// `SignX509SVIDRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct SignX509SvidRequest {
    /// `bytes csr = 1`: the DER PKCS#10 request.
    #[prost(bytes = "vec", tag = "1")]
    csr: Vec<u8>,
}

/// `SignX509SVIDResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SignX509SvidResponse {
    /// `string spiffe_id = 1`: the SPIFFE ID the SVID was issued for.
    #[prost(string, tag = "1")]
    pub(crate) spiffe_id: String,
    /// `bytes x509_svid = 2`: the SVID and its intermediates, leaf first, DER
    /// certificates concatenated.
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) x509_svid: Vec<u8>,
    /// `bytes bundle = 3`: the trust bundle, DER certificates concatenated.
    #[prost(bytes = "vec", tag = "3")]
    pub(crate) bundle: Vec<u8>,
}

/// Sends `csr` to the agent at `endpoint` (shown as `shown`) and returns its answer.
/// A refusal (the CSR asks for what the caller's entry does not grant, the caller has
/// no entry, the CSR is malformed) is a non-retryable error carrying the agent's
/// reason; an agent that cannot be reached or cannot issue is `Unavailable`.
pub(crate) async fn sign_x509_svid(
    endpoint: &Endpoint,
    shown: &str,
    csr: Vec<u8>,
) -> Result<SignX509SvidResponse, Error> {
    let unreachable = |e: &dyn std::fmt::Display| {
        Error::unavailable(format!("the agent at {shown} is unreachable: {e}"), None)
    };
    let channel = spiffe::transport::connect(endpoint)
        .await
        .map_err(|e| unreachable(&e))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| unreachable(&e))?;
    let mut req = tonic::Request::new(SignX509SvidRequest { csr });
    req.metadata_mut()
        .insert("workload.spiffe.io", MetadataValue::from_static("true"));
    let path = PathAndQuery::from_static("/keyward.v1.KeyService/SignX509SVID");
    let codec = tonic_prost::ProstCodec::<SignX509SvidRequest, SignX509SvidResponse>::default();
    match grpc.unary(req, path, codec).await {
        Ok(resp) => Ok(resp.into_inner()),
        Err(s) => {
            let why = format!(
                "the agent at {shown} refused to sign the SVID ({:?}): {}",
                s.code(),
                s.message()
            );
            Err(match s.code() {
                Code::PermissionDenied | Code::InvalidArgument => Error::backend(why),
                _ => Error::unavailable(why, None),
            })
        }
    }
}

//! Helpers for the JWT-SVID tests: a raw gRPC client for the three JWT calls (so a test
//! can send what the `spiffe` crate refuses to handle, such as EdDSA tokens or a
//! tampered token) and small JWT helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::Value;
use tonic::codegen::http::uri::PathAndQuery;

use crate::agent_common::raw::channel;

/// `JWTSVIDRequest`
#[derive(Clone, PartialEq, prost::Message)]
pub struct JwtSvidRequest {
    /// `repeated string audience = 1`
    #[prost(string, repeated, tag = "1")]
    pub audience: Vec<String>,
    /// `string spiffe_id = 2`
    #[prost(string, tag = "2")]
    pub spiffe_id: String,
}

/// `JWTSVIDResponse`
#[derive(Clone, PartialEq, prost::Message)]
pub struct JwtSvidResponse {
    /// `repeated JWTSVID svids = 1`
    #[prost(message, repeated, tag = "1")]
    pub svids: Vec<JwtSvid>,
}

/// `JWTSVID`
#[derive(Clone, PartialEq, prost::Message)]
pub struct JwtSvid {
    /// `string spiffe_id = 1`
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// `string svid = 2`
    #[prost(string, tag = "2")]
    pub svid: String,
    /// `string hint = 3`
    #[prost(string, tag = "3")]
    pub hint: String,
}

/// `ValidateJWTSVIDRequest`
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValidateRequest {
    /// `string audience = 1`
    #[prost(string, tag = "1")]
    pub audience: String,
    /// `string svid = 2`
    #[prost(string, tag = "2")]
    pub svid: String,
}

/// `ValidateJWTSVIDResponse`
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValidateResponse {
    /// `string spiffe_id = 1`
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// `google.protobuf.Struct claims = 2`
    #[prost(message, optional, tag = "2")]
    pub claims: Option<prost_types::Struct>,
}

/// `JWTBundlesRequest {}`
#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

/// `JWTBundlesResponse`
#[derive(Clone, PartialEq, prost::Message)]
pub struct BundlesResponse {
    /// `map<string, bytes> bundles = 1`
    #[prost(map = "string, bytes", tag = "1")]
    pub bundles: HashMap<String, Vec<u8>>,
}

async fn unary<Q, R>(socket: &Path, method: &'static str, msg: Q) -> Result<R, tonic::Status>
where
    Q: prost::Message + Send + Sync + 'static,
    R: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel(socket).await);
    grpc.ready().await.expect("channel ready");
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let codec = tonic_prost::ProstCodec::<Q, R>::default();
    grpc.unary(req, PathAndQuery::from_static(method), codec)
        .await
        .map(tonic::Response::into_inner)
}

/// FetchJWTSVID for `audience` (and only `spiffe_id`'s token when it is not empty).
pub async fn fetch(
    socket: &Path,
    audience: &[&str],
    spiffe_id: &str,
) -> Result<JwtSvidResponse, tonic::Status> {
    let msg = JwtSvidRequest {
        audience: audience.iter().map(|a| a.to_string()).collect(),
        spiffe_id: spiffe_id.to_string(),
    };
    unary(socket, "/SpiffeWorkloadAPI/FetchJWTSVID", msg).await
}

/// ValidateJWTSVID of `svid` for `audience`.
pub async fn validate(
    socket: &Path,
    audience: &str,
    svid: &str,
) -> Result<ValidateResponse, tonic::Status> {
    let msg = ValidateRequest {
        audience: audience.to_string(),
        svid: svid.to_string(),
    };
    unary(socket, "/SpiffeWorkloadAPI/ValidateJWTSVID", msg).await
}

/// The first FetchJWTBundles message: the JWKS of example.org, parsed.
pub async fn jwks(socket: &Path) -> Value {
    let mut grpc = tonic::client::Grpc::new(channel(socket).await);
    grpc.ready().await.expect("channel ready");
    let mut req = tonic::Request::new(Empty {});
    req.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let codec = tonic_prost::ProstCodec::<Empty, BundlesResponse>::default();
    let mut stream = grpc
        .server_streaming(
            req,
            PathAndQuery::from_static("/SpiffeWorkloadAPI/FetchJWTBundles"),
            codec,
        )
        .await
        .expect("FetchJWTBundles")
        .into_inner();
    let msg = stream
        .message()
        .await
        .expect("first bundles message")
        .expect("a message");
    let jwks = msg
        .bundles
        .get("spiffe://example.org")
        .expect("a JWKS for spiffe://example.org");
    serde_json::from_slice(jwks).expect("the JWKS is JSON")
}

/// The header or claims (`part` 0 or 1) of a compact JWT.
pub fn part(token: &str, part: usize) -> Value {
    let b64 = token.split('.').nth(part).expect("a JWT part");
    serde_json::from_slice(&B64.decode(b64).expect("base64url")).expect("JSON")
}

/// `token` with its claims replaced by `claims` (header and signature kept).
pub fn with_claims(token: &str, claims: &Value) -> String {
    let p: Vec<&str> = token.split('.').collect();
    format!("{}.{}.{}", p[0], B64.encode(claims.to_string()), p[2])
}

/// The key ids in a JWKS.
pub fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_string())
        .collect()
}

/// Checks an EdDSA `token` against an OKP JWK with the Ed25519 public key `x`.
pub fn verify_eddsa(token: &str, jwk: &Value) {
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    let x = B64.decode(jwk["x"].as_str().unwrap()).unwrap();
    let mut spki = hex_bytes("302a300506032b6570032100");
    spki.extend_from_slice(&x);
    let (input, sig) = token.rsplit_once('.').unwrap();
    keyward_core::verify_signature(
        keyward_core::Algorithm::Ed25519,
        &spki,
        input.as_bytes(),
        &B64.decode(sig).unwrap(),
    )
    .expect("the EdDSA signature verifies under the published key");
}

fn hex_bytes(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

//! End-to-end: the agent serves the state directory's CRL in the Workload API's `crl`
//! fields, and open streams get a new message when `keyward revoke` changes it.

mod agent_common;
mod common;

use std::time::Duration;

use agent_common::*;
use common::*;

/// `X509BundlesResponse`: the CRLs and the bundles.
#[derive(Clone, PartialEq, prost::Message)]
struct X509BundlesResponse {
    /// `repeated bytes crl = 1`
    #[prost(bytes = "vec", repeated, tag = "1")]
    crl: Vec<Vec<u8>>,
    /// `map<string, bytes> bundles = 2`
    #[prost(map = "string, bytes", tag = "2")]
    bundles: std::collections::HashMap<String, Vec<u8>>,
}

/// Opens a FetchX509Bundles stream (with the security header).
async fn stream_bundles(
    channel: tonic::transport::Channel,
) -> Result<tonic::Streaming<X509BundlesResponse>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    let mut req = tonic::Request::new(raw::Empty {});
    req.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/SpiffeWorkloadAPI/FetchX509Bundles");
    let codec = tonic_prost::ProstCodec::<raw::Empty, X509BundlesResponse>::default();
    Ok(grpc.server_streaming(req, path, codec).await?.into_inner())
}

/// The next message of a bundles stream, within 20 s.
async fn next(
    stream: &mut tonic::Streaming<X509BundlesResponse>,
    what: &str,
) -> X509BundlesResponse {
    tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .unwrap_or_else(|_| panic!("no message within 20 s: {what}"))
        .expect("stream ok")
        .expect("stream open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundles_stream_receives_the_new_crl_after_a_revocation() {
    let mut agent = Agent::new(&entry("api", 0, "1h", ""));
    agent.start();
    // A certificate issued from the agent's CA with the CLI, in the agent's state dir.
    let out = agent.dir.path().join("svc");
    let serial = issue_named(&agent.state, "svc", &out);

    let mut stream = stream_bundles(raw::channel(&agent.socket).await)
        .await
        .expect("FetchX509Bundles");
    let first = next(&mut stream, "the first message").await;
    assert!(first.crl.is_empty(), "no CRL signed yet");
    assert!(first.bundles.contains_key("spiffe://example.org"));

    keyward_ok(
        &agent.state,
        &["revoke", "--serial", &serial, "--reason", "key-compromise"],
    );
    let second = next(&mut stream, "a message with the new CRL").await;
    let crl = std::fs::read(agent.state.join("crl.der")).unwrap();
    assert_eq!(
        second.crl,
        vec![crl],
        "the crl field holds the state directory's CRL"
    );
    assert_eq!(second.bundles, first.bundles);

    // A re-signed CRL (new number) is pushed too; SIGHUP makes the agent look at once.
    keyward_ok(&agent.state, &["crl"]);
    agent.signal("HUP");
    let third = next(&mut stream, "a message with the re-signed CRL").await;
    let crl = std::fs::read(agent.state.join("crl.der")).unwrap();
    assert_eq!(third.crl, vec![crl]);
    assert_ne!(third.crl, second.crl);

    // The SVID stream carries the CRL as well.
    let svid = raw::fetch_x509(raw::channel(&agent.socket).await, true)
        .await
        .expect("FetchX509SVID");
    assert_eq!(svid.svids.len(), 1);
    assert_eq!(svid.crl, third.crl);
    agent.stop();
}

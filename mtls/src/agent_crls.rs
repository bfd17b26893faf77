//! The CRLs of the Workload API, for [`crate::AgentSource`]: the `spiffe` crate's
//! `X509Source` drops the `crl` fields of its messages, so the CRLs come from a
//! FetchX509Bundles stream of their own, read with a hand-written message that holds
//! only that field (`X509BundlesResponse.crl = 1`; prost skips the bundles). Every
//! message replaces the cell's CRLs; the stream is opened again, with backoff, when the
//! agent goes away, and the last CRLs keep serving meanwhile.

use std::time::Duration;

use keyward_core::Error;
use keyward_core::backoff::Backoff;
use spiffe::transport::Endpoint;
use tokio::task::JoinHandle;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;
use tonic::{Code, Streaming};

use crate::credentials::CredentialCell;
use crate::revocation::RevocationLists;

/// The wait before opening the stream again: 200 ms doubling up to 5 s.
const RECONNECT: Backoff = Backoff::doubling(Duration::from_millis(200), Duration::from_secs(5));

/// `X509BundlesRequest {}`.
#[derive(Clone, PartialEq, prost::Message)]
struct BundlesRequest {}

/// The one field of `X509BundlesResponse` read here: `repeated bytes crl = 1`.
#[derive(Clone, PartialEq, prost::Message)]
struct BundlesCrls {
    #[prost(bytes = "vec", repeated, tag = "1")]
    crl: Vec<Vec<u8>>,
}

/// An open stream of CRLs from the agent at one endpoint.
pub(crate) struct CrlStream {
    endpoint: Endpoint,
    shown: String,
    stream: Streaming<BundlesCrls>,
}

/// What opening the stream found.
pub(crate) enum Opened {
    /// The stream and the CRLs of its first message.
    Stream(Box<CrlStream>, RevocationLists),
    /// The server has no FetchX509Bundles (not a keyward or SPIRE agent): no CRLs.
    Unsupported,
}

impl CrlStream {
    /// Opens the stream at `endpoint` (shown as `shown`) and reads its first message,
    /// trying again with backoff for up to `within`.
    pub(crate) async fn open(
        endpoint: Endpoint,
        shown: String,
        within: Duration,
    ) -> Result<Opened, Error> {
        let deadline = tokio::time::Instant::now() + within;
        match retry(&endpoint, &shown, Some(deadline)).await {
            Ok((stream, crls)) => Ok(Opened::Stream(
                Box::new(CrlStream {
                    endpoint,
                    shown,
                    stream,
                }),
                crls,
            )),
            Err(s) if s.code() == Code::Unimplemented => Ok(Opened::Unsupported),
            Err(s) => Err(Error::unavailable(
                format!(
                    "the agent at {shown} sent no CRLs: {}: {}",
                    s.code(),
                    s.message()
                ),
                None,
            )),
        }
    }

    /// Follows the stream, storing every new set of CRLs in `cell`, and opens it again
    /// when it fails or ends, until aborted.
    pub(crate) fn follow(mut self: Box<Self>, cell: CredentialCell) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let crls = match self.stream.message().await {
                    Ok(Some(msg)) => parse(&msg, &self.shown),
                    Ok(None) | Err(_) => match retry(&self.endpoint, &self.shown, None).await {
                        Ok((stream, crls)) => {
                            self.stream = stream;
                            Ok(crls)
                        }
                        Err(_) => {
                            tracing::warn!(agent = %self.shown, "the Workload API server no longer has FetchX509Bundles; keeping the current CRLs");
                            return;
                        }
                    },
                };
                match crls {
                    Ok(crls) => {
                        tracing::info!(crls = crls.len(), "new CRLs from the agent");
                        cell.store_crls(crls);
                    }
                    Err(e) => tracing::warn!(
                        error = %keyward_core::chain_line(&e),
                        "CRLs from the agent not usable; keeping the current ones"
                    ),
                }
            }
        })
    }
}

/// Opens the stream and reads its first message, again and again with backoff, until
/// that succeeds, the server has no such call (`Unimplemented`), or `deadline` (never
/// without one) would pass.
async fn retry(
    endpoint: &Endpoint,
    shown: &str,
    deadline: Option<tokio::time::Instant>,
) -> Result<(Streaming<BundlesCrls>, RevocationLists), tonic::Status> {
    let mut attempt = 0;
    loop {
        let status = match try_open(endpoint, shown).await {
            Ok(opened) => return Ok(opened),
            Err(s) if s.code() == Code::Unimplemented => return Err(s),
            Err(s) => s,
        };
        attempt += 1;
        let wait = RECONNECT.delay(attempt);
        if deadline.is_some_and(|d| tokio::time::Instant::now() + wait > d) {
            return Err(status);
        }
        tracing::debug!(attempt, code = ?status.code(), retry_in = ?wait, "cannot open the CRL stream");
        tokio::time::sleep(wait).await;
    }
}

/// Opens the CRL stream at `endpoint` (shown as `shown`, trying for up to `within`),
/// stores its first CRLs in `cell` and follows it; `None`, with a warning, when the
/// server has no FetchX509Bundles (peers are then not checked against CRLs).
pub(crate) async fn follow_crls(
    endpoint: Endpoint,
    shown: String,
    within: Duration,
    cell: &CredentialCell,
) -> Result<Option<JoinHandle<()>>, Error> {
    match CrlStream::open(endpoint, shown.clone(), within).await? {
        Opened::Stream(stream, first) => {
            cell.store_crls(first);
            Ok(Some(stream.follow(cell.clone())))
        }
        Opened::Unsupported => {
            tracing::warn!(agent = %shown, "the Workload API server has no FetchX509Bundles; peers are not checked against CRLs");
            Ok(None)
        }
    }
}

/// Opens the stream once and reads its first message.
async fn try_open(
    endpoint: &Endpoint,
    shown: &str,
) -> Result<(Streaming<BundlesCrls>, RevocationLists), tonic::Status> {
    let channel = spiffe::transport::connect(endpoint)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(BundlesRequest {});
    req.metadata_mut()
        .insert("workload.spiffe.io", MetadataValue::from_static("true"));
    let path = PathAndQuery::from_static("/SpiffeWorkloadAPI/FetchX509Bundles");
    let codec = tonic_prost::ProstCodec::<BundlesRequest, BundlesCrls>::default();
    let mut stream = grpc.server_streaming(req, path, codec).await?.into_inner();
    let first = stream
        .message()
        .await?
        .ok_or_else(|| tonic::Status::unavailable("the stream ended at once"))?;
    let crls = parse(&first, shown).map_err(|e| tonic::Status::internal(e.to_string()))?;
    Ok((stream, crls))
}

/// The CRLs of one message.
fn parse(msg: &BundlesCrls, shown: &str) -> Result<RevocationLists, Error> {
    RevocationLists::from_der(&msg.crl).map_err(|e| match e {
        Error::InvalidInput(m) => {
            Error::InvalidInput(format!("the agent at {shown} sent a malformed CRL: {m}"))
        }
        other => other,
    })
}

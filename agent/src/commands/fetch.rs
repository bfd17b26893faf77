//! `keyward fetch`: a Workload API client that writes the caller's SVID to files for
//! programs that read certificates from disk (nginx, PostgreSQL...). It speaks the
//! Workload API through the `spiffe` crate's client, as keyward-rustls's
//! `AgentSource` does, and reads the socket address with the same parser
//! ([`keyward_core::workload_socket`]). The CRLs, which that client drops, come from a
//! FetchX509Bundles stream of their own (the agent's generated client). Each SVID goes
//! into a new directory of `--out` with the CRLs, switched in by one rename
//! ([`out_layout`]). With `--watch` it follows both streams, reconnecting with
//! backoff, writes every rotation and every new CRL, and runs `--exec` through
//! `sh -c` after each.

mod out_layout;

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use backon::Retryable;
use futures_util::{Stream, StreamExt};
use keyward_core::backoff::Backoff;
use keyward_core::check::{ders_to_pem, summarize};
use keyward_core::{Error, workload_socket};
use prost::bytes::Bytes;
use spiffe::transport::{Endpoint, GrpcStatusCode, TransportError};
use spiffe::{WorkloadApiClient, WorkloadApiError, X509Context};
use tonic::Streaming;
use zeroize::Zeroizing;

use crate::cli::FetchArgs;
use crate::daemon::workload_api::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use crate::daemon::workload_api::{X509BundlesRequest, X509BundlesResponse};
use out_layout::SvidFiles;

/// The wait before each reconnection attempt in `--watch` mode: 250 ms doubling up to
/// 30 s, then stretched by up to as much again (jitter).
const RECONNECT_BACKOFF: Backoff =
    Backoff::doubling(Duration::from_millis(250), Duration::from_secs(30)).jittered(1.0, 2.0);

/// Fetches the caller's SVID once (or, with `--watch`, on every rotation) and writes it.
pub async fn run(args: &FetchArgs) -> Result<(), Error> {
    let socket = workload_socket::socket_path_or_env(args.socket.as_deref(), "--socket")?;
    let out = std::path::absolute(&args.out)
        .map_err(|e| Error::io(format!("bad output directory {}", args.out.display()), e))?;
    out_layout::check(&out)?;
    let agent = Agent { socket };
    // The first answer decides: a refusal or an absent agent is the command's error.
    let (mut latest, mut updates) = agent.first_update().await?;
    let dir = write(&out, &latest)?;
    run_hook(args.exec.as_deref(), &dir).await;
    if !args.watch {
        return Ok(());
    }
    loop {
        agent.next_update(&mut updates, &mut latest).await?;
        match write(&out, &latest) {
            Ok(dir) => run_hook(args.exec.as_deref(), &dir).await,
            Err(e) => tracing::warn!(
                error = %keyward_core::chain_line(&e),
                "cannot write the new SVID; the previous files stay in place"
            ),
        }
    }
}

/// The Workload API at one socket.
struct Agent {
    socket: PathBuf,
}

/// An open X.509-SVID stream, the client that carries it, and the CRL stream.
struct Updates {
    stream: Pin<Box<dyn Stream<Item = Result<X509Context, WorkloadApiError>> + Send>>,
    _client: WorkloadApiClient,
    crls: Streaming<X509BundlesResponse>,
}

/// What is written: the latest message of each stream.
struct Latest {
    context: X509Context,
    crls: Vec<Bytes>,
}

impl Agent {
    /// Connects, opens the X.509-SVID and CRL streams and waits for their first
    /// messages.
    async fn first_update(&self) -> Result<(Latest, Updates), Error> {
        let endpoint = Endpoint::Unix(self.socket.clone());
        let client = WorkloadApiClient::connect(endpoint)
            .await
            .map_err(|e| self.error(e))?;
        let mut stream = Box::pin(
            client
                .stream_x509_contexts()
                .await
                .map_err(|e| self.error(e))?,
        );
        let context = match stream.next().await {
            Some(Ok(context)) => context,
            Some(Err(e)) => return Err(self.error(e)),
            None => return Err(self.closed("an SVID")),
        };
        let mut crls = self.crl_stream().await?;
        let first_crls = match crls.message().await {
            Ok(Some(m)) => m.crl,
            Ok(None) => return Err(self.closed("its CRLs")),
            Err(s) => return Err(self.crl_error(&s)),
        };
        let updates = Updates {
            stream,
            _client: client,
            crls,
        };
        let latest = Latest {
            context,
            crls: first_crls,
        };
        Ok((latest, updates))
    }

    /// Opens the FetchX509Bundles stream, whose messages carry the CRLs.
    async fn crl_stream(&self) -> Result<Streaming<X509BundlesResponse>, Error> {
        let channel = spiffe::transport::connect(&Endpoint::Unix(self.socket.clone()))
            .await
            .map_err(|e| self.error(WorkloadApiError::Transport(e)))?;
        let mut req = tonic::Request::new(X509BundlesRequest {});
        req.metadata_mut().insert(
            "workload.spiffe.io",
            tonic::metadata::MetadataValue::from_static("true"),
        );
        SpiffeWorkloadApiClient::new(channel)
            .fetch_x509_bundles(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.crl_error(&s))
    }

    /// Waits for the next message of either stream and takes it into `latest`; when
    /// a stream fails or ends, both are opened again ([`Agent::reconnect`]).
    async fn next_update(&self, updates: &mut Updates, latest: &mut Latest) -> Result<(), Error> {
        let lost = tokio::select! {
            m = updates.stream.next() => match m {
                Some(Ok(context)) => {
                    latest.context = context;
                    return Ok(());
                }
                Some(Err(e)) => self.error(e),
                None => self.closed("the next SVID"),
            },
            m = updates.crls.message() => match m {
                Ok(Some(msg)) => {
                    latest.crls = msg.crl;
                    return Ok(());
                }
                Ok(None) => self.closed("the next CRLs"),
                Err(s) => self.crl_error(&s),
            },
        };
        tracing::warn!(error = %keyward_core::chain_line(&lost), "lost the agent; reconnecting");
        (*latest, *updates) = self.reconnect().await?;
        Ok(())
    }

    /// [`Agent::first_update`] again and again, waiting [`RECONNECT_BACKOFF`] between
    /// attempts, until it succeeds.
    async fn reconnect(&self) -> Result<(Latest, Updates), Error> {
        (|| self.first_update())
            .retry(RECONNECT_BACKOFF.delays())
            .notify(|e, wait| {
                tracing::warn!(error = %keyward_core::chain_line(e), retry_in = ?wait, "cannot reach the agent; retrying")
            })
            .await
    }

    /// The error for a stream the agent closed before sending `what`.
    fn closed(&self, what: &str) -> Error {
        Error::unavailable(
            format!(
                "the agent at {} closed the stream before sending {what}",
                self.socket.display()
            ),
            None,
        )
    }

    /// The error for a failed CRL stream (the caller was served an SVID already, so
    /// it is the agent that is unwell).
    fn crl_error(&self, s: &tonic::Status) -> Error {
        Error::unavailable(
            format!(
                "the agent at {} answered FetchX509Bundles with {:?}: {}",
                self.socket.display(),
                s.code(),
                s.message()
            ),
            None,
        )
    }

    /// One error line for a Workload API failure, naming the socket.
    fn error(&self, e: WorkloadApiError) -> Error {
        let at = self.socket.display();
        let refused = |why: &str| {
            Error::backend(format!(
                "the agent at {at} refused this caller (PermissionDenied): {why}"
            ))
        };
        match e {
            WorkloadApiError::PermissionDenied(why) => refused(&why),
            WorkloadApiError::NoIdentityIssued => refused("no identity issued"),
            WorkloadApiError::Transport(TransportError::Connect(c)) => Error::unavailable(
                format!("cannot connect to the agent at {at}"),
                Some(Box::new(c)),
            ),
            WorkloadApiError::Transport(TransportError::Status(s)) => {
                let msg = format!("the agent at {at} answered {}: {}", s.code(), s.message());
                match s.code() {
                    GrpcStatusCode::Unavailable
                    | GrpcStatusCode::Unknown
                    | GrpcStatusCode::Cancelled => Error::unavailable(msg, None),
                    _ => Error::backend(msg),
                }
            }
            other => {
                Error::backend_with(format!("the agent at {at} sent an unusable answer"), other)
            }
        }
    }
}

/// Writes the context's default SVID (with its trust domain's bundle) and the CRLs
/// into `out`; returns the new SVID directory.
fn write(out: &Path, latest: &Latest) -> Result<PathBuf, Error> {
    let context = &latest.context;
    let svid = context
        .default_svid()
        .ok_or_else(|| Error::backend("the agent sent no SVID"))?;
    let td = svid.spiffe_id().trust_domain();
    let bundle = context.bundle_set().get(td).ok_or_else(|| {
        Error::backend(format!(
            "the agent sent no trust bundle for trust domain {td}"
        ))
    })?;
    let chain: Vec<Vec<u8>> = svid
        .cert_chain()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    let roots: Vec<Vec<u8>> = bundle
        .authorities()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    let summary = summarize(svid.leaf().as_bytes())?;
    let files = SvidFiles {
        cert_pem: ders_to_pem(&chain),
        key_pem: Zeroizing::new(pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            svid.private_key().as_bytes().to_vec(),
        ))),
        bundle_pem: ders_to_pem(&roots),
        crl_pem: latest
            .crls
            .iter()
            .map(|der| keyward_core::issuance::SignedCrl { der: der.to_vec() }.pem())
            .collect(),
    };
    let dir = out_layout::publish(out, &summary.serial_hex, &files)?;
    let until = summary
        .not_after
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    println!(
        "wrote {} (serial {}, valid until {until}) to {}",
        svid.spiffe_id(),
        summary.serial_hex,
        dir.display()
    );
    Ok(dir)
}

/// Runs the `--exec` command with `KEYWARD_SVID_DIR` set to the new SVID directory;
/// its failure is reported, not fatal.
async fn run_hook(cmd: Option<&str>, dir: &Path) {
    let Some(cmd) = cmd else { return };
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("KEYWARD_SVID_DIR", dir)
        .status()
        .await;
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => tracing::warn!(command = %cmd, status = %s, "the --exec command failed"),
        Err(e) => tracing::warn!(command = %cmd, error = %e, "cannot run the --exec command"),
    }
}

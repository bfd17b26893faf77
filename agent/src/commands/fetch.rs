//! `keyward fetch`: a Workload API client that writes the caller's SVID to files for
//! programs that read certificates from disk (nginx, PostgreSQL...). It speaks the
//! Workload API through the `spiffe` crate's client, as keyward-rustls's
//! `AgentSource` does, and reads the socket address with the same parser
//! ([`keyward_core::workload_socket`]). Each SVID goes into a new directory of
//! `--out`, switched in by one rename ([`out_layout`]). With `--watch` it follows the
//! stream, reconnecting with backoff, writes every rotation and runs `--exec`
//! through `sh -c` after each.

mod out_layout;

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use backon::Retryable;
use futures_util::{Stream, StreamExt};
use keyward_core::backoff::Backoff;
use keyward_core::check::{ders_to_pem, summarize};
use keyward_core::{Error, workload_socket};
use spiffe::transport::{Endpoint, GrpcStatusCode, TransportError};
use spiffe::{WorkloadApiClient, WorkloadApiError, X509Context};
use zeroize::Zeroizing;

use crate::cli::FetchArgs;
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
    let (first, mut updates) = agent.first_update().await?;
    let dir = write(&out, &first)?;
    run_hook(args.exec.as_deref(), &dir).await;
    if !args.watch {
        return Ok(());
    }
    loop {
        let context = agent.next_update(&mut updates).await?;
        match write(&out, &context) {
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

/// An open X.509-SVID stream and the client that carries it.
struct Updates {
    stream: Pin<Box<dyn Stream<Item = Result<X509Context, WorkloadApiError>> + Send>>,
    _client: WorkloadApiClient,
}

impl Agent {
    /// Connects, opens the X.509-SVID stream and waits for its first message.
    async fn first_update(&self) -> Result<(X509Context, Updates), Error> {
        let endpoint = Endpoint::Unix(self.socket.clone());
        let client = WorkloadApiClient::connect(endpoint)
            .await
            .map_err(|e| self.error(e))?;
        let stream = Box::pin(
            client
                .stream_x509_contexts()
                .await
                .map_err(|e| self.error(e))?,
        );
        let mut updates = Updates {
            stream,
            _client: client,
        };
        match updates.stream.next().await {
            Some(Ok(context)) => Ok((context, updates)),
            Some(Err(e)) => Err(self.error(e)),
            None => Err(Error::unavailable(
                format!(
                    "the agent at {} closed the stream before sending an SVID",
                    self.socket.display()
                ),
                None,
            )),
        }
    }

    /// The next message on `updates`; when the stream fails or ends, the first
    /// message of a new one ([`Agent::reconnect`]), which then replaces it.
    async fn next_update(&self, updates: &mut Updates) -> Result<X509Context, Error> {
        match updates.stream.next().await {
            Some(Ok(context)) => return Ok(context),
            Some(Err(e)) => tracing::warn!(
                error = %keyward_core::chain_line(&self.error(e)),
                "lost the agent; reconnecting"
            ),
            None => tracing::warn!(
                socket = %self.socket.display(),
                "the agent closed the stream; reconnecting"
            ),
        }
        let (context, fresh) = self.reconnect().await?;
        *updates = fresh;
        Ok(context)
    }

    /// [`Agent::first_update`] again and again, waiting [`RECONNECT_BACKOFF`] between
    /// attempts, until it succeeds.
    async fn reconnect(&self) -> Result<(X509Context, Updates), Error> {
        (|| self.first_update())
            .retry(RECONNECT_BACKOFF.delays())
            .notify(|e, wait| {
                tracing::warn!(error = %keyward_core::chain_line(e), retry_in = ?wait, "cannot reach the agent; retrying")
            })
            .await
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

/// Writes the context's default SVID (with its trust domain's bundle) into `out`;
/// returns the new SVID directory.
fn write(out: &Path, context: &X509Context) -> Result<PathBuf, Error> {
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

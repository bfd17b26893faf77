//! Load client for the agent's Workload API (driven by scripts/bench-agent.sh).
//!
//! `load run --socket PATH [--tasks 32] [--seconds 10] [--threads 2]`: TASKS concurrent tasks, each
//! on its own connection, open FetchX509SVID streams one after another and read the
//! first message only; prints fetches/s, p50/p99 latency and errors.
//!
//! `load baseline --socket PATH --from AGENT_SOCKET`: the raw baseline: a tonic server
//! that answers every FetchX509SVID with one fixed response (fetched once from the
//! agent), with no attestation, matching or per-caller work.
#![forbid(unsafe_code)]

mod common;

use common::{arg, channel};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::codegen::BoxStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

// The agent library's generated messages (with their hand-written, key-free Debug).
use keyward::daemon::workload_api as api;

use api::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use api::spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer};
use api::{X509svidRequest, X509svidResponse};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let socket = PathBuf::from(arg(&args, "--socket").ok_or("--socket PATH is required")?);
    let threads = arg(&args, "--threads").map_or(Ok(2), |s| s.parse())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some("run") => {
            let tasks = arg(&args, "--tasks").map_or(Ok(32), |s| s.parse())?;
            let seconds = arg(&args, "--seconds").map_or(Ok(10), |s| s.parse())?;
            rt.block_on(run(&socket, tasks, Duration::from_secs(seconds)))
        }
        Some("baseline") => {
            let from = PathBuf::from(arg(&args, "--from").ok_or("--from AGENT_SOCKET is required")?);
            rt.block_on(baseline(&socket, &from))
        }
        _ => Err("usage: load run --socket PATH [--tasks N] [--seconds S] | load baseline --socket PATH --from AGENT_SOCKET".into()),
    }
}

/// One FetchX509SVID call, first message only.
async fn fetch_once(
    client: &mut SpiffeWorkloadApiClient<Channel>,
) -> Result<X509svidResponse, Status> {
    let mut req = Request::new(X509svidRequest {});
    req.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let mut stream = client.fetch_x509svid(req).await?.into_inner();
    stream
        .message()
        .await?
        .ok_or_else(|| Status::internal("empty stream"))
}

async fn run(
    socket: &Path,
    tasks: usize,
    duration: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let ch = channel(socket).await?;
        handles.push(tokio::spawn(async move {
            let mut client = SpiffeWorkloadApiClient::new(ch);
            let (mut lat, mut errors) = (Vec::with_capacity(1 << 16), 0u64);
            while Instant::now() < deadline {
                let t = Instant::now();
                match fetch_once(&mut client).await {
                    Ok(r) if !r.svids.is_empty() => lat.push(t.elapsed().as_micros() as u32),
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for h in handles {
        let (l, e) = h.await?;
        all.extend(l);
        errors += e;
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "fetches={} seconds={secs:.1} fetches_per_s={:.0} p50_us={} p99_us={} max_us={} errors={errors}",
        all.len(),
        all.len() as f64 / secs,
        pct(0.50),
        pct(0.99),
        all.last().copied().unwrap_or(0),
    );
    Ok(())
}

/// The baseline server: a fixed response, nothing else.
struct Fixed(Arc<X509svidResponse>);

#[tonic::async_trait]
impl SpiffeWorkloadApi for Fixed {
    async fn fetch_x509svid(
        &self,
        _req: Request<X509svidRequest>,
    ) -> Result<Response<BoxStream<X509svidResponse>>, Status> {
        // The first message, then the stream stays open (as a Workload API stream does).
        let msg = (*self.0).clone();
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::chain(
            tokio_stream::once(Ok(msg)),
            tokio_stream::pending(),
        ))))
    }
}

async fn baseline(socket: &Path, from: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut client = SpiffeWorkloadApiClient::new(channel(from).await?);
    let fixed = fetch_once(&mut client).await?;
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket)?;
    println!("baseline serving on {}", socket.display());
    tonic::transport::Server::builder()
        .add_service(SpiffeWorkloadApiServer::new(Fixed(Arc::new(fixed))))
        .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
        .await?;
    Ok(())
}

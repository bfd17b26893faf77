//! Load client for the agent's Envoy SDS (driven by scripts/bench-sds.sh).
//!
//! `sds_load --socket PATH --agent-pid PID --agent-log FILE [--streams 1000]
//! [--connections 20]`: opens STREAMS StreamSecrets streams spread over CONNECTIONS
//! connections, each subscribing to `default` and ACKing the first response as Envoy
//! does; prints the agent's resident memory per open stream; then waits for the next
//! push on every stream (the agent's next rotation of the SVID) and prints how long
//! after the agent logged the new SVID's issuance (its JSON log, `log_format = "json"`)
//! each stream received it: p50, p99 and the last.
#![forbid(unsafe_code)]

mod common;

use common::{arg, channel};

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

// The agent library's generated Envoy messages and client.
use keyward::daemon::sds::SECRET_TYPE_URL;
use keyward::daemon::sds::proto::envoy::service::discovery::v3::{
    DiscoveryRequest, DiscoveryResponse,
};
use keyward::daemon::sds::proto::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;

/// How long the pushes of one rotation may take to arrive.
const PUSH_WAIT: Duration = Duration::from_secs(120);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let socket = PathBuf::from(arg(&args, "--socket").ok_or("--socket PATH is required")?);
    let pid: u32 = arg(&args, "--agent-pid")
        .ok_or("--agent-pid PID is required")?
        .parse()?;
    let log = PathBuf::from(arg(&args, "--agent-log").ok_or("--agent-log FILE is required")?);
    let streams: usize = arg(&args, "--streams").map_or(Ok(1000), |s| s.parse())?;
    let connections: usize = arg(&args, "--connections").map_or(Ok(20), |s| s.parse())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(run(&socket, pid, &log, streams, connections))
}

fn request(to: Option<&DiscoveryResponse>) -> DiscoveryRequest {
    DiscoveryRequest {
        resource_names: vec!["default".into()],
        type_url: SECRET_TYPE_URL.into(),
        version_info: to.map(|r| r.version_info.clone()).unwrap_or_default(),
        response_nonce: to.map(|r| r.nonce.clone()).unwrap_or_default(),
        ..Default::default()
    }
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> Result<u64, Box<dyn std::error::Error>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS line")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("no VmRSS value")?
        .parse()?)
}

/// When the agent last logged "issued workload SVID" (its JSON log's timestamp).
fn last_issuance(log: &Path) -> Result<SystemTime, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(log)?;
    let line = text
        .lines()
        .rfind(|l| l.contains("issued workload SVID"))
        .ok_or("the agent logged no issuance")?;
    let json: serde_json::Value = serde_json::from_str(line)?;
    let stamp = json["timestamp"].as_str().ok_or("no timestamp")?;
    let at = time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_nanos(at.unix_timestamp_nanos().try_into()?))
}

async fn run(
    socket: &Path,
    pid: u32,
    log: &Path,
    streams: usize,
    connections: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let before = rss_kib(pid)?;
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels.push(channel(socket).await?);
    }
    let (opened_tx, mut opened_rx) = mpsc::channel(streams);
    let (pushed_tx, mut pushed_rx) = mpsc::channel(streams);
    for i in 0..streams {
        let mut client = SecretDiscoveryServiceClient::new(channels[i % connections].clone());
        let (opened, pushed) = (opened_tx.clone(), pushed_tx.clone());
        tokio::spawn(async move {
            let (tx, rx) = mpsc::channel(4);
            tx.send(request(None)).await.ok()?;
            let mut responses = client
                .stream_secrets(ReceiverStream::new(rx))
                .await
                .ok()?
                .into_inner();
            let first = responses.message().await.ok()??;
            tx.send(request(Some(&first))).await.ok()?;
            opened.send(()).await.ok()?;
            let push = responses.message().await.ok()??;
            let at = SystemTime::now();
            (push.version_info != first.version_info).then_some(())?;
            tx.send(request(Some(&push))).await.ok()?;
            pushed.send(at).await.ok()?;
            // Held open until the run ends.
            std::future::pending::<()>().await;
            Some(())
        });
    }
    drop((opened_tx, pushed_tx));
    for n in 0..streams {
        opened_rx
            .recv()
            .await
            .ok_or(format!("only {n} of {streams} streams opened"))?;
    }
    // Let the agent settle (allocator, timers) before reading its memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid)?;
    println!(
        "sds streams open: {streams} on {connections} connections; agent RSS {before} KiB -> {after} KiB, {:.1} KiB per stream",
        after.saturating_sub(before) as f64 / streams as f64
    );
    let mut arrivals = Vec::with_capacity(streams);
    while arrivals.len() < streams {
        match tokio::time::timeout(PUSH_WAIT, pushed_rx.recv()).await {
            Ok(Some(at)) => arrivals.push(at),
            _ => {
                return Err(
                    format!("only {} of {streams} streams got a push", arrivals.len()).into(),
                );
            }
        }
    }
    let issued = last_issuance(log)?;
    let mut ms: Vec<f64> = arrivals
        .iter()
        .map(|a| a.duration_since(issued).unwrap_or_default().as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() as f64 * p) as usize).min(ms.len() - 1)];
    println!(
        "rotation to push ({streams} streams): p50 {:.1} ms, p99 {:.1} ms, last {:.1} ms after the agent logged the new SVID",
        pct(0.50),
        pct(0.99),
        ms[ms.len() - 1]
    );
    Ok(())
}

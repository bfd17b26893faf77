//! Load client for the agent's KeyService (driven by `keyward-bench keys`, see
//! bench/src/keys.rs): the socket side of the KeyService benchmark rows.
//!
//! `keys_load --socket PATH --grant NAME --op sign|data-key [--tasks 32] [--seconds 5]
//! [--warm-up 0.2] [--threads 2]`: TASKS concurrent tasks, each on its own connection,
//! call `Sign` (a 64-byte message) or `GenerateDataKey` on the grant NAME one after
//! another, first for the warm-up seconds (not counted), then for SECONDS. Prints one
//! line: `ops=N ops_per_s=R p50_us=P p99_us=Q errors=E first_error=...`.
#![forbid(unsafe_code)]

mod common;

use common::{arg, channel};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use keyward::daemon::keys::proto::key_service_client::KeyServiceClient;
use keyward::daemon::keys::proto::{GenerateDataKeyRequest, SignRequest};
use tonic::transport::Channel;

/// The length of the message `Sign` is asked to sign (keyward-bench signs as long a
/// message in process and raw).
const MESSAGE_LEN: usize = 64;

/// The KeyService call one load run makes.
#[derive(Clone, Copy)]
enum Op {
    Sign,
    DataKey,
}

/// What one task measured.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let socket = PathBuf::from(arg(&args, "--socket").ok_or("--socket PATH is required")?);
    let grant = arg(&args, "--grant").ok_or("--grant NAME is required")?;
    let op = match arg(&args, "--op").as_deref() {
        Some("sign") => Op::Sign,
        Some("data-key") => Op::DataKey,
        _ => return Err("--op sign|data-key is required".into()),
    };
    let tasks: usize = arg(&args, "--tasks").map_or(Ok(32), |s| s.parse())?;
    let seconds: f64 = arg(&args, "--seconds").map_or(Ok(5.0), |s| s.parse())?;
    let warm_up: f64 = arg(&args, "--warm-up").map_or(Ok(0.2), |s| s.parse())?;
    let threads: usize = arg(&args, "--threads").map_or(Ok(2), |s| s.parse())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    let (warm_up, window) = (
        Duration::try_from_secs_f64(warm_up)?,
        Duration::try_from_secs_f64(seconds)?,
    );
    let line = rt.block_on(run(socket, grant, op, tasks, warm_up, window))?;
    println!("{line}");
    Ok(())
}

/// Connects TASKS clients, warms up, measures; returns the result line.
async fn run(
    socket: PathBuf,
    grant: String,
    op: Op,
    tasks: usize,
    warm_up: Duration,
    window: Duration,
) -> Result<String, Box<dyn std::error::Error>> {
    let mut clients = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        clients.push(KeyServiceClient::new(channel(&socket).await?));
    }
    let started = Instant::now() + warm_up;
    let end = started + window;
    let handles: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let grant = grant.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                loop {
                    let t = Instant::now();
                    if t >= end {
                        return tally;
                    }
                    let outcome = call(&mut client, &grant, op).await;
                    if t < started {
                        continue;
                    }
                    match outcome {
                        Ok(()) => tally.latencies.push(t.elapsed()),
                        Err(status) => {
                            tally.errors += 1;
                            tally.first_error.get_or_insert_with(|| status.to_string());
                        }
                    }
                }
            })
        })
        .collect();
    let mut all = Tally::default();
    for h in handles {
        let mut tally = h.await?;
        all.latencies.append(&mut tally.latencies);
        all.errors += tally.errors;
        if all.first_error.is_none() {
            all.first_error = tally.first_error;
        }
    }
    let took = started.elapsed().as_secs_f64();
    all.latencies.sort();
    let pct = |p: usize| {
        all.latencies
            .get(all.latencies.len().saturating_sub(1) * p / 100)
            .map_or(0, |d| d.as_micros())
    };
    Ok(format!(
        "ops={} ops_per_s={:.1} p50_us={} p99_us={} errors={} first_error={}",
        all.latencies.len(),
        all.latencies.len() as f64 / took,
        pct(50),
        pct(99),
        all.errors,
        all.first_error
            .map_or("none".into(), |e| e.replace(char::is_whitespace, "_"))
    ))
}

/// One KeyService call; the response is checked for being non-empty.
async fn call(
    client: &mut KeyServiceClient<Channel>,
    grant: &str,
    op: Op,
) -> Result<(), tonic::Status> {
    let header = |req: &mut tonic::metadata::MetadataMap| {
        req.insert(
            "workload.spiffe.io",
            tonic::metadata::MetadataValue::from_static("true"),
        );
    };
    let empty = match op {
        Op::Sign => {
            let mut req = tonic::Request::new(SignRequest {
                key: grant.to_string(),
                message: vec![7u8; MESSAGE_LEN].into(),
                algorithm: String::new(),
            });
            header(req.metadata_mut());
            client.sign(req).await?.into_inner().signature.is_empty()
        }
        Op::DataKey => {
            let mut req = tonic::Request::new(GenerateDataKeyRequest {
                key: grant.to_string(),
            });
            header(req.metadata_mut());
            let out = client.generate_data_key(req).await?.into_inner();
            out.plaintext.len() != 32 || out.wrapped.is_empty()
        }
    };
    if empty {
        return Err(tonic::Status::internal("an empty answer"));
    }
    Ok(())
}

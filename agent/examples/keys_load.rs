//! Load client for the agent's KeyService `Sign`, beside the same key signing in process.
//!
//! `keys_load --socket PATH --grant NAME --key URI [--tasks 32] [--seconds 5]`: TASKS
//! concurrent tasks, each on its own connection, call `Sign` (a 64-byte message) on the
//! grant NAME one after another for SECONDS; then TASKS tasks call `KeySigner::sign` on
//! the key URI (the grant's key) opened in this process, as long. Prints signatures/s
//! and p50/p99 latency of each, and the errors.
#![forbid(unsafe_code)]

mod common;

use common::{arg, channel};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward::backends::Backends;
use keyward::daemon::keys::proto::SignRequest;
use keyward::daemon::keys::proto::key_service_client::KeyServiceClient;
use keyward_core::{KeySigner, KeyUri};

/// What one task measured.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let socket = PathBuf::from(arg(&args, "--socket").ok_or("--socket PATH is required")?);
    let grant = arg(&args, "--grant").ok_or("--grant NAME is required")?;
    let key = KeyUri::parse(&arg(&args, "--key").ok_or("--key URI is required")?)?;
    let tasks: usize = arg(&args, "--tasks").map_or(Ok(32), |s| s.parse())?;
    let seconds: u64 = arg(&args, "--seconds").map_or(Ok(5), |s| s.parse())?;
    let run_for = Duration::from_secs(seconds);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let started = Instant::now();
        let end = started + run_for;
        let mut socket_tasks = Vec::new();
        for _ in 0..tasks {
            let (socket, grant) = (socket.clone(), grant.clone());
            socket_tasks.push(tokio::spawn(async move {
                let mut tally = Tally::default();
                let Ok(ch) = channel(&socket).await else {
                    tally.errors += 1;
                    return tally;
                };
                let mut client = KeyServiceClient::new(ch);
                while Instant::now() < end {
                    let mut req = tonic::Request::new(SignRequest {
                        key: grant.clone(),
                        message: vec![7u8; 64].into(),
                        algorithm: String::new(),
                    });
                    req.metadata_mut()
                        .insert("workload.spiffe.io", "true".parse().expect("header"));
                    let t = Instant::now();
                    match client.sign(req).await {
                        Ok(_) => tally.latencies.push(t.elapsed()),
                        Err(_) => tally.errors += 1,
                    }
                }
                tally
            }));
        }
        report("Sign through the socket", socket_tasks, started).await;

        let signer = Backends::default().open(&key).await?;
        let started = Instant::now();
        let end = started + run_for;
        let mut local_tasks = Vec::new();
        for _ in 0..tasks {
            let signer: Arc<dyn KeySigner> = signer.clone();
            local_tasks.push(tokio::spawn(async move {
                let mut tally = Tally::default();
                while Instant::now() < end {
                    let t = Instant::now();
                    match signer.sign(&[7u8; 64]).await {
                        Ok(_) => tally.latencies.push(t.elapsed()),
                        Err(_) => tally.errors += 1,
                    }
                    // A software key signs without waiting: let the other tasks run.
                    tokio::task::yield_now().await;
                }
                tally
            }));
        }
        report("KeySigner::sign in process", local_tasks, started).await;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

/// Gathers the tasks' tallies and prints one line (the rate over the time from
/// `started` until the last task ended).
async fn report(what: &str, tasks: Vec<tokio::task::JoinHandle<Tally>>, started: Instant) {
    let mut all = Tally::default();
    for t in tasks {
        if let Ok(mut tally) = t.await {
            all.latencies.append(&mut tally.latencies);
            all.errors += tally.errors;
        }
    }
    let took = started.elapsed();
    all.latencies.sort();
    let pct = |p: usize| {
        all.latencies
            .get(all.latencies.len().saturating_sub(1) * p / 100)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "{what}: {:.0} signatures/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
        all.latencies.len() as f64 / took.as_secs_f64(),
        pct(50),
        pct(99),
        all.errors
    );
}

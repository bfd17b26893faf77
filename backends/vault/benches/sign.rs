//! ECDSA P-256 Transit signing against the OpenBao of scripts/openbao.sh: a raw HTTP
//! sign loop beside `KeySigner::sign`, with the same HTTP client settings
//! (`VaultSettings::http_client`), the same key and the same concurrency (1 and 8).
//!
//! First a side-by-side measurement (alternating rounds of raw and keyward) prints both
//! rates and their ratio (target: keyward >= 0.90 of raw); then criterion measures the
//! four cases. Run: `cargo bench -p keyward-vault --bench sign` with the variables of
//! scripts/openbao.sh set.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use criterion::{Criterion, Throughput};
use keyward_core::{Algorithm, HashAlg, KeyBackend, KeySigner, KeyUri, verify_signature};
use keyward_vault::{TransitBackend, VaultSettings};

const MESSAGE: &[u8] = b"keyward transit benchmark: a to-be-signed certificate stands here";
const CONCURRENCY: [usize; 2] = [1, 8];
const ROUNDS: u32 = 16;
const WINDOW: Duration = Duration::from_millis(500);

/// The raw baseline: one hand-written sign request per call, same client settings.
#[derive(Clone)]
struct Raw {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Raw {
    async fn sign(&self) {
        let digest = B64.encode(HashAlg::Sha256.digest(MESSAGE));
        let body = format!(
            "{{\"input\":\"{digest}\",\"prehashed\":true,\"hash_algorithm\":\"sha2-256\",\
             \"marshaling_algorithm\":\"asn1\"}}"
        );
        let resp = self
            .http
            .post(&self.url)
            .header("X-Vault-Token", &self.token)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("raw sign request");
        assert!(
            resp.status().is_success(),
            "raw sign: HTTP {}",
            resp.status()
        );
        resp.bytes().await.expect("raw sign body");
    }
}

#[derive(Clone)]
enum Path {
    Raw(Raw),
    Keyward(Arc<dyn KeySigner>),
}

impl Path {
    async fn sign(&self) {
        match self {
            Path::Raw(r) => r.sign().await,
            Path::Keyward(s) => {
                s.sign(MESSAGE).await.expect("keyward sign");
            }
        }
    }

    /// Signs with `workers` tasks until `window` ends; returns signs per second.
    async fn rate(&self, workers: usize, window: Duration) -> f64 {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..workers)
            .map(|_| {
                let (me, stop, count) = (self.clone(), stop.clone(), count.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        me.sign().await;
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        tokio::time::sleep(window).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
    }

    /// `iters` signs spread over `workers` tasks; the time they took.
    async fn timed(&self, workers: usize, iters: u64) -> Duration {
        let started = Instant::now();
        let tasks: Vec<_> = (0..workers as u64)
            .map(|w| {
                let me = self.clone();
                let n = iters / workers as u64 + u64::from(w < iters % workers as u64);
                tokio::spawn(async move {
                    for _ in 0..n {
                        me.sign().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        started.elapsed()
    }
}

fn setup(rt: &tokio::runtime::Runtime) -> (Raw, Arc<dyn KeySigner>) {
    if std::env::var("KEYWARD_TEST_VAULT_ADDR").is_err() {
        panic!(
            "KEYWARD_TEST_VAULT_ADDR not set: run the benchmark through scripts/test.sh (or source scripts/openbao.sh and call openbao_start)"
        );
    }
    let settings =
        VaultSettings::from_env().expect("VAULT_ADDR/VAULT_TOKEN from scripts/openbao.sh");
    let token = std::env::var("VAULT_TOKEN").expect("VAULT_TOKEN");
    rt.block_on(async {
        let backend = TransitBackend::new(&settings).unwrap();
        let name = format!("bench-p256-{}", std::process::id());
        let uri = KeyUri::parse(&format!("transit:{name}")).unwrap();
        let signer = match backend.generate(&uri, Algorithm::EcdsaP256Sha256).await {
            Ok(s) => s,
            Err(keyward_core::Error::AlreadyExists(_)) => backend.open(&uri).await.unwrap(),
            Err(e) => panic!("generate {uri}: {e}"),
        };
        let sig = signer.sign(MESSAGE).await.unwrap();
        verify_signature(
            signer.algorithm(),
            signer.public_key_spki_der(),
            MESSAGE,
            &sig,
        )
        .unwrap();
        let raw = Raw {
            http: settings.http_client().unwrap(),
            url: format!("{}/v1/transit/sign/{name}", settings.address),
            token,
        };
        raw.sign().await;
        (raw, signer)
    })
}

/// Alternating rounds of raw and keyward at each concurrency; prints rates and ratio.
fn side_by_side(
    rt: &tokio::runtime::Runtime,
    raw: &Path,
    keyward: &Path,
    window: Duration,
    rounds: u32,
) {
    for workers in CONCURRENCY {
        let (mut r, mut k) = (0.0, 0.0);
        rt.block_on(async {
            raw.rate(workers, window / 4).await; // warm the connection pools
            keyward.rate(workers, window / 4).await;
            for round in 0..rounds {
                if round % 2 == 0 {
                    r += raw.rate(workers, window).await;
                    k += keyward.rate(workers, window).await;
                } else {
                    k += keyward.rate(workers, window).await;
                    r += raw.rate(workers, window).await;
                }
            }
        });
        let (r, k) = (r / f64::from(rounds), k / f64::from(rounds));
        println!(
            "transit sign ECDSA P-256, concurrency {workers}: raw HTTP {r:.0}/s, keyward KeySigner {k:.0}/s, ratio {:.3} (target >= 0.90)",
            k / r
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (raw, signer) = setup(&rt);
    let raw = Path::Raw(raw);
    let keyward = Path::Keyward(signer);
    let benching = std::env::args().any(|a| a == "--bench");
    if benching {
        side_by_side(&rt, &raw, &keyward, WINDOW, ROUNDS);
    } else {
        // `cargo test --benches`: a quick pass to show the benchmark works.
        side_by_side(&rt, &raw, &keyward, Duration::from_millis(100), 1);
    }

    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    let mut group = c.benchmark_group("transit_sign_p256");
    group.throughput(Throughput::Elements(1));
    for workers in CONCURRENCY {
        for (name, path) in [("raw_http", &raw), ("keyward", &keyward)] {
            group.bench_function(format!("{name}/concurrency_{workers}"), |b| {
                b.to_async(&rt)
                    .iter_custom(|iters| path.timed(workers, iters));
            });
        }
    }
    group.finish();
    c.final_summary();
}

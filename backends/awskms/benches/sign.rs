//! Signing throughput against moto_server: a raw aws-sdk-kms Sign loop beside
//! `KeySigner::sign` on the same ECDSA P-256 key and the same SDK client, at
//! concurrency 1 and 8. Prints both rates and their ratio (target: >= 0.90).
//!
//! moto's own speed drifts by 10-20 % over seconds, more than keyward's overhead, so
//! besides criterion's per-path figures the ratio comes from a paired run: blocks of
//! raw and keyward signs alternated in ABBA order, so that drift hits both paths alike.
//!
//! Needs moto (scripts/moto.sh): `cargo bench -p keyward-awskms --bench sign`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keyward_awskms::{AwsKmsBackend, KmsSettings};
use keyward_core::{Algorithm, KeyBackend, KeySigner, KeyUri};
use tokio::runtime::Runtime;

const CONCURRENCY: [usize; 2] = [1, 8];
const MESSAGE: &[u8] = b"keyward benchmark: a short message, as a TBSCertificate would be";
/// Paired run: this many blocks of each path, of this many signs each.
const PAIRED_ROUNDS: usize = 20;
const PAIRED_BLOCK: u64 = 100;

type SignFuture = Pin<Box<dyn Future<Output = Vec<u8>> + Send>>;
/// One signature by one of the two paths.
type SignFn = Arc<dyn Fn() -> SignFuture + Send + Sync>;

/// The raw SDK path: one Sign call, exactly as keyward makes it for a short message.
fn raw_path(client: aws_sdk_kms::Client, key_arn: Arc<str>) -> SignFn {
    Arc::new(move || {
        let (client, key_arn) = (client.clone(), key_arn.clone());
        Box::pin(async move {
            client
                .sign()
                .key_id(&*key_arn)
                .message(Blob::new(MESSAGE))
                .message_type(MessageType::Raw)
                .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
                .send()
                .await
                .unwrap()
                .signature
                .unwrap()
                .into_inner()
        })
    })
}

/// keyward's path: `KeySigner::sign`.
fn keyward_path(signer: Arc<dyn KeySigner>) -> SignFn {
    Arc::new(move || {
        let signer = signer.clone();
        Box::pin(async move { signer.sign(MESSAGE).await.unwrap() })
    })
}

/// Runs `iters` signs split over `conc` tasks and returns the wall time.
async fn run(iters: u64, conc: usize, sign: SignFn) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = (0..conc as u64)
        .map(|t| {
            let n = iters / conc as u64 + u64::from(t < iters % conc as u64);
            let sign = sign.clone();
            tokio::spawn(async move {
                for _ in 0..n {
                    assert!(!sign().await.is_empty());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

/// Rates of a paired run, in signs per second.
struct Paired {
    raw: f64,
    keyward: f64,
    /// Median over rounds of (keyward rate / raw rate) within the round.
    median_ratio: f64,
}

/// Alternates blocks of both paths (ABBA) and compares them round by round.
fn paired(rt: &Runtime, conc: usize, raw: &SignFn, kw: &SignFn) -> Paired {
    let (mut raw_time, mut kw_time) = (Duration::ZERO, Duration::ZERO);
    let mut ratios = Vec::with_capacity(PAIRED_ROUNDS);
    for round in 0..PAIRED_ROUNDS {
        let time = |sign: &SignFn| rt.block_on(run(PAIRED_BLOCK, conc, sign.clone()));
        let (r, k) = if round % 2 == 0 {
            let r = time(raw);
            (r, time(kw))
        } else {
            let k = time(kw);
            (time(raw), k)
        };
        raw_time += r;
        kw_time += k;
        ratios.push(r.as_secs_f64() / k.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    let signs = (PAIRED_ROUNDS as u64 * PAIRED_BLOCK) as f64;
    Paired {
        raw: signs / raw_time.as_secs_f64(),
        keyward: signs / kw_time.as_secs_f64(),
        median_ratio: (ratios[(PAIRED_ROUNDS - 1) / 2] + ratios[PAIRED_ROUNDS / 2]) / 2.0,
    }
}

fn bench(c: &mut Criterion) {
    let endpoint = std::env::var("KEYWARD_TEST_KMS_ENDPOINT").unwrap_or_else(|_| {
        panic!("KEYWARD_TEST_KMS_ENDPOINT not set: run the benchmark after scripts/moto.sh's moto_start")
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let backend = AwsKmsBackend::new(KmsSettings {
        endpoint: Some(endpoint),
        region: Some("us-east-1".into()),
        ..KmsSettings::default()
    });
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let uri = KeyUri::parse(&format!("awskms:alias/kw-bench-{nanos}/p256")).unwrap();
    let KeyUri::AwsKms(kms) = &uri else {
        unreachable!()
    };
    let (signer, client, key_arn) = rt.block_on(async {
        let signer = backend
            .generate(&uri, Algorithm::EcdsaP256Sha256)
            .await
            .unwrap();
        // The very client the backend uses: same configuration, same connection pool.
        let client = backend.sdk_client(kms).await.unwrap();
        let meta = client
            .describe_key()
            .key_id(kms.key_id())
            .send()
            .await
            .unwrap();
        let arn = meta.key_metadata.unwrap().arn.unwrap();
        (signer, client, arn)
    });
    let raw = raw_path(client, key_arn.into());
    let kw = keyward_path(signer);

    let mut summary = Vec::new();
    for conc in CONCURRENCY {
        let mut group = c.benchmark_group(format!("kms_sign_concurrency_{conc}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(4))
            .throughput(Throughput::Elements(1));
        for (name, sign) in [("raw_aws_sdk_sign", &raw), ("keyward_keysigner_sign", &kw)] {
            group.bench_function(name, |b| {
                b.to_async(&rt)
                    .iter_custom(|iters| run(iters, conc, sign.clone()))
            });
        }
        group.finish();
        summary.push((conc, paired(&rt, conc, &raw, &kw)));
    }
    println!(
        "\nAWS KMS Sign against moto, ECDSA P-256, {}-byte message; paired run of {} x {} signs per path:",
        MESSAGE.len(),
        PAIRED_ROUNDS,
        PAIRED_BLOCK
    );
    for (conc, p) in summary {
        println!(
            "  concurrency {conc}: raw aws-sdk-kms {:.0}/s, keyward KeySigner {:.0}/s, ratio {:.3} (median of per-round ratios {:.3}; target >= 0.90)",
            p.raw,
            p.keyward,
            p.keyward / p.raw,
            p.median_ratio
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

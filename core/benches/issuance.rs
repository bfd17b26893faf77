//! ECDSA P-256 service certificates (leaf key generation + signing + encoding): keyward's
//! full path (`SoftwareKey::generate` + `CaIssuer::issue_service`, which includes the
//! mandatory post-issuance check) beside direct rcgen doing the same in the same run.
//!
//! Also measured: batches of 8 through `issue_service_batch` (one `spawn_blocking` per
//! batch), the post-issuance check on its own (`verify_issued`, which parses fully), the
//! path of a signer that is not ready at the first poll (its signature awaited on the
//! task, the certificate encoded twice), and a bare `spawn_blocking` round trip.
//!
//! Criterion reports each on its own. Because other work on the machine shifts such
//! figures between benchmarks, the summary printed at the end comes from a second,
//! interleaved run: rounds of N certificates per variant, one variant after the other,
//! and the median over rounds of each per-certificate time and of each ratio.
//!
//! Run: `cargo bench -p keyward-core --bench issuance`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{Criterion, criterion_group, criterion_main};
use keyward_core::issuance::{self, CaIssuer, ServiceProfile};
use keyward_core::{Algorithm, Error, KeySigner, KeyUri};
use keyward_software::SoftwareKey;
use rcgen::string::Ia5String;
use rcgen::{
    CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    SanType,
};

#[path = "common/raw_profile.rs"]
mod raw_profile;

const P256: Algorithm = Algorithm::EcdsaP256Sha256;

/// A signer that is not ready at the first poll, forcing the adapter's awaited path.
#[derive(Debug)]
struct YieldOnce(Arc<dyn KeySigner>);

#[async_trait]
impl KeySigner for YieldOnce {
    fn uri(&self) -> &KeyUri {
        self.0.uri()
    }
    fn algorithm(&self) -> Algorithm {
        self.0.algorithm()
    }
    fn public_key_spki_der(&self) -> &[u8] {
        self.0.public_key_spki_der()
    }
    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        tokio::task::yield_now().await;
        self.0.sign(message).await
    }
}

fn uri(label: &str) -> KeyUri {
    KeyUri::parse(&format!("file:/nonexistent/keyward-bench/{label}.pem")).unwrap()
}

fn profile() -> ServiceProfile {
    ServiceProfile {
        common_name: "svc.example".into(),
        dns: vec![],
        ips: vec![],
        uris: vec![],
        validity: Duration::from_secs(90 * 86_400),
    }
}

/// The same profile keyward issues, built directly with rcgen.
fn rcgen_params() -> CertificateParams {
    let name = Ia5String::try_from("svc.example").unwrap();
    raw_profile::service_params(
        "svc.example",
        vec![SanType::DnsName(name)],
        time::Duration::days(90),
    )
}

/// The keyward side: a software root CA as an issuer, also behind a slow signer.
struct Keyward {
    ca: CaIssuer,
    slow_ca: CaIssuer,
    ca_key: Arc<dyn KeySigner>,
    leaf_uri: KeyUri,
    profile: ServiceProfile,
    sample: Vec<u8>,
}

impl Keyward {
    async fn new() -> Self {
        let (ca_key, _) = SoftwareKey::generate(P256, uri("ca")).unwrap();
        let ca_key: Arc<dyn KeySigner> = Arc::new(ca_key);
        let root = issuance::self_signed_root(
            ca_key.clone(),
            "CN=Bench Root",
            issuance::DEFAULT_ROOT_VALIDITY,
        )
        .await
        .unwrap();
        let ca = CaIssuer::new(root.der.clone(), vec![], ca_key.clone()).unwrap();
        let slow_ca = CaIssuer::new(root.der, vec![], Arc::new(YieldOnce(ca_key.clone()))).unwrap();
        let leaf_uri = uri("leaf");
        let profile = profile();
        let (leaf, _) = SoftwareKey::generate(P256, leaf_uri.clone()).unwrap();
        let sample = ca
            .issue_service(leaf.public_key_spki_der(), &profile)
            .await
            .unwrap()
            .der;
        Keyward {
            ca,
            slow_ca,
            ca_key,
            leaf_uri,
            profile,
            sample,
        }
    }

    /// `n` certificates, one `issue_service` call each, each with a new leaf key.
    async fn single(&self, ca: &CaIssuer, n: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..n {
            let (leaf, pkcs8) = SoftwareKey::generate(P256, self.leaf_uri.clone()).unwrap();
            let cert = ca
                .issue_service(leaf.public_key_spki_der(), &self.profile)
                .await
                .unwrap();
            std::hint::black_box((cert.der.len(), pkcs8.len()));
        }
        start.elapsed()
    }

    /// `n` certificates in `issue_service_batch` calls of up to 8.
    async fn batched(&self, n: u64) -> Duration {
        let start = Instant::now();
        let mut left = n;
        while left > 0 {
            let k = left.min(8);
            left -= k;
            let keys: Vec<_> = (0..k)
                .map(|_| SoftwareKey::generate(P256, self.leaf_uri.clone()).unwrap())
                .collect();
            let requests: Vec<(&[u8], &ServiceProfile)> = keys
                .iter()
                .map(|(key, _)| (key.public_key_spki_der(), &self.profile))
                .collect();
            for r in self.ca.issue_service_batch(&requests).await {
                std::hint::black_box(r.unwrap().der.len());
            }
        }
        start.elapsed()
    }

    /// `n` runs of the post-issuance check on a ready certificate.
    fn check(&self, n: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..n {
            issuance::verify_issued(std::hint::black_box(&self.sample), &*self.ca_key).unwrap();
        }
        start.elapsed()
    }
}

/// The rcgen side: a root CA holding an rcgen `KeyPair`.
struct Direct {
    issuer: Issuer<'static, KeyPair>,
}

impl Direct {
    fn new() -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut root = CertificateParams::default();
        root.distinguished_name
            .push(DnType::CommonName, "Bench Root");
        root.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Direct {
            issuer: Issuer::new(root, key),
        }
    }

    /// `n` certificates with the same profile, each with a new leaf key.
    fn run(&self, n: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..n {
            let kp = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
            let cert = rcgen_params().signed_by(&kp, &self.issuer).unwrap();
            std::hint::black_box((cert.der().len(), kp.serialized_der().len()));
        }
        start.elapsed()
    }
}

async fn spawn_round_trips(n: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        tokio::task::spawn_blocking(|| std::hint::black_box(1u8))
            .await
            .unwrap();
    }
    start.elapsed()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_keep_alive(Duration::from_secs(3600))
        .enable_all()
        .build()
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let kw = rt.block_on(Keyward::new());
    let direct = Direct::new();

    let mut g = c.benchmark_group("p256_service_certificate");
    g.sample_size(30).measurement_time(Duration::from_secs(5));
    g.bench_function("rcgen_direct", |b| b.iter_custom(|n| direct.run(n)));
    g.bench_function("keyward_full_path", |b| {
        b.to_async(&rt).iter_custom(|n| kw.single(&kw.ca, n))
    });
    g.bench_function("keyward_batch_of_8", |b| {
        b.to_async(&rt).iter_custom(|n| kw.batched(n))
    });
    g.bench_function("keyward_pending_signer_path", |b| {
        b.to_async(&rt).iter_custom(|n| kw.single(&kw.slow_ca, n))
    });
    g.bench_function("post_issuance_check_alone", |b| {
        b.iter_custom(|n| kw.check(n))
    });
    g.bench_function("spawn_blocking_round_trip", |b| {
        b.to_async(&rt).iter_custom(spawn_round_trips)
    });
    g.finish();

    summary(&rt, &kw, &direct);
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// CPU time used so far by every thread of this process, in seconds.
fn process_cpu() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Per-certificate wall-clock and CPU seconds of each variant, per round.
struct Rounds {
    wall: Vec<Vec<f64>>,
    cpu: Vec<Vec<f64>>,
}

impl Rounds {
    fn ratio(&self, t: &[Vec<f64>], f: impl Fn(&[f64]) -> f64) -> f64 {
        let rounds = t[0].len();
        let per_round: Vec<f64> = (0..rounds)
            .map(|r| {
                let row: Vec<f64> = t.iter().map(|v| v[r]).collect();
                f(&row)
            })
            .collect();
        median(per_round) * 100.0
    }
}

/// Variant indexes in the rounds.
const RCGEN: usize = 0;
const FULL: usize = 1;
const BATCH: usize = 2;
const PENDING: usize = 3;
const CHECK: usize = 4;
const SPAWN: usize = 5;

/// The interleaved run behind the printed figures.
fn summary(rt: &tokio::runtime::Runtime, kw: &Keyward, direct: &Direct) {
    const ROUNDS: usize = 21;
    const N: u64 = 400;
    let mut r = Rounds {
        wall: vec![Vec::new(); 6],
        cpu: vec![Vec::new(); 6],
    };
    for _ in 0..ROUNDS {
        for v in [RCGEN, FULL, BATCH, PENDING, CHECK, SPAWN] {
            let cpu0 = process_cpu();
            let wall = match v {
                RCGEN => direct.run(N),
                FULL => rt.block_on(kw.single(&kw.ca, N)),
                BATCH => rt.block_on(kw.batched(N)),
                PENDING => rt.block_on(kw.single(&kw.slow_ca, N)),
                CHECK => kw.check(N),
                _ => rt.block_on(spawn_round_trips(N)),
            };
            let cpu = process_cpu() - cpu0;
            r.wall[v].push(wall.as_secs_f64() / N as f64);
            r.cpu[v].push(cpu / N as f64);
        }
    }
    println!();
    println!("=== P-256 service certificates: leaf keygen + sign + encode, one issuing stream ===");
    println!(
        "interleaved: {ROUNDS} rounds x {N} per variant; medians over rounds; ratio = rcgen time / keyward time"
    );
    for (label, t) in [("wall clock", &r.wall), ("process CPU time", &r.cpu)] {
        let m: Vec<f64> = t.iter().map(|v| median(v.clone())).collect();
        let line =
            |name: &str, s: f64| println!("  {name:<52} {:>8.0} /s {:>8.1} us", 1.0 / s, s * 1e6);
        let pct = |name: &str, p: f64| println!("  {name:<52} {p:>8.1} %");
        println!("-- {label}");
        line("rcgen direct", m[RCGEN]);
        line(
            "keyward issue_service (with the post-issuance check)",
            m[FULL],
        );
        pct(
            "  ratio (target >= 80%)",
            r.ratio(t, |x| x[RCGEN] / x[FULL]),
        );
        line("keyward issue_service_batch of 8 (with check)", m[BATCH]);
        pct("  ratio", r.ratio(t, |x| x[RCGEN] / x[BATCH]));
        line("post-issuance check alone (full parse)", m[CHECK]);
        line(
            "keyward issue_service minus the check (derived)",
            m[FULL] - m[CHECK],
        );
        pct("  ratio", r.ratio(t, |x| x[RCGEN] / (x[FULL] - x[CHECK])));
        line(
            "keyward batch of 8 minus the check (derived)",
            m[BATCH] - m[CHECK],
        );
        pct("  ratio", r.ratio(t, |x| x[RCGEN] / (x[BATCH] - x[CHECK])));
        line(
            "keyward, signer pending at first poll (awaited)",
            m[PENDING],
        );
        line("spawn_blocking round trip alone", m[SPAWN]);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

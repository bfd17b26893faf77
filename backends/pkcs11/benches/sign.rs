//! ECDSA P-256 signing on SoftHSM: a raw cryptoki `C_Sign` loop beside keyward's
//! `KeySigner::sign`, on the same key, at 1, 2 and 4 sessions (concurrency = sessions;
//! keyward's pool is also capped at the core count, so on 2 cores its 4 callers share
//! 2 sessions while the raw loop runs 4 threads on 4).
//!
//! Run: `source scripts/lib.sh; source scripts/softhsm.sh; softhsm_install;
//! softhsm_start /tmp/kw-softhsm; cargo bench -p keyward-pkcs11 --bench sign`.
//! After criterion's own report it prints both rates and keyward's share of the raw
//! rate (target: 90% or more) from paired rounds that alternate raw and keyward, so
//! that load from elsewhere on the machine hits both alike. Criterion measures the two
//! in separate windows; on a shared VM its figures are not comparable with each other.
#![forbid(unsafe_code)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use cryptoki::context::Pkcs11;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use keyward_core::{Algorithm, HashAlg, KeyBackend, KeySigner, KeyUri};
use keyward_pkcs11::Pkcs11Backend;

use common::{PIN, make_token, module, raw_sessions};

const MESSAGE: &[u8] = &[0x5a; 256];

/// Session counts measured.
const SESSIONS: [usize; 3] = [1, 2, 4];

/// Splits `iters` among `n` workers.
fn shares(iters: u64, n: usize) -> impl Iterator<Item = u64> {
    let n = n as u64;
    (0..n).map(move |i| iters / n + u64::from(i < iters % n))
}

/// One session count's setup: keyward's signer and raw sessions on the same key.
struct Setup {
    sessions: usize,
    signer: Arc<dyn KeySigner>,
    raw: Vec<Session>,
    key: ObjectHandle,
    /// The raw side's module handle, kept until the end (sessions drop first).
    _ctx: Pkcs11,
}

/// `iters` raw `C_Sign` calls spread over the raw sessions, one thread each.
fn run_raw(setup: &mut Setup, digest: &[u8], iters: u64) -> Duration {
    let (sessions, key) = (setup.sessions, setup.key);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for (session, n) in setup.raw.iter_mut().zip(shares(iters, sessions)) {
            scope.spawn(move || {
                for _ in 0..n {
                    let sig = session.sign(&Mechanism::Ecdsa, key, digest).unwrap();
                    std::hint::black_box(sig);
                }
            });
        }
    });
    start.elapsed()
}

/// `iters` keyward signs spread over `sessions` concurrent tasks.
async fn run_keyward(signer: Arc<dyn KeySigner>, sessions: usize, iters: u64) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = shares(iters, sessions)
        .map(|n| {
            let signer = Arc::clone(&signer);
            tokio::spawn(async move {
                for _ in 0..n {
                    std::hint::black_box(signer.sign(MESSAGE).await.unwrap());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

fn bench(c: &mut Criterion, rt: &tokio::runtime::Runtime, setups: &mut [Setup]) {
    let digest = HashAlg::Sha256.digest(MESSAGE);
    for setup in setups.iter_mut() {
        let sessions = setup.sessions;
        let mut group = c.benchmark_group(format!("ecdsa-p256-softhsm/{sessions}-session"));
        group.throughput(Throughput::Elements(1));
        group.bench_function("raw-cryptoki-C_Sign", |b| {
            b.iter_custom(|iters| run_raw(setup, &digest, iters))
        });
        let signer = Arc::clone(&setup.signer);
        group.bench_function("keyward-KeySigner-sign", |b| {
            b.to_async(rt).iter_custom(|iters| {
                let signer = Arc::clone(&signer);
                run_keyward(signer, sessions, iters)
            })
        });
        group.finish();
    }
}

/// Medians over paired rounds: raw rate, keyward rate, keyward/raw, and keyward's
/// rate and ratio with two callers per session.
struct Paired {
    raw: f64,
    keyward: f64,
    ratio: f64,
    keyward_2x: f64,
    ratio_2x: f64,
}

/// Signatures per paired round: long enough that starting the round's tasks and
/// threads costs a few percent at most.
const ROUND: u64 = 3000;

/// Paired rounds per session count.
const ROUNDS: usize = 30;

/// Raw and keyward measured in many short alternating rounds, so bursts of load from
/// elsewhere on the machine hit both alike. Besides concurrency = sessions it also
/// measures keyward with two callers per session, where callers queue for sessions.
fn paired(rt: &tokio::runtime::Runtime, setup: &mut Setup, rounds: usize) -> Paired {
    let digest = HashAlg::Sha256.digest(MESSAGE);
    let n = ROUND;
    let mut v: [Vec<f64>; 5] = Default::default();
    for round in 0..rounds {
        let (signer, sessions) = (Arc::clone(&setup.signer), setup.sessions);
        let kw = |callers: usize| {
            let signer = Arc::clone(&signer);
            n as f64 / rt.block_on(run_keyward(signer, callers, n)).as_secs_f64()
        };
        let mut raw = || n as f64 / run_raw(setup, &digest, n).as_secs_f64();
        let (r, k, k2) = if round % 2 == 0 {
            let r = raw();
            (r, kw(sessions), kw(2 * sessions))
        } else {
            let (k, k2) = (kw(sessions), kw(2 * sessions));
            (raw(), k, k2)
        };
        for (i, x) in [r, k, k / r, k2, k2 / r].into_iter().enumerate() {
            v[i].push(x);
        }
    }
    let [raw, keyward, ratio, keyward_2x, ratio_2x] = v.map(|mut v| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    });
    Paired {
        raw,
        keyward,
        ratio,
        keyward_2x,
        ratio_2x,
    }
}

fn main() {
    let module = module();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .enable_all()
        .build()
        .unwrap();
    // SoftHSM reads its token directory when the module is initialized: make every
    // token before the first load.
    let labels: Vec<(usize, String)> = SESSIONS
        .into_iter()
        .map(|s| (s, format!("bench-{}-{s}", std::process::id())))
        .collect();
    for (_, label) in &labels {
        make_token(label);
    }
    let mut setups: Vec<Setup> = labels
        .iter()
        .map(|(sessions, label)| {
            let uri = KeyUri::parse(&format!(
                "pkcs11:token={label};object=bench?module-path={}&pin-value={PIN}&max-sessions={sessions}",
                module.display()
            ))
            .unwrap();
            let signer = rt
                .block_on(Pkcs11Backend::new(None).generate(&uri, Algorithm::EcdsaP256Sha256))
                .unwrap();
            let (ctx, raw, key) = raw_sessions(&module, label, "bench", *sessions);
            Setup {
                sessions: *sessions,
                signer,
                raw,
                key,
                _ctx: ctx,
            }
        })
        .collect();

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6))
        .sample_size(30)
        .configure_from_args();
    bench(&mut c, &rt, &mut setups);
    c.final_summary();

    println!(
        "\nECDSA P-256 on SoftHSM, same key, concurrency = sessions (target: keyward >= 90% of raw)"
    );
    for setup in &mut setups {
        let s = setup.sessions;
        let p = paired(&rt, setup, ROUNDS);
        println!(
            "  {s} session(s), {ROUNDS} paired rounds of {ROUND}: raw C_Sign {:>7.0}/s  keyward sign {:>7.0}/s  keyward/raw {:>5.1}% (medians over rounds)",
            p.raw,
            p.keyward,
            100.0 * p.ratio
        );
        println!(
            "  {s} session(s), same rounds, {} callers: keyward sign {:>7.0}/s  keyward/raw {:>5.1}%",
            2 * s,
            p.keyward_2x,
            100.0 * p.ratio_2x
        );
    }
}

//! Service-certificate issuance with the CA key in a TPM (tpm2-pkcs11 on swtpm, started
//! by scripts/swtpm.sh) beside a raw `C_Sign` loop on the same key through a second
//! cryptoki handle: a TPM signs slowly, so what matters is how much of its signing rate
//! issuance keeps. One issuer, one session (a TPM executes one command at a time).
//!
//! Prints one line for scripts/bench.sh:
//! `tpm baseline_per_s=RAW_SIGNS keyward_per_s=CERTS window=S rounds=R`, the medians
//! of R paired rounds of S seconds each (raw first in odd rounds, issuance first in
//! even ones). Run: `cargo bench -p keyward-pkcs11 --bench tpm -- --seconds 2
//! --rounds 3` with scripts/swtpm.sh's variables set.
#![forbid(unsafe_code)]

// Only its raw sessions: the TPM token is scripts/swtpm.sh's, not one made here.
#[allow(dead_code)]
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use keyward_core::{HashAlg, KeyUri};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} not set: run through scripts/bench.sh (it starts swtpm)")
    })
}

/// `--seconds S --rounds R` (defaults 2 and 3); cargo bench's own `--bench` is ignored.
fn settings() -> (Duration, usize) {
    let (mut seconds, mut rounds) = (2.0f64, 3usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--seconds S")
            }
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--rounds R")
            }
            _ => {}
        }
    }
    (Duration::from_secs_f64(seconds), rounds.max(1))
}

/// How many times `op` completes in `window`, per second.
async fn per_second<F: AsyncFnMut(usize)>(window: Duration, mut op: F) -> f64 {
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed() < window {
        op(n).await;
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn main() {
    let (window, rounds) = settings();
    let module = PathBuf::from(env("KEYWARD_TEST_TPM_MODULE"));
    let token = env("KEYWARD_TEST_TPM_TOKEN");
    let pin_file = env("KEYWARD_TEST_TPM_PIN_FILE");
    let pin = std::fs::read_to_string(&pin_file).expect("read the TPM token's PIN");
    let label = format!("bench-ca-{}", std::process::id());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let uri = KeyUri::parse(&format!(
            "pkcs11:token={token};object={label}?module-path={}&pin-source=file:{pin_file}",
            module.display()
        ))
        .expect("uri");
        let (_signer, ca) = common::root_ca_on_token(&uri).await;
        let (_ctx, sessions, key) =
            common::raw_sessions_with_pin(&module, &token, &label, 1, pin.trim_end());
        let session = &sessions[0];

        let raw = async || {
            per_second(window, async |_| {
                let digest = HashAlg::Sha256.digest(&[0x5a; 512]);
                std::hint::black_box(
                    session
                        .sign(&Mechanism::Ecdsa, key, &digest)
                        .expect("C_Sign"),
                );
            })
            .await
        };
        let issue = async || per_second(window, async |i| common::issue_one(&ca, i).await).await;
        let (mut raws, mut certs) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            if round % 2 == 0 {
                raws.push(raw().await);
                certs.push(issue().await);
            } else {
                certs.push(issue().await);
                raws.push(raw().await);
            }
        }
        println!(
            "tpm baseline_per_s={:.1} keyward_per_s={:.1} window={} rounds={rounds}",
            median(raws),
            median(certs),
            window.as_secs_f64()
        );
    });
}

//! keyward-bench: the measuring binary behind scripts/bench.sh. Each command measures
//! keyward beside a baseline in the same run and prints one machine-readable line
//! starting with `kwbench `:
//!
//! - `sign [--seconds S]`: keyward's software `KeySigner::sign` (ECDSA P-256) in a loop
//!   on one thread; the baseline (`openssl speed`) is run by the script.
//! - `issue --ca software|softhsm|transit|kms`: service-certificate issuance with the
//!   CA key in that backend beside the raw signing loop on the same key.
//! - `pki`: OpenBao PKI `pki/issue/<role>` beside keyward's issuance with the CA key in
//!   software.
//!
//! Common flags: `--concurrency C` (default 4), `--seconds S` per measurement window
//! (default 2), `--rounds R` paired rounds (default 3).
#![forbid(unsafe_code)]

mod bao_pki;
mod ca_keys;
mod issue;
mod measure;

use std::sync::Arc;
use std::time::Duration;

use ca_keys::{CaKey, RawSign};
use keyward_core::KeySigner;
use measure::{Paired, rate_tasks, rate_threads, warm_up};

/// The settings every command takes.
struct Settings {
    concurrency: usize,
    window: Duration,
    rounds: usize,
}

fn flag<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} needs a valid value")),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("keyward-bench: {e}");
        eprintln!(
            "usage: keyward-bench sign|issue --ca software|softhsm|transit|kms|pki \
             [--concurrency C] [--seconds S] [--rounds R]"
        );
        std::process::exit(2);
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let seconds: f64 = flag(args, "--seconds", 2.0)?;
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err("--seconds must be positive".into());
    }
    let settings = Settings {
        concurrency: flag(args, "--concurrency", 4usize)?.max(1),
        window: Duration::from_secs_f64(seconds),
        rounds: flag(args, "--rounds", 3usize)?.max(1),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    match args.first().map(String::as_str) {
        Some("sign") => sign(&rt, settings.window),
        Some("issue") => {
            let ca = flag(args, "--ca", String::new())?;
            let key = match ca.as_str() {
                "software" => ca_keys::software(),
                "softhsm" => rt.block_on(ca_keys::softhsm(settings.concurrency)),
                "transit" => rt.block_on(ca_keys::transit()),
                "kms" => rt.block_on(ca_keys::kms()),
                _ => return Err("--ca must be software, softhsm, transit or kms".into()),
            };
            issue_vs_raw(&rt, &settings, &ca, key);
        }
        Some("pki") => issue_vs_bao_pki(&rt, &settings),
        _ => return Err("unknown or missing command".into()),
    }
    Ok(())
}

/// Row 1: keyward's software signer, one thread, a 20-byte message (as `openssl speed`
/// signs a 20-byte buffer; keyward hashes it with SHA-256 first, as it always does).
fn sign(rt: &tokio::runtime::Runtime, window: Duration) {
    let uri = keyward_core::KeyUri::file("/nonexistent/keyward-bench/sign.pem").expect("uri");
    let (key, _) =
        keyward_software::SoftwareKey::generate(keyward_core::Algorithm::EcdsaP256Sha256, uri)
            .expect("key");
    let message = [0x5a_u8; 20];
    let measure = |window: Duration| {
        rt.block_on(async {
            let start = std::time::Instant::now();
            let mut n = 0u64;
            while start.elapsed() < window {
                for _ in 0..64 {
                    std::hint::black_box(key.sign(&message).await.expect("sign"));
                }
                n += 64;
            }
            n as f64 / start.elapsed().as_secs_f64()
        })
    };
    measure(warm_up(window));
    println!(
        "kwbench row=sign keyward_per_s={:.1} window_s={:.1}",
        measure(window),
        window.as_secs_f64()
    );
}

/// Row 2: issuance through the CA key's `KeySigner` beside the raw signing loop on the
/// same key, signing the TBS bytes of a real certificate from this CA.
fn issue_vs_raw(rt: &tokio::runtime::Runtime, s: &Settings, ca_name: &str, key: CaKey) {
    let (ca, tbs) = rt.block_on(issue::root_issuer(key.signer.clone()));
    let tbs = Arc::new(tbs);
    let c = s.concurrency;
    let raw = |warm: bool| {
        let window = if warm { warm_up(s.window) } else { s.window };
        match &key.raw {
            RawSign::Threads(sign) => rate_threads(window, c, |w| sign(w, &tbs)),
            RawSign::Tasks(sign) => {
                let (sign, tbs) = (sign.clone(), tbs.clone());
                rt.block_on(rate_tasks(window, c, move |_| sign(tbs.clone())))
            }
        }
    };
    let keyward = |warm: bool| {
        let window = if warm { warm_up(s.window) } else { s.window };
        let ca = ca.clone();
        rt.block_on(rate_tasks(window, c, move |i| {
            let ca = ca.clone();
            async move {
                issue::issue_one(&ca, i).await;
            }
        }))
    };
    let p = Paired::run(s.rounds, raw, keyward);
    println!("{}", p.line(&format!("issue-{ca_name}"), c, s.window));
}

/// Row 3: OpenBao PKI issuing over HTTP beside keyward issuing in process with the CA
/// key in software, at the same concurrency.
fn issue_vs_bao_pki(rt: &tokio::runtime::Runtime, s: &Settings) {
    let pki = rt.block_on(bao_pki::BaoPki::setup());
    let (ca, _) = rt.block_on(issue::root_issuer(ca_keys::software().signer));
    let c = s.concurrency;
    let bao = |warm: bool| {
        let window = if warm { warm_up(s.window) } else { s.window };
        let pki = pki.clone();
        rt.block_on(rate_tasks(window, c, move |i| {
            let pki = pki.clone();
            async move { pki.issue(i).await }
        }))
    };
    let keyward = |warm: bool| {
        let window = if warm { warm_up(s.window) } else { s.window };
        let ca = ca.clone();
        rt.block_on(rate_tasks(window, c, move |i| {
            let ca = ca.clone();
            async move {
                issue::issue_one(&ca, i).await;
            }
        }))
    };
    let p = Paired::run(s.rounds, bao, keyward);
    println!("{}", p.line("pki-vs-software", c, s.window));
}

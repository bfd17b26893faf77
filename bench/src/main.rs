//! keyward-bench: the measuring binary behind scripts/bench.sh. Each command measures
//! keyward beside a baseline in the same run and prints one machine-readable line
//! starting with `kwbench `:
//!
//! - `sign [--seconds S]`: keyward's software `KeySigner::sign` (ECDSA P-256) in a loop
//!   on one thread; the baseline (`openssl speed`) is run by the script.
//! - `issue --ca software|softhsm|transit|kms`: service-certificate issuance (single
//!   `issue_service` calls) with the CA key in that backend beside the same-work
//!   baseline on the same key (`same_work.rs`).
//! - `pki`: OpenBao PKI `pki/issue/<role>` beside keyward's issuance with the CA key in
//!   software.
//! - `sign-pkcs11`: keyward's `KeySigner::sign` on SoftHSM (pool capped at C sessions)
//!   beside a raw `C_Sign` loop on C sessions, C callers each.
//! - `bulk --keyward BIN [--csrs N] [--output-format pem|jsonl]`: `keyward sign-csr
//!   --batch` over N CSRs (default 10,000) beside the same work raw (`bulk.rs`).
//!
//! - `acme --directory URL --root PEM --http-port P`: complete ACME orders per second
//!   from C concurrent instant-acme clients against a running agent (`acme.rs`).
//! - `keys --keyward BIN --load KEYS_LOAD_BIN --dir DIR`: the KeyService rows: `Sign`
//!   and `GenerateDataKey` through an agent's socket beside the same keys in process
//!   and raw, at concurrency C (`keys.rs`).
//!
//! Common flags: `--concurrency C` (default 4), `--seconds S` per measurement window
//! (default 2), `--rounds R` paired rounds (default 3), `--only baseline|keyward` to run
//! one side alone (for `perf record`).
#![forbid(unsafe_code)]

mod acme;
mod bao_pki;
mod bulk;
mod ca_keys;
mod issue;
mod keys;
mod measure;
mod same_work;

use std::sync::Arc;
use std::time::Duration;

use ca_keys::{CaKey, RawSign};
use keyward_core::KeySigner;
use measure::{Paired, Sides, rate_inline, rate_tasks, warm_up};
use same_work::SameWork;

/// The settings every command takes.
struct Settings {
    concurrency: usize,
    window: Duration,
    rounds: usize,
    sides: Sides,
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
            "usage: keyward-bench sign|issue --ca software|softhsm|transit|kms|pki|sign-pkcs11|\
             bulk --keyward BIN [--csrs N] [--output-format pem|jsonl] [--concurrency C] [--seconds S] [--rounds R] [--only baseline|keyward]"
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
        sides: flag(args, "--only", Sides::Both)?,
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
            issue_vs_same_work(&rt, &settings, &ca, key);
        }
        Some("pki") => issue_vs_bao_pki(&rt, &settings),
        Some("sign-pkcs11") => sign_pkcs11(&rt, &settings),
        Some("bulk") => {
            let keyward: String = flag(args, "--keyward", String::new())?;
            if keyward.is_empty() {
                return Err("bulk needs --keyward PATH (the keyward binary)".into());
            }
            let csrs = flag(args, "--csrs", 10_000usize)?.max(1);
            let name: String = flag(args, "--output-format", "pem".to_string())?;
            let output =
                bulk::Output::parse(&name).ok_or("--output-format must be pem or jsonl")?;
            let (rounds, sides) = (settings.rounds, settings.sides);
            let line = bulk::run(keyward.as_ref(), csrs, rounds, sides, output);
            println!("{line}");
        }
        Some("keys") => {
            let path = |name: &str| flag(args, name, String::new()).map(std::path::PathBuf::from);
            let (keyward, load, dir) = (path("--keyward")?, path("--load")?, path("--dir")?);
            if [&keyward, &load, &dir]
                .iter()
                .any(|p| p.as_os_str().is_empty())
            {
                return Err("keys needs --keyward BIN --load KEYS_LOAD_BIN --dir DIR".into());
            }
            for line in keys::run(&rt, &settings, &keyward, &load, &dir) {
                println!("{line}");
            }
        }
        Some("acme") => {
            let directory: String = flag(args, "--directory", String::new())?;
            let root: String = flag(args, "--root", String::new())?;
            let http_port: u16 = flag(args, "--http-port", 0)?;
            if directory.is_empty() || root.is_empty() || http_port == 0 {
                return Err("acme needs --directory URL --root PEM --http-port P".into());
            }
            let line = acme::run(
                &rt,
                &directory,
                &root,
                http_port,
                settings.concurrency,
                settings.window,
            );
            println!("{line}");
        }
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

/// Issuance rows: keyward's single `issue_service` calls through the CA key's
/// `KeySigner` beside the same-work baseline on the same key, both at concurrency C.
fn issue_vs_same_work(rt: &tokio::runtime::Runtime, s: &Settings, ca_name: &str, key: CaKey) {
    let ca = rt.block_on(issue::root_issuer(key.signer.clone()));
    let baseline = SameWork::new(rt, &ca, &key, s.concurrency);
    let c = s.concurrency;
    let raw = |warm: bool| {
        let window = if warm { warm_up(s.window) } else { s.window };
        baseline.rate(rt, window, c)
    };
    let keyward = |warm: bool| {
        let window = if warm { warm_up(s.window) } else { s.window };
        let ca = ca.clone();
        rt.block_on(rate_tasks(window, c, move |_, i| {
            let ca = ca.clone();
            async move {
                issue::issue_one(&ca, i).await;
            }
        }))
    };
    let p = Paired::run(s.rounds, s.sides, raw, keyward);
    println!("{}", p.line(&format!("issue-{ca_name}"), c, s.window));
}

/// PKCS#11 signing rows: `KeySigner::sign` on SoftHSM from C tokio tasks (the pool
/// capped at C sessions, and at the core count) beside a raw loop of SHA-256 +
/// `C_Sign` + DER encoding (the same work) inline on C tasks of the same runtime, a
/// session each.
fn sign_pkcs11(rt: &tokio::runtime::Runtime, s: &Settings) {
    const MESSAGE: &[u8] = &[0x5a; 256];
    let c = s.concurrency;
    let key = rt.block_on(ca_keys::softhsm(c));
    let RawSign::Threads(sign) = &key.raw else {
        unreachable!("C_Sign is blocking")
    };
    let raw = |warm: bool| {
        let window = if warm { warm_up(s.window) } else { s.window };
        let sign = sign.clone();
        let op = Arc::new(move |task, _| {
            std::hint::black_box(sign(task, MESSAGE));
        });
        rt.block_on(rate_inline(window, c, op))
    };
    let keyward = |warm: bool| {
        let window = if warm { warm_up(s.window) } else { s.window };
        let signer = key.signer.clone();
        rt.block_on(rate_tasks(window, c, move |_, _| {
            let signer = signer.clone();
            async move {
                // As the raw side does: a signer that answers at once never yields.
                tokio::task::yield_now().await;
                std::hint::black_box(signer.sign(MESSAGE).await.expect("sign"));
            }
        }))
    };
    let p = Paired::run(s.rounds, s.sides, raw, keyward);
    println!("{}", p.line("sign-pkcs11", c, s.window));
}

/// Row 3: OpenBao PKI issuing over HTTP beside keyward issuing in process with the CA
/// key in software, at the same concurrency.
fn issue_vs_bao_pki(rt: &tokio::runtime::Runtime, s: &Settings) {
    let pki = rt.block_on(bao_pki::BaoPki::setup());
    let ca = rt.block_on(issue::root_issuer(ca_keys::software().signer));
    let c = s.concurrency;
    let bao = |warm: bool| {
        let window = if warm { warm_up(s.window) } else { s.window };
        let pki = pki.clone();
        rt.block_on(rate_tasks(window, c, move |_, i| {
            let pki = pki.clone();
            async move { pki.issue(i).await }
        }))
    };
    let keyward = |warm: bool| {
        let window = if warm { warm_up(s.window) } else { s.window };
        let ca = ca.clone();
        rt.block_on(rate_tasks(window, c, move |_, i| {
            let ca = ca.clone();
            async move {
                issue::issue_one(&ca, i).await;
            }
        }))
    };
    let p = Paired::run(s.rounds, s.sides, bao, keyward);
    println!("{}", p.line("pki-vs-software", c, s.window));
}

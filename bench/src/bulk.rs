//! The bulk rows (issue 19, item 5): `keyward sign-csr --batch` over N device CSRs in
//! one output format (the whole command: a process reading the CSR files, signing on
//! all cores, writing the output, the inventory, the manifest and the audit log,
//! durably) beside the same work done raw in one loop on as many threads as the machine
//! has cores, with the same CA key and certificate: per CSR, read the file, decode it
//! and check its signature (rcgen, as keyward does), build the service certificate for
//! its key and names (rcgen), sign it with the CA key (aws-lc-rs) and verify that
//! signature (aws-lc-rs); and, as the command delivers them, write the certificates
//! durably in the same format (a writer thread: chain files made atomically and synced
//! together per 1,000, or one JSON Lines file per 1,000 written atomically and synced).
//! The raw loop's rate without the output is reported beside it (`compute_only_per_s`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use keyward_core::KeyUri;
use keyward_core::fsutil::{self, Replace};
use rcgen::{CertificateParams, CertificateSigningRequestParams, DnType, DnValue, KeyPair};

use crate::issue::LEAF_VALIDITY;
use crate::measure::{Paired, Sides};
use crate::same_work::{CaPublic, ThreadBaseline, raw_profile};

/// CSRs in each side's warm-up.
const WARM_UP_CSRS: usize = 500;
/// Certificates per synced group (chain files) or per file (JSON Lines), as the
/// command's chunks.
const CHUNK: usize = 1000;

/// The command's output format (`--output-format`), which the raw side writes too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// NAME.pem per CSR.
    Pem,
    /// certificates-NNNNNN.jsonl per chunk.
    Jsonl,
}

impl Output {
    /// The format named `name` (`pem` or `jsonl`).
    pub fn parse(name: &str) -> Option<Output> {
        match name {
            "pem" => Some(Output::Pem),
            "jsonl" => Some(Output::Jsonl),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Output::Pem => "pem",
            Output::Jsonl => "jsonl",
        }
    }
}

/// One certificate the raw side delivers.
struct Delivered {
    csr: String,
    serial: String,
    subject: String,
    chain_pem: String,
}

/// A scratch directory with the CA (made by the keyward binary) and the CSR files.
struct Bench {
    dir: PathBuf,
    keyward: PathBuf,
    runs: AtomicUsize,
}

impl Bench {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Runs the keyward binary with the state directory `state`; panics on failure.
    fn keyward(&self, state: &Path, args: &[&str]) {
        let out = Command::new(&self.keyward)
            .arg("--state-dir")
            .arg(state)
            .args(args)
            .output()
            .expect("run keyward");
        assert!(
            out.status.success(),
            "keyward {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the row over `csrs` CSRs in `output`, `rounds` paired rounds; returns the
/// `kwbench` line.
pub fn run(keyward: &Path, csrs: usize, rounds: usize, sides: Sides, output: Output) -> String {
    let dir = std::env::temp_dir().join(format!("keyward-bench-bulk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let b = Bench {
        dir,
        keyward: keyward.to_path_buf(),
        runs: AtomicUsize::new(0),
    };
    let key_path = b.path("ca-key.pem");
    let key = format!("file:{}", key_path.display());
    let state = b.path("state");
    b.keyward(
        &state,
        &[
            "key",
            "generate",
            "--key",
            &key,
            "--algorithm",
            "ecdsa-p256",
        ],
    );
    b.keyward(
        &state,
        &[
            "ca",
            "init",
            "--key",
            &key,
            "--subject",
            "CN=keyward bench bulk CA",
        ],
    );
    write_csrs(&b.path("csrs"), csrs);
    write_csrs(&b.path("warm-csrs"), WARM_UP_CSRS);

    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let baseline = raw_baseline(&key_path, &state, threads);
    let raw = |warm: bool| {
        let dir = b.path(if warm { "warm-csrs" } else { "csrs" });
        let out = b.path(&format!(
            "raw-out-{}",
            b.runs.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&out).expect("raw output directory");
        let rate = timed(files(&dir).len(), || {
            sign_raw(&baseline, &dir, threads, Some((&out, output)));
        });
        let _ = std::fs::remove_dir_all(&out);
        rate
    };
    let keyward = |warm: bool| {
        let dir = b.path(if warm { "warm-csrs" } else { "csrs" });
        let n = b.runs.fetch_add(1, Ordering::Relaxed);
        let (run_state, out) = (b.path(&format!("state-{n}")), b.path(&format!("out-{n}")));
        copy_dir(&state, &run_state);
        let (d, o) = (dir.to_str().expect("path"), out.to_str().expect("path"));
        let format = ["--output-format", output.name()];
        let rate = timed(files(&dir).len(), || {
            let batch = ["sign-csr", "--batch", d, "--out", o];
            b.keyward(&run_state, &[&batch[..], &format[..]].concat());
        });
        let _ = std::fs::remove_dir_all(&run_state);
        let _ = std::fs::remove_dir_all(&out);
        rate
    };
    let p = Paired::run(rounds, sides, raw, keyward);
    let line = p.line("bulk-software", threads, Duration::ZERO);
    let dir = b.path("csrs");
    let compute: Vec<f64> = (0..rounds)
        .map(|_| timed(csrs, || sign_raw(&baseline, &dir, threads, None)))
        .collect();
    format!(
        "{line} csrs={csrs} output={} compute_only_per_s={:.1}",
        output.name(),
        crate::measure::median(&compute)
    )
}

/// `n` CSR files (PEM, new P-256 keys, a CN and the same DNS SAN) in `dir`. On one
/// thread: on two, 10,000 took 5.2 s and 10.3 s of CPU on the 2-core VM, a quarter of it
/// spinning on the directory's lock as both create files in it, and the row took no
/// less time.
fn write_csrs(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).expect("CSR directory");
    for i in 0..n {
        let name = format!("dev-{i:05}.devices.internal");
        let key = KeyPair::generate().expect("device key");
        let mut params = CertificateParams::new(vec![name.clone()]).expect("CSR parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        let csr = params.serialize_request(&key).expect("CSR");
        let pem = csr.pem().expect("PEM");
        std::fs::write(dir.join(format!("dev-{i:05}.csr")), pem).expect("write CSR");
    }
}

/// The files of `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("CSR directory")
        .map(|e| e.expect("entry").path())
        .collect();
    v.sort();
    v
}

/// Items per second of `work` over `n` items, started on a disk with nothing left to
/// write: `sync` first, so what an earlier run (or its removal) left for writeback is
/// not written during this one, whichever side it belongs to.
fn timed(n: usize, work: impl FnOnce()) -> f64 {
    let synced = Command::new("sync").status().expect("sync");
    assert!(synced.success(), "sync failed");
    let start = Instant::now();
    work();
    n as f64 / start.elapsed().as_secs_f64()
}

/// `cp -a FROM TO`.
fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

/// The raw side on the CA of `state`, whose key is the PKCS#8 file `key_path`.
fn raw_baseline(key_path: &Path, state: &Path, threads: usize) -> ThreadBaseline {
    let uri = KeyUri::file(key_path).expect("key uri");
    let signer = keyward_software::read_key_file(key_path, uri).expect("the CA key");
    let pem = std::fs::read(key_path).expect("the CA key file");
    let pkcs8 = pem::parse(pem).expect("PEM").into_contents();
    let raw = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8).expect("pkcs8");
    let rng = SystemRandom::new();
    let sign: crate::ca_keys::RawBlocking = Arc::new(move |_, msg| {
        raw.sign(&rng, msg)
            .expect("aws-lc-rs sign")
            .as_ref()
            .to_vec()
    });
    let root = std::fs::read(state.join("ca/root.pem")).expect("the CA certificate");
    let root = pem::parse(root).expect("PEM").into_contents();
    let ca = Arc::new(CaPublic::new(root, &signer));
    ThreadBaseline::new(&ca, &sign, threads)
}

/// Every CSR of `dir` through the raw steps, on `threads` threads; the certificates
/// written to the directory in `output` as the command would, when given.
fn sign_raw(
    baseline: &ThreadBaseline,
    dir: &Path,
    threads: usize,
    output: Option<(&Path, Output)>,
) {
    let files = files(dir);
    let next = AtomicUsize::new(0);
    let validity = time::Duration::try_from(LEAF_VALIDITY).expect("validity");
    let (send, receive) = sync_channel::<Delivered>(CHUNK);
    std::thread::scope(|s| {
        if let Some((out, format)) = output {
            s.spawn(move || write_out(out, format, receive));
        }
        for worker in 0..threads {
            let (files, next) = (&files, &next);
            let send = output.is_some().then(|| send.clone());
            s.spawn(move || {
                while let Some(path) = files.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let pem = std::fs::read(path).expect("read CSR");
                    let der = pem::parse(pem).expect("PEM").into_contents();
                    let csr = CertificateSigningRequestParams::from_der(&der.into())
                        .expect("the CSR verifies");
                    let cn = match csr.params.distinguished_name.get(&DnType::CommonName) {
                        Some(DnValue::Utf8String(s)) => s.clone(),
                        _ => String::new(),
                    };
                    let params = raw_profile::service_params(
                        &cn,
                        csr.params.subject_alt_names.clone(),
                        validity,
                    );
                    let der = baseline.sign(worker, &params, &csr.public_key);
                    if let Some(send) = &send {
                        deliver(send, path, &cn, &params, &der);
                    }
                    std::hint::black_box(der);
                }
            });
        }
        drop(send);
    });
}

/// Hands the certificate `der` signed for the CSR at `path` to the writer.
fn deliver(
    send: &SyncSender<Delivered>,
    path: &Path,
    cn: &str,
    params: &CertificateParams,
    der: &[u8],
) {
    let csr = path
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let serial = params.serial_number.as_ref().expect("serial").to_bytes();
    let delivered = Delivered {
        csr,
        serial: serial.iter().map(|b| format!("{b:02X}")).collect(),
        subject: format!("CN={cn}"),
        chain_pem: pem::encode(&pem::Pem::new("CERTIFICATE", der)),
    };
    send.send(delivered).expect("the writer runs");
}

/// Writes what `receive` brings into `out` in `format`, durably, chunk by chunk.
fn write_out(out: &Path, format: Output, receive: Receiver<Delivered>) {
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut written = 0;
    let mut flush = |chunk: &mut Vec<Delivered>| {
        if chunk.is_empty() {
            return;
        }
        written += 1;
        match format {
            Output::Pem => {
                let paths: Vec<PathBuf> = chunk
                    .iter()
                    .map(|d| out.join(d.csr.replace(".csr", ".pem")))
                    .collect();
                for (d, path) in chunk.iter().zip(&paths) {
                    let data = d.chain_pem.as_bytes();
                    fsutil::write_atomic_unsynced(path, data, 0o644, Replace::Allow)
                        .expect("write a chain file");
                }
                fsutil::sync_files(&paths).expect("sync the chain files");
            }
            Output::Jsonl => {
                let mut data = Vec::with_capacity(chunk.len() * 1024);
                for d in chunk.iter() {
                    let line = serde_json::json!({
                        "csr": d.csr, "serial": d.serial, "subject": d.subject,
                        "chain_pem": d.chain_pem,
                    });
                    serde_json::to_writer(&mut data, &line).expect("JSON");
                    data.push(b'\n');
                }
                let path = out.join(format!("certificates-{written:06}.jsonl"));
                fsutil::write_atomic(&path, &data, 0o644, Replace::Refuse).expect("write a bundle");
            }
        }
        chunk.clear();
    };
    for delivered in receive {
        chunk.push(delivered);
        if chunk.len() == CHUNK {
            flush(&mut chunk);
        }
    }
    flush(&mut chunk);
}

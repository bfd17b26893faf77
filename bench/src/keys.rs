//! `keys --keyward BIN --load BIN --dir DIR`: the KeyService rows (issue 21). Makes
//! the keys (a SoftHSM and a software signing key; software, Transit, KMS and PKCS#11
//! key-encryption keys, the last on the SoftHSM key's token), starts `keyward agent`
//! with a grant on each for this uid, and measures every operation three ways at the
//! same concurrency C (`--concurrency`; 32 in scripts/bench-keys.sh):
//!
//! - through the agent's socket: C clients of `keys_load` (agent/examples), one
//!   connection each, calling `Sign` or `GenerateDataKey`;
//! - in process: keyward's `KeySigner::sign` or `generate_data_key` on the same key,
//!   from C tokio tasks;
//! - raw, the same work straight on the backend: the SoftHSM signing loop of the
//!   issuance rows (SHA-256 + `C_Sign` + DER, `ca_keys`), and each KEK's raw data-key
//!   call (`keks`).
//!
//! The sides of a row alternate in order over the rounds; each figure is a median over
//! rounds. One `kwbench row=keys-...` line per row: `<side>_per_s`, `<side>_p50_us`,
//! `<side>_p99_us` for each side measured (socket, inproc, raw) and the errors.

mod agent;
mod keks;
mod sides;

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use keyward_core::{Algorithm, KeyBackend, KeySigner, KeyUri, KeyWrapper};

use crate::Settings;
use crate::ca_keys::{self, RawSign, softhsm_token};
use agent::Agent;
use keks::{Kek, RawDataKey};
use sides::{Side, inline_side, row, socket_side, tasks_side};

/// The message every side signs: as long as `keys_load`'s.
const MESSAGE: &[u8] = &[7; 64];

/// The in-process side of a signing row: `KeySigner::sign` on C tasks.
fn sign_side<'a>(
    rt: &'a tokio::runtime::Runtime,
    c: usize,
    signer: &Arc<dyn KeySigner>,
) -> Side<'a> {
    let signer = signer.clone();
    tasks_side(rt, c, move || {
        let signer = signer.clone();
        async move { signer.sign(MESSAGE).await.is_ok() }
    })
}

/// The in-process side of a data-key row: `generate_data_key` on C tasks.
fn data_key_side<'a>(
    rt: &'a tokio::runtime::Runtime,
    c: usize,
    kek: &Arc<dyn KeyWrapper>,
) -> Side<'a> {
    let kek = kek.clone();
    tasks_side(rt, c, move || {
        let kek = kek.clone();
        async move { kek.generate_data_key().await.is_ok() }
    })
}

/// The raw side of a data-key row.
fn raw_data_key_side<'a>(rt: &'a tokio::runtime::Runtime, c: usize, raw: &RawDataKey) -> Side<'a> {
    match raw {
        RawDataKey::Inline(op) => inline_side(rt, c, op.clone()),
        RawDataKey::Tasks(op) => {
            let op = op.clone();
            tasks_side(rt, c, move || op())
        }
    }
}

/// Every KeyService row; returns their `kwbench` lines.
pub fn run(
    rt: &tokio::runtime::Runtime,
    s: &Settings,
    keyward: &Path,
    load: &Path,
    dir: &Path,
) -> Vec<String> {
    let c = s.concurrency;
    std::fs::create_dir_all(dir).expect("create the --dir directory");
    let softhsm = rt.block_on(ca_keys::softhsm(c));
    let RawSign::Threads(raw_sign) = softhsm.raw else {
        unreachable!("C_Sign is blocking")
    };
    let KeyUri::Pkcs11(token) = softhsm.signer.uri() else {
        unreachable!("a pkcs11: URI")
    };
    let pin = dir.join("softhsm.pin");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&pin)
        .and_then(|mut f| f.write_all(softhsm_token::PIN.as_bytes()))
        .expect("write the PIN file");
    let softhsm_uri = format!("{}&pin-source=file:{}", softhsm.signer.uri(), pin.display());
    let software_uri = KeyUri::file(dir.join("sign.pem")).expect("uri");
    let software: Arc<dyn KeySigner> = rt
        .block_on(
            keyward_software::SoftwareBackend::new()
                .generate(&software_uri, Algorithm::EcdsaP256Sha256),
        )
        .expect("software signing key");
    let keks: Vec<Kek> = rt.block_on(async {
        vec![
            keks::software(dir).await,
            keks::transit().await,
            keks::kms().await,
            keks::pkcs11(token, &pin, c).await,
        ]
    });

    let mut grants = vec![
        ("softhsm-sign".to_string(), softhsm_uri, "sign"),
        (
            "software-sign".to_string(),
            software_uri.to_string(),
            "sign",
        ),
    ];
    for kek in &keks {
        grants.push((
            format!("{}-kek", kek.backend),
            kek.uri.to_string(),
            "generate-data-key",
        ));
    }
    let agent = Agent::start(keyward, dir, &grants);
    let socket = agent.socket.as_path();
    let raw_sign = Arc::new(move |task| drop(raw_sign(task, MESSAGE)));
    let mut lines = vec![
        row(
            "sign-softhsm",
            s,
            vec![
                (
                    "socket",
                    socket_side(load, socket, "softhsm-sign", "sign", c),
                ),
                ("inproc", sign_side(rt, c, &softhsm.signer)),
                ("raw", inline_side(rt, c, raw_sign)),
            ],
        ),
        row(
            "sign-software",
            s,
            vec![
                (
                    "socket",
                    socket_side(load, socket, "software-sign", "sign", c),
                ),
                ("inproc", sign_side(rt, c, &software)),
            ],
        ),
    ];
    for (kek, (grant, _, _)) in keks.iter().zip(&grants[2..]) {
        lines.push(row(
            &format!("data-key-{}", kek.backend),
            s,
            vec![
                ("socket", socket_side(load, socket, grant, "data-key", c)),
                ("inproc", data_key_side(rt, c, &kek.wrapper)),
                ("raw", raw_data_key_side(rt, c, &kek.raw)),
            ],
        ));
    }
    drop(agent);
    lines
}

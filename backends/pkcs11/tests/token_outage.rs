//! Signing rides out a token that goes away and comes back (issue 8).
//!
//! What SoftHSM 2.6 (file object store) does, as measured here:
//! - A token's directory (or the whole token directory) moved away: SoftHSM notices
//!   only when it next re-reads the token (after any change to its objects). Until
//!   then it signs with the key objects it has loaded; from then on it answers
//!   `CKR_OBJECT_HANDLE_INVALID` from `C_SignInit`, finds no objects, and
//!   `CKR_GENERAL_ERROR` from `C_GetTokenInfo` while still listing the slot.
//! - Moved back: it keeps answering so (the token stays invalid) until the module is
//!   finalized and initialized again.
//! - `C_Initialize` without the token's directory lists only the free slot; without
//!   the whole token directory it fails with `CKR_GENERAL_ERROR` (the module stays
//!   uninitialized: `CKR_CRYPTOKI_NOT_INITIALIZED` from every call).
//! - `C_Finalize` from another handle in the process closes every session (calls on
//!   them answer `CKR_SESSION_HANDLE_INVALID`, or work on someone else's new session
//!   with the same number). cryptoki 0.12 offers no `C_CloseAllSessions`.
//!
//! keyward must report the outage as `Unavailable`, look for the token again at most
//! every 250 ms (resetting the module: the only way SoftHSM sees it again), and sign
//! again once it is back, without harming the other tokens that share the module.
//! Module resets stay inside each test's process; tests move only their own tokens.
#![forbid(unsafe_code)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TestToken, ec_and_rsa_keys, second_handle};
use keyward_core::{Algorithm, Error, KeyBackend, KeySigner, verify_signature};
use keyward_pkcs11::Pkcs11Backend;

/// keyward's pause between looks for a token that is away (pool.rs), plus a margin.
const RETRY_GAP: Duration = Duration::from_millis(300);

/// SoftHSM's token directory, from `SOFTHSM2_CONF`.
fn token_dir() -> PathBuf {
    let conf = std::env::var_os("SOFTHSM2_CONF")
        .expect("SOFTHSM2_CONF not set: run the tests through scripts/test.sh");
    let text = std::fs::read_to_string(&conf).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("directories.tokendir"))
        .expect("directories.tokendir in SOFTHSM2_CONF");
    PathBuf::from(line.trim_start().trim_start_matches('=').trim())
}

/// The directory SoftHSM keeps `token`'s objects in (its `token.object` holds the label).
fn store_of(token: &TestToken) -> PathBuf {
    std::fs::read_dir(token_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|d| {
            std::fs::read(d.join("token.object")).is_ok_and(|b| {
                b.windows(token.label.len())
                    .any(|w| w == token.label.as_bytes())
            })
        })
        .unwrap_or_else(|| panic!("no token directory for {}", token.label))
}

async fn sign_ok(signer: &Arc<dyn KeySigner>, what: &str) {
    let msg = what.as_bytes().to_vec();
    let sig = signer
        .sign(&msg)
        .await
        .unwrap_or_else(|e| panic!("{what}: {}", keyward_core::chain_line(&e)));
    verify_signature(signer.algorithm(), signer.public_key_spki_der(), &msg, &sig).unwrap();
}

async fn sign_err(signer: &Arc<dyn KeySigner>, what: &str) -> Error {
    match signer.sign(b"during the outage").await {
        Ok(_) => panic!("{what}: signed while the token was away"),
        Err(e) => e,
    }
}

/// Moves `dir` away and back on request.
struct Moved {
    from: PathBuf,
    to: PathBuf,
}

impl Moved {
    /// Moves `from` next to the token directory (SoftHSM takes every directory in it
    /// for a token).
    fn away(from: &Path) -> Self {
        let name = from.file_name().unwrap().to_string_lossy();
        let to = token_dir().with_file_name(format!("{name}.away"));
        std::fs::rename(from, &to).expect("move the token directory away");
        Moved {
            from: from.to_path_buf(),
            to,
        }
    }

    fn back(self) {
        std::fs::rename(&self.to, &self.from).expect("move the token directory back");
    }
}

/// Signs until a signature comes, within a bound; returns how many signs failed
/// (each must be an outage, i.e. retryable).
async fn until_signed(signer: &Arc<dyn KeySigner>, what: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut failures = 0;
    loop {
        match signer.sign(what.as_bytes()).await {
            Ok(_) => return failures,
            Err(e) => {
                let line = keyward_core::chain_line(&e);
                assert!(e.is_retryable(), "{what}: {line}");
                assert!(Instant::now() < deadline, "{what}: still failing: {line}");
                failures += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Asserts `e` is an outage that names `token`.
fn assert_outage(e: &Error, token: &TestToken, what: &str) {
    let line = keyward_core::chain_line(e);
    assert!(e.is_retryable(), "{what}: an outage is retryable: {line}");
    assert!(
        line.contains(&token.label),
        "{what}: names the token: {line}"
    );
    assert!(line.contains("not available"), "{what}: says so: {line}");
}

/// One token's directory moves away (in the shared token directory) while another
/// library in the process finalizes and initializes the module: the sessions are
/// closed underneath keyward and the module lists the token no more. Signing is an
/// outage (also opening a key), the other token of the module keeps signing through
/// keyward's module resets, and the first look after the directory is back (and
/// `RETRY_GAP` passed) finds the token again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_gone_with_its_sessions_is_found_again() {
    let token = TestToken::new("outage");
    let other = TestToken::new("bystander");
    let backend = Pkcs11Backend::new(None);
    let (ec, rsa) = ec_and_rsa_keys(&backend, &token).await;
    let bystander = backend
        .generate(&other.key_uri("k"), Algorithm::EcdsaP256Sha256)
        .await
        .unwrap();
    for s in [&ec, &rsa, &bystander] {
        sign_ok(s, "before").await;
    }

    let moved = Moved::away(&store_of(&token));
    second_handle(&token).finalize().unwrap(); // closes every session of the process
    let ctx = second_handle(&token); // initializes it again, without the token
    assert!(
        ctx.get_slots_with_token().unwrap().into_iter().all(|s| ctx
            .get_token_info(s)
            .unwrap()
            .label()
            != token.label),
        "SoftHSM no longer lists the token"
    );
    let e = sign_err(&ec, "sign in the outage").await;
    assert_outage(&e, &token, "sign in the outage");
    // Within the retry gap the answer comes at once, from the recorded outage.
    assert_outage(&sign_err(&rsa, "rsa").await, &token, "second sign");
    assert_outage(
        &backend.open(&token.key_uri("ec")).await.unwrap_err(),
        &token,
        "open in the outage",
    );
    // Keyward reset the module looking for the token; the other token rides it out.
    for i in 0..4 {
        sign_ok(&bystander, &format!("bystander {i} in the outage")).await;
    }
    tokio::time::sleep(RETRY_GAP).await;
    assert_outage(&sign_err(&ec, "ec").await, &token, "sign after the gap");

    moved.back();
    let failures = until_signed(&ec, "ec after").await;
    eprintln!("{failures} failed signs after the token came back");
    assert!(failures <= 3, "found at the next look: {failures} failures");
    let reopened = backend.open(&token.key_uri("ec")).await.unwrap();
    for s in [&reopened, &ec, &rsa, &bystander] {
        for i in 0..8 {
            sign_ok(s, &format!("after {i}")).await;
        }
    }
}

/// Marks the child process that runs a test against a SoftHSM configuration of its own.
const CHILD: &str = "KEYWARD_TEST_OUTAGE_CHILD";

/// Runs test `name` again in a child process with a private SoftHSM token directory
/// (`SOFTHSM2_CONF` is read when the module is initialized, so it must be set before
/// the process loads it); returns the directory. `None` in the child itself.
fn in_private_softhsm(name: &str) -> Option<tempfile::TempDir> {
    if std::env::var_os(CHILD).is_some() {
        return None;
    }
    common::module();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            tokens.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env(CHILD, "1")
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{log}");
    assert!(out.status.success(), "child test failed:\n{log}");
    assert!(log.contains("1 passed"), "the child ran the test:\n{log}");
    Some(dir)
}

/// The whole token directory moves away (the agent test's outage). SoftHSM then
/// answers `CKR_OBJECT_HANDLE_INVALID` for the loaded key once it re-reads the token,
/// and `CKR_GENERAL_ERROR` from `C_Initialize` while the directory is away; keyward
/// reports an outage, and signs again at its next look after the directory is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_recovers_after_the_token_directory_was_away() {
    if in_private_softhsm("signing_recovers_after_the_token_directory_was_away").is_some() {
        return;
    }
    let token = TestToken::new("outage");
    let backend = Pkcs11Backend::new(None);
    let (ec, rsa) = ec_and_rsa_keys(&backend, &token).await;
    sign_ok(&rsa, "before").await;
    let moved = Moved::away(&token_dir());
    // The next sign finds the key handle invalid; the module reset keyward then tries
    // fails (`C_Initialize` answers CKR_GENERAL_ERROR without the token directory).
    let e = sign_err(&ec, "ec in the outage").await;
    assert_outage(&e, &token, "sign in the outage");
    assert!(
        keyward_core::chain_line(&e).contains("CKR_GENERAL_ERROR from C_Initialize"),
        "says why: {}",
        keyward_core::chain_line(&e)
    );
    assert_outage(&sign_err(&rsa, "rsa").await, &token, "second sign");
    tokio::time::sleep(RETRY_GAP).await;
    assert_outage(&sign_err(&ec, "ec").await, &token, "sign after the gap");
    assert_outage(
        &backend.open(&token.key_uri("rsa")).await.unwrap_err(),
        &token,
        "open in the outage",
    );

    moved.back();
    let failures = until_signed(&ec, "ec after").await;
    eprintln!("{failures} failed signs after the directory came back");
    assert!(failures <= 3, "found at the next look: {failures} failures");
    let reopened = backend.open(&token.key_uri("rsa")).await.unwrap();
    for s in [&reopened, &ec, &rsa] {
        for i in 0..8 {
            sign_ok(s, &format!("after {i}")).await;
        }
    }
}

//! Setup shared by the SoftHSM and TPM benchmarks (and by keyward-bench, which includes
//! this file): the module from the test environment, fresh tokens made before the
//! benchmark process loads the module, raw cryptoki sessions on a benchmark key, and a
//! CA over a key on a token issuing service certificates.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use keyward_core::issuance::{CaIssuer, ServiceProfile, self_signed_root};
use keyward_core::{Algorithm, KeyBackend, KeySigner, KeyUri};
use keyward_software::SoftwareKey;

/// The user PIN of every benchmark token.
pub const PIN: &str = "bench-pin-1234";

/// The PKCS#11 module named by the environment scripts/softhsm.sh sets up.
pub fn module() -> PathBuf {
    let m = std::env::var_os("KEYWARD_TEST_PKCS11_MODULE").unwrap_or_else(|| {
        panic!("KEYWARD_TEST_PKCS11_MODULE not set: run the benchmarks through scripts/test.sh or source scripts/softhsm.sh and call softhsm_start")
    });
    assert!(
        std::env::var_os("SOFTHSM2_CONF").is_some(),
        "SOFTHSM2_CONF not set: run the benchmarks through scripts/test.sh"
    );
    PathBuf::from(m)
}

/// A fresh token made with softhsm2-util before this process loads the module.
pub fn make_token(label: &str) {
    let out = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            PIN,
            "--so-pin",
            "bench-so-5678",
        ])
        .output()
        .expect("run softhsm2-util (install softhsm2)");
    assert!(
        out.status.success(),
        "softhsm2-util: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `n` logged-in sessions of a second cryptoki handle on token `token`, and the handle
/// of the private key labelled `key`: the raw side of a comparison with keyward. The
/// handle is returned too (the sessions keep the module loaded either way).
#[allow(
    dead_code,
    reason = "the issuance benchmark includes this module but has no raw side"
)]
pub fn raw_sessions(
    module: &Path,
    token: &str,
    key: &str,
    n: usize,
) -> (Pkcs11, Vec<Session>, ObjectHandle) {
    raw_sessions_with_pin(module, token, key, n, PIN)
}

/// [`raw_sessions`] on a token whose user PIN is `pin` (the TPM benchmark's token is
/// made by scripts/swtpm.sh, not here).
#[allow(
    dead_code,
    reason = "the issuance benchmark includes this module but has no raw side"
)]
pub fn raw_sessions_with_pin(
    module: &Path,
    token: &str,
    key: &str,
    n: usize,
    pin: &str,
) -> (Pkcs11, Vec<Session>, ObjectHandle) {
    let ctx = Pkcs11::new(module).expect("load the PKCS#11 module");
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let slot = ctx
        .get_slots_with_token()
        .expect("slots")
        .into_iter()
        .find(|s| ctx.get_token_info(*s).is_ok_and(|t| t.label() == token))
        .expect("the benchmark token");
    let sessions: Vec<Session> = (0..n)
        .map(|_| ctx.open_rw_session(slot).expect("open session"))
        .collect();
    match sessions[0].login(UserType::User, Some(&AuthPin::from(pin))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
    let handle = sessions[0]
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(key.as_bytes().to_vec()),
        ])
        .expect("find the key")[0];
    (ctx, sessions, handle)
}

/// A fresh ECDSA P-256 key generated at `uri` and a self-signed root CA over it.
#[allow(
    dead_code,
    reason = "keyward-bench includes this module for its raw sessions"
)]
pub async fn root_ca_on_token(uri: &KeyUri) -> (Arc<dyn KeySigner>, CaIssuer) {
    let signer = keyward_pkcs11::Pkcs11Backend::new(None)
        .generate(uri, Algorithm::EcdsaP256Sha256)
        .await
        .expect("generate the CA key on the token");
    let year = Duration::from_secs(365 * 86_400);
    let root = self_signed_root(signer.clone(), "CN=bench root", year)
        .await
        .expect("root");
    let ca = CaIssuer::new(root.der, Vec::new(), signer.clone()).expect("issuer");
    (signer, ca)
}

/// One service certificate with a fresh in-memory leaf key.
#[allow(
    dead_code,
    reason = "keyward-bench includes this module for its raw sessions"
)]
pub async fn issue_one(ca: &CaIssuer, i: usize) {
    let leaf_uri = KeyUri::file("/nonexistent/leaf.pem").expect("uri");
    let (leaf, _pkcs8) =
        SoftwareKey::generate(Algorithm::EcdsaP256Sha256, leaf_uri).expect("leaf key");
    let profile = ServiceProfile {
        common_name: format!("svc-{i}"),
        dns: vec![format!("svc-{i}.internal")],
        ips: Vec::new(),
        uris: vec![format!("spiffe://bench.internal/svc-{i}")],
        validity: Duration::from_secs(86_400),
    };
    ca.issue_service(leaf.public_key_spki_der(), &profile)
        .await
        .expect("issue");
}

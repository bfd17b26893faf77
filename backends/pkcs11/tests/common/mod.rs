//! Shared by the PKCS#11 integration tests: the module under test and fresh tokens.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use keyward_core::KeyUri;
use keyward_core::uri::Pkcs11Uri;

/// The SO PIN of every test token (tests never need it after initialization).
pub const SO_PIN: &str = "so-secret-9876";

/// The PKCS#11 module under test, from `KEYWARD_TEST_PKCS11_MODULE` (set by
/// scripts/softhsm.sh). Panics when it is missing: these tests never skip.
pub fn module() -> PathBuf {
    let module = std::env::var_os("KEYWARD_TEST_PKCS11_MODULE").unwrap_or_else(|| {
        panic!("KEYWARD_TEST_PKCS11_MODULE not set: run the tests through scripts/test.sh")
    });
    let module = PathBuf::from(module);
    if module.to_string_lossy().contains("softhsm") && std::env::var_os("SOFTHSM2_CONF").is_none() {
        // Without it SoftHSM would write tokens into the system token directory.
        panic!("SOFTHSM2_CONF not set: run the tests through scripts/test.sh");
    }
    module
}

/// A token created for one test, with a unique label, and its PIN in a 0600 file.
pub struct TestToken {
    pub label: String,
    pub pin: String,
    pub module: PathBuf,
    pub pin_file: PathBuf,
    _dir: tempfile::TempDir,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl TestToken {
    /// Initializes a fresh token labelled `<prefix>-<pid>-<n>` (tests run in parallel,
    /// in several processes, against one token directory).
    pub fn new(prefix: &str) -> Self {
        let module = module();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let label = format!("{prefix}-{}-{n}", std::process::id());
        assert!(
            label.len() <= 32,
            "token label {label} longer than 32 bytes"
        );
        let pin = format!("pin-{n}-4711");
        // Serialized with every token made in the run (keyward-tests' `softhsm_token`
        // takes the same lock): a token half made in the shared directory made a
        // concurrent `softhsm2-util --init-token --free` fail ("Could not get info about
        // the token in slot 0").
        let lock = std::env::var_os("SOFTHSM2_CONF").map(|conf| {
            let lock = std::fs::File::create(PathBuf::from(conf).with_extension("init-lock"))
                .expect("the token lock file beside SOFTHSM2_CONF");
            lock.lock().expect("lock the token directory");
            lock
        });
        keyward_pkcs11::init_token(&module, &label, SO_PIN, &pin)
            .unwrap_or_else(|e| panic!("init token {label}: {}", keyward_core::chain_line(&e)));
        drop(lock);
        let dir = tempfile::tempdir().unwrap();
        let pin_file = dir.path().join("pin");
        std::fs::write(&pin_file, format!("{pin}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        TestToken {
            label,
            pin,
            module,
            pin_file,
            _dir: dir,
        }
    }

    /// The token's URI with module path and PIN file, and no key.
    pub fn token_uri(&self) -> Pkcs11Uri {
        match self.parse(&format!(
            "pkcs11:token={}?module-path={}&pin-source=file:{}",
            self.label,
            self.module.display(),
            self.pin_file.display()
        )) {
            KeyUri::Pkcs11(u) => u,
            other => panic!("not a pkcs11 URI: {other}"),
        }
    }

    /// The URI of key `object` on this token.
    pub fn key_uri(&self, object: &str) -> KeyUri {
        self.with_path(&format!("object={object}"), "")
    }

    /// A URI with extra path attributes (`;`-joined) and query attributes (`&`-joined).
    pub fn with_path(&self, path: &str, query: &str) -> KeyUri {
        let mut s = format!(
            "pkcs11:token={};{path}?module-path={}&pin-source=file:{}",
            self.label,
            self.module.display(),
            self.pin_file.display()
        );
        if !query.is_empty() {
            s.push('&');
            s.push_str(query);
        }
        self.parse(&s)
    }

    fn parse(&self, s: &str) -> KeyUri {
        KeyUri::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }
}

/// Signs `msg` and checks the signature under the signer's own public key.
pub async fn sign_verifies(signer: &dyn keyward_core::KeySigner, msg: &[u8]) {
    let sig = signer
        .sign(msg)
        .await
        .unwrap_or_else(|e| panic!("sign: {}", keyward_core::chain_line(&e)));
    keyward_core::verify_signature(signer.algorithm(), signer.public_key_spki_der(), msg, &sig)
        .unwrap_or_else(|e| panic!("{}: {e}", signer.algorithm()));
}

/// Another handle on the module under test, as a second library in the process would
/// hold: its `C_Finalize` closes every session of the process.
pub fn second_handle(token: &TestToken) -> cryptoki::context::Pkcs11 {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::error::{Error as CkError, RvError};
    let ctx = Pkcs11::new(&token.module).unwrap();
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("initialize: {e}"),
    }
    ctx
}

/// An ECDSA P-256 key ("ec") and an RSA-2048 key ("rsa") generated on `token`.
pub async fn ec_and_rsa_keys(
    backend: &keyward_pkcs11::Pkcs11Backend,
    token: &TestToken,
) -> (
    std::sync::Arc<dyn keyward_core::KeySigner>,
    std::sync::Arc<dyn keyward_core::KeySigner>,
) {
    use keyward_core::{Algorithm, KeyBackend, RsaBits};
    let ec = backend
        .generate(&token.key_uri("ec"), Algorithm::EcdsaP256Sha256)
        .await
        .unwrap();
    let rsa = backend
        .generate(
            &token.key_uri("rsa"),
            Algorithm::RsaPkcs1Sha256(RsaBits::B2048),
        )
        .await
        .unwrap();
    (ec, rsa)
}

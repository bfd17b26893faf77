//! Shared by the PKCS#11 tests that run on a TPM: the tpm2-pkcs11 token that
//! scripts/swtpm.sh creates on swtpm (through tpm2-abrmd).
#![allow(dead_code)]

use std::path::PathBuf;

use keyward_core::KeyUri;
use keyward_core::uri::Pkcs11Uri;

/// The TPM token every TPM test shares (tpm2-pkcs11 tokens are made with tpm2_ptool,
/// which takes seconds, so tests share one and give their keys unique labels).
pub struct TpmToken {
    pub module: PathBuf,
    pub label: String,
    pub pin_file: PathBuf,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} not set: run the TPM tests through scripts/with-backends.sh (it starts swtpm)"
        )
    })
}

impl TpmToken {
    /// The token scripts/swtpm.sh created. Panics when it is missing: these tests never
    /// skip.
    pub fn shared() -> Self {
        let token = TpmToken {
            module: PathBuf::from(var("KEYWARD_TEST_TPM_MODULE")),
            label: var("KEYWARD_TEST_TPM_TOKEN"),
            pin_file: PathBuf::from(var("KEYWARD_TEST_TPM_PIN_FILE")),
        };
        var("TPM2_PKCS11_STORE");
        assert!(token.module.exists(), "{} missing", token.module.display());
        token
    }

    /// The token's URI with module path and PIN file, and no key.
    pub fn token_uri(&self) -> Pkcs11Uri {
        match self.parse("") {
            KeyUri::Pkcs11(u) => u,
            other => panic!("not a pkcs11 URI: {other}"),
        }
    }

    /// The URI of key `<object>-<pid>` on the token (unique across test processes).
    pub fn key_uri(&self, object: &str) -> KeyUri {
        self.parse(&format!("object={object}-{}", std::process::id()))
    }

    fn parse(&self, path: &str) -> KeyUri {
        let sep = if path.is_empty() { "" } else { ";" };
        let s = format!(
            "pkcs11:token={}{sep}{path}?module-path={}&pin-source=file:{}",
            self.label,
            self.module.display(),
            self.pin_file.display()
        );
        KeyUri::parse(&s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }
}

/// Held by a test while it uses the shared token from its own process: tpm2-pkcs11
/// keeps the token in SQLite without a busy timeout, so two processes writing at once
/// fail with "database is locked" (`CKR_GENERAL_ERROR`).
pub struct StoreLock(std::fs::File);

impl StoreLock {
    /// Waits for the shared store to be free and takes it.
    pub fn take() -> Self {
        let path = PathBuf::from(var("TPM2_PKCS11_STORE")).join("keyward-test.lock");
        let file = std::fs::File::create(&path).unwrap();
        file.lock().unwrap();
        StoreLock(file)
    }
}

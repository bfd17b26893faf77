//! Shared by the end-to-end TPM tests: the tpm2-pkcs11 token that scripts/swtpm.sh
//! creates on swtpm, taken by one test at a time.
//!
//! tpm2-pkcs11 keeps its tokens in SQLite with no busy timeout: two processes writing
//! one store at once fail with "database is locked" (`CKR_GENERAL_ERROR`). A test
//! therefore holds the store's lock (the one the in-process TPM tests take, see
//! backends/pkcs11/tests/tpm/mod.rs) while its keyward processes use the token.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// Reads a variable scripts/swtpm.sh exports; panics without it (never skips).
pub fn tpm_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} not set: run the TPM tests through scripts/with-backends.sh (it starts swtpm)"
        )
    })
}

/// The shared TPM token, held by this test until dropped.
pub struct TpmToken {
    pub module: String,
    pub token: String,
    pub pin_file: PathBuf,
    /// The store the module reads (`TPM2_PKCS11_STORE`).
    pub store: PathBuf,
    _lock: std::fs::File,
}

impl TpmToken {
    /// Waits until no other test uses the store, and takes it.
    pub fn take() -> Self {
        let store = PathBuf::from(tpm_env("TPM2_PKCS11_STORE"));
        let lock = std::fs::File::create(store.join("keyward-test.lock")).unwrap();
        lock.lock().unwrap();
        TpmToken {
            module: tpm_env("KEYWARD_TEST_TPM_MODULE"),
            token: tpm_env("KEYWARD_TEST_TPM_TOKEN"),
            pin_file: PathBuf::from(tpm_env("KEYWARD_TEST_TPM_PIN_FILE")),
            store,
            _lock: lock,
        }
    }

    /// `object` made unique to this test process (keys stay on the shared token).
    pub fn label(&self, object: &str) -> String {
        format!("{object}-{}", std::process::id())
    }

    /// The URI of key [`label`](Self::label)`(object)` on the TPM token.
    pub fn key_uri(&self, object: &str) -> String {
        self.key_uri_on(&self.token, object)
    }

    /// The URI of key [`label`](Self::label)`(object)` on token `token` of the store.
    pub fn key_uri_on(&self, token: &str, object: &str) -> String {
        format!(
            "pkcs11:token={token};object={}?module-path={}&pin-source=file:{}",
            self.label(object),
            self.module,
            self.pin_file.display()
        )
    }

    /// The URI of token `token` of the store, naming no key (for `hsm keys`).
    pub fn token_uri(&self, token: &str) -> String {
        format!(
            "pkcs11:token={token}?module-path={}&pin-source=file:{}",
            self.module,
            self.pin_file.display()
        )
    }

    /// Adds a token labelled [`label`](Self::label)`(name)` to the store (same PINs)
    /// with tpm2_ptool, and returns its label.
    pub fn add_token(&self, name: &str) -> String {
        let label = self.label(name);
        let pin = std::fs::read_to_string(&self.pin_file).unwrap();
        let so_pin = std::fs::read_to_string(tpm_env("KEYWARD_TEST_TPM_SO_PIN_FILE")).unwrap();
        let out = Command::new("tpm2_ptool")
            .args(["addtoken", "--pid=1", &format!("--label={label}")])
            .arg(format!("--userpin={}", pin.trim_end()))
            .arg(format!("--sopin={}", so_pin.trim_end()))
            .arg("--path")
            .arg(&self.store)
            .output()
            .expect("run tpm2_ptool (install libtpm2-pkcs11-tools)");
        assert!(out.status.success(), "tpm2_ptool addtoken: {out:?}");
        label
    }

    /// The private key labelled [`label`](Self::label)`(object)` in `hsm keys --json`
    /// output for `token`, run with state directory `state`.
    pub fn listed_private(
        &self,
        state: &std::path::Path,
        token: &str,
        object: &str,
    ) -> serde_json::Value {
        let listed = crate::common::keyward_ok(
            state,
            &["hsm", "keys", "--key", &self.token_uri(token), "--json"],
        );
        let keys: serde_json::Value = serde_json::from_str(&listed).unwrap();
        let label = self.label(object);
        keys.as_array()
            .expect("a JSON array of keys")
            .iter()
            .find(|k| k["label"] == label.as_str() && k["class"] == "private")
            .unwrap_or_else(|| panic!("no private key {label} on {token}: {listed}"))
            .clone()
    }
}

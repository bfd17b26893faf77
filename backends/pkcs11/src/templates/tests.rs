//! Templates on a real TPM (tpm2-pkcs11 on swtpm, started by scripts/swtpm.sh): an
//! attribute the module refuses is named in the error, and nothing is left behind.

use cryptoki::object::Attribute;
use keyward_core::uri::Pkcs11Uri;
use keyward_core::{Algorithm, Error, KeyBackend, KeyUri};

use crate::Pkcs11Backend;

fn tpm_key_uri(object: &str) -> Pkcs11Uri {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} not set: run the TPM tests through scripts/with-backends.sh")
        })
    };
    let s = format!(
        "pkcs11:token={};object={object}-{}?module-path={}&pin-source=file:{}",
        var("KEYWARD_TEST_TPM_TOKEN"),
        std::process::id(),
        var("KEYWARD_TEST_TPM_MODULE"),
        var("KEYWARD_TEST_TPM_PIN_FILE"),
    );
    match KeyUri::parse(&s) {
        Ok(KeyUri::Pkcs11(u)) => u,
        other => panic!("{s}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpm_refusing_an_attribute_is_named_and_leaves_no_key() {
    // Alone on the shared store (see backends/pkcs11/tests/tpm/mod.rs, StoreLock).
    let store = std::env::var("TPM2_PKCS11_STORE").expect("TPM2_PKCS11_STORE set");
    let lock =
        std::fs::File::create(std::path::Path::new(&store).join("keyward-test.lock")).unwrap();
    lock.lock().unwrap();
    let backend = Pkcs11Backend::new(None);
    let uri = tpm_key_uri("refused");
    // The TPM makes EC keys that sign and decrypt. Told CKA_DECRYPT=false, tpm2-pkcs11
    // 1.9 fails the whole call with CKR_GENERAL_ERROR and logs "User specified and TPM
    // specified attr mismatch: 0x10a" (CKA_VERIFY): the attribute it then stumbles on,
    // and the one keyward finds by leaving its requests out in turn.
    let e = backend
        .generate_key_with(
            &uri,
            Algorithm::EcdsaP256Sha256,
            vec![Attribute::Decrypt(false)],
        )
        .await
        .expect_err("tpm2-pkcs11 refuses CKA_DECRYPT=false on EC keys");
    assert_eq!(
        keyward_core::chain_line(&e),
        "token 'kw-tpm' refuses CKA_VERIFY=true on the public key when generating a key pair \
         (CKR_GENERAL_ERROR from C_GenerateKeyPair)"
    );
    let missing = backend
        .open(&KeyUri::Pkcs11(uri.clone()))
        .await
        .expect_err("the probe's key pair was destroyed");
    assert!(matches!(missing, Error::NotFound(_)), "{missing:?}");
    // keyward's own template passes, and the key signs.
    let signer = backend
        .generate(&KeyUri::Pkcs11(uri), Algorithm::EcdsaP256Sha256)
        .await
        .unwrap_or_else(|e| panic!("{}", keyward_core::chain_line(&e)));
    let sig = signer.sign(b"tpm").await.unwrap();
    keyward_core::verify_signature(
        signer.algorithm(),
        signer.public_key_spki_der(),
        b"tpm",
        &sig,
    )
    .unwrap();
}

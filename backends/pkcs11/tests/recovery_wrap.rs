//! A key-encryption key keeps working when the module is reset underneath it: after
//! `C_Finalize` and `C_Initialize` by another handle (every session closed, object
//! handles numbered afresh) and after `C_Finalize` alone, the pool recovers and the KEK
//! lists its versions again, so blobs of every version still decrypt.
//!
//! Its own test binary: it resets the module of the whole process (see recovery.rs).
#![forbid(unsafe_code)]

mod common;

use common::{TestToken, second_handle};
use keyward_core::wrap::{BlobKind, blob};
use keyward_core::{KeyBackend, chain_line};
use keyward_pkcs11::Pkcs11Backend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kek_survives_module_resets_underneath() {
    let token = TestToken::new("wrap-reset");
    let backend = Pkcs11Backend::new(None);
    let kek = backend
        .generate_wrapper(&token.key_uri("kek"))
        .await
        .unwrap();
    let v1 = kek.encrypt(b"first", b"r").await.unwrap();
    assert_eq!(kek.rotate().await.unwrap(), 2);
    let v2 = kek.encrypt(b"second", b"r").await.unwrap();

    let before = second_handle(&token);
    before.finalize().unwrap();
    let _after = second_handle(&token);
    for (round, reset) in [
        ("after finalize and initialize", false),
        ("after finalize", true),
    ] {
        if reset {
            second_handle(&token).finalize().unwrap();
        }
        for (blob, plain) in [(&v1, &b"first"[..]), (&v2, &b"second"[..])] {
            let opened = kek
                .decrypt(blob, b"r")
                .await
                .unwrap_or_else(|e| panic!("{round}: decrypt: {}", chain_line(&e)));
            assert_eq!(&opened[..], plain, "{round}");
        }
        let fresh = kek
            .encrypt(b"third", b"r")
            .await
            .unwrap_or_else(|e| panic!("{round}: encrypt: {}", chain_line(&e)));
        let sealed = blob::decode(&fresh, "pkcs11", BlobKind::Payload).unwrap();
        assert_eq!(sealed.version, 2, "{round}");
        let key = kek.generate_data_key().await.unwrap();
        assert_eq!(
            kek.unwrap_data_key(&key.wrapped).await.unwrap(),
            key.plaintext
        );
    }
}

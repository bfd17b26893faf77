//! The wrapping part of the backend conformance suite: what every backend's
//! key-encryption keys must do, checked against the real component.

use std::sync::Arc;

use crate::conformance::ConformanceSuite;
use crate::wrap::{BlobKind, MAX_PAYLOAD, blob};
use crate::{Error, KeyWrapper, chain_line};

/// A payload no error message may ever contain.
const SECRET: &[u8] = b"conformance secret 7f3a9c";

impl ConformanceSuite<'_> {
    /// Every wrapping check on fresh keys: create/open, data keys, payloads with
    /// associated data, tampering, the payload limit, and rotation.
    pub async fn run_wrapping(&self) {
        let kek = self.wrapping_create_and_open().await;
        self.wrapping_round_trips(&kek).await;
        self.wrapping_refusals(&kek).await;
        self.wrapping_rotation(&kek).await;
    }

    /// `generate_wrapper` makes version 1, a second one is `AlreadyExists`, a missing
    /// KEK is `NotFound`, and an opened KEK decrypts what the generated one made.
    pub async fn wrapping_create_and_open(&self) -> Arc<dyn KeyWrapper> {
        let scheme = self.backend.scheme();
        let uri = self.uri("wrap-kek");
        let kek = self
            .backend
            .generate_wrapper(&uri)
            .await
            .unwrap_or_else(|e| panic!("{scheme}: generate KEK {uri}: {}", chain_line(&e)));
        assert_eq!(
            kek.uri().scheme(),
            scheme,
            "{scheme}: KEK URI has another scheme"
        );
        assert_eq!(
            version(&*kek).await,
            1,
            "{scheme}: a new KEK is at version 1"
        );
        match self.backend.generate_wrapper(&uri).await {
            Err(Error::AlreadyExists(_)) => {}
            other => panic!("{scheme}: second KEK generate gave {other:?}, expected AlreadyExists"),
        }
        match self
            .backend
            .open_wrapper(&self.uri("wrap-never-created"))
            .await
        {
            Err(Error::NotFound(_)) => {}
            other => panic!("{scheme}: open of a missing KEK gave {other:?}, expected NotFound"),
        }
        let blob = kek.encrypt(SECRET, b"ctx").await.expect("encrypt");
        let opened = self
            .backend
            .open_wrapper(kek.uri())
            .await
            .unwrap_or_else(|e| panic!("{scheme}: open KEK {}: {}", kek.uri(), chain_line(&e)));
        let plain = opened
            .decrypt(&blob, b"ctx")
            .await
            .expect("decrypt by the opened KEK");
        assert_eq!(
            &plain[..],
            SECRET,
            "{scheme}: opened KEK decrypts another payload"
        );
        kek
    }

    /// Data keys unwrap to what was generated and differ each time; payloads of 1 and
    /// exactly [`MAX_PAYLOAD`] bytes, with and without associated data, round-trip.
    pub async fn wrapping_round_trips(&self, kek: &Arc<dyn KeyWrapper>) {
        let scheme = self.backend.scheme();
        let a = kek
            .generate_data_key()
            .await
            .unwrap_or_else(|e| panic!("{scheme}: generate data key: {}", chain_line(&e)));
        let b = kek.generate_data_key().await.expect("second data key");
        assert_ne!(
            a.plaintext, b.plaintext,
            "{scheme}: two data keys are equal"
        );
        let unwrapped = kek
            .unwrap_data_key(&a.wrapped)
            .await
            .unwrap_or_else(|e| panic!("{scheme}: unwrap data key: {}", chain_line(&e)));
        assert_eq!(
            unwrapped, a.plaintext,
            "{scheme}: unwrapped data key differs"
        );
        for (payload, aad) in [
            (vec![0x42u8], &b""[..]),
            (SECRET.to_vec(), &b"tenant=a;record=17"[..]),
            (vec![0xa5u8; MAX_PAYLOAD], &b"full"[..]),
        ] {
            let blob = kek.encrypt(&payload, aad).await.unwrap_or_else(|e| {
                panic!(
                    "{scheme}: encrypt {} bytes: {}",
                    payload.len(),
                    chain_line(&e)
                )
            });
            let plain = kek.decrypt(&blob, aad).await.unwrap_or_else(|e| {
                panic!(
                    "{scheme}: decrypt {} bytes: {}",
                    payload.len(),
                    chain_line(&e)
                )
            });
            assert_eq!(&plain[..], &payload[..], "{scheme}: payload round trip");
        }
    }

    /// Another AAD, a flipped ciphertext byte, a payload blob offered as a data key and
    /// a payload over the limit are each refused with a clear, non-retryable error that
    /// carries no plaintext.
    pub async fn wrapping_refusals(&self, kek: &Arc<dyn KeyWrapper>) {
        let scheme = self.backend.scheme();
        let blob = kek.encrypt(SECRET, b"aad-1").await.expect("encrypt");
        let refused = |what: &str, r: Result<zeroize::Zeroizing<Vec<u8>>, Error>| {
            let e = match r {
                Ok(_) => panic!("{scheme}: {what} decrypted"),
                Err(e) => e,
            };
            let line = chain_line(&e);
            assert!(
                !e.is_retryable(),
                "{scheme}: {what}: retryable error {line}"
            );
            assert!(
                line.contains("decrypt") || line.contains("blob"),
                "{scheme}: {what}: unclear error '{line}'"
            );
            let secret = String::from_utf8_lossy(SECRET);
            assert!(
                !line.contains(&*secret),
                "{scheme}: {what}: plaintext in the error"
            );
        };
        refused("another AAD", kek.decrypt(&blob, b"aad-2").await);
        let mut tampered = blob.clone();
        *tampered.last_mut().unwrap() ^= 1;
        refused(
            "a tampered ciphertext",
            kek.decrypt(&tampered, b"aad-1").await,
        );
        let mut tampered = blob.clone();
        let mid = tampered.len() - 20;
        tampered[mid] ^= 0x10;
        refused(
            "a ciphertext tampered inside",
            kek.decrypt(&tampered, b"aad-1").await,
        );
        refused("a truncated blob", kek.decrypt(&blob[..9], b"aad-1").await);
        let as_key = kek
            .unwrap_data_key(&blob)
            .await
            .map(|k| zeroize::Zeroizing::new(k.to_vec()));
        refused("a payload offered as a data key", as_key);
        match kek.encrypt(&vec![0u8; MAX_PAYLOAD + 1], b"").await {
            Err(Error::InvalidInput(m)) => assert!(m.contains("4096"), "{scheme}: {m}"),
            other => panic!(
                "{scheme}: a {}-byte payload gave {other:?}",
                MAX_PAYLOAD + 1
            ),
        }
    }

    /// After `rotate`, the new version encrypts (blobs name it), and blobs of the old
    /// version, data keys and payloads, still decrypt, also through a freshly opened KEK.
    pub async fn wrapping_rotation(&self, kek: &Arc<dyn KeyWrapper>) {
        let scheme = self.backend.scheme();
        let old_key = kek
            .generate_data_key()
            .await
            .expect("data key before rotation");
        let old_blob = kek
            .encrypt(SECRET, b"r")
            .await
            .expect("encrypt before rotation");
        let before = version(&**kek).await;
        assert_eq!(
            blob_version(&old_blob, scheme),
            before,
            "{scheme}: blob names another version"
        );
        let rotated = kek
            .rotate()
            .await
            .unwrap_or_else(|e| panic!("{scheme}: rotate: {}", chain_line(&e)));
        assert_eq!(
            rotated,
            before + 1,
            "{scheme}: rotate did not add one version"
        );
        assert_eq!(
            version(&**kek).await,
            rotated,
            "{scheme}: current version after rotate"
        );
        let new_blob = kek
            .encrypt(SECRET, b"r")
            .await
            .expect("encrypt after rotation");
        assert_eq!(
            blob_version(&new_blob, scheme),
            rotated,
            "{scheme}: new blob's version"
        );
        let new_key = kek
            .generate_data_key()
            .await
            .expect("data key after rotation");
        let new_sealed = blob::decode(&new_key.wrapped, scheme, BlobKind::DataKey).unwrap();
        assert_eq!(
            new_sealed.version, rotated,
            "{scheme}: new data key's version"
        );

        let reopened = self.backend.open_wrapper(kek.uri()).await.expect("reopen");
        assert_eq!(
            version(&*reopened).await,
            rotated,
            "{scheme}: reopened KEK's version"
        );
        for k in [kek, &reopened] {
            let plain = k.decrypt(&old_blob, b"r").await.unwrap_or_else(|e| {
                panic!("{scheme}: old payload after rotation: {}", chain_line(&e))
            });
            assert_eq!(&plain[..], SECRET, "{scheme}: old payload after rotation");
            let key = k
                .unwrap_data_key(&old_key.wrapped)
                .await
                .unwrap_or_else(|e| {
                    panic!("{scheme}: old data key after rotation: {}", chain_line(&e))
                });
            assert_eq!(
                key, old_key.plaintext,
                "{scheme}: old data key after rotation"
            );
            let plain = k.decrypt(&new_blob, b"r").await.expect("new payload");
            assert_eq!(&plain[..], SECRET);
        }
    }
}

async fn version(kek: &dyn KeyWrapper) -> u32 {
    kek.current_version()
        .await
        .unwrap_or_else(|e| panic!("{}: current version: {}", kek.uri(), chain_line(&e)))
}

fn blob_version(blob: &[u8], scheme: &str) -> u32 {
    blob::decode(blob, scheme, BlobKind::Payload)
        .expect("a blob the KEK made decodes")
        .version
}

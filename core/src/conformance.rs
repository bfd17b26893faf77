//! The backend conformance suite: one set of checks every `KeyBackend` must pass, run
//! by each backend crate's tests against the real component (SoftHSM, moto, OpenBao).
//!
//! The wrapping part (key-encryption keys) is [`ConformanceSuite::run_wrapping`].
//!
//! Failures panic with a message naming the backend, the algorithm and the check.

use std::sync::Arc;

use crate::{Algorithm, Error, KeyBackend, KeySigner, KeyUri, verify_signature};

/// Runs the suite against one backend. `make_uri` turns a label such as
/// `"conf-ecdsa-p256"` into a key URI in that backend; labels are unique within one
/// suite run, so a backend whose store outlives the test should add a run prefix.
pub struct ConformanceSuite<'a> {
    pub(crate) backend: &'a dyn KeyBackend,
    make_uri: Box<dyn Fn(&str) -> KeyUri + Send + Sync + 'a>,
}

/// A message longer than 4096 bytes, to exercise backends that switch to digests.
const LONG_MESSAGE_LEN: usize = 10_000;

impl<'a> ConformanceSuite<'a> {
    /// A suite for `backend`, naming keys with `make_uri`.
    pub fn new(
        backend: &'a dyn KeyBackend,
        make_uri: impl Fn(&str) -> KeyUri + Send + Sync + 'a,
    ) -> Self {
        ConformanceSuite {
            backend,
            make_uri: Box::new(make_uri),
        }
    }

    pub(crate) fn uri(&self, label: &str) -> KeyUri {
        (self.make_uri)(label)
    }

    /// Every check, for every algorithm in `algorithms`, plus the NotFound check.
    pub async fn run_all(&self, algorithms: &[Algorithm]) {
        self.open_missing_is_not_found().await;
        for &alg in algorithms {
            self.generate_open_sign(alg).await;
            self.generate_twice_is_already_exists(alg).await;
        }
        if let Some(&first) = algorithms.first() {
            self.concurrent_signs(first, 64).await;
        }
    }

    /// Generates a key, signs short and long messages, verifies them under the cached
    /// public key; opens it again and checks the public key and signatures match.
    pub async fn generate_open_sign(&self, alg: Algorithm) {
        let scheme = self.backend.scheme();
        let uri = self.uri(&format!("conf-{}", alg.name()));
        let signer = self.backend.generate(&uri, alg).await.unwrap_or_else(|e| {
            panic!(
                "{scheme}: generate {alg} at {uri}: {}",
                crate::chain_line(&e)
            )
        });
        assert_eq!(
            signer.algorithm(),
            alg,
            "{scheme}: generated signer reports the wrong algorithm"
        );
        assert_eq!(
            signer.uri().scheme(),
            scheme,
            "{scheme}: signer URI has another scheme"
        );
        check_spki(&*signer, alg);
        sign_and_verify(&*signer, b"keyward conformance", "generated").await;
        sign_and_verify(
            &*signer,
            &vec![0x5a; LONG_MESSAGE_LEN],
            "generated, long message",
        )
        .await;

        let opened = self
            .backend
            .open(&uri)
            .await
            .unwrap_or_else(|e| panic!("{scheme}: open {uri}: {}", crate::chain_line(&e)));
        assert_eq!(
            opened.public_key_spki_der(),
            signer.public_key_spki_der(),
            "{scheme}: {alg}: opened key has another public key"
        );
        assert_eq!(
            opened.algorithm().key_type(),
            alg.key_type(),
            "{scheme}: opened key type differs"
        );
        let reopened_by_canonical = self.backend.open(signer.uri()).await.unwrap_or_else(|e| {
            panic!(
                "{scheme}: open canonical {}: {}",
                signer.uri(),
                crate::chain_line(&e)
            )
        });
        assert_eq!(
            reopened_by_canonical.public_key_spki_der(),
            signer.public_key_spki_der()
        );
        sign_and_verify(&*opened, b"keyward conformance, opened", "opened").await;
    }

    /// A second `generate` at the same URI fails with `AlreadyExists` and leaves the
    /// first key as it was.
    pub async fn generate_twice_is_already_exists(&self, alg: Algorithm) {
        let scheme = self.backend.scheme();
        let uri = self.uri(&format!("conf-twice-{}", alg.name()));
        let first = self
            .backend
            .generate(&uri, alg)
            .await
            .expect("first generate");
        match self.backend.generate(&uri, alg).await {
            Err(Error::AlreadyExists(_)) => {}
            Err(e) => panic!("{scheme}: second generate gave {e:?}, expected AlreadyExists"),
            Ok(_) => {
                panic!("{scheme}: second generate at {uri} succeeded; it must never overwrite")
            }
        }
        let opened = self
            .backend
            .open(&uri)
            .await
            .expect("open after failed second generate");
        assert_eq!(
            opened.public_key_spki_der(),
            first.public_key_spki_der(),
            "{scheme}: the failed second generate changed the key"
        );
    }

    /// Opening a key that does not exist is `NotFound`.
    pub async fn open_missing_is_not_found(&self) {
        let scheme = self.backend.scheme();
        let uri = self.uri("conf-never-created");
        match self.backend.open(&uri).await {
            Err(Error::NotFound(_)) => {}
            Err(e) => panic!("{scheme}: open of a missing key gave {e:?}, expected NotFound"),
            Ok(_) => panic!("{scheme}: open of a missing key succeeded"),
        }
    }

    /// `n` signs of distinct messages at once from separate tasks; every one verifies.
    pub async fn concurrent_signs(&self, alg: Algorithm, n: usize) {
        let scheme = self.backend.scheme();
        let uri = self.uri(&format!("conf-concurrent-{}", alg.name()));
        let signer = self
            .backend
            .generate(&uri, alg)
            .await
            .expect("generate for concurrency");
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let signer = Arc::clone(&signer);
                tokio::spawn(async move {
                    let msg = format!("concurrent message {i}").into_bytes();
                    let sig = signer.sign(&msg).await?;
                    verify_signature(signer.algorithm(), signer.public_key_spki_der(), &msg, &sig)
                })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            t.await.expect("signing task panicked").unwrap_or_else(|e| {
                panic!(
                    "{scheme}: concurrent sign {i} of {n}: {}",
                    crate::chain_line(&e)
                )
            });
        }
    }
}

fn check_spki(signer: &dyn KeySigner, alg: Algorithm) {
    let spki = signer.public_key_spki_der();
    let (_, parsed) = <x509_parser::x509::SubjectPublicKeyInfo as x509_parser::prelude::FromDer<
        _,
    >>::from_der(spki)
    .unwrap_or_else(|e| panic!("{alg}: public key is not a DER SubjectPublicKeyInfo: {e}"));
    let oid = parsed.algorithm.algorithm.to_id_string();
    let expected = match alg {
        Algorithm::EcdsaP256Sha256 | Algorithm::EcdsaP384Sha384 => "1.2.840.10045.2.1",
        Algorithm::Ed25519 => "1.3.101.112",
        Algorithm::RsaPkcs1Sha256(_) | Algorithm::RsaPssSha256(_) => "1.2.840.113549.1.1.1",
    };
    assert_eq!(oid, expected, "{alg}: public key algorithm OID");
}

async fn sign_and_verify(signer: &dyn KeySigner, msg: &[u8], what: &str) {
    let alg = signer.algorithm();
    let sig = signer
        .sign(msg)
        .await
        .unwrap_or_else(|e| panic!("{alg} ({what}): sign: {}", crate::chain_line(&e)));
    verify_signature(alg, signer.public_key_spki_der(), msg, &sig)
        .unwrap_or_else(|e| panic!("{alg} ({what}): {e}"));
    let mut tampered = msg.to_vec();
    tampered[0] ^= 1;
    assert!(
        verify_signature(alg, signer.public_key_spki_der(), &tampered, &sig).is_err(),
        "{alg} ({what}): signature also verifies a different message"
    );
}

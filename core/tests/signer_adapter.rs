//! The rcgen adapter and the post-issuance check, driven by signers that misbehave:
//! a signer that signs with the wrong key, one that fails, one that answers late.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use keyward_core::issuance::{self, CaIssuer};
use keyward_core::{Algorithm, Error, KeySigner, KeyUri, check};
use time::OffsetDateTime;

const P256: Algorithm = Algorithm::EcdsaP256Sha256;

/// Claims to be `shown` but signs with `real` (a backend returning bad signatures).
#[derive(Debug)]
struct WrongKey {
    shown: Arc<dyn KeySigner>,
    real: Arc<dyn KeySigner>,
}

#[async_trait]
impl KeySigner for WrongKey {
    fn uri(&self) -> &KeyUri {
        self.shown.uri()
    }
    fn algorithm(&self) -> Algorithm {
        self.shown.algorithm()
    }
    fn public_key_spki_der(&self) -> &[u8] {
        self.shown.public_key_spki_der()
    }
    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        self.real.sign(message).await
    }
}

/// A signer whose backend is down.
#[derive(Debug)]
struct Down(Arc<dyn KeySigner>);

#[async_trait]
impl KeySigner for Down {
    fn uri(&self) -> &KeyUri {
        self.0.uri()
    }
    fn algorithm(&self) -> Algorithm {
        self.0.algorithm()
    }
    fn public_key_spki_der(&self) -> &[u8] {
        self.0.public_key_spki_der()
    }
    async fn sign(&self, _message: &[u8]) -> Result<Vec<u8>, Error> {
        Err(Error::unavailable(
            "test backend at 127.0.0.1:1 unreachable",
            None,
        ))
    }
}

/// A signer that waits on the runtime (a timer) before signing, like a network backend.
#[derive(Debug)]
struct Late(Arc<dyn KeySigner>);

#[async_trait]
impl KeySigner for Late {
    fn uri(&self) -> &KeyUri {
        self.0.uri()
    }
    fn algorithm(&self) -> Algorithm {
        self.0.algorithm()
    }
    fn public_key_spki_der(&self) -> &[u8] {
        self.0.public_key_spki_der()
    }
    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.0.sign(message).await
    }
}

#[tokio::test]
async fn a_bad_signature_on_a_root_is_caught_and_names_the_key() {
    let (shown, _) = key(P256, "shown-root");
    let (real, _) = key(P256, "real-root");
    let liar = Arc::new(WrongKey {
        shown: shown.clone(),
        real,
    });
    let e = assert_err(
        issuance::self_signed_root(liar, "CN=Root", Duration::from_secs(DAY)).await,
        "does not verify under the public key of file:/nonexistent/keyward-tests/shown-root.pem",
    );
    assert!(matches!(e, Error::Verification(_)), "{e:?}");
}

#[tokio::test]
async fn a_bad_signature_on_a_service_certificate_is_caught() {
    let (ca_key, _) = key(P256, "ca");
    let root = issuance::self_signed_root(ca_key.clone(), "CN=Root", Duration::from_secs(DAY))
        .await
        .unwrap();
    let (real, _) = key(P256, "impostor");
    let liar: Arc<dyn KeySigner> = Arc::new(WrongKey {
        shown: ca_key,
        real,
    });
    let ca = CaIssuer::new(root.der, vec![], liar).unwrap();
    let (leaf, _) = key(P256, "leaf");
    let e = assert_err(
        ca.issue_service(leaf.public_key_spki_der(), &profile("svc.example", &[]))
            .await,
        "file:/nonexistent/keyward-tests/ca.pem",
    );
    assert!(matches!(e, Error::Verification(_)), "{e:?}");
}

#[tokio::test]
async fn a_signer_failure_comes_back_as_the_signers_own_error() {
    let (ca_key, _) = key(P256, "ca");
    let root = issuance::self_signed_root(ca_key.clone(), "CN=Root", Duration::from_secs(DAY))
        .await
        .unwrap();
    let ca = CaIssuer::new(root.der, vec![], Arc::new(Down(ca_key.clone()))).unwrap();
    let e = assert_err(
        ca.issue_service(ca_key.public_key_spki_der(), &profile("svc.example", &[]))
            .await,
        "unreachable",
    );
    assert!(e.is_retryable(), "Unavailable must stay retryable: {e:?}");
    let e = assert_err(
        issuance::self_signed_root(Arc::new(Down(ca_key)), "CN=R", Duration::from_secs(DAY)).await,
        "unreachable",
    );
    assert!(e.is_retryable());
}

async fn issue_with_late_signer() {
    let (ca_key, _) = key(P256, "late-ca");
    let late: Arc<dyn KeySigner> = Arc::new(Late(ca_key));
    let root = issuance::self_signed_root(late.clone(), "CN=Late Root", Duration::from_secs(DAY))
        .await
        .unwrap();
    let ca = CaIssuer::new(root.der.clone(), vec![], late).unwrap();
    let (leaf, _) = key(P256, "late-leaf");
    let cert = ca
        .issue_service(leaf.public_key_spki_der(), &profile("svc.example", &[]))
        .await
        .unwrap();
    check::verify_chain(&cert.der, &[], &[root.der], OffsetDateTime::now_utc()).unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_signer_that_waits_on_the_runtime_works_on_a_current_thread_runtime() {
    issue_with_late_signer().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signer_that_waits_on_the_runtime_works_on_a_multi_thread_runtime() {
    issue_with_late_signer().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_issuance_from_one_issuer() {
    let r = root(P256, "CN=Busy Root", issuance::DEFAULT_ROOT_VALIDITY).await;
    let mut tasks = Vec::new();
    for n in 0..64 {
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            let (k, _) = key(P256, &format!("c{n}"));
            r.issue_service(
                k.public_key_spki_der(),
                &profile(&format!("svc{n}.example"), &[]),
            )
            .await
            .unwrap()
        }));
    }
    let mut serials = std::collections::HashSet::new();
    for t in tasks {
        let c = t.await.unwrap();
        check::verify_chain(
            &c.der,
            &[],
            &[r.certificate_der().to_vec()],
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        assert!(serials.insert(c.serial_hex));
    }
}

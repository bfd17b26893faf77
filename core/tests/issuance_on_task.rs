//! Issuance on the caller's task (issue 19): a signer that answers at once signs inline,
//! one that answers late is awaited and asked once per certificate, its failure comes
//! back as its own error, and a task issuing in a loop leaves the runtime its timers.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use keyward_core::issuance::{self, CaIssuer};
use keyward_core::{Algorithm, Error, KeySigner, KeyUri, check};
use time::OffsetDateTime;

const P256: Algorithm = Algorithm::EcdsaP256Sha256;
const DAY: u64 = 86_400;

/// Waits on the runtime (a timer, like a network backend) before it signs or fails,
/// and counts the signatures it was asked for.
#[derive(Debug)]
struct Late {
    key: Arc<dyn KeySigner>,
    asked: AtomicUsize,
    down: bool,
}

impl Late {
    fn new(key: Arc<dyn KeySigner>, down: bool) -> Arc<Self> {
        Arc::new(Late {
            key,
            asked: AtomicUsize::new(0),
            down,
        })
    }
}

#[async_trait]
impl KeySigner for Late {
    fn uri(&self) -> &KeyUri {
        self.key.uri()
    }
    fn algorithm(&self) -> Algorithm {
        self.key.algorithm()
    }
    fn public_key_spki_der(&self) -> &[u8] {
        self.key.public_key_spki_der()
    }
    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2)).await;
        if self.down {
            return Err(Error::unavailable(
                "test backend at 127.0.0.1:1 unreachable",
                None,
            ));
        }
        self.key.sign(message).await
    }
}

/// A root over a late signer, and the signer.
async fn late_root(down: bool) -> (CaIssuer, Arc<Late>, Vec<u8>) {
    let (ca_key, _) = key(P256, "late-ca");
    let late = Late::new(ca_key.clone(), down);
    let root = issuance::self_signed_root(ca_key, "CN=Late Root", Duration::from_secs(DAY))
        .await
        .unwrap();
    let ca = CaIssuer::new(root.der.clone(), vec![], late.clone()).unwrap();
    (ca, late, root.der)
}

async fn a_late_signer_is_asked_once_per_certificate() {
    let (ca, late, root) = late_root(false).await;
    for n in 0..4 {
        let (leaf, _) = key(P256, &format!("leaf{n}"));
        let cert = ca
            .issue_service(
                leaf.public_key_spki_der(),
                &profile(&format!("svc{n}.example"), &[]),
            )
            .await
            .unwrap();
        check::verify_chain(
            &cert.der,
            &[],
            std::slice::from_ref(&root),
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        assert_eq!(cert.subject, format!("CN=svc{n}.example"));
    }
    let (sub, _) = key(P256, "sub");
    ca.issue_intermediate(
        sub.public_key_spki_der(),
        "CN=Sub",
        Duration::from_secs(DAY),
    )
    .await
    .unwrap();
    assert_eq!(
        late.asked.load(Ordering::SeqCst),
        5,
        "one signature per certificate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_signer_is_asked_once_per_certificate_on_a_multi_thread_runtime() {
    a_late_signer_is_asked_once_per_certificate().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_late_signer_is_asked_once_per_certificate_on_a_current_thread_runtime() {
    a_late_signer_is_asked_once_per_certificate().await;
}

#[tokio::test]
async fn a_late_signers_failure_comes_back_as_its_own_error() {
    let (ca, late, _) = late_root(true).await;
    let (leaf, _) = key(P256, "leaf");
    let e = ca
        .issue_service(leaf.public_key_spki_der(), &profile("svc.example", &[]))
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(e.to_string().contains("127.0.0.1:1 unreachable"), "{e}");
    assert_eq!(late.asked.load(Ordering::SeqCst), 1);
}

/// One worker thread, busy with a task issuing certificates from a software CA (which
/// answers at once, so nothing in issuance itself waits): a 20 ms timer on the same
/// runtime must still fire. Issuance yields once per certificate for this.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_task_issuing_in_a_loop_leaves_the_runtime_its_timers() {
    let ca = root(P256, "CN=Busy Root", issuance::DEFAULT_ROOT_VALIDITY).await;
    let (leaf, _) = key(P256, "leaf");
    let stop = Arc::new(AtomicBool::new(false));
    let issuing = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut issued = 0u32;
            while !stop.load(Ordering::SeqCst) {
                ca.issue_service(leaf.public_key_spki_der(), &profile("svc.example", &[]))
                    .await
                    .unwrap();
                issued += 1;
            }
            issued
        })
    };
    let (tx, rx) = std::sync::mpsc::channel();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = tx.send(());
    });
    // This thread is not the worker: waiting here blocks only the test.
    let fired = rx.recv_timeout(Duration::from_secs(10));
    stop.store(true, Ordering::SeqCst);
    let issued = issuing.await.unwrap();
    assert!(
        fired.is_ok(),
        "a 20 ms timer did not fire within 10 s while a task issued certificates"
    );
    assert!(issued > 0);
}

//! Rotation against a CA whose backend can be switched off: failures keep the current
//! SVID, back off, report degraded health, and recover.

use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use keyward_core::issuance::{CaIssuer, self_signed_root};
use keyward_core::{Algorithm, KeySigner, KeyUri};
use keyward_software::SoftwareKey;

use super::*;
use crate::daemon::config::WorkloadEntry;
use crate::daemon::selectors::Selectors;

/// A software key whose signing fails (as `Unavailable`) while `down` is set.
#[derive(Debug)]
struct Flaky {
    key: SoftwareKey,
    down: AtomicBool,
}

#[async_trait]
impl KeySigner for Flaky {
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
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::unavailable("test backend is down", None));
        }
        self.key.sign_now(message)
    }
}

/// A root CA whose key is [`Flaky`] (up at first), and that key to switch off.
async fn flaky_ca() -> (Arc<Flaky>, AgentCa) {
    let uri = KeyUri::file("/keyward-test/ca.pem").unwrap();
    let (key, _) = SoftwareKey::generate(Algorithm::EcdsaP256Sha256, uri).unwrap();
    let flaky = Arc::new(Flaky {
        key,
        down: AtomicBool::new(false),
    });
    let root = self_signed_root(flaky.clone(), "CN=test root", Duration::from_secs(86_400))
        .await
        .unwrap();
    let issuer = CaIssuer::new(root.der.clone(), Vec::new(), flaky.clone()).unwrap();
    let ca = AgentCa::Fixed(CaView::new(issuer, &[root.der]));
    (flaky, ca)
}

fn entry() -> Arc<WorkloadEntry> {
    entry_with_ttl(Duration::from_secs(3600))
}

fn entry_with_ttl(ttl: Duration) -> Arc<WorkloadEntry> {
    Arc::new(WorkloadEntry {
        spiffe_id: "spiffe://example.org/api".into(),
        dns: Vec::new(),
        ips: Vec::new(),
        ttl,
        algorithm: Algorithm::EcdsaP256Sha256,
        hint: String::new(),
        selectors: Selectors {
            uid: Some(0),
            ..Default::default()
        },
        keys: Vec::new(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_backend_keeps_the_current_svid_backs_off_and_recovers() {
    let (flaky, ca) = flaky_ca().await;
    let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
    let mut r = Rotation::new(ca, vec![entry()], 0.5, "example.org", tx, Audit::default());

    r.initial().await;
    let first = rx.borrow().svids[0].clone().expect("issued at start");
    assert!(!r.degraded);
    // Renewal is due at about half the lifetime (with up to 10% jitter earlier).
    let wait = r.slots[0].due - Instant::now();
    assert!(
        wait > Duration::from_secs(1600) && wait <= Duration::from_secs(1800),
        "{wait:?}"
    );

    // The backend goes down when the renewal is due.
    flaky.down.store(true, Ordering::SeqCst);
    for attempt in 1..=3u32 {
        r.slots[0].due = Instant::now();
        r.issue_due().await;
        r.publish();
        assert!(r.degraded, "degraded after failure {attempt}");
        assert_eq!(r.slots[0].failures, attempt);
        let retry = r.slots[0].due - Instant::now();
        assert!(
            retry <= BACKOFF.delay(attempt) && retry > BACKOFF.delay(attempt) / 2,
            "attempt {attempt}: {retry:?}"
        );
        let served = rx.borrow().svids[0].clone().unwrap();
        assert!(
            Arc::ptr_eq(&served, &first),
            "the current SVID is still served"
        );
    }

    // Back up: the next attempt renews and health returns to ok.
    flaky.down.store(false, Ordering::SeqCst);
    r.slots[0].due = Instant::now();
    r.issue_due().await;
    r.publish();
    assert!(!r.degraded);
    assert_eq!(r.slots[0].failures, 0);
    let renewed = rx.borrow().svids[0].clone().unwrap();
    assert_ne!(renewed.serial_hex, first.serial_hex);
}

#[test]
fn backoff_doubles_up_to_a_minute() {
    assert_eq!(BACKOFF.delay(1), Duration::from_millis(500));
    assert_eq!(BACKOFF.delay(2), Duration::from_secs(1));
    assert_eq!(BACKOFF.delay(4), Duration::from_secs(4));
    assert_eq!(BACKOFF.delay(30), BACKOFF.max);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_keep_doubling_once_the_current_svid_has_expired() {
    let (flaky, ca) = flaky_ca().await;
    let (tx, _rx) = watch::channel(Arc::new(Snapshot::default()));
    let ttl = Duration::from_secs(2);
    let mut r = Rotation::new(
        ca,
        vec![entry_with_ttl(ttl)],
        0.5,
        "example.org",
        tx,
        Audit::default(),
    );
    r.initial().await;
    let first = r.slots[0].svid.clone().expect("issued at start");
    flaky.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(until(first.not_after) + Duration::from_millis(100)).await;
    assert!(until(first.not_after).is_zero(), "the SVID has expired");
    for attempt in 1..=6u32 {
        r.slots[0].due = Instant::now();
        r.issue_due().await;
        let retry = r.slots[0].due - Instant::now();
        assert!(
            retry > BACKOFF.delay(attempt) / 2 && retry <= BACKOFF.delay(attempt),
            "attempt {attempt}: retry in {retry:?}, not {:?}",
            BACKOFF.delay(attempt)
        );
    }
}

//! The engine's schedule with a kind whose times are chosen by the test (prepare,
//! activate, retire, remove; a failing preparation; a restart mid-overlap), and the
//! migration of the records agents kept before the journal, from fixtures in the old
//! format.

use std::sync::atomic::{AtomicBool, Ordering};

use keyward_core::issuance::{CaIssuer, self_signed_root};
use keyward_core::{Algorithm, KeyBackend};

use super::*;
use crate::daemon::config::{IntermediateSettings, JwtSettings};

/// Generations live 100 s: the next is prepared 60 s after one activates and takes
/// over at 80 s; a retired one stays published 10 s.
struct Fake {
    down: Arc<AtomicBool>,
}

#[async_trait]
impl Kind for Fake {
    type Detail = String;
    type Open = u64;
    type Published = (u64, Vec<u64>);
    const NAME: &'static str = "fake";
    const WHAT: &'static str = "fake generation";
    const GATES_READINESS: bool = true;

    fn next(&self, active: &Entry<String>) -> Next {
        Next {
            prepare_at: active.activates + time::Duration::seconds(60),
            activates: active.activates + time::Duration::seconds(80),
        }
    }
    fn leaves_at(&self, entry: &Entry<String>) -> Option<OffsetDateTime> {
        entry.retired.map(|r| r + time::Duration::seconds(10))
    }
    async fn prepare(
        &mut self,
        n: u64,
        _activates: OffsetDateTime,
        _slots: &[Slot<Self>],
    ) -> Result<(String, u64), Error> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::unavailable("the upstream is down", None));
        }
        Ok((format!("g{n}"), n))
    }
    async fn open(&self, entry: &Entry<String>) -> Result<u64, Error> {
        Ok(entry.n)
    }
    fn publish(&self, active: usize, slots: &[Slot<Self>]) -> (u64, Vec<u64>) {
        (slots[active].open, slots.iter().map(|s| s.open).collect())
    }
}

fn state() -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&StateDir::new(dir.path())).unwrap();
    (dir, journal)
}

async fn engine(journal: &Journal, down: &Arc<AtomicBool>) -> Engine<Fake> {
    let kind = Fake { down: down.clone() };
    Engine::load(kind, journal.clone(), Audit::default(), Metrics::default())
        .await
        .unwrap()
}

/// Settles at `t` and commits; returns the event names.
async fn at(e: &mut Engine<Fake>, t: OffsetDateTime) -> (Vec<String>, Result<(), Error>) {
    let mut changes = Vec::new();
    let r = e.settle(t, &mut changes).await;
    let names = changes.iter().map(|c| c.event.name.clone()).collect();
    e.commit(changes);
    (names, r)
}

fn secs(s: i64) -> time::Duration {
    time::Duration::seconds(s)
}

#[tokio::test]
async fn generations_are_prepared_activated_retired_and_removed_on_schedule() {
    let (_dir, journal) = state();
    let down = Arc::new(AtomicBool::new(false));
    let mut e = engine(&journal, &down).await;
    let t0 = now();
    let (names, r) = at(&mut e, t0).await;
    r.unwrap();
    assert_eq!(names, ["generation_prepared", "generation_activated"]);
    assert_eq!(e.published(), (1, vec![1]));
    assert_eq!(e.next_wake(t0), t0 + secs(60), "the next is due at 60 s");

    // 60 s: the next is prepared and published beside the active one.
    let (names, _) = at(&mut e, t0 + secs(60)).await;
    assert_eq!(names, ["generation_prepared"]);
    assert_eq!(e.published(), (1, vec![1, 2]));
    assert_eq!(e.next_wake(t0 + secs(60)), t0 + secs(80));
    // 80 s: it takes over; the first retires and leaves 10 s later.
    let (names, _) = at(&mut e, t0 + secs(80)).await;
    assert_eq!(names, ["generation_retired", "generation_activated"]);
    assert_eq!(e.published(), (2, vec![1, 2]));
    assert_eq!(e.next_wake(t0 + secs(80)), t0 + secs(90));
    let (names, _) = at(&mut e, t0 + secs(90)).await;
    assert_eq!(names, ["generation_removed"]);
    assert_eq!(e.published(), (2, vec![2]));

    // The journal has what a restarted agent needs.
    let s: Section<String> = journal.section("fake").unwrap().unwrap();
    assert_eq!(s.last, 2);
    assert_eq!(s.generations.len(), 1);
    assert_eq!(s.generations[0].detail, "g2");
}

#[tokio::test]
async fn a_restart_mid_overlap_continues_with_the_same_generations() {
    let (dir, journal) = state();
    let down = Arc::new(AtomicBool::new(false));
    let mut e = engine(&journal, &down).await;
    let t0 = now() - secs(70);
    at(&mut e, t0).await.1.unwrap();
    at(&mut e, t0 + secs(60)).await.1.unwrap();
    assert_eq!(e.published(), (1, vec![1, 2]), "mid-overlap at 70 s");
    drop(e);

    let journal = Journal::open(&StateDir::new(dir.path())).unwrap();
    let mut e = engine(&journal, &down).await;
    let (names, r) = at(&mut e, now()).await;
    r.unwrap();
    assert!(names.is_empty(), "nothing changed: {names:?}");
    assert_eq!(
        e.published(),
        (1, vec![1, 2]),
        "the same two, the first active"
    );
    let (names, _) = at(&mut e, t0 + secs(80)).await;
    assert_eq!(names, ["generation_retired", "generation_activated"]);
    assert_eq!(e.published().0, 2);
}

#[tokio::test]
async fn a_failing_preparation_keeps_the_current_generation_and_backs_off() {
    let (_dir, journal) = state();
    let down = Arc::new(AtomicBool::new(false));
    let mut e = engine(&journal, &down).await;
    let t0 = now();
    at(&mut e, t0).await.1.unwrap();
    let before =
        std::fs::read_to_string(journal.state().path().join("agent/generations.json")).unwrap();
    e.metrics.ca_loaded("file");
    e.metrics.backend_health("file", Ok(()));
    down.store(true, Ordering::SeqCst);
    for attempt in 1..=3 {
        let t = t0 + secs(60 + attempt);
        let (names, r) = at(&mut e, t).await;
        assert!(names.is_empty(), "{names:?}");
        e.outcome(r);
        assert_eq!(e.failures, u32::try_from(attempt).unwrap());
        assert_eq!(e.published(), (1, vec![1]), "the current one serves");
        assert_eq!(e.next_wake(t), t + BACKOFF.delay(e.failures));
        let ready = e.metrics.readiness().unwrap_err();
        assert!(ready.contains("the upstream is down"), "{ready}");
    }
    let after =
        std::fs::read_to_string(journal.state().path().join("agent/generations.json")).unwrap();
    assert_eq!(before, after, "nothing is recorded while it fails");

    down.store(false, Ordering::SeqCst);
    let (names, r) = at(&mut e, t0 + secs(90)).await;
    e.outcome(r);
    assert_eq!(e.failures, 0);
    // Prepared late (past its activation mark): it takes over at once.
    assert_eq!(
        names,
        [
            "generation_prepared",
            "generation_retired",
            "generation_activated"
        ]
    );
    assert_eq!(e.metrics.generations()["fake"].reason, None);
    assert_eq!(e.metrics.readiness(), Ok(()));
}

/// A software root and the settings of intermediates under it, in `dir`.
async fn root_and_settings(dir: &std::path::Path) -> (CaIssuer, IntermediateSettings) {
    let root_uri = KeyUri::file(dir.join("root.pem")).unwrap();
    let root_key = keyward_software::SoftwareBackend::new()
        .generate(&root_uri, Algorithm::EcdsaP256Sha256)
        .await
        .unwrap();
    let cert = self_signed_root(
        root_key.clone(),
        "CN=fixture root",
        Duration::from_secs(86_400),
    )
    .await
    .unwrap();
    let root = CaIssuer::new(cert.der, Vec::new(), root_key).unwrap();
    let settings = IntermediateSettings {
        key_template: format!("file:{}/int-{{n}}.pem", dir.display()),
        algorithm: Algorithm::EcdsaP256Sha256,
        subject: "CN=fixture intermediate".into(),
        ttl: Duration::from_secs(3600),
        rotate_before: Duration::from_secs(1200),
    };
    (root, settings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_intermediates_record_is_migrated_and_its_intermediate_keeps_issuing() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path().join("state"));
    let (root, settings) = root_and_settings(dir.path()).await;
    let backends = Arc::new(Backends::default());
    let key = backends
        .for_uri(&x509::key_uri(&settings, 3).unwrap())
        .await
        .unwrap()
        .generate(
            &x509::key_uri(&settings, 3).unwrap(),
            Algorithm::EcdsaP256Sha256,
        )
        .await
        .unwrap();
    let cert = root
        .issue_intermediate(key.public_key_spki_der(), &settings.subject, settings.ttl)
        .await
        .unwrap();
    // The fixture, as agents before the journal wrote it.
    let old = serde_json::json!({
        "version": 1,
        "last": 4,
        "generations": [{ "n": 3, "cert": cert.pem() }],
    });
    std::fs::create_dir_all(state.path().join("agent")).unwrap();
    state
        .write_agent_record(AgentRecord::Intermediates, &old)
        .unwrap();

    let roots = vec![root.certificate_der().to_vec()];
    let kind = LocalIntermediate::new(settings, backends, root, roots, Audit::default());
    let journal = Journal::open(&state).unwrap();
    let rx = start(kind, &journal, Audit::default(), Metrics::default())
        .await
        .unwrap();
    assert_eq!(
        rx.borrow().issuer.certificate_der(),
        &cert.der[..],
        "the same intermediate"
    );
    let s: Section<x509::CertDetail> = journal.section("local_intermediate").unwrap().unwrap();
    assert_eq!((s.last, s.generations.len(), s.generations[0].n), (4, 1, 3));
    assert!(
        !state.path().join("agent/intermediates.json").exists(),
        "migrated once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_jwt_keys_record_is_migrated_and_its_key_keeps_signing() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path().join("state"));
    let base = KeyUri::file(dir.path().join("jwt.pem")).unwrap();
    let backends = Arc::new(Backends::default());
    let first = backends
        .for_uri(&base)
        .await
        .unwrap()
        .generate(&base, Algorithm::EcdsaP256Sha256)
        .await
        .unwrap();
    let kid = crate::daemon::jwt::keys::describe(first)
        .unwrap()
        .kid
        .clone();
    let started = crate::daemon::jwt::keys::now_ms() - 60_000;
    let old = serde_json::json!({
        "version": 1,
        "key_fingerprint": keyward_core::store::sha256_hex(base.to_string().as_bytes()),
        "generations": [{ "suffix": null, "activates_ms": started, "retired_ms": null }],
    });
    std::fs::create_dir_all(state.path().join("agent")).unwrap();
    state
        .write_agent_record(AgentRecord::JwtKeys, &old)
        .unwrap();

    let settings = JwtSettings {
        key: Some(base),
        algorithm: Algorithm::EcdsaP256Sha256,
        ttl: Duration::from_secs(300),
        key_ttl: Duration::from_secs(86_400),
        key_overlap: Duration::from_secs(3600),
    };
    let journal = Journal::open(&state).unwrap();
    let kind = JwtKey::new(settings, backends, Audit::default());
    let rx = start(kind, &journal, Audit::default(), Metrics::default())
        .await
        .unwrap();
    assert_eq!(rx.borrow().active.kid, kid, "the same key signs");
    assert_eq!(rx.borrow().published.len(), 1);
    let s: Section<serde_json::Value> = journal.section("jwt_key").unwrap().unwrap();
    assert_eq!(
        s.generations[0].activates.unix_timestamp() * 1000,
        i64::try_from(started / 1000 * 1000).unwrap()
    );
    assert!(
        !state.path().join("agent/jwt-keys.json").exists(),
        "migrated once"
    );
}

use super::*;
use crate::audit::Event;
use crate::check::pem_to_ders;
use crate::{Error, KeyUri};

/// A distinct real certificate per `tag` (the store checks that PEM holds certificates).
pub(super) fn fake_cert_der(tag: u8) -> Vec<u8> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CERTS: OnceLock<Mutex<HashMap<u8, Vec<u8>>>> = OnceLock::new();
    let mut certs = CERTS.get_or_init(Default::default).lock().unwrap();
    certs
        .entry(tag)
        .or_insert_with(|| {
            let c = rcgen::generate_simple_self_signed(vec![format!("t{tag}.test")]).unwrap();
            c.cert.der().to_vec()
        })
        .clone()
}

fn key() -> KeyUri {
    KeyUri::parse("file:/k/ca.pem").unwrap()
}

fn op(name: &str, plan: Plan) -> Operation {
    Operation {
        name: name.into(),
        detail: format!("test {name}"),
        plan,
    }
}

/// An audit append that succeeds, and one that fails.
pub(super) fn appended(_: Event) -> Result<(), Error> {
    Ok(())
}
pub(super) fn refused(_: Event) -> Result<(), Error> {
    Err(Error::State("the audit log refused the record".into()))
}

pub(super) fn new_cert(tag: u8, out: Option<std::path::PathBuf>) -> NewCertificate {
    NewCertificate {
        kind: IssuedKind::Service,
        name: format!("n{tag}"),
        out,
        ca_key: key(),
        cert_pem: crate::check::ders_to_pem(&[fake_cert_der(tag)]),
        batch_file: None,
        fields: None,
    }
}

/// Runs `work` in a transaction with a fixed audit record.
pub(super) async fn run(
    s: &StateDir,
    plan: Plan,
    audit: &AuditAppend<'_>,
    work: impl AsyncFnOnce(&mut Transaction<'_>) -> Result<(), Error>,
) -> Result<(), Error> {
    s.transaction(&op("test", plan), audit, async |tx| {
        work(tx).await?;
        tx.audit(Event::new("tested"));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn root_then_intermediate_round_trip_and_never_replaced() {
    let d = tempfile::tempdir().unwrap();
    let s = StateDir::new(d.path().join("state"));
    assert!(s.ca().unwrap().is_none());
    assert!(s.lock().is_err(), "lock must not create the directory");
    assert!(!s.exists());
    let root = async |tx: &mut Transaction<'_>| tx.install_root(&[fake_cert_der(1)], Some(&key()));
    run(&s, Plan::Ca, &appended, root).await.unwrap();
    assert_eq!(fsutil::mode_of(s.path()).unwrap(), 0o700);
    let again = async |tx: &mut Transaction<'_>| tx.install_root(&[fake_cert_der(2)], Some(&key()));
    let e = run(&s, Plan::Ca, &appended, again).await.unwrap_err();
    assert!(e.to_string().contains("never replaces"), "{e}");
    let inter_key = KeyUri::parse("transit:inter").unwrap();
    for tag in [3, 4] {
        let inter = async |tx: &mut Transaction<'_>| {
            tx.install_intermediate(&fake_cert_der(tag), &inter_key)
        };
        assert_eq!(run(&s, Plan::Ca, &appended, inter).await.is_ok(), tag == 3);
    }
    let ca = s.ca().unwrap().unwrap();
    assert_eq!(ca.roots, vec![fake_cert_der(1)]);
    let issuing = ca.issuing().unwrap();
    assert_eq!(issuing.cert_der, fake_cert_der(3));
    assert_eq!(issuing.key, inter_key);
    assert_eq!(issuing.chain_der, vec![fake_cert_der(1)]);
    assert!(s.problems().unwrap().is_empty());
    assert!(s.unfinished().unwrap().is_empty());
}

#[tokio::test]
async fn altered_ca_file_is_detected() {
    let d = tempfile::tempdir().unwrap();
    let s = StateDir::new(d.path());
    let root = async |tx: &mut Transaction<'_>| tx.install_root(&[fake_cert_der(1)], Some(&key()));
    run(&s, Plan::Ca, &appended, root).await.unwrap();
    let root = d.path().join("ca/root.pem");
    let text = std::fs::read_to_string(&root).unwrap();
    std::fs::write(&root, &text[..text.len() / 2]).unwrap();
    let e = s.ca().unwrap_err().to_string();
    assert!(e.contains("does not match the CA manifest"), "{e}");
    assert_eq!(s.problems().unwrap().len(), 1);
}

#[tokio::test]
async fn the_store_builds_inventory_records_and_reports_orphans() {
    let d = tempfile::tempdir().unwrap();
    let s = StateDir::new(d.path());
    s.create_and_lock().unwrap();
    let new = new_cert(9, None);
    let plan = Plan::Certificate(Box::new(new.clone()));
    run(&s, plan.clone(), &appended, async |tx| {
        tx.record_issued(&new).map(drop)
    })
    .await
    .unwrap();
    let inv = s.inventory().unwrap();
    assert_eq!(inv.len(), 1);
    let summary = crate::check::summarize(&fake_cert_der(9)).unwrap();
    assert_eq!(inv[0].serial_hex, summary.serial_hex);
    assert_eq!(inv[0].subject, summary.subject);
    assert_eq!(
        inv[0].cert_file,
        format!("issued/{}.pem", summary.serial_hex)
    );
    assert_eq!(
        pem_to_ders(&std::fs::read(d.path().join(&inv[0].cert_file)).unwrap()).unwrap(),
        vec![fake_cert_der(9)]
    );
    // The same serial twice is refused, also as abandoned, and the inventory is unchanged.
    let e = run(&s, plan.clone(), &appended, async |tx| {
        tx.record_issued(&new).map(drop)
    })
    .await
    .unwrap_err();
    assert!(e.to_string().contains("already in the inventory"), "{e}");
    assert!(
        run(&s, plan, &appended, async |tx| tx
            .record_abandoned(&new)
            .map(drop))
        .await
        .is_err()
    );
    assert_eq!(s.inventory().unwrap().len(), 1);
    std::fs::write(d.path().join("issued/ffff.pem"), "x").unwrap();
    let p = s.problems().unwrap();
    assert!(
        p.iter()
            .any(|l| l.contains("ffff.pem") && l.contains("not in the inventory")),
        "{p:?}"
    );
}

#[tokio::test]
async fn abandoned_serials_are_kept_apart_and_never_reused() {
    let d = tempfile::tempdir().unwrap();
    let s = StateDir::new(d.path());
    s.create_and_lock().unwrap();
    let gone = new_cert(5, None);
    run(
        &s,
        Plan::Certificate(Box::new(gone.clone())),
        &appended,
        async |tx| tx.record_abandoned(&gone).map(drop),
    )
    .await
    .unwrap();
    assert!(s.inventory().unwrap().is_empty(), "nothing was delivered");
    let abandoned = s.abandoned().unwrap();
    assert_eq!(abandoned.len(), 1);
    assert_eq!(abandoned[0].status, CertStatus::Abandoned);
    assert!(s.problems().unwrap().is_empty(), "{:?}", s.problems());
    let e = run(
        &s,
        Plan::Certificate(Box::new(gone.clone())),
        &appended,
        async |tx| tx.record_issued(&gone).map(drop),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
}

#[tokio::test]
async fn a_failed_audit_append_undoes_every_write() {
    let d = tempfile::tempdir().unwrap();
    let s = StateDir::new(d.path().join("state"));
    let root = async |tx: &mut Transaction<'_>| tx.install_root(&[fake_cert_der(1)], Some(&key()));
    run(&s, Plan::Ca, &appended, root).await.unwrap();
    let first = new_cert(6, None);
    run(
        &s,
        Plan::Certificate(Box::new(first.clone())),
        &appended,
        async |tx| tx.record_issued(&first).map(drop),
    )
    .await
    .unwrap();
    let before = snapshot(s.path());
    let out = d.path().join("out/deep");
    let second = new_cert(7, Some(out.clone()));
    let e = run(
        &s,
        Plan::Certificate(Box::new(second.clone())),
        &refused,
        async |tx| {
            tx.create_dir(&out)?;
            tx.write(
                &out.join("key.pem"),
                b"secret",
                fsutil::SECRET_FILE_MODE,
                fsutil::Replace::Refuse,
            )?;
            tx.record_issued(&second).map(drop)
        },
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("refused the record"), "{e}");
    assert_eq!(
        snapshot(s.path()),
        before,
        "the state directory is as it was"
    );
    assert!(
        !d.path().join("out").exists(),
        "the directories it made are gone"
    );
    assert!(s.unfinished().unwrap().is_empty());
}

#[tokio::test]
async fn failed_work_is_undone_and_a_change_without_an_audit_record_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let s = StateDir::new(d.path());
    s.create_and_lock().unwrap();
    let path = d.path().join("f.json");
    fsutil::write_json(&path, &1).unwrap();
    let e = run(&s, Plan::Ca, &appended, async |tx| {
        tx.write_json(&path, &2)?;
        assert_eq!(
            tx.state().unfinished().unwrap().len(),
            1,
            "the pending record is there"
        );
        Err(Error::InvalidInput("no".into()))
    })
    .await
    .unwrap_err();
    assert!(
        matches!(e, Error::InvalidInput(_)),
        "the work's own error: {e}"
    );
    assert_eq!(fsutil::read_json::<u32>(&path).unwrap(), Some(1));
    let e = s
        .transaction(&op("silent", Plan::Ca), &appended, async |tx| {
            tx.write_json(&path, &3)
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("without an audit record"), "{e}");
    assert_eq!(fsutil::read_json::<u32>(&path).unwrap(), Some(1));
    // Nothing changed and nothing to record: fine.
    s.transaction(&op("look", Plan::Ca), &refused, async |_| Ok(()))
        .await
        .unwrap();
    assert!(s.unfinished().unwrap().is_empty());
}

#[tokio::test]
async fn a_pending_record_keeps_its_plan() {
    let d = tempfile::tempdir().unwrap();
    let s = StateDir::new(d.path());
    s.create_and_lock().unwrap();
    let new = new_cert(8, Some(d.path().join("out")));
    let plan = Plan::Certificate(Box::new(new.clone()));
    s.transaction(&op("issue", plan), &appended, async |tx| {
        let left = tx.state().unfinished().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].operation, "issue");
        assert_eq!(left[0].detail, "test issue");
        let age = time::OffsetDateTime::now_utc() - left[0].started_at;
        assert!(age.whole_seconds() < 60, "started {}", left[0].started());
        match &left[0].plan {
            Some(Plan::Certificate(c)) => {
                assert_eq!(
                    (c.kind, &c.out, &c.cert_pem),
                    (new.kind, &new.out, &new.cert_pem)
                )
            }
            other => panic!("{other:?}"),
        }
        Ok(())
    })
    .await
    .unwrap();
    assert!(s.unfinished().unwrap().is_empty());
}

#[test]
fn an_unreadable_pending_record_is_listed_without_a_plan() {
    let d = tempfile::tempdir().unwrap();
    let s = StateDir::new(d.path());
    s.create_and_lock().unwrap();
    std::fs::write(d.path().join("pending/x.json"), "{").unwrap();
    let left = s.unfinished().unwrap();
    assert_eq!(left.len(), 1);
    assert!(left[0].plan.is_none());
    assert!(
        left[0].describe().contains("`keyward pending resolve`"),
        "{}",
        left[0].describe()
    );
}

#[test]
fn the_agent_records_live_under_agent() {
    let d = tempfile::tempdir().unwrap();
    let s = StateDir::new(d.path());
    s.create_and_lock().unwrap();
    assert_eq!(
        s.read_agent_record::<u32>(AgentRecord::JwtKeys).unwrap(),
        None
    );
    s.write_agent_record(AgentRecord::JwtKeys, &7u32).unwrap();
    assert_eq!(
        s.read_agent_record::<u32>(AgentRecord::JwtKeys).unwrap(),
        Some(7)
    );
    assert!(d.path().join("agent/jwt-keys.json").is_file());
}

/// Every file under `dir` (but the lock) with its contents.
fn snapshot(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else if !p.ends_with(".lock") {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

//! The inventory of a `sign-csr --batch` chunk: one file in `issued/` per chunk, each
//! record finding its own PEM block in it, and `problems()` still seeing every
//! missing, altered or unnamed certificate.

use std::collections::HashSet;
use std::path::Path;

use super::super::tests::{appended, fake_cert_der, new_cert, run};
use super::*;
use crate::check::{pem_to_ders, summarize};
use crate::store::Plan;

/// A chunk of certificates `tags`, marked as `sign-csr --batch` marks them.
fn chunk(tags: &[u8]) -> Vec<NewCertificate> {
    let mut news: Vec<NewCertificate> = tags.iter().map(|&t| new_cert(t, None)).collect();
    NewCertificate::share_file(&mut news).unwrap();
    news
}

/// Records `news` with `record_issued_all` in one transaction.
async fn record_chunk(s: &StateDir, news: &[NewCertificate]) -> Result<(), Error> {
    let mut taken = TakenSerials::new();
    record_chunk_taking(s, news, &mut taken).await
}

/// Records `news` with `record_issued_all` in one transaction, with the serials a run
/// keeps.
async fn record_chunk_taking(
    s: &StateDir,
    news: &[NewCertificate],
    taken: &mut TakenSerials,
) -> Result<(), Error> {
    let plan = Plan::Certificates {
        certificates: news.to_vec(),
    };
    run(s, plan, &appended, async |tx| {
        tx.record_issued_all(news, taken).map(drop)
    })
    .await
}

/// The names of the files in `issued/`.
fn issued_names(root: &Path) -> HashSet<String> {
    std::fs::read_dir(root.join("issued"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// A fresh state directory.
fn fresh_state() -> (tempfile::TempDir, StateDir) {
    let d = tempfile::tempdir().unwrap();
    let s = StateDir::new(d.path());
    s.create_and_lock().unwrap();
    (d, s)
}

/// A fresh state directory with the chunk of certificates 40, 41, 42 recorded.
async fn recorded_chunk() -> (tempfile::TempDir, StateDir, Vec<NewCertificate>) {
    let (d, s) = fresh_state();
    let news = chunk(&[40, 41, 42]);
    record_chunk(&s, &news).await.unwrap();
    (d, s, news)
}

#[tokio::test]
async fn a_chunk_is_recorded_in_one_file_and_each_record_reads_its_own_block() {
    let (d, s, news) = recorded_chunk().await;
    let first = summarize(&fake_cert_der(40)).unwrap().serial_hex;
    let file = format!("issued/batch-{first}.pem");
    assert_eq!(
        issued_names(d.path()),
        HashSet::from([file[7..].to_string()])
    );
    let path = d.path().join(&file);
    let all: String = news.iter().map(|n| n.cert_pem.as_str()).collect();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), all);
    assert_eq!(
        fsutil::mode_of(&path).unwrap(),
        fsutil::PUBLIC_FILE_MODE,
        "public, as a file of its own"
    );
    let inv = s.inventory().unwrap();
    assert_eq!(inv.len(), 3);
    let mut files = s.issued_files();
    for (rec, (new, tag)) in inv.iter().zip(news.iter().zip([40, 41, 42])) {
        assert_eq!(rec.cert_file, file);
        assert_eq!(rec.cert_sha256, sha256_hex(new.cert_pem.as_bytes()));
        assert_eq!(rec.serial_hex, new.serial_hex().unwrap());
        assert_eq!(files.pem(rec).unwrap(), new.cert_pem.as_bytes());
        assert_eq!(
            pem_to_ders(&s.issued_pem(rec).unwrap()).unwrap(),
            vec![fake_cert_der(tag)]
        );
    }
    assert!(s.problems().unwrap().is_empty(), "{:?}", s.problems());
    // A serial of the chunk again is refused, and the refused chunk leaves no file.
    let again = chunk(&[43, 41]);
    let e = record_chunk(&s, &again).await.unwrap_err();
    assert!(e.to_string().contains("already in the inventory"), "{e}");
    assert_eq!(issued_names(d.path()).len(), 1);
    assert_eq!(s.inventory().unwrap().len(), 3);
}

#[tokio::test]
async fn a_certificate_issued_alone_keeps_a_file_of_its_own_read_whole() {
    let (_d, s) = fresh_state();
    let new = new_cert(44, None);
    run(
        &s,
        Plan::Certificate(Box::new(new.clone())),
        &appended,
        async |tx| tx.record_issued(&new).map(drop),
    )
    .await
    .unwrap();
    let rec = &s.inventory().unwrap()[0];
    assert_eq!(rec.cert_file, format!("issued/{}.pem", rec.serial_hex));
    assert_eq!(s.issued_pem(rec).unwrap(), new.cert_pem.as_bytes());
}

#[tokio::test]
async fn an_altered_block_of_a_chunk_file_is_reported_for_its_record_only() {
    let (d, s, news) = recorded_chunk().await;
    let rec = s.inventory().unwrap().swap_remove(1);
    let path = d.path().join(&rec.cert_file);
    // The middle certificate replaced by another one: the file still parses.
    let forged = new_cert(45, None).cert_pem;
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&news[1].cert_pem, &forged);
    std::fs::write(&path, text).unwrap();
    let e = s.issued_pem(&rec).unwrap_err().to_string();
    assert!(e.contains(&rec.serial_hex), "{e}");
    let p = s.problems().unwrap();
    let altered: Vec<&String> = p.iter().filter(|l| l.contains("does not match")).collect();
    assert_eq!(altered.len(), 1, "{p:?}");
    assert!(altered[0].contains(&rec.serial_hex), "{p:?}");
    assert!(
        p.iter()
            .any(|l| l.contains("holds 1 certificate(s) no inventory record names")),
        "{p:?}"
    );
    let others = s.inventory().unwrap();
    assert_eq!(
        s.issued_pem(&others[0]).unwrap(),
        news[0].cert_pem.as_bytes()
    );
}

#[tokio::test]
async fn a_missing_chunk_file_is_reported_for_each_record() {
    let (d, s, _) = recorded_chunk().await;
    let inv = s.inventory().unwrap();
    std::fs::remove_file(d.path().join(&inv[0].cert_file)).unwrap();
    let p = s.problems().unwrap();
    let missing = p
        .iter()
        .filter(|l| l.contains("named by the inventory is missing"))
        .count();
    assert_eq!(missing, 3, "{p:?}");
    assert!(s.issued_pem(&inv[2]).is_err());
}

#[tokio::test]
async fn a_chunk_file_no_record_names_is_reported() {
    let (d, s, _) = recorded_chunk().await;
    let stray = chunk(&[46, 47]);
    let text: String = stray.iter().map(|n| n.cert_pem.as_str()).collect();
    let name = stray[0].batch_file.clone().unwrap();
    std::fs::write(d.path().join(&name), text).unwrap();
    let p = s.problems().unwrap();
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains(&name) && p[0].contains("is not in the inventory"),
        "{p:?}"
    );
}

#[tokio::test]
async fn certificates_settled_one_by_one_after_a_crash_name_their_chunk_file() {
    // A crash left the chunk's file and no record: `pending resolve` records each
    // certificate alone (issued or abandoned), which finds it in that file.
    let (d, s) = fresh_state();
    let news = chunk(&[48, 49]);
    let name = news[0].batch_file.clone().unwrap();
    let text: String = news.iter().map(|n| n.cert_pem.as_str()).collect();
    std::fs::write(d.path().join(&name), text).unwrap();
    let plan = Plan::Certificates {
        certificates: news.clone(),
    };
    run(&s, plan, &appended, async |tx| {
        tx.record_issued(&news[0])?;
        tx.record_abandoned(&news[1]).map(drop)
    })
    .await
    .unwrap();
    assert_eq!(s.inventory().unwrap()[0].cert_file, name);
    assert_eq!(s.abandoned().unwrap()[0].cert_file, name);
    assert_eq!(issued_names(d.path()).len(), 1);
    assert!(s.problems().unwrap().is_empty(), "{:?}", s.problems());
    // Without the chunk's file, a certificate gets a file of its own as before.
    let lone = chunk(&[50]);
    run(
        &s,
        Plan::Certificates {
            certificates: lone.clone(),
        },
        &appended,
        async |tx| tx.record_issued(&lone[0]).map(drop),
    )
    .await
    .unwrap();
    let rec = s.inventory().unwrap().swap_remove(1);
    assert_eq!(rec.cert_file, format!("issued/{}.pem", rec.serial_hex));
    assert!(s.problems().unwrap().is_empty(), "{:?}", s.problems());
}

/// Records `new` alone (as `issue` does).
async fn record_alone(s: &StateDir, new: &NewCertificate) -> Result<(), Error> {
    let plan = Plan::Certificate(Box::new(new.clone()));
    run(s, plan, &appended, async |tx| {
        tx.record_issued(new).map(drop)
    })
    .await
}

/// The names of the files in `inventory.d/`.
fn chunk_record_files(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("inventory.d"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn a_chunk_s_records_get_a_file_of_their_own_read_with_the_others_in_order() {
    let (d, s) = fresh_state();
    record_alone(&s, &new_cert(51, None)).await.unwrap();
    let mut taken = TakenSerials::new();
    let news = chunk(&[52, 53]);
    record_chunk_taking(&s, &news, &mut taken).await.unwrap();
    record_alone(&s, &new_cert(54, None)).await.unwrap();
    let alone: Vec<IssuedRecord> =
        serde_json::from_slice(&std::fs::read(d.path().join("inventory.json")).unwrap()).unwrap();
    assert_eq!(
        alone.len(),
        2,
        "the chunk's records are not in inventory.json"
    );
    let first = news[0].serial_hex().unwrap();
    assert_eq!(
        chunk_record_files(d.path()),
        [format!("batch-{first}.json")]
    );
    let serials: Vec<String> = s
        .inventory()
        .unwrap()
        .into_iter()
        .map(|r| r.serial_hex)
        .collect();
    let expected: Vec<String> = [51, 52, 53, 54]
        .map(|t| new_cert(t, None).serial_hex().unwrap())
        .to_vec();
    assert_eq!(serials, expected, "oldest first");
    assert!(s.problems().unwrap().is_empty(), "{:?}", s.problems());
    // A serial recorded alone between two chunks of a run is seen by the next chunk,
    // and a chunk's serial is seen by a certificate recorded alone.
    let e = record_chunk_taking(&s, &chunk(&[55, 54]), &mut taken)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already in the inventory"), "{e}");
    let e = record_alone(&s, &new_cert(53, None)).await.unwrap_err();
    assert!(e.to_string().contains("already in the inventory"), "{e}");
    assert_eq!(chunk_record_files(d.path()).len(), 1);
    assert_eq!(s.inventory().unwrap().len(), 4);
}

#[tokio::test]
async fn an_undone_chunk_leaves_no_records_and_its_serials_free() {
    let (d, s) = fresh_state();
    let mut taken = TakenSerials::new();
    let news = chunk(&[56, 57]);
    let plan = Plan::Certificates {
        certificates: news.clone(),
    };
    let undone = run(&s, plan, &super::super::tests::refused, async |tx| {
        tx.record_issued_all(&news, &mut taken).map(drop)
    })
    .await;
    assert!(undone.is_err());
    assert!(chunk_record_files(d.path()).is_empty());
    assert!(s.inventory().unwrap().is_empty());
    // The run's serials notice the undone file: the same chunk records again.
    record_chunk_taking(&s, &news, &mut taken).await.unwrap();
    assert_eq!(s.inventory().unwrap().len(), 2);
    assert!(s.problems().unwrap().is_empty(), "{:?}", s.problems());
}

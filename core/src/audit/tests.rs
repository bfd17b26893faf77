//! The audit chain: appends verify; each kind of tampering is named at the right line.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;
use crate::KeyUri;

/// A log in `dir` with `n` test records (also used by the recover tests).
pub(super) fn log_with(dir: &Path, n: usize) -> AuditLog {
    let log = AuditLog::new(dir.join("audit.jsonl"));
    for i in 0..n {
        log.append(&Event::new("test").with("i", i)).unwrap();
    }
    log
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(p: &Path, lines: &[String]) {
    std::fs::write(
        p,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

fn broken(files: &[PathBuf]) -> VerifyFailure {
    verify(files).unwrap().expect_err("verify should fail")
}

#[test]
fn appends_verify_and_are_private() {
    let d = tempfile::tempdir().unwrap();
    let log = log_with(d.path(), 3);
    let s = verify(&[log.path().to_path_buf()]).unwrap().unwrap();
    assert_eq!((s.records, s.first_seq, s.last_seq), (3, Some(1), Some(3)));
    assert!(s.head_checked);
    let first: Record = serde_json::from_str(&lines(log.path())[0]).unwrap();
    assert_eq!((first.seq, first.prev.as_str()), (1, GENESIS));
    assert!(first.time.ends_with('Z'), "{}", first.time);
    for p in [log.path().to_path_buf(), head_path(log.path())] {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
}

#[test]
fn an_edited_field_is_named_at_its_own_line() {
    let d = tempfile::tempdir().unwrap();
    let log = log_with(d.path(), 4);
    let mut l = lines(log.path());
    l[1] = l[1].replace("\"i\":1", "\"i\":7");
    write_lines(log.path(), &l);
    let f = broken(&[log.path().to_path_buf()]);
    assert_eq!(f.line, 2, "{f}");
    assert!(f.what.contains("edited"), "{f}");
    assert!(f.to_string().starts_with("audit log "), "{f}");
}

#[test]
fn an_edit_with_a_recomputed_hash_is_named_at_the_edited_line() {
    let d = tempfile::tempdir().unwrap();
    let log = log_with(d.path(), 4);
    let mut l = lines(log.path());
    let r: Record = serde_json::from_str(&l[1]).unwrap();
    let mut fields = r.fields.clone();
    fields.insert("i".into(), 99.into());
    l[1] = Record::encode(r.seq, &r.time, &r.event, &fields, &r.prev);
    write_lines(log.path(), &l);
    let f = broken(&[log.path().to_path_buf()]);
    assert_eq!(f.line, 2, "{f}");
    assert!(f.what.contains("changed after it was written"), "{f}");
    // The last line edited the same way: only the head file can tell.
    let mut l = lines(log_with(&d.path().join("b"), 3).path());
    let p = d.path().join("b/audit.jsonl");
    let r: Record = serde_json::from_str(&l[2]).unwrap();
    l[2] = Record::encode(r.seq, &r.time, "forged", &r.fields, &r.prev);
    write_lines(&p, &l);
    let f = broken(&[p]);
    assert_eq!(f.line, 3, "{f}");
    assert!(f.what.contains("does not match"), "{f}");
}

/// What the writer reads of the last line before continuing the chain
/// (`Record::decode_seq`) refuses these damaged lines as the full decoding does (it
/// does not check the types of the members it skips).
#[test]
fn a_damaged_last_line_is_refused_as_by_decoding() {
    let d = tempfile::tempdir().unwrap();
    let log = log_with(d.path(), 3);
    let line = lines(log.path()).pop().unwrap();
    let r = Record::decode(line.as_bytes()).unwrap();
    assert_eq!(Record::decode_seq(line.as_bytes()), Ok(3));
    let sealed = |body: &str| {
        let hash = crate::store::sha256_hex(format!("{body}}}").as_bytes());
        format!("{body},\"hash\":\"{hash}\"}}")
    };
    let cut = line.rfind(",\"hash\"").unwrap();
    let bad = [
        line.replace("\"i\":2", "\"i\":7"),
        line[..line.len() - 2].to_string(),
        line.replacen("\"seq\":3", "\"seq\":\"3\"", 1),
        sealed(&line[..cut].replacen(",\"prev\"", ",\"extra\":1,\"prev\"", 1)),
        sealed(&line[..cut].replacen(&format!(",\"prev\":\"{}\"", r.prev), "", 1)),
        format!("{line} "),
        "not json".to_string(),
    ];
    for b in bad {
        assert!(Record::decode(b.as_bytes()).is_err(), "{b}");
        assert!(Record::decode_seq(b.as_bytes()).is_err(), "{b}");
    }
}

#[test]
fn a_removed_line_is_a_gap_at_its_place() {
    let d = tempfile::tempdir().unwrap();
    let log = log_with(d.path(), 5);
    let mut l = lines(log.path());
    l.remove(2);
    write_lines(log.path(), &l);
    let f = broken(&[log.path().to_path_buf()]);
    assert_eq!(f.line, 3, "{f}");
    assert!(f.what.contains("seq 3 is missing"), "{f}");
}

#[test]
fn swapped_lines_are_reported_as_reordered() {
    let d = tempfile::tempdir().unwrap();
    let log = log_with(d.path(), 5);
    let mut l = lines(log.path());
    l.swap(1, 2);
    write_lines(log.path(), &l);
    let f = broken(&[log.path().to_path_buf()]);
    assert_eq!(f.line, 2, "{f}");
    assert!(f.what.contains("out of order"), "{f}");
    assert!(f.what.contains("line 3"), "{f}");
}

#[test]
fn a_cut_tail_is_caught_by_the_head_and_stops_writers() {
    let d = tempfile::tempdir().unwrap();
    let log = log_with(d.path(), 5);
    let mut l = lines(log.path());
    l.truncate(3);
    write_lines(log.path(), &l);
    let f = broken(&[log.path().to_path_buf()]);
    assert_eq!(f.line, 4, "{f}");
    assert!(
        f.what
            .contains("records seq 4 to 5 are missing from the end"),
        "{f}"
    );
    let e = log.append(&Event::new("after")).unwrap_err();
    assert!(e.to_string().contains("ends at seq 3"), "{e}");
    assert!(log.check().is_err());
    assert_eq!(lines(log.path()).len(), 3, "nothing appended");
    // Without the head the cut cannot be seen: neither verify nor a writer accepts that.
    std::fs::remove_file(head_path(log.path())).unwrap();
    let f = broken(&[log.path().to_path_buf()]);
    assert_eq!(f.line, 4, "{f}");
    assert!(f.what.contains("no head file"), "{f}");
    assert!(f.what.contains("keyward audit recover --log"), "{f}");
    let e = log.append(&Event::new("after")).unwrap_err().to_string();
    assert!(e.contains("no head file"), "{e}");
    assert!(
        e.contains(&format!(
            "keyward audit recover --log {}",
            log.path().display()
        )),
        "{e}"
    );
    assert!(log.check().is_err());
    assert_eq!(lines(log.path()).len(), 3, "nothing appended");
}

#[test]
fn a_torn_line_is_reported_and_discarded_by_the_next_append() {
    let d = tempfile::tempdir().unwrap();
    let log = log_with(d.path(), 2);
    let mut data = std::fs::read(log.path()).unwrap();
    data.extend_from_slice(b"{\"seq\":3,\"ti");
    std::fs::write(log.path(), &data).unwrap();
    let f = broken(&[log.path().to_path_buf()]);
    assert_eq!(f.line, 3, "{f}");
    assert!(f.what.contains("torn"), "{f}");
    assert_eq!(log.append(&Event::new("next")).unwrap(), 4);
    let s = verify(&[log.path().to_path_buf()]).unwrap().unwrap();
    assert_eq!(s.records, 4);
    assert!(lines(log.path())[2].contains("audit_torn_tail_discarded"));
}

#[test]
fn rotation_continues_the_chain_across_files() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("audit.jsonl");
    let log = AuditLog::new(&path).with_rotation(1000, 3);
    for i in 0..40 {
        log.append(&Event::new("test").with("i", i)).unwrap();
    }
    assert!(rotated_path(&path, 3).exists());
    assert!(
        !rotated_path(&path, 4).exists(),
        "only 3 rotated files kept"
    );
    for p in [rotated_path(&path, 1), path.clone()] {
        assert!(std::fs::metadata(&p).unwrap().len() <= 1000);
    }
    let files = vec![
        rotated_path(&path, 3),
        rotated_path(&path, 2),
        rotated_path(&path, 1),
        path.clone(),
    ];
    let s = verify(&files).unwrap().unwrap();
    assert_eq!(s.last_seq, Some(40));
    assert!(s.first_seq.unwrap() > 1, "the oldest files were dropped");
    assert_eq!(s.records, 40 - s.first_seq.unwrap() + 1);
    // The newest file alone verifies too (it continues an older one).
    verify(std::slice::from_ref(&path)).unwrap().unwrap();
    // Given newest first, the order is wrong at the second file's first line.
    let f = broken(&[path.clone(), rotated_path(&path, 1)]);
    assert_eq!((f.file, f.line), (rotated_path(&path, 1), 1), "{}", f.what);
    assert!(f.what.contains("oldest first"), "{}", f.what);
}

#[test]
fn concurrent_writers_keep_one_chain() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("audit.jsonl");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            // Separate AuditLog values: only the file lock serializes them.
            let log = AuditLog::new(&path).with_rotation(4000, 50);
            std::thread::spawn(move || {
                for i in 0..25 {
                    log.append(&Event::new("test").with("t", t).with("i", i))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut files: Vec<PathBuf> = (1..=50)
        .rev()
        .map(|n| rotated_path(&path, n))
        .filter(|p| p.exists())
        .collect();
    files.push(path);
    let s = verify(&files).unwrap().unwrap();
    assert_eq!(
        (s.records, s.first_seq, s.last_seq),
        (100, Some(1), Some(100))
    );
}

#[test]
fn key_uris_are_written_without_their_pin() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::new(d.path().join("audit.jsonl"));
    let uri = KeyUri::parse("pkcs11:token=t;object=o?pin-value=s3cr3t-4242").unwrap();
    log.append(&Event::key_generated(
        &uri,
        crate::Algorithm::EcdsaP256Sha256,
        "ab",
    ))
    .unwrap();
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(text.contains("token=t"), "{text}");
    assert!(!text.contains("s3cr3t-4242"), "{text}");
}

#[test]
fn a_batch_is_one_chain_across_rotations() {
    let d = tempfile::tempdir().unwrap();
    let log = log_with(d.path(), 2).with_rotation(700, 8);
    let events: Vec<Event> = (0..20).map(|i| Event::new("batch").with("i", i)).collect();
    assert_eq!(log.append_all(&events).unwrap(), 22);
    let mut files: Vec<PathBuf> = (1..=8)
        .rev()
        .map(|k| rotated_path(log.path(), k))
        .filter(|p| p.exists())
        .collect();
    assert!(
        files.len() >= 2,
        "700-byte files must have rotated: {files:?}"
    );
    files.push(log.path().to_path_buf());
    let s = verify(&files).unwrap().unwrap();
    assert_eq!(
        (s.records, s.first_seq, s.last_seq),
        (22, Some(1), Some(22))
    );
    assert!(s.head_checked);
}

#[test]
fn queued_events_from_many_threads_all_land_in_one_chain() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::new(d.path().join("audit.jsonl"));
    let failures = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let queue = {
        let failures = failures.clone();
        AuditQueue::start(log.clone(), move |_, n| {
            failures.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        })
        .unwrap()
    };
    std::thread::scope(|s| {
        for t in 0..8 {
            let queue = &queue;
            s.spawn(move || {
                for i in 0..250 {
                    let ticket = queue.enqueue(Event::new("queued").with("t", t).with("i", i));
                    if i % 50 == 0 {
                        queue.wait(ticket);
                    }
                }
            });
        }
    });
    queue.flush();
    assert_eq!(failures.load(std::sync::atomic::Ordering::SeqCst), 0);
    let s = verify(&[log.path().to_path_buf()]).unwrap().unwrap();
    assert_eq!((s.records, s.last_seq), (2000, Some(2000)));
    // Each thread's events keep their order.
    let mut next = [0u64; 8];
    for line in lines(log.path()) {
        let r: Record = serde_json::from_str(&line).unwrap();
        let t = r.fields["t"].as_u64().unwrap() as usize;
        assert_eq!(r.fields["i"].as_u64().unwrap(), next[t]);
        next[t] += 1;
    }
}

#[test]
fn dropping_the_queue_writes_what_is_still_queued() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::new(d.path().join("audit.jsonl"));
    let queue = AuditQueue::start(log.clone(), |e, _| panic!("write failed: {e}")).unwrap();
    for i in 0..100 {
        queue.try_enqueue(Event::new("late").with("i", i)).unwrap();
    }
    drop(queue);
    let s = verify(&[log.path().to_path_buf()]).unwrap().unwrap();
    assert_eq!(s.records, 100);
}

//! The kept lookups against the changes that must end them: each change is followed at
//! once (no wait) by a lookup that must give what a fresh `stat` gives.

use super::*;
use std::process::Command;

/// A new file at `path` (a new inode each time).
fn new_file(path: &Path) -> FileKey {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"#!/bin/sh\n").unwrap();
    FileKey::at(path).unwrap()
}

/// A new temporary directory with a new file at `name` in it.
fn a_program(name: &str) -> (tempfile::TempDir, PathBuf, FileKey) {
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join(name);
    let key = new_file(&prog);
    (dir, prog, key)
}

/// Whether a lookup of `path` is answered from what was kept, without looking it up
/// again: tried a few times, since a file made meanwhile in a directory of the path
/// (`/tmp`, by a test running beside this one) drops what was kept.
fn answered_from_kept(lookups: &PathLookups, path: &Path) -> bool {
    (0..20).any(|_| {
        let made = lookups.lookups();
        lookups.file_named(path);
        lookups.lookups() == made
    })
}

/// A new file renamed over `path` (as a package manager replaces a program).
fn replaced(path: &Path) -> FileKey {
    let next = path.with_extension("next");
    let key = new_file(&next);
    std::fs::rename(&next, path).unwrap();
    key
}

#[test]
fn a_lookup_is_kept_until_a_rename_replaces_the_file() {
    let (_dir, prog, first) = a_program("bin/prog");
    let lookups = PathLookups::new();
    assert_eq!(lookups.file_named(&prog), Some(first));
    assert!(answered_from_kept(&lookups, &prog));
    assert_eq!(lookups.file_named(&prog), Some(first));
    let second = replaced(&prog);
    assert_ne!(first, second);
    assert_eq!(lookups.file_named(&prog), Some(second));
    std::fs::remove_file(&prog).unwrap();
    assert_eq!(lookups.file_named(&prog), None);
}

#[test]
fn a_directory_of_the_path_renamed_away_or_replaced_is_seen() {
    let (dir, prog, first) = a_program("app/bin/prog");
    let lookups = PathLookups::new();
    assert_eq!(lookups.file_named(&prog), Some(first));
    std::fs::rename(dir.path().join("app"), dir.path().join("app.old")).unwrap();
    assert_eq!(lookups.file_named(&prog), None);
    let second = new_file(&prog);
    assert_eq!(lookups.file_named(&prog), Some(second));
    // The old directory swapped back in by one exchange of names.
    std::fs::rename(dir.path().join("app/bin"), dir.path().join("app/bin.new")).unwrap();
    std::fs::rename(dir.path().join("app.old/bin"), dir.path().join("app/bin")).unwrap();
    assert_eq!(lookups.file_named(&prog), Some(first));
}

#[test]
fn a_missing_file_is_kept_as_missing_until_it_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("prog");
    let lookups = PathLookups::new();
    assert_eq!(lookups.file_named(&prog), None);
    assert!(answered_from_kept(&lookups, &prog));
    assert_eq!(lookups.file_named(&prog), None);
    let made = new_file(&prog);
    assert_eq!(lookups.file_named(&prog), Some(made));
    // A hard link made over the name once it is free again.
    let other = new_file(&dir.path().join("other"));
    std::fs::remove_file(&prog).unwrap();
    assert_eq!(lookups.file_named(&prog), None);
    std::fs::hard_link(dir.path().join("other"), &prog).unwrap();
    assert_eq!(lookups.file_named(&prog), Some(other));
}

#[test]
fn symbolic_links_are_followed_and_looked_up_on_every_call() {
    let dir = tempfile::tempdir().unwrap();
    let a = new_file(&dir.path().join("real/a"));
    let b = new_file(&dir.path().join("real/b"));
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(dir.path().join("real/a"), &link).unwrap();
    std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("linked")).unwrap();
    let through = dir.path().join("linked/a");
    let lookups = PathLookups::new();
    assert_eq!(lookups.file_named(&link), Some(a));
    assert_eq!(lookups.file_named(&through), Some(a));
    // The links' targets change without an event in any directory the paths name.
    std::fs::rename(dir.path().join("real/b"), dir.path().join("real/a")).unwrap();
    assert_eq!(lookups.file_named(&link), Some(b));
    assert_eq!(lookups.file_named(&through), Some(b));
    let relative = dir.path().join("real/../real/a");
    assert_eq!(lookups.file_named(&relative), Some(b));
}

#[test]
fn any_change_in_a_watched_directory_drops_what_was_kept() {
    let (dir, prog, first) = a_program("prog");
    let lookups = PathLookups::new();
    assert_eq!(lookups.file_named(&prog), Some(first));
    // Each call looks up at most once, and one after an event in a directory of the
    // path must (however many other events came).
    let made = lookups.lookups();
    new_file(&dir.path().join("unrelated"));
    assert_eq!(lookups.file_named(&prog), Some(first));
    assert_eq!(
        lookups.lookups(),
        made + 1,
        "looked up again after the event"
    );
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    assert_eq!(lookups.file_named(&prog), Some(first));
    assert_eq!(
        lookups.lookups(),
        made + 2,
        "looked up again after the chmod"
    );
}

#[test]
fn a_full_event_queue_still_drops_what_was_kept() {
    let max: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (dir, prog, first) = a_program("prog");
    let lookups = PathLookups::new();
    assert_eq!(lookups.file_named(&prog), Some(first));
    // More events than the queue holds, then the rename (whose own event is lost: the
    // queue holds the overflow instead).
    for i in 0..max + 16 {
        std::fs::File::create(dir.path().join(format!("f{i}"))).unwrap();
    }
    let second = replaced(&prog);
    assert_eq!(lookups.file_named(&prog), Some(second));
}

#[test]
fn a_change_is_seen_from_every_thread() {
    let (_dir, prog, first) = a_program("prog");
    let lookups = std::sync::Arc::new(PathLookups::new());
    assert_eq!(lookups.file_named(&prog), Some(first));
    let second = replaced(&prog);
    let (l, p) = (lookups.clone(), prog.clone());
    let seen = std::thread::spawn(move || l.file_named(&p)).join().unwrap();
    assert_eq!(seen, Some(second));
    assert_eq!(lookups.file_named(&prog), Some(second));
}

/// Unmounts its path when dropped (so a failed test leaves no mount behind).
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// `source` bind-mounted over `target` in this process's mount namespace (needs root).
fn bind(source: &Path, target: &Path) -> Mounted {
    let ok = Command::new("mount")
        .arg("--bind")
        .arg(source)
        .arg(target)
        .status()
        .expect("run mount");
    assert!(
        ok.success(),
        "mount --bind {source:?} {target:?} (needs root)"
    );
    Mounted(target.to_path_buf())
}

/// A thread that looks `path` up whenever asked, kept running (so it keeps its own
/// mount table file open from the first lookup on).
fn looker(lookups: std::sync::Arc<PathLookups>, path: PathBuf) -> impl Fn() -> Option<FileKey> {
    let (ask, asked) = std::sync::mpsc::channel::<()>();
    let (tell, told) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for () in asked {
            tell.send(lookups.file_named(&path)).unwrap();
        }
    });
    move || {
        ask.send(()).unwrap();
        told.recv().unwrap()
    }
}

#[test]
fn a_mount_over_the_file_or_a_directory_is_seen_from_every_thread() {
    let (dir, prog, first) = a_program("bin/prog");
    let other = new_file(&dir.path().join("other/prog"));
    let lookups = std::sync::Arc::new(PathLookups::new());
    let on_thread = looker(lookups.clone(), prog.clone());
    assert_eq!(lookups.file_named(&prog), Some(first));
    assert_eq!(on_thread(), Some(first));
    assert_eq!(lookups.file_named(&prog), Some(first));
    assert_eq!(on_thread(), Some(first));
    let kept = lookups.lookups();
    let over_file = bind(&dir.path().join("other/prog"), &prog);
    assert_eq!(on_thread(), Some(other), "a file mounted over it");
    assert_eq!(lookups.file_named(&prog), Some(other));
    drop(over_file);
    assert_eq!(lookups.file_named(&prog), Some(first), "unmounted");
    assert_eq!(on_thread(), Some(first));
    let over_dir = bind(&dir.path().join("other"), &dir.path().join("bin"));
    assert_eq!(
        on_thread(),
        Some(other),
        "a directory mounted over its directory"
    );
    assert_eq!(lookups.file_named(&prog), Some(other));
    drop(over_dir);
    assert_eq!(lookups.file_named(&prog), Some(first));
    assert!(lookups.lookups() > kept);
}

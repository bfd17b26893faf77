//! Crash-safe file writes and private directories: the only way keyward writes state.
//!
//! A write goes to a temporary file in the same directory, is fsynced, renamed (or
//! hard-linked, when it must not replace anything) over the target, and the directory
//! is fsynced, so a crash leaves either the old file or the new one, never a torn one.
//! Every JSON state file is read and written by [`read_json`] and [`write_json`].

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// Mode for private keys and other secret files.
pub const SECRET_FILE_MODE: u32 = 0o600;
/// Mode for certificates and other public state files.
pub const PUBLIC_FILE_MODE: u32 = 0o644;
/// Mode for directories keyward creates.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Whether an atomic write may replace an existing file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replace {
    /// Replace the target if it exists.
    Allow,
    /// Fail with `AlreadyExists` if the target exists (checked atomically by `link`).
    Refuse,
}

/// Writes `data` to `path` atomically with file mode `mode`.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32, replace: Replace) -> Result<(), Error> {
    write_atomic_then(path, data, mode, replace, true)
}

/// Writes `data` to `path` atomically (never torn) like [`write_atomic`], but leaves
/// the file and its directory to be made durable later by [`sync_files`]: many files
/// written this way are synced together far faster than one by one.
pub fn write_atomic_unsynced(
    path: &Path,
    data: &[u8],
    mode: u32,
    replace: Replace,
) -> Result<(), Error> {
    write_atomic_then(path, data, mode, replace, false)
}

/// From this many files on, [`sync_files`] syncs each filesystem holding them once
/// (`syncfs`) instead of each file: one writeback and one journal commit, where even
/// concurrent per-file fsyncs cost a call each (10,000 certificates of a bulk run took
/// 10,037 fsyncs, 82% of its system-call time).
pub const SYNC_FILESYSTEM_FROM: usize = 64;

/// Makes `files` (written by [`write_atomic_unsynced`]) and their directories durable.
/// Up to [`SYNC_FILESYSTEM_FROM`] files, each file and directory is fsynced; the fsyncs
/// run concurrently, so the filesystem commits them together (on ext4 one journal
/// commit instead of one per file). From there on, each filesystem the files are on is
/// synced once with `syncfs`, which also writes back whatever else is dirty there and
/// reports any writeback error on it (Linux 5.8 and later).
pub fn sync_files(files: &[std::path::PathBuf]) -> Result<(), Error> {
    if files.len() >= SYNC_FILESYSTEM_FROM {
        return sync_filesystems(files);
    }
    const THREADS: usize = 64;
    let sync_file = |path: &Path| {
        File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(format!("cannot sync {}", path.display()), e))
    };
    let mut dirs: Vec<&Path> = files.iter().map(|f| parent_dir(f)).collect();
    dirs.sort_unstable();
    dirs.dedup();
    let chunk = files.len().div_ceil(THREADS).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().try_for_each(|f| sync_file(f))))
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    })?;
    dirs.into_iter().try_for_each(sync_dir)
}

/// `syncfs` once for each filesystem that holds a directory of `files`.
fn sync_filesystems(files: &[std::path::PathBuf]) -> Result<(), Error> {
    let mut dirs: Vec<&Path> = files.iter().map(|f| parent_dir(f)).collect();
    dirs.sort_unstable();
    dirs.dedup();
    let mut synced = Vec::new();
    for dir in dirs {
        let cannot = |e: std::io::Error| {
            Error::io(
                format!("cannot sync the filesystem of {}", dir.display()),
                e,
            )
        };
        let handle = File::open(dir).map_err(cannot)?;
        let device = handle.metadata().map_err(cannot)?.dev();
        if !synced.contains(&device) {
            rustix::fs::syncfs(&handle).map_err(|e| cannot(e.into()))?;
            synced.push(device);
        }
    }
    Ok(())
}

fn write_atomic_then(
    path: &Path,
    data: &[u8],
    mode: u32,
    replace: Replace,
    durable: bool,
) -> Result<(), Error> {
    let dir = parent_dir(path);
    let tmp = dir.join(temporary_name(path));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| Error::io(format!("cannot create {}", tmp.display()), e))?;
        // The umask may have cleared bits of `mode`; set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(format!("cannot set mode of {}", tmp.display()), e))?;
        f.write_all(data)
            .and_then(|()| if durable { f.sync_all() } else { Ok(()) })
            .map_err(|e| Error::io(format!("cannot write {}", tmp.display()), e))?;
        match replace {
            Replace::Allow => fs::rename(&tmp, path)
                .map_err(|e| Error::io(format!("cannot replace {}", path.display()), e)),
            Replace::Refuse => match fs::hard_link(&tmp, path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Err(Error::AlreadyExists(path.display().to_string()))
                }
                Err(e) => Err(Error::io(format!("cannot create {}", path.display()), e)),
            },
        }
    })();
    // After a rename the temporary name is gone; after a link (or a failure) remove it.
    let renamed = replace == Replace::Allow && result.is_ok();
    if !renamed {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    if durable { sync_dir(dir) } else { Ok(()) }
}

/// Reads the JSON file at `path`: `None` when there is none; a file that does not parse
/// as a `T` is an error saying `PATH is corrupt: why`.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, Error> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
    };
    serde_json::from_slice(&data)
        .map(Some)
        .map_err(|e| Error::State(format!("{} is corrupt: {e}", path.display())))
}

/// Writes `value` as JSON to `path` with [`write_atomic`], mode 0600, replacing the file.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let json = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::State(format!("cannot encode {}: {e}", path.display())))?;
    write_atomic(path, &json, SECRET_FILE_MODE, Replace::Allow)
}

/// Points the symlink `link` at `target` in one step: a temporary symlink beside it
/// is renamed over it (replacing a symlink or a regular file; a directory is refused
/// by the rename), and the directory is fsynced. A reader resolving `link` sees the
/// old target or the new one, never neither.
pub fn replace_symlink(link: &Path, target: &Path) -> Result<(), Error> {
    let dir = parent_dir(link);
    let tmp = dir.join(temporary_name(link));
    std::os::unix::fs::symlink(target, &tmp)
        .map_err(|e| Error::io(format!("cannot create symlink {}", tmp.display()), e))?;
    if let Err(e) = fs::rename(&tmp, link) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(format!("cannot replace {}", link.display()), e));
    }
    sync_dir(dir)
}

/// Temporary files under `dir` (recursively) left by [`write_atomic`] calls whose
/// process is gone: what a crash in the middle of a write leaves behind. A temporary
/// whose writer still runs (its pid is in the name) is never listed.
pub fn stale_temporaries(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            out.extend(stale_temporaries(&path));
        } else if let Some(pid) = temporary_writer(&entry.file_name().to_string_lossy())
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Temporaries of the file at `path` (beside it) left by [`write_atomic`] calls whose
/// process is gone.
pub fn stale_temporaries_of(path: &Path) -> Vec<std::path::PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = fs::read_dir(parent_dir(path)) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .flatten()
        .filter(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            file.starts_with(&prefix)
                && temporary_writer(&file)
                    .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// The name of a temporary for `path`: `.{name}.tmp-{pid}-{n}`, which
/// [`stale_temporaries`] recognises.
fn temporary_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.tmp-{}-{}", std::process::id(), unique())
}

/// The writer's pid in a temporary name `.{name}.tmp-{pid}-{n}`.
fn temporary_writer(file_name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix('.')?;
    let (_, tail) = rest.rsplit_once(".tmp-")?;
    let (pid, n) = tail.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Fsyncs a directory so that entries created or renamed in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("cannot sync directory {}", dir.display()), e))
}

/// Creates `dir` (and missing parents) with mode 0700 for the directories created.
/// An existing directory is left as it is.
pub fn create_private_dir(dir: &Path) -> Result<(), Error> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent()
        && !parent.as_os_str().is_empty()
    {
        create_private_dir(parent)?;
    }
    if !create_new_private_dir(dir)? && !dir.is_dir() {
        return Err(Error::io(
            format!("cannot create directory {}", dir.display()),
            std::io::ErrorKind::AlreadyExists.into(),
        ));
    }
    Ok(())
}

/// Creates the new directory `dir` with mode 0700 and returns `true`, or returns
/// `false` and changes nothing if anything is already at that path. Its parent must
/// exist.
pub fn create_new_private_dir(dir: &Path) -> Result<bool, Error> {
    match fs::DirBuilder::new().mode(PRIVATE_DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => {
            return Err(Error::io(
                format!("cannot create directory {}", dir.display()),
                e,
            ));
        }
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_DIR_MODE))
        .map_err(|e| Error::io(format!("cannot set mode of {}", dir.display()), e))?;
    sync_dir(parent_dir(dir))?;
    Ok(true)
}

/// The permission bits of `path` (without file type bits).
pub fn mode_of(path: &Path) -> Result<u32, Error> {
    fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))
}

/// Refuses a directory every user may write (mode `o+w`, sticky or not): any local user
/// could replace or plant what keyward reads back from it (a key, the CA's record, a
/// batch manifest). `what` names the directory in the one-line error. A group-writable
/// directory is left to its owner's choice of group.
pub fn refuse_world_writable_dir(dir: &Path, what: &str) -> Result<(), Error> {
    let mode = mode_of(dir)?;
    if mode & 0o002 != 0 {
        return Err(Error::State(format!(
            "{what} {} can be written by every user (mode {mode:04o}): any of them could replace what keyward reads back from it; run chmod o-w on it",
            dir.display()
        )));
    }
    Ok(())
}

/// The directory `path` is in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_every_user_may_write_is_refused_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for (mode, refused) in [
            (0o700, false),
            (0o770, false),
            (0o755, false),
            (0o777, true),
            (0o1777, true),
            (0o703, true),
        ] {
            fs::set_permissions(dir, fs::Permissions::from_mode(mode)).unwrap();
            let got = refuse_world_writable_dir(dir, "the test directory");
            assert_eq!(got.is_err(), refused, "mode {mode:o}: {got:?}");
            if let Err(e) = got {
                let e = e.to_string();
                assert!(
                    e.contains("the test directory") && e.contains("chmod o-w"),
                    "{e}"
                );
            }
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
    }

    #[test]
    fn refuse_keeps_the_existing_file_and_no_write_leaves_a_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k.pem");
        write_atomic(&p, b"one", SECRET_FILE_MODE, Replace::Refuse).unwrap();
        let e = write_atomic(&p, b"two", SECRET_FILE_MODE, Replace::Refuse).unwrap_err();
        assert!(matches!(e, Error::AlreadyExists(_)));
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(mode_of(&p).unwrap(), 0o600);
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
        write_atomic(&p, b"three", PUBLIC_FILE_MODE, Replace::Allow).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"three");
        assert_eq!(mode_of(&p).unwrap(), 0o644);
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
        // A rename that fails (a file over a directory) removes its temporary too.
        let blocked = d.path().join("dir");
        fs::create_dir(&blocked).unwrap();
        write_atomic(&blocked, b"four", PUBLIC_FILE_MODE, Replace::Allow).unwrap_err();
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 2);
    }

    #[test]
    fn many_unsynced_files_are_synced_by_filesystem_and_a_few_by_file() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let files: Vec<_> = (0..SYNC_FILESYSTEM_FROM)
            .map(|i| {
                let p = [d.path(), &sub][i % 2].join(format!("{i}.pem"));
                write_atomic_unsynced(&p, b"x", PUBLIC_FILE_MODE, Replace::Refuse).unwrap();
                p
            })
            .collect();
        sync_files(&files).unwrap();
        sync_files(&files[..3]).unwrap();
        let gone = d.path().join("missing/x.pem");
        let e = sync_filesystems(&[gone]).unwrap_err().to_string();
        assert!(e.contains("cannot sync the filesystem of"), "{e}");
        assert!(files.iter().all(|f| fs::read(f).unwrap() == b"x"));
    }

    #[test]
    fn json_round_trips_privately_and_a_torn_file_is_named_corrupt() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.json");
        assert_eq!(read_json::<Vec<u32>>(&p).unwrap(), None);
        write_json(&p, &vec![1u32, 2]).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&p).unwrap(), Some(vec![1, 2]));
        assert_eq!(mode_of(&p).unwrap(), 0o600);
        fs::write(&p, b"[1, 2").unwrap();
        let e = read_json::<Vec<u32>>(&p).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{} is corrupt: ", p.display())),
            "{e}"
        );
    }

    #[test]
    fn temporaries_of_dead_writers_are_stale_and_live_ones_are_not() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("sub")).unwrap();
        let dead = d.path().join("sub/.inventory.json.tmp-4194304999-3");
        let live = d
            .path()
            .join(format!(".manifest.json.tmp-{}-0", std::process::id()));
        for p in [
            &dead,
            &live,
            &d.path().join(".lock"),
            &d.path().join("a.tmp-1-2"),
        ] {
            fs::write(p, b"x").unwrap();
        }
        assert_eq!(stale_temporaries(d.path()), vec![dead.clone()]);
        assert_eq!(
            stale_temporaries_of(&d.path().join("sub/inventory.json")),
            vec![dead]
        );
        assert!(stale_temporaries_of(&d.path().join("manifest.json")).is_empty());
    }

    #[test]
    fn a_symlink_switch_replaces_links_and_files_and_refuses_directories() {
        let d = tempfile::tempdir().unwrap();
        let link = d.path().join("current");
        for (target, body) in [("a", b"one"), ("b", b"two")] {
            fs::create_dir(d.path().join(target)).unwrap();
            fs::write(d.path().join(target).join("f"), body).unwrap();
            replace_symlink(&link, Path::new(target)).unwrap();
            assert_eq!(fs::read_link(&link).unwrap(), Path::new(target));
            assert_eq!(fs::read(link.join("f")).unwrap(), body);
        }
        let file = d.path().join("f.pem");
        fs::write(&file, b"old").unwrap();
        replace_symlink(&file, Path::new("current/f")).unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"two");
        let e = replace_symlink(&d.path().join("a"), Path::new("b")).unwrap_err();
        assert!(e.to_string().contains("cannot replace"), "{e}");
        assert!(d.path().join("a/f").exists(), "the directory is left alone");
        // Only the names above remain: no temporary is left behind.
        let mut names: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b", "current", "f.pem"]);
    }

    #[test]
    fn a_new_private_dir_is_0700_and_never_an_existing_one() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("gen");
        assert!(create_new_private_dir(&p).unwrap());
        assert_eq!(mode_of(&p).unwrap(), 0o700);
        assert!(!create_new_private_dir(&p).unwrap());
        let file = d.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(!create_new_private_dir(&file).unwrap());
        let e = create_private_dir(&file).unwrap_err().to_string();
        assert!(e.starts_with("cannot create directory"), "{e}");
    }

    #[test]
    fn private_dirs_are_0700() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b/c");
        create_private_dir(&p).unwrap();
        for q in [d.path().join("a"), d.path().join("a/b"), p] {
            assert_eq!(mode_of(&q).unwrap(), 0o700, "{}", q.display());
        }
    }
}

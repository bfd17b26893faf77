//! The files the entries' `path` selectors name, looked up once and kept for as long as
//! the kernel says nothing the lookup went through has changed.
//!
//! A `path` selector matches the file its path names at the time of the call (device
//! and inode), so a replaced program is the one that matches from the moment it is in
//! place. A `stat` of the path on every call was about 8% of the agent's CPU with path
//! entries. Instead, every directory the lookup passes through is watched by inotify,
//! from the root down, before the lookup reads it: the kernel queues an event inside
//! the call that creates, removes, renames or changes the attributes of an entry of a
//! watched directory, before that call returns (the tests here and
//! `tests/agent_path_swaps.rs` look up right after each change, with no wait). A mount or unmount in the agent's mount namespace flags
//! `/proc/self/mountinfo` with `POLLPRI` (once for each open file of it: each thread
//! polls its own). So each call polls both without waiting (one `poll`), and anything
//! queued or flagged drops every kept lookup before it is used: a change finished
//! before a call began is seen by that call. The kept lookups are dropped under the lock
//! every lookup takes, before the queue is read, so a call that finds the queue already
//! emptied by another finds the lookups dropped too.
//!
//! Kept only: absolute paths whose directories hold no symbolic link, `.` or `..`, on
//! filesystems whose every change passes through this kernel ([`LOCAL_FILESYSTEMS`]; not
//! NFS, CIFS or FUSE, changed elsewhere without an event here); the named file itself is
//! kept as found (or as missing), unless it is a symbolic link. Any other path, or one
//! whose watches cannot be set (the inotify limits), is looked up on every call.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{LazyLock, Mutex};

use rustix::event::{PollFd, PollFlags};
use rustix::fs::FsWord;
use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
use rustix::io::Errno;

use super::FileKey;
use super::peer::polled_ready;

/// Filesystems (`statfs` types) whose changes all pass through this kernel's VFS, so
/// inotify sees them: ext2/3/4, XFS, Btrfs, tmpfs, overlayfs, squashfs, EROFS, F2FS,
/// ramfs.
const LOCAL_FILESYSTEMS: [FsWord; 9] = [
    0xEF53,
    0x5846_5342,
    0x9123_683E,
    0x0102_1994,
    0x794C_7630,
    0x7371_7368,
    0xE0F5_E1E2,
    0xF2F5_2010,
    0x8584_58F6,
];

/// What a directory watch reports: any change to its entries or to itself.
const WATCHED: WatchFlags = WatchFlags::CREATE
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::ATTRIB)
    .union(WatchFlags::DELETE_SELF)
    .union(WatchFlags::MOVE_SELF)
    .union(WatchFlags::ONLYDIR)
    .union(WatchFlags::DONT_FOLLOW);

/// Counts the changes of the mount table any thread has seen (and the opening of a
/// thread's `mountinfo`, which reports only later changes): kept lookups made before the
/// count moved are dropped.
static MOUNT_CHANGES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's open `/proc/self/mountinfo`; `None` where it cannot be opened
    /// (then nothing is kept for calls on this thread).
    static MOUNTS: Option<File> = File::open("/proc/self/mountinfo").ok().inspect(|_| {
        MOUNT_CHANGES.fetch_add(1, SeqCst);
    });
}

/// The agent's kept lookups, for every call.
static AGENT_LOOKUPS: LazyLock<PathLookups> = LazyLock::new(PathLookups::new);

/// The file `path` names now in the agent's mount namespace (a symbolic link names its
/// target); `None` when there is none. Kept between calls as the module header says.
pub fn file_named(path: &Path) -> Option<FileKey> {
    AGENT_LOOKUPS.file_named(path)
}

/// Kept lookups and the inotify instance that watches what they went through.
#[derive(Debug)]
pub(super) struct PathLookups {
    /// `None` when inotify is unavailable: nothing is kept.
    inotify: Option<OwnedFd>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    kept: HashMap<PathBuf, Kept>,
    /// [`MOUNT_CHANGES`] when `kept` was last emptied.
    mount_changes: u64,
    /// Lookups made (not answered from `kept`), for tests.
    lookups: u64,
}

/// A path's lookup, as kept.
#[derive(Debug, Clone, Copy)]
enum Kept {
    /// The path names this file, or none.
    Found(Option<FileKey>),
    /// The path cannot be kept: looked up on every call.
    NotKept,
}

impl PathLookups {
    /// Lookups kept with a new inotify instance (none kept if it cannot be made).
    pub(super) fn new() -> PathLookups {
        let inotify = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK);
        if let Err(e) = &inotify {
            tracing::info!("no inotify instance ({e}); entries' paths are looked up on every call");
        }
        PathLookups {
            inotify: inotify.ok(),
            state: Mutex::new(State {
                mount_changes: u64::MAX,
                ..State::default()
            }),
        }
    }

    /// [`file_named`] with these lookups.
    pub(super) fn file_named(&self, path: &Path) -> Option<FileKey> {
        let Some(inotify) = &self.inotify else {
            return FileKey::at(path);
        };
        let polled = MOUNTS.try_with(|mounts| {
            mounts.as_ref().map(|mounts| {
                polled_ready(&mut [
                    PollFd::new(inotify, PollFlags::IN),
                    PollFd::new(mounts, PollFlags::PRI),
                ])
            })
        });
        let Ok(Some([queued, remounted])) = polled else {
            return FileKey::at(path);
        };
        if remounted {
            MOUNT_CHANGES.fetch_add(1, SeqCst);
        }
        let mount_changes = MOUNT_CHANGES.load(SeqCst);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if queued || state.mount_changes != mount_changes {
            // Dropped before the queue is read (see the module header).
            state.kept.clear();
            state.mount_changes = mount_changes;
            drain(inotify);
        }
        let kept = match state.kept.get(path) {
            Some(kept) => *kept,
            None => {
                state.lookups += 1;
                let kept = watched_lookup(inotify, path).unwrap_or(Kept::NotKept);
                state.kept.insert(path.to_path_buf(), kept);
                kept
            }
        };
        match kept {
            Kept::Found(file) => file,
            Kept::NotKept => FileKey::at(path),
        }
    }

    /// Lookups made so far rather than answered from what was kept.
    #[cfg(test)]
    fn lookups(&self) -> u64 {
        self.state.lock().unwrap().lookups
    }
}

/// Watches every directory of `path` from the root down, then looks the file up; `None`
/// when the path cannot be kept.
fn watched_lookup(inotify: &OwnedFd, path: &Path) -> Option<Kept> {
    let (Some(dirs), Some(Component::Normal(_))) = (path.parent(), path.components().next_back())
    else {
        return None;
    };
    let mut dir = PathBuf::new();
    for part in dirs.components() {
        match part {
            Component::RootDir => dir.push("/"),
            Component::Normal(name) => dir.push(name),
            _ => return None,
        }
        inotify::add_watch(inotify, &dir, WATCHED).ok()?;
        local(&dir)?;
    }
    // Watched before this read: no directory of the path is a symbolic link now, and
    // none becomes one without an event.
    if std::fs::canonicalize(dirs).ok()? != dirs {
        return None;
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(Kept::Found(None)),
        Err(_) => None,
        Ok(meta) if meta.file_type().is_symlink() => None,
        Ok(meta) => {
            local(path)?;
            Some(Kept::Found(Some(FileKey::of(&meta))))
        }
    }
}

/// `Some` when `path` is on a filesystem of [`LOCAL_FILESYSTEMS`].
fn local(path: &Path) -> Option<()> {
    let fs = rustix::fs::statfs(path).ok()?;
    LOCAL_FILESYSTEMS.contains(&fs.f_type).then_some(())
}

/// Reads every queued event (what they say does not matter: any drops every lookup).
fn drain(inotify: &OwnedFd) {
    let mut buf = [0u8; 4096];
    loop {
        match rustix::io::read(inotify, &mut buf) {
            Ok(0) | Err(Errno::AGAIN) => return,
            Ok(_) | Err(Errno::INTR) => {}
            // The next poll reports the queue again, and nothing is kept meanwhile.
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests;

//! Caller attestation: who is on the other end of the socket, as the kernel says.
//!
//! A connection's caller is bound when it is accepted ([`Peer`]): the SO_PEERCRED uid,
//! gid and pid, and a pidfd for the process that connected (from SO_PEERPIDFD, which
//! the kernel binds to the connecting process, or opened by PID and kept only if that
//! process started before the accept). Every attestation first checks through the
//! pidfd that this process is still running; a connection whose process has exited
//! gets nothing, whoever holds its PID now.
//!
//! `/proc/PID` is read only when an entry the caller's uid can match needs it (a `path`
//! or `sha256` selector): the process must still run as the uid and gid it connected
//! with (real and effective ids, `/proc/PID/status`); its executable is opened through
//! `/proc/PID/exe` (which names the real file whatever the caller's mount namespace),
//! identified by device and inode, and hashed through that same open file. The pidfd
//! is checked again afterwards, so everything read belonged to the process that
//! connected (a PID is not reused while its process runs).
//!
//! The attestation is kept on the connection for its later calls, with what tells
//! whether it still holds (`remembered`). Where the kernel sends the agent its process
//! events (`proc_events`: root, in the initial namespaces), that is the absence of an
//! exec, uid or gid event for the process since just before the reads: the kernel
//! queues such an event inside the system call, before the process runs on, and every
//! later call checks the queue first (one `poll` of it and the pidfd). Elsewhere, and
//! for a `sha256` (a write to the executable is no process event), it is a fingerprint
//! taken just before the reads: the owner of `/proc/PID` and the device, inode, size,
//! modification and change times of the file `/proc/PID/exe` names, from a `/proc/PID`
//! directory held open, taken again by every later call (two `statx` calls), and the
//! pidfd is checked after. If the process changed, everything is read again and refused
//! exactly as on a first call. A call that needs more (a `sha256` after a `path`) reads
//! everything again too.
//!
//! What the fingerprint sees: procfs gives `/proc/PID` (the directory itself, unlike
//! the files in it) the effective uid and gid of the process even when it is not
//! dumpable, so any change of effective id shows, and with it an exec of a set-user-ID
//! or set-group-ID file of another user or group; an exec of another file, or a write
//! to the executable, changes the file's version. What it does not see: the real, saved
//! and filesystem ids. So the facts are kept only when `/proc/PID/status` showed all
//! four uids alike and all four gids alike and the fingerprint agreed with what was
//! read: such a process changes its real id without exec only with `CAP_SETUID` (or
//! `CAP_SETGID`), and one holding it passes a per-call read anyway (it restores its ids
//! for the moment of the read); the real-id rule is against a set-user-ID program run by
//! another user, which takes an exec, and that exec changes the effective id. An exec
//! of the same file with the same ids (no change of either) is seen as nothing: the
//! process is what was attested. Process events see more (every exec, of the same file
//! too, and a change of any of the ids); the all-alike rule holds for both.

mod digest;
mod path_lookups;
mod peer;
mod proc;
mod proc_events;
mod remembered;

use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use digest::FileVersion;
pub use digest::{DEFAULT_MAX_HASH_BYTES, DigestCache, DigestError};
pub use path_lookups::file_named;
pub use peer::{Peer, boot_ticks};
pub use proc_events::ProcEvents;
use remembered::{Attested, Check, Fingerprint, ProcDir};

/// What attestation must find out about a caller for a set of entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Some entry has a `path` selector.
    pub path: bool,
    /// Some entry has a `sha256` selector.
    pub sha256: bool,
}

/// What attestation established about one caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// User id (SO_PEERCRED).
    pub uid: u32,
    /// Group id (SO_PEERCRED).
    pub gid: u32,
    /// Process id (SO_PEERCRED).
    pub pid: i32,
    /// The executable, when an entry needed it.
    pub exe: Option<Exe>,
}

/// The caller's executable, as the agent opened it through `/proc/PID/exe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exe {
    /// The file itself: what `path` selectors are compared with.
    pub file: FileKey,
    /// The name `/proc` gives it, resolved in the caller's mount namespace: for logs
    /// and the audit record only, never compared.
    pub shown_as: Option<PathBuf>,
    /// Lower-case hex SHA-256, when an entry needed it.
    pub sha256: Option<String>,
}

/// A file's identity: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey {
    /// `st_dev`
    pub dev: u64,
    /// `st_ino`
    pub ino: u64,
}

impl FileKey {
    /// The identity of an open file's metadata.
    pub fn of(meta: &Metadata) -> FileKey {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// The identity of the file `path` names in the agent's own mount namespace (a
    /// symbolic link names its target); `None` when there is no such file.
    pub fn at(path: &Path) -> Option<FileKey> {
        std::fs::metadata(path).ok().map(|m| FileKey::of(&m))
    }
}

/// Why a caller could not be attested (told to the caller as PermissionDenied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttestError {
    /// The process that connected has exited, or could not be bound at accept.
    Gone(String),
    /// The executable is bigger than `[agent] max_hash_bytes`.
    TooLarge(String),
    /// What `/proc` says does not fit the connection, or could not be read.
    Mismatch(String),
}

impl std::fmt::Display for AttestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttestError::Gone(s) | AttestError::TooLarge(s) | AttestError::Mismatch(s) => {
                f.write_str(s)
            }
        }
    }
}

/// Attests the caller bound as `peer`, reading from `/proc` only what `needs` asks for
/// and only what the connection's last attestation cannot vouch for (checked through
/// `events` where the kernel sends them, else by fingerprint).
pub async fn attest(
    peer: &Peer,
    needs: Needs,
    digests: &DigestCache,
    events: Option<&ProcEvents>,
) -> Result<Facts, AttestError> {
    if !needs.path && !needs.sha256 {
        peer.check_alive()?;
        return Ok(Facts {
            uid: peer.uid,
            gid: peer.gid,
            pid: known_pid(peer)?,
            exe: None,
        });
    }
    // Every way through `/proc` checks through the pidfd after its reads (so not
    // before them too); a caller whose process has exited is told so, whichever read
    // failed first.
    attest_from_proc(peer, needs, digests, events)
        .await
        .map_err(|e| peer.check_alive().err().unwrap_or(e))
}

/// The caller's process id (SO_PEERCRED), when the kernel could name it here.
fn known_pid(peer: &Peer) -> Result<i32, AttestError> {
    peer.pid
        .ok_or_else(|| AttestError::Gone("the caller's process id is unknown".into()))
}

/// [`attest`] for needs that read `/proc`.
async fn attest_from_proc(
    peer: &Peer,
    needs: Needs,
    digests: &DigestCache,
    events: Option<&ProcEvents>,
) -> Result<Facts, AttestError> {
    let pid = known_pid(peer)?;
    let last = peer.remembered.get();
    if let Some(last) = &last
        && let Some(facts) = last.reuse(needs, peer)?
    {
        return Ok(facts);
    }
    let needs = last.map_or(needs, |last| Needs {
        path: needs.path || last.needs.path,
        sha256: needs.sha256 || last.needs.sha256,
    });
    peer.remembered.set(None);
    // Boxed: the reads are the rare way through (a connection's first call, or a
    // change), and inline they would make every call's future, and the stream that
    // follows it, too big for the allocator's per-thread cache.
    let (facts, attested) = Box::pin(attest_exe(peer, pid, needs, digests, events)).await?;
    peer.remembered.set(attested);
    Ok(facts)
}

/// Reads the caller's ids and executable from `/proc/PID` (see the module header);
/// also returns them as an attestation later calls may reuse, when no process event
/// came during the reads (or the fingerprint taken before them shows what they found)
/// and the ids cannot change unseen.
async fn attest_exe(
    peer: &Peer,
    pid: i32,
    needs: Needs,
    digests: &DigestCache,
    events: Option<&ProcEvents>,
) -> Result<(Facts, Option<Attested>), AttestError> {
    // Taken before the reads; kept only if nothing changed during them. A digest is
    // checked by fingerprint (a write to the executable is no process event).
    let before = match events.filter(|_| !needs.sha256) {
        Some(events) => {
            let (watch, stamp) = events.watch(pid);
            Some(Check::Events(watch, stamp))
        }
        None => {
            let dir = ProcDir::open(pid).map_err(AttestError::Mismatch)?;
            dir.fingerprint()
                .ok()
                .map(|print| Check::Fingerprint(dir, print))
        }
    };
    let ids = proc::ids(pid).map_err(AttestError::Mismatch)?;
    ids.check(peer.uid, peer.gid)
        .map_err(AttestError::Mismatch)?;
    let file = File::open(format!("/proc/{pid}/exe"))
        .map_err(|e| AttestError::Mismatch(format!("cannot open /proc/{pid}/exe: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| AttestError::Mismatch(format!("cannot stat /proc/{pid}/exe: {e}")))?;
    let shown_as = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let name = shown_as
        .as_deref()
        .map_or_else(|| format!("/proc/{pid}/exe"), |p| p.display().to_string());
    let sha256 = if needs.sha256 {
        Some(digests.sha256(file, &meta, &name).await.map_err(|e| match e {
            DigestError::TooLarge { size, max } => AttestError::TooLarge(format!(
                "the caller's executable {name} is {size} bytes, over [agent] max_hash_bytes ({max}); it was not hashed"
            )),
            DigestError::Read(why) => {
                AttestError::Mismatch(format!("cannot hash the caller's executable {name}: {why}"))
            }
        })?)
    } else {
        None
    };
    // Still running: what was read above belonged to the process that connected.
    peer.check_alive()?;
    let facts = Facts {
        uid: peer.uid,
        gid: peer.gid,
        pid,
        exe: Some(Exe {
            file: FileKey::of(&meta),
            shown_as,
            sha256,
        }),
    };
    let read = Fingerprint {
        owner: (peer.uid, peer.gid),
        exe: FileVersion::of(&meta),
    };
    let attested = before
        .filter(|check| ids.all_alike() && check.holds_for(&read))
        .map(|check| Attested {
            check,
            facts: facts.clone(),
            needs,
        });
    Ok((facts, attested))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    /// Needs of an entry with a `path` selector.
    pub(crate) const PATH: Needs = Needs {
        path: true,
        sha256: false,
    };
    /// Needs of an entry with a `sha256` selector.
    pub(crate) const SHA256: Needs = Needs {
        path: false,
        sha256: true,
    };

    /// This process, bound as the peer of one end of a socket pair, with the uid and
    /// pid given (its own where `None`).
    fn bound(uid: Option<u32>, pid: Option<i32>) -> (Peer, UnixStream) {
        let (mine, theirs) = UnixStream::pair().unwrap();
        let meta = std::fs::metadata("/proc/self").unwrap();
        let uid = uid.unwrap_or(meta.uid());
        let pid = pid.unwrap_or(std::process::id() as i32);
        let peer = Peer::bind(mine.as_fd(), uid, meta.gid(), Some(pid), Duration::ZERO);
        (peer, theirs)
    }

    /// This process, bound as it is.
    pub(crate) fn me() -> (Peer, UnixStream) {
        bound(None, None)
    }

    #[tokio::test]
    async fn attests_this_process_by_file_and_digest() {
        let (peer, _keep) = me();
        let both = Needs {
            path: true,
            sha256: true,
        };
        let f = attest(&peer, both, &DigestCache::default(), None)
            .await
            .unwrap();
        let exe = f.exe.expect("executable read");
        let current = std::env::current_exe().unwrap();
        assert_eq!(Some(exe.file), FileKey::at(&current));
        let data = std::fs::read(&current).unwrap();
        let want = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &data));
        assert_eq!(exe.sha256.as_deref(), Some(want.as_str()));
    }

    #[tokio::test]
    async fn a_copy_of_the_executable_is_another_file() {
        let current = std::env::current_exe().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("copy");
        std::fs::copy(&current, &copy).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&current, &link).unwrap();
        let (peer, _keep) = me();
        let f = attest(&peer, PATH, &DigestCache::default(), None)
            .await
            .unwrap();
        let exe = f.exe.unwrap();
        assert_ne!(Some(exe.file), FileKey::at(&copy), "same name, other file");
        assert_eq!(
            Some(exe.file),
            FileKey::at(&link),
            "a link names its target"
        );
        assert_eq!(FileKey::at(&dir.path().join("missing")), None);
        assert_eq!(exe.sha256, None, "not hashed unless needed");
    }

    #[tokio::test]
    async fn uid_only_attestation_reads_nothing_from_proc() {
        // A pid that does not exist: /proc would fail, and is not read.
        let (peer, _keep) = bound(Some(7), Some(i32::MAX));
        let f = attest(&peer, Needs::default(), &DigestCache::default(), None)
            .await
            .unwrap();
        assert_eq!((f.uid, f.exe), (7, None));
        let e = attest(&peer, PATH, &DigestCache::default(), None)
            .await
            .unwrap_err();
        assert!(matches!(e, AttestError::Mismatch(_)), "{e}");
    }

    #[tokio::test]
    async fn a_process_running_as_another_uid_is_refused() {
        let uid = std::fs::metadata("/proc/self").unwrap().uid();
        let (peer, _keep) = bound(Some(uid + 1), None);
        let e = attest(&peer, PATH, &DigestCache::default(), None)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not as the uid"), "{e}");
    }

    #[tokio::test]
    async fn an_executable_over_the_limit_is_refused_by_name() {
        let (peer, _keep) = me();
        let e = attest(&peer, SHA256, &DigestCache::new(1024), None)
            .await
            .unwrap_err();
        assert!(matches!(e, AttestError::TooLarge(_)), "{e}");
        let current = std::env::current_exe().unwrap();
        assert!(
            e.to_string().contains(&current.display().to_string()),
            "{e}"
        );
    }
}

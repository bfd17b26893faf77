//! Caller attestation: who is on the other end of the socket, as the kernel says.
//!
//! A connection's caller is bound when it is accepted ([`Peer`]): the SO_PEERCRED uid,
//! gid and pid, and a pidfd for the process that connected. Every attestation first
//! checks through the pidfd that this process is still running; a connection whose
//! process has exited gets nothing, whoever holds its PID now.
//!
//! `/proc/PID` is read only when an entry the caller's uid can match needs it (a `path`
//! or `sha256` selector): the process must have started before the accept and still
//! run as the uid and gid it connected with; its executable is opened through
//! `/proc/PID/exe` (which names the real file whatever the caller's mount namespace),
//! identified by device and inode, and hashed through that same open file. The pidfd
//! is checked again afterwards, so everything read belonged to the process that
//! connected (a PID is not reused while its process runs).

mod digest;
mod peer;
mod proc;

use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub use digest::{DEFAULT_MAX_HASH_BYTES, DigestCache, DigestError};
pub use peer::{Peer, boot_ticks};

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

/// Attests the caller bound as `peer`, reading from `/proc` only what `needs` asks for.
pub async fn attest(
    peer: &Peer,
    needs: Needs,
    digests: &DigestCache,
) -> Result<Facts, AttestError> {
    peer.check_alive()?;
    let pid = peer
        .pid
        .ok_or_else(|| AttestError::Gone("the caller's process id is unknown".into()))?;
    let mut facts = Facts {
        uid: peer.uid,
        gid: peer.gid,
        pid,
        exe: None,
    };
    if !needs.path && !needs.sha256 {
        return Ok(facts);
    }
    let started = proc::start_ticks(pid).map_err(AttestError::Mismatch)?;
    proc::check_started_before(started, peer.accepted_ticks).map_err(AttestError::Mismatch)?;
    proc::ids(pid)
        .and_then(|ids| ids.check(peer.uid, peer.gid))
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
    facts.exe = Some(Exe {
        file: FileKey::of(&meta),
        shown_as,
        sha256,
    });
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    /// Needs of an entry with a `path` selector.
    const PATH: Needs = Needs {
        path: true,
        sha256: false,
    };
    /// Needs of an entry with a `sha256` selector.
    const SHA256: Needs = Needs {
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
    fn me() -> (Peer, UnixStream) {
        bound(None, None)
    }

    #[tokio::test]
    async fn attests_this_process_by_file_and_digest() {
        let (peer, _keep) = me();
        let both = Needs {
            path: true,
            sha256: true,
        };
        let f = attest(&peer, both, &DigestCache::default()).await.unwrap();
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
        let f = attest(&peer, PATH, &DigestCache::default()).await.unwrap();
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
        let f = attest(&peer, Needs::default(), &DigestCache::default())
            .await
            .unwrap();
        assert_eq!((f.uid, f.exe), (7, None));
        let e = attest(&peer, PATH, &DigestCache::default())
            .await
            .unwrap_err();
        assert!(matches!(e, AttestError::Mismatch(_)), "{e}");
    }

    #[tokio::test]
    async fn a_process_running_as_another_uid_is_refused() {
        let uid = std::fs::metadata("/proc/self").unwrap().uid();
        let (peer, _keep) = bound(Some(uid + 1), None);
        let e = attest(&peer, PATH, &DigestCache::default())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not as the uid"), "{e}");
    }

    #[tokio::test]
    async fn an_executable_over_the_limit_is_refused_by_name() {
        let (peer, _keep) = me();
        let e = attest(&peer, SHA256, &DigestCache::new(1024))
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

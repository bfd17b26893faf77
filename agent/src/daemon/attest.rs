//! Caller attestation: who is on the other end of the socket, as the kernel says.
//!
//! uid, gid and pid come from SO_PEERCRED (taken by tokio when the connection was
//! accepted); the executable's path and SHA-256 from /proc/PID/exe, read only when
//! some entry has a `path` or `sha256` selector. Whenever /proc is consulted, the
//! process start time from /proc/PID/stat is recorded first and checked again after
//! the reads and before an answer is sent ([`Facts::still_same_process`]), so a PID
//! reused by another process in between never receives the first one's credentials.
//! uid and gid alone need no such guard: the kernel recorded them for the connection.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::selectors::Needs;

/// What attestation established about one caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// User id (SO_PEERCRED).
    pub uid: u32,
    /// Group id (SO_PEERCRED).
    pub gid: u32,
    /// Process id (SO_PEERCRED).
    pub pid: i32,
    /// The process start time (clock ticks since boot) when /proc was consulted.
    pub start_time: Option<u64>,
    /// The executable's path, when needed and readable.
    pub path: Option<PathBuf>,
    /// Lower-case hex SHA-256 of the executable, when needed and readable.
    pub sha256: Option<String>,
}

/// Why a caller could not be attested (told to the caller as PermissionDenied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestError(pub String);

impl std::fmt::Display for AttestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Executable digests by file identity, so a binary is hashed once, not per call.
#[derive(Debug, Default, Clone)]
pub struct DigestCache {
    inner: Arc<Mutex<HashMap<FileId, String>>>,
}

/// Identifies one version of a file: device, inode, size, modification and change times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

const DIGEST_CACHE_LIMIT: usize = 4096;

/// Attests a caller from its SO_PEERCRED credentials, reading from /proc only what
/// `needs` asks for.
pub async fn attest(
    uid: u32,
    gid: u32,
    pid: Option<i32>,
    needs: Needs,
    cache: &DigestCache,
) -> Result<Facts, AttestError> {
    let pid = pid
        .filter(|p| *p > 0)
        .ok_or_else(|| AttestError("the caller's process id is unknown".into()))?;
    let mut facts = Facts {
        uid,
        gid,
        pid,
        start_time: None,
        path: None,
        sha256: None,
    };
    if !needs.path && !needs.sha256 {
        return Ok(facts);
    }
    facts.start_time =
        Some(start_time(pid).ok_or_else(|| AttestError(format!("process {pid} is gone")))?);
    if needs.path {
        facts.path = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    }
    if needs.sha256 {
        let cache = cache.clone();
        facts.sha256 = tokio::task::spawn_blocking(move || cache.exe_sha256(pid))
            .await
            .ok()
            .flatten();
    }
    if !facts.still_same_process() {
        return Err(AttestError(format!(
            "process {pid} exited while it was inspected"
        )));
    }
    Ok(facts)
}

impl Facts {
    /// Whether the process with this PID is still the one that was inspected (always
    /// true when /proc was not consulted).
    pub fn still_same_process(&self) -> bool {
        self.start_time
            .is_none_or(|t| start_time(self.pid) == Some(t))
    }
}

/// Field 22 of /proc/PID/stat: the process start time in clock ticks since boot.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may itself hold spaces and ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    // After the name come fields 3 (state) onwards; start time is field 22.
    after.split_whitespace().nth(22 - 3)?.parse().ok()
}

impl DigestCache {
    /// SHA-256 of the executable of `pid`, read through /proc/PID/exe (so it is the
    /// file the process runs even if the path was replaced or deleted).
    fn exe_sha256(&self, pid: i32) -> Option<String> {
        let mut file = File::open(format!("/proc/{pid}/exe")).ok()?;
        let m = file.metadata().ok()?;
        let id = FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        };
        if let Some(hit) = self.inner.lock().ok()?.get(&id) {
            return Some(hit.clone());
        }
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file.read(&mut buf).ok()?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
        }
        let hex = hex::encode(ctx.finish());
        let mut map = self.inner.lock().ok()?;
        if map.len() >= DIGEST_CACHE_LIMIT {
            map.clear();
        }
        map.insert(id, hex.clone());
        Some(hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat = "4242 (we ird) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        assert_eq!(parse_start_time(stat), Some(987_654));
    }

    #[tokio::test]
    async fn attests_this_process_with_path_and_digest() {
        let me = std::process::id() as i32;
        let needs = Needs {
            path: true,
            sha256: true,
        };
        let cache = DigestCache::default();
        let f = attest(0, 0, Some(me), needs, &cache).await.unwrap();
        assert_eq!(
            f.path.as_deref(),
            Some(std::env::current_exe().unwrap().as_path())
        );
        let data = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let want = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &data));
        assert_eq!(f.sha256.as_deref(), Some(want.as_str()));
        assert!(f.still_same_process());
    }

    #[tokio::test]
    async fn uid_only_attestation_reads_nothing_from_proc() {
        let f = attest(
            7,
            8,
            Some(i32::MAX),
            Needs::default(),
            &DigestCache::default(),
        )
        .await
        .unwrap();
        assert_eq!((f.uid, f.gid, f.start_time, f.path), (7, 8, None, None));
        let e = attest(
            7,
            8,
            Some(i32::MAX),
            Needs {
                path: true,
                sha256: false,
            },
            &DigestCache::default(),
        )
        .await;
        assert!(
            e.is_err(),
            "a process that does not exist is refused when /proc is needed"
        );
    }

    #[tokio::test]
    async fn a_stale_start_time_is_detected() {
        let me = std::process::id() as i32;
        let needs = Needs {
            path: true,
            sha256: false,
        };
        let mut f = attest(0, 0, Some(me), needs, &DigestCache::default())
            .await
            .unwrap();
        assert!(f.still_same_process());
        f.start_time = f.start_time.map(|t| t + 1);
        assert!(!f.still_same_process());
        assert!(
            attest(0, 0, None, Needs::default(), &DigestCache::default())
                .await
                .is_err()
        );
    }
}

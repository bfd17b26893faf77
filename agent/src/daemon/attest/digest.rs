//! SHA-256 of callers' executables, bounded: a file over `[agent] max_hash_bytes` is
//! refused unread, each version of a file is hashed once even when many callers ask at
//! the same moment (they wait on the one computation), and only a few hashes run at a
//! time, off the async runtime.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustix::fs::{Statx, StatxTimestamp, makedev};
use tokio::sync::{OnceCell, Semaphore};

/// The default `[agent] max_hash_bytes`: 256 MiB.
pub const DEFAULT_MAX_HASH_BYTES: u64 = 256 << 20;
/// Executables hashed at once; more callers wait their turn.
const HASHES_AT_ONCE: usize = 2;
/// File versions remembered; past this, versions not being hashed are forgotten.
const REMEMBERED: usize = 4096;

/// Executable digests by file version, shared by every call.
#[derive(Debug, Clone)]
pub struct DigestCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    digests: Mutex<HashMap<FileVersion, Arc<OnceCell<String>>>>,
    hashing: Semaphore,
    max_bytes: u64,
    /// Executables hashed so far (each logged with this count).
    computed: AtomicU64,
}

/// One version of a file: device, inode, size, modification and change times (the
/// change time moves on every write and cannot be set back by the file's owner).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct FileVersion {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileVersion {
    /// The version a file's metadata describes.
    pub(super) fn of(m: &Metadata) -> Self {
        FileVersion {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// The version a `statx` result describes.
    pub(super) fn of_statx(s: &Statx) -> Self {
        let time = |t: &StatxTimestamp| (t.tv_sec, i64::from(t.tv_nsec));
        FileVersion {
            dev: makedev(s.stx_dev_major, s.stx_dev_minor),
            ino: s.stx_ino,
            size: s.stx_size,
            mtime: time(&s.stx_mtime),
            ctime: time(&s.stx_ctime),
        }
    }
}

/// Why an executable has no digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestError {
    /// The file is bigger than `[agent] max_hash_bytes`; it was not read.
    TooLarge {
        /// The file's size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Reading it failed.
    Read(String),
}

impl Default for DigestCache {
    fn default() -> Self {
        DigestCache::new(DEFAULT_MAX_HASH_BYTES)
    }
}

impl DigestCache {
    /// A cache that refuses to hash files over `max_bytes`.
    pub fn new(max_bytes: u64) -> Self {
        DigestCache {
            inner: Arc::new(Inner {
                digests: Mutex::new(HashMap::new()),
                hashing: Semaphore::new(HASHES_AT_ONCE),
                max_bytes,
                computed: AtomicU64::new(0),
            }),
        }
    }

    /// Lower-case hex SHA-256 of `file`, whose metadata is `meta` (taken from the same
    /// open file). `name` only labels the log line of a hash that is computed.
    pub async fn sha256(
        &self,
        file: File,
        meta: &Metadata,
        name: &str,
    ) -> Result<String, DigestError> {
        let max = self.inner.max_bytes;
        if meta.size() > max {
            return Err(DigestError::TooLarge {
                size: meta.size(),
                max,
            });
        }
        let cell = self.cell(FileVersion::of(meta));
        let size = meta.size();
        let hex = cell
            .get_or_try_init(|| async move {
                let _turn = self
                    .inner
                    .hashing
                    .acquire()
                    .await
                    .map_err(|_| DigestError::Read("the agent is stopping".into()))?;
                let n = self.inner.computed.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::info!(
                    exe = name,
                    bytes = size,
                    hashed_so_far = n,
                    "hashing a caller's executable"
                );
                tokio::task::spawn_blocking(move || hash(file, max))
                    .await
                    .map_err(|e| DigestError::Read(e.to_string()))?
            })
            .await?;
        Ok(hex.clone())
    }

    /// The shared slot of one file version's digest.
    fn cell(&self, version: FileVersion) -> Arc<OnceCell<String>> {
        let mut map = self
            .inner
            .digests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= REMEMBERED && !map.contains_key(&version) {
            // Forget the finished ones; a slot someone waits on stays shared.
            map.retain(|_, cell| Arc::strong_count(cell) > 1);
        }
        map.entry(version).or_default().clone()
    }
}

/// SHA-256 of everything in `file`, reading at most `max` bytes (a file that grows
/// past its checked size is refused).
fn hash(mut file: File, max: u64) -> Result<String, DigestError> {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| DigestError::Read(e.to_string()))?;
        if n == 0 {
            return Ok(hex::encode(ctx.finish()));
        }
        total += n as u64;
        if total > max {
            return Err(DigestError::TooLarge { size: total, max });
        }
        ctx.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_of(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    async fn digest(
        cache: &DigestCache,
        f: &tempfile::NamedTempFile,
    ) -> Result<String, DigestError> {
        let file = File::open(f.path()).unwrap();
        let meta = file.metadata().unwrap();
        cache.sha256(file, &meta, "test").await
    }

    #[tokio::test]
    async fn a_file_is_hashed_and_one_over_the_limit_is_not_read() {
        let small = file_of(b"abc");
        let cache = DigestCache::new(3);
        assert_eq!(
            digest(&cache, &small).await.unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let big = file_of(b"abcd");
        assert_eq!(
            digest(&cache, &big).await,
            Err(DigestError::TooLarge { size: 4, max: 3 })
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_computation() {
        let f = file_of(&vec![7u8; 4 << 20]);
        let cache = DigestCache::default();
        let calls = (0..8).map(|_| digest(&cache, &f));
        let all = futures_util::future::join_all(calls).await;
        assert!(all.iter().all(|d| d == &all[0] && d.is_ok()));
        assert_eq!(
            cache.inner.computed.load(Ordering::Relaxed),
            1,
            "hashed once"
        );
    }

    #[tokio::test]
    async fn a_changed_file_is_hashed_again() {
        let mut f = file_of(b"one");
        let cache = DigestCache::default();
        let first = digest(&cache, &f).await.unwrap();
        f.write_all(b" two").unwrap();
        let second = digest(&cache, &f).await.unwrap();
        assert_ne!(first, second);
        assert_eq!(digest(&cache, &f).await.unwrap(), second);
        assert_eq!(cache.inner.computed.load(Ordering::Relaxed), 2);
    }
}

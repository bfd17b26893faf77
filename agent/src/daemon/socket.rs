//! The agent's Unix socket: created safely (a stale socket from an earlier run is
//! replaced; a live one, or any other kind of file, is refused), with the configured
//! mode and group, and removed at shutdown only if it is still ours.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use keyward_core::Error;
use tokio::net::UnixListener;

/// A bound socket and how to recognise it later.
#[derive(Debug)]
pub struct BoundSocket {
    /// The listener to serve on.
    pub listener: UnixListener,
    /// The socket's path.
    pub path: PathBuf,
    ident: (u64, u64),
}

/// Binds `path` with permission bits `mode` and, when given, group `group`.
pub fn bind(path: &Path, mode: u32, group: Option<u32>) -> Result<BoundSocket, Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .create(dir)
            .map_err(|e| {
                Error::io(
                    format!("cannot create the socket's directory {}", dir.display()),
                    e,
                )
            })?;
    }
    clear_stale(path)?;
    let listener = UnixListener::bind(path)
        .map_err(|e| Error::io(format!("cannot listen on {}", path.display()), e))?;
    apply_permissions(path, mode, group)?;
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?;
    Ok(BoundSocket {
        listener,
        path: path.to_path_buf(),
        ident: (meta.dev(), meta.ino()),
    })
}

/// Sets the socket's mode and group (also used when a reload changes them).
pub fn apply_permissions(path: &Path, mode: u32, group: Option<u32>) -> Result<(), Error> {
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|e| Error::io(format!("cannot give {} to group {gid}", path.display()), e))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("cannot set mode {mode:o} on {}", path.display()), e))
}

/// Removes a socket left by an earlier run; refuses a live socket or any other file.
fn clear_stale(path: &Path) -> Result<(), Error> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("cannot stat {}", path.display()), e)),
    };
    if !meta.file_type().is_socket() {
        return Err(Error::State(format!(
            "{} exists and is not a socket; the agent will not replace it (remove it or choose another [agent] socket)",
            path.display()
        )));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(Error::State(format!(
            "another process is already serving on {}",
            path.display()
        ))),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused || e.kind() == ErrorKind::NotFound => {
            tracing::info!(socket = %path.display(), "replacing the stale socket of an earlier run");
            std::fs::remove_file(path).map_err(|e| {
                Error::io(
                    format!("cannot remove the stale socket {}", path.display()),
                    e,
                )
            })
        }
        Err(e) => Err(Error::io(
            format!("cannot check the existing socket {}", path.display()),
            e,
        )),
    }
}

impl BoundSocket {
    /// Removes the socket file if it is still the one this agent created.
    pub fn remove(path: &Path, ident: (u64, u64)) {
        if let Ok(m) = std::fs::symlink_metadata(path)
            && (m.dev(), m.ino()) == ident
            && let Err(e) = std::fs::remove_file(path)
        {
            tracing::warn!(socket = %path.display(), error = %e, "cannot remove the socket");
        }
    }

    /// The socket file's device and inode.
    pub fn ident(&self) -> (u64, u64) {
        self.ident
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_sockets_are_replaced_and_other_files_refused() {
        let d = std::env::temp_dir().join(format!("keyward-socket-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("agent.sock");
        // A socket nobody listens on any more.
        drop(std::os::unix::net::UnixListener::bind(&p).unwrap());
        let s = bind(&p, 0o660, None).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o660
        );
        // A live socket is not taken over.
        let e = bind(&p, 0o660, None).unwrap_err().to_string();
        assert!(e.contains("already serving"), "{e}");
        BoundSocket::remove(&s.path, s.ident());
        assert!(!p.exists());
        // A regular file is never removed.
        std::fs::write(&p, b"data").unwrap();
        let e = bind(&p, 0o660, None).unwrap_err().to_string();
        assert!(e.contains("is not a socket"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"data");
        std::fs::remove_dir_all(&d).unwrap();
    }
}

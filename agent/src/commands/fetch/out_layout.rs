//! The layout `keyward fetch` keeps in its `--out` directory, so that a reader never
//! sees a key beside a certificate from another rotation:
//!
//! ```text
//! OUT/.svid-<serial>-<n>/{cert.pem, key.pem, bundle.pem, crl.pem}   one directory per SVID (0700)
//! OUT/current -> .svid-<serial>-<n>                          switched by one rename
//! OUT/cert.pem -> current/cert.pem                           (and key.pem, bundle.pem, crl.pem)
//! ```
//!
//! `crl.pem` holds the CRLs the agent serves (PEM `X509 CRL` blocks; empty when there
//! are none), so a new CRL is written as a new directory like a new SVID.
//!
//! A new SVID is written and fsynced in a new directory, then `current` is replaced by
//! renaming a temporary symlink over it: the one atomic step. A reader that resolves
//! `current` once and reads the files from that directory always gets a matching set.
//! The top-level names are links through `current` for readers of `OUT/cert.pem`
//! (each open resolves `current` anew). After the switch, older directories are
//! removed except the previous one, for readers still inside it.
//!
//! An `--out` written by an older keyward holds regular files at the top; they are
//! replaced by the links (each by one rename) only after `current` points at a
//! complete new set, so every name always opens a complete file.

use std::fs;
use std::path::{Path, PathBuf};

use keyward_core::Error;
use keyward_core::fsutil::{self, Replace};
use zeroize::Zeroizing;

/// The link to the newest SVID directory.
const CURRENT: &str = "current";
/// The start of every SVID directory's name.
const SVID_DIR_PREFIX: &str = ".svid-";
/// The certificate chain (leaf first).
const CERT: &str = "cert.pem";
/// The private key (PKCS#8, 0600).
const KEY: &str = "key.pem";
/// The trust bundle of the SVID's trust domain.
const BUNDLE: &str = "bundle.pem";
/// The CRLs the agent serves.
const CRL: &str = "crl.pem";
/// Every file of an SVID directory, each linked from the top of `--out`.
const FILES: [&str; 4] = [CERT, KEY, BUNDLE, CRL];
/// How many directories for one serial [`publish`] tries before giving up (old ones
/// are removed after every switch, so more than two means something else made them).
const MAX_SAME_SERIAL: u32 = 100;

/// One SVID's files, PEM-encoded.
pub struct SvidFiles {
    /// The certificate chain, leaf first.
    pub cert_pem: String,
    /// The private key; wiped when dropped.
    pub key_pem: Zeroizing<String>,
    /// The trust bundle.
    pub bundle_pem: String,
    /// The CRLs (possibly none: an empty file).
    pub crl_pem: String,
}

/// Refuses an `--out` this layout cannot take, before anything is fetched or
/// written: a path that is not a directory, a `current` that is not a symlink, a
/// top-level file name that is a directory.
pub fn check(out: &Path) -> Result<(), Error> {
    match fs::metadata(out) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::InvalidInput(format!(
                "--out {} is not a directory",
                out.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("cannot use --out {}", out.display()), e)),
    }
    let current = out.join(CURRENT);
    if let Ok(m) = fs::symlink_metadata(&current)
        && !m.file_type().is_symlink()
    {
        return Err(Error::InvalidInput(format!(
            "{} is not a symlink (keyward fetch keeps it pointing at the newest SVID); move it away",
            current.display()
        )));
    }
    for name in FILES {
        let path = out.join(name);
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            return Err(Error::InvalidInput(format!(
                "{} is a directory; keyward fetch writes a file there",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Writes `files` into a new directory of `out` named after `serial`, switches
/// `current` to it, links the top-level names (once) and removes directories older
/// than the previous one. Returns the new directory.
pub fn publish(out: &Path, serial: &str, files: &SvidFiles) -> Result<PathBuf, Error> {
    check(out)?;
    fsutil::create_private_dir(out)?;
    let (name, dir) = new_svid_dir(out, serial)?;
    let written = (|| {
        for (file, data, mode) in [
            (KEY, files.key_pem.as_bytes(), fsutil::SECRET_FILE_MODE),
            (CERT, files.cert_pem.as_bytes(), fsutil::PUBLIC_FILE_MODE),
            (
                BUNDLE,
                files.bundle_pem.as_bytes(),
                fsutil::PUBLIC_FILE_MODE,
            ),
            (CRL, files.crl_pem.as_bytes(), fsutil::PUBLIC_FILE_MODE),
        ] {
            fsutil::write_atomic(&dir.join(file), data, mode, Replace::Refuse)?;
        }
        Ok::<(), Error>(())
    })();
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&dir);
        return Err(e);
    }
    let current = out.join(CURRENT);
    let previous = fs::read_link(&current).ok();
    fsutil::replace_symlink(&current, Path::new(&name))?;
    for file in FILES {
        let link = out.join(file);
        let target = Path::new(CURRENT).join(file);
        if fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
            fsutil::replace_symlink(&link, &target)?;
        }
    }
    let mut keep = vec![PathBuf::from(&name)];
    keep.extend(previous);
    remove_old(out, &keep);
    Ok(dir)
}

/// Creates `out/.svid-<serial>-<n>` with the first free `n`: the same SVID may be
/// written again (after a reconnection, or with a new bundle), and at most two
/// directories are kept.
fn new_svid_dir(out: &Path, serial: &str) -> Result<(String, PathBuf), Error> {
    for n in 0..MAX_SAME_SERIAL {
        let name = format!("{SVID_DIR_PREFIX}{serial}-{n}");
        let dir = out.join(&name);
        if fsutil::create_new_private_dir(&dir)? {
            return Ok((name, dir));
        }
    }
    Err(Error::State(format!(
        "{} holds {MAX_SAME_SERIAL} directories {SVID_DIR_PREFIX}{serial}-N; remove them",
        out.display()
    )))
}

/// Removes SVID directories other than `keep`, and temporaries of writes a crash
/// interrupted. A failure is logged: the new files are already in place.
fn remove_old(out: &Path, keep: &[PathBuf]) {
    let Ok(entries) = fs::read_dir(out) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_svid_dir = name.to_string_lossy().starts_with(SVID_DIR_PREFIX)
            && entry.file_type().is_ok_and(|t| t.is_dir());
        if is_svid_dir
            && !keep.iter().any(|k| k.as_os_str() == name)
            && let Err(e) = fs::remove_dir_all(entry.path())
        {
            tracing::warn!(dir = %entry.path().display(), error = %e, "cannot remove an old SVID directory");
        }
    }
    for stale in fsutil::stale_temporaries(out) {
        let _ = fs::remove_file(stale);
    }
}

//! Helpers shared by the backup tests: passphrase files, `keyward backup` and
//! `restore` arguments, and archives opened (and re-sealed) with the library.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use keyward_core::backup::{self, ArchiveManifest, KdfParams, Payload};
use keyward_core::store::sha256_hex;

use crate::common::{keyward_ok, mode, unique};

/// The passphrase of every test archive.
pub const PASSPHRASE: &str = "correct horse battery staple";

/// A file in `dir` holding `pass` as its first line.
pub fn passphrase_file(dir: &Path, pass: &str) -> PathBuf {
    let p = dir.join(format!("pass-{}", unique("p")));
    std::fs::write(&p, format!("{pass}\n")).unwrap();
    p
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `keyward backup` of `state` into `dir/NAME`; returns the archive's path.
pub fn backup_to(state: &Path, dir: &Path, name: &str) -> PathBuf {
    let archive = dir.join(name);
    let pass = passphrase_file(dir, PASSPHRASE);
    keyward_ok(
        state,
        &[
            "backup",
            "--out",
            s(&archive),
            "--passphrase-file",
            s(&pass),
        ],
    );
    assert_eq!(mode(&archive), 0o600, "the archive is private");
    archive
}

/// `restore ARCHIVE --passphrase-file PASS`.
pub fn restore_args<'a>(archive: &'a str, pass: &'a str) -> [&'a str; 4] {
    ["restore", archive, "--passphrase-file", pass]
}

/// Decrypts an archive with the library, as the restore command does.
pub fn open_archive(archive: &Path) -> Payload {
    let bytes = std::fs::read(archive).unwrap();
    Payload::decode(backup::open(PASSPHRASE.as_bytes(), &bytes).unwrap()).unwrap()
}

/// `archive` opened, changed by `tamper` (the manifest, and the contents: one per file
/// entry, then one per key entry with its own), given matching sizes and hashes, and
/// sealed again with the same passphrase into `dir/NAME`: an archive only its author
/// could have made.
pub fn tampered(
    archive: &Path,
    dir: &Path,
    name: &str,
    tamper: impl FnOnce(&mut ArchiveManifest, &mut Vec<Vec<u8>>),
) -> PathBuf {
    let payload = open_archive(archive);
    let mut m = payload.manifest().clone();
    let mut contents: Vec<Vec<u8>> = (0..m.files.len())
        .map(|i| payload.file_contents(i).to_vec())
        .chain((0..m.keys.len()).filter_map(|i| payload.key_contents(i).map(<[u8]>::to_vec)))
        .collect();
    tamper(&mut m, &mut contents);
    let mut at = contents.iter();
    for f in &mut m.files {
        let c = at.next().unwrap();
        (f.size, f.sha256) = (c.len() as u64, sha256_hex(c));
    }
    for k in m.keys.iter_mut().filter(|k| k.has_own_contents()) {
        let c = at.next().unwrap();
        (k.size, k.sha256) = (Some(c.len() as u64), Some(sha256_hex(c)));
    }
    let contents: Vec<_> = contents.into_iter().map(Into::into).collect();
    let sealed = backup::seal(
        PASSPHRASE.as_bytes(),
        KdfParams::default(),
        Payload::encode(&m, &contents),
    )
    .unwrap();
    let out = dir.join(name);
    std::fs::write(&out, sealed).unwrap();
    out
}

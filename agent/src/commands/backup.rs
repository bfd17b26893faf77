//! `keyward backup` and `keyward restore`: the state directory and its software CA keys
//! in one passphrase-encrypted archive (format and crypto in `keyward_core::backup`).

use std::path::Path;

use keyward_core::Error;
use keyward_core::backup::{self, KdfParams, KeyOutcome, Payload};
use keyward_core::fsutil::{self, Replace};
use keyward_core::store::StateDir;
use zeroize::Zeroizing;

use super::read_input;
use crate::cli::{BackupArgs, RestoreArgs};

/// Writes the encrypted archive of `state` to `--out` (mode 0600, never over a file).
pub fn backup(state: &StateDir, args: &BackupArgs) -> Result<(), Error> {
    if args.out.symlink_metadata().is_ok() {
        return Err(out_exists(&args.out));
    }
    if !state.exists() {
        return Err(Error::State(format!(
            "no state directory at {}",
            state.path().display()
        )));
    }
    // Take the passphrase before the lock, so a person typing does not hold up writers.
    let passphrase = passphrase(args.passphrase_file.as_deref(), true)?;
    let lock = state.lock()?;
    let collected = backup::collect(state, &lock)?;
    drop(lock);
    let archive = backup::seal(&passphrase, KdfParams::default(), collected.payload)?;
    match fsutil::write_atomic(
        &args.out,
        &archive,
        fsutil::SECRET_FILE_MODE,
        Replace::Refuse,
    ) {
        Err(Error::AlreadyExists(_)) => return Err(out_exists(&args.out)),
        r => r?,
    }
    for s in &collected.skipped {
        eprintln!("warning: not in the backup: {s}");
    }
    let m = &collected.manifest;
    println!(
        "backup of {} written to {} ({} files, {} bytes)",
        m.source_state_dir.display(),
        args.out.display(),
        m.files.len(),
        archive.len()
    );
    for k in &m.keys {
        let what = match (k.included, k.state_file.is_some()) {
            (false, _) => "not included: it stays in its backend",
            (true, true) => "included (inside the state directory)",
            (true, false) => "included",
        };
        println!("{} key {}: {what}", k.role, k.uri);
    }
    Ok(())
}

/// Rebuilds the state directory from an archive, checking everything before writing.
pub fn restore(state: &StateDir, args: &RestoreArgs) -> Result<(), Error> {
    backup::check_restore_target(state.path())?;
    let archive = read_input(&args.archive)?;
    backup::check_header(&archive).map_err(|e| in_file(&args.archive, e))?;
    let passphrase = passphrase(args.passphrase_file.as_deref(), false)?;
    let plaintext = backup::open(&passphrase, &archive).map_err(|e| in_file(&args.archive, e))?;
    let payload = Payload::decode(plaintext).map_err(|e| in_file(&args.archive, e))?;
    let plan = backup::plan_restore(&payload, state.path())?;
    let outside = plan.outside_state();
    for (role, path) in &outside {
        eprintln!(
            "restore writes the {role} CA key outside the state directory: {}",
            path.display()
        );
    }
    if !outside.is_empty() && !args.allow_outside_state {
        return Err(Error::State(format!(
            "the archive restores {} key file(s) outside the state directory (listed above); \
             check those paths, then run restore again with --allow-outside-state",
            outside.len()
        )));
    }
    let report = plan.apply()?;
    println!(
        "restored {} files into {} (backup of {} taken {})",
        report.files,
        state.path().display(),
        payload.manifest().source_state_dir.display(),
        super::rfc3339(payload.manifest().created_at)
    );
    for (role, uri, outcome) in &report.keys {
        let what = match outcome {
            KeyOutcome::Written(p) => format!("restored to {}", p.display()),
            KeyOutcome::AlreadyPresent(p) => format!("already at {} (identical)", p.display()),
            KeyOutcome::InStateDir(new) => format!("restored in the state directory as {new}"),
            KeyOutcome::NotIncluded => "not in the archive: it must exist in its backend".into(),
        };
        println!("{role} key {uri}: {what}");
    }
    Ok(())
}

fn out_exists(out: &Path) -> Error {
    Error::State(format!(
        "{} already exists; backup never overwrites a file",
        out.display()
    ))
}

/// Names the archive in an error about its contents.
fn in_file(archive: &Path, e: Error) -> Error {
    Error::InvalidInput(format!("{}: {e}", archive.display()))
}

/// The passphrase: the first line of `file`, or typed on the terminal without echo
/// (twice when `confirm`). An empty passphrase is refused.
fn passphrase(file: Option<&Path>, confirm: bool) -> Result<Zeroizing<Vec<u8>>, Error> {
    let pass = match file {
        Some(path) => {
            let data = Zeroizing::new(read_input(path)?);
            let line = data.split(|&b| b == b'\n').next().unwrap_or_default();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "the passphrase in {} is empty; an empty passphrase is refused",
                    path.display()
                )));
            }
            Zeroizing::new(line.to_vec())
        }
        None => {
            let first = prompt("Backup passphrase: ")?;
            if first.is_empty() {
                return Err(Error::InvalidInput("an empty passphrase is refused".into()));
            }
            if confirm && prompt("Repeat the passphrase: ")? != first {
                return Err(Error::InvalidInput("the passphrases do not match".into()));
            }
            first
        }
    };
    Ok(pass)
}

fn prompt(text: &str) -> Result<Zeroizing<Vec<u8>>, Error> {
    let line = Zeroizing::new(rpassword::prompt_password(text).map_err(|e| {
        Error::io(
            "cannot read a passphrase from the terminal (use --passphrase-file)",
            e,
        )
    })?);
    Ok(Zeroizing::new(line.as_bytes().to_vec()))
}

//! What decides who gets an identity: a workload's selectors, and `[agent]
//! max_hash_bytes`, the bound on executables hashed for `sha256` selectors.
//!
//! An entry that names a program (`path`, `sha256`) must also name a user (`uid`,
//! `gid`): the kernel identifies the process that connected, and a process may exec
//! the named program after connecting while another process of the same user holds the
//! connection, so a program alone is never proof (README, "Attestation"). An entry
//! that means it sets `allow_any_user = true`.

use std::path::{Path, PathBuf};

use keyward_core::Error;
use toml::Spanned;

use super::super::raw::{RawAgent, RawSelectors};
use super::Src;
use crate::daemon::attest::DEFAULT_MAX_HASH_BYTES;
use crate::daemon::selectors::Selectors;

/// The bounds of `[agent] max_hash_bytes`: 1 MiB to 64 GiB.
const HASH_BYTES_RANGE: std::ops::RangeInclusive<i64> = (1 << 20)..=(64 << 30);

/// `[agent] max_hash_bytes` (default 256 MiB).
pub(super) fn max_hash_bytes(src: &Src, a: &RawAgent) -> Result<u64, Error> {
    let Some(v) = &a.max_hash_bytes else {
        return Ok(DEFAULT_MAX_HASH_BYTES);
    };
    let n = *v.get_ref();
    if !HASH_BYTES_RANGE.contains(&n) {
        return Err(src.err(
            &v.span(),
            format!(
                "max_hash_bytes {n} is outside {} to {}",
                HASH_BYTES_RANGE.start(),
                HASH_BYTES_RANGE.end()
            ),
        ));
    }
    Ok(n.unsigned_abs())
}

/// A workload's `selectors`.
pub(super) fn selectors(src: &Src, s: &Spanned<RawSelectors>) -> Result<Selectors, Error> {
    let r = s.get_ref();
    let id = |v: &Option<Spanned<i64>>, what: &str| -> Result<Option<u32>, Error> {
        v.as_ref()
            .map(|n| {
                u32::try_from(*n.get_ref()).map_err(|_| {
                    src.err(&n.span(), format!("{what} {} is out of range", n.get_ref()))
                })
            })
            .transpose()
    };
    let path = match &r.path {
        None => None,
        Some(p) if Path::new(p.get_ref()).is_absolute() => Some(PathBuf::from(p.get_ref())),
        Some(p) => {
            return Err(src.err(
                &p.span(),
                format!("path selector '{}' must be an absolute path", p.get_ref()),
            ));
        }
    };
    let sha256 = match &r.sha256 {
        None => None,
        Some(h) => {
            let v = h.get_ref().to_ascii_lowercase();
            if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(src.err(&h.span(), "sha256 selector must be 64 hexadecimal digits"));
            }
            Some(v)
        }
    };
    let sel = Selectors {
        uid: id(&r.uid, "uid")?,
        gid: id(&r.gid, "gid")?,
        path,
        sha256,
        allow_any_user: r.allow_any_user.as_ref().is_some_and(|a| *a.get_ref()),
    };
    if sel.is_empty() {
        return Err(src.err(
            &s.span(),
            "a workload needs at least one selector (uid, gid, path or sha256)",
        ));
    }
    if sel.names_a_program() && !sel.names_a_user() && !sel.allow_any_user {
        return Err(src.err(
            &s.span(),
            "a path or sha256 selector needs a uid or gid too (any user can run that program, or exec it after connecting); set allow_any_user = true to mean it",
        ));
    }
    if let Some(a) = &r.allow_any_user
        && sel.allow_any_user
        && (!sel.names_a_program() || sel.names_a_user())
    {
        return Err(src.err(
            &a.span(),
            "allow_any_user = true is only for an entry with path or sha256 and no uid or gid",
        ));
    }
    Ok(sel)
}

//! Entry points of the fuzz targets in `fuzz/` (cargo-fuzz), kept here so the
//! regression test (`tests/fuzz_regressions.rs`) runs saved inputs through exactly the
//! code the fuzzer ran. Each function takes arbitrary bytes, must never panic on them,
//! and panics only when an invariant of the code under test is broken.
//!
//! Not part of keyward's API: hidden from the docs, used by `fuzz/` and tests only.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::uri::KeyUri;
use crate::{check, issuance};

/// The key URI parser (`KeyUri::parse`). A URI that parses must print (`Display`) as a
/// canonical form that parses back to the same URI, and neither `Display` nor `Debug`
/// may show a PIN given with `pin-value`.
pub fn key_uri(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = KeyUri::parse(text) else {
        return;
    };
    let canonical = uri.to_string();
    let again = KeyUri::parse(&canonical)
        .unwrap_or_else(|e| panic!("canonical form {canonical:?} of {text:?} does not parse: {e}"));
    let mut expected = uri.clone();
    if let KeyUri::Pkcs11(p) = &mut expected {
        p.pin_value = None; // never printed, so never read back
    }
    assert_eq!(
        again, expected,
        "{text:?} and its canonical form {canonical:?} name different keys"
    );
    if let KeyUri::Pkcs11(p) = &uri
        && p.pin_value.is_some()
    {
        // A `pin-value=` attribute would start one of the `;`/`?`/`&`-separated parts
        // (an encoded value cannot: its `=` is percent-encoded).
        let shows_pin = |s: &str| {
            s.split([';', '?', '&'])
                .any(|a| a.starts_with("pin-value="))
        };
        assert!(!shows_pin(&canonical), "{canonical:?} shows the PIN");
        assert!(
            !shows_pin(&format!("{uri:?}")),
            "Debug of {text:?} shows the PIN"
        );
    }
}

/// CSR handling as `sign-csr` does it before signing: decode (PEM or DER), check the
/// request's own signature and names, then assemble the SAN list the certificate gets.
pub fn csr(data: &[u8]) {
    let Ok(req) = issuance::csr::read_csr(data) else {
        return;
    };
    let names = req.dns.len() + req.ips.len() + req.uris.len();
    assert!(
        names > 0 || req.common_name.is_some(),
        "a CSR without names was accepted"
    );
    let cn = req.common_name.as_deref();
    if let Ok(sans) = issuance::build_sans(cn, &req.dns, &req.ips, &req.uris) {
        assert!(!sans.is_empty(), "a certificate would have no SAN");
        let ips = sans
            .iter()
            .filter(|s| matches!(s, rcgen::SanType::IpAddress(_)))
            .count();
        let distinct: std::collections::HashSet<&IpAddr> = req.ips.iter().collect();
        assert_eq!(ips, distinct.len(), "IP SANs lost or duplicated");
    }
}

/// The certificate checks `keyward verify` runs on a PEM (or DER) file: split it into
/// certificates, summarize each, and verify the first up to the last one as the trust
/// anchor, with the certificates between as the chain. The time is the leaf's notBefore
/// plus one second: deterministic, and inside the validity of well-formed inputs, so
/// the checks after the time check are reached.
pub fn verify(data: &[u8]) {
    let Ok(ders) = check::pem_to_ders(data) else {
        return;
    };
    assert!(!ders.is_empty(), "pem_to_ders returned no certificate");
    for der in &ders {
        let summary = check::summarize(der)
            .unwrap_or_else(|e| panic!("pem_to_ders kept a certificate that does not parse: {e}"));
        let _ = check::alert_level(
            summary.not_after,
            summary.not_before,
            &check::AlertThresholds::default(),
        );
        let _ = check::days_left(summary.not_after, summary.not_before);
    }
    let now = check::summarize(&ders[0])
        .expect("checked above")
        .not_before
        .saturating_add(time::Duration::SECOND);
    let (leaf, rest) = ders.split_first().expect("not empty");
    let (trust, chain) = match rest.split_last() {
        Some((anchor, chain)) => (vec![anchor.clone()], chain),
        None => (vec![leaf.clone()], &[][..]),
    };
    if let Ok(path) = check::verify_chain(leaf, chain, &trust, now) {
        assert!(!path.is_empty(), "a verified path is empty");
    }
}

/// Runs `entry` on every input saved for fuzz target `target` under `fuzz_dir` (its seed
/// corpus in `corpus/TARGET/` and its crashes in `regressions/TARGET/`), panicking with
/// the name of the first input that fails. The regression tests of every crate with fuzz
/// targets call it.
pub fn replay(fuzz_dir: &Path, target: &str, entry: fn(&[u8])) {
    let inputs = saved_inputs(fuzz_dir, target);
    assert!(
        !inputs.is_empty(),
        "no saved inputs for fuzz target {target} (fuzz/corpus/{target}/ is empty?)"
    );
    for (path, data) in inputs {
        if std::panic::catch_unwind(|| entry(&data)).is_err() {
            panic!("fuzz input {} fails target {target}", path.display());
        }
    }
}

/// The inputs saved for `target`, in path order.
fn saved_inputs(fuzz_dir: &Path, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("read a fuzz input directory").path();
            let data = std::fs::read(&path).expect("read a fuzz input");
            out.push((path, data));
        }
    }
    out.sort();
    out
}

//! `keyward export --format k8s-secret`: the most recent certificate issued with
//! `keyward issue --name NAME`, as a `kubernetes.io/tls` Secret (YAML on stdout).
//!
//! `tls.crt` is `chain.pem` (the certificate, then any intermediates, as ingress
//! controllers expect), `tls.key` is `key.pem`, `ca.crt` is `ca.pem` (the trust
//! bundle). The key is checked to belong to the certificate before anything is printed.

use std::path::Path;

use base64::Engine;
use keyward_core::audit::Event;
use keyward_core::store::{IssuedKind, IssuedRecord, StateDir};
use keyward_core::{Error, KeySigner, KeyUri};
use zeroize::Zeroizing;

use super::audit;
use crate::cli::ExportArgs;

/// The formats `--format` accepts.
const FORMATS: &str = "k8s-secret";
/// The longest Secret name Kubernetes accepts (a DNS-1123 subdomain).
const MAX_NAME: usize = 253;
/// The longest namespace (a DNS-1123 label).
const MAX_NAMESPACE: usize = 63;

/// Prints the Secret for `args.name`'s most recent certificate.
pub fn export(state: &StateDir, args: &ExportArgs) -> Result<(), Error> {
    if args.format != "k8s-secret" {
        return Err(Error::InvalidInput(format!(
            "unknown export format '{}' (expected {FORMATS})",
            args.format
        )));
    }
    let secret_name = match &args.secret_name {
        Some(n) => checked_name(n, MAX_NAME, true, "--secret-name")?,
        None => dns1123_name(&args.name)?,
    };
    let namespace = match &args.namespace {
        Some(ns) => Some(checked_name(ns, MAX_NAMESPACE, false, "--namespace")?),
        None => None,
    };
    let rec = latest(state, &args.name)?;
    let out = rec.out.as_deref().ok_or_else(|| {
        Error::State(format!(
            "certificate '{}' (serial {}) was issued without an output directory",
            args.name, rec.serial_hex
        ))
    })?;
    let chain = read(out, "chain.pem", &rec)?;
    let bundle = read(out, "ca.pem", &rec)?;
    let key = Zeroizing::new(read(out, "key.pem", &rec)?);
    check_pair(out, &chain, &rec)?;
    audit::check(state)?;
    audit::record(
        state,
        Event::new("credentials_exported")
            .with("name", &args.name)
            .with("serial", &rec.serial_hex)
            .with("format", &args.format)
            .with("secret_name", &secret_name)
            .with("namespace", &namespace),
    )?;
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let key_b64 = Zeroizing::new(b64(&key));
    let mut meta = format!("  name: {}\n", quoted(&secret_name));
    if let Some(ns) = &namespace {
        meta.push_str(&format!("  namespace: {}\n", quoted(ns)));
    }
    let yaml = Zeroizing::new(format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n{meta}  annotations:\n    keyward.io/serial: {}\n    keyward.io/not-after: {}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n  ca.crt: {}\n",
        quoted(&rec.serial_hex),
        quoted(&super::rfc3339(rec.not_after)),
        b64(&chain),
        key_b64.as_str(),
        b64(&bundle),
    ));
    print!("{}", yaml.as_str());
    Ok(())
}

/// The most recent service certificate issued with `--name name`.
fn latest(state: &StateDir, name: &str) -> Result<IssuedRecord, Error> {
    let all = state.inventory()?;
    if let Some(r) = all
        .iter()
        .rev()
        .find(|r| r.kind == IssuedKind::Service && r.name == name)
    {
        return Ok(r.clone());
    }
    let mut names: Vec<&str> = all
        .iter()
        .filter(|r| r.kind == IssuedKind::Service)
        .map(|r| r.name.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    let known = if names.is_empty() {
        "none issued yet".to_string()
    } else {
        format!("issued names: {}", names.join(", "))
    };
    Err(Error::InvalidInput(format!(
        "no certificate issued with --name '{name}' in {} ({known})",
        state.path().display()
    )))
}

fn read(out: &Path, file: &str, rec: &IssuedRecord) -> Result<Vec<u8>, Error> {
    let path = out.join(file);
    std::fs::read(&path).map_err(|e| {
        Error::io(
            format!(
                "cannot read {} of certificate '{}' (serial {})",
                path.display(),
                rec.name,
                rec.serial_hex
            ),
            e,
        )
    })
}

/// Checks that the chain starts with the inventory's certificate and that `key.pem`
/// is its key, so a replaced or mismatched file is never exported.
fn check_pair(out: &Path, chain_pem: &[u8], rec: &IssuedRecord) -> Result<(), Error> {
    let leaf = keyward_core::check::pem_to_ders(chain_pem)?
        .into_iter()
        .next()
        .ok_or_else(|| {
            Error::State(format!(
                "{} holds no certificate",
                out.join("chain.pem").display()
            ))
        })?;
    let summary = keyward_core::check::summarize(&leaf)?;
    if !summary.serial_hex.eq_ignore_ascii_case(&rec.serial_hex) {
        return Err(Error::State(format!(
            "{} is not certificate '{}' (serial {}): it was replaced",
            out.join("chain.pem").display(),
            rec.name,
            rec.serial_hex
        )));
    }
    let key_path = out.join("key.pem");
    let key = keyward_software::read_key_file(&key_path, KeyUri::file(&key_path)?)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf)
        .map_err(|e| Error::InvalidInput(format!("malformed certificate: {e}")))?;
    if key.public_key_spki_der() != cert.public_key().raw {
        return Err(Error::State(format!(
            "{} is not the key of certificate '{}' (serial {})",
            key_path.display(),
            rec.name,
            rec.serial_hex
        )));
    }
    Ok(())
}

/// NAME as a DNS-1123 subdomain: lower case, runs of other characters as `-`, no
/// leading or trailing `-`/`.`, at most 253 characters.
fn dns1123_name(name: &str) -> Result<String, Error> {
    let mut s = String::with_capacity(name.len());
    for c in name.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' {
            c
        } else {
            '-'
        };
        if !(c == '-' && s.ends_with('-')) {
            s.push(c);
        }
    }
    let mut s = s.trim_matches(|c| c == '-' || c == '.').to_string();
    s.truncate(MAX_NAME);
    let s = s.trim_end_matches(['-', '.']).to_string();
    if s.is_empty() {
        return Err(Error::InvalidInput(format!(
            "cannot make a Kubernetes name of '{name}'; give one with --secret-name"
        )));
    }
    Ok(s)
}

/// A name given on the command line, checked (not changed): DNS-1123 subdomain when
/// `dots`, else label.
fn checked_name(name: &str, max: usize, dots: bool, flag: &str) -> Result<String, Error> {
    let ok_char =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.');
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.len() > max
        || !name.chars().all(ok_char)
        || !ends_ok(name.chars().next())
        || !ends_ok(name.chars().last())
    {
        return Err(Error::InvalidInput(format!(
            "{flag} '{name}' is not a valid Kubernetes name (lower-case letters, digits and '-'{}, starting and ending with a letter or digit, at most {max} characters)",
            if dots { " or '.'" } else { "" }
        )));
    }
    Ok(name.to_string())
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML), so names such as
/// `true` or `123` stay strings.
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_dns_1123() {
        assert_eq!(dns1123_name("API_Server v2").unwrap(), "api-server-v2");
        assert_eq!(dns1123_name("--web.internal.").unwrap(), "web.internal");
        assert!(dns1123_name("__").is_err());
        assert_eq!(dns1123_name(&"a".repeat(300)).unwrap().len(), 253);
        assert!(checked_name("prod", 63, false, "--namespace").is_ok());
        assert!(checked_name("Prod", 63, false, "--namespace").is_err());
        assert!(checked_name("a.b", 63, false, "--namespace").is_err());
        assert!(checked_name("a.b", 253, true, "--secret-name").is_ok());
        assert_eq!(quoted("123"), "\"123\"");
    }
}

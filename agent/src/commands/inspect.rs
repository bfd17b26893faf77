//! `keyward verify` and `keyward status`: read-only views of certificates and the CA.
//! `verify` refuses a chain holding a certificate that a CRL lists: the state
//! directory's own CRL, the upstream authority's CRL the agent keeps, and any `--crl`.

use keyward_core::Error;
use keyward_core::check::{self, AlertThresholds, CertSummary, alert_level};
use keyward_core::issuance::{CrlContents, RevokedCert};
use keyward_core::store::StateDir;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use super::{days_left, read_input, rfc3339};
use crate::cli::{StatusArgs, VerifyArgs};
use crate::duration::parse_duration;

/// Verifies a certificate file against the CA (or `--ca`), printing the path on success.
pub fn verify(state: &StateDir, args: &VerifyArgs) -> Result<(), Error> {
    let certs = check::pem_to_ders(&read_input(&args.cert)?)
        .map_err(|e| Error::InvalidInput(format!("{}: {e}", args.cert.display())))?;
    let (leaf, rest) = certs.split_first().ok_or_else(|| {
        Error::InvalidInput(format!("{} holds no certificate", args.cert.display()))
    })?;
    let mut intermediates = rest.to_vec();
    let trust = match &args.ca {
        Some(path) => check::pem_to_ders(&read_input(path)?)
            .map_err(|e| Error::InvalidInput(format!("--ca {}: {e}", path.display())))?,
        None => {
            let ca = state.require_ca()?;
            if let Some((inter, _)) = ca.intermediate {
                intermediates.push(inter);
            }
            intermediates.extend(ca.upstream_intermediates);
            ca.roots
        }
    };
    let now = OffsetDateTime::now_utc();
    let path = check::verify_chain(leaf, &intermediates, &trust, now)?;
    let ders = path_ders(&path, leaf, &intermediates, &trust)?;
    let leaf = &path[0];
    if let Some(issuer) = path.get(1) {
        check_not_revoked(state, leaf, issuer, now)?;
    }
    check_chain_crls(&path, &ders, &chain_crls(state, &args.crls)?, now)?;
    let level = alert_level(leaf.not_after, now, &AlertThresholds::default());
    println!(
        "OK: {} ({} days left, {level})",
        leaf.subject,
        days_left(leaf.not_after)
    );
    for (i, c) in path.iter().enumerate().skip(1) {
        println!("{}issued by {}", "  ".repeat(i), c.subject);
    }
    Ok(())
}

/// Fails when `leaf` was issued by the state directory's issuing CA and that CA's CRL
/// (STATE/crl.der) lists it, does not verify under the CA, or is past its nextUpdate.
/// Certificates from other CAs are not covered by that CRL and pass.
fn check_not_revoked(
    state: &StateDir,
    leaf: &CertSummary,
    issuer: &CertSummary,
    now: OffsetDateTime,
) -> Result<(), Error> {
    let crl_path = state.crl_der_path();
    if !crl_path.exists() {
        return Ok(());
    }
    let Some(issuing) = state.ca()?.and_then(|ca| ca.issuing().ok()) else {
        return Ok(());
    };
    if check::summarize(&issuing.cert_der)?.sha256_fingerprint != issuer.sha256_fingerprint {
        return Ok(());
    }
    let crl = check::check_crl(
        &read_input(&crl_path)?,
        &issuing.cert_der,
        &crl_path.display().to_string(),
        now,
    )?;
    match check::find_revoked(&crl, &leaf.serial_hex) {
        Some(r) => Err(revoked(leaf, "", r, &crl)),
        None => Ok(()),
    }
}

/// The error for `cert` (`where_` says where it is in the chain) listed as `r` in `crl`.
fn revoked(cert: &CertSummary, where_: &str, r: &RevokedCert, crl: &CrlContents) -> Error {
    Error::Verification(format!(
        "certificate {} ('{}'){where_} is revoked: reason {}, revoked at {} (CRL number {})",
        r.serial_hex,
        cert.subject,
        r.reason,
        rfc3339(r.revoked_at),
        crl.crl_number
    ))
}

/// The DER of each certificate of `path`, found among the certificates it was built from.
fn path_ders(
    path: &[CertSummary],
    leaf: &[u8],
    intermediates: &[Vec<u8>],
    trust: &[Vec<u8>],
) -> Result<Vec<Vec<u8>>, Error> {
    let mut known = Vec::new();
    for der in std::iter::once(leaf).chain(intermediates.iter().chain(trust).map(Vec::as_slice)) {
        known.push((check::summarize(der)?.sha256_fingerprint, der));
    }
    path.iter()
        .map(|c| {
            known
                .iter()
                .find(|(fp, _)| *fp == c.sha256_fingerprint)
                .map(|(_, der)| der.to_vec())
                .ok_or_else(|| {
                    Error::State(format!(
                        "'{}' is on the path but not in the input",
                        c.subject
                    ))
                })
        })
        .collect()
}

/// A CRL besides the state directory's own: the upstream authority's, or a `--crl`.
struct ChainCrl {
    /// Where it came from, for messages.
    label: String,
    der: Vec<u8>,
    /// Given with `--crl`: one that names a CA of the chain must verify under it.
    given: bool,
}

/// The upstream CRL the agent keeps (when there is one) and every CRL in `files`.
fn chain_crls(state: &StateDir, files: &[std::path::PathBuf]) -> Result<Vec<ChainCrl>, Error> {
    let mut out = Vec::new();
    let upstream = state.upstream_crl_der_path();
    match std::fs::read(&upstream) {
        Ok(der) => out.push(ChainCrl {
            label: upstream.display().to_string(),
            der,
            given: false,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("cannot read {}", upstream.display()), e)),
    }
    for file in files {
        let data = read_input(file)?;
        let label = format!("--crl {}", file.display());
        let ders = if data.starts_with(b"-----BEGIN") {
            let blocks =
                pem::parse_many(&data).map_err(|e| Error::InvalidInput(format!("{label}: {e}")))?;
            let crls: Vec<Vec<u8>> = blocks
                .into_iter()
                .filter(|b| b.tag() == "X509 CRL")
                .map(pem::Pem::into_contents)
                .collect();
            if crls.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "{label} holds no X509 CRL block"
                )));
            }
            crls
        } else {
            vec![data]
        };
        out.extend(ders.into_iter().map(|der| ChainCrl {
            label: label.clone(),
            der,
            given: true,
        }));
    }
    Ok(out)
}

/// Fails when a CRL of `crls` issued by a CA of `path` (`ders`, leaf first) lists the
/// certificate that CA issued on the path. A CRL applies where it verifies under the
/// key of the CA it names; the kept upstream CRL of a re-keyed CA with the same name is
/// passed over, a `--crl` that does not verify is an error. A stale CRL is used, with a
/// warning.
fn check_chain_crls(
    path: &[CertSummary],
    ders: &[Vec<u8>],
    crls: &[ChainCrl],
    now: OffsetDateTime,
) -> Result<(), Error> {
    for crl in crls {
        let named = CertificateRevocationList::from_der(&crl.der)
            .map(|(_, c)| c.issuer().as_raw().to_vec())
            .map_err(|e| Error::InvalidInput(format!("{}: malformed CRL: {e}", crl.label)))?;
        let mut covers = false;
        for (i, cert) in path.iter().enumerate().take(path.len() - 1) {
            let issuer = &ders[i + 1];
            let subject = X509Certificate::from_der(issuer)
                .map(|(_, c)| c.subject().as_raw().to_vec())
                .map_err(|e| Error::InvalidInput(format!("malformed certificate: {e}")))?;
            if subject != named {
                continue;
            }
            let contents = match check::read_crl(&crl.der, issuer, &crl.label) {
                Ok(c) => c,
                Err(e) if crl.given => return Err(e),
                Err(_) => continue,
            };
            covers = true;
            if contents.next_update < now {
                eprintln!(
                    "warning: the CRL {} is past its nextUpdate ({}); used anyway",
                    crl.label,
                    rfc3339(contents.next_update)
                );
            }
            if let Some(r) = check::find_revoked(&contents, &cert.serial_hex) {
                let where_ = if i == 0 { "" } else { " in the chain" };
                return Err(revoked(cert, where_, r, &contents));
            }
        }
        if crl.given && !covers {
            eprintln!(
                "note: {} is not from a CA of this chain; it was not used",
                crl.label
            );
        }
    }
    Ok(())
}

/// Lists the CA and every issued certificate with days left and alert level, under the
/// thresholds of `--warning`/`--error`.
pub fn status(state: &StateDir, args: &StatusArgs) -> Result<(), Error> {
    let t = AlertThresholds::from_durations(
        parse_duration(&args.warning)
            .map_err(|e| Error::InvalidInput(format!("--warning: {e}")))?,
        parse_duration(&args.error).map_err(|e| Error::InvalidInput(format!("--error: {e}")))?,
    )?;
    let report = check::status_report(state, OffsetDateTime::now_utc(), &t)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
        return Ok(());
    }
    println!("state directory: {}", report.state_dir);
    println!(
        "{:<13} {:<24} {:<34} {:<22} {:>6}  LEVEL",
        "ROLE", "NAME", "SERIAL", "NOT AFTER", "DAYS"
    );
    for c in &report.certificates {
        let name = if c.name.is_empty() {
            &c.subject
        } else {
            &c.name
        };
        let revoked = c
            .revoked
            .as_ref()
            .map(|r| format!("  REVOKED ({}, {})", r.reason, rfc3339(r.revoked_at)))
            .unwrap_or_default();
        println!(
            "{:<13} {:<24} {:<34} {:<22} {:>6}  {}{revoked}",
            c.role,
            truncate(name, 24),
            truncate(&c.serial_hex, 34),
            rfc3339(c.not_after),
            c.days_left,
            c.level
        );
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(['…']).collect()
    }
}

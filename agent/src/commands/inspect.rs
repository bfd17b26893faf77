//! `keyward verify` and `keyward status`: read-only views of certificates and the CA.

use keyward_core::Error;
use keyward_core::check::{self, AlertThresholds, CertSummary, alert_level};
use keyward_core::store::StateDir;
use time::OffsetDateTime;

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
    let leaf = &path[0];
    if let Some(issuer) = path.get(1) {
        check_not_revoked(state, leaf, issuer, now)?;
    }
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
        Some(r) => Err(Error::Verification(format!(
            "certificate {} ('{}') is revoked: reason {}, revoked at {} (CRL number {})",
            r.serial_hex,
            leaf.subject,
            r.reason,
            rfc3339(r.revoked_at),
            crl.crl_number
        ))),
        None => Ok(()),
    }
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

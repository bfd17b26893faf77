//! `keyward verify` and `keyward status`: read-only views of certificates and the CA.

use keyward_core::Error;
use keyward_core::check::{self, AlertLevel, AlertThresholds, CertSummary, alert_level};
use keyward_core::issuance::RevokedCert;
use keyward_core::store::StateDir;
use serde::Serialize;
use time::OffsetDateTime;

use super::{days_left, read_input, rfc3339};
use crate::cli::{StatusArgs, VerifyArgs};

/// Verifies a certificate file against the CA (or `--ca`), printing the path on success.
pub fn verify(state: &StateDir, args: &VerifyArgs) -> Result<(), Error> {
    let certs = check::pem_to_ders(&read_input(&args.cert)?)
        .map_err(|e| Error::InvalidInput(format!("{}: {e}", args.cert.display())))?;
    let (leaf, rest) = certs.split_first().ok_or_else(|| {
        Error::InvalidInput(format!("{} holds no certificate", args.cert.display()))
    })?;
    let mut intermediates = rest.to_vec();
    let trust = match &args.ca {
        Some(path) => check::pem_to_ders(&read_input(path)?)?,
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

/// One certificate line of `keyward status`.
#[derive(Serialize)]
struct StatusEntry {
    role: String,
    name: String,
    subject: String,
    serial_hex: String,
    #[serde(with = "time::serde::rfc3339")]
    not_after: OffsetDateTime,
    days_left: i64,
    level: AlertLevel,
    /// Set when the certificate is revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked: Option<RevokedCert>,
}

/// The whole status report.
#[derive(Serialize)]
struct StatusReport {
    state_dir: String,
    certificates: Vec<StatusEntry>,
    problems: Vec<String>,
}

/// Lists the CA and every issued certificate with days left and alert level.
pub fn status(state: &StateDir, args: &StatusArgs) -> Result<(), Error> {
    let ca = state.require_ca()?;
    let now = OffsetDateTime::now_utc();
    let t = AlertThresholds::default();
    let entry = |role: &str, name: &str, s: &CertSummary| StatusEntry {
        role: role.into(),
        name: name.into(),
        subject: s.subject.clone(),
        serial_hex: s.serial_hex.clone(),
        not_after: s.not_after,
        days_left: days_left(s.not_after),
        level: alert_level(s.not_after, now, &t),
        revoked: None,
    };
    let mut certificates = Vec::new();
    for root in &ca.roots {
        certificates.push(entry("root", "", &check::summarize(root)?));
    }
    if let Some((inter, _)) = &ca.intermediate {
        certificates.push(entry("intermediate", "", &check::summarize(inter)?));
    }
    let mut problems = state.problems()?;
    let revocations = state.revocations().unwrap_or_default();
    if let Ok(issuing) = ca.issuing()
        && let Ok(crl) = std::fs::read(state.crl_der_path())
        && let Err(e) = check::check_crl(
            &crl,
            &issuing.cert_der,
            &state.crl_der_path().display().to_string(),
            now,
        )
    {
        problems.push(e.to_string());
    }
    for rec in state.inventory()? {
        let der = std::fs::read(state.path().join(&rec.cert_file))
            .ok()
            .and_then(|pem| check::pem_to_ders(&pem).ok())
            .and_then(|d| d.into_iter().next());
        let mut e = match der.as_deref().map(check::summarize) {
            Some(Ok(s)) => entry("issued", &rec.name, &s),
            _ => {
                problems.push(format!(
                    "certificate {} ({}) cannot be read",
                    rec.serial_hex, rec.name
                ));
                continue;
            }
        };
        e.revoked = revocations.find(&rec.serial_hex).cloned();
        // A stored certificate that no longer verifies under the CA is CRITICAL.
        let mut intermediates: Vec<Vec<u8>> = ca.upstream_intermediates.clone();
        if let Some((inter, _)) = &ca.intermediate {
            intermediates.push(inter.clone());
        }
        let verified = check::verify_chain(
            der.as_deref().unwrap_or_default(),
            &intermediates,
            &ca.roots,
            now,
        );
        if let Err(err) = verified
            && e.level != AlertLevel::Critical
            && e.days_left >= 0
        {
            e.level = AlertLevel::Critical;
            problems.push(format!(
                "certificate {} ({}) fails verification: {err}",
                rec.serial_hex, rec.name
            ));
        }
        certificates.push(e);
    }
    let report = StatusReport {
        state_dir: state.path().display().to_string(),
        certificates,
        problems,
    };
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

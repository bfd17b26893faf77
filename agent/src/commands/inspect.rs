//! `keyward verify` and `keyward status`: read-only views of certificates and the CA.

use keyward_core::Error;
use keyward_core::check::{self, AlertThresholds, alert_level};
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
        println!(
            "{:<13} {:<24} {:<34} {:<22} {:>6}  {}",
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

//! The state directory's certificates with their alert levels: what `keyward status`
//! prints and what the agent's status page and metrics show, computed in one place.

use serde::Serialize;
use time::OffsetDateTime;

use super::{AlertLevel, AlertThresholds, CertSummary, alert_level, days_left, summarize};
use crate::Error;
use crate::issuance::RevokedCert;
use crate::store::StateDir;

/// One certificate of the state directory (CA or issued) and how urgent it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusEntry {
    /// `root`, `intermediate` or `issued`.
    pub role: String,
    /// The name it was issued under (empty for CA certificates).
    pub name: String,
    /// Subject distinguished name.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Serial number, upper-case hex.
    pub serial_hex: String,
    /// End of the validity window.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Whole days left (negative once expired).
    pub days_left: i64,
    /// The alert level under the thresholds given (CRITICAL also when it fails verification).
    pub level: AlertLevel,
    /// Set when the certificate is revoked (`keyward revoke`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked: Option<RevokedCert>,
}

/// Every certificate of a state directory and what is wrong with it.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The state directory's path.
    pub state_dir: String,
    /// Roots, the intermediate, then the inventory of issued certificates.
    pub certificates: Vec<StatusEntry>,
    /// Problems found (unreadable or unverifiable certificates, state problems).
    pub problems: Vec<String>,
}

impl StatusEntry {
    fn new(
        role: &str,
        name: &str,
        s: &CertSummary,
        now: OffsetDateTime,
        t: &AlertThresholds,
    ) -> Self {
        StatusEntry {
            role: role.into(),
            name: name.into(),
            subject: s.subject.clone(),
            issuer: s.issuer.clone(),
            serial_hex: s.serial_hex.clone(),
            not_after: s.not_after,
            days_left: days_left(s.not_after, now),
            level: alert_level(s.not_after, now, t),
            revoked: None,
        }
    }
}

/// The report for `state` seen at `now`: the CA's roots and intermediate, then every
/// inventory certificate; a stored certificate that does not verify under the CA (and
/// has not simply expired) is CRITICAL, with the reason among the problems.
pub fn status_report(
    state: &StateDir,
    now: OffsetDateTime,
    t: &AlertThresholds,
) -> Result<StatusReport, Error> {
    let ca = state.require_ca()?;
    let mut certificates = Vec::new();
    for root in &ca.roots {
        certificates.push(StatusEntry::new("root", "", &summarize(root)?, now, t));
    }
    if let Some((inter, _)) = &ca.intermediate {
        certificates.push(StatusEntry::new(
            "intermediate",
            "",
            &summarize(inter)?,
            now,
            t,
        ));
    }
    let mut intermediates: Vec<Vec<u8>> = ca.upstream_intermediates.clone();
    if let Some((inter, _)) = &ca.intermediate {
        intermediates.push(inter.clone());
    }
    let mut problems = state.problems()?;
    let revocations = state.revocations().unwrap_or_default();
    if let Ok(issuing) = ca.issuing()
        && let Ok(crl) = std::fs::read(state.crl_der_path())
        && let Err(e) = super::check_crl(
            &crl,
            &issuing.cert_der,
            &state.crl_der_path().display().to_string(),
            now,
        )
    {
        problems.push(e.to_string());
    }
    let mut issued = state.issued_files();
    for rec in state.inventory()? {
        let der = issued
            .pem(&rec)
            .ok()
            .and_then(|pem| super::pem_to_ders(pem).ok())
            .and_then(|d| d.into_iter().next());
        let (Some(der), Some(summary)) =
            (der.clone(), der.as_deref().and_then(|d| summarize(d).ok()))
        else {
            problems.push(format!(
                "certificate {} ({}) cannot be read",
                rec.serial_hex, rec.name
            ));
            continue;
        };
        let mut e = StatusEntry::new("issued", &rec.name, &summary, now, t);
        e.revoked = revocations.find(&rec.serial_hex).cloned();
        let verified = super::verify_chain(&der, &intermediates, &ca.roots, now);
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
    Ok(StatusReport {
        state_dir: state.path().display().to_string(),
        certificates,
        problems,
    })
}

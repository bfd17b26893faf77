//! The alert evaluator: rates every certificate the agent knows (the state
//! directory's CA and inventory, the served SVIDs and their intermediates) every
//! [`EVALUATE_INTERVAL`] and after each new snapshot, publishes the result to
//! [`Metrics`], and logs one structured event whenever a certificate enters a level
//! (`level`, `certificate`, `days_left`): INFO when one is issued or rotated at OK.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use keyward_core::check::{self, AlertLevel, days_left, renewal_alert_level};
use keyward_core::store::StateDir;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{CertRow, Metrics, Policy};
use crate::daemon::snapshot::Snapshot;

/// How often levels are re-evaluated without any change.
pub const EVALUATE_INTERVAL: Duration = Duration::from_secs(10);

/// Starts the evaluator; it runs until aborted (or the snapshot channel closes).
pub fn spawn_evaluator(
    state: StateDir,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    metrics: Metrics,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen: BTreeMap<String, (AlertLevel, String)> = BTreeMap::new();
        loop {
            let snap = snapshots.borrow_and_update().clone();
            let (state2, policy) = (state.clone(), metrics.policy());
            let rows = tokio::task::spawn_blocking(move || {
                evaluate(&state2, &snap, &policy, OffsetDateTime::now_utc())
            })
            .await
            .unwrap_or_default();
            announce(&mut seen, &rows);
            metrics.set_certificates(rows);
            tokio::select! {
                _ = tokio::time::sleep(EVALUATE_INTERVAL) => {}
                changed = snapshots.changed() => if changed.is_err() { return },
            }
        }
    })
}

/// Every certificate with its level at `now`: the CA and the inventory (day
/// thresholds), the SVIDs (renewal-based levels) and intermediates of their chains.
pub fn evaluate(
    state: &StateDir,
    snap: &Snapshot,
    p: &Policy,
    now: OffsetDateTime,
) -> Vec<CertRow> {
    let mut rows = Vec::new();
    // An agent whose intermediates an upstream signs ([ca.upstream]) may keep no CA
    // in its state directory: its certificates are the SVIDs' chains below.
    let report = match state.ca() {
        Ok(None) => None,
        _ => Some(check::status_report(state, now, &p.thresholds)),
    };
    match report {
        None => {}
        Some(Ok(report)) => rows.extend(report.certificates.into_iter().map(|e| CertRow {
            role: match e.role.as_str() {
                "root" => "root",
                "intermediate" => "intermediate",
                _ => "issued",
            },
            name: e.name,
            subject: e.subject,
            issuer: e.issuer,
            serial_hex: e.serial_hex,
            not_after: e.not_after,
            days_left: e.days_left,
            level: e.level,
        })),
        Some(Err(e)) => {
            tracing::warn!(error = %keyward_core::chain_line(&e), "cannot read the state directory's certificates for alerts");
        }
    }
    for (entry, svid) in snap.entries.iter().zip(&snap.svids) {
        let Some(svid) = svid else { continue };
        let ders = split_ders(&svid.chain);
        let Some((leaf, above)) = ders.split_first() else {
            continue;
        };
        if let Ok(s) = check::summarize(leaf) {
            rows.push(CertRow {
                role: "svid",
                name: entry.spiffe_id.clone(),
                subject: s.subject,
                issuer: s.issuer,
                serial_hex: s.serial_hex,
                not_after: s.not_after,
                days_left: days_left(s.not_after, now),
                level: renewal_alert_level(s.not_before, s.not_after, now, p.renew_fraction),
            });
        }
        for der in above {
            let Ok(s) = check::summarize(der) else {
                continue;
            };
            if rows
                .iter()
                .any(|r| r.serial_hex == s.serial_hex && r.issuer == s.issuer)
            {
                continue;
            }
            rows.push(CertRow {
                role: "intermediate",
                name: String::new(),
                subject: s.subject,
                issuer: s.issuer,
                serial_hex: s.serial_hex,
                not_after: s.not_after,
                days_left: days_left(s.not_after, now),
                level: check::alert_level(s.not_after, now, &p.thresholds),
            });
        }
    }
    rows
}

/// Splits concatenated DER certificates.
fn split_ders(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let Ok((rest, _)) = x509_parser::parse_x509_certificate(bytes) else {
            break;
        };
        out.push(bytes[..bytes.len() - rest.len()].to_vec());
        bytes = rest;
    }
    out
}

/// Logs each certificate whose level (or, at OK, whose serial) changed since `seen`.
fn announce(seen: &mut BTreeMap<String, (AlertLevel, String)>, rows: &[CertRow]) {
    let mut now_seen = BTreeMap::new();
    for r in rows {
        let key = r.label();
        let before = seen.get(&key);
        let changed = match before {
            None => true,
            Some((level, serial)) => {
                *level != r.level || (r.level == AlertLevel::Ok && *serial != r.serial_hex)
            }
        };
        if changed {
            log_level(r, before.is_some());
        }
        now_seen.insert(key, (r.level, r.serial_hex.clone()));
    }
    *seen = now_seen;
}

fn log_level(r: &CertRow, known: bool) {
    let certificate = r.label();
    let (serial, days) = (r.serial_hex.as_str(), r.days_left);
    match r.level {
        AlertLevel::Ok => {
            let what = if known {
                "certificate rotated"
            } else {
                "certificate watched"
            };
            tracing::info!(level = "INFO", certificate = %certificate, days_left = days, serial, "{what}");
        }
        AlertLevel::Warning => {
            tracing::warn!(level = "WARNING", certificate = %certificate, days_left = days, serial, "certificate expires soon")
        }
        AlertLevel::Error => {
            tracing::error!(level = "ERROR", certificate = %certificate, days_left = days, serial, "certificate about to expire")
        }
        _ => {
            tracing::error!(level = "CRITICAL", certificate = %certificate, days_left = days, serial, "certificate expired or failing verification")
        }
    }
}

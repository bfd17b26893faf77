//! `keyward revoke` (revoke an issued certificate) and `keyward crl` (re-sign the CRL).
//!
//! Both sign a new CRL with the issuing CA's key (any backend) under the state lock,
//! with the next CRL number, and record the revocation list before the CRL.

use std::time::Duration;

use keyward_core::Error;
use keyward_core::audit::{Caller, Event};
use keyward_core::check::summarize;
use keyward_core::issuance::{CaIssuer, CrlContents, RevocationReason, RevokedCert};
use keyward_core::store::{IssuedRecord, Operation, Plan, RevocationList, StateDir, Transaction};
use time::OffsetDateTime;

use super::issue::issuing_ca;
use super::{audit, rfc3339};
use crate::backends::Backends;
use crate::cli::{CrlArgs, RevokeArgs};
use crate::duration::parse_duration;

/// Revokes the certificate with `--serial`, then signs and stores a new CRL. Bad input
/// (unknown serial, bad reason, a certificate already revoked) changes nothing.
pub async fn revoke(state: &StateDir, backends: &Backends, args: &RevokeArgs) -> Result<(), Error> {
    let reason: RevocationReason = args.reason.parse()?;
    let validity = parse_duration(&args.next_update)?;
    let serial = normalize_serial(&args.serial)?;
    let ca = state.require_ca()?;
    let record = find_issued(state, &serial)?;
    if let Some(r) = state.revocations()?.find(&record.serial_hex) {
        return Err(already_revoked(r));
    }
    let issuing = summarize(&ca.issuing()?.cert_der)?;
    if record.issuer != issuing.subject {
        return Err(Error::State(format!(
            "certificate {} was issued by '{}', not by the issuing CA '{}' whose CRL keyward signs",
            record.serial_hex, record.issuer, issuing.subject
        )));
    }
    let issuer = issuing_ca(state, backends).await?;
    audit::check(state)?;
    let op = Operation {
        name: "revoke".into(),
        detail: format!("serial {}", record.serial_hex),
        plan: Plan::Revocations {
            serial_hex: Some(record.serial_hex.clone()),
        },
    };
    let (entry, list, next_update) = state
        .transaction(&op, &|e| audit::record(state, e), async |tx| {
            let mut list = tx.state().revocations()?;
            if let Some(r) = list.find(&record.serial_hex) {
                return Err(already_revoked(r));
            }
            let entry = RevokedCert {
                serial_hex: record.serial_hex.clone(),
                reason,
                revoked_at: now_seconds(),
            };
            list.revoked.push(entry.clone());
            let next_update = save_next_crl(tx, &issuer, &mut list, validity).await?;
            tx.audit(
                Event::revoked(
                    &entry.serial_hex,
                    &reason.to_string(),
                    &Caller::this_process(),
                )
                .with("crl_number", list.crl_number),
            );
            Ok((entry, list, next_update))
        })
        .await?;
    println!(
        "revoked {} ('{}'), reason {reason}, at {}",
        entry.serial_hex,
        record.name,
        rfc3339(entry.revoked_at)
    );
    print_crl(state, &list, next_update);
    Ok(())
}

/// Signs a new CRL (next CRL number, same revocations) and prints where it is.
pub async fn crl(state: &StateDir, backends: &Backends, args: &CrlArgs) -> Result<(), Error> {
    let validity = parse_duration(&args.next_update)?;
    state.require_ca()?;
    let issuer = issuing_ca(state, backends).await?;
    audit::check(state)?;
    let op = Operation {
        name: "crl".into(),
        detail: format!("CRL number {}", state.revocations()?.crl_number + 1),
        plan: Plan::Revocations { serial_hex: None },
    };
    let (list, next_update) = state
        .transaction(&op, &|e| audit::record(state, e), async |tx| {
            let mut list = tx.state().revocations()?;
            let next_update = save_next_crl(tx, &issuer, &mut list, validity).await?;
            tx.audit(Event::new("crl_signed").with("crl_number", list.crl_number));
            Ok((list, next_update))
        })
        .await?;
    print_crl(state, &list, next_update);
    Ok(())
}

/// Takes the next CRL number in `list`, signs its revocations with `issuer`, valid
/// from now for `validity`, and saves the list and the CRL in `tx`; returns the CRL's
/// nextUpdate.
pub async fn save_next_crl(
    tx: &mut Transaction<'_>,
    issuer: &CaIssuer,
    list: &mut RevocationList,
    validity: Duration,
) -> Result<OffsetDateTime, Error> {
    list.crl_number += 1;
    let this_update = now_seconds();
    let contents = CrlContents {
        crl_number: list.crl_number,
        this_update,
        next_update: this_update + validity,
        revoked: list.revoked.clone(),
    };
    let crl = issuer.sign_crl(&contents).await?;
    tx.save_revocations(list, &crl)?;
    Ok(contents.next_update)
}

fn print_crl(state: &StateDir, list: &RevocationList, next: OffsetDateTime) {
    println!(
        "CRL number {} lists {} revoked certificate(s); next update due by {}",
        list.crl_number,
        list.revoked.len(),
        rfc3339(next)
    );
    println!("  {}", state.crl_der_path().display());
    println!("  {}", state.crl_pem_path().display());
}

/// The serial as the inventory spells it: upper-case hex, `:` separators and a `0x`
/// prefix dropped, leading zero digits ignored.
fn normalize_serial(serial: &str) -> Result<String, Error> {
    let s = serial.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::InvalidInput(format!(
            "serial '{serial}' is not hexadecimal (copy it from `keyward status`)"
        )));
    }
    Ok(hex.to_ascii_uppercase())
}

/// The inventory record of the certificate with `serial` (normalized). A certificate
/// abandoned by `keyward pending resolve` was never delivered, so nobody holds it and
/// it is not revoked: the error says so.
fn find_issued(state: &StateDir, serial: &str) -> Result<IssuedRecord, Error> {
    let key = |s: &str| s.trim_start_matches('0').to_ascii_uppercase();
    if let Some(r) = state
        .abandoned()?
        .into_iter()
        .find(|r| key(&r.serial_hex) == key(serial))
    {
        return Err(Error::State(format!(
            "certificate {} was abandoned by `keyward pending resolve`: it was never delivered, so there is nothing to revoke",
            r.serial_hex
        )));
    }
    state
        .inventory()?
        .into_iter()
        .find(|r| key(&r.serial_hex) == key(serial))
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "no certificate with serial {serial} in the inventory of {} (see `keyward status`); nothing revoked",
                state.path().display()
            ))
        })
}

fn already_revoked(r: &RevokedCert) -> Error {
    Error::State(format!(
        "certificate {} was already revoked at {} ({}); nothing changed",
        r.serial_hex,
        rfc3339(r.revoked_at),
        r.reason
    ))
}

/// Now, in whole seconds (CRLs carry seconds; the list must say the same).
fn now_seconds() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

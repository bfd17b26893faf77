//! `keyward pending` (the operations a crash left unfinished) and `keyward pending
//! resolve`, which settles each from its record's plan, in its own transaction with
//! its own audit record (`pending_resolved`):
//! - `issue` / `sign-csr`: already in the inventory, it completed; its key (or, for a
//!   CSR, its certificate file) delivered, the other files are written and it is
//!   recorded; nothing delivered, the certificate is recorded as abandoned, so its
//!   serial is never used again;
//! - `ca init`, `ca intermediate`, the agent's first root: CA files the manifest does
//!   not name are removed (the manifest is the commit point, so nothing was created);
//! - `revoke` / `crl`: a CRL older than the revocation list is re-signed with the next
//!   CRL number; otherwise the list and CRL already agree;
//! - `pending resolve` itself: nothing to do (the record it was settling is settled on
//!   its own).

use std::path::Path;
use std::time::Duration;

use keyward_core::audit::Event;
use keyward_core::check::{self, summarize};
use keyward_core::fsutil;
use keyward_core::issuance::CaChain;
use keyward_core::store::{
    IssuedKind, NewCertificate, Operation, PendingRecord, Plan, StateDir, Transaction,
};
use keyward_core::{Error, KeyUri, chain_line};
use time::OffsetDateTime;

use super::issue::{issuing_ca, write_delivery};
use super::sign_csr::bundle;
use super::{audit, revoke};
use crate::backends::Backends;
use crate::duration::parse_duration;

/// How a record was settled: a short outcome for the audit record, and what happened.
struct Settled {
    outcome: &'static str,
    what: String,
}

impl Settled {
    fn new(outcome: &'static str, what: String) -> Settled {
        Settled { outcome, what }
    }
}

/// Lists the unfinished operations, oldest first.
pub fn list(state: &StateDir) -> Result<(), Error> {
    let records = state.unfinished()?;
    if records.is_empty() {
        println!("no unfinished operations in {}", state.path().display());
        return Ok(());
    }
    for r in &records {
        println!("{}  {}  {}", r.started(), r.operation, r.detail);
        println!("    {}", r.file.display());
    }
    println!(
        "{} unfinished; `keyward pending resolve` finishes or undoes each",
        records.len()
    );
    Ok(())
}

/// Settles every unfinished operation, oldest first, one transaction each. A record
/// that cannot be settled is named on stderr and left; the command then fails.
pub async fn resolve(
    state: &StateDir,
    backends: &Backends,
    next_update: &str,
) -> Result<(), Error> {
    let validity = parse_duration(next_update)?;
    if state.exists() {
        // Taking the lock removes what interrupted writes left half-written.
        drop(state.lock()?);
    }
    let records = state.unfinished()?;
    if records.is_empty() {
        println!("no unfinished operations in {}", state.path().display());
        return Ok(());
    }
    audit::check(state)?;
    let mut left = 0;
    for rec in &records {
        match resolve_one(state, backends, rec, validity).await {
            Ok(Some(s)) => println!(
                "`{}` ({}): {}: {}",
                rec.operation, rec.detail, s.outcome, s.what
            ),
            Ok(None) => {}
            Err(e) => {
                left += 1;
                eprintln!(
                    "warning: cannot resolve {}: {}",
                    rec.file.display(),
                    chain_line(&e)
                );
            }
        }
    }
    match left {
        0 => Ok(()),
        n => Err(Error::State(format!(
            "{n} unfinished operation(s) in {} could not be resolved (see the warnings above)",
            state.path().display()
        ))),
    }
}

/// Settles one record in its own transaction; `None` when another process already did.
async fn resolve_one(
    state: &StateDir,
    backends: &Backends,
    rec: &PendingRecord,
    validity: Duration,
) -> Result<Option<Settled>, Error> {
    let Some(plan) = &rec.plan else {
        return Err(Error::State(format!(
            "the record cannot be read (or an older keyward wrote it); check what `{}` changed, then remove it",
            rec.operation
        )));
    };
    let op = Operation {
        name: "pending resolve".into(),
        detail: format!(
            "`{}` started {} ({})",
            rec.operation,
            rec.started(),
            rec.detail
        ),
        plan: Plan::Resolve {
            record: rec.file.clone(),
        },
    };
    state
        .transaction(&op, &|e| audit::record(state, e), async |tx| {
            if !rec.file.exists() {
                return Ok(None);
            }
            let settled = match plan {
                Plan::Certificate(new) => settle_certificate(tx, new)?,
                Plan::Certificates { certificates } => settle_certificates(tx, certificates)?,
                Plan::Ca => settle_ca(tx)?,
                Plan::Revocations { serial_hex } => {
                    settle_revocations(tx, backends, serial_hex.as_deref(), validity).await?
                }
                Plan::Resolve { .. } => Settled::new(
                    "completed",
                    "nothing to do: the record it was settling is settled on its own".into(),
                ),
            };
            tx.remove(&rec.file)?;
            tx.audit(
                Event::new("pending_resolved")
                    .with("operation", &rec.operation)
                    .with("detail", &rec.detail)
                    .with("started_at", rec.started())
                    .with("outcome", settled.outcome)
                    .with("what", &settled.what),
            );
            Ok(Some(settled))
        })
        .await
}

/// An `issue` or `sign-csr`: recorded already, finished when it delivered, else
/// abandoned.
fn settle_certificate(tx: &mut Transaction<'_>, new: &NewCertificate) -> Result<Settled, Error> {
    let settled = deliver_or_abandon(tx, new)?;
    // What the interrupted writes left beside the files (one may hold the key) goes.
    let files = match (new.kind, &new.out) {
        (_, None) => Vec::new(),
        (IssuedKind::Service, Some(out)) => ["key.pem", "cert.pem", "chain.pem", "ca.pem"]
            .map(|f| out.join(f))
            .to_vec(),
        (IssuedKind::Csr, Some(out)) => vec![out.clone()],
    };
    for tmp in files.iter().flat_map(|f| fsutil::stale_temporaries_of(f)) {
        tx.remove(&tmp)?;
    }
    Ok(settled)
}

/// A `sign-csr --batch` chunk: each certificate settled as a single one is; the
/// outcome is the worst of theirs.
fn settle_certificates(
    tx: &mut Transaction<'_>,
    news: &[NewCertificate],
) -> Result<Settled, Error> {
    let mut outcome = "completed";
    let mut what = Vec::with_capacity(news.len());
    for new in news {
        let one = settle_certificate(tx, new)?;
        if one.outcome != "completed" {
            outcome = one.outcome;
        }
        what.push(one.what);
    }
    Ok(Settled::new(outcome, what.join("; ")))
}

fn deliver_or_abandon(tx: &mut Transaction<'_>, new: &NewCertificate) -> Result<Settled, Error> {
    let state = tx.state();
    let serial = new.serial_hex()?;
    let known = state
        .inventory()?
        .into_iter()
        .chain(state.abandoned()?)
        .any(|r| r.serial_hex == serial);
    if known {
        return Ok(Settled::new(
            "completed",
            format!("serial {serial} was recorded before the interruption"),
        ));
    }
    let leaf = new.cert_der()?;
    let Some(out) = new
        .out
        .as_deref()
        .filter(|out| delivered(new.kind, out, &leaf))
    else {
        tx.record_abandoned(new)?;
        return Ok(Settled::new(
            "abandoned",
            format!(
                "serial {serial} was signed but never delivered; the inventory keeps it as abandoned and it is never used again"
            ),
        ));
    };
    let chain = chain_of(state, &leaf)?;
    // A `sign-csr --batch` bundle is whole once it exists (written in one step).
    if !bundle::is_bundle(out) {
        write_delivery(tx, new, &chain)?;
    }
    tx.record_issued(new)?;
    Ok(Settled::new(
        "finished",
        format!(
            "serial {serial} delivered to {} and recorded",
            out.display()
        ),
    ))
}

/// Whether an interrupted issuance got its certificate out: for `issue`, its key in
/// `out/key.pem` (the first file written, so the others can be completed); for
/// `sign-csr`, the chain in `out` or its line in the bundle `out` (each written in one
/// step).
fn delivered(kind: IssuedKind, out: &Path, leaf: &[u8]) -> bool {
    match kind {
        IssuedKind::Service => {
            let key_path = out.join("key.pem");
            let Ok(uri) = KeyUri::file(&key_path) else {
                return false;
            };
            let spki = x509_parser::parse_x509_certificate(leaf)
                .map(|(_, c)| c.public_key().raw.to_vec())
                .unwrap_or_default();
            keyward_software::read_key_file(&key_path, uri)
                .is_ok_and(|k| keyward_core::KeySigner::public_key_spki_der(&k) == spki)
        }
        IssuedKind::Csr if bundle::is_bundle(out) => bundle::holds(out, leaf),
        IssuedKind::Csr => std::fs::read(out)
            .ok()
            .and_then(|pem| check::pem_to_ders(&pem).ok())
            .is_some_and(|ders| ders.first().is_some_and(|d| d == leaf)),
    }
}

/// The chain a leaf was issued with (its issuer is the issuing CA, or the root when
/// an intermediate came later), checked by verifying the leaf along it.
fn chain_of(state: &StateDir, leaf: &[u8]) -> Result<CaChain, Error> {
    let ca = state.require_ca()?;
    let issuing = ca.issuing()?;
    let issuer = summarize(leaf)?.issuer;
    let chain = match ca.roots.first() {
        Some(root) if summarize(&issuing.cert_der)?.subject != issuer => CaChain::of(root, &[]),
        _ => issuing.ca_chain(),
    };
    check::verify_chain(
        leaf,
        &chain.intermediates,
        &chain.roots,
        OffsetDateTime::now_utc(),
    )?;
    Ok(chain)
}

/// A CA operation: the files its manifest never named are removed.
fn settle_ca(tx: &mut Transaction<'_>) -> Result<Settled, Error> {
    let removed = tx.remove_uncommitted_ca_files()?;
    if removed.is_empty() {
        return Ok(Settled::new(
            "completed",
            "the CA manifest names every CA file: nothing to undo".into(),
        ));
    }
    let names: Vec<String> = removed.iter().map(|p| p.display().to_string()).collect();
    Ok(Settled::new(
        "rolled-back",
        format!(
            "removed {}, which no CA manifest names (the operation never committed)",
            names.join(", ")
        ),
    ))
}

/// A `revoke` or `crl`: a CRL behind the revocation list is re-signed.
async fn settle_revocations(
    tx: &mut Transaction<'_>,
    backends: &Backends,
    serial_hex: Option<&str>,
    validity: Duration,
) -> Result<Settled, Error> {
    let state = tx.state();
    let mut list = state.revocations()?;
    if !state.crl_is_current()? {
        let issuer = issuing_ca(state, backends).await?;
        revoke::save_next_crl(tx, &issuer, &mut list, validity).await?;
        return Ok(Settled::new(
            "finished",
            format!(
                "CRL number {} signed from the revocation list ({} revoked)",
                list.crl_number,
                list.revoked.len()
            ),
        ));
    }
    Ok(match serial_hex {
        Some(s) if list.find(s).is_none() => Settled::new(
            "rolled-back",
            format!("nothing was written: {s} is not revoked"),
        ),
        Some(s) => Settled::new("completed", format!("{s} is revoked and the CRL lists it")),
        None => Settled::new("completed", "the CRL matches the revocation list".into()),
    })
}

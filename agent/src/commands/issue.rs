//! `keyward issue` (new key and certificate to a directory), and how it and `keyward
//! sign-csr` deliver and record a certificate.

use std::path::Path;

use keyward_core::audit::Event;
use keyward_core::fsutil::{self, Replace};
use keyward_core::issuance::{CaChain, CaIssuer, ServiceProfile};
use keyward_core::store::{IssuedKind, NewCertificate, Operation, Plan, StateDir, Transaction};
use keyward_core::{Algorithm, Error, KeyUri};
use keyward_software::SoftwareKey;
use zeroize::Zeroizing;

use super::{audit, rfc3339};
use crate::backends::Backends;
use crate::cli::IssueArgs;
use crate::duration::parse_duration;

/// The issuing CA from the state directory, ready to sign.
pub async fn issuing_ca(state: &StateDir, backends: &Backends) -> Result<CaIssuer, Error> {
    let ca = state.require_ca()?;
    let issuing = ca.issuing()?;
    let signer = backends.open(&issuing.key).await?;
    CaIssuer::new(issuing.cert_der, issuing.chain_der, signer)
}

/// Issues a service certificate with a new software key and writes the four files.
pub async fn issue(state: &StateDir, backends: &Backends, args: &IssueArgs) -> Result<(), Error> {
    let alg: Algorithm = args.algorithm.parse()?;
    let profile = ServiceProfile {
        common_name: args.name.clone(),
        dns: args.dns.clone(),
        ips: args.ip.clone(),
        uris: args.uri.clone(),
        validity: parse_duration(&args.validity)?,
    };
    let out = std::path::absolute(&args.out)
        .map_err(|e| Error::io(format!("bad output directory {}", args.out.display()), e))?;
    if out.exists() && !out.is_dir() {
        return Err(Error::InvalidInput(format!(
            "--out {} exists and is not a directory",
            out.display()
        )));
    }
    let key_path = out.join("key.pem");
    if key_path.exists() {
        return Err(Error::AlreadyExists(format!(
            "{} (keyward never overwrites a key; choose another --out)",
            key_path.display()
        )));
    }
    let ca = issuing_ca(state, backends).await?;
    audit::check(state)?;
    let (leaf_key, pkcs8) = SoftwareKey::generate(alg, KeyUri::file(&key_path)?)?;
    let cert = ca
        .issue_service(
            keyward_core::KeySigner::public_key_spki_der(&leaf_key),
            &profile,
        )
        .await?;
    let new = NewCertificate::new(
        IssuedKind::Service,
        &args.name,
        Some(out.clone()),
        ca.signer().uri(),
        &cert,
    );
    let key_pem = Zeroizing::new(pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.to_vec())));
    deliver(state, &ca, "issue", &new, Some((&key_path, &key_pem))).await?;
    println!(
        "issued '{}' (serial {}), valid until {}",
        cert.subject,
        cert.serial_hex,
        rfc3339(cert.not_after)
    );
    println!("  {}/cert.pem   the certificate", out.display());
    println!("  {}/key.pem    its private key (0600)", out.display());
    println!(
        "  {}/chain.pem  certificate and intermediates",
        out.display()
    );
    println!("  {}/ca.pem     the trust bundle", out.display());
    Ok(())
}

/// Delivers and records `new` in one transaction named `operation`: its key first
/// when there is one (`issue`: path and PEM, never replacing a file), then the
/// certificate's files, then its inventory record.
pub(super) async fn deliver(
    state: &StateDir,
    ca: &CaIssuer,
    operation: &str,
    new: &NewCertificate,
    key: Option<(&Path, &Zeroizing<String>)>,
) -> Result<(), Error> {
    let out = new.out.as_deref().unwrap_or(Path::new(""));
    let op = Operation {
        name: operation.into(),
        detail: format!("serial {} to {}", new.serial_hex()?, out.display()),
        plan: Plan::Certificate(Box::new(new.clone())),
    };
    state
        .transaction(&op, &|e| audit::record(state, e), async |tx| {
            if let Some((path, pem)) = key {
                tx.create_dir(fsutil::parent_dir(path))?;
                tx.write(
                    path,
                    pem.as_bytes(),
                    fsutil::SECRET_FILE_MODE,
                    Replace::Refuse,
                )?;
            }
            write_delivery(tx, new, &ca.ca_chain())?;
            tx.record_issued(new)?;
            tx.audit(issued_event(new));
            Ok(())
        })
        .await
}

/// Writes what goes out with a certificate besides its key: for `issue`, `cert.pem`,
/// `chain.pem` and `ca.pem` in the `--out` directory; for `sign-csr`, the chain to the
/// `--out` file. (Also how `keyward pending resolve` finishes an interrupted delivery.)
pub fn write_delivery(
    tx: &mut Transaction<'_>,
    new: &NewCertificate,
    chain: &CaChain,
) -> Result<(), Error> {
    let Some(out) = &new.out else {
        return Ok(());
    };
    let leaf = new.cert_der()?;
    let files = match new.kind {
        IssuedKind::Service => vec![
            (out.join("cert.pem"), new.cert_pem.clone()),
            (out.join("chain.pem"), chain.leaf_chain_pem(&leaf)),
            (out.join("ca.pem"), chain.bundle_pem()),
        ],
        IssuedKind::Csr => vec![(out.clone(), chain.leaf_chain_pem(&leaf))],
    };
    for (path, text) in files {
        tx.create_dir(fsutil::parent_dir(&path))?;
        tx.write(
            &path,
            text.as_bytes(),
            fsutil::PUBLIC_FILE_MODE,
            Replace::Allow,
        )?;
    }
    Ok(())
}

/// The audit record of an issuance from the CLI.
fn issued_event(new: &NewCertificate) -> Event {
    let der = new.cert_der().unwrap_or_default();
    let out = new.out.as_deref().unwrap_or(Path::new(""));
    Event::issued("certificate_issued", &der, &new.ca_key)
        .with("kind", new.kind)
        .with("name", &new.name)
        .with("out", out.display().to_string())
}

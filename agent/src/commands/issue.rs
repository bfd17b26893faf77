//! `keyward issue` (new key and certificate to a directory) and `keyward sign-csr`.

use std::path::{Path, PathBuf};

use keyward_core::audit::Event;
use keyward_core::check::{ders_to_pem, summarize};
use keyward_core::fsutil::{self, Replace};
use keyward_core::issuance::{CaIssuer, IssuedCertificate, ServiceProfile};
use keyward_core::store::{IssuedKind, IssuedRecord, StateDir};
use keyward_core::{Algorithm, Error, KeyUri};
use keyward_software::SoftwareKey;
use zeroize::Zeroizing;

use super::{audit, read_input, rfc3339};
use crate::backends::Backends;
use crate::cli::{IssueArgs, SignCsrArgs};
use crate::duration::parse_duration;

/// The issuing CA from the state directory, ready to sign.
pub async fn issuing_ca(state: &StateDir, backends: &Backends) -> Result<CaIssuer, Error> {
    let ca = state.require_ca()?;
    let issuing = ca.issuing()?;
    let signer = backends.open(&issuing.key).await?;
    CaIssuer::new(issuing.cert_der, issuing.chain_der, signer)
}

/// Issues a service certificate with a new software key and writes the four files.
/// Returns the output directory's files' parent for callers such as `up`.
pub async fn issue(
    state: &StateDir,
    backends: &Backends,
    args: &IssueArgs,
) -> Result<PathBuf, Error> {
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

    let lock = state.lock()?;
    let pending = state.begin(
        &lock,
        "issue",
        &format!("serial {} to {}", cert.serial_hex, out.display()),
    )?;
    write_credentials(&out, &ca, &cert, &pkcs8)?;
    let rec = record(
        &ca,
        &cert,
        IssuedKind::Service,
        &args.name,
        Some(out.clone()),
    )?;
    state.record_issued(&lock, rec, &cert.pem())?;
    pending.done()?;
    audit::record(
        state,
        issued_event(&ca, &cert, IssuedKind::Service, &args.name, &out),
    )?;
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
    Ok(out)
}

fn write_credentials(
    out: &Path,
    ca: &CaIssuer,
    cert: &IssuedCertificate,
    pkcs8: &Zeroizing<Vec<u8>>,
) -> Result<(), Error> {
    fsutil::create_private_dir(out)?;
    let key_pem = Zeroizing::new(pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.to_vec())));
    fsutil::write_atomic(
        &out.join("key.pem"),
        key_pem.as_bytes(),
        fsutil::SECRET_FILE_MODE,
        Replace::Refuse,
    )?;
    let (chain, bundle) = chain_and_bundle(ca, cert);
    fsutil::write_atomic(
        &out.join("cert.pem"),
        cert.pem().as_bytes(),
        fsutil::PUBLIC_FILE_MODE,
        Replace::Allow,
    )?;
    fsutil::write_atomic(
        &out.join("chain.pem"),
        chain.as_bytes(),
        fsutil::PUBLIC_FILE_MODE,
        Replace::Allow,
    )?;
    fsutil::write_atomic(
        &out.join("ca.pem"),
        bundle.as_bytes(),
        fsutil::PUBLIC_FILE_MODE,
        Replace::Allow,
    )
}

/// The chain (leaf, then intermediates) and the trust bundle (roots) for a certificate.
fn chain_and_bundle(ca: &CaIssuer, cert: &IssuedCertificate) -> (String, String) {
    // The issuing CA is a root exactly when nothing stands above it.
    let (intermediates, roots): (Vec<Vec<u8>>, Vec<Vec<u8>>) = if ca.chain_der().is_empty() {
        (Vec::new(), vec![ca.certificate_der().to_vec()])
    } else {
        let above = ca.chain_der();
        let mut inter = vec![ca.certificate_der().to_vec()];
        inter.extend(above[..above.len() - 1].iter().cloned());
        (inter, vec![above[above.len() - 1].clone()])
    };
    let mut chain = vec![cert.der.clone()];
    chain.extend(intermediates);
    (ders_to_pem(&chain), ders_to_pem(&roots))
}

fn record(
    ca: &CaIssuer,
    cert: &IssuedCertificate,
    kind: IssuedKind,
    name: &str,
    out: Option<PathBuf>,
) -> Result<IssuedRecord, Error> {
    let s = summarize(&cert.der)?;
    Ok(IssuedRecord {
        serial_hex: cert.serial_hex.clone(),
        kind,
        name: name.to_string(),
        subject: s.subject,
        sans: s.sans,
        issuer: s.issuer,
        ca_key: ca.signer().uri().clone(),
        not_before: cert.not_before,
        not_after: cert.not_after,
        issued_at: time::OffsetDateTime::now_utc(),
        out,
        cert_file: String::new(),
        cert_sha256: String::new(),
    })
}

/// The audit record of an issuance from the CLI.
fn issued_event(
    ca: &CaIssuer,
    cert: &IssuedCertificate,
    kind: IssuedKind,
    name: &str,
    out: &Path,
) -> Event {
    Event::issued("certificate_issued", &cert.der, ca.signer().uri())
        .with("kind", kind)
        .with("name", name)
        .with("out", out.display().to_string())
}

/// Signs a CSR and writes the certificate followed by the intermediates.
pub async fn sign_csr(
    state: &StateDir,
    backends: &Backends,
    args: &SignCsrArgs,
) -> Result<(), Error> {
    let validity = parse_duration(&args.validity)?;
    let csr = read_input(&args.csr)?;
    let ca = issuing_ca(state, backends).await?;
    audit::check(state)?;
    let cert = ca.sign_csr(&csr, validity).await?;
    let (chain, _) = chain_and_bundle(&ca, &cert);

    let lock = state.lock()?;
    let pending = state.begin(
        &lock,
        "sign-csr",
        &format!("serial {} to {}", cert.serial_hex, args.out.display()),
    )?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        fsutil::create_private_dir(dir)?;
    }
    fsutil::write_atomic(
        &args.out,
        chain.as_bytes(),
        fsutil::PUBLIC_FILE_MODE,
        Replace::Allow,
    )?;
    let name = cert.subject.clone();
    state.record_issued(
        &lock,
        record(&ca, &cert, IssuedKind::Csr, &name, Some(args.out.clone()))?,
        &cert.pem(),
    )?;
    pending.done()?;
    audit::record(
        state,
        issued_event(&ca, &cert, IssuedKind::Csr, &name, &args.out),
    )?;
    println!(
        "signed '{}' (serial {}), valid until {}",
        cert.subject,
        cert.serial_hex,
        rfc3339(cert.not_after)
    );
    println!("  {}", args.out.display());
    Ok(())
}

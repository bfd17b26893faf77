//! `keyward sign-csr`: one CSR to a file, or with `--batch` every CSR in a directory
//! (bulk provisioning of devices), resumable through a manifest in the output directory.

mod batch;
pub mod bundle;
mod manifest;
mod numbered;
mod progress;
mod recorder;
mod resume;

use keyward_core::Error;
use keyward_core::store::{IssuedKind, NewCertificate, StateDir};

use super::issue::{deliver, issuing_ca};
use super::{audit, read_input, rfc3339};
use crate::backends::Backends;
use crate::cli::{OutputFormat, SignCsrArgs};
use crate::duration::parse_duration;

/// Signs the CSR of `--csr`, or every CSR in the `--batch` directory.
pub async fn run(state: &StateDir, backends: &Backends, args: &SignCsrArgs) -> Result<(), Error> {
    let validity = parse_duration(&args.validity)?;
    match (&args.csr, &args.batch) {
        (_, Some(dir)) => {
            let format = args.output_format;
            batch::sign_all(state, backends, dir, &args.out, validity, format).await
        }
        (Some(_), None) if args.output_format != OutputFormat::Pem => Err(Error::InvalidInput(
            "--output-format is for --batch; --csr writes one chain PEM file".into(),
        )),
        (Some(csr), None) => sign_one(state, backends, csr, args, validity).await,
        (None, None) => Err(Error::InvalidInput("give --csr FILE or --batch DIR".into())),
    }
}

/// Signs one CSR and writes the certificate followed by the intermediates.
async fn sign_one(
    state: &StateDir,
    backends: &Backends,
    csr: &std::path::Path,
    args: &SignCsrArgs,
    validity: std::time::Duration,
) -> Result<(), Error> {
    let csr = read_input(csr)?;
    let ca = issuing_ca(state, backends).await?;
    audit::check(state)?;
    let cert = ca.sign_csr(&csr, validity).await?;
    let new = NewCertificate::new(
        IssuedKind::Csr,
        &cert.subject,
        Some(args.out.clone()),
        ca.signer().uri(),
        &cert,
    );
    deliver(state, &ca, "sign-csr", &new, None).await?;
    println!(
        "signed '{}' (serial {}), valid until {}",
        cert.subject,
        cert.serial_hex,
        rfc3339(cert.not_after)
    );
    println!("  {}", args.out.display());
    Ok(())
}

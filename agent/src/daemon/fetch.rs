//! `keyward fetch`: a Workload API client that writes the caller's SVID to files for
//! programs that read certificates from disk (nginx, PostgreSQL...): `cert.pem` (leaf
//! then intermediates), `key.pem` (PKCS#8, 0600) and `bundle.pem`, each replaced
//! atomically. With `--watch` it keeps the stream open, rewrites the files on every
//! rotation and runs `--exec` through `sh -c` after each rewrite.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use keyward_core::Error;
use keyward_core::check::{ders_to_pem, summarize};
use keyward_core::fsutil::{self, Replace};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Status};
use zeroize::Zeroizing;

use super::workload_api::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use super::workload_api::{X509svid, X509svidRequest};
use crate::cli::FetchArgs;

/// The longest wait between reconnection attempts in `--watch` mode.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Fetches the caller's SVID once (or, with `--watch`, on every rotation) and writes it.
pub async fn run(args: &FetchArgs) -> Result<(), Error> {
    let socket = socket_path(&args.socket)?;
    let out = std::path::absolute(&args.out)
        .map_err(|e| Error::io(format!("bad output directory {}", args.out.display()), e))?;
    let mut served_once = false;
    let mut retry = Duration::from_millis(250);
    loop {
        let result = follow(&socket, &out, args, &mut served_once).await;
        match result {
            Ok(()) if !args.watch => return Ok(()),
            Err(e) if !args.watch || !served_once => return Err(e),
            Ok(()) => {
                tracing::warn!(socket = %socket.display(), "the agent closed the stream; reconnecting")
            }
            Err(e) => {
                tracing::warn!(error = %keyward_core::chain_line(&e), retry_in = ?retry, "lost the agent; reconnecting")
            }
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(MAX_RETRY);
    }
}

/// One connection: reads messages until the stream ends (or the first, without --watch).
async fn follow(
    socket: &Path,
    out: &Path,
    args: &FetchArgs,
    served_once: &mut bool,
) -> Result<(), Error> {
    let mut client = SpiffeWorkloadApiClient::new(connect(socket).await?);
    let mut req = tonic::Request::new(X509svidRequest {});
    req.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let mut stream = client
        .fetch_x509svid(req)
        .await
        .map_err(|s| status_error(socket, s))?
        .into_inner();
    while let Some(msg) = stream
        .message()
        .await
        .map_err(|s| status_error(socket, s))?
    {
        let svid = msg.svids.into_iter().next().ok_or_else(|| {
            Error::backend(format!("the agent at {} sent no SVID", socket.display()))
        })?;
        write_svid(out, &svid)?;
        *served_once = true;
        if let Some(cmd) = &args.exec {
            run_hook(cmd, out).await;
        }
        if !args.watch {
            return Ok(());
        }
    }
    Ok(())
}

/// The socket path from `unix:///path`, `unix:/path` or a plain path.
pub fn socket_path(s: &str) -> Result<PathBuf, Error> {
    let p = s
        .strip_prefix("unix://")
        .or_else(|| s.strip_prefix("unix:"))
        .unwrap_or(s);
    if p.is_empty() || s.contains("://") && !s.starts_with("unix://") {
        return Err(Error::InvalidInput(format!(
            "'{s}' is not a Unix socket address (expected unix:///path or a path)"
        )));
    }
    Ok(PathBuf::from(p))
}

/// A gRPC channel over the Unix socket at `path`.
pub async fn connect(path: &Path) -> Result<Channel, Error> {
    let path = path.to_path_buf();
    let shown = path.display().to_string();
    Endpoint::from_static("http://keyward-agent")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
        .map_err(|e| {
            Error::unavailable(
                format!("cannot connect to the agent at {shown}"),
                Some(Box::new(e)),
            )
        })
}

/// An error line for a status the agent returned.
fn status_error(socket: &Path, s: Status) -> Error {
    let msg = format!(
        "the agent at {} answered {:?}: {}",
        socket.display(),
        s.code(),
        s.message()
    );
    match s.code() {
        Code::Unavailable | Code::Unknown | Code::Cancelled => Error::unavailable(msg, None),
        _ => Error::backend(msg),
    }
}

/// Writes key.pem, cert.pem and bundle.pem for `svid` into `out`.
fn write_svid(out: &Path, svid: &X509svid) -> Result<(), Error> {
    let chain = split_der(&svid.x509_svid)?;
    let bundle = split_der(&svid.bundle)?;
    let leaf = chain
        .first()
        .ok_or_else(|| Error::backend("the agent sent an empty certificate chain"))?;
    let summary = summarize(leaf)?;
    fsutil::create_private_dir(out)?;
    let key_pem = Zeroizing::new(pem::encode(&pem::Pem::new(
        "PRIVATE KEY",
        svid.x509_svid_key.to_vec(),
    )));
    fsutil::write_atomic(
        &out.join("key.pem"),
        key_pem.as_bytes(),
        fsutil::SECRET_FILE_MODE,
        Replace::Allow,
    )?;
    fsutil::write_atomic(
        &out.join("cert.pem"),
        ders_to_pem(&chain).as_bytes(),
        fsutil::PUBLIC_FILE_MODE,
        Replace::Allow,
    )?;
    fsutil::write_atomic(
        &out.join("bundle.pem"),
        ders_to_pem(&bundle).as_bytes(),
        fsutil::PUBLIC_FILE_MODE,
        Replace::Allow,
    )?;
    let until = summary
        .not_after
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    println!(
        "wrote {} (serial {}, valid until {until}) to {}",
        svid.spiffe_id,
        summary.serial_hex,
        out.display()
    );
    Ok(())
}

/// Runs the `--exec` command; its failure is reported, not fatal.
async fn run_hook(cmd: &str, out: &Path) {
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("KEYWARD_SVID_DIR", out)
        .status()
        .await;
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => tracing::warn!(command = %cmd, status = %s, "the --exec command failed"),
        Err(e) => tracing::warn!(command = %cmd, error = %e, "cannot run the --exec command"),
    }
}

/// Splits concatenated DER certificates.
pub fn split_der(mut data: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    let bad = || Error::backend("the agent sent malformed DER certificates");
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < 2 || data[0] != 0x30 {
            return Err(bad());
        }
        let (len, header) = match data[1] {
            n if n < 0x80 => (n as usize, 2),
            n @ 0x81..=0x84 => {
                let k = (n & 0x7f) as usize;
                let bytes = data.get(2..2 + k).ok_or_else(bad)?;
                (
                    bytes.iter().fold(0usize, |a, b| (a << 8) | *b as usize),
                    2 + k,
                )
            }
            _ => return Err(bad()),
        };
        let total = header
            .checked_add(len)
            .filter(|t| *t <= data.len())
            .ok_or_else(bad)?;
        out.push(data[..total].to_vec());
        data = &data[total..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses() {
        assert_eq!(
            socket_path("unix:///run/a.sock").unwrap(),
            PathBuf::from("/run/a.sock")
        );
        assert_eq!(
            socket_path("unix:/run/a.sock").unwrap(),
            PathBuf::from("/run/a.sock")
        );
        assert_eq!(
            socket_path("/run/a.sock").unwrap(),
            PathBuf::from("/run/a.sock")
        );
        assert!(socket_path("tcp://127.0.0.1:1").is_err());
    }

    #[test]
    fn der_sequences_split() {
        let a = [0x30, 0x03, 1, 2, 3];
        let mut b = vec![0x30, 0x81, 0x80];
        b.extend(std::iter::repeat_n(7u8, 0x80));
        let joined = [a.to_vec(), b.clone()].concat();
        assert_eq!(split_der(&joined).unwrap(), vec![a.to_vec(), b]);
        assert!(split_der(&[0x30, 0x05, 1]).is_err());
    }
}

//! `keyward crypto ...`: a `keyward.v1.KeyService` client for scripts. Each subcommand
//! sends one request to the agent's socket naming a key by its grant and writes the
//! answer to `--out` (created 0600, never over an existing file) or to stdout.

use std::io::{Read, Write};
use std::path::Path;

use keyward_core::fsutil::{Replace, SECRET_FILE_MODE, write_atomic};
use keyward_core::{Error, workload_socket};
use prost::bytes::Bytes;
use spiffe::transport::Endpoint;
use tonic::transport::Channel;

use crate::cli::CryptoCommand;
use crate::daemon::keys::proto::key_service_client::KeyServiceClient;
use crate::daemon::keys::proto::{
    DecryptDataKeyRequest, DecryptRequest, EncryptRequest, GenerateDataKeyRequest,
    PublicKeyRequest, SignRequest, SignX509svidRequest,
};

/// Runs one `keyward crypto` subcommand.
pub async fn run(cmd: &CryptoCommand) -> Result<(), Error> {
    match cmd {
        CryptoCommand::Sign { args, algorithm } => {
            let req = SignRequest {
                key: args.key.clone(),
                message: read_input(args.input.as_deref())?,
                algorithm: algorithm.clone().unwrap_or_default(),
            };
            let r = client(args.socket.as_deref())
                .await?
                .sign(request(req))
                .await;
            write_output(args.out.as_deref(), &answer(&args.key, r)?.signature)
        }
        CryptoCommand::PublicKey { args } => {
            let req = PublicKeyRequest {
                key: args.key.clone(),
            };
            let r = answer(
                &args.key,
                client(args.socket.as_deref())
                    .await?
                    .public_key(request(req))
                    .await,
            )?;
            let pem = pem::encode(&pem::Pem::new("PUBLIC KEY", r.spki_der.to_vec()));
            write_output(args.out.as_deref(), pem.as_bytes())
        }
        CryptoCommand::DataKey { args, wrapped_out } => {
            let req = GenerateDataKeyRequest {
                key: args.key.clone(),
            };
            let r = client(args.socket.as_deref())
                .await?
                .generate_data_key(request(req))
                .await;
            let r = answer(&args.key, r)?;
            write_file(wrapped_out, &r.wrapped, 0o644)?;
            write_output(args.out.as_deref(), &r.plaintext)
        }
        CryptoCommand::Encrypt { args, aad } => {
            let req = EncryptRequest {
                key: args.key.clone(),
                plaintext: read_input(args.input.as_deref())?,
                associated_data: Bytes::from(aad.clone().unwrap_or_default()),
            };
            let r = client(args.socket.as_deref())
                .await?
                .encrypt(request(req))
                .await;
            write_output(args.out.as_deref(), &answer(&args.key, r)?.ciphertext)
        }
        CryptoCommand::Decrypt {
            args,
            aad,
            data_key,
        } => {
            let input = read_input(args.input.as_deref())?;
            let mut c = client(args.socket.as_deref()).await?;
            let plaintext = if *data_key {
                let req = DecryptDataKeyRequest {
                    key: args.key.clone(),
                    wrapped: input,
                };
                answer(&args.key, c.decrypt_data_key(request(req)).await)?.plaintext
            } else {
                let req = DecryptRequest {
                    key: args.key.clone(),
                    ciphertext: input,
                    associated_data: Bytes::from(aad.clone().unwrap_or_default()),
                };
                answer(&args.key, c.decrypt(request(req)).await)?.plaintext
            };
            write_output(args.out.as_deref(), &plaintext)
        }
        CryptoCommand::SvidFromCsr {
            socket,
            input,
            out,
            bundle_out,
        } => {
            let csr = csr_der(&read_input(input.as_deref())?)?;
            let req = SignX509svidRequest { csr: csr.into() };
            let r = client(socket.as_deref())
                .await?
                .sign_x509svid(request(req))
                .await;
            let r = answer("the CSR", r)?;
            if let Some(path) = bundle_out {
                write_file(path, pem_certs(&r.bundle)?.as_bytes(), 0o644)?;
            }
            write_output(out.as_deref(), pem_certs(&r.x509_svid)?.as_bytes())
        }
    }
}

/// A CSR as DER, from PEM (`CERTIFICATE REQUEST`) or DER.
fn csr_der(input: &[u8]) -> Result<Vec<u8>, Error> {
    if !input.trim_ascii_start().starts_with(b"-----BEGIN") {
        return Ok(input.to_vec());
    }
    let block = pem::parse(input)
        .map_err(|e| Error::InvalidInput(format!("the CSR is not valid PEM: {e}")))?;
    if block.tag() != "CERTIFICATE REQUEST" {
        return Err(Error::InvalidInput(format!(
            "the PEM block is '{}', not 'CERTIFICATE REQUEST'",
            block.tag()
        )));
    }
    Ok(block.into_contents())
}

/// Concatenated DER certificates as PEM.
fn pem_certs(ders: &[u8]) -> Result<String, Error> {
    let mut rest = ders;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (after, _) = x509_parser::parse_x509_certificate(rest)
            .map_err(|e| Error::backend(format!("the agent sent a malformed certificate: {e}")))?;
        out.push(rest[..rest.len() - after.len()].to_vec());
        rest = after;
    }
    Ok(keyward_core::check::ders_to_pem(&out))
}

/// A client of the agent at `--socket` (or `SPIFFE_ENDPOINT_SOCKET`).
async fn client(socket: Option<&str>) -> Result<KeyServiceClient<Channel>, Error> {
    let socket = workload_socket::socket_path_or_env(socket, "--socket")?;
    let channel = spiffe::transport::connect(&Endpoint::Unix(socket.clone()))
        .await
        .map_err(|e| {
            Error::backend_with(
                format!("cannot connect to the agent at {}", socket.display()),
                e,
            )
        })?;
    Ok(KeyServiceClient::new(channel))
}

/// `msg` with the header the agent requires of every call.
fn request<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    req
}

/// The response, or the agent's refusal of the request about `what` as one line.
fn answer<T>(what: &str, r: Result<tonic::Response<T>, tonic::Status>) -> Result<T, Error> {
    r.map(tonic::Response::into_inner).map_err(|s| {
        Error::backend(format!(
            "the agent refused '{what}': {:?}: {}",
            s.code(),
            s.message()
        ))
    })
}

/// `--in` (or stdin when absent or `-`).
fn read_input(input: Option<&Path>) -> Result<Bytes, Error> {
    let mut buf = Vec::new();
    match input {
        None => read_stdin(&mut buf)?,
        Some(p) if p == Path::new("-") => read_stdin(&mut buf)?,
        Some(p) => {
            buf = std::fs::read(p)
                .map_err(|e| Error::io(format!("cannot read {}", p.display()), e))?;
        }
    }
    Ok(buf.into())
}

fn read_stdin(buf: &mut Vec<u8>) -> Result<(), Error> {
    std::io::stdin()
        .read_to_end(buf)
        .map(drop)
        .map_err(|e| Error::io("cannot read stdin", e))
}

/// Writes the answer to `--out` (0600) or stdout.
fn write_output(out: Option<&Path>, data: &[u8]) -> Result<(), Error> {
    match out {
        Some(p) => write_file(p, data, SECRET_FILE_MODE),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(data)
                .and_then(|()| out.flush())
                .map_err(|e| Error::io("cannot write stdout", e))
        }
    }
}

/// Writes a new file `path` with `mode`; an existing file is an error.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    write_atomic(path, data, mode, Replace::Refuse)
}

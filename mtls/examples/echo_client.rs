//! A TLS echo client with mutual TLS from the keyward agent.
//!
//! `SPIFFE_ENDPOINT_SOCKET=unix:///run/keyward/agent.sock cargo run -p keyward-rustls
//! --example echo_client -- 127.0.0.1:8443 [--server-id spiffe://example.org/server]
//! [--message hello]`
//!
//! Without `--server-id` any server in the agent's trust domain is accepted. Prints
//! `server: ID` and `echo: MESSAGE`; exits non-zero when the handshake or echo fails.

use std::sync::Arc;

use keyward_rustls::{AgentSource, Authorizer, SpiffeId, client_config, peer_spiffe_id};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .ok_or("usage: echo_client ADDR [--server-id ID] [--message TEXT]")?;
    let (mut server_id, mut message) = (None, "hello".to_string());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--server-id" => {
                server_id = Some(SpiffeId::new(
                    args.next().ok_or("--server-id needs an ID")?,
                )?)
            }
            "--message" => message = args.next().ok_or("--message needs text")?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let authorizer = server_id.map_or_else(Authorizer::any, Authorizer::exact);
    let source = AgentSource::connect(None).await?;
    let config = Arc::new(client_config(&source, authorizer)?);
    let tcp = TcpStream::connect(&addr).await?;
    // SPIFFE servers are named by ID; the name here is only a placeholder for rustls.
    let mut tls = TlsConnector::from(config)
        .connect(ServerName::try_from("spiffe.invalid")?, tcp)
        .await?;
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .ok_or("no server certificate")?[0]
        .clone();
    println!("server: {}", peer_spiffe_id(&peer)?);
    tls.write_all(message.as_bytes()).await?;
    let mut buf = vec![0u8; message.len()];
    tls.read_exact(&mut buf).await?;
    println!("echo: {}", String::from_utf8_lossy(&buf));
    tls.shutdown().await?;
    Ok(())
}

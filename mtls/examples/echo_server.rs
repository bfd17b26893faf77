//! A TLS echo server with mutual TLS from the keyward agent.
//!
//! `SPIFFE_ENDPOINT_SOCKET=unix:///run/keyward/agent.sock cargo run -p keyward-rustls
//! --example echo_server -- [--listen 127.0.0.1:8443] [--allow spiffe://example.org/client]`
//!
//! Without `--allow` any client in the agent's trust domain is accepted. Prints
//! `listening on ADDR` once ready and one line per connection.

use std::sync::Arc;

use keyward_rustls::{AgentSource, Authorizer, SpiffeId, peer_spiffe_id, server_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut listen, mut allow) = ("127.0.0.1:8443".to_string(), Vec::new());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?,
            "--allow" => allow.push(SpiffeId::new(
                args.next().ok_or("--allow needs a SPIFFE ID")?,
            )?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let authorizer = if allow.is_empty() {
        Authorizer::any()
    } else {
        Authorizer::one_of(allow)
    };
    let source = AgentSource::connect(None).await?;
    let acceptor = TlsAcceptor::from(Arc::new(server_config(&source, authorizer)?));
    let listener = TcpListener::bind(&listen).await?;
    println!(
        "listening on {} as {}",
        listener.local_addr()?,
        source.cell().load().spiffe_id()
    );
    loop {
        let (tcp, from) = listener.accept().await?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let result = async {
                let mut tls = acceptor.accept(tcp).await?;
                let peer = tls.get_ref().1.peer_certificates().map(|c| c[0].clone());
                let id = peer
                    .and_then(|p| peer_spiffe_id(&p).ok())
                    .map(|i| i.to_string());
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = tls.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    tls.write_all(&buf[..n]).await?;
                }
                tls.shutdown().await?;
                Ok::<_, std::io::Error>(id.unwrap_or_default())
            }
            .await;
            match result {
                Ok(id) => println!("{from}: served {id}"),
                Err(e) => println!("{from}: refused: {e}"),
            }
        });
    }
}

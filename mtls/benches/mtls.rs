//! keyward-rustls speed: p95 of loading credentials from the cell, building a
//! ServerConfig and verifying a peer chain (against the seed figures 8 / 35 / 75 ms and
//! raw rustls baselines), and full mTLS handshakes per second over loopback TCP with
//! keyward's configs beside static rustls configs built once.
//!
//! `cargo bench -p keyward-rustls --bench mtls`

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use keyward_core::issuance::{self, CaIssuer, ServiceProfile};
use keyward_core::{Algorithm, KeySigner, KeyUri};
use keyward_rustls::{
    Authorizer, CredentialCell, Credentials, PeerVerifier, client_config, provider, server_config,
};
use keyward_software::SoftwareKey;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned,
};
use zeroize::Zeroizing;

/// Chains (leaf, intermediate), keys and the root for a server and a client.
struct Fixture {
    root: Vec<u8>,
    server: (Vec<Vec<u8>>, Zeroizing<Vec<u8>>),
    client: (Vec<Vec<u8>>, Zeroizing<Vec<u8>>),
}

fn key(label: &str) -> (Arc<dyn KeySigner>, Zeroizing<Vec<u8>>) {
    let uri = KeyUri::parse(&format!("file:/nonexistent/bench/{label}.pem")).unwrap();
    let (k, pkcs8) = SoftwareKey::generate(Algorithm::EcdsaP256Sha256, uri).unwrap();
    (Arc::new(k), pkcs8)
}

fn fixture() -> Fixture {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (rk, _) = key("root");
        let root = issuance::self_signed_root(
            rk.clone(),
            "CN=bench root",
            issuance::DEFAULT_ROOT_VALIDITY,
        )
        .await
        .unwrap();
        let root_ca = CaIssuer::new(root.der.clone(), vec![], rk).unwrap();
        let (ik, _) = key("int");
        let int = root_ca
            .issue_intermediate(
                ik.public_key_spki_der(),
                "CN=bench int",
                issuance::DEFAULT_INTERMEDIATE_VALIDITY,
            )
            .await
            .unwrap();
        let int_ca = CaIssuer::new(int.der.clone(), vec![root.der.clone()], ik).unwrap();
        let leaf = async |cn: &str, id: &str| {
            let (k, pkcs8) = key(cn);
            let p = ServiceProfile {
                common_name: cn.into(),
                dns: vec![],
                ips: vec![],
                uris: vec![id.into()],
                validity: Duration::from_secs(3600),
            };
            let c = int_ca
                .issue_service(k.public_key_spki_der(), &p)
                .await
                .unwrap();
            (vec![c.der, int.der.clone()], pkcs8)
        };
        let server = leaf("server.test", "spiffe://example.org/server").await;
        let client = leaf("client.test", "spiffe://example.org/client").await;
        Fixture {
            root: root.der,
            server,
            client,
        }
    })
}

fn creds(f: &Fixture, who: &(Vec<Vec<u8>>, Zeroizing<Vec<u8>>)) -> Credentials {
    let chain: Vec<&[u8]> = who.0.iter().map(|c| c.as_slice()).collect();
    Credentials::from_der(&chain, &who.1, &[&f.root]).unwrap()
}

fn ders(c: &[Vec<u8>]) -> Vec<CertificateDer<'static>> {
    c.iter().map(|d| CertificateDer::from(d.clone())).collect()
}

fn pkcs8(k: &Zeroizing<Vec<u8>>) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(k.to_vec().into())
}

fn roots(f: &Fixture) -> Arc<RootCertStore> {
    let mut r = RootCertStore::empty();
    r.add(CertificateDer::from(f.root.clone())).unwrap();
    Arc::new(r)
}

/// Static rustls configs built once, the usual way (WebPKI verifiers, single cert).
fn static_configs(f: &Fixture) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let p = Arc::new(provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(f), p.clone())
        .build()
        .unwrap();
    let mut s = ServerConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(ders(&f.server.0), pkcs8(&f.server.1))
        .unwrap();
    s.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    s.send_tls13_tickets = 0;
    let mut c = ClientConfig::builder_with_provider(p)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(f))
        .with_client_auth_cert(ders(&f.client.0), pkcs8(&f.client.1))
        .unwrap();
    c.resumption = rustls::client::Resumption::disabled();
    (Arc::new(s), Arc::new(c))
}

/// A blocking echo server on loopback for `config`; runs until the process exits.
fn serve(config: Arc<ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let tcp = tcp.unwrap();
            tcp.set_nodelay(true).unwrap();
            let conn = ServerConnection::new(config.clone()).unwrap();
            let mut tls = StreamOwned::new(conn, tcp);
            let mut buf = [0u8; 4];
            if tls.read_exact(&mut buf).is_ok() {
                let _ = tls.write_all(&buf);
                let _ = tls.flush();
            }
        }
    });
    addr
}

/// One full mTLS handshake plus a 4-byte echo.
fn handshake(addr: SocketAddr, config: &Arc<ClientConfig>) {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = ServerName::try_from("server.test").unwrap();
    let conn = ClientConnection::new(config.clone(), name).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    tls.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
}

/// p95 of `n` timed runs of `f`.
fn p95(n: usize, mut f: impl FnMut()) -> Duration {
    let mut t: Vec<Duration> = (0..n)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    t[n * 95 / 100]
}

fn row(what: &str, seed_ms: f64, ours: Duration, raw: Duration) {
    let ours_ms = ours.as_secs_f64() * 1e3;
    println!(
        "{what:<28} keyward p95 {:>9.3} us | raw rustls p95 {:>9.3} us | seed {seed_ms:>4} ms | {:>8.0}x faster than seed (target >= 100x)",
        ours_ms * 1e3,
        raw.as_secs_f64() * 1e6,
        seed_ms / ours_ms
    );
}

fn summary(f: &Fixture) {
    let cell = CredentialCell::new(creds(f, &f.server));
    let load = p95(20_000, || drop(std::hint::black_box(cell.load())));
    let raw_load = p95(2_000, || drop(std::hint::black_box(creds(f, &f.server))));
    row("load credentials", 8.0, load, raw_load);
    let cfg = p95(2_000, || {
        drop(std::hint::black_box(
            server_config(&cell, Authorizer::any()).unwrap(),
        ))
    });
    let raw_cfg = p95(2_000, || drop(std::hint::black_box(static_configs(f))));
    row("build ServerConfig", 35.0, cfg, raw_cfg);
    let verifier = PeerVerifier::new(CredentialCell::new(creds(f, &f.server)), Authorizer::any());
    let (leaf, rest) = (
        CertificateDer::from(f.client.0[0].clone()),
        ders(&f.client.0[1..]),
    );
    let now = UnixTime::now();
    let verify = p95(5_000, || {
        verifier.verify_peer(&leaf, &rest, now, false).unwrap();
    });
    let raw = WebPkiClientVerifier::builder_with_provider(roots(f), Arc::new(provider()))
        .build()
        .unwrap();
    let raw_verify = p95(5_000, || {
        raw.verify_client_cert(&leaf, &rest, now).unwrap();
    });
    row("verify peer chain", 75.0, verify, raw_verify);
    println!(
        "  (raw columns: Credentials::from_der parse+key load; static client+server config build; WebPkiClientVerifier)"
    );

    // Handshakes per second, interleaved rounds so both see the same machine load.
    let (ss, sc) = static_configs(f);
    let kw_cell_s = CredentialCell::new(creds(f, &f.server));
    let kw_cell_c = CredentialCell::new(creds(f, &f.client));
    let ks = Arc::new(server_config(&kw_cell_s, Authorizer::any()).unwrap());
    let kc = Arc::new(
        client_config(
            &kw_cell_c,
            Authorizer::exact(
                keyward_rustls::SpiffeId::new("spiffe://example.org/server").unwrap(),
            ),
        )
        .unwrap(),
    );
    let (static_addr, kw_addr) = (serve(ss), serve(ks));
    for _ in 0..50 {
        handshake(static_addr, &sc);
        handshake(kw_addr, &kc);
    }
    let (mut st, mut kw) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let n = 200;
        let s = Instant::now();
        (0..n).for_each(|_| handshake(static_addr, &sc));
        st.push(n as f64 / s.elapsed().as_secs_f64());
        let s = Instant::now();
        (0..n).for_each(|_| handshake(kw_addr, &kc));
        kw.push(n as f64 / s.elapsed().as_secs_f64());
    }
    st.sort_by(f64::total_cmp);
    kw.sort_by(f64::total_cmp);
    let (sm, km) = (st[st.len() / 2], kw[kw.len() / 2]);
    println!(
        "mTLS handshakes/s (loopback TCP, median of 10 rounds x 200): keyward {km:.0}/s, static rustls {sm:.0}/s, ratio {:.3} (target >= 0.90)",
        km / sm
    );
}

fn benches(c: &mut Criterion) {
    let f = fixture();
    summary(&f);
    let cell = CredentialCell::new(creds(&f, &f.server));
    c.bench_function("keyward/load_credentials", |b| b.iter(|| cell.load()));
    c.bench_function("keyward/build_server_config", |b| {
        b.iter(|| server_config(&cell, Authorizer::any()).unwrap())
    });
    let verifier = PeerVerifier::new(cell.clone(), Authorizer::any());
    let (leaf, rest) = (
        CertificateDer::from(f.client.0[0].clone()),
        ders(&f.client.0[1..]),
    );
    c.bench_function("keyward/verify_peer_chain", |b| {
        b.iter(|| {
            verifier
                .verify_peer(&leaf, &rest, UnixTime::now(), false)
                .unwrap()
        })
    });
    let raw = WebPkiClientVerifier::builder_with_provider(roots(&f), Arc::new(provider()))
        .build()
        .unwrap();
    c.bench_function("raw/verify_peer_chain", |b| {
        b.iter(|| {
            raw.verify_client_cert(&leaf, &rest, UnixTime::now())
                .unwrap()
        })
    });

    let (ss, sc) = static_configs(&f);
    let kc_cell = CredentialCell::new(creds(&f, &f.client));
    let ks = Arc::new(server_config(&cell, Authorizer::any()).unwrap());
    let kc = Arc::new(client_config(&kc_cell, Authorizer::any()).unwrap());
    let (static_addr, kw_addr) = (serve(ss), serve(ks));
    let mut g = c.benchmark_group("mtls_handshake_loopback");
    g.bench_function("static_rustls", |b| b.iter(|| handshake(static_addr, &sc)));
    g.bench_function("keyward", |b| b.iter(|| handshake(kw_addr, &kc)));
    g.finish();
}

criterion_group!(group, benches);

fn main() {
    group();
    Criterion::default().configure_from_args().final_summary();
}

//! `acme --directory URL --root PEM --http-port P`: complete ACME orders per second
//! against a running agent's ACME server, from C concurrent clients (instant-acme, one
//! account each): new order for `127.0.0.1` (an IP identifier, so no name resolution),
//! http-01 answered by this process on P (the agent's `[acme.testing] http_port`),
//! finalize with a fresh P-256 CSR, certificate download. The script puts the same CA's
//! direct issuance rate beside it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use instant_acme::{
    Account, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};

/// Key authorizations by token, served at `/.well-known/acme-challenge/{token}`.
type Answers = Arc<Mutex<HashMap<String, String>>>;

/// Runs the load for `window` after a warm-up order per client; returns the `kwbench` line.
pub fn run(
    rt: &tokio::runtime::Runtime,
    directory: &str,
    root: &str,
    http_port: u16,
    concurrency: usize,
    window: Duration,
) -> String {
    // Two rustls providers are in the tree; instant-acme takes the process default.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    rt.block_on(async {
        let answers: Answers = Arc::default();
        let responder = Router::new()
            .route("/.well-known/acme-challenge/{token}", get(answer))
            .with_state(answers.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", http_port))
            .await
            .expect("bind the http-01 port");
        tokio::spawn(async move { axum::serve(listener, responder).await });
        let mut accounts = Vec::new();
        for _ in 0..concurrency {
            let (account, _) = Account::builder_with_root(root)
                .expect("root")
                .create(
                    &NewAccount {
                        contact: &[],
                        terms_of_service_agreed: true,
                        only_return_existing: false,
                    },
                    directory.to_string(),
                    None,
                )
                .await
                .expect("create an account");
            complete_order(&account, &answers).await;
            accounts.push(account);
        }
        let start = Instant::now();
        let tasks: Vec<_> = accounts
            .into_iter()
            .map(|account| {
                let answers = answers.clone();
                tokio::spawn(async move {
                    let mut done = 0u64;
                    while start.elapsed() < window {
                        complete_order(&account, &answers).await;
                        done += 1;
                    }
                    done
                })
            })
            .collect();
        let mut orders = 0;
        for t in tasks {
            orders += t.await.expect("client task");
        }
        let secs = start.elapsed().as_secs_f64();
        format!(
            "kwbench row=acme orders_per_s={:.1} orders={orders} clients={concurrency} window_s={secs:.1}",
            orders as f64 / secs
        )
    })
}

async fn answer(
    State(answers): State<Answers>,
    Path(token): Path<String>,
) -> Result<String, StatusCode> {
    let found = answers.lock().expect("answers").get(&token).cloned();
    found.ok_or(StatusCode::NOT_FOUND)
}

/// One order from new-order to the downloaded chain; panics on any failure (a bench
/// with failed orders would measure something else).
async fn complete_order(account: &Account, answers: &Answers) {
    let ids = [Identifier::Ip("127.0.0.1".parse().expect("ip"))];
    let mut order = account
        .new_order(&NewOrder::new(&ids))
        .await
        .expect("new order");
    let mut authorizations = order.authorizations();
    let mut authz = authorizations
        .next()
        .await
        .expect("one authorization")
        .expect("authorization");
    let mut challenge = authz
        .challenge(ChallengeType::Http01)
        .expect("http-01 offered");
    let token = challenge.token.clone();
    let key_authorization = challenge.key_authorization().as_str().to_string();
    answers
        .lock()
        .expect("answers")
        .insert(token.clone(), key_authorization);
    challenge.set_ready().await.expect("set ready");
    let retries = RetryPolicy::new()
        .initial_delay(Duration::from_millis(5))
        .backoff(1.5)
        .timeout(Duration::from_secs(30));
    let status = order.poll_ready(&retries).await.expect("poll");
    assert_eq!(status, OrderStatus::Ready, "the order did not become ready");
    answers.lock().expect("answers").remove(&token);
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).expect("csr");
    order.finalize_csr(csr.der()).await.expect("finalize");
    order.poll_certificate(&retries).await.expect("certificate");
}

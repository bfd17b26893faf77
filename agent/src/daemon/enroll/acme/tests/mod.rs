//! The ACME router driven in-process (tower's `oneshot`, no socket for the server): a
//! small JWS client, a server over a software CA, and an http-01 responder on loopback.
//! The tests: a whole order ([`order_flow`]) and the refusals a client must be able to
//! tell apart by their problem type ([`refusals`]).

mod order_flow;
mod refusals;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use axum::body::Body;
use axum::http::Request;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use keyward_core::KeyUri;
use keyward_core::issuance::{CaIssuer, self_signed_root};
use keyward_software::SoftwareKey;
use tower::ServiceExt;

use super::*;
use crate::daemon::ca::CaView;

const HOST: &str = "acme.test:8443";
const BASE: &str = "https://acme.test:8443";

/// A client account: its key and, once registered, its URL; the last nonce seen.
struct Client {
    app: Router,
    key: EncodingKey,
    jwk: Value,
    kid: Option<String>,
    nonce: String,
}

/// A response: status, headers, body.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn problem_type(&self) -> String {
        self.json()["type"].as_str().unwrap_or("").to_string()
    }
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }
}

async fn send(app: &Router, req: Request<Body>) -> Answer {
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

impl Client {
    async fn new(app: &Router) -> Client {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .unwrap();
        let key = EncodingKey::from_ec_der(pkcs8.as_ref());
        let jwk =
            serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap()).unwrap();
        let head = Request::head("/acme/new-nonce")
            .header("host", HOST)
            .body(Body::empty())
            .unwrap();
        let nonce = send(app, head).await.header("replay-nonce");
        Client {
            app: app.clone(),
            key,
            jwk,
            kid: None,
            nonce,
        }
    }

    /// The flattened JWS of `payload` (None: POST-as-GET) for `url` with `nonce`.
    fn jws(&self, url: &str, payload: Option<&Value>, nonce: &str) -> Vec<u8> {
        let mut protected = json!({"alg": "ES256", "nonce": nonce, "url": url});
        match &self.kid {
            Some(kid) => protected["kid"] = json!(kid),
            None => protected["jwk"] = self.jwk.clone(),
        }
        let protected = B64.encode(protected.to_string());
        let payload = payload
            .map(|p| B64.encode(p.to_string()))
            .unwrap_or_default();
        let message = format!("{protected}.{payload}");
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &self.key, Algorithm::ES256).unwrap();
        json!({"protected": protected, "payload": payload, "signature": signature})
            .to_string()
            .into_bytes()
    }

    async fn post_raw(&mut self, path: &str, body: Vec<u8>) -> Answer {
        let req = Request::post(path)
            .header("host", HOST)
            .header("content-type", "application/jose+json")
            .body(Body::from(body))
            .unwrap();
        let answer = send(&self.app, req).await;
        self.nonce = answer.header("replay-nonce");
        answer
    }

    async fn post(&mut self, path: &str, payload: Option<Value>) -> Answer {
        let url = if path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{BASE}{path}")
        };
        let body = self.jws(&url, payload.as_ref(), &self.nonce.clone());
        self.post_raw(url.trim_start_matches(BASE), body).await
    }

    /// A new order for `name`: its URL, its authorization's URL and http-01 challenge.
    async fn order_with_http01(&mut self, name: &str) -> (String, String, Value) {
        let ids = json!({"identifiers": [{"type": "dns", "value": name}]});
        let order = self.post("/acme/new-order", Some(ids)).await;
        assert_eq!(order.status, StatusCode::CREATED);
        let authz_url = order.json()["authorizations"][0]
            .as_str()
            .unwrap()
            .to_string();
        let authz = self.post(&authz_url, None).await.json();
        (
            order.header("location"),
            authz_url,
            challenge_of(&authz, "http-01"),
        )
    }

    /// The authorization at `url` once it is no longer pending (polled for up to 5 s).
    async fn settled_authz(&mut self, url: &str) -> Value {
        for _ in 0..100 {
            let authz = self.post(url, None).await.json();
            if authz["status"] != "pending" {
                return authz;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("authorization {url} still pending after 5 s");
    }

    async fn register(&mut self) -> Answer {
        let a = self
            .post(
                "/acme/new-account",
                Some(json!({"termsOfServiceAgreed": true})),
            )
            .await;
        self.kid = Some(a.header("location"));
        a
    }
}

/// An ACME server over a fresh state directory and a software root CA; http-01
/// validations go to `http_port` on 127.0.0.1 for any `*.internal` name.
async fn server(http_port: u16) -> (Router, Arc<AcmeState>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path().join("state"));
    drop(state.create_and_lock().unwrap());
    let (key, _) = SoftwareKey::generate(
        keyward_core::Algorithm::EcdsaP256Sha256,
        KeyUri::file("/keyward-test/ca.pem").unwrap(),
    )
    .unwrap();
    let key = Arc::new(key);
    let root = self_signed_root(
        key.clone(),
        "CN=acme test root",
        Duration::from_secs(86_400),
    )
    .await
    .unwrap();
    let issuer = CaIssuer::new(root.der.clone(), Vec::new(), key).unwrap();
    let ca = AgentCa::Fixed(CaView::new(issuer, &[root.der]));
    let resolve: HashMap<String, IpAddr> = ["web.internal", "other.internal"]
        .iter()
        .map(|n| (n.to_string(), IpAddr::V4(Ipv4Addr::LOCALHOST)))
        .collect();
    let settings = AcmeSettings {
        allowed: vec!["*.internal".parse().unwrap(), "10.0.0.0/8".parse().unwrap()],
        validity: Duration::from_secs(3600),
        challenges: vec!["http-01".into(), "tls-alpn-01".into()],
        per_second: 1000.0,
        burst: 1000,
        targets: Targets {
            http_port,
            tls_port: 1,
            resolve,
        },
    };
    let st = AcmeState::new(settings, ca, state, Audit::default()).unwrap();
    (router(st.clone()), st, dir)
}

/// Serves `/.well-known/acme-challenge/{token}` from `answers` on 127.0.0.1.
async fn http01_responder(answers: Arc<std::sync::Mutex<HashMap<String, String>>>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new().route(
        "/.well-known/acme-challenge/{token}",
        get(
            move |axum::extract::Path(token): axum::extract::Path<String>| {
                let answer = answers.lock().unwrap().get(&token).cloned();
                async move { answer.ok_or(StatusCode::NOT_FOUND) }
            },
        ),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// A CSR (base64url DER) for `names` with a new key.
fn csr(names: &[&str]) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    B64.encode(params.serialize_request(&key).unwrap().der())
}

/// The challenge of type `kind` in an authorization object.
fn challenge_of(authz: &Value, kind: &str) -> Value {
    authz["challenges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap()
        .clone()
}

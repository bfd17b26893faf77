//! The benchmark CA key in each backend, opened the way keyward opens it, and beside it
//! the RAW signing interface on the same key: aws-lc-rs directly, cryptoki `C_Sign`,
//! an HTTP POST to `transit/sign`, an aws-sdk-kms `Sign` call. Each raw call returns
//! the signature as X.509 carries it (DER for ECDSA), for the same-work baseline
//! (`same_work.rs`) to put into a certificate. Backends come from the same variables
//! the tests read (scripts/bench.sh starts them).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use cryptoki::context::Pkcs11;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use keyward_core::uri::AwsKmsUri;
use keyward_core::{Algorithm, HashAlg, KeyBackend, KeySigner, KeyUri, ecdsa_raw_to_der};

#[path = "../../backends/pkcs11/benches/common/mod.rs"]
pub(crate) mod softhsm_token;

const P256: Algorithm = Algorithm::EcdsaP256Sha256;

/// One raw signature of a message (X.509 encoding), as an async call.
pub type RawAsync =
    Arc<dyn Fn(Vec<u8>) -> Pin<Box<dyn Future<Output = Vec<u8>> + Send>> + Send + Sync>;

/// One raw signature of a message (X.509 encoding) on a worker's own OS thread:
/// `sign(worker, message)`.
pub type RawBlocking = Arc<dyn Fn(usize, &[u8]) -> Vec<u8> + Send + Sync>;

/// A raw signing baseline: blocking (one OS thread per concurrent signer, each with its
/// own state, e.g. a PKCS#11 session) or async (tokio tasks).
pub enum RawSign {
    /// `sign(worker, message)` on OS threads.
    Threads(RawBlocking),
    /// An async call on tokio tasks.
    Tasks(RawAsync),
}

/// A CA key as keyward opens it, and the raw baseline on the same key.
pub struct CaKey {
    /// keyward's signer.
    pub signer: Arc<dyn KeySigner>,
    /// The raw baseline.
    pub raw: RawSign,
}

/// The value of the variable `name`, which the script that starts the backends sets.
pub(crate) fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} not set: run through scripts/bench.sh (it starts the backends)")
    })
}

/// A name unique to this run, short enough for a SoftHSM token label (32 bytes).
pub(crate) fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// A software key (aws-lc-rs) beside aws-lc-rs signing with the same PKCS#8 key.
pub fn software() -> CaKey {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
    let uri = KeyUri::file("/nonexistent/keyward-bench/ca.pem").expect("uri");
    let (key, pkcs8) = keyward_software::SoftwareKey::generate(P256, uri).expect("CA key");
    let raw = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8).expect("pkcs8");
    let rng = SystemRandom::new();
    CaKey {
        signer: Arc::new(key),
        raw: RawSign::Threads(Arc::new(move |_, msg| {
            raw.sign(&rng, msg)
                .expect("aws-lc-rs sign")
                .as_ref()
                .to_vec()
        })),
    }
}

/// A key on a fresh SoftHSM token (keyward's pool capped at `sessions`) beside raw
/// `C_Sign` on `sessions` sessions of a second cryptoki handle, one per worker thread.
pub async fn softhsm(sessions: usize) -> CaKey {
    let module: PathBuf = softhsm_token::module();
    let label = unique("kwbench");
    softhsm_token::make_token(&label);
    let uri = KeyUri::parse(&format!(
        "pkcs11:token={label};object=ca?module-path={}&pin-value={}&max-sessions={sessions}",
        module.display(),
        softhsm_token::PIN
    ))
    .expect("pkcs11 uri");
    let signer = keyward_pkcs11::Pkcs11Backend::new(None)
        .generate(&uri, P256)
        .await
        .expect("generate the CA key on SoftHSM");
    let (ctx, sessions, key) = softhsm_token::raw_sessions(&module, &label, "ca", sessions);
    let token = RawToken {
        sessions: sessions.into_iter().map(Mutex::new).collect(),
        key,
        _ctx: ctx,
    };
    CaKey {
        signer,
        raw: RawSign::Threads(Arc::new(move |worker, msg| token.sign(worker, msg))),
    }
}

/// Raw sessions on the benchmark token; the handle is kept because dropping the last
/// one finalizes the module (fields drop in order: sessions first).
struct RawToken {
    sessions: Vec<Mutex<Session>>,
    key: ObjectHandle,
    _ctx: Pkcs11,
}

impl RawToken {
    /// One `C_Sign` (CKM_ECDSA over the SHA-256 digest, as keyward signs) on the
    /// worker's own session, its r||s answer encoded as X.509 wants it (DER).
    fn sign(&self, worker: usize, msg: &[u8]) -> Vec<u8> {
        let digest = HashAlg::Sha256.digest(msg);
        let session = self.sessions[worker % self.sessions.len()]
            .lock()
            .expect("session");
        let raw = session
            .sign(&Mechanism::Ecdsa, self.key, &digest)
            .expect("raw C_Sign");
        ecdsa_raw_to_der(&raw).expect("r||s to DER")
    }
}

/// A Transit key beside a hand-written `POST transit/sign/<key>` with the same HTTP
/// client settings keyward uses (`VaultSettings::http_client`).
pub async fn transit() -> CaKey {
    env("KEYWARD_TEST_VAULT_ADDR");
    let settings =
        keyward_vault::VaultSettings::from_env().expect("VAULT_ADDR/VAULT_TOKEN for OpenBao");
    let token = env("VAULT_TOKEN");
    let name = unique("kwbench");
    let uri = KeyUri::parse(&format!("transit:{name}")).expect("transit uri");
    let signer = keyward_vault::TransitBackend::new(&settings)
        .expect("transit backend")
        .generate(&uri, P256)
        .await
        .expect("generate the CA key in Transit");
    let http = settings.http_client().expect("http client");
    let url = Arc::new(format!("{}/v1/transit/sign/{name}", settings.address));
    let token = Arc::new(token);
    CaKey {
        signer,
        raw: RawSign::Tasks(Arc::new(move |msg| {
            let (http, url, token) = (http.clone(), url.clone(), token.clone());
            Box::pin(async move {
                let digest = B64.encode(HashAlg::Sha256.digest(&msg));
                let body = format!(
                    "{{\"input\":\"{digest}\",\"prehashed\":true,\"hash_algorithm\":\"sha2-256\",\
                     \"marshaling_algorithm\":\"asn1\"}}"
                );
                let resp = http
                    .post(url.as_str())
                    .header("X-Vault-Token", token.as_str())
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("raw transit sign");
                assert!(
                    resp.status().is_success(),
                    "raw transit sign: HTTP {}",
                    resp.status()
                );
                let answer: serde_json::Value = resp.json().await.expect("raw transit sign answer");
                let sig = answer["data"]["signature"]
                    .as_str()
                    .and_then(|s| s.strip_prefix("vault:v1:"))
                    .expect("a vault:v1: signature");
                B64.decode(sig).expect("base64 signature")
            })
        })),
    }
}

/// The KMS backend on the endpoint scripts/moto.sh started.
pub(crate) fn kms_backend() -> keyward_awskms::AwsKmsBackend {
    keyward_awskms::AwsKmsBackend::new(keyward_awskms::KmsSettings {
        endpoint: Some(env("KEYWARD_TEST_KMS_ENDPOINT")),
        region: Some("us-east-1".into()),
        ..keyward_awskms::KmsSettings::default()
    })
}

/// keyward's SDK client for the KMS key `kms` (so the raw calls go the same way), and
/// the key's ARN (as keyward names the key in its calls).
pub(crate) async fn kms_raw_client(
    backend: &keyward_awskms::AwsKmsBackend,
    kms: &AwsKmsUri,
) -> (aws_sdk_kms::Client, Arc<str>) {
    let client = backend.sdk_client(kms).await.expect("KMS client");
    let arn: Arc<str> = client
        .describe_key()
        .key_id(kms.key_id())
        .send()
        .await
        .expect("DescribeKey")
        .key_metadata
        .and_then(|m| m.arn)
        .expect("key ARN")
        .into();
    (client, arn)
}

/// A KMS key (moto) beside raw aws-sdk-kms `Sign` calls on the very SDK client keyward
/// uses, sending the message as keyward does for short messages (`MessageType=RAW`).
pub async fn kms() -> CaKey {
    let backend = kms_backend();
    let uri = KeyUri::parse(&format!("awskms:alias/{}", unique("kwbench"))).expect("kms uri");
    let KeyUri::AwsKms(kms) = &uri else {
        unreachable!("an awskms: URI")
    };
    let signer = backend
        .generate(&uri, P256)
        .await
        .expect("generate the CA key in KMS");
    let (client, arn) = kms_raw_client(&backend, kms).await;
    CaKey {
        signer,
        raw: RawSign::Tasks(Arc::new(move |msg| {
            let (client, arn) = (client.clone(), arn.clone());
            Box::pin(async move {
                let out = client
                    .sign()
                    .key_id(&*arn)
                    .message(Blob::new(msg.as_slice()))
                    .message_type(MessageType::Raw)
                    .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
                    .send()
                    .await
                    .expect("raw KMS Sign");
                out.signature.expect("a KMS signature").into_inner()
            })
        })),
    }
}

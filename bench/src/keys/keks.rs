//! The key-encryption keys of the data-key rows, each made the way keyward makes it
//! (`generate_wrapper`), beside the backend's own raw data-key call on the same key:
//!
//! - software: 32 random bytes sealed with aws-lc-rs AES-256-GCM under the KEK file's
//!   key (what keyward's software KEK does, without its per-call file reads);
//! - Transit: `POST transit/datakey/plaintext/<key>` for 256 bits (reqwest, keyward's
//!   HTTP client settings), the plaintext decoded;
//! - KMS (moto): aws-sdk-kms `GenerateDataKey` (AES_256) on keyward's SDK client;
//! - PKCS#11 (SoftHSM): 32 random bytes, a 12-byte IV from `C_GenerateRandom` and
//!   `C_Encrypt` with `CKM_AES_GCM`, on the task's own session.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use aws_lc_rs::aead::{AES_256_GCM, Aad, RandomizedNonceKey};
use aws_sdk_kms::types::DataKeySpec;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use cryptoki::context::Pkcs11;
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keyward_core::uri::Pkcs11Uri;
use keyward_core::wrap::{DATA_KEY_AAD, DATA_KEY_LEN};
use keyward_core::{KeyBackend, KeyUri, KeyWrapper};

use crate::ca_keys::{self, softhsm_token};

/// One raw data key made straight on the backend.
pub(super) enum RawDataKey {
    /// A blocking call on the task's own state: `op(task)`.
    Inline(Arc<dyn Fn(usize) + Send + Sync>),
    /// An async call; true if it gave a 32-byte key.
    Tasks(Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>),
}

/// A KEK as keyward opened it, and the raw baseline on the same key.
pub(super) struct Kek {
    /// The backend, as row and grant names use it.
    pub(super) backend: &'static str,
    /// The KEK's URI (as granted to the agent).
    pub(super) uri: KeyUri,
    /// keyward's wrapper.
    pub(super) wrapper: Arc<dyn KeyWrapper>,
    /// The raw baseline.
    pub(super) raw: RawDataKey,
}

/// A fresh random data key.
fn random_key() -> Vec<u8> {
    let mut key = vec![0u8; DATA_KEY_LEN];
    aws_lc_rs::rand::fill(&mut key).expect("random");
    key
}

/// A software KEK in `dir/kek`.
pub(super) async fn software(dir: &Path) -> Kek {
    let uri = KeyUri::file(dir.join("kek")).expect("uri");
    let wrapper = keyward_software::SoftwareBackend::new()
        .generate_wrapper(&uri)
        .await
        .expect("software KEK");
    let bytes = std::fs::read(dir.join("kek/v1.key")).expect("the KEK file");
    let key = RandomizedNonceKey::new(&AES_256_GCM, &bytes).expect("an AES-256 key");
    let seal = move |_| {
        let mut in_out = random_key();
        let nonce = key
            .seal_in_place_append_tag(Aad::from(DATA_KEY_AAD), &mut in_out)
            .expect("AES-256-GCM seal");
        std::hint::black_box((nonce, in_out));
    };
    Kek {
        backend: "software",
        uri,
        wrapper,
        raw: RawDataKey::Inline(Arc::new(seal)),
    }
}

/// A Transit KEK with a fresh name.
pub(super) async fn transit() -> Kek {
    let name = ca_keys::unique("kwbench-kek");
    let uri = KeyUri::parse(&format!("transit:{name}")).expect("transit uri");
    let settings = keyward_vault::VaultSettings::from_env().expect("VAULT_ADDR/VAULT_TOKEN");
    let wrapper = keyward_vault::TransitBackend::new(&settings)
        .expect("transit backend")
        .generate_wrapper(&uri)
        .await
        .expect("Transit KEK");
    let http = settings.http_client().expect("http client");
    let url: Arc<str> = format!("{}/v1/transit/datakey/plaintext/{name}", settings.address).into();
    let token: Arc<str> = ca_keys::env("VAULT_TOKEN").into();
    Kek {
        backend: "transit",
        uri,
        wrapper,
        raw: RawDataKey::Tasks(Arc::new(move || {
            let (http, url, token) = (http.clone(), url.clone(), token.clone());
            Box::pin(async move { transit_data_key(&http, &url, &token).await })
        })),
    }
}

/// One raw Transit data key; true if the answer holds a 32-byte key and a ciphertext.
async fn transit_data_key(http: &reqwest::Client, url: &str, token: &str) -> bool {
    let answer = http
        .post(url)
        .header("X-Vault-Token", token)
        .header("Content-Type", "application/json")
        .body("{\"bits\":256}")
        .send()
        .await
        .and_then(reqwest::Response::error_for_status);
    let Ok(answer) = answer else { return false };
    let Ok(answer) = answer.json::<serde_json::Value>().await else {
        return false;
    };
    answer["data"]["ciphertext"].is_string()
        && answer["data"]["plaintext"]
            .as_str()
            .and_then(|p| B64.decode(p).ok())
            .is_some_and(|k| k.len() == DATA_KEY_LEN)
}

/// A KMS KEK under a fresh alias.
pub(super) async fn kms() -> Kek {
    let uri = KeyUri::parse(&format!("awskms:alias/{}", ca_keys::unique("kwbench-kek")))
        .expect("kms uri");
    let KeyUri::AwsKms(alias) = &uri else {
        unreachable!("an awskms: URI")
    };
    let backend = ca_keys::kms_backend();
    let wrapper = backend.generate_wrapper(&uri).await.expect("KMS KEK");
    let (client, arn) = ca_keys::kms_raw_client(&backend, alias).await;
    Kek {
        backend: "kms",
        uri: uri.clone(),
        wrapper,
        raw: RawDataKey::Tasks(Arc::new(move || {
            let (client, arn) = (client.clone(), arn.clone());
            Box::pin(async move {
                let out = client
                    .generate_data_key()
                    .key_id(&*arn)
                    .key_spec(DataKeySpec::Aes256)
                    .send()
                    .await;
                out.is_ok_and(|o| {
                    o.plaintext
                        .is_some_and(|p| p.as_ref().len() == DATA_KEY_LEN)
                })
            })
        })),
    }
}

/// A PKCS#11 KEK `object=kek` on the token of `signing` (an existing key there, whose
/// raw sessions are opened the way the signing rows open them), its PIN in `pin_file`;
/// `sessions` raw sessions.
pub(super) async fn pkcs11(signing: &Pkcs11Uri, pin_file: &Path, sessions: usize) -> Kek {
    let module = softhsm_token::module();
    let token = signing.token.clone().expect("a token label");
    let uri = KeyUri::parse(&format!(
        "pkcs11:token={token};object=kek?module-path={}&pin-source=file:{}",
        module.display(),
        pin_file.display()
    ))
    .expect("pkcs11 uri");
    let wrapper = keyward_pkcs11::Pkcs11Backend::new(None)
        .generate_wrapper(&uri)
        .await
        .expect("PKCS#11 KEK");
    let object = signing.object.as_deref().expect("an object label");
    let (ctx, sessions, _) = softhsm_token::raw_sessions(&module, &token, object, sessions);
    let key = sessions[0]
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(b"kek".to_vec()),
        ])
        .expect("find the KEK")[0];
    let raw = RawKek {
        sessions: sessions.into_iter().map(Mutex::new).collect(),
        key,
        _ctx: ctx,
    };
    Kek {
        backend: "pkcs11",
        uri,
        wrapper,
        raw: RawDataKey::Inline(Arc::new(move |task| raw.seal(task))),
    }
}

/// Raw sessions on the KEK's token; the handle is kept because dropping it would
/// finalize the module (fields drop in order: sessions first).
struct RawKek {
    sessions: Vec<Mutex<Session>>,
    key: ObjectHandle,
    _ctx: Pkcs11,
}

impl RawKek {
    /// A fresh data key sealed on the task's own session.
    fn seal(&self, task: usize) {
        let plaintext = random_key();
        let session = self.sessions[task % self.sessions.len()]
            .lock()
            .expect("session");
        let mut iv = session.generate_random_vec(12).expect("C_GenerateRandom");
        let params = GcmParams::new(&mut iv, DATA_KEY_AAD, 128.into()).expect("GCM parameters");
        let sealed = session
            .encrypt(&Mechanism::AesGcm(params), self.key, &plaintext)
            .expect("raw C_Encrypt");
        std::hint::black_box(sealed);
    }
}

//! The same-work baseline of the issuance rows (issue 19): per certificate exactly the
//! steps keyward's issuance takes, done straight with the libraries and the backend's
//! raw signing interface, with none of keyward's own code in between:
//!
//! 1. a new P-256 leaf key (aws-lc-rs `EcdsaKeyPair::generate`);
//! 2. the certificate built and encoded by rcgen, with the profile keyward gives service
//!    certificates (CN, DNS and URI SANs, serverAuth + clientAuth, digitalSignature,
//!    SKI/AKI, a random 16-byte serial, 5 minutes back-dated);
//! 3. its TBS signed with the CA key through the raw interface (`ca_keys`);
//! 4. that signature verified under the CA's public key (aws-lc-rs, the key decoded
//!    once), as keyward's post-issuance check does.
//!
//! The leaf's PKCS#8 encoding, which keyward also produces, is left out: the baseline
//! is the cheapest way to the same certificate. Both sides run on the same tokio tasks
//! and threads. Blocking raw interfaces (aws-lc-rs, `C_Sign`) sign inside rcgen, inline
//! on the task, each task with its own state (e.g. its PKCS#11 session). rcgen signs
//! synchronously, so for async ones (HTTP) rcgen runs twice on the task: once to get
//! the TBS bytes, then, after the awaited signature, again to encode the certificate.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair, ParsedPublicKey,
};
use keyward_core::KeySigner;
use keyward_core::issuance::{CaIssuer, verify_issued};
use rcgen::string::Ia5String;
use rcgen::{
    CertificateParams, Issuer, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SignatureAlgorithm,
    SigningKey,
};

use crate::ca_keys::{CaKey, RawAsync, RawBlocking, RawSign};
use crate::issue::{LEAF_VALIDITY, names};
use crate::measure::{rate_inline, rate_tasks};

#[path = "../../core/benches/common/raw_profile.rs"]
pub(crate) mod raw_profile;

/// What the baseline needs of the benchmark CA: its certificate and its public key,
/// decoded once for aws-lc-rs.
pub struct CaPublic {
    cert_der: Vec<u8>,
    point: Vec<u8>,
    verify: Arc<ParsedPublicKey>,
}

impl CaPublic {
    /// The CA certificate `cert_der`, whose key is `signer`'s (a P-256 key).
    pub fn new(cert_der: Vec<u8>, signer: &dyn KeySigner) -> Self {
        let point = keyward_core::subject_public_key(signer.public_key_spki_der())
            .expect("the CA's public key");
        let verify = ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &point).expect("a P-256 key");
        CaPublic {
            cert_der,
            point,
            verify: Arc::new(verify),
        }
    }

    /// An rcgen issuer for this CA signing with `key`.
    fn issuer<K: SigningKey>(&self, key: K) -> Issuer<'static, K> {
        Issuer::from_ca_cert_der(&self.cert_der.as_slice().into(), key).expect("CA issuer")
    }

    /// Panics unless `sig` over `msg` verifies under the CA key.
    fn check(&self, msg: &[u8], sig: &[u8]) {
        self.verify
            .verify_sig(msg, sig)
            .expect("the raw signature verifies under the CA key");
    }
}

/// A public key as rcgen reads it (the raw P-256 point).
struct P256Public<'a>(&'a [u8]);

impl PublicKeyData for P256Public<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

/// Step 1 and the parameters of step 2 for the `i`-th certificate: a new leaf key and
/// the same profile keyward issues service certificates with.
fn leaf(i: u64) -> (EcdsaKeyPair, CertificateParams) {
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).expect("leaf key");
    let (name, uri) = names(i);
    let sans = vec![
        SanType::DnsName(Ia5String::try_from(name.as_str()).expect("DNS name")),
        SanType::URI(Ia5String::try_from(uri).expect("URI")),
    ];
    let validity = time::Duration::try_from(LEAF_VALIDITY).expect("validity");
    (key, raw_profile::service_params(&name, sans, validity))
}

/// The CA key inside rcgen.
struct CaKeyInRcgen {
    ca: Arc<CaPublic>,
    signs: Signs,
}

/// How [`CaKeyInRcgen`] answers rcgen.
enum Signs {
    /// Through a blocking raw interface on task `worker`'s own state (e.g. its PKCS#11
    /// session), then the verify of step 4.
    Raw { worker: usize, sign: RawBlocking },
    /// As the async baseline's two passes say (see [`TWO_PASS`]).
    TwoPass,
}

impl PublicKeyData for CaKeyInRcgen {
    fn der_bytes(&self) -> &[u8] {
        &self.ca.point
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

impl SigningKey for CaKeyInRcgen {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match &self.signs {
            Signs::Raw { worker, sign } => {
                let sig = sign(*worker, msg);
                self.ca.check(msg, &sig);
                Ok(sig)
            }
            Signs::TwoPass => TWO_PASS.with(|slot| match &mut *slot.borrow_mut() {
                TwoPass::Capture(tbs) => {
                    *tbs = Some(msg.to_vec());
                    Err(rcgen::Error::RemoteKeyError)
                }
                TwoPass::Answer(sig) => Ok(std::mem::take(sig)),
            }),
        }
    }
}

/// The baseline over a blocking raw interface: one rcgen issuer per task.
pub struct ThreadBaseline {
    issuers: Vec<Issuer<'static, CaKeyInRcgen>>,
}

impl ThreadBaseline {
    /// Issuers for `workers` tasks signing through `sign`.
    pub fn new(ca: &Arc<CaPublic>, sign: &RawBlocking, workers: usize) -> Self {
        let issuers = (0..workers)
            .map(|worker| {
                ca.issuer(CaKeyInRcgen {
                    ca: ca.clone(),
                    signs: Signs::Raw {
                        worker,
                        sign: sign.clone(),
                    },
                })
            })
            .collect();
        ThreadBaseline { issuers }
    }

    /// The `i`-th certificate on task `worker`; returns its DER.
    pub fn issue(&self, worker: usize, i: u64) -> Vec<u8> {
        let (key, params) = leaf(i);
        let der = self.sign(worker, &params, &P256Public(key.public_key().as_ref()));
        std::hint::black_box(key);
        der
    }

    /// Steps 2 to 4 on task `worker` for a key given (e.g. by a CSR); returns the DER.
    pub fn sign(
        &self,
        worker: usize,
        params: &CertificateParams,
        subject: &impl PublicKeyData,
    ) -> Vec<u8> {
        let cert = params
            .signed_by(subject, &self.issuers[worker])
            .expect("baseline certificate");
        cert.der().to_vec()
    }
}

thread_local! {
    /// The async baseline's hand-over with rcgen on this thread: the TBS rcgen gave on
    /// the first pass, or the signature it is to use on the second.
    static TWO_PASS: RefCell<TwoPass> = const { RefCell::new(TwoPass::Capture(None)) };
}

enum TwoPass {
    Capture(Option<Vec<u8>>),
    Answer(Vec<u8>),
}

/// The baseline over an async raw interface (HTTP), on tokio tasks.
#[derive(Clone)]
pub struct TaskBaseline {
    issuer: Arc<Issuer<'static, CaKeyInRcgen>>,
    ca: Arc<CaPublic>,
    sign: RawAsync,
}

impl TaskBaseline {
    /// The baseline signing through `sign`.
    pub fn new(ca: &Arc<CaPublic>, sign: &RawAsync) -> Self {
        TaskBaseline {
            issuer: Arc::new(ca.issuer(CaKeyInRcgen {
                ca: ca.clone(),
                signs: Signs::TwoPass,
            })),
            ca: ca.clone(),
            sign: sign.clone(),
        }
    }

    /// The `i`-th certificate; returns its DER.
    pub async fn issue(&self, i: u64) -> Vec<u8> {
        let (key, params) = leaf(i);
        let public = key.public_key().as_ref().to_vec();
        TWO_PASS.with(|slot| *slot.borrow_mut() = TwoPass::Capture(None));
        let first = params.signed_by(&P256Public(&public), &*self.issuer);
        assert!(matches!(first, Err(rcgen::Error::RemoteKeyError)));
        let tbs = TWO_PASS.with(|slot| {
            match std::mem::replace(&mut *slot.borrow_mut(), TwoPass::Capture(None)) {
                TwoPass::Capture(Some(tbs)) => tbs,
                _ => unreachable!("rcgen asked for a signature"),
            }
        });
        let sig = (self.sign)(tbs.clone()).await;
        self.ca.check(&tbs, &sig);
        TWO_PASS.with(|slot| *slot.borrow_mut() = TwoPass::Answer(sig));
        let cert = params
            .signed_by(&P256Public(&public), &*self.issuer)
            .expect("baseline certificate");
        std::hint::black_box(key);
        cert.der().to_vec()
    }
}

/// The same-work baseline on a benchmark CA key, over its raw interface.
pub enum SameWork {
    /// Over a blocking interface, inline on the tasks.
    Threads(Arc<ThreadBaseline>),
    /// Over an async interface, on tokio tasks.
    Tasks(TaskBaseline),
}

impl SameWork {
    /// The baseline for `ca` (whose key is `key.signer`) over `key.raw`, for up to
    /// `workers` concurrent issuers. Checks that its certificates pass keyward's
    /// post-issuance check, i.e. that it does produce the same certificates.
    pub fn new(rt: &tokio::runtime::Runtime, ca: &CaIssuer, key: &CaKey, workers: usize) -> Self {
        let public = Arc::new(CaPublic::new(ca.certificate_der().to_vec(), &*key.signer));
        let baseline = match &key.raw {
            RawSign::Threads(sign) => {
                SameWork::Threads(Arc::new(ThreadBaseline::new(&public, sign, workers)))
            }
            RawSign::Tasks(sign) => SameWork::Tasks(TaskBaseline::new(&public, sign)),
        };
        let der = match &baseline {
            SameWork::Threads(b) => b.issue(0, 0),
            SameWork::Tasks(b) => rt.block_on(b.issue(0)),
        };
        verify_issued(&der, &*key.signer).expect("the baseline's certificate checks out");
        baseline
    }

    /// Certificates per second at `concurrency` over `window`.
    pub fn rate(&self, rt: &tokio::runtime::Runtime, window: Duration, concurrency: usize) -> f64 {
        match self {
            SameWork::Threads(b) => {
                let b = b.clone();
                let op = Arc::new(move |task, i| {
                    std::hint::black_box(b.issue(task, i));
                });
                rt.block_on(rate_inline(window, concurrency, op))
            }
            SameWork::Tasks(b) => {
                let b = b.clone();
                rt.block_on(rate_tasks(window, concurrency, move |_, i| {
                    let b = b.clone();
                    async move {
                        std::hint::black_box(b.issue(i).await);
                    }
                }))
            }
        }
    }
}

//! The current credentials ([`Credentials`]) and the cell every source writes and every
//! handshake reads ([`CredentialCell`]), with the CRLs peers are checked against.

use std::sync::Arc;

use arc_swap::ArcSwap;
use keyward_core::Error;
use rustls::InconsistentKeys;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, TrustAnchor};
use rustls::sign::{CertifiedKey, SigningKey};
use spiffe::{SpiffeId, TrustDomain};
use zeroize::Zeroizing;

use crate::config::provider;
use crate::revocation::RevocationLists;
use crate::verify::peer_spiffe_id;

/// One consistent set of credentials: this workload's chain and key, the trust bundle
/// its peers are checked against, and the SPIFFE trust domain they must belong to.
pub struct Credentials {
    certified: Arc<CertifiedKey>,
    bundle: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
    spiffe_id: SpiffeId,
    trust_domain: TrustDomain,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("spiffe_id", &self.spiffe_id.to_string())
            .field("chain_len", &self.certified.cert.len())
            .field("bundle_len", &self.bundle.len())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Credentials from a chain (leaf first), its private key and the trust bundle. The
    /// leaf must carry exactly one SPIFFE ID URI SAN (its trust domain becomes the
    /// peers' trust domain), the key must match the leaf, and the bundle must hold at
    /// least one usable CA certificate. The key is loaded into the aws-lc-rs provider at
    /// once; no copy of its DER is kept.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        bundle: Vec<CertificateDer<'static>>,
    ) -> Result<Self, Error> {
        let key = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| Error::InvalidInput(format!("private key: {e}")))?;
        Credentials::with_signing_key(chain, key, bundle)
    }

    /// Credentials whose private key is already a rustls signing key: one the
    /// application keeps elsewhere (its own HSM) or one generated in process. The same
    /// checks as [`Credentials::new`]; when the key reports its public key, it must be
    /// the leaf's.
    pub fn with_signing_key(
        chain: Vec<CertificateDer<'static>>,
        key: Arc<dyn SigningKey>,
        bundle: Vec<CertificateDer<'static>>,
    ) -> Result<Self, Error> {
        let leaf = chain
            .first()
            .ok_or_else(|| Error::InvalidInput("the certificate chain is empty".into()))?;
        let spiffe_id = peer_spiffe_id(leaf).map_err(|e| {
            Error::InvalidInput(format!(
                "own certificate: {e}; it needs one spiffe:// URI SAN"
            ))
        })?;
        let trust_domain = spiffe_id.trust_domain().clone();
        if bundle.is_empty() {
            return Err(Error::InvalidInput("the trust bundle is empty".into()));
        }
        let anchors = bundle
            .iter()
            .map(|c| webpki::anchor_from_trusted_cert(c).map(|a| a.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::InvalidInput(format!("trust bundle certificate: {e}")))?;
        let certified = CertifiedKey::new(chain, key);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
            Err(e) => return Err(Error::InvalidInput(format!("private key: {e}"))),
        }
        Ok(Credentials {
            certified: Arc::new(certified),
            bundle,
            anchors,
            spiffe_id,
            trust_domain,
        })
    }

    /// Credentials from PEM text: certificate chain (leaf first), PKCS#8 / SEC1 / PKCS#1
    /// private key, and trust bundle.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], bundle_pem: &[u8]) -> Result<Self, Error> {
        let chain = certs_from_pem(cert_pem, "certificate")?;
        let bundle = certs_from_pem(bundle_pem, "trust bundle")?;
        let key = key_from_pem(key_pem)?;
        Credentials::new(chain, key, bundle)
    }

    /// Credentials from a chain (leaf first), PKCS#8 DER key and bundle, as DER bytes.
    pub fn from_der(
        chain: &[&[u8]],
        pkcs8_key: &Zeroizing<Vec<u8>>,
        bundle: &[&[u8]],
    ) -> Result<Self, Error> {
        let chain = chain
            .iter()
            .map(|c| CertificateDer::from(c.to_vec()))
            .collect();
        let bundle = bundle
            .iter()
            .map(|c| CertificateDer::from(c.to_vec()))
            .collect();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8_key.to_vec()));
        Credentials::new(chain, key, bundle)
    }

    /// The chain presented to peers, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }

    /// The chain and the loaded signing key, as rustls resolvers hand them out.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified
    }

    /// The trust bundle (CA certificates) peers are verified against.
    pub fn bundle(&self) -> &[CertificateDer<'static>] {
        &self.bundle
    }

    /// The bundle as parsed trust anchors (prepared once per update, not per handshake).
    pub(crate) fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    /// This workload's own SPIFFE ID (from its leaf certificate).
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The trust domain peers must belong to.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }
}

/// Parses every `CERTIFICATE` block of `pem_text`; at least one is required.
fn certs_from_pem(pem_text: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let blocks =
        pem::parse_many(pem_text).map_err(|e| Error::InvalidInput(format!("{what} PEM: {e}")))?;
    let certs: Vec<_> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{what} PEM holds no CERTIFICATE block"
        )));
    }
    Ok(certs)
}

/// Parses the first private key block of `pem_text` (the PEM text is never echoed).
fn key_from_pem(pem_text: &[u8]) -> Result<PrivateKeyDer<'static>, Error> {
    let blocks = pem::parse_many(pem_text)
        .map_err(|_| Error::InvalidInput("private key PEM is malformed".into()))?;
    for b in blocks {
        let der = Zeroizing::new(b.contents().to_vec());
        let key = match b.tag() {
            "PRIVATE KEY" => PrivateKeyDer::Pkcs8(der.to_vec().into()),
            "EC PRIVATE KEY" => PrivateKeyDer::Sec1(der.to_vec().into()),
            "RSA PRIVATE KEY" => PrivateKeyDer::Pkcs1(der.to_vec().into()),
            _ => continue,
        };
        return Ok(key);
    }
    Err(Error::InvalidInput(
        "private key PEM holds no private key block".into(),
    ))
}

/// The cell holding the current [`Credentials`] and [`RevocationLists`]: sources swap
/// new ones in, resolvers and verifiers load them on every handshake (a lock-free
/// atomic pointer load). The CRLs are kept apart from the credentials because they
/// change on their own (a revocation upstream changes no SVID). Clones share the cell.
#[derive(Clone)]
pub struct CredentialCell {
    current: Arc<ArcSwap<Credentials>>,
    crls: Arc<ArcSwap<RevocationLists>>,
}

impl std::fmt::Debug for CredentialCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CredentialCell")
            .field(&*self.current.load())
            .field(&*self.crls.load())
            .finish()
    }
}

impl CredentialCell {
    /// A cell holding `initial`, and no CRLs.
    pub fn new(initial: Credentials) -> Self {
        CredentialCell {
            current: Arc::new(ArcSwap::from_pointee(initial)),
            crls: Arc::new(ArcSwap::from_pointee(RevocationLists::empty())),
        }
    }

    /// The current CRLs.
    pub fn crls(&self) -> Arc<RevocationLists> {
        self.crls.load_full()
    }

    /// Replaces the CRLs; the next handshake checks peers against them.
    pub fn store_crls(&self, crls: RevocationLists) {
        self.crls.store(Arc::new(crls));
    }

    /// The current credentials.
    pub fn load(&self) -> Arc<Credentials> {
        self.current.load_full()
    }

    /// Replaces the credentials; the next handshake uses the new ones.
    pub fn store(&self, credentials: Credentials) {
        self.current.store(Arc::new(credentials));
    }
}

impl AsRef<CredentialCell> for CredentialCell {
    fn as_ref(&self) -> &CredentialCell {
        self
    }
}

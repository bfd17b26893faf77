//! Service-certificate issuance as `keyward issue` does it, minus the files: a new
//! P-256 leaf key in memory, then `CaIssuer::issue_service` (which signs through the
//! CA's `KeySigner` and checks the result under the CA key before returning it).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use keyward_core::issuance::{CaIssuer, ServiceProfile, self_signed_root};
use keyward_core::{Algorithm, KeySigner, KeyUri};
use keyward_software::SoftwareKey;

/// Validity of the benchmark's service certificates (and of OpenBao's, for row 3).
pub const LEAF_VALIDITY: Duration = Duration::from_secs(86_400);

/// The names of the `i`-th benchmark certificate: the CN (also a DNS SAN) and a
/// SPIFFE URI SAN, the same for keyward and for OpenBao PKI.
pub fn names(i: u64) -> (String, String) {
    (
        format!("svc-{i}.bench.internal"),
        format!("spiffe://bench.internal/svc-{i}"),
    )
}

/// A root CA over `signer`, ready to issue (it has issued one service certificate).
pub async fn root_issuer(signer: Arc<dyn KeySigner>) -> CaIssuer {
    let root = self_signed_root(
        signer.clone(),
        "CN=keyward bench root",
        Duration::from_secs(365 * 86_400),
    )
    .await
    .expect("self-signed root for the benchmark CA");
    let ca = CaIssuer::new(root.der, Vec::new(), signer).expect("CA issuer");
    issue_one(&ca, 0).await;
    ca
}

/// The name of every leaf key (kept in memory only), made once.
static LEAF_URI: LazyLock<KeyUri> =
    LazyLock::new(|| KeyUri::file("/nonexistent/keyward-bench/leaf.pem").expect("leaf uri"));

/// One service certificate with a fresh leaf key; returns its DER.
pub async fn issue_one(ca: &CaIssuer, i: u64) -> Vec<u8> {
    let (leaf, pkcs8) =
        SoftwareKey::generate(Algorithm::EcdsaP256Sha256, LEAF_URI.clone()).expect("leaf key");
    let (name, uri) = names(i);
    let profile = ServiceProfile {
        common_name: name.clone(),
        dns: vec![name],
        ips: Vec::new(),
        uris: vec![uri],
        validity: LEAF_VALIDITY,
    };
    let cert = ca
        .issue_service(leaf.public_key_spki_der(), &profile)
        .await
        .expect("issue a service certificate");
    std::hint::black_box(pkcs8);
    cert.der
}

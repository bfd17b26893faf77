//! One workload SVID: a new in-memory software key and a certificate whose only URI
//! SAN is the entry's SPIFFE ID. The key exists only in this process (PKCS#8 bytes
//! that are zeroized when the last response holding them is dropped).

use std::sync::Arc;

use keyward_core::issuance::ServiceProfile;
use keyward_core::{Error, KeySigner, KeyUri};
use keyward_software::SoftwareKey;
use prost::bytes::Bytes;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::ca::CaView;
use super::config::WorkloadEntry;
use super::workload_api::X509svid;

/// An issued SVID, ready to be put in responses.
#[derive(Debug)]
pub struct Svid {
    /// The certificate chain, leaf first, DER concatenated.
    pub chain: Bytes,
    /// The leaf certificate alone (DER; a view into `chain`), for the audit log.
    pub leaf: Bytes,
    /// The private key, PKCS#8 DER (zeroized on drop).
    pub key: Bytes,
    /// The leaf's serial number.
    pub serial_hex: String,
    /// The leaf's notAfter.
    pub not_after: OffsetDateTime,
}

impl Svid {
    /// The Workload API message for this SVID of `entry`, with `bundle`.
    pub fn message(&self, entry: &WorkloadEntry, bundle: &Bytes) -> X509svid {
        X509svid {
            spiffe_id: entry.spiffe_id.clone(),
            x509_svid: self.chain.clone(),
            x509_svid_key: self.key.clone(),
            bundle: bundle.clone(),
            hint: entry.hint.clone(),
        }
    }
}

/// The common name of an SVID: the SPIFFE ID when it fits in 64 characters (it is
/// never a DNS name, so it adds no SAN), else its first 61 characters and "...".
fn common_name(id: &str) -> String {
    if id.chars().count() <= 64 {
        id.to_string()
    } else {
        format!("{}...", id.chars().take(61).collect::<String>())
    }
}

/// Issues a new SVID for `entry` from `ca`.
pub async fn issue(ca: &CaView, entry: &WorkloadEntry) -> Result<Arc<Svid>, Error> {
    let alg = entry.algorithm;
    let (spki, pkcs8) =
        tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), Error> {
            let uri = KeyUri::file("/keyward-agent/in-memory-workload-key")?;
            let (key, pkcs8) = SoftwareKey::generate(alg, uri)?;
            Ok((key.public_key_spki_der().to_vec(), pkcs8))
        })
        .await
        .map_err(|e| Error::backend_with("workload key generation task failed", e))??;
    let profile = ServiceProfile {
        common_name: common_name(&entry.spiffe_id),
        dns: entry.dns.clone(),
        ips: entry.ips.clone(),
        uris: vec![entry.spiffe_id.clone()],
        validity: entry.ttl,
    };
    let cert = ca.issuer.issue_service(&spki, &profile).await?;
    let mut chain = cert.der.clone();
    for c in &ca.intermediates {
        chain.extend_from_slice(c);
    }
    let chain = Bytes::from(chain);
    Ok(Arc::new(Svid {
        leaf: chain.slice(..cert.der.len()),
        chain,
        key: Bytes::from_owner(pkcs8),
        serial_hex: cert.serial_hex,
        not_after: cert.not_after,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_ids_are_shortened_for_the_common_name() {
        assert_eq!(
            common_name("spiffe://example.org/api"),
            "spiffe://example.org/api"
        );
        let long = format!("spiffe://example.org/{}", "a".repeat(80));
        let cn = common_name(&long);
        assert_eq!(cn.chars().count(), 64);
        assert!(cn.ends_with("..."));
    }
}

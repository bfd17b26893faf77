//! What the agent answered to `SignX509SVID`, checked before it is served: the leaf
//! carries exactly the held key's public key and the SPIFFE ID asked for, and the
//! chain verifies against the bundle that came with it (for both TLS client and server
//! use). Only then does it become [`Credentials`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use keyward_core::Error;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::sign::SigningKey;
use spiffe::SpiffeId;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::key_service::SignX509SvidResponse;
use crate::credentials::Credentials;
use crate::verify::peer_spiffe_id;

/// Checked credentials, and when their certificate expires.
pub(crate) struct Issued {
    pub(crate) credentials: Credentials,
    pub(crate) not_after: SystemTime,
}

/// Checks the agent's answer for a CSR of `key` (DER SubjectPublicKeyInfo `spki`)
/// asking for `asked`, and makes it credentials served with `key`.
pub(crate) fn accept(
    resp: SignX509SvidResponse,
    key: Arc<dyn SigningKey>,
    spki: &[u8],
    asked: &SpiffeId,
) -> Result<Issued, Error> {
    let wrong = |why: String| Error::Verification(format!("the agent's SVID {why}"));
    let chain = split_certificates(&resp.x509_svid, "SVID chain")?;
    let bundle = split_certificates(&resp.bundle, "trust bundle")?;
    let leaf = &chain[0];
    let (_, cert) =
        X509Certificate::from_der(leaf).map_err(|e| wrong(format!("does not parse: {e}")))?;
    if cert.public_key().raw != spki {
        return Err(wrong("carries another public key than the held key".into()));
    }
    let not_after = SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0));
    let id = peer_spiffe_id(leaf).map_err(wrong)?;
    if id != *asked {
        return Err(wrong(format!("names {id}, not {asked}")));
    }
    let credentials = Credentials::with_signing_key(chain, key, bundle)?;
    verify_chain(&credentials).map_err(|e| wrong(format!("does not chain to its bundle: {e}")))?;
    Ok(Issued {
        credentials,
        not_after,
    })
}

/// Verifies the credentials' own chain against their bundle, now, for both usages.
fn verify_chain(credentials: &Credentials) -> Result<(), webpki::Error> {
    let algorithms = crate::config::provider().signature_verification_algorithms;
    let (leaf, intermediates) = credentials
        .chain()
        .split_first()
        .expect("credentials have a leaf");
    let ee = webpki::EndEntityCert::try_from(leaf)?;
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        ee.verify_for_usage(
            algorithms.all,
            credentials.anchors(),
            intermediates,
            UnixTime::now(),
            usage,
            None,
            None,
        )?;
    }
    Ok(())
}

/// The DER certificates concatenated in `ders` (a Workload API style field).
fn split_certificates(ders: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let mut rest = ders;
    let mut certs = Vec::new();
    while !rest.is_empty() {
        let (after, _) = X509Certificate::from_der(rest).map_err(|e| {
            Error::Verification(format!(
                "the agent's {what} holds a malformed certificate: {e}"
            ))
        })?;
        let len = rest.len() - after.len();
        certs.push(CertificateDer::from(rest[..len].to_vec()));
        rest = after;
    }
    if certs.is_empty() {
        return Err(Error::Verification(format!("the agent's {what} is empty")));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        SanType,
    };

    use super::*;
    use crate::held_key::csr;

    /// A CA: its certificate and an issuer signing with its key.
    fn ca() -> (Vec<u8>, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let der = params.self_signed(&key).unwrap().der().to_vec();
        (der, Issuer::new(params, key))
    }

    /// The agent's answer: a leaf for `spki` naming `id`, issued by `issuer`, with
    /// `bundle`.
    fn answer(
        spki: &[u8],
        id: &str,
        issuer: &Issuer<'_, KeyPair>,
        bundle: &[u8],
    ) -> SignX509SvidResponse {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let public = rcgen::SubjectPublicKeyInfo::from_der(spki).unwrap();
        let leaf = params.signed_by(&public, issuer).unwrap();
        SignX509SvidResponse {
            spiffe_id: id.into(),
            x509_svid: leaf.der().to_vec(),
            bundle: bundle.to_vec(),
        }
    }

    const ID: &str = "spiffe://example.org/app";

    fn check(resp: SignX509SvidResponse, key: Arc<dyn SigningKey>) -> Result<Issued, Error> {
        let spki = csr::spki(&*key).unwrap();
        accept(resp, key, &spki, &SpiffeId::new(ID).unwrap())
    }

    #[test]
    fn an_svid_for_the_held_key_chaining_to_its_bundle_is_accepted() {
        let (root, issuer) = ca();
        let key = csr::generate(keyward_core::Algorithm::EcdsaP256Sha256).unwrap();
        let resp = answer(&csr::spki(&*key).unwrap(), ID, &issuer, &root);
        let issued = check(resp, key).unwrap();
        assert_eq!(issued.credentials.spiffe_id().to_string(), ID);
        assert!(issued.not_after > SystemTime::now());
    }

    #[test]
    fn an_svid_for_another_key_or_id_or_outside_the_bundle_is_refused() {
        let (root, issuer) = ca();
        let (other_root, _) = ca();
        let held = csr::generate(keyward_core::Algorithm::EcdsaP256Sha256).unwrap();
        let other = csr::generate(keyward_core::Algorithm::EcdsaP256Sha256).unwrap();
        let spki = csr::spki(&*held).unwrap();
        let cases = [
            (
                answer(&csr::spki(&*other).unwrap(), ID, &issuer, &root),
                "carries another public key than the held key",
            ),
            (
                answer(&spki, "spiffe://example.org/payments", &issuer, &root),
                "names spiffe://example.org/payments, not spiffe://example.org/app",
            ),
            (
                answer(&spki, ID, &issuer, &other_root),
                "does not chain to its bundle",
            ),
        ];
        for (resp, needle) in cases {
            let e = check(resp, held.clone()).err().expect(needle);
            assert!(matches!(e, Error::Verification(_)), "{e:?}");
            assert!(e.to_string().contains(needle), "{e}");
        }
    }
}

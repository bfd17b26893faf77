//! The held key's side of `SignX509SVID`: keys generated in process, and the PKCS#10
//! request (rcgen) signed with any rustls signing key that reports its public key, so
//! a key in the application's own HSM signs its CSR the same way a generated one does.

use std::sync::Arc;

use keyward_core::{Algorithm, Error, RsaBits};
use rcgen::{
    CertificateParams, DistinguishedName, PublicKeyData, RsaKeySize, SanType, SignatureAlgorithm,
};
use rustls::SignatureScheme;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::SigningKey;
use spiffe::SpiffeId;
use zeroize::Zeroizing;

use crate::config::provider;

/// A new private key of `alg`, generated with aws-lc-rs and loaded into the rustls
/// provider; its PKCS#8 encoding is wiped once loaded. RSA-PSS is refused (rcgen
/// cannot sign a CSR with it).
pub(crate) fn generate(alg: Algorithm) -> Result<Arc<dyn SigningKey>, Error> {
    let rcgen_alg = alg
        .rcgen()
        .ok_or_else(|| Error::Unsupported(format!("{alg} keys cannot sign a CSR")))?;
    let pair = match alg {
        Algorithm::RsaPkcs1Sha256(bits) => {
            let size = match bits {
                RsaBits::B2048 => RsaKeySize::_2048,
                RsaBits::B3072 => RsaKeySize::_3072,
                RsaBits::B4096 => RsaKeySize::_4096,
            };
            rcgen::KeyPair::generate_rsa_for(rcgen_alg, size)
        }
        _ => rcgen::KeyPair::generate_for(rcgen_alg),
    }
    .map_err(|e| Error::backend_with(format!("cannot generate a {alg} key"), e))?;
    let pkcs8 = Zeroizing::new(pair.serialize_der());
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()));
    provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| Error::backend_with(format!("cannot load the generated {alg} key"), e))
}

/// The DER SubjectPublicKeyInfo of `key`; a key that does not report it cannot be used.
pub(crate) fn spki(key: &dyn SigningKey) -> Result<Vec<u8>, Error> {
    key.public_key()
        .map(|k| k.as_ref().to_vec())
        .ok_or_else(|| {
            Error::InvalidInput(
                "the held key does not report its public key (rustls SigningKey::public_key); \
                 a CSR needs it"
                    .into(),
            )
        })
}

/// A DER PKCS#10 request signed by `key`, asking for `spiffe_id` as its one URI SAN and
/// for `dns` names; the subject is empty (the agent names the SVID itself).
pub(crate) fn request(
    key: &dyn SigningKey,
    spiffe_id: &SpiffeId,
    dns: &[String],
) -> Result<Vec<u8>, Error> {
    let signer = CsrSigner::new(key)?;
    let bad = |what: &str, e: rcgen::Error| Error::InvalidInput(format!("{what}: {e}"));
    let mut names = vec![SanType::URI(
        spiffe_id
            .to_string()
            .try_into()
            .map_err(|e| bad("SPIFFE ID", e))?,
    )];
    for d in dns {
        let name = d.as_str().try_into().map_err(|e| bad(d, e))?;
        names.push(SanType::DnsName(name));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = names;
    let csr = params
        .serialize_request(&signer)
        .map_err(|e| Error::backend_with("cannot sign the CSR with the held key", e))?;
    Ok(csr.der().to_vec())
}

/// A rustls signing key seen as rcgen's: the public key it reports, and the TLS
/// signature scheme whose output is also the X.509 signature of the CSR's algorithm.
struct CsrSigner<'a> {
    key: &'a dyn SigningKey,
    public: rcgen::SubjectPublicKeyInfo,
    scheme: SignatureScheme,
}

/// rcgen's algorithm for a public key, and the TLS scheme that signs the same way.
const SCHEMES: [(&SignatureAlgorithm, SignatureScheme); 4] = [
    (
        &rcgen::PKCS_ECDSA_P256_SHA256,
        SignatureScheme::ECDSA_NISTP256_SHA256,
    ),
    (
        &rcgen::PKCS_ECDSA_P384_SHA384,
        SignatureScheme::ECDSA_NISTP384_SHA384,
    ),
    (&rcgen::PKCS_ED25519, SignatureScheme::ED25519),
    (&rcgen::PKCS_RSA_SHA256, SignatureScheme::RSA_PKCS1_SHA256),
];

impl<'a> CsrSigner<'a> {
    fn new(key: &'a dyn SigningKey) -> Result<Self, Error> {
        let public = rcgen::SubjectPublicKeyInfo::from_der(&spki(key)?).map_err(|e| {
            Error::Unsupported(format!("the held key's public key cannot sign a CSR: {e}"))
        })?;
        let scheme = SCHEMES
            .iter()
            .find(|(alg, _)| *alg == public.algorithm())
            .map(|(_, scheme)| *scheme)
            .ok_or_else(|| {
                Error::Unsupported(
                    "the held key is not ECDSA P-256/P-384, Ed25519 or RSA; it cannot sign a CSR"
                        .into(),
                )
            })?;
        Ok(CsrSigner {
            key,
            public,
            scheme,
        })
    }
}

impl PublicKeyData for CsrSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.public.der_bytes()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.public.algorithm()
    }
}

impl rcgen::SigningKey for CsrSigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let signer = self
            .key
            .choose_scheme(&[self.scheme])
            .ok_or(rcgen::Error::RemoteKeyError)?;
        signer.sign(msg).map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_core::RsaBits;
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer;

    #[test]
    fn the_csr_of_every_supported_key_proves_possession_and_asks_for_the_names() {
        let id = SpiffeId::new("spiffe://example.org/app").unwrap();
        for alg in [
            Algorithm::EcdsaP256Sha256,
            Algorithm::EcdsaP384Sha384,
            Algorithm::Ed25519,
            Algorithm::RsaPkcs1Sha256(RsaBits::B2048),
        ] {
            let key = generate(alg).unwrap();
            let der = request(&*key, &id, &["app.internal".into()]).unwrap();
            let (rest, csr) = X509CertificationRequest::from_der(&der).unwrap();
            assert!(rest.is_empty(), "{alg}");
            csr.verify_signature()
                .unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(
                csr.certification_request_info.subject_pki.raw,
                spki(&*key).unwrap(),
                "{alg}"
            );
            let names: Vec<String> = csr
                .requested_extensions()
                .into_iter()
                .flatten()
                .filter_map(|e| match e {
                    ParsedExtension::SubjectAlternativeName(san) => Some(san),
                    _ => None,
                })
                .flat_map(|san| san.general_names.iter().map(GeneralName::to_string))
                .collect();
            assert_eq!(
                names,
                ["URI(spiffe://example.org/app)", "DNSName(app.internal)"],
                "{alg}"
            );
        }
    }

    #[test]
    fn rsa_pss_keys_are_refused_naming_the_algorithm() {
        let e = generate(Algorithm::RsaPssSha256(RsaBits::B2048)).unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
        assert!(e.to_string().contains("rsa-pss"), "{e}");
    }
}

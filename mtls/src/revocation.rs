//! [`RevocationLists`]: the CRLs peers are checked against (the Workload API's `crl`
//! fields, or a `crl.pem` file), and the check itself.
//!
//! rustls-webpki's own CRL check takes the first CRL whose issuer *name* matches and
//! fails the handshake when that CRL does not verify under the issuer's key. In a
//! keyward fleet every generation of every node's intermediate may carry the same
//! name, so a CRL signed by one generation would break every peer issued by another.
//! Here a CRL counts for a certificate only when it names the certificate's issuer,
//! lists the certificate's serial, and verifies under the key of the issuer on the
//! verified path; the signature is checked only then, so the common case (nothing
//! listed) costs a map lookup per certificate.

use keyward_core::{Error, check};
use webpki::{CertRevocationList, OwnedCertRevocationList};

/// A set of CRLs (DER), parsed once when they arrive.
#[derive(Default)]
pub struct RevocationLists {
    crls: Vec<Crl>,
}

struct Crl {
    der: Vec<u8>,
    parsed: CertRevocationList<'static>,
}

impl std::fmt::Debug for RevocationLists {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationLists")
            .field("crls", &self.crls.len())
            .finish()
    }
}

/// One certificate of a verified path, and the CA that issued it there.
pub(crate) struct Issued<'a> {
    /// The certificate's serial number (DER INTEGER contents).
    pub serial: &'a [u8],
    /// The certificate's issuer name (DER, without the outer SEQUENCE).
    pub issuer_name: &'a [u8],
    /// The issuing CA's certificate (an intermediate or the trust anchor's), DER.
    pub issuer: &'a [u8],
}

impl RevocationLists {
    /// No CRLs.
    pub fn empty() -> Self {
        RevocationLists::default()
    }

    /// CRLs from DER; a CRL that does not parse is an error naming its position.
    pub fn from_der<D: AsRef<[u8]>>(ders: impl IntoIterator<Item = D>) -> Result<Self, Error> {
        let crls = ders
            .into_iter()
            .enumerate()
            .map(|(i, der)| {
                let der = der.as_ref().to_vec();
                let parsed = OwnedCertRevocationList::from_der(&der)
                    .map_err(|e| Error::InvalidInput(format!("CRL #{}: {e}", i + 1)))?;
                Ok(Crl {
                    der,
                    parsed: parsed.into(),
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(RevocationLists { crls })
    }

    /// CRLs from the `X509 CRL` blocks of PEM text (none is fine: no CRLs).
    pub fn from_pem(pem_text: &[u8]) -> Result<Self, Error> {
        let blocks =
            pem::parse_many(pem_text).map_err(|e| Error::InvalidInput(format!("CRL PEM: {e}")))?;
        Self::from_der(
            blocks
                .iter()
                .filter(|b| b.tag() == "X509 CRL")
                .map(pem::Pem::contents),
        )
    }

    /// How many CRLs there are.
    pub fn len(&self) -> usize {
        self.crls.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.crls.is_empty()
    }

    /// The serial (hex) of the first certificate of `path` that a CRL of its issuer
    /// lists, if any.
    pub(crate) fn revoked(&self, path: &[Issued<'_>]) -> Option<String> {
        path.iter().find_map(|link| {
            self.crls
                .iter()
                .any(|crl| {
                    crl.parsed.issuer() == link.issuer_name
                        && matches!(crl.parsed.find_serial(link.serial), Ok(Some(_)))
                        && check::read_crl(&crl.der, link.issuer, "of a peer's CA").is_ok()
                })
                .then(|| link.serial.iter().map(|b| format!("{b:02X}")).collect())
        })
    }
}

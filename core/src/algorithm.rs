//! Signature algorithms keyward can issue with, and what each needs from a backend.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// RSA modulus sizes keyward generates and accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RsaBits {
    /// 2048-bit modulus.
    B2048,
    /// 3072-bit modulus.
    B3072,
    /// 4096-bit modulus.
    B4096,
}

impl RsaBits {
    /// The modulus size in bits.
    pub fn bits(self) -> u32 {
        match self {
            RsaBits::B2048 => 2048,
            RsaBits::B3072 => 3072,
            RsaBits::B4096 => 4096,
        }
    }

    /// The size for a modulus of `bits` bits, if keyward supports it.
    pub fn from_bits(bits: u32) -> Option<Self> {
        match bits {
            2048 => Some(RsaBits::B2048),
            3072 => Some(RsaBits::B3072),
            4096 => Some(RsaBits::B4096),
            _ => None,
        }
    }
}

/// The kind of key pair, independent of how it signs (one RSA key can sign PKCS#1 or PSS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// NIST P-256.
    EcP256,
    /// NIST P-384.
    EcP384,
    /// Ed25519.
    Ed25519,
    /// RSA of the given size.
    Rsa(RsaBits),
}

/// Hash functions used by keyward's signature algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlg {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
}

impl HashAlg {
    /// The digest of `message` under this hash.
    pub fn digest(self, message: &[u8]) -> Vec<u8> {
        let alg = match self {
            HashAlg::Sha256 => &aws_lc_rs::digest::SHA256,
            HashAlg::Sha384 => &aws_lc_rs::digest::SHA384,
        };
        aws_lc_rs::digest::digest(alg, message).as_ref().to_vec()
    }
}

/// A key type together with the way it signs: what a `KeySigner` produces.
///
/// Names on the command line: `ecdsa-p256`, `ecdsa-p384`, `ed25519`, `rsa-2048`,
/// `rsa-3072`, `rsa-4096` (PKCS#1 v1.5 with SHA-256), and `rsa-pss-2048`,
/// `rsa-pss-3072`, `rsa-pss-4096` (PSS with SHA-256, MGF1-SHA-256).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// ECDSA on P-256 with SHA-256; signatures DER-encoded.
    EcdsaP256Sha256,
    /// ECDSA on P-384 with SHA-384; signatures DER-encoded.
    EcdsaP384Sha384,
    /// Ed25519 (pure, over the whole message).
    Ed25519,
    /// RSA PKCS#1 v1.5 with SHA-256.
    RsaPkcs1Sha256(RsaBits),
    /// RSA-PSS with SHA-256, MGF1-SHA-256 (certificates cannot be signed this way by rcgen).
    RsaPssSha256(RsaBits),
}

impl Algorithm {
    /// Every algorithm keyward knows, in a stable order.
    pub const ALL: [Algorithm; 9] = [
        Algorithm::EcdsaP256Sha256,
        Algorithm::EcdsaP384Sha384,
        Algorithm::Ed25519,
        Algorithm::RsaPkcs1Sha256(RsaBits::B2048),
        Algorithm::RsaPkcs1Sha256(RsaBits::B3072),
        Algorithm::RsaPkcs1Sha256(RsaBits::B4096),
        Algorithm::RsaPssSha256(RsaBits::B2048),
        Algorithm::RsaPssSha256(RsaBits::B3072),
        Algorithm::RsaPssSha256(RsaBits::B4096),
    ];

    /// The command-line name, e.g. `ecdsa-p256` or `rsa-pss-3072`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::EcdsaP256Sha256 => "ecdsa-p256",
            Algorithm::EcdsaP384Sha384 => "ecdsa-p384",
            Algorithm::Ed25519 => "ed25519",
            Algorithm::RsaPkcs1Sha256(RsaBits::B2048) => "rsa-2048",
            Algorithm::RsaPkcs1Sha256(RsaBits::B3072) => "rsa-3072",
            Algorithm::RsaPkcs1Sha256(RsaBits::B4096) => "rsa-4096",
            Algorithm::RsaPssSha256(RsaBits::B2048) => "rsa-pss-2048",
            Algorithm::RsaPssSha256(RsaBits::B3072) => "rsa-pss-3072",
            Algorithm::RsaPssSha256(RsaBits::B4096) => "rsa-pss-4096",
        }
    }

    /// The key pair this algorithm signs with.
    pub fn key_type(self) -> KeyType {
        match self {
            Algorithm::EcdsaP256Sha256 => KeyType::EcP256,
            Algorithm::EcdsaP384Sha384 => KeyType::EcP384,
            Algorithm::Ed25519 => KeyType::Ed25519,
            Algorithm::RsaPkcs1Sha256(b) | Algorithm::RsaPssSha256(b) => KeyType::Rsa(b),
        }
    }

    /// The default algorithm for a key type: RSA keys sign PKCS#1 v1.5 unless PSS is asked for.
    pub fn default_for(key_type: KeyType) -> Self {
        match key_type {
            KeyType::EcP256 => Algorithm::EcdsaP256Sha256,
            KeyType::EcP384 => Algorithm::EcdsaP384Sha384,
            KeyType::Ed25519 => Algorithm::Ed25519,
            KeyType::Rsa(b) => Algorithm::RsaPkcs1Sha256(b),
        }
    }

    /// The hash applied to the message before signing, or `None` for Ed25519.
    pub fn hash(self) -> Option<HashAlg> {
        match self {
            Algorithm::EcdsaP384Sha384 => Some(HashAlg::Sha384),
            Algorithm::Ed25519 => None,
            _ => Some(HashAlg::Sha256),
        }
    }

    /// rcgen's description of this algorithm, or `None` where rcgen cannot sign
    /// certificates with it (RSA-PSS).
    pub fn rcgen(self) -> Option<&'static rcgen::SignatureAlgorithm> {
        match self {
            Algorithm::EcdsaP256Sha256 => Some(&rcgen::PKCS_ECDSA_P256_SHA256),
            Algorithm::EcdsaP384Sha384 => Some(&rcgen::PKCS_ECDSA_P384_SHA384),
            Algorithm::Ed25519 => Some(&rcgen::PKCS_ED25519),
            Algorithm::RsaPkcs1Sha256(_) => Some(&rcgen::PKCS_RSA_SHA256),
            Algorithm::RsaPssSha256(_) => None,
        }
    }

    /// The aws-lc verification algorithm matching signatures this algorithm produces.
    pub fn verification(self) -> &'static dyn aws_lc_rs::signature::VerificationAlgorithm {
        use aws_lc_rs::signature as s;
        match self {
            Algorithm::EcdsaP256Sha256 => &s::ECDSA_P256_SHA256_ASN1,
            Algorithm::EcdsaP384Sha384 => &s::ECDSA_P384_SHA384_ASN1,
            Algorithm::Ed25519 => &s::ED25519,
            Algorithm::RsaPkcs1Sha256(_) => &s::RSA_PKCS1_2048_8192_SHA256,
            Algorithm::RsaPssSha256(_) => &s::RSA_PSS_2048_8192_SHA256,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Algorithm::ALL.iter().map(|a| a.name()).collect();
                Error::Unsupported(format!(
                    "unknown algorithm '{s}' (expected one of: {})",
                    names.join(", ")
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(a.name().parse::<Algorithm>().unwrap(), a);
        }
    }

    #[test]
    fn unknown_name_lists_the_known_ones() {
        let e = "rsa-1024".parse::<Algorithm>().unwrap_err().to_string();
        assert!(e.contains("'rsa-1024'") && e.contains("ecdsa-p256"), "{e}");
    }

    #[test]
    fn rsa_defaults_to_pkcs1() {
        assert_eq!(
            Algorithm::default_for(KeyType::Rsa(RsaBits::B3072)),
            Algorithm::RsaPkcs1Sha256(RsaBits::B3072)
        );
    }
}

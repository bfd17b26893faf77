//! Key pair templates: what keyward asks of a token when it generates a key pair, and
//! in words which of its requests a module refused.
//!
//! Templates carry what keyward needs (a token object with its label and id, the curve
//! or modulus, a private key that is private, sensitive, never extractable and signs, a
//! public key that verifies) and ask for sign-only usage. A TPM decides itself what its
//! keys may do (tpm2-pkcs11 makes every EC key sign *and* decrypt, and refuses a
//! template that says `CKA_DECRYPT=false` with `CKR_GENERAL_ERROR`): when a token
//! refuses the sign-only template and takes the needs alone, the token is marked as
//! deciding usage itself and later key pairs on it are asked for the needs only. Once
//! per token and process, because each refused `C_GenerateKeyPair` leaves a loaded
//! object behind in tpm2-pkcs11 1.9 (a process that tried it for every key ran the TPM
//! out of object contexts after a few keys).
//!
//! A module answers a refused template with one return code for the whole call, so
//! when generation fails the way a refused attribute would make it fail, each request
//! is left out in turn to find the one it refused; the key pair that then comes out is
//! destroyed and the error names the attribute.

use std::sync::atomic::Ordering;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::Session;
use keyward_core::{Error, KeyType};

use crate::errors::Ckr;
use crate::spki;
use crate::token::{OpError, Token};

/// The key pair generation mechanism for a key type.
pub(crate) fn keygen_mechanism(kt: KeyType) -> Mechanism<'static> {
    match kt {
        KeyType::EcP256 | KeyType::EcP384 => Mechanism::EccKeyPairGen,
        KeyType::Ed25519 => Mechanism::EccEdwardsKeyPairGen,
        KeyType::Rsa(_) => Mechanism::RsaPkcsKeyPairGen,
    }
}

/// Which half of the key pair an attribute is asked for on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Half {
    Public,
    Private,
}

impl Half {
    fn name(self) -> &'static str {
        match self {
            Half::Public => "public",
            Half::Private => "private",
        }
    }
}

/// What keyward asks of every key pair it generates: a private key that is private,
/// sensitive, never extractable and signs, and a public key that verifies.
fn requests() -> Vec<(Half, Attribute)> {
    vec![
        (Half::Private, Attribute::Private(true)),
        (Half::Private, Attribute::Sensitive(true)),
        (Half::Private, Attribute::Extractable(false)),
        (Half::Private, Attribute::Sign(true)),
        (Half::Public, Attribute::Verify(true)),
    ]
}

/// Sign-only usage, asked for where the token lets keyward choose.
fn sign_only() -> Vec<(Half, Attribute)> {
    vec![
        (Half::Private, Attribute::Decrypt(false)),
        (Half::Private, Attribute::Unwrap(false)),
        (Half::Private, Attribute::Derive(false)),
        (Half::Public, Attribute::Encrypt(false)),
        (Half::Public, Attribute::Wrap(false)),
    ]
}

/// `CKA_SENSITIVE=true on the private key`.
fn describe(half: Half, attribute: &Attribute) -> String {
    let value = match attribute {
        Attribute::Private(b)
        | Attribute::Sensitive(b)
        | Attribute::Extractable(b)
        | Attribute::Sign(b)
        | Attribute::Verify(b)
        | Attribute::Decrypt(b)
        | Attribute::Encrypt(b)
        | Attribute::Derive(b)
        | Attribute::Wrap(b)
        | Attribute::Unwrap(b) => format!("={b}"),
        _ => String::new(),
    };
    format!(
        "{}{value} on the {} key",
        attribute.attribute_type(),
        half.name()
    )
}

/// A key pair to generate: the token objects' label and id and the key's parameters.
pub(crate) struct KeyPairSpec<'a> {
    pub(crate) key_type: KeyType,
    pub(crate) label: &'a str,
    pub(crate) id: &'a [u8],
    /// Attributes of the private key beyond keyward's own requests (tests use it to
    /// offer a module an attribute it refuses).
    pub(crate) extra_private: Vec<Attribute>,
}

impl KeyPairSpec<'_> {
    /// What this spec asks for beyond the objects' identity and the key's parameters.
    fn asked(&self) -> Vec<(Half, Attribute)> {
        let mut asked = requests();
        asked.extend(
            self.extra_private
                .iter()
                .map(|a| (Half::Private, a.clone())),
        );
        asked
    }

    /// The public and private templates, leaving out the `skip`th of `asked`.
    fn templates(
        &self,
        asked: &[(Half, Attribute)],
        skip: Option<usize>,
    ) -> (Vec<Attribute>, Vec<Attribute>) {
        let common = || {
            vec![
                Attribute::Token(true),
                Attribute::Label(self.label.as_bytes().to_vec()),
                Attribute::Id(self.id.to_vec()),
            ]
        };
        let mut public = common();
        match self.key_type {
            KeyType::EcP256 => public.push(Attribute::EcParams(spki::P256_PARAMS.to_vec())),
            KeyType::EcP384 => public.push(Attribute::EcParams(spki::P384_PARAMS.to_vec())),
            KeyType::Ed25519 => public.push(Attribute::EcParams(spki::ED25519_PARAMS.to_vec())),
            KeyType::Rsa(bits) => public.extend([
                Attribute::ModulusBits(u64::from(bits.bits()).into()),
                Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            ]),
        }
        let mut private = common();
        for (i, (half, attribute)) in asked.iter().enumerate() {
            if Some(i) == skip {
                continue;
            }
            match half {
                Half::Public => public.push(attribute.clone()),
                Half::Private => private.push(attribute.clone()),
            }
        }
        (public, private)
    }

    /// Generates the key pair as token objects on `token` and returns the private key's
    /// handle: sign-only unless the token decides usage itself (see the module
    /// comment). When the module refuses keyward's needs, the error names the refused
    /// attribute.
    pub(crate) fn generate(&self, s: &Session, token: &Token) -> Result<ObjectHandle, OpError> {
        let mechanism = keygen_mechanism(self.key_type);
        let asked = self.asked();
        let mut refused_sign_only = false;
        if !token.decides_usage.load(Ordering::Acquire) {
            let mut wished = asked.clone();
            wished.extend(sign_only());
            let (public, private) = self.templates(&wished, None);
            match s.generate_key_pair(&mechanism, &public, &private) {
                Ok((_, private)) => return Ok(private),
                Err(e) if looks_like_refused_template(&e) => refused_sign_only = true,
                Err(e) => return Err(e.into()),
            }
        }
        let (public, private) = self.templates(&asked, None);
        let e = match s.generate_key_pair(&mechanism, &public, &private) {
            Ok((_, private)) => {
                if refused_sign_only {
                    token.decides_usage.store(true, Ordering::Release);
                    tracing::info!(token = %token.label, "the token decides key usage itself: it refused a sign-only key pair");
                }
                return Ok(private);
            }
            Err(e) if looks_like_refused_template(&e) => e,
            Err(e) => return Err(e.into()),
        };
        let token = &token.describe();
        for (i, (half, attribute)) in asked.iter().enumerate() {
            let (public, private) = self.templates(&asked, Some(i));
            if let Ok((pub_handle, priv_handle)) =
                s.generate_key_pair(&mechanism, &public, &private)
            {
                let _ = s.destroy_object(priv_handle);
                let _ = s.destroy_object(pub_handle);
                // A failure that went away by itself (a busy store) is not a refusal.
                let (public, private) = self.templates(&asked, None);
                if let Ok((_, private)) = s.generate_key_pair(&mechanism, &public, &private) {
                    return Ok(private);
                }
                return Err(refused(token, &describe(*half, attribute), e).into());
            }
        }
        Err(e.into())
    }
}

/// Return codes with which modules answer a template they refuse (tpm2-pkcs11 answers
/// a mismatch with the TPM's own attributes with `CKR_GENERAL_ERROR`).
pub(crate) fn looks_like_refused_template(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::AttributeValueInvalid
                | RvError::AttributeTypeInvalid
                | RvError::AttributeReadOnly
                | RvError::TemplateInconsistent
                | RvError::GeneralError
                | RvError::FunctionFailed,
            _
        )
    )
}

/// The error for a template attribute the token refused, with the module's code as the
/// source.
fn refused(token: &str, what: &str, e: CkError) -> Error {
    let message = format!("{token} refuses {what} when generating a key pair");
    match e {
        CkError::Pkcs11(rv, function) => Error::backend_with(
            format!("{message} ({})", Ckr { rv, function }),
            Ckr { rv, function },
        ),
        other => Error::backend_with(message, other),
    }
}

#[cfg(test)]
mod tests;

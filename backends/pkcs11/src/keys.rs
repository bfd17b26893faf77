//! Creating and opening keys: generating key pairs, finding key objects on a token by
//! label and id, and reading what kind of key they are.

use std::sync::Arc;

use cryptoki::mechanism::MechanismType;
use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keyward_core::uri::{ObjectClass as UriClass, Pkcs11Uri};
use keyward_core::{Algorithm, Error, KeySigner, KeyType, RsaBits};

use crate::Pkcs11Backend;
use crate::signer::{Pkcs11Signer, sign_mechanism_type};
use crate::spki::{self, Curve};
use crate::templates::{KeyPairSpec, keygen_mechanism};
use crate::token::OpError;

impl Pkcs11Backend {
    /// Generates a key pair for `alg` labelled as `p11` says (with its `id=`, or a random
    /// one) and opens it; a label or id already taken is `AlreadyExists`.
    pub(crate) async fn generate_key(
        &self,
        p11: &Pkcs11Uri,
        alg: Algorithm,
    ) -> Result<Arc<dyn KeySigner>, Error> {
        self.generate_key_with(p11, alg, Vec::new()).await
    }

    /// [`generate_key`](Self::generate_key) with `extra_private` added to the private
    /// key's template (tests offer a module an attribute it refuses this way).
    pub(crate) async fn generate_key_with(
        &self,
        p11: &Pkcs11Uri,
        alg: Algorithm,
        extra_private: Vec<Attribute>,
    ) -> Result<Arc<dyn KeySigner>, Error> {
        let label = p11.object.clone().ok_or_else(|| {
            Error::InvalidUri("generating a PKCS#11 key needs object=LABEL in the URI".into())
        })?;
        let locator = KeyLocator::from_uri(p11)?;
        let (token, module) = self.token(p11).await?;
        token.require(
            keygen_mechanism_type(alg.key_type()),
            &format!("generating {alg} keys"),
        )?;
        token.require(sign_mechanism_type(alg), &format!("{alg} signatures"))?;
        token.require_key_size(alg)?;
        let desc = token.describe();
        let what_desc = format!("generating {alg} {} on {desc}", locator.describe());
        let t = Arc::clone(&token);
        let found = token
            .blocking(
                move || what_desc.clone(),
                move |s, generation| {
                    let _one_at_a_time = t.generate_lock.lock();
                    let by_label = KeyLocator {
                        label: Some(label.clone()),
                        id: None,
                    };
                    if by_label.find_private(s, &desc)?.is_some() {
                        return Err(Error::AlreadyExists(format!(
                            "a private key labelled '{label}' is already on {desc}"
                        ))
                        .into());
                    }
                    let id = match &locator.id {
                        Some(id) => {
                            let by_id = KeyLocator {
                                label: None,
                                id: Some(id.clone()),
                            };
                            if by_id.find_private(s, &desc)?.is_some() {
                                return Err(Error::AlreadyExists(format!(
                                    "a private key with id {} is already on {desc}",
                                    hex::encode(id)
                                ))
                                .into());
                            }
                            id.clone()
                        }
                        None => s.generate_random_vec(16)?,
                    };
                    let spec = KeyPairSpec {
                        key_type: alg.key_type(),
                        label: &label,
                        id: &id,
                        extra_private: extra_private.clone(),
                    };
                    let handle = spec.generate(s, &t)?;
                    let shown = format!("the private key '{label}' on {desc}");
                    if let Err(e) = check_protected(s, handle, &shown) {
                        let _ = s.destroy_object(handle);
                        return Err(e);
                    }
                    FoundKey::read(s, handle, generation, &desc)
                },
            )
            .await?;
        tracing::info!(token = %token.label, key = %found.key.label, id = %hex::encode(&found.key.id), algorithm = %alg, "generated PKCS#11 key pair");
        Ok(Arc::new(Pkcs11Signer::new(
            token, p11, &module, found, alg,
        )?))
    }

    /// Opens the private key `p11` names; RSA keys sign PKCS#1 v1.5.
    pub(crate) async fn open_key(&self, p11: &Pkcs11Uri) -> Result<Arc<dyn KeySigner>, Error> {
        let locator = KeyLocator::from_uri(p11)?;
        let (token, module) = self.token(p11).await?;
        let desc = token.describe();
        let what_desc = format!("opening {} on {desc}", locator.describe());
        let found = token
            .blocking(
                move || what_desc.clone(),
                move |s, generation| {
                    let handle = locator.require_private(s, &desc)?;
                    FoundKey::read(s, handle, generation, &desc)
                },
            )
            .await?;
        let alg = Algorithm::default_for(found.key.key_type);
        Ok(Arc::new(Pkcs11Signer::new(
            token, p11, &module, found, alg,
        )?))
    }
}

/// How a URI names its key: `object=` (CKA_LABEL) and/or `id=` (CKA_ID).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyLocator {
    pub(crate) label: Option<String>,
    pub(crate) id: Option<Vec<u8>>,
}

impl KeyLocator {
    /// The key part of a URI; a URI naming neither label nor id is refused, and so is
    /// one whose `type=` is not `private`.
    pub(crate) fn from_uri(uri: &Pkcs11Uri) -> Result<Self, Error> {
        if uri.object.is_none() && uri.id.is_none() {
            return Err(Error::InvalidUri(format!(
                "pkcs11 URI names no key on {}: add object=LABEL and/or id=%xx..",
                uri.token_description()
            )));
        }
        if uri.class.is_some_and(|c| c != UriClass::PrivateKey) {
            return Err(Error::InvalidUri(
                "a signing key URI must name a private key (type=private or no type=)".into(),
            ));
        }
        Ok(KeyLocator {
            label: uri.object.clone(),
            id: uri.id.clone(),
        })
    }

    /// `key 'root-ca'`, `key with id 0a0b`, or `key 'root-ca' with id 0a0b`.
    pub(crate) fn describe(&self) -> String {
        match (&self.label, &self.id) {
            (Some(l), None) => format!("key '{l}'"),
            (None, Some(id)) => format!("key with id {}", hex::encode(id)),
            (Some(l), Some(id)) => format!("key '{l}' with id {}", hex::encode(id)),
            (None, None) => "key".into(),
        }
    }

    fn template(&self, class: ObjectClass) -> Vec<Attribute> {
        let mut t = vec![Attribute::Class(class)];
        if let Some(l) = &self.label {
            t.push(Attribute::Label(l.as_bytes().to_vec()));
        }
        if let Some(id) = &self.id {
            t.push(Attribute::Id(id.clone()));
        }
        t
    }

    /// The private key this locator names, `None` if there is none; several matches are
    /// an error (the URI must say which one).
    pub(crate) fn find_private(
        &self,
        s: &Session,
        token: &str,
    ) -> Result<Option<ObjectHandle>, OpError> {
        let found = s.find_objects(&self.template(ObjectClass::PRIVATE_KEY))?;
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            many => Err(Error::backend(format!(
                "{} private keys match {} on {token}; add id= to the URI to choose one",
                many.len(),
                self.describe()
            ))
            .into()),
        }
    }

    /// Like [`find_private`](Self::find_private), with a missing key as `NotFound`.
    pub(crate) fn require_private(
        &self,
        s: &Session,
        token: &str,
    ) -> Result<ObjectHandle, OpError> {
        self.find_private(s, token)?.ok_or_else(|| {
            Error::NotFound(format!("no private {} on {token}", self.describe())).into()
        })
    }
}

/// A private key's label, id, kind and public key.
#[derive(Debug)]
pub(crate) struct KeyDesc {
    pub(crate) label: String,
    pub(crate) id: Vec<u8>,
    pub(crate) key_type: KeyType,
    pub(crate) spki: Vec<u8>,
}

impl KeyDesc {
    /// The locator naming this key by its actual label and id.
    pub(crate) fn locator(&self) -> KeyLocator {
        KeyLocator {
            label: (!self.label.is_empty()).then(|| self.label.clone()),
            id: (!self.id.is_empty()).then(|| self.id.clone()),
        }
    }
}

/// A private key found (or just generated) on a token.
pub(crate) struct FoundKey {
    pub(crate) handle: ObjectHandle,
    /// The pool generation in which `handle` was found.
    pub(crate) generation: u64,
    pub(crate) key: KeyDesc,
}

impl FoundKey {
    /// Reads the private key `handle` (see [`describe_private`]), found in pool
    /// generation `generation`.
    fn read(
        s: &Session,
        handle: ObjectHandle,
        generation: u64,
        token: &str,
    ) -> Result<Self, OpError> {
        let key = describe_private(s, handle, token)?;
        Ok(FoundKey {
            handle,
            generation,
            key,
        })
    }
}

/// Reads what kind of key `handle` is and builds its public key. EC public points are
/// not attributes of private keys, so they come from the public key object with the
/// same `CKA_ID` (or, without an id, the same label).
fn describe_private(s: &Session, handle: ObjectHandle, token: &str) -> Result<KeyDesc, OpError> {
    let attrs = s.get_attributes(
        handle,
        &[
            AttributeType::KeyType,
            AttributeType::Label,
            AttributeType::Id,
            AttributeType::EcParams,
            AttributeType::Modulus,
            AttributeType::PublicExponent,
        ],
    )?;
    let mut kt = None;
    let (mut label, mut id, mut params, mut modulus, mut exponent) =
        (Vec::new(), Vec::new(), None, None, None);
    for a in attrs {
        match a {
            Attribute::KeyType(t) => kt = Some(t),
            Attribute::Label(l) => label = l,
            Attribute::Id(i) => id = i,
            Attribute::EcParams(p) => params = Some(p),
            Attribute::Modulus(m) => modulus = Some(m),
            Attribute::PublicExponent(e) => exponent = Some(e),
            _ => {}
        }
    }
    let label = String::from_utf8_lossy(&label).into_owned();
    let shown = format!("key '{label}' on {token}");
    let (key_type, spki) = match kt {
        Some(CkKeyType::RSA) => {
            let (Some(n), Some(e)) = (modulus, exponent) else {
                return Err(Error::backend(format!(
                    "{shown}: the token does not reveal the RSA modulus and exponent"
                ))
                .into());
            };
            let bits = spki::bit_len(&n);
            let size = RsaBits::from_bits(bits).ok_or_else(|| {
                Error::Unsupported(format!(
                    "{shown} is RSA-{bits}; keyward uses RSA-2048, 3072 or 4096"
                ))
            })?;
            (KeyType::Rsa(size), keyward_core::der::rsa_spki(&n, &e))
        }
        Some(CkKeyType::EC) | Some(CkKeyType::EC_EDWARDS) => {
            let params = params.unwrap_or_default();
            let curve = Curve::from_params(&params).ok_or_else(|| {
                Error::Unsupported(format!(
                    "{shown} is on a curve keyward does not use (CKA_EC_PARAMS {}); keyward uses P-256, P-384 and Ed25519",
                    hex::encode(&params)
                ))
            })?;
            let point = public_point(s, &label, &id, &shown)?;
            let key_type = match curve {
                Curve::P256 => KeyType::EcP256,
                Curve::P384 => KeyType::EcP384,
                Curve::Ed25519 => KeyType::Ed25519,
            };
            (key_type, spki::ec_spki(curve, &point)?)
        }
        Some(other) => {
            return Err(Error::Unsupported(format!(
                "{shown} has key type {other}; keyward signs with RSA, EC and Ed25519 keys"
            ))
            .into());
        }
        None => {
            return Err(Error::backend(format!("{shown} has no readable CKA_KEY_TYPE")).into());
        }
    };
    Ok(KeyDesc {
        label,
        id,
        key_type,
        spki,
    })
}

/// `CKA_EC_POINT` of the public key that pairs with a private key.
fn public_point(s: &Session, label: &str, id: &[u8], shown: &str) -> Result<Vec<u8>, OpError> {
    let mut template = vec![Attribute::Class(ObjectClass::PUBLIC_KEY)];
    if id.is_empty() {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    } else {
        template.push(Attribute::Id(id.to_vec()));
    }
    for handle in s.find_objects(&template)? {
        for a in s.get_attributes(handle, &[AttributeType::EcPoint])? {
            if let Attribute::EcPoint(p) = a {
                return Ok(p);
            }
        }
    }
    Err(Error::backend(format!(
        "{shown}: its public key object (same CKA_ID) is not on the token; keyward needs it to know the public key"
    ))
    .into())
}

/// The type of [`keygen_mechanism`], to check against the token's list before use.
fn keygen_mechanism_type(kt: KeyType) -> MechanismType {
    keygen_mechanism(kt).mechanism_type()
}

/// Checks what the token says of a key it just generated (the private key of a pair, or
/// a secret key): it must be sensitive and not extractable, whatever the module chose
/// to set itself.
pub(crate) fn check_protected(
    s: &Session,
    handle: ObjectHandle,
    shown: &str,
) -> Result<(), OpError> {
    let attrs = s.get_attributes(
        handle,
        &[AttributeType::Sensitive, AttributeType::Extractable],
    )?;
    let (mut sensitive, mut extractable) = (None, None);
    for a in attrs {
        match a {
            Attribute::Sensitive(b) => sensitive = Some(b),
            Attribute::Extractable(b) => extractable = Some(b),
            _ => {}
        }
    }
    if sensitive == Some(true) && extractable == Some(false) {
        return Ok(());
    }
    let flag = |v: Option<bool>| v.map_or_else(|| "unreadable".to_string(), |b| b.to_string());
    Err(Error::backend(format!(
        "{shown} came out with CKA_SENSITIVE={} and CKA_EXTRACTABLE={}; keyward requires a sensitive, non-extractable key",
        flag(sensitive),
        flag(extractable)
    ))
    .into())
}

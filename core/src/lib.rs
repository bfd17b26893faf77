//! keyward-core: the [`KeySigner`]/[`KeyBackend`] abstraction every backend implements,
//! the [`KeyWrapper`] of key-encryption keys, key URIs, certificate issuance and checks,
//! and the state store.
//!
//! This crate depends on no backend; backends depend on it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod algorithm;
pub mod audit;
pub mod backoff;
pub mod backup;
pub mod check;
pub mod der;
mod error;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
pub mod issuance;
mod signer;
pub mod store;
pub mod uri;
mod verify;
pub mod workload_socket;
pub mod wrap;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use algorithm::{Algorithm, HashAlg, KeyType, RsaBits};
pub use check::CertSummary;
pub use error::{BoxError, Error, chain_line};
pub use issuance::{CaIssuer, IssuedCertificate, ServiceProfile};
pub use signer::{KeyBackend, KeySigner};
pub use uri::KeyUri;
pub use verify::{ecdsa_der_to_raw, ecdsa_raw_to_der, subject_public_key, verify_signature};
pub use wrap::{DataKey, KeyWrapper};

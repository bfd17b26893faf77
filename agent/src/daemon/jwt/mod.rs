//! JWT-SVIDs: the signing keys the Workload API uses (`keys`; the generation engine
//! rotates them), their JWKS (`jwk`), tokens signed and checked through `KeySigner`
//! (`token`) and the three Workload API calls (`service`).

mod jwk;
pub mod keys;
pub mod names;
pub mod service;
mod token;

pub use keys::KeySet;
pub use names::{self as naming, jose_name};

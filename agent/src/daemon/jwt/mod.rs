//! JWT-SVIDs: signing keys that rotate with an overlap (`keys`, `record`), their JWKS
//! (`jwk`), tokens signed and checked through `KeySigner` (`token`) and the three
//! Workload API calls (`service`).

mod jwk;
mod keys;
pub mod names;
mod record;
pub mod service;
mod token;

pub use keys::{JwtKeys, KeySet};
pub use names::{self as naming, jose_name};

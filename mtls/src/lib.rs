//! Mutual TLS for rustls applications, fed by the keyward agent or by credential files.
//!
//! One [`CredentialCell`] holds the current credentials (certificate chain, private key,
//! trust bundle, SPIFFE trust domain) and the CRLs peers are checked against
//! ([`RevocationLists`]). An [`AgentSource`] fills it from the SPIFFE Workload API
//! streams; a [`HeldKeySource`] fills it with SVIDs the agent signs for a key this
//! process keeps (`SignX509SVID`); a [`FileSource`] fills it from the PEM files
//! `keyward issue` or `keyward fetch` write. [`server_config`] and [`client_config`]
//! build rustls configurations whose certificate resolvers and peer verifiers read the
//! cell on every handshake, so a rotated certificate or bundle takes effect on the next
//! handshake without a new config object. Peers are authorized by SPIFFE ID ([`Authorizer`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod agent;
mod agent_crls;
mod authorizer;
mod config;
mod credentials;
mod files;
mod held_key;
mod revocation;
mod verify;

pub use agent::AgentSource;
pub use authorizer::Authorizer;
pub use config::{client_config, provider, server_config};
pub use credentials::{CredentialCell, Credentials};
pub use files::{DEFAULT_POLL, FileSource};
pub use held_key::{HeldKey, HeldKeyOptions, HeldKeySource};
pub use revocation::RevocationLists;
pub use spiffe::{SpiffeId, TrustDomain};
pub use verify::{PeerVerifier, peer_spiffe_id};

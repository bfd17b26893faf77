//! keyward-vault: keys in a Vault/OpenBao Transit engine (`transit:` URIs), and Vault's
//! PKI engine as the upstream authority that signs keyward intermediates.
//!
//! - [`VaultSettings`]: the address of a server or of each node of a cluster, TLS (CA
//!   file, client certificate), namespace, auth (token, token file, AppRole) and the
//!   per-operation deadline, from code or from `VAULT_*`/`BAO_*` variables.
//! - [`VaultClient`]: one HTTP client and token per server or cluster; the token is
//!   renewed in the background before its lease ends and obtained again (AppRole login,
//!   token file) when renewal fails. Requests move on to the next node of a cluster when
//!   one is down, sealed or without a leader, and are retried with exponential backoff
//!   on 5xx and network errors only, within the deadline. Tokens are zeroized and never
//!   logged.
//! - [`TransitBackend`] / [`TransitSigner`]: the `KeyBackend` and `KeySigner` of
//!   Transit keys (ECDSA P-256/P-384, Ed25519, RSA 2048/3072/4096 PKCS#1 v1.5 or PSS);
//!   [`TransitKek`]: an `aes256-gcm96` Transit key as a `KeyWrapper`.
//! - [`sign_intermediate_upstream`]: an intermediate CSR signed by Vault PKI;
//!   [`fetch_crl_with`]: the PKI engine's CRL, for fleet revocation.
//!
//! Files by role (every backend crate uses the same names for the same roles):
//! - `transit/mod.rs`: [`TransitBackend`], the `KeyBackend` of `transit:` URIs;
//! - `transit/keys.rs`: creating and opening Transit keys;
//! - `transit/signer.rs`: [`TransitSigner`], the `KeySigner` of one key version;
//! - `transit/wrapper.rs`: [`TransitKek`], the `KeyWrapper` of a key-encryption key;
//! - `settings/mod.rs`: [`VaultSettings`] and its parts (`settings/tests.rs`: its tests);
//! - `addresses.rs`: a cluster's node addresses, normalised, without duplicates;
//! - `client/nodes.rs`: the node a request starts at, and where a redirect may lead;
//! - `client/retry.rs`: retries with back-off within the deadline, moving from node to
//!   node of a cluster, for every request;
//! - `client/errors.rs`: Vault's answers in keyward's `Error`;
//! - `client/mod.rs`, `client/auth.rs`, `client/renewal.rs`: the HTTP client, logins
//!   and token renewal, shared by Transit and PKI;
//! - `pki.rs`: Vault PKI as the upstream authority.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod addresses;
mod client;
mod pki;
mod settings;
mod transit;

pub use client::{AuthStatus, VaultClient};
pub use pki::{
    UpstreamChain, VaultPkiUpstream, check_role, fetch_crl_with, published_roots,
    sign_intermediate_upstream, sign_intermediate_with,
};
pub use settings::{
    AppRoleAuth, ClientCertificate, DEFAULT_APPROLE_MOUNT, DEFAULT_DEADLINE, VaultAuth,
    VaultSettings,
};
pub use transit::{TransitBackend, TransitKek, TransitSigner};

//! keyward-vault: keys in a Vault/OpenBao Transit engine (`transit:` URIs), and Vault's
//! PKI engine as the upstream authority that signs keyward intermediates.
//!
//! - [`VaultSettings`]: address, TLS (CA file, client certificate), namespace, auth
//!   (token, token file, AppRole) and the per-operation deadline, from code or from
//!   `VAULT_*`/`BAO_*` variables.
//! - [`VaultClient`]: one HTTP client and token per server; the token is renewed in the
//!   background before its lease ends and obtained again (AppRole login, token file)
//!   when renewal fails. Requests are retried with exponential backoff on 5xx and network
//!   errors only, within the deadline. Tokens are zeroized and never logged.
//! - [`TransitBackend`] / [`TransitSigner`]: the `KeyBackend` and `KeySigner` of
//!   Transit keys (ECDSA P-256/P-384, Ed25519, RSA 2048/3072/4096 PKCS#1 v1.5 or PSS).
//! - [`sign_intermediate_upstream`]: an intermediate CSR signed by Vault PKI.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod pki;
mod settings;
mod transit;

pub use client::{AuthStatus, VaultClient};
pub use pki::{
    UpstreamChain, VaultPkiUpstream, sign_intermediate_upstream, sign_intermediate_with,
};
pub use settings::{
    AppRoleAuth, ClientCertificate, DEFAULT_APPROLE_MOUNT, DEFAULT_DEADLINE, VaultAuth,
    VaultSettings,
};
pub use transit::{TransitBackend, TransitSigner};

//! Encrypted backups of a state directory (`keyward backup` / `keyward restore`).
//!
//! One archive file holds everything needed to rebuild a state directory: every regular
//! file in it (CA certificates and manifest, inventory and issued certificates, pending
//! records, the agent's records, audit logs kept there) and the private keys of the
//! software (`file:`) CA keys the CA manifest names, even when they live outside the
//! directory. Keys held in an HSM, KMS or Vault are recorded by URI only; their bytes
//! never leave the backend.
//!
//! # File format (version 1)
//!
//! A fixed 52-byte header, then the ciphertext. Integers are big-endian.
//!
//! ```text
//! offset size  field
//!  0      8    magic "KWBACKUP"
//!  8      2    format version (1)
//! 10      1    KDF id: 1 = Argon2id (version 0x13)
//! 11      4    Argon2 memory cost, KiB
//! 15      4    Argon2 time cost (passes)
//! 19      4    Argon2 parallelism (lanes)
//! 23     16    salt, random per archive
//! 39      1    AEAD id: 1 = ChaCha20-Poly1305 (RFC 8439)
//! 40     12    nonce, random
//! 52      ..   the encrypted payload followed by the 16-byte Poly1305 tag
//! ```
//!
//! The key is Argon2id(passphrase, salt, params), 32 bytes. The whole header is the
//! AEAD's associated data, so changing any header byte (parameters, salt, nonce) fails
//! the tag check like a change to the ciphertext does. The salt is fresh for every
//! archive, so every archive has its own key and a random nonce can never repeat
//! under one key. A wrong passphrase and a damaged archive look the same to the AEAD.
//!
//! # Payload (the plaintext)
//!
//! ```text
//! 0      4    manifest length N
//! 4      N    the manifest: JSON, [`ArchiveManifest`]
//! 4+N    ..   the contents of every file entry, then of every key entry that has its own
//!             contents, in manifest order, back to back
//! ```
//!
//! Each entry records its size and SHA-256; [`Payload::decode`] checks them all (and that
//! every path is a plain relative path) before anything is restored.

mod collect;
mod crypto;
mod keycheck;
mod payload;
mod restore;

pub use collect::{Collected, collect};
pub use crypto::{HEADER_LEN, KdfParams, MAGIC, check_header, open, seal};
pub use payload::{ArchiveManifest, ArchivedFile, ArchivedKey, Payload};
pub use restore::{KeyOutcome, RestorePlan, RestoreReport, check_restore_target, plan_restore};

/// The `format` value in every manifest.
pub const FORMAT_NAME: &str = "keyward-backup";
/// The manifest version this build writes and reads.
pub const MANIFEST_VERSION: u32 = 1;

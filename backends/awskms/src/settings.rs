//! keyward's own settings for the AWS KMS backend, layered over the AWS configuration chain.

use std::time::Duration;

/// How the AWS KMS backend reaches KMS and how hard it tries.
///
/// Region, endpoint and profile left `None` come from the standard AWS chain
/// (`AWS_REGION`, `AWS_ENDPOINT_URL_KMS`/`AWS_ENDPOINT_URL`, `AWS_PROFILE`, the shared
/// config files). A key URI's `?region=`, `?endpoint=` and `?profile=` win over these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsSettings {
    /// Region override (e.g. `eu-west-1`).
    pub region: Option<String>,
    /// Endpoint override (e.g. `http://127.0.0.1:5000` for a KMS-compatible server).
    pub endpoint: Option<String>,
    /// Shared-config profile override.
    pub profile: Option<String>,
    /// At most this many KMS requests in flight from this backend at once.
    pub max_concurrency: usize,
    /// Upper bound on one operation (waiting for a slot, every attempt and every
    /// back-off included); past it the operation fails as `Unavailable`.
    pub deadline: Duration,
    /// Messages up to this many bytes are sent whole (`MessageType=RAW`, KMS hashes
    /// them); longer ones are hashed here and sent as `DIGEST`. KMS accepts RAW
    /// messages up to 4096 bytes, so only raise this for a KMS-compatible server that
    /// takes longer RAW messages and mishandles DIGEST (moto hashes digests again).
    pub raw_message_limit: usize,
}

impl KmsSettings {
    /// The largest message AWS KMS accepts with `MessageType=RAW`.
    pub const KMS_RAW_LIMIT: usize = 4096;
    /// The default bound on one operation.
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
    /// The default number of KMS requests in flight at once.
    pub const DEFAULT_MAX_CONCURRENCY: usize = 16;
}

impl Default for KmsSettings {
    fn default() -> Self {
        KmsSettings {
            region: None,
            endpoint: None,
            profile: None,
            max_concurrency: Self::DEFAULT_MAX_CONCURRENCY,
            deadline: Self::DEFAULT_DEADLINE,
            raw_message_limit: Self::KMS_RAW_LIMIT,
        }
    }
}

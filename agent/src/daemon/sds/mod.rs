//! Envoy's Secret Discovery Service (SDS v3) on the agent's socket, next to the
//! Workload API, so Envoy and the meshes built on it take their certificates from the
//! agent as they take them from SPIRE's agent: the same caller gate, the same
//! snapshots (a rotation is pushed to every stream that asked for the SVID), and
//! resources named as SPIRE names them (`resources`).

#[allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
pub mod proto;
mod resources;
mod service;
mod subscription;

pub use resources::SECRET_TYPE_URL;
pub use service::SecretDiscovery;

/// The SDS methods whose request is a stream of messages that stays open: the socket's
/// request deadline covers their first message only (`limits::layer`).
pub const STREAMING_REQUEST_PATHS: [&str; 2] = [
    "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets",
    "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets",
];

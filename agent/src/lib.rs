//! The parts of the `keyward` binary that are plain data handling, as a library: the
//! agent's configuration (with the duration syntax and selectors it uses), caller
//! attestation, and the generated Workload API messages. The binary uses them from
//! here; the fuzz targets in `fuzz/` and the regression tests reach them the same way.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod duration;

/// The agent daemon's modules that need no runtime state (the rest live in the binary).
pub mod daemon {
    pub mod attest;
    pub mod config;
    pub mod jwt_names;
    pub mod selectors;
    #[allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
    pub mod workload_api;
}

#[doc(hidden)]
pub mod fuzzing;

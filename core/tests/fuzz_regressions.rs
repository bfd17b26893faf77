//! Replays every saved fuzz input through the same entry functions the fuzz targets call
//! (`keyward_core::fuzzing`): the seed corpora in `fuzz/corpus/TARGET/` and the crashes
//! found so far in `fuzz/regressions/TARGET/`. A crash that comes back fails here, in
//! the ordinary test run, without cargo-fuzz or a nightly toolchain.

use std::path::PathBuf;

use keyward_core::fuzzing::replay;

/// Runs `entry` on every input saved for `target` (see `keyward_core::fuzzing::replay`).
fn replay_saved(target: &str, entry: fn(&[u8])) {
    replay(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz"),
        target,
        entry,
    );
}

#[test]
fn key_uri_inputs_pass() {
    replay_saved("key_uri", keyward_core::fuzzing::key_uri);
}

#[test]
fn csr_inputs_pass() {
    replay_saved("csr", keyward_core::fuzzing::csr);
}

#[test]
fn verify_inputs_pass() {
    replay_saved("verify", keyward_core::fuzzing::verify);
}

//! Replays every saved fuzz input through the same entry functions the fuzz targets call
//! (`keyward::fuzzing`): the seed corpora in `fuzz/corpus/TARGET/` and the crashes
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
fn agent_config_inputs_pass() {
    replay_saved("agent_config", keyward::fuzzing::agent_config);
}

#[test]
fn workload_request_inputs_pass() {
    replay_saved("workload_request", keyward::fuzzing::workload_request);
}

//! Replays every saved fuzz input through the same entry functions the fuzz targets call
//! (`keyward::fuzzing`): the seed corpora in `fuzz/corpus/TARGET/` and the crashes
//! found so far in `fuzz/regressions/TARGET/`. A crash that comes back fails here, in
//! the ordinary test run, without cargo-fuzz or a nightly toolchain.

use std::path::PathBuf;

/// The inputs saved for `target`: its seed corpus and its regressions.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("read a fuzz input directory").path();
            let data = std::fs::read(&path).expect("read a fuzz input");
            out.push((path, data));
        }
    }
    out.sort();
    out
}

/// Runs `entry` on every input saved for `target`, naming the input that fails.
fn replay(target: &str, entry: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(
        !inputs.is_empty(),
        "no saved inputs for fuzz target {target} (fuzz/corpus/{target}/ is empty?)"
    );
    for (path, data) in inputs {
        if std::panic::catch_unwind(|| entry(&data)).is_err() {
            panic!("fuzz input {} fails target {target}", path.display());
        }
    }
}

#[test]
fn agent_config_inputs_pass() {
    replay("agent_config", keyward::fuzzing::agent_config);
}

#[test]
fn workload_request_inputs_pass() {
    replay("workload_request", keyward::fuzzing::workload_request);
}

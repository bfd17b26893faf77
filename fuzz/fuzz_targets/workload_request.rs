//! Fuzz target `workload_request`: see `keyward::fuzzing::workload_request` for what it checks.
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward::fuzzing::workload_request(data));

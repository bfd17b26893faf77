//! Fuzz target `agent_config`: see `keyward::fuzzing::agent_config` for what it checks.
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward::fuzzing::agent_config(data));

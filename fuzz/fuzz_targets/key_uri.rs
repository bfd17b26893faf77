//! Fuzz target `key_uri`: see `keyward_core::fuzzing::key_uri` for what it checks.
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_core::fuzzing::key_uri(data));

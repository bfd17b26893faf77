//! Fuzz target `verify`: see `keyward_core::fuzzing::verify` for what it checks.
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_core::fuzzing::verify(data));

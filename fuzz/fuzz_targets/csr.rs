//! Fuzz target `csr`: see `keyward_core::fuzzing::csr` for what it checks.
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_core::fuzzing::csr(data));

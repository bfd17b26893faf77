//! The `keyward` binary's code, as a library: the command line (`cli`), one module per
//! group of commands (`commands`), the backend registry (`backends`) and the agent
//! daemon (`daemon`). `main.rs` only hands the process to [`commands::main`]; the fuzz
//! targets in `fuzz/` and the tests reach the parsers the same way.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backends;
pub mod cli;
pub mod commands;
pub mod daemon;
pub mod duration;

#[doc(hidden)]
pub mod fuzzing;

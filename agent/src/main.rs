//! The `keyward` binary: the security team's CLI and the agent daemon, both in the
//! library (`keyward::commands`).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    keyward::commands::main()
}

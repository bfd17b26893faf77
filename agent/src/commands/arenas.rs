//! Two malloc arenas for the long-running commands (`keyward agent`, `keyward up`).
//!
//! glibc gives each new thread its own malloc arena (up to eight per core), and memory
//! freed in one arena is never reused by threads of another. The agent parses its
//! configuration on the main thread (tens of megabytes of parser garbage at 10,000
//! entries), issues and serves on the runtime's workers, and rates certificates on
//! blocking threads: each arena keeps its own freed pages resident, which measured as
//! a third of the agent's memory at 10,000 workloads. With a limit of two, threads share
//! two arenas' freed pages. One arena kept the least memory, but then every allocation
//! too large for glibc's per-thread cache (a Workload API fetch makes two: a future of
//! tonic's per-connection service stack and the response's write buffer) takes the one
//! arena's lock, which both runtime workers queue on: with path+uid entries at 10,000
//! workloads, paired 3 s loads gave 0.64-0.77 of the raw server with one arena and
//! 0.71-0.83 with two, for 14.2-14.6 MB instead of 13.2-13.7 MB at 1,000 workloads and
//! 47 MB instead of 35 MB at 10,000 (README, benchmarks).
//!
//! glibc reads `MALLOC_ARENA_MAX` only from the environment at process start, and
//! setting it from inside (mallopt) needs unsafe code, so the process executes itself
//! once with the variable set. A value the caller set (in a systemd unit, say) is left
//! alone; exporting `MALLOC_ARENA_MAX` with any value opts out of the re-exec.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

/// The environment variable glibc reads its arena limit from.
const ARENA_MAX_VAR: &str = "MALLOC_ARENA_MAX";
/// The limit the agent runs with.
const AGENT_ARENAS: &str = "2";

/// Executes this program again with `MALLOC_ARENA_MAX` set, unless the environment
/// already names a limit or the C library is not glibc. Returns only if nothing was
/// executed (or the exec failed, which is reported on stderr: the agent then runs with
/// glibc's default arenas).
pub fn limit_for_daemon() {
    if !cfg!(target_env = "gnu") || std::env::var_os(ARENA_MAX_VAR).is_some() {
        return;
    }
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| OsString::from("keyward"));
    // By the executable's own name, so the process keeps it (`ps`, `pgrep keyward`:
    // the kernel names a process after the file it executed); `/proc/self/exe`, this
    // very file, only when that name no longer resolves.
    let program = std::env::current_exe()
        .ok()
        .filter(|p| p.is_file())
        .unwrap_or_else(|| "/proc/self/exe".into());
    let err = std::process::Command::new(program)
        .arg0(arg0)
        .args(args)
        .env(ARENA_MAX_VAR, AGENT_ARENAS)
        .exec();
    eprintln!(
        "warning: cannot re-execute with {ARENA_MAX_VAR}={AGENT_ARENAS}, running with glibc's default malloc arenas: {err}"
    );
}

//! One malloc arena for the long-running commands (`keyward agent`, `keyward up`).
//!
//! glibc gives each new thread its own malloc arena (up to eight per core), and memory
//! freed in one arena is never reused by threads of another. The agent parses its
//! configuration on the main thread (tens of megabytes of parser garbage at 10,000
//! entries), issues and serves on the runtime's workers, and rates certificates on
//! blocking threads: each arena keeps its own freed pages resident, which measured as
//! a third of the agent's memory at 10,000 workloads. With one arena every thread reuses
//! the same freed pages (glibc's per-thread caches keep the common small allocations
//! off the arena lock; the Workload API bench rows measure the effect on speed).
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
const AGENT_ARENAS: &str = "1";

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

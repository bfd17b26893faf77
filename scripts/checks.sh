#!/usr/bin/env bash
# The checks scripts/test.sh runs once the backends are up (through scripts/with-backends.sh):
# formatting, lints, the build, the whole workspace's tests, and bounded fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s (%ss)\n' "$*" "$SECONDS"; }

# Disk: a CI run once ran out of space building the fuzz targets. Measured on a fresh
# clone: the debug build took 6.6 GB, 2.8 GB of it rustc's incremental cache, which
# one full run gains nothing from; the fuzz build adds 2.0 GB. So no incremental cache
# unless asked for, and the fuzz build gets the debug build's space when it needs it.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

step "formatting and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "building"
cargo build --workspace --all-targets --locked

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  # Two tests a core: most of the suite waits (on backends, timers, failovers). On the
  # 2-core VM, 4 threads with the raft tests in their group (.config/nextest.toml) ran
  # the suite in 341 s against 606 s at 2 threads, the CPUs busy 56% of the time
  # (2026-12-07).
  cargo nextest run --workspace --locked --no-fail-fast --failure-output final \
    --test-threads "${KEYWARD_TEST_THREADS:-$((2 * $(nproc)))}"
else
  cargo test --workspace --locked --no-fail-fast
fi
step "fuzzing (bounded)"
# Free MB where the fuzz build writes (fuzz/target), and the debug build's directory.
free_mb=$(df -Pm fuzz | awk 'NR == 2 { print $4 }')
debug_dir=${CARGO_TARGET_DIR:-target}/debug
if [ "$free_mb" -lt 3000 ]; then
  echo "$free_mb MB free for the fuzz build (2.0 GB): removing $debug_dir (the tests have run)"
  rm -rf "$debug_dir"
fi
scripts/fuzz.sh "${KEYWARD_FUZZ_SECONDS:-20}"
step "done"

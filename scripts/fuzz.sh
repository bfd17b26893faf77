#!/usr/bin/env bash
# Builds the cargo-fuzz targets in fuzz/ and runs each one for a bounded time (as many
# at once as there are cores), starting from its checked-in seed corpus
# (fuzz/corpus/TARGET) plus its saved crashes (fuzz/regressions/TARGET). Fails if any
# target crashes, leaks past the memory limit or hangs; the input that did it is left in
# fuzz/artifacts/TARGET/ (git-ignored).
#
# usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default 20 s, every target)
#        scripts/fuzz.sh --build-only                         (builds the targets, runs none)
#
# A crash found here becomes a regression test: copy the artifact into
# fuzz/regressions/TARGET/, fix the code, and `cargo test` replays it from then on
# (core/tests/fuzz_regressions.rs, agent/tests/fuzz_regressions.rs).
#
# The targets are libFuzzer binaries (libfuzzer-sys) built with the coverage
# instrumentation cargo-fuzz would add, straight with cargo (fuzz/Cargo.toml's `ci`
# profile), so CI needs no cargo-fuzz install; without AddressSanitizer (keyward forbids
# unsafe code), which keeps the build to a few minutes. `cargo fuzz run TARGET` in fuzz/
# works too, for longer sessions.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BUILD_ONLY=
if [ "${1:-}" = --build-only ]; then
  BUILD_ONLY=1
  shift
fi
SECONDS_PER_TARGET=${1:-20}
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(key_uri csr verify agent_config workload_request)
fi
for t in "${TARGETS[@]}"; do
  [ -f "fuzz/fuzz_targets/$t.rs" ] || { echo "error: no fuzz target '$t'" >&2; exit 2; }
done
# Memory per fuzzing process (MB); libFuzzer fails the run above it.
RSS_LIMIT_MB=${KEYWARD_FUZZ_RSS_MB:-2048}

HOST=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR=$ROOT/fuzz/target
# --target keeps the instrumentation off build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# scripts/checks.sh builds the workspace with clippy-driver for rustc; not these.
unset RUSTC_WORKSPACE_WRAPPER
start=$SECONDS
# fuzz/ is its own workspace with its own Cargo.lock: after a dependency change in core/
# or agent/, `cargo update -w --manifest-path fuzz/Cargo.toml` brings it along.
cargo build --profile ci --locked --manifest-path fuzz/Cargo.toml --target "$HOST" --bins
echo "fuzz targets built in $((SECONDS - start))s"
[ -z "$BUILD_ONLY" ] || exit 0
BIN=$CARGO_TARGET_DIR/$HOST/ci

WORK=$(mktemp -d "${TMPDIR:-/tmp}/keyward-fuzz.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Each target is one libFuzzer process on one core: as many run at once as there are
# cores (KEYWARD_FUZZ_JOBS), each for its full time; the reports follow in order.
fuzz_one() {
  local t=$1
  # New inputs go to a scratch corpus; the checked-in directories are only read.
  mkdir -p "$WORK/$t" "fuzz/artifacts/$t"
  local seeds=("fuzz/corpus/$t")
  [ -d "fuzz/regressions/$t" ] && seeds+=("fuzz/regressions/$t")
  local rc=0
  "$BIN/$t" "$WORK/$t" "${seeds[@]/#/$ROOT/}" \
    -artifact_prefix="$ROOT/fuzz/artifacts/$t/" \
    -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb="$RSS_LIMIT_MB" -timeout=10 \
    -print_final_stats=1 >"$WORK/$t.log" 2>&1 || rc=$?
  echo "$rc" >"$WORK/$t.rc"
}
JOBS=${KEYWARD_FUZZ_JOBS:-$(nproc)}
echo "== fuzzing ${TARGETS[*]} for ${SECONDS_PER_TARGET}s each, $JOBS at a time"
for t in "${TARGETS[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
  fuzz_one "$t" &
done
wait

failed=()
for t in "${TARGETS[@]}"; do
  echo "== $t"
  # No exit status recorded (the run could not start) counts as a failure.
  if [ "$(cat "$WORK/$t.rc" 2>/dev/null)" != 0 ]; then
    # The panic message (far above the end of a long backtrace), then the end.
    grep -A2 -m1 'panicked at' "$WORK/$t.log" || true
    tail -n 25 "$WORK/$t.log"
    echo "FAILED: fuzz target $t; the input is in fuzz/artifacts/$t/" >&2
    failed+=("$t")
  else
    grep -E '^stat::(number_of_executed_units|new_units_added)|^Done ' "$WORK/$t.log" || true
  fi
done

echo "fuzzing took $((SECONDS - start))s in all"
echo "fuzz: $((${#TARGETS[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
  echo "error: fuzz targets failed: ${failed[*]}" >&2
  exit 1
fi

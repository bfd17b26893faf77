#!/usr/bin/env bash
# The checks scripts/test.sh runs once the backends are up (through scripts/with-backends.sh):
# formatting, lints, the build, the whole workspace's tests, and bounded fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s (%ss)\n' "$*" "$SECONDS"; }

step "formatting and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "building"
cargo build --workspace --all-targets --locked

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast --failure-output final
else
  cargo test --workspace --locked --no-fail-fast
fi
step "fuzzing (bounded)"
scripts/fuzz.sh "${KEYWARD_FUZZ_SECONDS:-20}"
step "done"

#!/usr/bin/env bash
# The one test command. Installs what the tests need (Debian packages, a Python venv with
# moto and OpenBao), starts SoftHSM2, moto_server and OpenBao on loopback with private
# directories and free ports, checks formatting and lints, runs the whole workspace's
# tests, fuzzes each parser for a bounded time (scripts/fuzz.sh), and stops everything it
# started, also on failure or interrupt.
#
# Environment: KEYWARD_VENV (default target/test-venv) keeps the Python venv between runs;
# KEYWARD_FUZZ_SECONDS (default 20) is how long each fuzz target runs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/lib.sh
source scripts/softhsm.sh
source scripts/moto.sh
source scripts/openbao.sh

WORK=$(mktemp -d "${TMPDIR:-/tmp}/keyward-test.XXXXXX")
cleanup() {
  local rc=$?
  openbao_stop || true
  moto_stop || true
  softhsm_stop || true
  rm -rf "$WORK" "${TMPDIR:-/tmp}/keyward-test-bin"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n== %s (%ss)\n' "$*" "$SECONDS"; }

step "installing packages"
apt_install openssl curl ca-certificates
softhsm_install
VENV=${KEYWARD_VENV:-$ROOT/target/test-venv}
moto_install "$VENV"
openbao_install "$VENV"
cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet

step "starting backends"
softhsm_start "$WORK/softhsm"
moto_start "$WORK/moto"
openbao_start "$WORK/openbao"

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

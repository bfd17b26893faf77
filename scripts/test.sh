#!/usr/bin/env bash
# The one test command. Installs what the tests need (Debian packages, a Python venv with
# moto and OpenBao), starts SoftHSM2, moto_server and OpenBao on loopback with private
# directories and free ports (scripts/with-backends.sh), checks formatting and lints,
# runs the whole workspace's tests, fuzzes each parser for a bounded time
# (scripts/checks.sh, scripts/fuzz.sh), and stops everything it started, also on failure
# or interrupt.
#
# Environment: KEYWARD_VENV (default target/test-venv) keeps the Python venv between runs;
# KEYWARD_FUZZ_SECONDS (default 20) is how long each fuzz target runs.
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/with-backends.sh scripts/checks.sh

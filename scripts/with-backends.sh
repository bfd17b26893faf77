#!/usr/bin/env bash
# Runs one command with the real backends up: installs what they need (Debian packages,
# a Python venv with moto and OpenBao), starts SoftHSM2, a software TPM with a
# tpm2-pkcs11 token (swtpm, tpm2-abrmd on a session D-Bus), moto_server, an OpenBao dev server
# and a 3-node OpenBao raft cluster on loopback with private directories and free ports,
# exports the variables the tests read, runs the command, and stops everything it started,
# also on failure or interrupt.
# scripts/test.sh runs the whole suite through it; use it alone to run a few tests, e.g.
#   scripts/with-backends.sh cargo nextest run -p keyward-tests --test cli_pkcs11
#
# Environment: KEYWARD_VENV (default target/test-venv) keeps the Python venv between runs;
# KEYWARD_PYCLIENTS_VENV (default /var/tmp/keyward-pyclients) keeps the venv of the Python
# Workload API clients (scripts/pyclients.sh), which every user must be able to read;
# KEYWARD_NODECLIENTS_DIR (default /var/tmp/keyward-nodeclients) likewise keeps the Node
# client's packages (scripts/nodeclients.sh).
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARG...]" >&2; exit 2; }
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/lib.sh
source scripts/softhsm.sh
source scripts/swtpm.sh
source scripts/moto.sh
source scripts/openbao.sh
source scripts/openbao-raft.sh
source scripts/pyclients.sh
source scripts/nodeclients.sh

WORK=$(mktemp -d "${TMPDIR:-/tmp}/keyward-test.XXXXXX")
cleanup() {
  local rc=$?
  openbao_raft_stop || true
  openbao_stop || true
  moto_stop || true
  softhsm_stop || true
  swtpm_stop || true
  rm -rf "$WORK" "${TMPDIR:-/tmp}/keyward-test-bin"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n== %s (%ss)\n' "$*" "$SECONDS"; }

step "installing packages"
apt_install openssl curl ca-certificates strace util-linux
# The status page test renders the agent's page in headless Chromium.
apt_install chromium
# tests/agent_nss_groups.rs: nss_wrapper serves a group only NSS knows.
apt_install libnss-wrapper
softhsm_install
swtpm_install
VENV=${KEYWARD_VENV:-$ROOT/target/test-venv}
moto_install "$VENV"
openbao_install "$VENV"
pyclients_install "${KEYWARD_PYCLIENTS_VENV:-/var/tmp/keyward-pyclients}"
nodeclients_install "${KEYWARD_NODECLIENTS_DIR:-/var/tmp/keyward-nodeclients}"

step "starting backends"
softhsm_start "$WORK/softhsm"
# A software TPM, its resource manager on a private D-Bus, and a tpm2-pkcs11 token.
swtpm_start "$WORK/swtpm"
moto_start "$WORK/moto"
openbao_start "$WORK/openbao"
step "starting the OpenBao raft cluster (about 15 s, most of it the first election)"
openbao_raft_start "$WORK/openbao-raft"

step "running: $*"
"$@"

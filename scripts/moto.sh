# moto_server (a KMS-compatible server from PyPI) for keyward-awskms's tests.
# Source scripts/lib.sh first, then this file; it defines functions only.
#
#   moto_install VENV_DIR   puts VENV_DIR first on PATH, installs moto[server] there if missing
#   moto_start WORKDIR      starts moto_server on a free loopback port, exports the AWS env
#   moto_stop               stops the server moto_start started

# moto_install VENV_DIR: ensures the venv and moto_server inside it (a pyenv shim on PATH
# may not be a real install, so only the venv's own binary counts).
moto_install() {
  local venv=$1
  venv_ensure "$venv" || return 1
  if [ ! -x "$venv/bin/moto_server" ]; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check 'moto[server]' || return 1
  fi
  if [ ! -x "$venv/bin/moto_server" ]; then
    echo "error: moto_server not installed in $venv" >&2
    return 1
  fi
  MOTO_BIN="$venv/bin/moto_server"
}

# moto_start WORKDIR: starts moto_server on 127.0.0.1 (log in WORKDIR/moto.log), waits
# for /moto-api/, exports AWS_ENDPOINT_URL, AWS_REGION, dummy credentials and
# KEYWARD_TEST_KMS_ENDPOINT, and remembers the pid for moto_stop. Instance metadata is
# switched off so that the AWS chain never looks beyond loopback during tests.
moto_start() {
  local workdir=$1 port bin
  bin=${MOTO_BIN:-moto_server}
  mkdir -p "$workdir" || return 1
  port=$(free_port) || return 1
  "$bin" -H 127.0.0.1 -p "$port" >"$workdir/moto.log" 2>&1 &
  MOTO_PID=$!
  if ! wait_http "http://127.0.0.1:$port/moto-api/" 60; then
    echo "error: moto_server did not start; see $workdir/moto.log" >&2
    moto_stop
    return 1
  fi
  export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
  export AWS_REGION=us-east-1
  export AWS_ACCESS_KEY_ID=testing
  export AWS_SECRET_ACCESS_KEY=testing
  export AWS_EC2_METADATA_DISABLED=true
  export KEYWARD_TEST_KMS_ENDPOINT="$AWS_ENDPOINT_URL"
}

# moto_stop: stops the moto_server started by moto_start (if any) and waits for it.
moto_stop() {
  if [ -n "${MOTO_PID:-}" ]; then
    kill "$MOTO_PID" 2>/dev/null
    wait "$MOTO_PID" 2>/dev/null
    MOTO_PID=
  fi
  return 0
}

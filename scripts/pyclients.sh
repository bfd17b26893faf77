# Python Workload API clients nobody here wrote, for tests/agent_clients.rs: PyPI's
# `spiffe` (py-spiffe, on gRPC C-core) and `grpcio`, pinned; and the Prometheus
# project's `prometheus-client`, whose text parser reads the agent's /metrics in
# tests/agent_metrics_promparse.rs; Envoy's protos as the `xds-protos` package
# generates them from envoyproxy/data-plane-api, for the SDS client of tests/agent_sds.rs
# (tests/clients/sds_envoy.py); and EFF's `certbot`, the ACME client of
# tests/enroll_acme.rs (its `acme`/`josepy` also drive tests/clients/acme_replay.py); and
# `grpcio-tools`, which generates Python stubs from agent/proto/keyward/v1/keys.proto
# for the README's KeyService example (tests/agent_keys_python.rs); and python-hyper's
# `hyperframe` and `hpack`, the raw HTTP/2 framing and header coding of
# tests/clients/exec_h2.py, which keeps its connection across exec() (tests/agent_exec.rs).
# Source scripts/lib.sh first, then this file; it defines functions only.
#
#   pyclients_install DIR   creates a venv at DIR from the system python3 if missing,
#                           installs the pinned packages, exports KEYWARD_TEST_PYTHON
#
# Not the moto/OpenBao venv (KEYWARD_VENV): the tests also run these clients as an
# unentitled uid (65534), so the interpreter, its standard library and the venv must be
# readable by every user. A venv made from a python3 under /root (pyenv) is not, hence
# Debian's /usr/bin/python3 and a directory outside the checkout (which may sit in /root).

PYCLIENTS_PACKAGES=(
  spiffe==0.3.2 grpcio==1.85.3 protobuf==7.36.2 cryptography==50.0.2 PyJWT==2.15.1
  prometheus-client==0.26.0
  certbot==5.8.0 acme==5.9.0 josepy==2.2.0
  xds-protos==1.85.0
  grpcio-tools==1.85.1
  hyperframe==6.1.0 hpack==4.2.0
)

# pyclients_install DIR: the venv at DIR (root's, readable by all) with the pinned
# packages; exports KEYWARD_TEST_PYTHON, its interpreter.
pyclients_install() {
  local dir=$1
  apt_install python3 python3-venv || return 1
  if [ -e "$dir" ] && [ "$(stat -c %u "$dir")" != "$(id -u)" ]; then
    echo "error: $dir belongs to another user; set KEYWARD_PYCLIENTS_VENV elsewhere" >&2
    return 1
  fi
  [ -x "$dir/bin/python" ] || /usr/bin/python3 -m venv "$dir" || return 1
  "$dir/bin/python" -m pip install -q --disable-pip-version-check "${PYCLIENTS_PACKAGES[@]}" ||
    return 1
  chmod -R go-w,a+rX "$dir" || return 1
  export KEYWARD_TEST_PYTHON="$dir/bin/python"
}

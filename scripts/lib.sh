# Shared shell helpers for scripts/*.sh. Source it; it defines functions only.

# Prints a free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_http URL SECONDS: waits until URL answers with any HTTP status, or fails.
wait_http() {
  local url=$1 secs=${2:-30} i
  for ((i = 0; i < secs * 10; i++)); do
    if curl -s -o /dev/null "$url"; then return 0; fi
    sleep 0.1
  done
  echo "error: $url did not answer within ${secs}s" >&2
  return 1
}

# apt_install PKG...: installs Debian packages that are missing (as root, or via sudo).
apt_install() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# venv_ensure DIR: creates a Python venv at DIR if missing and puts it first on PATH.
venv_ensure() {
  local dir=$1
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
  export PATH="$dir/bin:$PATH"
}

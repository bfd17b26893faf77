# A software TPM with a PKCS#11 token on it (tpm2-pkcs11), for keyward's TPM tests and
# benchmark. Source it after scripts/lib.sh (it then defines functions only), or run it:
#   scripts/swtpm.sh start WORKDIR        prints the variables to export, KEY=VALUE lines
#   scripts/swtpm.sh kill-tpm WORKDIR     kills swtpm (and tpm2-abrmd): the TPM goes away
#   scripts/swtpm.sh revive-tpm WORKDIR   starts them again on the same state and port
#   scripts/swtpm.sh stop WORKDIR
# (tests that take the TPM away run a chain of their own this way, so that the shared one
# stays up for the others).
#
# The chain is: swtpm (the TPM, on two free loopback ports) <- tpm2-abrmd (the resource
# manager, which swaps object contexts in and out so that many clients fit in the TPM's
# few slots) on a private session D-Bus <- the tpm2-pkcs11 module, loaded by the tests,
# which keeps its token and key blobs in a private SQLite store. All of it lives under
# the WORKDIR given to swtpm_start and is stopped by swtpm_stop.
#
#   swtpm_install          installs the Debian packages
#   swtpm_start WORKDIR    starts the chain, creates one token, exports the test variables
#   swtpm_kill_tpm         kills swtpm and tpm2-abrmd (the TPM goes away)
#   swtpm_revive_tpm       starts them again on the same state and port
#   swtpm_stop             stops what swtpm_start started and removes its files
# Process ids and the port are kept in files under WORKDIR, so that another shell can
# take away, bring back or stop the chain.

# swtpm_module: prints the path of Debian's tpm2-pkcs11 module.
swtpm_module() {
  echo /usr/lib/x86_64-linux-gnu/libtpm2_pkcs11.so.1
}

# swtpm_install: installs swtpm, the resource manager, a D-Bus daemon, tpm2-pkcs11 and
# tpm2_ptool if missing.
swtpm_install() {
  apt_install swtpm swtpm-tools tpm2-abrmd libtss2-tcti-tabrmd0 libtss2-tcti-swtpm0 \
    libtpm2-pkcs11-1 libtpm2-pkcs11-tools dbus-daemon tpm2-tools || return 1
  if [ ! -e "$(swtpm_module)" ]; then
    echo "error: $(swtpm_module) missing after installing libtpm2-pkcs11-1" >&2
    return 1
  fi
}

# swtpm_free_port_pair: prints a free loopback port P whose neighbour P+1 is free too
# (swtpm's command and control channels).
swtpm_free_port_pair() {
  python3 -c '
import socket
while True:
    a, b = socket.socket(), socket.socket()
    a.bind(("127.0.0.1", 0))
    p = a.getsockname()[1]
    try:
        b.bind(("127.0.0.1", p + 1))
    except OSError:
        continue
    finally:
        a.close(); b.close()
    print(p)
    break'
}

# swtpm_start_tpm WORKDIR: starts swtpm (daemonized, pid in WORKDIR/swtpm.pid) on the
# state directory and port in WORKDIR, and waits until it listens.
swtpm_start_tpm() {
  local workdir=$1 port i
  port=$(cat "$workdir/port") || return 1
  swtpm socket --tpm2 --daemon --tpmstate dir="$workdir/state" \
    --server type=tcp,port="$port",bindaddr=127.0.0.1 \
    --ctrl type=tcp,port="$((port + 1))",bindaddr=127.0.0.1 \
    --flags not-need-init,startup-clear --pid file="$workdir/swtpm.pid" \
    --log file="$workdir/swtpm.log" </dev/null >>"$workdir/swtpm.out" 2>&1 || return 1
  for ((i = 0; i < 100; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "error: swtpm did not listen on port $port; see $workdir/swtpm.log" >&2
  return 1
}

# swtpm_kill_pidfile FILE: stops the process whose id FILE holds, and removes FILE.
swtpm_kill_pidfile() {
  local file=$1 pid i
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  rm -f "$file"
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null
  return 0
}

# swtpm_start_abrmd WORKDIR: starts tpm2-abrmd on the session bus (pid in
# WORKDIR/abrmd.pid), connected to swtpm, and waits until the TPM answers through it.
swtpm_start_abrmd() {
  local workdir=$1 port i
  port=$(cat "$workdir/port") || return 1
  tpm2-abrmd --tcti="swtpm:host=127.0.0.1,port=$port" --session --allow-root \
    --flush-all </dev/null >>"$workdir/abrmd.log" 2>&1 &
  echo $! >"$workdir/abrmd.pid"
  for ((i = 0; i < 200; i++)); do
    if tpm2_getrandom -T "$TPM2_PKCS11_TCTI" 8 >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "error: the TPM did not answer through tpm2-abrmd within 20s; see $workdir/abrmd.log" >&2
  return 1
}

# swtpm_env WORKDIR: exports what the module, tpm2-tools and the tests read.
swtpm_env() {
  local workdir=$1
  export SWTPM_WORKDIR=$workdir
  export DBUS_SESSION_BUS_ADDRESS=unix:path=$workdir/bus
  export TPM2_PKCS11_TCTI="tabrmd:bus_type=session"
  export TPM2TOOLS_TCTI=$TPM2_PKCS11_TCTI
  export TPM2_PKCS11_STORE=$workdir/store
  export KEYWARD_TEST_TPM_MODULE=$(swtpm_module)
  export KEYWARD_TEST_TPM_TOKEN=kw-tpm
  export KEYWARD_TEST_TPM_PIN_FILE=$workdir/user.pin
  export KEYWARD_TEST_TPM_SO_PIN_FILE=$workdir/so.pin
  export KEYWARD_TEST_TPM_WORKDIR=$workdir
}

# swtpm_start WORKDIR: starts swtpm, a session D-Bus on WORKDIR/bus and tpm2-abrmd on it;
# creates a tpm2-pkcs11 store with one token 'kw-tpm' (random PINs in WORKDIR/user.pin
# and so.pin); exports KEYWARD_TEST_TPM_MODULE, _TOKEN, _PIN_FILE, _SO_PIN_FILE, _WORKDIR
# and the module's TPM2_PKCS11_STORE, TPM2_PKCS11_TCTI and DBUS_SESSION_BUS_ADDRESS.
swtpm_start() {
  local workdir=${1:?usage: swtpm_start WORKDIR} pin so_pin
  if [ -e "$workdir/port" ]; then
    echo "error: $workdir already holds a TPM chain; stop it first" >&2
    return 1
  fi
  mkdir -p "$workdir/state" "$workdir/store" || return 1
  chmod 700 "$workdir" "$workdir/state" "$workdir/store"
  workdir=$(cd "$workdir" && pwd) || return 1
  swtpm_free_port_pair >"$workdir/port" || return 1
  swtpm_env "$workdir"
  swtpm_start_tpm "$workdir" || { swtpm_stop; return 1; }
  dbus-daemon --session --address="$DBUS_SESSION_BUS_ADDRESS" --fork \
    --print-pid=3 3>"$workdir/dbus.pid" </dev/null >"$workdir/dbus.log" 2>&1 ||
    { swtpm_stop; return 1; }
  swtpm_start_abrmd "$workdir" || { swtpm_stop; return 1; }
  pin=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
  so_pin=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
  (umask 077 && printf '%s' "$pin" >"$workdir/user.pin" && printf '%s' "$so_pin" >"$workdir/so.pin")
  if ! tpm2_ptool init --path "$workdir/store" >"$workdir/ptool.log" 2>&1 ||
    ! tpm2_ptool addtoken --pid=1 --label="$KEYWARD_TEST_TPM_TOKEN" --userpin="$pin" \
      --sopin="$so_pin" --path "$workdir/store" >>"$workdir/ptool.log" 2>&1; then
    echo "error: tpm2_ptool could not create the token; see $workdir/ptool.log" >&2
    swtpm_stop
    return 1
  fi
}

# swtpm_kill_tpm [WORKDIR]: kills swtpm and the resource manager (which cannot outlive
# its TPM connection): the TPM went away under whoever was using it.
swtpm_kill_tpm() {
  local workdir=${1:-${SWTPM_WORKDIR:?no swtpm started}}
  swtpm_kill_pidfile "$workdir/abrmd.pid"
  swtpm_kill_pidfile "$workdir/swtpm.pid"
}

# swtpm_revive_tpm [WORKDIR]: starts swtpm and the resource manager again on the same
# TPM state and port, as after a host's TPM came back.
swtpm_revive_tpm() {
  local workdir=${1:-${SWTPM_WORKDIR:?no swtpm started}}
  swtpm_env "$workdir"
  swtpm_start_tpm "$workdir" && swtpm_start_abrmd "$workdir"
}

# swtpm_stop [WORKDIR]: stops tpm2-abrmd, the D-Bus daemon and swtpm, removes the work
# directory and unsets what swtpm_start exported.
swtpm_stop() {
  local workdir=${1:-${SWTPM_WORKDIR:-}}
  if [ -n "$workdir" ] && [ -f "$workdir/port" ]; then
    swtpm_kill_pidfile "$workdir/abrmd.pid"
    swtpm_kill_pidfile "$workdir/dbus.pid"
    swtpm_kill_pidfile "$workdir/swtpm.pid"
    rm -rf "$workdir"
  fi
  unset SWTPM_WORKDIR TPM2_PKCS11_STORE TPM2_PKCS11_TCTI TPM2TOOLS_TCTI DBUS_SESSION_BUS_ADDRESS \
    KEYWARD_TEST_TPM_MODULE KEYWARD_TEST_TPM_TOKEN KEYWARD_TEST_TPM_PIN_FILE \
    KEYWARD_TEST_TPM_SO_PIN_FILE KEYWARD_TEST_TPM_WORKDIR
  return 0
}

# Run as a command (not sourced): start, kill-tpm, revive-tpm or stop a chain in WORKDIR.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  source "$(dirname "$0")/lib.sh"
  case "${1:-}:${2:-}" in
    start:?*)
      swtpm_start "$2"
      env | grep -E '^(KEYWARD_TEST_TPM_|TPM2_PKCS11_|TPM2TOOLS_TCTI|DBUS_SESSION_BUS_ADDRESS)' ;;
    kill-tpm:?*) swtpm_kill_tpm "$2" ;;
    revive-tpm:?*) swtpm_revive_tpm "$2" ;;
    stop:?*) swtpm_stop "$2" ;;
    *) echo "usage: $0 start|kill-tpm|revive-tpm|stop WORKDIR" >&2; exit 2 ;;
  esac
fi

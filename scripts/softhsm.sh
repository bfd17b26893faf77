# SoftHSM2 for keyward's PKCS#11 tests and benchmarks. Source it after scripts/lib.sh;
# it defines functions only.
#
# SoftHSM is a library loaded into the test process, not a server: "starting" it means
# giving this run a private token directory. Tests create their own tokens in it
# (softhsm2-util --init-token --free, unique labels), so they can run in parallel.

# softhsm_module: prints the path of the module every PKCS#11 test loads (Debian's softhsm2).
softhsm_module() {
  echo /usr/lib/softhsm/libsofthsm2.so
}

# softhsm_install: installs SoftHSM2 and OpenSC (pkcs11-tool) if missing.
softhsm_install() {
  apt_install softhsm2 opensc || return 1
  if [ ! -e "$(softhsm_module)" ]; then
    echo "error: $(softhsm_module) missing after installing softhsm2" >&2
    return 1
  fi
}

# softhsm_start WORKDIR: writes a private SoftHSM configuration whose token directory
# lives under WORKDIR (file object store), and exports SOFTHSM2_CONF and
# KEYWARD_TEST_PKCS11_MODULE for the tests.
softhsm_start() {
  local workdir=${1:?usage: softhsm_start WORKDIR}
  mkdir -p "$workdir/tokens" || return 1
  chmod 700 "$workdir" "$workdir/tokens"
  workdir=$(cd "$workdir" && pwd) || return 1
  cat >"$workdir/softhsm2.conf" <<EOF
directories.tokendir = $workdir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
  export SOFTHSM_WORKDIR=$workdir
  export SOFTHSM2_CONF=$workdir/softhsm2.conf
  export KEYWARD_TEST_PKCS11_MODULE=$(softhsm_module)
}

# softhsm_stop: nothing runs in the background; removes this run's token directory and
# unsets what softhsm_start exported.
softhsm_stop() {
  if [ -n "${SOFTHSM_WORKDIR:-}" ] && [ -f "$SOFTHSM_WORKDIR/softhsm2.conf" ]; then
    rm -rf "$SOFTHSM_WORKDIR/tokens" "$SOFTHSM_WORKDIR/softhsm2.conf"
    rmdir "$SOFTHSM_WORKDIR" 2>/dev/null || true
  fi
  unset SOFTHSM_WORKDIR SOFTHSM2_CONF KEYWARD_TEST_PKCS11_MODULE
}

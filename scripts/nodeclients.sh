# Node Workload API client nobody here wrote, for tests/agent_clients.rs: npm's
# `@grpc/grpc-js` (pure JavaScript gRPC, sends `localhost` as the `:authority` of a
# `unix:` target) with `@grpc/proto-loader`, pinned. Source scripts/lib.sh first, then
# this file; it defines functions only.
#
#   nodeclients_install DIR   installs the pinned packages under DIR (skipped when
#                             they are there), exports KEYWARD_TEST_NODE_MODULES
#
# The tests also run the client as an unentitled uid (65534), so DIR sits outside the
# checkout (which may be in /root) and is readable by every user, like node itself.

NODECLIENTS_PACKAGES=(@grpc/grpc-js@1.14.7 @grpc/proto-loader@0.8.1)

# nodeclients_install DIR: DIR/node_modules (root's, readable by all) with the pinned
# packages; exports KEYWARD_TEST_NODE_MODULES, that node_modules directory.
nodeclients_install() {
  local dir=$1 pkg installed
  # The machine image ships node and npm; elsewhere Debian's packages stand in.
  command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm || true
  command -v node >/dev/null && command -v npm >/dev/null || {
    echo "error: node and npm are needed for the Node Workload API client test" >&2
    return 1
  }
  if [ -e "$dir" ] && [ "$(stat -c %u "$dir")" != "$(id -u)" ]; then
    echo "error: $dir belongs to another user; set KEYWARD_NODECLIENTS_DIR elsewhere" >&2
    return 1
  fi
  installed=1
  for pkg in "${NODECLIENTS_PACKAGES[@]}"; do
    [ "$(node -p "require('$dir/node_modules/${pkg%@*}/package.json').version" 2>/dev/null)" = \
      "${pkg##*@}" ] || installed=0
  done
  if [ $installed -eq 0 ]; then
    mkdir -p "$dir" || return 1
    npm install --prefix "$dir" --save-exact --no-audit --no-fund --loglevel=error \
      "${NODECLIENTS_PACKAGES[@]}" >/dev/null || return 1
  fi
  chmod -R go-w,a+rX "$dir" || return 1
  export KEYWARD_TEST_NODE_MODULES="$dir/node_modules"
}

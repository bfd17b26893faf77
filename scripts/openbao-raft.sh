# A 3-node OpenBao cluster on integrated (raft) storage for the fleet tests (issue 18).
# Source it after lib.sh and openbao.sh (openbao_install provides the binary); it defines
# functions only:
#   openbao_raft_start WORKDIR   three `bao server` nodes on free loopback ports, node 1
#                                initialised (1 key share), nodes 2 and 3 joined, all
#                                unsealed and voters; PKI at pki/ with a root CA, AppRole
#                                with one role and policy per node
#   openbao_raft_stop            stops every node, also ones a test restarted
#
# openbao_raft_start exports
#   KEYWARD_TEST_RAFT_ADDRS       http://127.0.0.1:P of nodes 1,2,3, comma-separated
#   KEYWARD_TEST_RAFT_TOKEN       the root token
#   KEYWARD_TEST_RAFT_UNSEAL_KEY  the only unseal key (base64)
#   KEYWARD_TEST_RAFT_DIR         WORKDIR, laid out as
#     node-N/config.hcl  node-N/data/  node-N/pid  node-N/log   (N = 1, 2, 3)
#     approle/node-N/role_id  approle/node-N/secret_id          (AppRole role node-N)
#     lock                      tests that kill nodes hold it (flock) while they do
#   KEYWARD_TEST_BAO_BIN          the bao binary (as openbao_start does)
# A node runs as `$KEYWARD_TEST_BAO_BIN server -config=DIR/node-N/config.hcl`, its output
# appended to node-N/log and its pid in node-N/pid; a test that restarts a node writes the
# new pid there so that openbao_raft_stop finds it. A restarted node comes back sealed.

# The policy of AppRole role node-N: sign its intermediate and read the CA and CRL.
# Revocation is the operator's (root token); the CA/CRL paths are also unauthenticated.
_OPENBAO_RAFT_NODE_POLICY='path "pki/root/sign-intermediate" { capabilities = ["update"] }
path "pki/cert/ca" { capabilities = ["read"] }
path "pki/ca_chain" { capabilities = ["read"] }
path "pki/crl" { capabilities = ["read"] }'

# _openbao_raft_api ADDR METHOD PATH [JSON]: one call to ADDR/v1/PATH with the root token
# (when known), bounded by the start deadline; prints the body; fails (printing the
# answer) on any non-2xx status.
_openbao_raft_api() {
  local addr=$1 method=$2 path=$3 body=${4:-}
  local out status
  out=$(mktemp)
  status=$(curl -s -m $((OPENBAO_RAFT_DEADLINE > SECONDS ? OPENBAO_RAFT_DEADLINE - SECONDS : 1)) -o "$out" -w '%{http_code}' -X "$method" \
    ${OPENBAO_RAFT_TOKEN:+-H "X-Vault-Token: $OPENBAO_RAFT_TOKEN"} ${body:+-d "$body"} \
    "$addr/v1/$path")
  if [ "${status:0:1}" != 2 ]; then
    echo "error: OpenBao node $addr: $method /v1/$path answered $status: $(cat "$out")" >&2
    rm -f "$out"
    return 1
  fi
  cat "$out"
  rm -f "$out"
}

# _openbao_raft_json FIELD_EXPR: reads JSON on stdin and prints the Python expression
# FIELD_EXPR evaluated on it as `d` (strings bare, others as JSON).
_openbao_raft_json() {
  python3 -c 'import json,sys
d=json.load(sys.stdin); v=eval(sys.argv[1])
print(v if isinstance(v,str) else json.dumps(v))' "$1"
}

# _openbao_raft_wait WHAT CMD...: retries CMD every 0.2 s until it succeeds or the start
# deadline passes; then fails naming WHAT.
_openbao_raft_wait() {
  local what=$1
  shift
  local n
  until "$@" >/dev/null 2>&1; do
    for n in 1 2 3; do
      if ! _openbao_raft_pid "$n" >/dev/null; then
        echo "error: OpenBao raft cluster: node $n exited before $what" >&2
        tail -n 5 "$OPENBAO_RAFT_DIR/node-$n/log" >&2
        return 1
      fi
    done
    if [ "$SECONDS" -ge "$OPENBAO_RAFT_DEADLINE" ]; then
      echo "error: OpenBao raft cluster: $what not within the start deadline" >&2
      tail -n 5 "$OPENBAO_RAFT_DIR"/node-*/log >&2
      return 1
    fi
    sleep 0.2
  done
}

# _openbao_raft_pid N: prints the pid in node N's pid file when it is a live `bao
# server` with node N's configuration (not a pid since reused); fails otherwise.
_openbao_raft_pid() {
  local pid
  pid=$(cat "$OPENBAO_RAFT_DIR/node-$1/pid" 2>/dev/null) &&
    grep -qzxF -- "-config=$OPENBAO_RAFT_DIR/node-$1/config.hcl" "/proc/$pid/cmdline" 2>/dev/null &&
    echo "$pid"
}

# _openbao_raft_spawn N: starts node N in the background and records its pid. The
# subshell leaves it no job of this shell, like the nodes tests restart.
_openbao_raft_spawn() {
  local node=$OPENBAO_RAFT_DIR/node-$1
  (
    "$OPENBAO_RAFT_BIN" server -config="$node/config.hcl" >>"$node/log" 2>&1 </dev/null &
    echo $! >"$node/pid"
  )
}

# _openbao_raft_unsealed ADDR: succeeds when ADDR answers and reports itself unsealed.
_openbao_raft_unsealed() {
  curl -sf -m 2 "$1/v1/sys/seal-status" | grep -q '"sealed":false'
}

# _openbao_raft_voters: succeeds when autopilot reports three healthy voters.
_openbao_raft_voters() {
  local state
  state=$(_openbao_raft_api "${OPENBAO_RAFT_ADDRS[0]}" GET sys/storage/raft/autopilot/state) || return 1
  [ "$(_openbao_raft_json 'd["data"]["healthy"] and len(d["data"]["voters"])' <<<"$state")" = 3 ]
}

# openbao_raft_start WORKDIR: see the top of this file. Fails within 60 s with one line
# naming the step that did not complete, leaving no node running.
openbao_raft_start() {
  local workdir=${1:?usage: openbao_raft_start WORKDIR}
  OPENBAO_RAFT_BIN=${OPENBAO_BIN:-$(command -v bao)}
  if [ -z "$OPENBAO_RAFT_BIN" ]; then
    echo "error: no bao binary: call openbao_install first" >&2
    return 1
  fi
  mkdir -p "$workdir" && OPENBAO_RAFT_DIR=$(cd "$workdir" && pwd) || return 1
  OPENBAO_RAFT_DEADLINE=$((SECONDS + 60))
  _openbao_raft_boot || {
    openbao_raft_stop
    return 1
  }
  export KEYWARD_TEST_RAFT_ADDRS
  KEYWARD_TEST_RAFT_ADDRS=$(IFS=,; echo "${OPENBAO_RAFT_ADDRS[*]}")
  export KEYWARD_TEST_RAFT_TOKEN=$OPENBAO_RAFT_TOKEN
  export KEYWARD_TEST_RAFT_UNSEAL_KEY=$OPENBAO_RAFT_UNSEAL_KEY
  export KEYWARD_TEST_RAFT_DIR=$OPENBAO_RAFT_DIR
  export KEYWARD_TEST_BAO_BIN=$OPENBAO_RAFT_BIN
}

# _openbao_raft_config N API_PORT CLUSTER_PORT: writes node N's configuration. OpenBao
# has no mlock (it warns about `disable_mlock`), so the file does not set it.
_openbao_raft_config() {
  cat >"$OPENBAO_RAFT_DIR/node-$1/config.hcl" <<EOF
storage "raft" {
  path    = "$OPENBAO_RAFT_DIR/node-$1/data"
  node_id = "node-$1"
  # Autopilot promotes a joiner to voter on its next reconcile (default every 10 s).
  autopilot_reconcile_interval = "1s"
  autopilot_update_interval    = "500ms"
}
listener "tcp" {
  address         = "127.0.0.1:$2"
  cluster_address = "127.0.0.1:$3"
  tls_disable     = 1
}
api_addr     = "http://127.0.0.1:$2"
cluster_addr = "http://127.0.0.1:$3"
ui           = false
EOF
}

# _openbao_raft_boot: starts the three nodes, initialises and unseals node 1,
# joins and unseals nodes 2 and 3, sets up PKI and AppRole, and waits for three voters.
_openbao_raft_boot() {
  local n api cluster init key first
  : >"$OPENBAO_RAFT_DIR/lock"
  OPENBAO_RAFT_ADDRS=()
  OPENBAO_RAFT_TOKEN=
  for n in 1 2 3; do
    api=$(free_port) && cluster=$(free_port) &&
      mkdir -p "$OPENBAO_RAFT_DIR/node-$n/data" && chmod 700 "$OPENBAO_RAFT_DIR/node-$n" &&
      _openbao_raft_config "$n" "$api" "$cluster" || return 1
    OPENBAO_RAFT_ADDRS+=("http://127.0.0.1:$api")
    _openbao_raft_spawn "$n"
  done
  first=${OPENBAO_RAFT_ADDRS[0]}
  _openbao_raft_wait "node 1 answering" curl -s -m 2 -o /dev/null "$first/v1/sys/seal-status" &&
    init=$(_openbao_raft_api "$first" PUT sys/init '{"secret_shares":1,"secret_threshold":1}') &&
    key=$(_openbao_raft_json 'd["keys_base64"][0]' <<<"$init") &&
    OPENBAO_RAFT_TOKEN=$(_openbao_raft_json 'd["root_token"]' <<<"$init") &&
    OPENBAO_RAFT_UNSEAL_KEY=$key &&
    _openbao_raft_api "$first" PUT sys/unseal "{\"key\":\"$key\"}" >/dev/null &&
    _openbao_raft_wait "node 1 active" curl -sf -m 2 -o /dev/null "$first/v1/sys/health" &&
    # Joiners become voters once they have been healthy this long (default 10 s).
    _openbao_raft_api "$first" POST sys/storage/raft/autopilot/configuration \
      '{"server_stabilization_time":"2s"}' >/dev/null || return 1
  for n in 2 3; do
    api=${OPENBAO_RAFT_ADDRS[$((n - 1))]}
    _openbao_raft_wait "node $n answering" curl -s -m 2 -o /dev/null "$api/v1/sys/seal-status" &&
      _openbao_raft_api "$api" POST sys/storage/raft/join "{\"leader_api_addr\":\"$first\"}" >/dev/null &&
      # The first unseal after a join starts it; repeat until the node reports unsealed.
      _openbao_raft_wait "node $n unsealed" \
        eval '_openbao_raft_api "$api" PUT sys/unseal "{\"key\":\"$key\"}" && _openbao_raft_unsealed "$api"' ||
      return 1
  done
  _openbao_raft_setup "$first" &&
    _openbao_raft_wait "three voters" _openbao_raft_voters
}

# _openbao_raft_setup ADDR: PKI at pki/ with a root CA, AppRole at approle/ with one
# role node-N and policy node-N per node; the credentials go to DIR/approle/node-N/.
_openbao_raft_setup() {
  local addr=$1 n dir role_id secret_id
  _openbao_raft_api "$addr" POST sys/mounts/pki '{"type":"pki","config":{"max_lease_ttl":"87600h"}}' >/dev/null &&
    _openbao_raft_api "$addr" POST pki/root/generate/internal \
      '{"common_name":"keyward test root (OpenBao raft)","key_type":"ec","key_bits":256,"ttl":"87600h"}' >/dev/null &&
    _openbao_raft_api "$addr" POST sys/auth/approle '{"type":"approle"}' >/dev/null || return 1
  for n in 1 2 3; do
    dir=$OPENBAO_RAFT_DIR/approle/node-$n
    mkdir -p "$dir" && chmod 700 "$dir" &&
      _openbao_raft_api "$addr" PUT "sys/policies/acl/node-$n" \
        "$(python3 -c 'import json,sys; print(json.dumps({"policy": sys.argv[1]}))' "$_OPENBAO_RAFT_NODE_POLICY")" >/dev/null &&
      _openbao_raft_api "$addr" POST "auth/approle/role/node-$n" \
        "{\"token_policies\":[\"node-$n\"],\"token_ttl\":\"1h\",\"token_max_ttl\":\"4h\"}" >/dev/null &&
      role_id=$(_openbao_raft_api "$addr" GET "auth/approle/role/node-$n/role-id" | _openbao_raft_json 'd["data"]["role_id"]') &&
      secret_id=$(_openbao_raft_api "$addr" POST "auth/approle/role/node-$n/secret-id" | _openbao_raft_json 'd["data"]["secret_id"]') &&
      (umask 077 && printf '%s\n' "$role_id" >"$dir/role_id" && printf '%s\n' "$secret_id" >"$dir/secret_id") || return 1
  done
}

# openbao_raft_stop: SIGKILLs every running node (by _openbao_raft_pid: also the ones
# tests restarted); the cluster is thrown away, so nothing needs a graceful shutdown
# (which takes seconds per node).
openbao_raft_stop() {
  [ -n "${OPENBAO_RAFT_DIR:-}" ] || return 0
  local n pid i
  for n in 1 2 3; do
    pid=$(_openbao_raft_pid "$n") || continue
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null && sleep 0.1 || break; done
  done
  OPENBAO_RAFT_DIR=
  return 0
}

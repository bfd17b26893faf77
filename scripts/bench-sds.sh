#!/usr/bin/env bash
# Benchmark of the agent's Envoy SDS (issue 22): STREAMS StreamSecrets streams (Envoy's
# exchange: request `default`, ACK) open at once against one agent; prints the agent's
# resident memory per open stream, then the time from the agent's issuance of the
# rotated SVID (its JSON log) to its push on each stream: p50, p99 and the last.
#
# Run it: scripts/bench-sds.sh [STREAMS=1000] [CONNECTIONS=20] [TTL=20s]
# The SVID is renewed at half its TTL, so the push comes TTL/2 after the agent starts.
set -euo pipefail

streams=${1:-1000}
connections=${2:-20}
ttl=${3:-20s}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
(cd "$root" && cargo build --release -q -p keyward --bin keyward &&
  cargo build --release -q -p keyward --example sds_load)
kw=$target/release/keyward
dir=$(mktemp -d)
agent_pid=
cleanup() {
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT

"$kw" --state-dir "$dir/state" key generate --key "file:$dir/keys/ca.pem" --algorithm ecdsa-p256 >/dev/null
cat >"$dir/agent.toml" <<TOML
[agent]
socket = "$dir/agent.sock"
state_dir = "$dir/state"
trust_domain = "example.org"
log_format = "json"

[ca]
key = "file:$dir/keys/ca.pem"

[[workload]]
spiffe_id = "spiffe://example.org/envoy"
ttl = "$ttl"
selectors = { uid = $(id -u) }
TOML
KEYWARD_LOG=info "$kw" agent --config "$dir/agent.toml" >/dev/null 2>"$dir/agent.log" &
agent_pid=$!
for ((i = 0; i < 2000; i++)); do [ -S "$dir/agent.sock" ] && break; sleep 0.005; done
[ -S "$dir/agent.sock" ] || { echo "error: the agent did not start:" >&2; cat "$dir/agent.log" >&2; exit 1; }
"$target/release/examples/sds_load" --socket "$dir/agent.sock" --agent-pid "$agent_pid" \
  --agent-log "$dir/agent.log" --streams "$streams" --connections "$connections"

#!/usr/bin/env bash
# Benchmark of the agent's Workload API (issue 6): 32 tasks opening FetchX509SVID
# streams (first message only) for 10 s against an agent with 1,000 workload entries
# and cached SVIDs, side by side with a raw tonic baseline serving one fixed response;
# prints fetches/s, p50/p99 latency, errors, the ratio, and the agent's resident memory.
#
# Run it: scripts/bench-agent.sh [ENTRIES=1000] [SECONDS=10] [TASKS=32] [CLIENT_THREADS=2]
# Source it: defines bench_agent only.

bench_agent() {
  local entries=${1:-1000} seconds=${2:-10} tasks=${3:-32} threads=${4:-2}
  local root target tmp uid i agent_pid= base_pid=
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  target=${CARGO_TARGET_DIR:-$root/target}
  (cd "$root" && cargo build --release -q -p keyward --bin keyward --example load) || return 1
  local kw=$target/release/keyward load=$target/release/examples/load
  tmp=$(mktemp -d)
  uid=$(id -u)
  "$kw" --state-dir "$tmp/state" key generate --key "file:$tmp/keys/ca.pem" --algorithm ecdsa-p256 >/dev/null || return 1
  {
    printf '[agent]\nsocket = "%s/agent.sock"\nstate_dir = "%s/state"\ntrust_domain = "example.org"\n\n' "$tmp" "$tmp"
    printf '[ca]\nkey = "file:%s/keys/ca.pem"\n\n' "$tmp"
    for ((i = 1; i < entries; i++)); do
      printf '[[workload]]\nspiffe_id = "spiffe://example.org/svc/%d"\nselectors = { uid = %d }\n\n' "$i" $((100000 + i))
    done
    # The caller's entry comes last: every fetch scans all entries.
    printf '[[workload]]\nspiffe_id = "spiffe://example.org/bench"\nselectors = { uid = %d }\n' "$uid"
  } >"$tmp/agent.toml"

  local t0=$SECONDS
  "$kw" agent --config "$tmp/agent.toml" >/dev/null 2>"$tmp/agent.log" &
  agent_pid=$!
  trap 'kill $agent_pid $base_pid 2>/dev/null; rm -rf "$tmp"' RETURN
  for ((i = 0; i < 600; i++)); do [ -S "$tmp/agent.sock" ] && break; sleep 0.1; done
  [ -S "$tmp/agent.sock" ] || { echo "error: the agent did not start:" >&2; cat "$tmp/agent.log" >&2; kill $agent_pid; return 1; }
  echo "agent: $entries entries, SVIDs issued and serving after $((SECONDS - t0)) s"
  echo "agent RSS after start:  $(awk '/VmRSS/ {print $2, $3}' /proc/$agent_pid/status)"

  "$load" baseline --socket "$tmp/baseline.sock" --from "$tmp/agent.sock" >/dev/null 2>&1 &
  base_pid=$!
  for ((i = 0; i < 100; i++)); do [ -S "$tmp/baseline.sock" ] && break; sleep 0.1; done

  local base agent
  base=$("$load" run --socket "$tmp/baseline.sock" --tasks "$tasks" --seconds "$seconds" --threads "$threads")
  echo "baseline (raw tonic, fixed response): $base"
  kill $base_pid; wait $base_pid 2>/dev/null || true
  agent=$("$load" run --socket "$tmp/agent.sock" --tasks "$tasks" --seconds "$seconds" --threads "$threads")
  echo "keyward agent:                        $agent"
  local b a
  b=$(sed -n 's/.*fetches_per_s=\([0-9]*\).*/\1/p' <<<"$base")
  a=$(sed -n 's/.*fetches_per_s=\([0-9]*\).*/\1/p' <<<"$agent")
  awk -v a="$a" -v b="$b" 'BEGIN { printf "ratio agent/baseline fetches/s: %.2f\n", a / b }'
  echo "agent RSS after load:   $(awk '/VmRSS/ {print $2, $3}' /proc/$agent_pid/status) (peak $(awk '/VmHWM/ {print $2, $3}' /proc/$agent_pid/status))"
  kill -TERM $agent_pid; wait $agent_pid || echo "warning: the agent exited with $?" >&2
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  bench_agent "$@"
fi

#!/usr/bin/env bash
# Benchmark of the agent's Workload API (issues 6 and 19): 32 tasks opening FetchX509SVID
# streams (first message only) for 10 s against an agent with 1,000 workload entries
# and cached SVIDs, side by side with a raw tonic baseline serving a response of the same
# size; prints fetches/s, p50/p99 latency, errors, the ratios, the time from the agent's
# start until all its SVIDs are served, and the agent's resident memory.
#
# Run it: scripts/bench-agent.sh [ENTRIES=1000] [SECONDS=10] [TASKS=32] [CLIENT_THREADS=2] [SELECTORS=uid]
# SELECTORS is `uid` (entries name a uid) or `path` (a uid and the client's executable,
# so every call also reads the caller's /proc/PID/exe).
# Source it: defines functions only (bench_agent, and the pieces scripts/bench.sh reuses:
# bench_agent_build, bench_agent_start, bench_agent_baseline_start, bench_agent_load,
# bench_agent_stop, rss_kb).

# bench_agent_build: builds the agent and the load client in release; sets KW and LOAD.
bench_agent_build() {
  local root target
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  target=${CARGO_TARGET_DIR:-$root/target}
  # Two builds: the binary as `cargo build --release -p keyward` makes it (see bench.sh).
  (cd "$root" && cargo build --release -q -p keyward --bin keyward &&
    cargo build --release -q -p keyward --example load) || return 1
  KW=$target/release/keyward
  LOAD=$target/release/examples/load
}

# bench_agent_start ENTRIES DIR [SELECTORS]: a CA key, a config with ENTRIES workload
# entries (the caller's uid last, so every fetch scans all entries; SELECTORS `path` adds
# the load client's executable to every entry) and an agent on DIR/agent.sock; waits
# until it serves. Sets AGENT_PID and AGENT_READY_MS, the milliseconds from the agent's
# start until its socket is bound, which is after every SVID is issued (polled every
# 5 ms); the agent's log is DIR/agent.log.
bench_agent_start() {
  local entries=$1 dir=$2 selectors=${3:-uid} uid i extra= t0
  uid=$(id -u)
  case $selectors in
    uid) ;;
    path) extra=", path = \"$LOAD\"" ;;
    *) echo "error: SELECTORS is uid or path, not '$selectors'" >&2; return 1 ;;
  esac
  "$KW" --state-dir "$dir/state" key generate --key "file:$dir/keys/ca.pem" --algorithm ecdsa-p256 >/dev/null || return 1
  # The per-uid call limit raised to its maximum (default 50,000 a second, burst 100,000):
  # the load is one uid, and on a fast VM its clients keep above 50,000 fetches a second
  # through two agent rounds back to back, longer than the burst lasts, and the limiter
  # answers ResourceExhausted (10,179 errors in one round at 10,000 workloads, 05:00 UTC
  # on 2026-12-06). Every call still goes through the bucket.
  {
    printf '[agent]\nsocket = "%s/agent.sock"\nstate_dir = "%s/state"\ntrust_domain = "example.org"\n' "$dir" "$dir"
    printf 'rate_limit = { per_second = 1000000, burst = 1000000 }\n\n'
    printf '[ca]\nkey = "file:%s/keys/ca.pem"\n\n' "$dir"
    for ((i = 1; i < entries; i++)); do
      printf '[[workload]]\nspiffe_id = "spiffe://example.org/svc/%d"\nselectors = { uid = %d%s }\n\n' "$i" $((100000 + i)) "$extra"
    done
    printf '[[workload]]\nspiffe_id = "spiffe://example.org/bench"\nselectors = { uid = %d%s }\n' "$uid" "$extra"
  } >"$dir/agent.toml"
  t0=$(date +%s%N)
  "$KW" agent --config "$dir/agent.toml" >/dev/null 2>"$dir/agent.log" &
  AGENT_PID=$!
  for ((i = 0; i < 12000; i++)); do [ -S "$dir/agent.sock" ] && break; sleep 0.005; done
  AGENT_READY_MS=$((($(date +%s%N) - t0) / 1000000))
  [ -S "$dir/agent.sock" ] || {
    echo "error: the agent did not start:" >&2
    cat "$dir/agent.log" >&2
    return 1
  }
}

# bench_agent_baseline_start DIR: the raw tonic baseline on DIR/baseline.sock, serving
# the response it fetched once from the agent. Sets BASE_PID.
bench_agent_baseline_start() {
  local dir=$1 i
  "$LOAD" baseline --socket "$dir/baseline.sock" --from "$dir/agent.sock" >/dev/null 2>&1 &
  BASE_PID=$!
  for ((i = 0; i < 100; i++)); do [ -S "$dir/baseline.sock" ] && break; sleep 0.1; done
  [ -S "$dir/baseline.sock" ] || { echo "error: the baseline server did not start" >&2; return 1; }
}

# bench_agent_load SOCKET SECONDS TASKS THREADS: one load run; prints the client's line
# (fetches=.. fetches_per_s=.. p50_us=.. p99_us=.. max_us=.. errors=..).
bench_agent_load() {
  "$LOAD" run --socket "$1" --seconds "$2" --tasks "$3" --threads "$4"
}

# rss_kb PID [FIELD]: a process's VmRSS (or FIELD, e.g. VmHWM) in kB.
rss_kb() {
  awk -v f="${2:-VmRSS}:" '$1 == f {print $2}' "/proc/$1/status"
}

# bench_agent_stop: stops the agent (TERM, then waits for a clean exit) and the baseline.
bench_agent_stop() {
  local rc
  if [ -n "${BASE_PID:-}" ]; then
    kill "$BASE_PID" 2>/dev/null || true
    wait "$BASE_PID" 2>/dev/null || true
    BASE_PID=
  fi
  if [ -n "${AGENT_PID:-}" ]; then
    kill -TERM "$AGENT_PID" 2>/dev/null || true
    wait "$AGENT_PID" || { rc=$?; echo "warning: the agent exited with $rc" >&2; }
    AGENT_PID=
  fi
  return 0
}

bench_agent() {
  local entries=${1:-1000} seconds=${2:-10} tasks=${3:-32} threads=${4:-2} selectors=${5:-uid}
  local tmp
  bench_agent_build || return 1
  tmp=$(mktemp -d)
  trap 'bench_agent_stop; rm -rf "$tmp"' RETURN
  bench_agent_start "$entries" "$tmp" "$selectors" || return 1
  echo "agent: $entries entries ($selectors selectors), SVIDs issued and serving ${AGENT_READY_MS} ms after start"
  echo "agent RSS after start:  $(rss_kb $AGENT_PID) kB"
  bench_agent_baseline_start "$tmp" || return 1

  local base agent
  base=$(bench_agent_load "$tmp/baseline.sock" "$seconds" "$tasks" "$threads")
  echo "baseline (raw tonic, fixed response): $base"
  agent=$(bench_agent_load "$tmp/agent.sock" "$seconds" "$tasks" "$threads")
  echo "keyward agent:                        $agent"
  local b a bp ap
  b=$(sed -n 's/.*fetches_per_s=\([0-9]*\).*/\1/p' <<<"$base")
  a=$(sed -n 's/.*fetches_per_s=\([0-9]*\).*/\1/p' <<<"$agent")
  bp=$(sed -n 's/.*p99_us=\([0-9]*\).*/\1/p' <<<"$base")
  ap=$(sed -n 's/.*p99_us=\([0-9]*\).*/\1/p' <<<"$agent")
  awk -v a="$a" -v b="$b" -v ap="$ap" -v bp="$bp" 'BEGIN { printf "ratio agent/baseline fetches/s: %.2f, p99: %.2f\n", a / b, ap / bp }'
  echo "agent RSS after load:   $(rss_kb $AGENT_PID) kB (peak $(rss_kb $AGENT_PID VmHWM) kB); baseline $(rss_kb $BASE_PID) kB"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  bench_agent "$@"
fi

#!/usr/bin/env bash
# Writes agent/link/text-order.txt, the order in which the release build lays out the
# functions of the `keyward` binary (agent/build.rs passes it to the linker): first the
# functions the agent runs while it serves the Workload API, by how much of its time
# they take, then those whose first run faulted a page of code in (at start or under
# load), then every other function its start runs (issuing the SVIDs of 1,000
# workloads). Those are about 2.2 MB of the binary's 16 MB of code; laid out together,
# they kept 4.5 MB of the agent's code resident after the bench's load, against 10.4 MB
# with them scattered (README, issue 19).
#
# Run it after a change that renames or adds many functions on those paths, and after
# any change to a crate's dependencies or features, which renames symbols across the
# crates built on it (a stale list costs memory, never correctness: names no longer in
# the binary are skipped, new functions go after the listed ones; scripts/bench.sh says
# how many names the binary has, and will not write README's table under 98%):
# scripts/text-order.sh
# Needs valgrind (the start, every function it runs) and perf (the serving path,
# sampled), and builds the release binary (CARGO_TARGET_DIR is honoured).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
for tool in valgrind perf python3; do
  command -v "$tool" >/dev/null || { echo "error: $tool is needed" >&2; exit 1; }
done
# shellcheck source=scripts/bench-agent.sh
source scripts/bench-agent.sh
bench_agent_build
tmp=$(mktemp -d)
trap 'bench_agent_stop; rm -rf "$tmp"' EXIT

# The start under callgrind: every function it runs. The agent is stopped as soon as
# its socket exists, before any caller connects (valgrind does not run rustix's vDSO
# lookup, which the first accepted connection reaches).
native=$KW
cat >"$tmp/under-callgrind" <<EOF
#!/bin/sh
if [ "\$1" = agent ]; then
  exec env MALLOC_ARENA_MAX=2 valgrind --tool=callgrind --demangle=no \
    --callgrind-out-file="$tmp/start.callgrind" "$native" "\$@"
fi
exec "$native" "\$@"
EOF
chmod +x "$tmp/under-callgrind"
KW=$tmp/under-callgrind
mkdir "$tmp/start"
bench_agent_start 1000 "$tmp/start" uid
bench_agent_stop 2>/dev/null
KW=$native

# The serving path, sampled while 32 clients fetch, with uid and with path+uid entries;
# and every function whose first run faulted a page of code in, at start and under load
# (what callgrind and the samples miss: functions that run rarely).
for selectors in uid path; do
  mkdir "$tmp/$selectors"
  dd if="$KW" iflag=nocache count=0 2>/dev/null
  perf record -q -a -e page-faults -c 1 -o "$tmp/$selectors.faults" -- sleep 12 &
  faulting=$!
  sleep 0.5
  bench_agent_start 1000 "$tmp/$selectors" "$selectors"
  perf record -q -F 15000 -p "$AGENT_PID" -o "$tmp/$selectors.perf" -- sleep 4 &
  sampling=$!
  bench_agent_load "$tmp/$selectors/agent.sock" 4 32 2 >/dev/null
  wait "$sampling"
  pid=$AGENT_PID
  bench_agent_stop
  wait "$faulting"
  perf report -i "$tmp/$selectors.perf" --no-demangle --no-children --sort dso,sym -g none \
    --stdio 2>/dev/null | awk '$2 == "keyward" && $3 == "[.]" {print $1, $4}' >>"$tmp/serving.txt"
  perf report -i "$tmp/$selectors.faults" --pid "$pid" --no-demangle --no-children \
    --sort dso,sym -g none --stdio 2>/dev/null |
    awk '$2 == "keyward" && $3 == "[.]" {print $4}' >>"$tmp/faulting.txt"
done

nm --defined-only "$KW" | awk '$2 ~ /^[tTwW]$/ {print $3}' >"$tmp/symbols.txt"
python3 - "$tmp" "$root/agent/link/text-order.txt" <<'EOF'
import collections, re, sys
tmp, out = sys.argv[1], sys.argv[2]
symbols = set(open(f"{tmp}/symbols.txt").read().split())
serving = collections.Counter()
for line in open(f"{tmp}/serving.txt"):
    share, name = line.split()
    serving[name] += float(share.rstrip("%"))
# callgrind names each function once as "(id) name", then by "(id)" alone.
started, names = [], {}
for line in open(f"{tmp}/start.callgrind"):
    m = re.match(r"c?fn=\((\d+)\)(?: (.+))?$", line.rstrip("\n"))
    if m:
        if m.group(2):
            names[m.group(1)] = m.group(2)
        started.append(names[m.group(1)])
order, seen = [], set()
faulting = open(f"{tmp}/faulting.txt").read().split()
for name in [n for n, _ in serving.most_common()] + faulting + started:
    if name in symbols and name not in seen:
        order.append(name)
        seen.add(name)
open(out, "w").write("\n".join(order) + "\n")
print(f"{out}: {len(order)} functions ({sum(1 for n in serving if n in symbols)} on the serving path)")
EOF

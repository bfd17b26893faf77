#!/usr/bin/env bash
# The benchmark table (issues 8 and 19): builds in release, starts the backends the chosen
# rows need (SoftHSM, swtpm, moto, OpenBao; no more), measures every row as baseline and keyward
# side by side in alternating rounds (rates: medians over rounds; ratios: the median of the
# rounds' keyward / baseline, with their range), and prints one Markdown table
# with the machine, commit, settings, date and each target met or not.
#
#   scripts/bench.sh [SECONDS]      SECONDS per measurement window (default 2)
#
# Environment (defaults in brackets):
#   BENCH_ROUNDS [5]          paired rounds per row (baseline, keyward, keyward, baseline, ...);
#                             a row's ratio is the median of its rounds' ratios: on a shared
#                             VM a slow window in 3 rounds moved rows by up to 0.4 (2026-12-07)
#   BENCH_CONCURRENCY [4]     concurrent issuers in the issuance rows (measured at 1 and at
#                             this) and in the OpenBao PKI row
#   BENCH_AGENT_TASKS [32]    concurrent Workload API clients
#   BENCH_AGENT_ENTRIES [1000,10000] workload entries in the agent's configuration (each
#                             count measured with uid-only and with path+uid entries)
#   BENCH_CLIENT_THREADS [2]  tokio threads of the Workload API load client
#   BENCH_OUT [$CARGO_TARGET_DIR/bench-table.md]  the table is also written there
#   BENCH_BULK_CSRS [10000]   CSRs signed per run in the bulk rows (`sign-csr --batch`, pem and jsonl)
#   BENCH_BULK_ROUNDS [5]     paired rounds of the bulk rows: their rates follow the disk's
#                             writeback, and the median of 3 moved 0.72-1.04 between runs
#                             (the ratio is the median of the rounds' ratios; at 7 rounds the
#                             two rows took 147 of the 615 s on the 2-core AMD VM)
#   BENCH_README [unset]      1: a full run (BENCH_ROWS unset) also replaces README.md's
#                             table (between its bench-table marker lines)
#   BENCH_KEYS_CLIENTS [32]   concurrent clients of the KeyService rows (scripts/bench-keys.sh)
#   BENCH_KEYS_ROUNDS [2]     rounds of the KeyService rows (no target; 1 s windows)
#   BENCH_ROWS [all]          comma-separated rows to run: sign, issue, pki, pkcs11, tpm, bulk, agent, acme, keys
#                             (e.g. BENCH_ROWS=pki for the OpenBao PKI row alone)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
export BENCH_SECONDS=${1:-${BENCH_SECONDS:-2}}
[[ "$BENCH_SECONDS" =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [SECONDS] (a whole number >= 1)" >&2; exit 2; }

# want ROW: whether BENCH_ROWS selects ROW (every row when it is unset or empty).
want() { [[ -z "${BENCH_ROWS:-}" || ",$BENCH_ROWS," == *",$1,"* ]]; }
rows=${BENCH_ROWS:-}
for r in ${rows//,/ }; do
  case $r in sign|issue|pki|pkcs11|tpm|bulk|agent|acme|keys) ;; *) echo "BENCH_ROWS: unknown row '$r' (sign, issue, pki, pkcs11, tpm, bulk, agent, acme, keys)" >&2; exit 2 ;; esac
done

STARTED=$SECONDS LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== [$((SECONDS - STARTED)) s] building in release (keyward, keyward-bench, the load client)" >&2
# keyward alone first, as `cargo build --release -p keyward` builds it: built together with
# keyward-bench or an example, its dependencies get more features, the symbol names
# change, and agent/link/text-order.txt no longer names its functions (agent/build.rs).
cargo build --release -q -p keyward --bin keyward
cargo build --release -q -p keyward-bench
cargo build --release -q -p keyward --example load --example keys_load
# A dependency added to a crate, updated, or given other features renames the symbols
# of that crate and of every crate built on it (a symbol's hash covers its crate's
# dependencies and features): rustix added to keyward-pkcs11's dependencies (09c7f31)
# left 1,251 of 1,797 listed names in the binary and the agent 2-3 MB larger at 1,000
# workloads. A README table is not made from a binary laid out by a stale list.
ORDER_LISTED=$(wc -l <agent/link/text-order.txt)
ORDER_FOUND=$(nm --defined-only "$TARGET/release/keyward" | awk '{print $3}' | sort -u |
  comm -12 - <(sort -u agent/link/text-order.txt) | wc -l)
if ((ORDER_FOUND * 100 < ORDER_LISTED * 98)); then
  echo "agent/link/text-order.txt is stale: $ORDER_FOUND of its $ORDER_LISTED names are in the release binary; run scripts/text-order.sh (then this script)" >&2
  [ "${BENCH_README:-}" != 1 ] || exit 2
fi
if want tpm; then cargo bench --no-run -q -p keyward-pkcs11 --bench tpm; fi

source scripts/lib.sh
source scripts/softhsm.sh
source scripts/swtpm.sh
source scripts/moto.sh
source scripts/openbao.sh
source scripts/bench-agent.sh
source scripts/bench-acme.sh
source scripts/bench-keys.sh
ROUNDS=${BENCH_ROUNDS:-5}
CONC=${BENCH_CONCURRENCY:-4}
TASKS=${BENCH_AGENT_TASKS:-32}
ENTRIES=${BENCH_AGENT_ENTRIES:-1000,10000}
THREADS=${BENCH_CLIENT_THREADS:-2}
OUT=${BENCH_OUT:-$TARGET/bench-table.md}
KWBENCH=$TARGET/release/keyward-bench
KW=$TARGET/release/keyward
LOAD=$TARGET/release/examples/load
S=$BENCH_SECONDS
TMPD=$(mktemp -d "${TMPDIR:-/tmp}/keyward-bench.XXXXXX")
trap 'bench_agent_stop; acme_stop; openbao_stop; moto_stop; softhsm_stop; swtpm_stop; rm -rf "$TMPD"' EXIT

# Only the backends the chosen rows use: an idle server still takes CPU from the rows.
VENV=${KEYWARD_VENV:-$ROOT/target/test-venv}
if want issue || want pkcs11 || want keys; then softhsm_install; softhsm_start "$TMPD/softhsm"; fi
if want issue || want keys; then moto_install "$VENV"; moto_start "$TMPD/moto"; fi
if want tpm; then swtpm_install; swtpm_start "$TMPD/swtpm"; fi
if want issue || want pki || want keys; then openbao_install "$VENV"; openbao_start "$TMPD/openbao"; fi

note() { printf '   %s\n' "$*" >&2; }
# cpu_ticks: the machine's CPU time so far (/proc/stat's cpu line, user to steal) and the
# part of it the hypervisor gave other guests (steal), in ticks.
cpu_ticks() { awk '$1 == "cpu" {t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $9; exit}' /proc/stat; }
CPU_BEFORE=$(cpu_ticks)
# field NAME LINE: the value of NAME=value in LINE.
field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"; }
# median: the median of the numbers on stdin, one a line.
median() { sort -g | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
# ratio A B: A / B as a plain decimal, two decimals below 10, one above.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { r = a / b; printf (r < 10 ? "%.2f" : "%.1f"), r }'; }
# num X: a rate, rounded, with thousands separators.
num() { LC_ALL=C awk -v x="$1" 'BEGIN { s = sprintf("%.0f", x); o = ""; while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) }; print s o }'; }

ROWS=()
# row OPERATION BASELINE BASELINE_RATE KEYWARD_RATE RATIO [TARGET]: one table row.
row() { ROWS+=("| $1 | $2 | $3 | $4 | $5 | ${6:-} |"); }
# ratio_cell MEDIAN LOW HIGH: a ratio cell: the median of a row's round ratios (keyward /
# baseline in the same round) and, in brackets, the lowest and highest.
ratio_cell() { printf '%s (rounds %s-%s)' "$(ratio "$1" 1)" "$(ratio "$2" 1)" "$(ratio "$3" 1)"; }
# paired LINE: the ratio cell of a keyward-bench LINE.
paired() { ratio_cell "$(field ratio "$1")" "$(field ratio_low "$1")" "$(field ratio_high "$1")"; }
# rounds_cell BASELINES KEYWARDS: the ratio cell of rates measured here, the two sides'
# rates as space-separated lists in round order.
rounds_cell() {
  # shellcheck disable=SC2046 # the median, lowest and highest: three words
  ratio_cell $(paste -d' ' <(tr ' ' '\n' <<<"$1") <(tr ' ' '\n' <<<"$2") | awk '{print $2 / $1}' |
    sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2, a[1], a[NR]}')
}
# met_at_least LINE MIN: the target "≥ MIN" and whether LINE's median round ratio meets it.
met_at_least() { at_least "$(ratio "$(field ratio "$1")" 1)" "$2"; }
# at_least RATIO MIN: the target "≥ MIN" and whether RATIO meets it.
at_least() { awk -v r="$1" -v m="$2" 'BEGIN { printf "≥ %s: %s", m, (r >= m ? "met" : "NOT met") }'; }

if want sign; then
echo "== [$((SECONDS - STARTED)) s] row 1: ECDSA P-256 signing, one thread ($ROUNDS rounds of ${S}s)" >&2
ossl=() kwsign=()
openssl_rate() {
  openssl speed -seconds "$S" ecdsap256 2>/dev/null | awk '/ecdsa \(nistp256\)/ {print $(NF - 1)}'
}
keyward_sign_rate() { field keyward_per_s "$("$KWBENCH" sign --seconds "$S")"; }
for ((r = 0; r < ROUNDS; r++)); do
  if ((r % 2 == 0)); then ossl+=("$(openssl_rate)"); kwsign+=("$(keyward_sign_rate)")
  else kwsign+=("$(keyward_sign_rate)"); ossl+=("$(openssl_rate)"); fi
  note "round $r: openssl ${ossl[-1]}/s, keyward ${kwsign[-1]}/s"
done
b=$(printf '%s\n' "${ossl[@]}" | median) k=$(printf '%s\n' "${kwsign[@]}" | median)
row "ECDSA P-256 signing, 1 thread (keyward: software \`KeySigner::sign\`)" \
  "\`openssl speed ecdsap256\` ($(openssl version | awk '{print $1, $2}'))" \
  "$(num "$b") signs/s" "$(num "$k") signs/s" "$(rounds_cell "${ossl[*]}" "${kwsign[*]}")"
fi

# issuance_row CA LABEL BASELINE C: the issuance row for one CA backend at concurrency C.
issuance_row() {
  echo "== [$((SECONDS - STARTED)) s] issuance with the CA key in $2, concurrency $4 ($ROUNDS rounds of ${S}s)" >&2
  local line b k
  line=$("$KWBENCH" issue --ca "$1" --concurrency "$4" --seconds "$S" --rounds "$ROUNDS")
  note "$line"
  b=$(field baseline_per_s "$line") k=$(field keyward_per_s "$line")
  row "Service-cert issuance, CA key in $2, $4 concurrent \`issue_service\` call(s)" "$3" \
    "$(num "$b") certs/s" "$(num "$k") certs/s" "$(paired "$line")" "$(met_at_least "$line" 0.9)"
}
if want issue; then
same="the same work raw: aws-lc-rs leaf key, rcgen certificate,"
for c in 1 "$CONC"; do
  issuance_row software "software" "$same aws-lc-rs ECDSA sign, aws-lc-rs verify" "$c"
  issuance_row softhsm "SoftHSM" "$same cryptoki \`C_Sign\` (a session per issuer), aws-lc-rs verify" "$c"
  issuance_row transit "OpenBao Transit" "$same reqwest \`POST transit/sign\`, aws-lc-rs verify" "$c"
  issuance_row kms "AWS KMS (moto)" "$same aws-sdk-kms \`Sign\` (keyward's client), aws-lc-rs verify" "$c"
done
fi

if want pki; then
echo "== [$((SECONDS - STARTED)) s] row 3: keyward issuance (CA key in software) vs OpenBao PKI" >&2
line=$("$KWBENCH" pki --concurrency "$CONC" --seconds "$S" --rounds "$ROUNDS")
note "$line"
b=$(field baseline_per_s "$line") k=$(field keyward_per_s "$line")
row "Service-cert issuance, EC P-256 leaf + key (keyward: CA key in software, in process)" \
  "OpenBao PKI \`POST pki/issue/<role>\` over HTTP" \
  "$(num "$b") certs/s" "$(num "$k") certs/s" "$(paired "$line")" "$(met_at_least "$line" 10)"
fi

if want pkcs11; then
for c in 1 2 4; do
  echo "== [$((SECONDS - STARTED)) s] PKCS#11 signing on SoftHSM, $c session(s) ($ROUNDS rounds of ${S}s)" >&2
  line=$("$KWBENCH" sign-pkcs11 --concurrency "$c" --seconds "$S" --rounds "$ROUNDS")
  note "$line"
  b=$(field baseline_per_s "$line") k=$(field keyward_per_s "$line")
  row "ECDSA P-256 signing on SoftHSM, $c session(s), $c caller(s) (keyward: \`KeySigner::sign\`)" \
    "raw SHA-256 + cryptoki \`C_Sign\` + DER, $c session(s)" \
    "$(num "$b") signs/s" "$(num "$k") signs/s" "$(paired "$line")" "$(met_at_least "$line" 0.9)"
done
fi

if want tpm; then
  # Short on purpose (2 s windows): swtpm signs a few hundred times a second.
  echo "== [$((SECONDS - STARTED)) s] issuance with the CA key in a TPM (swtpm) vs raw C_Sign ($ROUNDS rounds of 2s)" >&2
  # tpm2-pkcs11 logs an ERROR line for the sign-only template the TPM refuses (once).
  line=$(cargo bench -q -p keyward-pkcs11 --bench tpm -- --seconds 2 --rounds "$ROUNDS" | grep '^tpm ')
  note "$line"
  b=$(field baseline_per_s "$line") k=$(field keyward_per_s "$line")
  row "Service-cert issuance, CA key in a TPM (tpm2-pkcs11 on swtpm via tpm2-abrmd), 1 issuer" \
    "raw cryptoki \`C_Sign\` loop on the same key, 1 session" \
    "$(num "$b") signs/s" "$(num "$k") certs/s" "$(ratio "$k" "$b")" "no target (swtpm is slow; the ratio is the figure)"
fi

if want bulk; then
  BULK=${BENCH_BULK_CSRS:-10000} BULK_ROUNDS=${BENCH_BULK_ROUNDS:-5}
  for fmt in pem jsonl; do
    echo "== [$((SECONDS - STARTED)) s] bulk: sign-csr --batch --output-format $fmt over $(num "$BULK") CSRs vs the same work raw ($BULK_ROUNDS rounds)" >&2
    line=$("$KWBENCH" bulk --keyward "$KW" --csrs "$BULK" --output-format "$fmt" --rounds "$BULK_ROUNDS")
    note "$line"
    b=$(field baseline_per_s "$line") k=$(field keyward_per_s "$line") c=$(field compute_only_per_s "$line")
    case $fmt in
      pem) what="one chain file per CSR (the default)" out="each chain file written atomically, synced 1,000 together" ;;
      jsonl) what="\`--output-format jsonl\`, one JSON Lines file per 1,000" out="one JSON Lines file per 1,000 written atomically and synced" ;;
    esac
    row "Bulk provisioning: \`keyward sign-csr --batch\` over $(num "$BULK") device CSRs, $what (CA key in software; the whole command, output and records written durably)" \
      "the same work raw in one loop on $(nproc) threads: read the CSR, rcgen decode + signature check, rcgen certificate, aws-lc-rs sign, aws-lc-rs verify; $out by a writer thread (bench/src/bulk.rs; $(num "$c")/s without the output)" \
      "$(num "$b") CSRs/s" "$(num "$k") CSRs/s" "$(paired "$line")" "$(met_at_least "$line" 0.9)"
  done
fi

errors=none arss=
if want agent; then
# med NAME LINE...: the median of NAME over the lines.
med() { local n=$1 l; shift; for l in "$@"; do field "$n" "$l"; done | median; }
# rates LINE...: the lines' fetches_per_s, space-separated, in order.
rates() { local l; for l in "$@"; do field fetches_per_s "$l"; done | xargs; }
mb() { awk -v k="$1" 'BEGIN { printf "%.1f MB", k / 1024 }'; }
# at_most VALUE MAX UNIT: the target "≤ MAX UNIT" and whether VALUE meets it.
at_most() { awk -v v="$1" -v m="$2" -v u="$3" 'BEGIN { printf "≤ %s %s: %s", m, u, (v <= m ? "met" : "NOT met") }'; }
errors=0 arss=() ready=()
# Both servers map their executables as read back from disk, as after a reboot: fresh
# from the linker (its writes still in the page cache) the same agent binary measured
# up to 2 MB more resident than once its cached pages were dropped and read again.
for f in "$KW" "$LOAD"; do sync "$f" && dd if="$f" iflag=nocache count=0 status=none; done
for n in ${ENTRIES//,/ }; do
  for sel in uid path; do
    NENTRIES=$(num "$n")
    echo "== [$((SECONDS - STARTED)) s] Workload API, $n workloads ($sel selectors), $TASKS clients ($ROUNDS rounds of ${S}s)" >&2
    rm -rf "${TMPD:?}/agent-$n-$sel"; mkdir -p "$TMPD/agent-$n-$sel"
    bench_agent_start "$n" "$TMPD/agent-$n-$sel" "$sel"
    note "agent serving ${AGENT_READY_MS} ms after start (every SVID issued), RSS $(rss_kb "$AGENT_PID") kB"
    [ "$sel" = uid ] && ready+=("$n $AGENT_READY_MS")
    bench_agent_baseline_start "$TMPD/agent-$n-$sel"
    bl=() al=()
    for ((r = 0; r < ROUNDS; r++)); do
      if ((r % 2 == 0)); then
        bl+=("$(bench_agent_load "$TMPD/agent-$n-$sel/baseline.sock" "$S" "$TASKS" "$THREADS")")
        al+=("$(bench_agent_load "$TMPD/agent-$n-$sel/agent.sock" "$S" "$TASKS" "$THREADS")")
      else
        al+=("$(bench_agent_load "$TMPD/agent-$n-$sel/agent.sock" "$S" "$TASKS" "$THREADS")")
        bl+=("$(bench_agent_load "$TMPD/agent-$n-$sel/baseline.sock" "$S" "$TASKS" "$THREADS")")
      fi
      note "round $r: baseline ${bl[-1]}"
      note "round $r: agent    ${al[-1]}"
    done
    errors=$( (echo "$errors"; for l in "${bl[@]}" "${al[@]}"; do field errors "$l"; done) | awk '{s += $1} END {print s + 0}')
    b=$(med fetches_per_s "${bl[@]}") k=$(med fetches_per_s "${al[@]}")
    bp=$(med p99_us "${bl[@]}") kp=$(med p99_us "${al[@]}")
    cell=$(rounds_cell "$(rates "${bl[@]}")" "$(rates "${al[@]}")")
    rr=${cell%% *} pr=$(ratio "$kp" "$bp")
    what=$([ "$sel" = uid ] && echo "uid-only entries" || echo "path+uid entries")
    row "Workload API \`FetchX509SVID\` (first message), $TASKS clients, $NENTRIES workloads, $what" \
      "raw tonic server, one fixed response of the same size (agent/examples/load.rs)" \
      "$(num "$b") fetches/s (p50 $(med p50_us "${bl[@]}") µs, p99 $bp µs)" \
      "$(num "$k") fetches/s (p50 $(med p50_us "${al[@]}") µs, p99 $kp µs)" \
      "${cell%)}; p99 $pr)" \
      "$(awk -v r="$rr" -v p="$pr" 'BEGIN { printf "rate ≥ 0.8, p99 ≤ 1.2×: %s", (r >= 0.8 && p <= 1.2 ? "met" : "NOT met") }')"
    if [ "$sel" = uid ]; then
      brss=$(rss_kb "$BASE_PID") rss=$(rss_kb "$AGENT_PID") hwm=$(rss_kb "$AGENT_PID" VmHWM)
      arss+=("$n $brss $rss $hwm")
    fi
    bench_agent_stop
  done
done
for m in "${arss[@]}"; do
  read -r n brss rss hwm <<<"$m"
  limit=$( ((n <= 1000)) && echo 15 || echo 60)
  row "Agent resident memory (VmRSS) with $(num "$n") workloads, after the load" \
    "the raw tonic server's VmRSS after the same load" \
    "$(mb "$brss")" "$(mb "$rss") (peak $(mb "$hwm"))" "$(ratio "$rss" "$brss")" \
    "$(at_most "$(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }')" "$limit" MB)"
done
for m in "${ready[@]}"; do
  read -r n ms <<<"$m"
  ((n == 1000)) || continue
  row "Agent start until all $(num "$n") SVIDs are served (first start: the CA made from its key, every SVID issued, socket bound)" \
    "(none: a time)" "" "$(awk -v m="$ms" 'BEGIN { printf "%.2f s", m / 1000 }')" "" \
    "$(at_most "$(awk -v m="$ms" 'BEGIN { printf "%.2f", m / 1000 }')" 0.5 s)"
done
fi

if want acme; then echo "== [$((SECONDS - STARTED)) s] ACME" >&2; acme_row; fi
if want keys; then echo "== [$((SECONDS - STARTED)) s] KeyService" >&2; keys_rows; fi
echo "== [$((SECONDS - STARTED)) s] done" >&2

{
  echo "keyward benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'); CPU: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' plus uncommitted changes')"
  echo "Load average (1, 5, 15 min) before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg); $((SECONDS - STARTED)) s in all, build included; CPU time stolen by the hypervisor while measuring: $(read -r t0 s0 <<<"$CPU_BEFORE"; read -r t1 s1 <<<"$(cpu_ticks)"; awk -v t=$((t1 - t0)) -v s=$((s1 - s0)) 'BEGIN { printf "%.1f%%", t ? 100 * s / t : 0 }') (/proc/stat)."
  echo
  echo "| operation | baseline | baseline rate | keyward rate | ratio | target |"
  echo "|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "Settings: ${S} s per measurement window, $ROUNDS paired rounds per row (${BULK_ROUNDS:-5} in the bulk rows, each side started after a \`sync\`; the order of baseline and keyward alternates between rounds; rates are medians over rounds; a ratio is the median of the rounds' ratios, keyward / baseline within a round, with the lowest and highest in brackets),"
  echo "issuance at concurrency 1 and $CONC, $TASKS Workload API clients on $THREADS client threads. ratio = keyward rate / baseline rate."
  echo "Both sides are built by this workspace's release profile ($(awk '/^\[profile\.release\]/ {p = 1; next} /^\[/ {p = 0} p && /=/ {printf "%s%s", sep, $0; sep = ", "}' Cargo.toml))."
  echo "Issuance rows compare single \`CaIssuer::issue_service\` calls (new P-256 leaf key with its PKCS#8, certificate signed by the CA key, keyward's post-issuance check) with the same work done raw per certificate (bench/src/same_work.rs):"
  echo "an aws-lc-rs leaf key, the same certificate profile encoded by rcgen, the CA's signature through the backend's raw interface, its aws-lc-rs verification; both sides run as tokio tasks on the same runtime threads, the raw loops inline (one PKCS#11 session per task)."
  echo "The PKCS#11 rows run SHA-256 + \`C_Sign\` + DER encoding raw, inline on tokio tasks with a session each, beside \`KeySigner::sign\` from as many tasks; keyward's session pool is capped at the core count ($(nproc) here), so at 4 sessions its 4 callers share $(nproc)."
  echo "The OpenBao PKI row compares whole issuances (both generate the leaf key; the role does not store certificates); its target is issue 8's."
  if want agent; then
    echo "Workload API rows: ratio = keyward fetches/s / baseline fetches/s (the median of the rounds'), and in brackets the rounds' range and keyward's p99 / the baseline's p99 (medians over rounds); path+uid entries also name the client's executable, so each call also checks the entry's kept path lookup (one \`poll\` of inotify and the mount table) and compares the file with the caller's; load client and servers share the machine's $(nproc) cores."
    echo "The memory rows are the exception: ratio = keyward RSS / baseline RSS (lower is better). Their baseline is the raw tonic server of the fetch row (the same gRPC stack holding one response), i.e. what serving the Workload API costs before keyward's own state."
    echo "Workload API errors over all rounds: $errors."
    echo "The agent's binary lays out first the functions agent/link/text-order.txt lists (agent/build.rs): $ORDER_FOUND of its $ORDER_LISTED names are in this binary (fewer means the list is stale: scripts/text-order.sh)."
  fi
  if want keys; then
    echo "KeyService rows (bench/src/keys.rs): one agent granting this uid a SoftHSM and a software P-256 signing key and software, Transit, KMS and PKCS#11 (SoftHSM) KEKs; keys_load clients (a connection each) call \`Sign\` (64-byte message) or \`GenerateDataKey\` through its socket, beside the same key in process and the same work raw, at the same concurrency, in 1 s windows; ratio = socket rate / baseline rate, and in brackets socket p99 / baseline p99."
    echo "KeyService errors over all rounds: $KEYS_ERRORS."
  fi
  [ -z "${BENCH_ROWS:-}" ] || echo "Rows run: $BENCH_ROWS (BENCH_ROWS)."
} | tee "$OUT"
echo "(table also written to $OUT)" >&2

# README's copy: BENCH_README=1 puts the table of a full run (every row) between README's
# `<!-- bench-table -->` and `<!-- /bench-table -->` lines, replacing what was there.
if [ "${BENCH_README:-}" = 1 ]; then
  if [ -n "${BENCH_ROWS:-}" ]; then
    echo "BENCH_README=1: README's table is only replaced by a full run (BENCH_ROWS unset)" >&2
  else
    awk -v table="$OUT" '
      /^<!-- \/bench-table -->$/ { skip = 0 }
      !skip { print }
      /^<!-- bench-table -->$/ { while ((getline line < table) > 0) print line; skip = 1 }
    ' README.md >README.md.new && mv README.md.new README.md
    echo "(README.md's table replaced)" >&2
  fi
fi

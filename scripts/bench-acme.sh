# The ACME row of scripts/bench.sh (issue 20). Source scripts/lib.sh first; bench.sh's
# row/note/field/num/ratio, $KW, $KWBENCH, $TMPD and $S are used.
#
#   acme_row    starts an agent (CA key in software) with [acme] on free ports, measures
#               complete orders per second from 8 instant-acme clients (`keyward-bench
#               acme`: new order, http-01, finalize, download) and, beside it, the same
#               CA key's direct issuance rate at the same concurrency (`keyward-bench
#               issue --ca software`), and adds the row
#   acme_stop   stops that agent (safe to call when none runs)

ACME_PID=

acme_stop() {
  if [ -n "$ACME_PID" ]; then
    kill "$ACME_PID" 2>/dev/null || true
    wait "$ACME_PID" 2>/dev/null || true
    ACME_PID=
  fi
}

acme_row() {
  local d=$TMPD/acme listen http line base
  echo "== ACME: complete orders, 8 clients (${S}s) beside direct issuance" >&2
  mkdir -p "$d"
  "$KW" --state-dir "$d/state" key generate --key "file:$d/keys/ca.pem" --algorithm ecdsa-p256 >/dev/null
  listen=$(free_port) http=$(free_port)
  cat >"$d/agent.toml" <<TOML
[agent]
socket = "$d/agent.sock"
state_dir = "$d/state"
trust_domain = "example.org"

[ca]
key = "file:$d/keys/ca.pem"

[acme]
listen = "127.0.0.1:$listen"
allowed = ["127.0.0.0/8"]
rate_limit = { per_second = 100000, burst = 100000 }

[acme.testing]
http_port = $http
TOML
  "$KW" agent --config "$d/agent.toml" 2>"$d/agent.log" &
  ACME_PID=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$listen") 2>/dev/null && break
    sleep 0.1
  done
  line=$("$KWBENCH" acme --directory "https://127.0.0.1:$listen/acme/directory" \
    --root "$d/state/ca/root.pem" --http-port "$http" --concurrency 8 --seconds "$S")
  note "$line"
  acme_stop
  base=$("$KWBENCH" issue --ca software --concurrency 8 --seconds "$S" --rounds 1)
  note "$base"
  local k b
  k=$(field orders_per_s "$line") b=$(field keyward_per_s "$base")
  row "ACME: complete orders (new order, http-01, finalize with a CSR, download), 8 concurrent instant-acme clients, CA key in software" \
    "the same CA key's direct issuance: 8 concurrent \`issue_service\` calls in process" \
    "$(num "$b") certs/s" "$(num "$k") orders/s" "$(awk -v a="$k" -v b="$b" 'BEGIN { printf "%.4f", a / b }')" ""
}

# The KeyService rows of scripts/bench.sh (issue 21). Source scripts/lib.sh first; bench.sh
# starts SoftHSM, moto and OpenBao for them and defines row/note/field/num/ratio, $KW,
# $KWBENCH, $TARGET and $TMPD, which are used here.
#
#   keys_rows   runs `keyward-bench keys` (bench/src/keys.rs: it makes the keys, starts an
#               agent granting them to this uid, and drives agent/examples/keys_load.rs
#               against its socket) in 1 s windows, and adds the rows: `Sign` through the
#               socket beside `KeySigner::sign` in process (SoftHSM and software keys) and
#               beside a raw `C_Sign` loop (SoftHSM); `GenerateDataKey` through the socket
#               beside the backend's own raw data-key call (software, Transit, KMS, PKCS#11)
#
# BENCH_KEYS_CLIENTS [32]: concurrent clients (and in-process tasks) of every KeyService row.
# BENCH_KEYS_ROUNDS [2]: rounds of each row (they have no target; 5 rounds took 102 s of
# bench.sh's 640 s on the 2-core AMD VM, 3 rounds 66 s of 607).

KEYS_ERRORS=0

# keys_cell LINE SIDE UNIT: "RATE UNIT/s (p50 .. µs, p99 .. µs)" of SIDE in LINE.
keys_cell() {
  echo "$(num "$(field "$2_per_s" "$1")") $3/s (p50 $(field "$2_p50_us" "$1") µs, p99 $(field "$2_p99_us" "$1") µs)"
}

# keys_row LINE BASE_SIDE OPERATION BASELINE UNIT [EXTRA]: one table row, the socket side
# of LINE beside its BASE_SIDE; EXTRA is appended to keyward's cell.
keys_row() {
  local line=$1 base=$2
  row "$3" "$4" "$(keys_cell "$line" "$base" "$5")" "$(keys_cell "$line" socket "$5")${6:-}" \
    "$(ratio "$(field socket_per_s "$line")" "$(field "${base}_per_s" "$line")") (p99 $(ratio "$(field socket_p99_us "$line")" "$(field "${base}_p99_us" "$line")"))" \
    "none (issue 21 sets none; the ratio is the figure)"
}

# keys_data_key_row LINE KEK BASELINE: the GenerateDataKey row of KEK beside BASELINE,
# the in-process rate added to keyward's cell ($c is keys_rows' client count).
keys_data_key_row() {
  keys_row "$1" raw "KeyService \`GenerateDataKey\` through the agent's socket, $c clients, $2" \
    "$3, $c tasks" keys "; in process $(num "$(field inproc_per_s "$1")")/s"
}

keys_rows() {
  local d=$TMPD/keys c=${BENCH_KEYS_CLIENTS:-32} rounds=${BENCH_KEYS_ROUNDS:-2} out line kind
  echo "== KeyService: Sign and GenerateDataKey through the socket, $c clients, beside in process and raw ($rounds rounds of 1s)" >&2
  mkdir -p "$d"
  out=$("$KWBENCH" keys --keyward "$KW" --load "$TARGET/release/examples/keys_load" --dir "$d" \
    --concurrency "$c" --seconds 1 --rounds "$rounds")
  while read -r line; do
    note "$line"
    KEYS_ERRORS=$((KEYS_ERRORS + $(field errors "$line")))
    kind=$(field row "$line")
    case $kind in
      keys-sign-softhsm)
        keys_row "$line" inproc "KeyService \`Sign\` through the agent's socket, $c clients, ECDSA P-256 key on SoftHSM" \
          "keyward's \`KeySigner::sign\` in process on the same key, $c tokio tasks" signs
        keys_row "$line" raw "KeyService \`Sign\` through the agent's socket, $c clients, ECDSA P-256 key on SoftHSM" \
          "raw SHA-256 + cryptoki \`C_Sign\` + DER on the same key, $c tasks with a session each (the PKCS#11 rows' raw loop)" signs ;;
      keys-sign-software)
        keys_row "$line" inproc "KeyService \`Sign\` through the agent's socket, $c clients, ECDSA P-256 key in software" \
          "keyward's \`KeySigner::sign\` in process on the same key, $c tokio tasks" signs ;;
      keys-data-key-software)
        keys_data_key_row "$line" "software KEK (AES-256-GCM key file)" \
          "raw aws-lc-rs: 32 random bytes sealed with AES-256-GCM under the same KEK's key" ;;
      keys-data-key-transit)
        keys_data_key_row "$line" "OpenBao Transit KEK" \
          "raw reqwest \`POST transit/datakey/plaintext/<key>\` (256 bits) on the same key" ;;
      keys-data-key-kms)
        keys_data_key_row "$line" "AWS KMS KEK (moto)" \
          "raw aws-sdk-kms \`GenerateDataKey\` (AES_256) on the same key, keyward's SDK client" ;;
      keys-data-key-pkcs11)
        keys_data_key_row "$line" "PKCS#11 KEK on SoftHSM (AES-256, CKM_AES_GCM)" \
          "raw cryptoki: 32 random bytes, \`C_GenerateRandom\` IV, \`C_Encrypt\` CKM_AES_GCM on the same key, a session per task" ;;
      *) echo "error: keyward-bench keys printed an unknown row: $line" >&2; return 1 ;;
    esac
  done <<<"$out"
}

#!/usr/bin/env bash
# Check throughput against the gRPC transport floor, measured in the same run.
#
#   bench/run.sh [small|large|both]      (default: both)
#
# For each dataset: generates it with `clef bench dataset` (COPY), starts
# `clef serve` on it, drives grpc.health.v1.Health/Check and then
# clef.v1.AuthorizationService/Check (by connection key, one subject per
# h2load process) with h2load at the same concurrency, and prints req/s of
# each, their ratio, and Check latency percentiles at full and at half the
# peak load; then runs the Criterion benchmark of the in-process decision.
# Environment: CLIENTS (total connections, default 32), PROCS (h2load
# processes = distinct subjects, default 16), DURATION (seconds, default 10),
# CRITERION=0 to skip the in-process benchmark; the server inherits RUST_LOG
# (default info: one access line per RPC).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

WHICH=${1:-both}
CLIENTS=${CLIENTS:-32}
PROCS=${PROCS:-16}
DURATION=${DURATION:-10}
PER_PROC=$(( CLIENTS / PROCS ))

ensure_tools
command -v h2load >/dev/null 2>&1 || { echo "installing h2load..."; apt_install nghttp2-client; }
command -v bc >/dev/null 2>&1 || apt_install bc
SQLX_OFFLINE=true cargo build --release --quiet --bin clef
CLEF=target/release/clef

WORK=$(mktemp -d /tmp/clef-bench.XXXXXX)
chmod 755 "$WORK"   # the postgres user must reach $WORK/pg
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  stop_scratch_postgres "$WORK/pg"
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/pg"
start_scratch_postgres "$WORK/pg"
PGURL=$SCRATCH_DATABASE_URL

# load NAME URI BODY... : PROCS parallel h2load runs, one body each; prints
# total req/s and writes per-request latencies (µs) to $WORK/NAME.lat.
load() {
  local name=$1 uri=$2 extra=$3; shift 3
  local i=0 pids=()
  rm -f "$WORK/$name".*
  for body in "$@"; do
    h2load -D "$DURATION" --warm-up-time 2 -c "$PER_PROC" -t 1 -m 1 $extra \
      -H 'content-type: application/grpc' -H 'te: trailers' -H "authorization: Bearer $SVC" \
      -d "$body" --log-file="$WORK/$name.log.$i" "http://$ADDR$uri" >"$WORK/$name.out.$i" 2>&1 &
    pids+=($!); i=$((i + 1))
  done
  for p in "${pids[@]}"; do wait "$p"; done
  cat "$WORK/$name".log.* | awk -F'\t' '{print $3}' | sort -n >"$WORK/$name.lat"
  local rps failed
  rps=$(grep -h "^finished in" "$WORK/$name".out.* | sed -E 's/.* ([0-9.]+) req\/s.*/\1/' | paste -sd+ | bc)
  failed=$(grep -h "^requests:" "$WORK/$name".out.* | sed -E 's/.* ([0-9]+) failed.*/\1/' | paste -sd+ | bc)
  [ "$failed" = 0 ] || { echo "$name: $failed failed requests" >&2; cat "$WORK/$name".out.0 >&2; exit 1; }
  echo "$rps"
}

pct() { # pct FILE P -> the P-th percentile in ms
  awk -v p="$2" '{a[NR]=$1} END {i=int(NR*p/100); if (i<1) i=1; printf "%.3f", a[i]/1000}' "$1"
}

run() {
  local name=$1 users=$2 accounts=$3 grants=$4 partners=$5
  echo "== dataset $name: $users users, $accounts accounts, ~$grants grants"
  psql -q "$PGURL" -c "CREATE DATABASE bench_$name"
  local url="${PGURL%/postgres}/bench_$name"
  $CLEF bench dataset --database-url "$url" --users "$users" --accounts "$accounts" \
    --grants "$grants" --partners "$partners" --out "$WORK/$name"
  SVC=$(cat "$WORK/$name/service.key")

  $CLEF serve --database-url "$url" --listen 127.0.0.1:0 >"$WORK/serve.out" 2>"$WORK/serve.err" &
  SERVER_PID=$!
  for _ in $(seq 100); do grep -q "clef serving on" "$WORK/serve.out" && break; sleep 0.1; done
  ADDR=$(sed -n 's/^clef serving on //p' "$WORK/serve.out")
  sleep 1

  mkdir -p "$WORK/bodies"; $CLEF bench body health -o "$WORK/bodies/health.bin"
  local bodies=() i=0
  while IFS=$'\t' read -r key account right; do
    $CLEF bench body check --key "$key" --account "$account" --right "$right" -o "$WORK/bodies/check.$i.bin"
    bodies+=("$WORK/bodies/check.$i.bin"); i=$((i + 1))
    [ "$i" -ge "$PROCS" ] && break
  done < <(shuf --random-source=<(yes) "$WORK/$name/subjects.tsv")
  local healths=(); for _ in "${bodies[@]}"; do healths+=("$WORK/bodies/health.bin"); done

  # Sanity: the subjects are allowed (h2load counts any HTTP 200 as success).
  IFS=$'\t' read -r key account right < <(shuf --random-source=<(yes) "$WORK/$name/subjects.tsv" | head -1)
  grpcurl -plaintext -H "authorization: Bearer $SVC" \
    -d "{\"subject\":{\"connection_key\":\"$key\"},\"account_code\":\"$account\",\"right\":\"$right\"}" \
    "$ADDR" clef.v1.AuthorizationService/Check | grep -q '"allowed": true' \
    || { echo "sanity check failed: subject not allowed" >&2; exit 1; }

  local h c
  h=$(load health /grpc.health.v1.Health/Check "" "${healths[@]}")
  c=$(load check /clef.v1.AuthorizationService/Check "" "${bodies[@]}")
  local c50 c99 h99
  c50=$(pct "$WORK/check.lat" 50); c99=$(pct "$WORK/check.lat" 99); h99=$(pct "$WORK/health.lat" 99)
  # Half the peak Check load, spread over the same clients.
  local rps_per_client
  rps_per_client=$(echo "$c / 2 / $CLIENTS" | bc)
  local ch
  ch=$(load half /clef.v1.AuthorizationService/Check "--rps=$rps_per_client" "${bodies[@]}")
  local hp50 hp99 hp999 hpmax hh
  hp50=$(pct "$WORK/half.lat" 50); hp99=$(pct "$WORK/half.lat" 99); hp999=$(pct "$WORK/half.lat" 99.9)
  hpmax=$(pct "$WORK/half.lat" 100)
  # The transport's own latency at the same request rate, for reference.
  hh=$(load halfhealth /grpc.health.v1.Health/Check "--rps=$rps_per_client" "${healths[@]}")
  local hh50 hh99 hhmax
  hh50=$(pct "$WORK/halfhealth.lat" 50); hh99=$(pct "$WORK/halfhealth.lat" 99)
  hhmax=$(pct "$WORK/halfhealth.lat" 100)
  local rss
  rss=$(awk '/VmHWM/ {print $2/1024 " MiB"}' /proc/$SERVER_PID/status)
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=

  printf '%s\n' \
    "dataset=$name cores=$(nproc) clients=$CLIENTS subjects=$PROCS duration=${DURATION}s" \
    "  health: $(printf '%.0f' "$h") req/s (p99 ${h99} ms)" \
    "  check:  $(printf '%.0f' "$c") req/s (p50 ${c50} ms, p99 ${c99} ms)" \
    "  ratio check/health: $(echo "scale=3; $c / $h" | bc)" \
    "  check at half peak ($(printf '%.0f' "$ch") req/s): p50 ${hp50} ms, p99 ${hp99} ms, p99.9 ${hp999} ms, max ${hpmax} ms" \
    "  health at the same rate ($(printf '%.0f' "$hh") req/s): p50 ${hh50} ms, p99 ${hh99} ms, max ${hhmax} ms" \
    "  server peak RSS: $rss" | tee -a "$WORK/summary"
  LAST_URL=$url; LAST_SUBJECTS="$WORK/$name/subjects.tsv"
}

case "$WHICH" in
  small) run small 10000 1000 100000 2 ;;
  large) run large 1000000 100000 10000000 20 ;;
  both)  run small 10000 1000 100000 2; run large 1000000 100000 10000000 20 ;;
  *) echo "usage: bench/run.sh [small|large|both]" >&2; exit 2 ;;
esac

[ "${CRITERION:-1}" = 0 ] && exit 0
echo "== in-process decision (Criterion), warm cache, dataset of the last run"
CLEF_BENCH_DATABASE_URL=$LAST_URL CLEF_BENCH_SUBJECTS=$LAST_SUBJECTS SQLX_OFFLINE=true \
  cargo bench --quiet --bench decision 2>&1 | grep -E "warm cache|time:|^check_|^rule_" | tee -a "$WORK/summary"
echo "== summary"; cat "$WORK/summary"

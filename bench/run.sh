#!/usr/bin/env bash
# Check throughput and latency against the gRPC transport floor (the health
# check), measured in the same run on the same server.
#
#   bench/run.sh [small|large|both]      (default: both)
#
# For each dataset (`clef bench dataset`, COPY): starts `clef serve` on it and
#  1. with h2load (no code of ours on the client side): health, then Check by
#     connection key over PROCS subjects (one body per h2load process), at
#     full load and at half of it;
#  2. with `clef bench load` (many subjects per connection): health, Check
#     over the same 16 subjects (the two generators should agree), over
#     SUBJECTS distinct subjects uniformly, and by a Zipf law (s = 1);
#     p50/p99/p99.9/max at half the uniform peak and at a fixed RATE;
#  3. the same fixed-rate load while `clef import` writes IMPORT new users
#     into an account of their own, and while `clef bench churn` grants and
#     takes back rights of the subjects being checked (CHURN changes/s);
#     each fixed-rate Check measure is paired with the health check at the
#     same rate in the same conditions (quiet, importing, churning);
#  4. again with a decision cache a fifth of the population's weight
#     (`--decision-cache-weight`), uniformly and by Zipf; the hit ratio (the
#     share of decisions answered from memory) is read from the metrics;
# and, for the closed-loop measures of 2, the CPU time a request cost the
# server (its metrics) and the load generator: the ratio of the server's
# figures is what the throughput ratio would be on a server that has its
# cores to itself, where the two generators' figures share them with it;
# then the Criterion benchmark of the in-process decision.
# Environment: CLIENTS (connections, default 32), PROCS (h2load processes,
# default 16), DURATION (seconds per measure, default 10), SUBJECTS (default
# 100000), RATE (default 2000), IMPORT (default 200000), CHURN (default 50),
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
SUBJECTS=${SUBJECTS:-100000}
RATE=${RATE:-2000}
IMPORT=${IMPORT:-200000}
CHURN=${CHURN:-50}

ensure_tools
command -v h2load >/dev/null 2>&1 || { echo "installing h2load..."; apt_install nghttp2-client; }
command -v bc >/dev/null 2>&1 || apt_install bc
command -v curl >/dev/null 2>&1 || apt_install curl
SQLX_OFFLINE=true cargo build --release --quiet --bin clef
CLEF=target/release/clef

WORK=$(mktemp -d /tmp/clef-bench.XXXXXX)
# The postgres user must reach $WORK/pg, nobody may read the keys in $WORK.
chmod 711 "$WORK"; umask 077
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

# serve URL [ARGS]: `clef serve` on URL with metrics; sets SERVER_PID, ADDR
# and METRICS.
serve() {
  local url=$1; shift
  $CLEF serve --database-url "$url" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 "$@" \
    >"$WORK/serve.out" 2>"$WORK/serve.err" &
  SERVER_PID=$!
  for _ in $(seq 100); do grep -qs "clef serving on" "$WORK/serve.out" && break; sleep 0.1; done
  ADDR=$(sed -n 's/^clef serving on //p' "$WORK/serve.out")
  METRICS=$(sed -n 's/^clef metrics on //p' "$WORK/serve.out")
  sleep 1
}

stop_server() {
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=
}

# lg ARGS: `clef bench load` against the server; prints its key=value line.
lg() {
  CLEF_KEY=$SVC $CLEF bench load --endpoint "http://$ADDR" --connections "$CLIENTS" \
    --duration "$DURATION" --metrics "$METRICS" "$@"
}
# f NAME LINE: the value of NAME in a key=value line (nothing when absent).
f() { sed -nE "s/(^|.* )$1=([^ ]+).*/\2/p" <<<"$2"; }
ratio() { echo "scale=3; $1 / $2" | bc; }
# cpu_of LINE: what a request cost each side's CPU over the window (µs).
cpu_of() { echo "server $(f server_cpu_us_per_req "$1") + load generator $(f client_cpu_us_per_req "$1") µs"; }
# cpu_ratio HEALTH CHECK: the health check's server CPU per request over
# Check's: the throughput ratio of a server bound by CPU on cores of its own.
cpu_ratio() { ratio "$(f server_cpu_us_per_req "$1")" "$(f server_cpu_us_per_req "$2")"; }
# tail_of CHECK HEALTH: Check's latencies at a fixed rate, then the health
# check's at the same rate and in the same conditions, and their p99 ratio.
tail_of() {
  echo "p50 $(f p50_ms "$1") ms, p99 $(f p99_ms "$1") ms, p99.9 $(f p999_ms "$1") ms, max $(f max_ms "$1") ms" \
    "(from the schedule: p99 $(f sched_p99_ms "$1") ms, max $(f sched_max_ms "$1") ms);" \
    "health at the same rate: p99 $(f p99_ms "$2") ms, p99.9 $(f p999_ms "$2") ms, max $(f max_ms "$2") ms;" \
    "p99 check/health $(ratio "$(f p99_ms "$1")" "$(f p99_ms "$2")")"
}

run() {
  local name=$1 users=$2 accounts=$3 grants=$4 partners=$5
  echo "== dataset $name: $users users, $accounts accounts, ~$grants grants"
  psql -q "$PGURL" -c "CREATE DATABASE bench_$name"
  local url="${PGURL%/postgres}/bench_$name"
  $CLEF bench dataset --database-url "$url" --users "$users" --accounts "$accounts" \
    --grants "$grants" --partners "$partners" --out "$WORK/$name" --sample "$SUBJECTS"
  SVC=$(cat "$WORK/$name/service.key")

  serve "$url"

  mkdir -p "$WORK/bodies"; $CLEF bench body health -o "$WORK/bodies/health.bin"
  local bodies=() i=0
  while IFS=$'\t' read -r key account right _; do
    $CLEF bench body check --key "$key" --account "$account" --right "$right" -o "$WORK/bodies/check.$i.bin"
    bodies+=("$WORK/bodies/check.$i.bin"); i=$((i + 1))
    [ "$i" -ge "$PROCS" ] && break
  done < <(shuf --random-source=<(yes) "$WORK/$name/subjects.tsv")
  local healths=(); for _ in "${bodies[@]}"; do healths+=("$WORK/bodies/health.bin"); done

  # Sanity: the subjects are allowed (h2load counts any HTTP 200 as success).
  IFS=$'\t' read -r key account right _ < <(shuf --random-source=<(yes) "$WORK/$name/subjects.tsv" | head -1)
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

  # 2. Many subjects, with our own load generator.
  local S="$WORK/$name/subjects.tsv" n
  n=$(wc -l <"$S"); [ "$n" -lt "$SUBJECTS" ] || n=$SUBJECTS
  local lh l16 lu lz lhalf lfix lfixh
  lh=$(lg --rpc health)
  l16=$(lg --subjects "$S" --distinct 16)
  # Every subject asked once first: the cache holds them all, measured warm.
  lu=$(lg --subjects "$S" --distinct "$n" --prewarm)
  lz=$(lg --subjects "$S" --distinct "$n" --spread zipf)
  local weight entries
  weight=$(curl -s "$METRICS" | sed -n 's/^clef_decision_cache_weight //p')
  entries=$(curl -s "$METRICS" | sed -n 's/^clef_decision_cache_entries{cache="subjects"} //p')
  lhalf=$(lg --subjects "$S" --distinct "$n" --rate "$(( $(printf '%.0f' "$(f rps "$lu")") / 2 ))")
  lfix=$(lg --subjects "$S" --distinct "$n" --connections 16 --rate "$RATE")
  # The transport floor at the same rate: what the machine gives any RPC.
  lfixh=$(lg --rpc health --connections 16 --rate "$RATE")

  # 3. The same fixed rate while writes happen.
  local op org acc limp limph lchurn lchurnh churned imported
  op=$($CLEF operator create "bench-$name" --database-url "$url" 2>/dev/null | tail -n1)
  # Keys stay out of argument lists: grpcurl reads this one from the environment.
  org=$(CLEF_KEY=$op grpcurl -plaintext -expand-headers -H 'authorization: Bearer ${CLEF_KEY}' -d '{"display_name":"Imported"}' \
    "$ADDR" clef.v1.AccountService/CreateOrganization | sed -n 's/.*"id": "\(.*\)".*/\1/p' | head -n1)
  CLEF_KEY=$op grpcurl -plaintext -expand-headers -H 'authorization: Bearer ${CLEF_KEY}' \
    -d "{\"account\":{\"code\":\"IMPORT-$name\",\"display_name\":\"Imported\",\"organization_id\":\"$org\"}}" \
    "$ADDR" clef.v1.AccountService/CreateAccount >/dev/null
  # The rows of bench/import.sh.
  awk -v n="$IMPORT" -v t="$name" 'BEGIN {
    print "NOM;PRENOM;FONCTION;EMAIL;TELEPHONE;ADRESSE;CODE POSTAL;VILLE;shipping.ws;tracking.tool";
    for (i = 1; i <= n; i++)
      printf "Martin%d;Zoé;Logisticienne;user%d@%s.import.example;+33 1 02 03 %02d %02d;%d rue de la Gare;88000;Épinal;oui;%s\n",
        i, i, t, i % 100, (i / 100) % 100, i % 200 + 1, (i % 3 == 0) ? "tag" : "non"
  }' >"$WORK/import.csv"
  ( sleep 1; s0=$(date +%s.%N)
    CLEF_KEY=$op CLEF_ENDPOINT="http://$ADDR" $CLEF import "$WORK/import.csv" --account "IMPORT-$name" \
      -o "$WORK/import.results" 2>"$WORK/import.err"
    echo "$(grep -c ',created,' "$WORK/import.results") $(echo "$(date +%s.%N) - $s0" | bc)" >"$WORK/import.done" ) &
  local import_pid=$!
  # The health check first, then Check, both while the import runs: what
  # the import's load costs any RPC, and what it costs Check beyond that.
  limph=$(lg --rpc health --connections 16 --rate "$RATE" --warm-up 1)
  limp=$(lg --subjects "$S" --distinct "$n" --connections 16 --rate "$RATE" --warm-up 1)
  wait "$import_pid" || { echo "import failed" >&2; tail "$WORK/import.err" >&2; exit 1; }
  imported=$(cat "$WORK/import.done")
  CLEF_KEY=$op $CLEF bench churn --endpoint "http://$ADDR" --subjects "$S" --distinct "$n" \
    --rate "$CHURN" --duration "$(( DURATION * 2 + 10 ))" >"$WORK/churn.out" &
  local churn_pid=$!
  lchurnh=$(lg --rpc health --connections 16 --rate "$RATE")
  lchurn=$(lg --subjects "$S" --distinct "$n" --connections 16 --rate "$RATE")
  wait "$churn_pid" || { echo "churn failed" >&2; exit 1; }
  churned=$(cat "$WORK/churn.out")
  stop_server

  # 4. A cache a fifth of the population's weight.
  local small lsmall
  small=$(echo "$weight / 5" | bc)
  serve "$url" --decision-cache-weight "$small"
  lsmall=$(lg --subjects "$S" --distinct "$n" --prewarm)
  local lsmallz
  lsmallz=$(lg --subjects "$S" --distinct "$n" --spread zipf)
  stop_server

  printf '%s\n' \
    "dataset=$name cores=$(nproc) clients=$CLIENTS subjects=$PROCS duration=${DURATION}s" \
    "  health: $(printf '%.0f' "$h") req/s (p99 ${h99} ms)" \
    "  check:  $(printf '%.0f' "$c") req/s (p50 ${c50} ms, p99 ${c99} ms)" \
    "  ratio check/health: $(echo "scale=3; $c / $h" | bc)" \
    "  check at half peak ($(printf '%.0f' "$ch") req/s): p50 ${hp50} ms, p99 ${hp99} ms, p99.9 ${hp999} ms, max ${hpmax} ms" \
    "  health at the same rate ($(printf '%.0f' "$hh") req/s): p50 ${hh50} ms, p99 ${hh99} ms, max ${hhmax} ms" \
    "  server peak RSS: $rss" \
    "  clef bench load, $CLIENTS connections (ratios to its own health run):" \
    "    health:                   $(f rps "$lh") req/s (p99 $(f p99_ms "$lh") ms)" \
    "    check, 16 subjects:       $(f rps "$l16") req/s, ratio $(ratio "$(f rps "$l16")" "$(f rps "$lh")") (h2load said $(echo "scale=3; $c / $h" | bc); load/h2load check $(ratio "$(f rps "$l16")" "$c"))" \
    "    check, $n uniform:    $(f rps "$lu") req/s, ratio $(ratio "$(f rps "$lu")" "$(f rps "$lh")"), hit ratio $(f hit_ratio "$lu")" \
    "    check, $n Zipf(1):    $(f rps "$lz") req/s, ratio $(ratio "$(f rps "$lz")" "$(f rps "$lh")"), hit ratio $(f hit_ratio "$lz")" \
    "    CPU per request: health $(cpu_of "$lh"); check, 16 subjects $(cpu_of "$l16"); $n uniform $(cpu_of "$lu"); Zipf(1) $(cpu_of "$lz")" \
    "    server CPU per request, health / check (the ratio where the server has cores of its own): 16 subjects $(cpu_ratio "$lh" "$l16"), $n uniform $(cpu_ratio "$lh" "$lu"), Zipf(1) $(cpu_ratio "$lh" "$lz")" \
    "    check at half peak ($(f rps "$lhalf") req/s): p50 $(f p50_ms "$lhalf") ms, p99 $(f p99_ms "$lhalf") ms, p99.9 $(f p999_ms "$lhalf") ms, max $(f max_ms "$lhalf") ms (from the schedule: p99 $(f sched_p99_ms "$lhalf") ms, max $(f sched_max_ms "$lhalf") ms)" \
    "    check at $RATE req/s, 16 connections: $(tail_of "$lfix" "$lfixh")" \
    "    the same during an import ($imported: lines created, seconds): $(f rps "$limp") req/s, $(tail_of "$limp" "$limph"), hit ratio $(f hit_ratio "$limp")" \
    "    the same during churn ($churned): $(f rps "$lchurn") req/s, $(tail_of "$lchurn" "$lchurnh"), denied $(f denied "$lchurn")" \
    "    cache of weight $small (a fifth of $weight for $entries subjects): $(f rps "$lsmall") req/s, ratio $(ratio "$(f rps "$lsmall")" "$(f rps "$lh")"), hit ratio $(f hit_ratio "$lsmall"), p99 $(f p99_ms "$lsmall") ms; by Zipf(1): $(f rps "$lsmallz") req/s, ratio $(ratio "$(f rps "$lsmallz")" "$(f rps "$lh")"), hit ratio $(f hit_ratio "$lsmallz"), p99 $(f p99_ms "$lsmallz") ms" \
    | tee -a "$WORK/summary"
  LAST_URL=$url; LAST_SUBJECTS="$WORK/$name/subjects.tsv"
}

case "$WHICH" in
  small) run small 120000 12000 1200000 2 ;;
  large) run large 1000000 100000 10000000 20 ;;
  both)  run small 120000 12000 1200000 2; run large 1000000 100000 10000000 20 ;;
  *) echo "usage: bench/run.sh [small|large|both]" >&2; exit 2 ;;
esac

[ "${CRITERION:-1}" = 0 ] && exit 0
echo "== in-process decision (Criterion), warm cache, dataset of the last run"
CLEF_BENCH_DATABASE_URL=$LAST_URL CLEF_BENCH_SUBJECTS=$LAST_SUBJECTS SQLX_OFFLINE=true \
  cargo bench --quiet --bench decision 2>&1 | grep -E "warm cache|time:|^check_|^rule_" | tee -a "$WORK/summary"
echo "== summary"; cat "$WORK/summary"

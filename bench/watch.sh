#!/usr/bin/env bash
# Events a watcher receives during a large import: `clef audit --follow`
# (WatchEvents from the revision before the import, every event) runs while
# `clef import` writes ROWS new users into one account; the figure is the
# events received per second, from the import's start to the last event,
# against the events the import's transactions wrote per second.
#   bench/watch.sh [ROWS]     (default 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ROWS=${1:-200000}

bench_setup watch_bench
KEY=$($CLEF operator create watch-bench --database-url "$URL" 2>/dev/null | tail -n1)
awk -v n="$ROWS" 'BEGIN {
  print "NOM;PRENOM;FONCTION;EMAIL;TELEPHONE;ADRESSE;CODE POSTAL;VILLE;shipping.ws;tracking.tool";
  for (i = 1; i <= n; i++)
    printf "Martin%d;Zoé;Logisticienne;user%d@watch.example;+33 1 02 03 %02d %02d;%d rue de la Gare;88000;Épinal;oui;%s\n",
      i, i, i % 100, (i / 100) % 100, i % 200 + 1, (i % 3 == 0) ? "tag" : "non"
}' >"$WORK/users.csv"
bench_serve
export CLEF_KEY=$KEY CLEF_ENDPOINT="http://$ADDR"
H="authorization: Bearer $KEY"
ORG=$(grpcurl -plaintext -H "$H" -d '{"display_name":"Watch"}' "$ADDR" clef.v1.AccountService/CreateOrganization |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
grpcurl -plaintext -H "$H" -d "{\"account\":{\"code\":\"W1\",\"display_name\":\"W1\",\"organization_id\":\"$ORG\"}}" \
  "$ADDR" clef.v1.AccountService/CreateAccount >/dev/null

R0=$(psql -At "$URL" -c "SELECT value FROM revision_counter")
$CLEF audit --follow --from-revision "$R0" >"$WORK/events.jsonl" 2>"$WORK/watch.err" &
WATCHER=$!
t0=$(now)
$CLEF import "$WORK/users.csv" --account W1 -o "$WORK/results.csv" 2>"$WORK/import.err" || { tail -n 3 "$WORK/import.err"; head -n 3 "$WORK/results.csv"; exit 1; }
t1=$(now)
EVENTS=$(psql -At "$URL" -c "SELECT count(*) FROM audit_events WHERE revision > $R0")
while [ "$(wc -l <"$WORK/events.jsonl")" -lt "$EVENTS" ]; do sleep 0.05; done
t2=$(now)
kill $WATCHER 2>/dev/null || true
GOT=$(wc -l <"$WORK/events.jsonl")
echo "cores: $(nproc); rows: $ROWS; events written: $EVENTS; received: $GOT"
printf 'import: %.1f s (%.0f events/s written)\n' "$(echo "$t1 - $t0" | bc -l)" "$(echo "$EVENTS / ($t1 - $t0)" | bc -l)"
printf 'watcher: %.0f events/s received; the last one %.2f s after the import ended\n' \
  "$(echo "$GOT / ($t2 - $t0)" | bc -l)" "$(echo "$t2 - $t1" | bc -l)"

#!/usr/bin/env bash
# Import throughput: `clef import` of a generated CSV file of new users into
# one account, against a raw `COPY` of the same file into an equivalent table
# (the file's columns, a primary key and a unique index on lower(email), as
# `users` has), measured in the same run on the same Postgres.
#   bench/import.sh [ROWS]     (default 1000000)
#   PROFILE=1 bench/import.sh [ROWS]   also prints where Postgres spent the
#   import's time (pg_stat_statements, pg_stat_user_functions) and planning
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ROWS=${1:-1000000}
PROFILE=${PROFILE:-0}

[ "$PROFILE" = 1 ] && export SCRATCH_PG_OPTIONS="-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all -c pg_stat_statements.track_planning=on -c track_functions=all"
bench_setup import_bench
# A few accounts to import into, and an operator.
$CLEF bench dataset --database-url "$URL" --users 1000 --accounts 10 --grants 8000 \
  --partners 0 --out "$WORK/data" --sample 10 >/dev/null
ACCOUNT=$(psql -At "$URL" -c "SELECT code FROM accounts ORDER BY code LIMIT 1")
KEY=$($CLEF operator create import-bench --database-url "$URL" 2>/dev/null | tail -n1)

# The file: Windows-1252 is what spreadsheets save, but the generated one is
# UTF-8 with `;`, French headers and two right columns.
awk -v n="$ROWS" 'BEGIN {
  print "NOM;PRENOM;FONCTION;EMAIL;TELEPHONE;ADRESSE;CODE POSTAL;VILLE;shipping.ws;tracking.tool";
  for (i = 1; i <= n; i++)
    printf "Martin%d;Zoé;Logisticienne;user%d@import.example;+33 1 02 03 %02d %02d;%d rue de la Gare;88000;Épinal;oui;%s\n",
      i, i, i % 100, (i / 100) % 100, i % 200 + 1, (i % 3 == 0) ? "tag" : "non"
}' >"$WORK/users.csv"
SIZE=$(stat -c %s "$WORK/users.csv")

bench_serve

R0=$(psql -At "$URL" -c "SELECT value FROM revision_counter")
O0=$(psql -At "$URL" -c "SELECT COALESCE(max(id), 0) FROM outbox")
# Settled before the profile's counters are reset: its VACUUM and probes are
# not the import's.
settle "before the import"
if [ "$PROFILE" = 1 ]; then
  psql -q "$URL" -c "CREATE EXTENSION pg_stat_statements; SELECT pg_stat_statements_reset(), pg_stat_reset();" >/dev/null
fi
s0=$(cpu $SERVER_PID); p0=$(pg_cpu); m0=$(machine_ticks)
t0=$(now)
CLEF_KEY=$KEY CLEF_ENDPOINT="http://$ADDR" /usr/bin/time -f '%U %S' -o "$WORK/client.time" $CLEF import "$WORK/users.csv" --account "$ACCOUNT" \
  -o "$WORK/results.csv" 2>"$WORK/import.err"
t1=$(now)
s1=$(cpu $SERVER_PID); p1=$(pg_cpu); m1=$(machine_ticks)
RSS=$(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' /proc/$SERVER_PID/status)
tail -n1 "$WORK/import.err"
if [ "$PROFILE" = 1 ]; then
  echo "statements, by total time (ms; nested ones included in their callers' time):"
  psql -q "$URL" -c "SELECT round(total_exec_time) AS ms, calls, rows, left(regexp_replace(query, '\s+', ' ', 'g'), 90) AS query
    FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 20"
  echo "planning, by total time (ms; statements planned again and again):"
  psql -q "$URL" -c "SELECT round(total_plan_time) AS plan_ms, plans, calls, left(regexp_replace(query, '\s+', ' ', 'g'), 90) AS query
    FROM pg_stat_statements ORDER BY total_plan_time DESC LIMIT 15"
  psql -At "$URL" -c "SELECT 'planning in all: ' || round(sum(total_plan_time)) || ' ms, execution at top level: ' || round(sum(total_exec_time) FILTER (WHERE toplevel)) || ' ms' FROM pg_stat_statements"
  echo "functions, by their own time (ms):"
  psql -q "$URL" -c "SELECT round(self_time) AS self_ms, round(total_time) AS total_ms, calls, funcname
    FROM pg_stat_user_functions ORDER BY self_time DESC LIMIT 15"
fi
CREATED=$(grep -c ',created,' "$WORK/results.csv" || true)

psql -q "$URL" -c "CREATE TABLE copy_baseline (
    id bigserial PRIMARY KEY, last_name text, first_name text, job_title text, email text, phone text,
    address text, postal_code text, city text, shipping_ws text, tracking_tool text);
  CREATE UNIQUE INDEX copy_baseline_email ON copy_baseline (lower(email));"
settle "before the raw COPY of the file"
t2=$(now)
psql -q "$URL" -c "\\copy copy_baseline (last_name, first_name, job_title, email, phone, address, postal_code, city, shipping_ws, tracking_tool) FROM '$WORK/users.csv' WITH (FORMAT csv, HEADER, DELIMITER ';')"
t3=$(now)

# Second baseline: the rows the import wrote (users, links, grants, keys,
# audit events, outbox messages: every row with a revision after R0), COPYed raw into copies
# of their tables with the same columns, defaults, checks, indexes and
# foreign keys. This is the database's share of the import; what the import
# adds on top is reading, checking and deciding the lines.
WROTE="(SELECT id FROM users WHERE revision > $R0)"
declare -A ROWS_OF=(
  [users]="SELECT * FROM users WHERE revision > $R0"
  [links]="SELECT * FROM links WHERE revision > $R0"
  [grants]="SELECT * FROM grants WHERE revision > $R0"
  [connection_keys]="SELECT * FROM connection_keys WHERE user_id IN $WROTE"
  [audit_events]="SELECT * FROM audit_events WHERE revision > $R0"
  [outbox]="SELECT * FROM outbox WHERE id > $O0"
)
# The outbox: one invitation per advanced user, written with him.
TABLES="users links grants connection_keys audit_events outbox"
WRITTEN=0
for t in $TABLES; do
  psql -q "$URL" -c "\\copy (${ROWS_OF[$t]}) TO '$WORK/$t.copy'"
  WRITTEN=$((WRITTEN + $(wc -l <"$WORK/$t.copy")))
done
psql -q -v ON_ERROR_STOP=1 "$URL" <<SQL
CREATE SCHEMA baseline;
$(for t in $TABLES; do echo "CREATE TABLE baseline.$t (LIKE public.$t INCLUDING ALL);"; done)
-- The same foreign keys, pointing at the copies where they exist.
DO \$\$
DECLARE defs text[];
BEGIN
  SELECT array_agg(format('ALTER TABLE baseline.%s ADD %s', conrelid::regclass, pg_get_constraintdef(oid)))
    INTO defs FROM pg_constraint
   WHERE contype = 'f' AND conrelid::regclass::text IN ('users', 'links', 'grants', 'connection_keys', 'audit_events', 'outbox');
  SET LOCAL search_path = baseline, public;
  FOR i IN 1 .. array_length(defs, 1) LOOP EXECUTE defs[i]; END LOOP;
END \$\$;
-- The rows that were there before the import (accounts' users, the importer).
INSERT INTO baseline.users SELECT * FROM public.users WHERE revision <= $R0;
INSERT INTO baseline.links SELECT * FROM public.links WHERE revision <= $R0;
VACUUM ANALYZE baseline.users, baseline.links;
SQL
settle "before the baseline"
m4=$(machine_ticks)
t4=$(now)
for t in $TABLES; do echo "\\copy baseline.$t FROM '$WORK/$t.copy'"; done | psql -q -v ON_ERROR_STOP=1 "$URL"
t5=$(now)
m5=$(machine_ticks)

IMPORT_S=$(echo "$t1 - $t0" | bc); COPY_S=$(echo "$t3 - $t2" | bc); ROWS_COPY_S=$(echo "$t5 - $t4" | bc)
printf 'import: %s rows (%s created, %s bytes) in %.2f s = %.0f rows/s\n' "$ROWS" "$CREATED" "$SIZE" "$IMPORT_S" "$(echo "$ROWS / $IMPORT_S" | bc)"
printf 'raw COPY of the same file: %.2f s = %.0f rows/s\n' "$COPY_S" "$(echo "$ROWS / $COPY_S" | bc)"
printf 'import / COPY throughput: %.2f; server peak RSS %s; cores %s\n' "$(echo "$COPY_S / $IMPORT_S" | bc -l)" "$RSS" "$(nproc)"
printf 'raw COPY of the %s rows the import wrote, into copies of their tables (indexes, foreign keys): %.2f s\n' "$WRITTEN" "$ROWS_COPY_S"
printf 'import / COPY of the rows it wrote: %.2f\n' "$(echo "$ROWS_COPY_S / $IMPORT_S" | bc -l)"
printf 'CPU seconds during the import: server %.1f, Postgres %.1f, client %.1f\n' \
  "$(cpu_seconds $((s1 - s0)))" "$(cpu_seconds $((p1 - p0)))" "$(awk '{print $1 + $2}' "$WORK/client.time")"
# The whole machine over each measured window (both cores; the baseline's
# psql and its backend come and go inside it): busy, waiting on the disk,
# and taken by the hypervisor for others (steal).
read -r bu0 _ iw0 st0 <<<"$m0"; read -r bu1 _ iw1 st1 <<<"$m1"
read -r bu4 _ iw4 st4 <<<"$m4"; read -r bu5 _ iw5 st5 <<<"$m5"
printf 'machine CPU seconds, import / baseline: busy %.1f / %.1f, iowait %.1f / %.1f, steal %.1f / %.1f\n' \
  "$(cpu_seconds $((bu1 - bu0)))" "$(cpu_seconds $((bu5 - bu4)))" "$(cpu_seconds $((iw1 - iw0)))" \
  "$(cpu_seconds $((iw5 - iw4)))" "$(cpu_seconds $((st1 - st0)))" "$(cpu_seconds $((st5 - st4)))"
psql -At "$URL" -c "SELECT 'database afterwards: ' || (SELECT count(*) FROM users) || ' users, ' || (SELECT count(*) FROM links) || ' links, ' || (SELECT count(*) FROM grants) || ' grants, ' || (SELECT count(*) FROM connection_keys) || ' keys'"

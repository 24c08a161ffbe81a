#!/usr/bin/env bash
# Import throughput: `clef import` of a generated CSV file of new users into
# one account, against a raw `COPY` of the rows the import wrote into copies
# of their tables, and of the file itself into an equivalent table (the
# file's columns, a primary key and a unique index on lower(email), as
# `users` has), measured in the same run on the same Postgres.
#   bench/import.sh [ROWS]     (default 1000000)
#   ROUNDS=N bench/import.sh [ROWS]   import/COPY rounds (default 3), each a
#   fresh file into another account; the ratio is that of the totals, and
#   the lowest round's is shown
#   PROFILE=1 bench/import.sh [ROWS]   also prints where Postgres
#   first round's import spent its time (pg_stat_statements,
#   pg_stat_user_functions) and planning
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ROWS=${1:-1000000}
PROFILE=${PROFILE:-0}
ROUNDS=${ROUNDS:-3}
[ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 10 ] || { echo "ROUNDS must be 1 to 10" >&2; exit 2; }

[ "$PROFILE" = 1 ] && export SCRATCH_PG_OPTIONS="-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all -c pg_stat_statements.track_planning=on -c track_functions=all"
bench_setup import_bench
# Accounts to import into (one per round), and an operator.
$CLEF bench dataset --database-url "$URL" --users 1000 --accounts 10 --grants 8000 \
  --partners 0 --out "$WORK/data" --sample 10 >/dev/null
mapfile -t ACCOUNTS < <(psql -At "$URL" -c "SELECT code FROM accounts ORDER BY code")
KEY=$($CLEF operator create import-bench --database-url "$URL" 2>/dev/null | tail -n1)

# users_file ROUND: the round's file, new users with addresses of its own.
# Windows-1252 is what spreadsheets save, but the generated one is UTF-8
# with `;`, French headers and two right columns.
users_file() {
  awk -v n="$ROWS" -v r="$1" 'BEGIN {
    print "NOM;PRENOM;FONCTION;EMAIL;TELEPHONE;ADRESSE;CODE POSTAL;VILLE;shipping.ws;tracking.tool";
    for (i = 1; i <= n; i++)
      printf "Martin%d;Zoé;Logisticienne;user%d.r%d@import.example;+33 1 02 03 %02d %02d;%d rue de la Gare;88000;Épinal;oui;%s\n",
        i, i, r, i % 100, (i / 100) % 100, i % 200 + 1, (i % 3 == 0) ? "tag" : "non"
  }' >"$WORK/users.csv"
}

bench_serve

# The baselines' tables, kept across rounds so that they grow as the
# import's do.
# 1. The file's rows, raw.
psql -q "$URL" -c "CREATE TABLE copy_baseline (
    id bigserial PRIMARY KEY, last_name text, first_name text, job_title text, email text, phone text,
    address text, postal_code text, city text, shipping_ws text, tracking_tool text);
  CREATE UNIQUE INDEX copy_baseline_email ON copy_baseline (lower(email));"
# 2. The rows the import wrote (users, links, grants, keys, audit events,
# outbox messages: every row with a revision after the round's start),
# COPYed raw into copies of their tables with the same columns, defaults,
# checks, indexes and foreign keys. This is the database's share of the
# import; what the import adds on top is reading, checking and deciding
# the lines.
TABLES="users links grants connection_keys audit_events outbox"
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
-- The rows that are there before the imports (accounts' users, the importer).
INSERT INTO baseline.users SELECT * FROM public.users;
INSERT INTO baseline.links SELECT * FROM public.links;
SQL

IMPORT_S=0; COPY_S=0; ROWS_COPY_S=0; LOWEST=; S_CPU=0; P_CPU=0; C_CPU=0
BU=0; BB=0; IWU=0; IWB=0; STU=0; STB=0; CREATED=0
for r in $(seq "$ROUNDS"); do
  users_file "$r"
  R0=$(psql -At "$URL" -c "SELECT value FROM revision_counter")
  O0=$(psql -At "$URL" -c "SELECT COALESCE(max(id), 0) FROM outbox")
  # Settled before the profile's counters are reset: its VACUUM and probes
  # are not the import's.
  settle "round $r, before the import"
  if [ "$PROFILE" = 1 ] && [ "$r" = 1 ]; then
    psql -q "$URL" -c "CREATE EXTENSION pg_stat_statements; SELECT pg_stat_statements_reset(), pg_stat_reset();" >/dev/null
  fi
  s0=$(cpu $SERVER_PID); p0=$(pg_cpu); m0=$(machine_ticks)
  t0=$(now)
  CLEF_KEY=$KEY CLEF_ENDPOINT="http://$ADDR" /usr/bin/time -f '%U %S' -o "$WORK/client.time" \
    $CLEF import "$WORK/users.csv" --account "${ACCOUNTS[$((r - 1))]}" -o "$WORK/results.csv" 2>"$WORK/import.err" \
    || { echo "clef import failed:" >&2; tail -n5 "$WORK/import.err" "$WORK/serve.err" >&2; exit 1; }
  t1=$(now)
  s1=$(cpu $SERVER_PID); p1=$(pg_cpu); m1=$(machine_ticks)
  c=$(grep -c ',created,' "$WORK/results.csv" || true)
  [ "$c" = "$ROWS" ] || { echo "round $r: $c users created of $ROWS" >&2; tail -n5 "$WORK/import.err" >&2; exit 1; }
  CREATED=$((CREATED + c))
  if [ "$PROFILE" = 1 ] && [ "$r" = 1 ]; then
    echo "round 1's statements, by total time (ms; nested ones included in their callers' time):"
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

  settle "round $r, before the raw COPY of the file"
  t2=$(now)
  psql -q "$URL" -c "\\copy copy_baseline (last_name, first_name, job_title, email, phone, address, postal_code, city, shipping_ws, tracking_tool) FROM '$WORK/users.csv' WITH (FORMAT csv, HEADER, DELIMITER ';')"
  t3=$(now)

  WROTE="(SELECT id FROM users WHERE revision > $R0)"
  declare -A ROWS_OF=(
    [users]="SELECT * FROM users WHERE revision > $R0"
    [links]="SELECT * FROM links WHERE revision > $R0"
    [grants]="SELECT * FROM grants WHERE revision > $R0"
    [connection_keys]="SELECT * FROM connection_keys WHERE user_id IN $WROTE"
    [audit_events]="SELECT * FROM audit_events WHERE revision > $R0"
    [outbox]="SELECT * FROM outbox WHERE id > $O0"
  )
  WRITTEN=0
  for t in $TABLES; do
    psql -q "$URL" -c "\\copy (${ROWS_OF[$t]}) TO '$WORK/$t.copy'"
    WRITTEN=$((WRITTEN + $(wc -l <"$WORK/$t.copy")))
  done
  settle "round $r, before the baseline"
  m4=$(machine_ticks)
  t4=$(now)
  for t in $TABLES; do echo "\\copy baseline.$t FROM '$WORK/$t.copy'"; done | psql -q -v ON_ERROR_STOP=1 "$URL"
  t5=$(now)
  m5=$(machine_ticks)

  i=$(echo "$t1 - $t0" | bc); f=$(echo "$t3 - $t2" | bc); w=$(echo "$t5 - $t4" | bc)
  ratio=$(echo "$w / $i" | bc -l)
  printf 'round %s: import %.2f s (%s), raw COPY of the %s rows it wrote %.2f s: %.2f; of the file %.2f s: %.2f\n' \
    "$r" "$i" "$(tail -n1 "$WORK/import.err")" "$WRITTEN" "$w" "$ratio" "$f" "$(echo "$f / $i" | bc -l)"
  IMPORT_S=$(echo "$IMPORT_S + $i" | bc); COPY_S=$(echo "$COPY_S + $f" | bc); ROWS_COPY_S=$(echo "$ROWS_COPY_S + $w" | bc)
  if [ -z "$LOWEST" ] || [ "$(echo "$ratio < $LOWEST" | bc)" = 1 ]; then LOWEST=$ratio; fi
  S_CPU=$((S_CPU + s1 - s0)); P_CPU=$((P_CPU + p1 - p0))
  C_CPU=$(echo "$C_CPU + $(awk '{print $1 + $2}' "$WORK/client.time")" | bc)
  # The whole machine over each measured window (both cores; the
  # baseline's psql and its backend come and go inside it): busy, waiting
  # on the disk, and taken by the hypervisor for others (steal).
  read -r bu0 _ iw0 st0 <<<"$m0"; read -r bu1 _ iw1 st1 <<<"$m1"
  read -r bu4 _ iw4 st4 <<<"$m4"; read -r bu5 _ iw5 st5 <<<"$m5"
  BU=$((BU + bu1 - bu0)); BB=$((BB + bu5 - bu4)); IWU=$((IWU + iw1 - iw0)); IWB=$((IWB + iw5 - iw4))
  STU=$((STU + st1 - st0)); STB=$((STB + st5 - st4))
done
RSS=$(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' /proc/$SERVER_PID/status)

printf 'import: %s x %s rows (%s created) in %.2f s = %.0f rows/s; cores %s\n' "$ROUNDS" "$ROWS" "$CREATED" "$IMPORT_S" \
  "$(echo "$CREATED / $IMPORT_S" | bc)" "$(nproc)"
printf 'import / raw COPY of the rows it wrote, into copies of their tables (indexes, foreign keys): %.2f (%.2f s against %.2f s; lowest round %.2f)\n' \
  "$(echo "$ROWS_COPY_S / $IMPORT_S" | bc -l)" "$ROWS_COPY_S" "$IMPORT_S" "$LOWEST"
printf 'import / raw COPY of the files: %.2f (%.2f s); server peak RSS %s\n' "$(echo "$COPY_S / $IMPORT_S" | bc -l)" "$COPY_S" "$RSS"
printf 'CPU seconds during the imports: server %.1f, Postgres %.1f, client %.1f\n' \
  "$(cpu_seconds $S_CPU)" "$(cpu_seconds $P_CPU)" "$C_CPU"
printf 'machine CPU seconds, imports / baselines: busy %.1f / %.1f, iowait %.1f / %.1f, steal %.1f / %.1f\n' \
  "$(cpu_seconds $BU)" "$(cpu_seconds $BB)" "$(cpu_seconds $IWU)" "$(cpu_seconds $IWB)" "$(cpu_seconds $STU)" "$(cpu_seconds $STB)"
psql -At "$URL" -c "SELECT 'database afterwards: ' || (SELECT count(*) FROM users) || ' users, ' || (SELECT count(*) FROM links) || ' links, ' || (SELECT count(*) FROM grants) || ' grants, ' || (SELECT count(*) FROM connection_keys) || ' keys'"

#!/usr/bin/env bash
# Import throughput: `clef import` of a generated CSV file of new users into
# one account, against a raw `COPY` of the same file into an equivalent table
# (the file's columns, a primary key and a unique index on lower(email), as
# `users` has), measured in the same run on the same Postgres.
#   bench/import.sh [ROWS]     (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ROWS=${1:-1000000}

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

s0=$(cpu $SERVER_PID); p0=$(pg_cpu)
t0=$(now)
CLEF_KEY=$KEY CLEF_ENDPOINT="http://$ADDR" /usr/bin/time -f '%U %S' -o "$WORK/client.time" $CLEF import "$WORK/users.csv" --account "$ACCOUNT" \
  -o "$WORK/results.csv" 2>"$WORK/import.err"
t1=$(now)
s1=$(cpu $SERVER_PID); p1=$(pg_cpu)
RSS=$(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' /proc/$SERVER_PID/status)
tail -n1 "$WORK/import.err"
CREATED=$(grep -c ',created,' "$WORK/results.csv" || true)

psql -q "$URL" -c "CREATE TABLE copy_baseline (
    id bigserial PRIMARY KEY, last_name text, first_name text, job_title text, email text, phone text,
    address text, postal_code text, city text, shipping_ws text, tracking_tool text);
  CREATE UNIQUE INDEX copy_baseline_email ON copy_baseline (lower(email));"
t2=$(now)
psql -q "$URL" -c "\\copy copy_baseline (last_name, first_name, job_title, email, phone, address, postal_code, city, shipping_ws, tracking_tool) FROM '$WORK/users.csv' WITH (FORMAT csv, HEADER, DELIMITER ';')"
t3=$(now)

IMPORT_S=$(echo "$t1 - $t0" | bc); COPY_S=$(echo "$t3 - $t2" | bc)
printf 'import: %s rows (%s created, %s bytes) in %.2f s = %.0f rows/s\n' "$ROWS" "$CREATED" "$SIZE" "$IMPORT_S" "$(echo "$ROWS / $IMPORT_S" | bc)"
printf 'raw COPY of the same file: %.2f s = %.0f rows/s\n' "$COPY_S" "$(echo "$ROWS / $COPY_S" | bc)"
printf 'import / COPY throughput: %.2f; server peak RSS %s; cores %s\n' "$(echo "$COPY_S / $IMPORT_S" | bc -l)" "$RSS" "$(nproc)"
printf 'CPU seconds during the import: server %.1f, Postgres %.1f, client %.1f\n' \
  "$(cpu_seconds $((s1 - s0)))" "$(cpu_seconds $((p1 - p0)))" "$(awk '{print $1 + $2}' "$WORK/client.time")"
psql -At "$URL" -c "SELECT 'database afterwards: ' || (SELECT count(*) FROM users) || ' users, ' || (SELECT count(*) FROM links) || ' links, ' || (SELECT count(*) FROM grants) || ' grants, ' || (SELECT count(*) FROM connection_keys) || ' keys'"

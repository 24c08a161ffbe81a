#!/usr/bin/env bash
# Export throughput: `clef export` of one organization's users, against a raw
# `COPY (same join) TO STDOUT` of the same rows measured in the same run.
#   bench/export.sh [USERS]     (default 300000, on 100 accounts of one organization)
#   ROUNDS=N bench/export.sh    (export/COPY pairs, default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
USERS=${1:-300000}

bench_setup export_bench
$CLEF bench dataset --database-url "$URL" --users "$USERS" --accounts 100 --grants $((USERS * 8)) \
  --partners 0 --out "$WORK/data" --sample 10
ORG=$(psql -At "$URL" -c "SELECT id FROM organizations LIMIT 1")
KEY=$($CLEF operator create export-bench --database-url "$URL" 2>/dev/null | tail -n1)
bench_serve

# The same rows as the export's query, in one statement, with the same
# setting (no parallel workers).
raw_copy() {
  psql -q "$URL" -c "SET max_parallel_workers_per_gather = 0" -c "\\copy (SELECT a.code, u.kind, u.status, u.login, u.user_key, u.last_name, u.first_name, u.job_title,
    u.email, u.phone, u.address_lines, u.postal_code, u.city, u.country, u.civility, u.language, l.tags,
    (SELECT array_agg(g.right_code || ':' || COALESCE(g.scope, '')) FROM grants g
      WHERE g.user_id = l.user_id AND g.account_id = l.account_id
        AND (g.expires_at IS NULL OR g.expires_at > now())),
    (SELECT array_agg(r.code ORDER BY r.code) FROM role_grants rg JOIN roles r ON r.id = rg.role_id
      WHERE rg.user_id = l.user_id AND rg.account_id = l.account_id
        AND (rg.expires_at IS NULL OR rg.expires_at > now())),
    (SELECT array_agg(clef_team_path(m.team_id) ORDER BY clef_team_path(m.team_id))
       FROM team_members m JOIN teams t ON t.id = m.team_id
      WHERE m.user_id = l.user_id AND t.organization_id = a.organization_id)
    FROM links l JOIN accounts a ON a.id = l.account_id JOIN users u ON u.id = l.user_id
    WHERE u.status <> 'archived' AND u.kind IN ('standard', 'advanced')
    ORDER BY a.code, u.id) TO '$WORK/copy.csv' WITH (FORMAT csv)"
}
# Warm-up: one pass over the data, so that neither measurement pays for a
# cold cache or first-read hint bits (the dataset was just loaded).
raw_copy
# ROUNDS pairs, export then COPY, each window on a settled Postgres: the
# ratio is that of their totals, so that a change of the machine's speed
# during the run weighs on both sides alike.
ROUNDS=${ROUNDS:-3}
[ "$ROUNDS" -ge 1 ] || { echo "ROUNDS must be at least 1" >&2; exit 2; }
EXPORT_S=0; COPY_S=0; S_CPU=0; P_CPU=0
for r in $(seq "$ROUNDS"); do
  settle "round $r, before the export"
  s0=$(cpu $SERVER_PID); p0=$(pg_cpu)
  t0=$(now)
  CLEF_KEY=$KEY CLEF_ENDPOINT="http://$ADDR" /usr/bin/time -f '%U %S' -o "$WORK/client.time" $CLEF export --organization "$ORG" -o "$WORK/export.csv" 2>"$WORK/export.err" \
    || { echo "clef export failed:" >&2; cat "$WORK/export.err" "$WORK/serve.err" >&2; exit 1; }
  t1=$(now)
  s1=$(cpu $SERVER_PID); p1=$(pg_cpu)
  settle "round $r, before the COPY"
  t2=$(now)
  raw_copy
  t3=$(now)
  e=$(echo "$t1 - $t0" | bc); c=$(echo "$t3 - $t2" | bc)
  printf 'round %s: export %.2f s, raw COPY %.2f s, ratio %.2f\n' "$r" "$e" "$c" "$(echo "$c / $e" | bc -l)"
  EXPORT_S=$(echo "$EXPORT_S + $e" | bc); COPY_S=$(echo "$COPY_S + $c" | bc)
  S_CPU=$((S_CPU + s1 - s0)); P_CPU=$((P_CPU + p1 - p0))
done
ROWS=$(grep -o '[0-9]* rows' "$WORK/export.err" | cut -d' ' -f1)
RSS=$(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' /proc/$SERVER_PID/status)
EXPORT_S=$(echo "$EXPORT_S / $ROUNDS" | bc -l); COPY_S=$(echo "$COPY_S / $ROUNDS" | bc -l)
printf 'export: %s rows in %.2f s = %.0f rows/s (%s bytes; mean of %s rounds)\n' "$ROWS" "$EXPORT_S" "$(echo "$ROWS / $EXPORT_S" | bc)" "$(stat -c %s "$WORK/export.csv")" "$ROUNDS"
printf 'raw COPY of the same join: %.2f s = %.0f rows/s\n' "$COPY_S" "$(echo "$ROWS / $COPY_S" | bc)"
printf 'export / COPY throughput: %.2f; server peak RSS %s; cores %s\n' "$(echo "$COPY_S / $EXPORT_S" | bc -l)" "$RSS" "$(nproc)"
printf 'CPU seconds per export: server %.1f, Postgres %.1f, client %.1f (the last)\n' \
  "$(echo "$(cpu_seconds $S_CPU) / $ROUNDS" | bc -l)" "$(echo "$(cpu_seconds $P_CPU) / $ROUNDS" | bc -l)" "$(awk '{print $1 + $2}' "$WORK/client.time")"

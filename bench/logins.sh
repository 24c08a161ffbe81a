#!/usr/bin/env bash
# Password logins at the real argon2id cost (m = 19 MiB, t = 2, p = 1).
#
# 1. The time of a refused login by cause (unknown login, wrong password,
#    inactive user: comparable by design) and of a right one: the ignored
#    test passwords::login_figures in a release build.
# 2. Check throughput with h2load (as bench/run.sh: health first, then
#    Check by connection key), alone and while 50 connections send
#    AuthenticatePassword requests (h2load, one stream each) to the bounded
#    hashing pool.
# Environment: CLIENTS (Check connections, default 32), DURATION (s, 10).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
CLIENTS=${CLIENTS:-32}
DURATION=${DURATION:-10}

echo "== refused logins by cause (release test build)"
scripts/test --cargo-profile release --run-ignored only --no-capture login_figures 2>&1 |
  grep -E "^logins|FAIL"

bench_setup logins
command -v h2load >/dev/null 2>&1 || { echo "installing h2load..."; apt_install nghttp2-client; }
command -v bc >/dev/null 2>&1 || apt_install bc
OP=$($CLEF operator create bench --database-url "$URL" | tail -1)
bench_serve
sleep 1
H="authorization: Bearer $OP"
field() { python3 -c 'import json,sys
d=json.load(sys.stdin)
for k in sys.argv[1].split("."): d=d[k]
print(d)' "$1"; }
ORG=$(grpcurl -plaintext -H "$H" -d '{"display_name":"Bench"}' "$ADDR" clef.v1.AccountService/CreateOrganization | field id)
grpcurl -plaintext -H "$H" -d "{\"account\":{\"code\":\"B1\",\"display_name\":\"B1\",\"organization_id\":\"$ORG\"}}" \
  "$ADDR" clef.v1.AccountService/CreateAccount >/dev/null
U=$(grpcurl -plaintext -H "$H" -d '{"user":{"kind":"USER_KIND_STANDARD","first_name":"Bea","last_name":"Bench","login":"bea"},
  "account_code":"B1","rights":[{"right":"shipping.ws"}]}' "$ADDR" clef.v1.UserService/CreateUser)
KEY=$(echo "$U" | field connectionKey); ID=$(echo "$U" | field user.id)
grpcurl -plaintext -H "$H" -d "{\"user_id\":\"$ID\",\"password\":\"bench password 1\",\"keep_without_change\":true}" \
  "$ADDR" clef.v1.CredentialService/SetPassword >/dev/null
$CLEF bench body health -o "$WORK/health.bin"
$CLEF bench body check --key "$KEY" --account B1 --right shipping.ws -o "$WORK/check.bin"
$CLEF bench body login --login bea --password "bench password 1" -o "$WORK/login.bin"

h2() { # h2 NAME URI BODY CONNECTIONS : req/s of one h2load run
  h2load -D "$DURATION" --warm-up-time 2 -c "$4" -t 1 -m 1 \
    -H 'content-type: application/grpc' -H 'te: trailers' -H "authorization: Bearer $OP" \
    -d "$3" "http://$ADDR$2" >"$WORK/$1.out" 2>&1
  grep "^finished in" "$WORK/$1.out" | sed -E 's/.* ([0-9.]+) req\/s.*/\1/'
}
health=$(h2 health /grpc.health.v1.Health/Check "$WORK/health.bin" "$CLIENTS")
alone=$(h2 alone /clef.v1.AuthorizationService/Check "$WORK/check.bin" "$CLIENTS")
h2 logins /clef.v1.CredentialService/AuthenticatePassword "$WORK/login.bin" 50 >"$WORK/logins.rps" &
LOGINS=$!
sleep 1
during=$(h2 during /clef.v1.AuthorizationService/Check "$WORK/check.bin" "$CLIENTS")
wait "$LOGINS"
printf '%s\n' \
  "logins: cores=$(nproc) check connections=$CLIENTS duration=${DURATION}s" \
  "logins: health $(printf '%.0f' "$health") req/s" \
  "logins: check alone $(printf '%.0f' "$alone") req/s (ratio to health $(echo "scale=3; $alone / $health" | bc))" \
  "logins: check while 50 logins run $(printf '%.0f' "$during") req/s (ratio to alone $(echo "scale=3; $during / $alone" | bc)); logins $(cat "$WORK/logins.rps") req/s"

#!/usr/bin/env bash
# Password logins at the real argon2id cost (m = 19 MiB, t = 2, p = 1):
# the time of a refused login by cause (unknown login, wrong password,
# inactive user: comparable by design) and of a right one, then Check
# throughput alone and while 50 logins run at once on the bounded hashing
# pool. Runs the ignored test passwords::login_figures in a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test --cargo-profile release --run-ignored only --no-capture login_figures 2>&1 |
  grep -E "^logins|Summary|FAIL"

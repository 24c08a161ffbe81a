#!/usr/bin/env bash
# Propagation between two replicas on one Postgres: the time from a write's
# answer on replica A until replica B, asked without min_revision, reflects
# it (400 alternating grants and revokes; p50, p99, max). Runs the ignored
# test replicas::propagation_figures in a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test --cargo-profile release --run-ignored only --no-capture propagation_figures 2>&1 |
  grep -E "^propagation|Summary|FAIL"

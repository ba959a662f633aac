#!/usr/bin/env bash
# The chaos run, long: many SIGKILLs, broker restarts, object-store faults and zombies at once
# against a broker of its own and the S3 server behind a fault proxy, then the tables checked
# against what the broker acknowledged (tests/it/chaos/). CI runs the same test on a short
# schedule.
#
#   scripts/chaos.sh [REPORT]     # default report: bench/results/chaos-long.md
#
# Settings (environment): SLUICE_CHAOS_SEED (random, printed), SLUICE_CHAOS_SECONDS (900),
# SLUICE_CHAOS_MIN_KILLS (100), SLUICE_CHAOS_RATE (1000 records/s), SLUICE_CHAOS_STORE_FAULTS
# (0.10 of requests), SLUICE_CHAOS_BROKER_EVERY (150 s), SLUICE_CHAOS_ZOMBIE_EVERY (200 s).
# A failed run keeps the service's logs and prints where.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SLUICE_CACHE/target}"
report="${1:-bench/results/chaos-long.md}"
export SLUICE_CHAOS_REPORT="$(cd "$(dirname "$report")" && pwd)/$(basename "$report")"
export SLUICE_CHAOS_SECONDS="${SLUICE_CHAOS_SECONDS:-900}"
export SLUICE_CHAOS_MIN_KILLS="${SLUICE_CHAOS_MIN_KILLS:-100}"
export SLUICE_CHAOS_BROKER_EVERY="${SLUICE_CHAOS_BROKER_EVERY:-150}"
export SLUICE_CHAOS_ZOMBIE_EVERY="${SLUICE_CHAOS_ZOMBIE_EVERY:-200}"

s3_was_running=1
scripts/s3.sh status >/dev/null 2>&1 || s3_was_running=0
if [ $s3_was_running = 0 ]; then
  scripts/s3.sh start >/dev/null
  trap 'scripts/s3.sh stop || true' EXIT
fi
export SLUICE_TEST_S3="http://127.0.0.1:$SLUICE_S3_PORT"
scripts/kafka.sh fetch
start=$SECONDS
cargo test --locked --test it -- chaos:: --nocapture
log "chaos run passed in $((SECONDS - start))s; report in $report"

#!/usr/bin/env bash
# The benchmark harness, one command:
#   bench/run.sh [all|throughput|freshness|soak|snapshot-memory|stages]
#
# Builds sluice and the harness with --release, starts the real Apache Kafka broker from
# scripts/ (unless SLUICE_BENCH_BROKERS points at one), runs the chosen benchmarks and writes
# markdown and JSON under bench/results/ with the machine, the commit and the exact command.
# Sizes are settable: BENCH_EVENTS (5000000), FRESH_RATE (10000), FRESH_SECONDS (60),
# SOAK_RATE (10000), SOAK_MINUTES (10), SNAPSHOT_COMMITS (600).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SLUICE_CACHE/target}"
what="${1:-all}"

log "building sluice and sluice-bench (release)"
cargo build --release --locked -p sluice -p sluice-bench

brokers="${SLUICE_BENCH_BROKERS:-}"
if [ -z "$brokers" ]; then
  scripts/kafka.sh start >/dev/null
  trap 'scripts/kafka.sh stop || true' EXIT
  brokers="127.0.0.1:$SLUICE_KAFKA_PORT"
fi
bench="$CARGO_TARGET_DIR/release/sluice-bench --brokers $brokers --sluice $CARGO_TARGET_DIR/release/sluice --out bench/results"

run() { log "$*"; "$@"; }
case "$what" in
  throughput|all) run $bench throughput --events "${BENCH_EVENTS:-5000000}" ;;&
  freshness|all) run $bench freshness --rate "${FRESH_RATE:-10000}" --seconds "${FRESH_SECONDS:-60}" ;;&
  soak|all) run $bench soak --rate "${SOAK_RATE:-10000}" --minutes "${SOAK_MINUTES:-10}" ;;&
  snapshot-memory|all) run "$CARGO_TARGET_DIR/release/snapshot-memory" --commits "${SNAPSHOT_COMMITS:-600}" --out bench/results ;;&
  stages|all) run cargo bench --locked -p sluice-bench --bench stages -- --noplot 2>&1 | tee bench/results/stages.txt ;;
  throughput|freshness|soak|snapshot-memory) ;;
  *) die "unknown benchmark $what: use all, throughput, freshness, soak, snapshot-memory or stages" ;;
esac

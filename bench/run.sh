#!/usr/bin/env bash
# The benchmark harness, one command:
#   bench/run.sh [all|throughput|formats|changelog|windows|freshness|soak|snapshot-memory|stages]
#
# Builds sluice and the harness with --release, starts the real Apache Kafka broker from
# scripts/ (unless SLUICE_BENCH_BROKERS points at one), runs the chosen benchmarks and writes
# markdown and JSON under bench/results/ with the machine, the commit and the exact command.
# `formats` also starts the schema registry (scripts/registry.sh).
# Sizes are settable: BENCH_EVENTS (5000000), FORMAT_EVENTS (2000000), CHANGES (1000000),
# CHANGE_KEYS (100000), CHANGE_FLUSH_ROWS (200000), WINDOW_EVENTS (2000000),
# WINDOW_PARTITIONS (6), WINDOW_INSTANCES (3), FRESH_RATE (10000), FRESH_SECONDS (60),
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
# The criterion stage benchmarks, as markdown with the machine, the commit and the command.
# (-p sluice too: criterion, a dev-dependency, resolves features unlike the release build above,
# so the first run rebuilds much of the tree, 25 minutes on 2 cores; later runs reuse it.)
stages() {
  local cmd=(cargo bench --locked -p sluice -p sluice-bench --bench stages -- --noplot)
  printf '# stages (criterion)\n\n- date: %s\n- commit: `%s`\n- command: `%s`\n- machine: %s cores, %s, %s\n\n```\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(git rev-parse --short HEAD)" "${cmd[*]}" "$(nproc)" \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$(head -1 /proc/meminfo | xargs)"
  "${cmd[@]}" 2>&1 | grep -v '^Benchmarking\|^ *Compiling\|^\s*$'
  printf '```\n'
}
case "$what" in
  throughput|all) run $bench throughput --events "${BENCH_EVENTS:-5000000}" ;;&
  formats|all)
    registry="$(scripts/registry.sh start)"
    run $bench formats --events "${FORMAT_EVENTS:-2000000}" --registry "$registry"
    scripts/registry.sh stop >/dev/null ;;&
  changelog|all) run $bench changelog --changes "${CHANGES:-1000000}" --keys "${CHANGE_KEYS:-100000}" --max-rows "${CHANGE_FLUSH_ROWS:-200000}" ;;&
  windows|all) run $bench windows --events "${WINDOW_EVENTS:-2000000}" --partitions "${WINDOW_PARTITIONS:-6}" --instances "${WINDOW_INSTANCES:-3}" ;;&
  freshness|all) run $bench freshness --rate "${FRESH_RATE:-10000}" --seconds "${FRESH_SECONDS:-60}" ;;&
  soak|all) run $bench soak --rate "${SOAK_RATE:-10000}" --minutes "${SOAK_MINUTES:-10}" ;;&
  snapshot-memory|all) run "$CARGO_TARGET_DIR/release/snapshot-memory" --commits "${SNAPSHOT_COMMITS:-600}" --out bench/results ;;&
  stages|all) stages | tee bench/results/stages.md ;;
  throughput|formats|changelog|windows|freshness|soak|snapshot-memory) ;;
  *) die "unknown benchmark $what: use all, throughput, formats, changelog, windows, freshness, soak, snapshot-memory or stages" ;;
esac

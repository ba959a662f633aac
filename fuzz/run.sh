#!/usr/bin/env bash
# Runs every fuzz target for a time box and writes what each did.
#
#   fuzz/run.sh [SECONDS] [TARGET...]     # default 600 s, all targets
#
# Needs a nightly toolchain and cargo-fuzz (scripts/install-deps.sh installs cargo-fuzz).
# Each target starts from its seeds (fuzz/seeds/<target>, committed) and the corpus grown by
# earlier runs ($SLUICE_CACHE/fuzz/corpus/<target>, outside the clone). A crash leaves its
# input in $SLUICE_CACHE/fuzz/artifacts/<target>/ and makes the script exit non-zero after
# the other targets ran; a crash found becomes a regression test beside the code it hit.
# With FUZZ_REPORT=path, a markdown table of the runs is written there.
set -uo pipefail
cd "$(dirname "$0")"
source ../scripts/lib.sh

seconds="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(json json_fast json_infer avro protobuf framing config)
export CARGO_TARGET_DIR="${SLUICE_FUZZ_TARGET_DIR:-$SLUICE_CACHE/fuzz-target}"
work="$SLUICE_CACHE/fuzz"
report="${FUZZ_REPORT:-}"

cargo +nightly fuzz build -O --fuzz-dir . >&2 || die "building the fuzz targets failed"
failed=()
rows=()
for t in "${targets[@]}"; do
  mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
  log "fuzzing $t for ${seconds}s"
  out="$work/$t.log"
  start=$SECONDS
  cargo +nightly fuzz run -O --fuzz-dir . "$t" "$work/corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -max_len=4096 -timeout=30 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="$work/artifacts/$t/" >"$out" 2>&1
  rc=$?
  took=$((SECONDS - start))
  runs=$(awk -F: '/stat::number_of_executed_units/ {gsub(/ /,"",$NF); print $NF}' "$out")
  cov=$(grep -o 'cov: [0-9]*' "$out" | tail -1 | cut -d' ' -f2)
  corpus=$(find "$work/corpus/$t" -type f | wc -l)
  rss=$(awk -F: '/stat::peak_rss_mb/ {gsub(/ /,"",$NF); print $NF}' "$out")
  if [ $rc -eq 0 ]; then result="no crash"; else
    result="CRASH (exit $rc): $(ls "$work/artifacts/$t" | head -3 | tr '\n' ' ')"
    failed+=("$t")
    grep -m5 -E "panicked|ERROR|SUMMARY" "$out" >&2
  fi
  log "$t: $result, ${runs:-?} runs in ${took}s, coverage ${cov:-?}, corpus $corpus"
  rows+=("| \`$t\` | ${took} s | ${runs:-?} | ${cov:-?} | $corpus | ${rss:-?} MB | $result |")
done
if [ -n "$report" ]; then
  {
    printf '# Fuzz runs\n\n- date: %s\n- commit: `%s`\n- command: `fuzz/run.sh %s`\n- machine: %s cores, %s\n- toolchain: %s\n\n' \
      "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(git rev-parse --short HEAD)" "$seconds ${targets[*]}" "$(nproc)" \
      "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$(rustc +nightly --version)"
    printf '| target | time | executions | coverage (edges) | corpus after | peak RSS | result |\n|---|---|---|---|---|---|---|\n'
    printf '%s\n' "${rows[@]}"
  } >"$report"
  log "wrote $report"
fi
[ ${#failed[@]} -eq 0 ] || die "crashes in: ${failed[*]} (inputs under $work/artifacts/)"

#!/usr/bin/env bash
# Where a running sluice's memory is, every INTERVAL seconds until it exits:
#
#   bench/memory-probe.sh PID [INTERVAL] [METRICS_ADDR] > probe.tsv
#
# One line per sample: seconds since start, RSS, anonymous and file-backed RSS (MB, from
# /proc/PID/status), the thread count, resident MB per kind of mapping (the binary, other
# files, [stack] and other anonymous mappings, from /proc/PID/smaps), jemalloc's live heap,
# resident heap, thread caches, dirty pages and metadata from the service's /metrics (when
# METRICS_ADDR, e.g. 127.0.0.1:19391, is given), and the threads by name. Used for the soak diagnostics in bench/README.md.
set -euo pipefail
pid=$1
interval=${2:-10}
metrics=${3:-}
exe=$(readlink "/proc/$pid/exe")
start=$(date +%s)
printf 't_s\trss_mb\tanon_mb\tfile_mb\tthreads\tbinary_mb\tother_files_mb\tanon_maps_mb\tstack_mb\theap_live_mb\theap_resident_mb\ttcache_mb\tdirty_mb\tmetadata_mb\tthread_names\n'
while [ -d "/proc/$pid" ]; do
  now=$(( $(date +%s) - start ))
  status=$(cat "/proc/$pid/status" 2>/dev/null) || break
  field() { awk -v k="$1" '$1 == k { printf "%.1f", $2 / 1024 }' <<<"$status"; }
  threads=$(awk '$1 == "Threads:" { print $2 }' <<<"$status")
  # smaps: resident kB per mapping, summed by kind.
  kinds=$(awk -v exe="$exe" '
    /^[0-9a-f]+-[0-9a-f]+ / { name = (NF >= 6) ? $6 : ""; next }
    /^Rss:/ {
      if (name == exe) b += $2;
      else if (name == "[stack]") s += $2;
      else if (name ~ /^\//) f += $2;
      else a += $2;
    }
    END { printf "%.1f\t%.1f\t%.1f\t%.1f", b / 1024, f / 1024, a / 1024, s / 1024 }
  ' "/proc/$pid/smaps" 2>/dev/null) || break
  heap=$'\t\t\t\t\t'
  if [ -n "$metrics" ]; then
    heap=""
    body=$(curl -s --max-time 2 "http://$metrics/metrics" || true)
    for g in allocated resident thread_cache dirty metadata; do
      heap+=$(awk -v k="sluice_heap_${g}_bytes" '$1 == k { printf "%.1f", $2 / 1e6 }' <<<"$body")$'\t'
    done
  fi
  # Threads come and go (the blocking pool's idle ones leave after a second): a thread that
  # exits between the glob and the read is skipped, not an error.
  names=$( (cat /proc/"$pid"/task/*/comm 2>/dev/null || true) | sort | uniq -c |
    awk '{ printf "%s%s=%s", sep, $2, $1; sep = "," }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s%s\n' "$now" "$(field VmRSS:)" "$(field RssAnon:)" \
    "$(field RssFile:)" "$threads" "$kinds" "$heap" "$names"
  sleep "$interval"
done

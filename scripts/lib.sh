# Shared settings for the dev-service scripts. Sourced, not run.
# Everything that outlives one run (jars, the Python venv, cargo's target dir) lives under
# SLUICE_CACHE, outside the clone, so a second run on the same machine is fast.
SLUICE_CACHE="${SLUICE_CACHE:-$HOME/.cache/sluice}"
SLUICE_RUN_DIR="${SLUICE_RUN_DIR:-$SLUICE_CACHE/run}"
KAFKA_VERSION="4.1.1"
KAFKA_HOME="$SLUICE_CACHE/kafka-$KAFKA_VERSION"
SLUICE_KAFKA_PORT="${SLUICE_KAFKA_PORT:-19092}"
SLUICE_S3_PORT="${SLUICE_S3_PORT:-19000}"
SLUICE_VENV="$SLUICE_CACHE/venv"
SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_ready PIDFILE LOG NAME SECONDS CHECK...: runs the command CHECK every 0.3 s until it
# succeeds; dies with the last lines of LOG when the process of PIDFILE exits first or
# SECONDS pass.
wait_ready() {
  local pidfile=$1 logfile=$2 name=$3 limit=$4
  shift 4
  local deadline=$((SECONDS + limit))
  until "$@" 2>/dev/null; do
    kill -0 "$(cat "$pidfile")" 2>/dev/null || { tail -n 50 "$logfile" >&2; die "$name exited during start-up"; }
    [ $SECONDS -lt $deadline ] || { tail -n 50 "$logfile" >&2; die "$name did not answer within ${limit}s"; }
    sleep 0.3
  done
}

# stop_pidfile FILE NAME [SIGNAL]: SIGNAL (TERM by default) to the process group, wait up to
# 20 s, then KILL; leaves nothing behind.
stop_pidfile() {
  local file=$1 name=$2 sig=${3:-TERM} pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill "-$sig" -- "-$pid" 2>/dev/null || kill "-$sig" "$pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not stop in 20s; killing"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
      sleep 0.5
    fi
  fi
  rm -f "$file"
  log "$name stopped"
}
APICURIO_VERSION="3.3.3"
APICURIO_HOME="$SLUICE_CACHE/apicurio-$APICURIO_VERSION"
SLUICE_REGISTRY_PORT="${SLUICE_REGISTRY_PORT:-18081}"

# java21 : a Java 21+ runtime (Apicurio Registry 3 needs one): SLUICE_JAVA21, JAVA_HOME when it
# is new enough, or a Temurin/OpenJDK 21+ under /usr/lib/jvm.
java21() {
  local cand v
  for cand in "${SLUICE_JAVA21:-}" "${JAVA_HOME:+$JAVA_HOME/bin/java}" /usr/lib/jvm/*/bin/java java; do
    [ -n "$cand" ] && command -v "$cand" >/dev/null 2>&1 || continue
    v=$("$cand" -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}')
    if [ -n "$v" ] && [ "${v%%.*}" -ge 21 ] 2>/dev/null; then echo "$cand"; return 0; fi
  done
  return 1
}

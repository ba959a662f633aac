#!/usr/bin/env bash
# Starts or stops a schema registry (Apicurio Registry, in-memory storage) on 127.0.0.1 for
# tests and development. It serves the Confluent-compatible API under /apis/ccompat/v7, which
# is what sluice and Confluent's serializers speak.
#
#   scripts/registry.sh start    # fetch the app if missing, start, wait until ready
#   scripts/registry.sh stop     # stop it; no process is left behind
#   scripts/registry.sh status
#   scripts/registry.sh fetch    # only fetch the app
#
# The app (io.apicurio:apicurio-registry-app:3.3.3, classifier `all`, a Quarkus app as a
# tar.gz) comes from Maven Central through Maven into $SLUICE_CACHE/apicurio-<version> and is
# reused when present. It needs Java 21+ (see java21 in lib.sh). HTTP and the management
# interface are bound to 127.0.0.1 only. Port: SLUICE_REGISTRY_PORT (default 18081); the
# management interface listens on the next port, and HTTPS on the one after (a self-signed
# certificate for 127.0.0.1 made with openssl at start, in $DIR/cert.pem: the TLS tests trust
# it through schema_registry.ca_file).
#
#   scripts/registry.sh tls-url  # the HTTPS URL;  scripts/registry.sh ca-file  # its cert
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PORT=$SLUICE_REGISTRY_PORT
MANAGEMENT_PORT=$((PORT + 1))
TLS_PORT=$((PORT + 2))
DIR="$SLUICE_RUN_DIR/registry-$PORT"
PIDFILE="$DIR/registry.pid"
URL="http://127.0.0.1:$PORT/apis/ccompat/v7"
TLS_URL="https://127.0.0.1:$TLS_PORT/apis/ccompat/v7"

fetch_app() {
  if [ -f "$APICURIO_HOME/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch Apicurio Registry"
  log "fetching Apicurio Registry $APICURIO_VERSION from Maven Central into $APICURIO_HOME"
  local tmp
  tmp=$(mktemp -d)
  mvn -q -B -Dstyle.color=never dependency:copy \
    "-Dartifact=io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" \
    -DoutputDirectory="$tmp" >&2 || die "mvn could not fetch io.apicurio:apicurio-registry-app:$APICURIO_VERSION"
  rm -rf "$APICURIO_HOME"; mkdir -p "$APICURIO_HOME"
  tar xzf "$tmp"/apicurio-registry-app-*.tar.gz -C "$APICURIO_HOME" || die "cannot unpack the registry"
  rm -rf "$tmp"
  [ -f "$APICURIO_HOME/quarkus-run.jar" ] || die "the registry archive has no quarkus-run.jar"
  touch "$APICURIO_HOME/.complete"
}

start() {
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    log "already running (pid $(cat "$PIDFILE"))"; echo "$URL"; return 0
  fi
  port_open "$PORT" && die "port $PORT is taken by another process; set SLUICE_REGISTRY_PORT"
  port_open "$MANAGEMENT_PORT" && die "port $MANAGEMENT_PORT (management) is taken; set SLUICE_REGISTRY_PORT"
  local java
  java=$(java21) || die "Apicurio Registry needs Java 21 or newer: install one (e.g. Temurin 21+) or set SLUICE_JAVA21 to its java"
  fetch_app
  port_open "$TLS_PORT" && die "port $TLS_PORT (HTTPS) is taken; set SLUICE_REGISTRY_PORT"
  rm -rf "$DIR"; mkdir -p "$DIR"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=127.0.0.1" \
    -addext "subjectAltName=IP:127.0.0.1" \
    -keyout "$DIR/key.pem" -out "$DIR/cert.pem" >/dev/null 2>&1 || die "openssl could not make the registry's certificate"
  setsid "$java" -Xms128m -Xmx512m -XX:+UseSerialGC \
    -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$PORT" \
    -Dquarkus.http.ssl-port="$TLS_PORT" \
    -Dquarkus.http.ssl.certificate.files="$DIR/cert.pem" \
    -Dquarkus.http.ssl.certificate.key-files="$DIR/key.pem" \
    -Dquarkus.management.host=127.0.0.1 -Dquarkus.management.port="$MANAGEMENT_PORT" \
    -Dquarkus.log.level=WARN -Dquarkus.log.console.level=WARN \
    -jar "$APICURIO_HOME/quarkus-run.jar" >"$DIR/server.log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  wait_ready "$PIDFILE" "$DIR/server.log" "the registry ($URL/subjects)" 120 \
    curl -fsS -o /dev/null "$URL/subjects"
  log "ready: Apicurio Registry $APICURIO_VERSION, Confluent-compatible API at $URL"
  echo "$URL"
}

case "${1:-}" in
  start) start ;;
  stop) stop_pidfile "$PIDFILE" "registry" ;;
  status)
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then echo "running at $URL"; else echo "stopped"; exit 1; fi ;;
  fetch) fetch_app ;;
  tls-url) echo "$TLS_URL" ;;
  ca-file) echo "$DIR/cert.pem" ;;
  *) echo "usage: $0 start|stop|status|fetch|tls-url|ca-file" >&2; exit 2 ;;
esac

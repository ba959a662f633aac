#!/usr/bin/env bash
# Starts or stops Azurite, Microsoft's Azure Blob Storage emulator (npm), on 127.0.0.1.
#
#   scripts/azurite.sh fetch    # npm install into $SLUICE_CACHE/azurite-<version> if missing
#   scripts/azurite.sh start    # fetch, start, create the test container, wait until ready
#   scripts/azurite.sh stop
#   scripts/azurite.sh status
#   scripts/azurite.sh url      # the blob endpoint, http://127.0.0.1:<port>/devstoreaccount1
#
# The account is the emulator's well-known development account (devstoreaccount1 and its
# published key). Azure Blob Storage has conditional writes (If-None-Match: *), which Delta
# commits rely on. Port: SLUICE_AZURITE_PORT (default 10000).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

AZURITE_VERSION="3.37.0"
AZURITE_HOME="$SLUICE_CACHE/azurite-$AZURITE_VERSION"
PORT="${SLUICE_AZURITE_PORT:-10000}"
DIR="$SLUICE_RUN_DIR/azurite-$PORT"
PIDFILE="$DIR/azurite.pid"
ACCOUNT="devstoreaccount1"
CONTAINER="${SLUICE_AZURE_CONTAINER:-sluice-test}"

fetch() {
  [ -x "$AZURITE_HOME/node_modules/.bin/azurite-blob" ] && return 0
  command -v npm >/dev/null || die "npm (Node.js) is needed for Azurite"
  log "installing azurite@$AZURITE_VERSION from npm into $AZURITE_HOME"
  local tmp="$AZURITE_HOME.tmp"
  rm -rf "$tmp"; mkdir -p "$tmp"
  npm install --prefix "$tmp" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >&2 \
    || die "npm could not install azurite@$AZURITE_VERSION"
  rm -rf "$AZURITE_HOME"; mv "$tmp" "$AZURITE_HOME"
}

start() {
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    log "already running (pid $(cat "$PIDFILE"))"; echo "http://127.0.0.1:$PORT/$ACCOUNT"; return 0
  fi
  port_open "$PORT" && die "port $PORT is taken by another process; set SLUICE_AZURITE_PORT"
  fetch
  "$SCRIPTS_DIR/python-env.sh" >&2
  rm -rf "$DIR"; mkdir -p "$DIR/data"
  setsid "$AZURITE_HOME/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$PORT" \
    --location "$DIR/data" --skipApiVersionCheck --silent >"$DIR/server.log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  wait_ready "$PIDFILE" "$DIR/server.log" Azurite 60 port_open "$PORT"
  # The container the tests use (each test works under its own prefix), created with the
  # Azure SDK for Python: container creation needs a signed request.
  "$SLUICE_VENV/bin/python" - "$PORT" "$CONTAINER" <<'PY' || die "could not create the test container"
import sys
from azure.storage.blob import BlobServiceClient
port, container = sys.argv[1], sys.argv[2]
conn = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
        f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
client = BlobServiceClient.from_connection_string(conn)
if not any(c.name == container for c in client.list_containers()):
    client.create_container(container)
PY
  log "ready: Azurite $AZURITE_VERSION on http://127.0.0.1:$PORT/$ACCOUNT, container $CONTAINER"
  echo "http://127.0.0.1:$PORT/$ACCOUNT"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  # Azurite closes in about 3 s on SIGINT; on SIGTERM it took 126 s (measured), past the
  # 20 s after which stop_pidfile kills it.
  stop) stop_pidfile "$PIDFILE" "azurite" INT ;;
  url) echo "http://127.0.0.1:$PORT/$ACCOUNT" ;;
  status)
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then echo "running on 127.0.0.1:$PORT"; else echo "stopped"; exit 1; fi ;;
  *) echo "usage: $0 fetch|start|stop|status|url" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Starts or stops fake-gcs-server, a Google Cloud Storage emulator (Go, built from the Go module
# proxy), on 127.0.0.1 over HTTP.
#
#   scripts/gcs.sh fetch            # build into $SLUICE_CACHE/gcs-<version> if missing
#   scripts/gcs.sh start            # fetch, start, create the test bucket, wait until ready
#   scripts/gcs.sh stop
#   scripts/gcs.sh status
#   scripts/gcs.sh url              # http://127.0.0.1:<port>
#   scripts/gcs.sh service-account  # a service-account file that points clients at it
#
# The build adds one file to the emulator's source, scripts/gcs/xml_api.go: two parts of the
# XML API that GCS serves, fake-gcs-server v1.56.1 lacks (its issue 331) and the object_store
# crate uses: the simple upload (`PUT /<bucket>/<object>` with `x-goog-if-generation-match`,
# for every write; the precondition is checked by the emulator's own backend) and `start-after`
# on listings. Clients reach the emulator
# through a service-account file with `gcs_base_url` and `disable_oauth` (object_store's way to
# talk to an emulator). Port: SLUICE_GCS_PORT (default 4443).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

GCS_VERSION="v1.56.1"
GCS_HOME="$SLUICE_CACHE/gcs-$GCS_VERSION"
PORT="${SLUICE_GCS_PORT:-4443}"
DIR="$SLUICE_RUN_DIR/gcs-$PORT"
PIDFILE="$DIR/gcs.pid"
BUCKET="${SLUICE_GCS_BUCKET:-sluice-test}"
PATCH="$SCRIPTS_DIR/gcs/xml_api.go"

fetch() {
  # Rebuilt when the added file changes.
  if [ -x "$GCS_HOME/bin/fake-gcs-server" ] && cmp -s "$PATCH" "$GCS_HOME/xml_api.go"; then
    return 0
  fi
  command -v go >/dev/null || die "Go is needed to build fake-gcs-server"
  log "building fake-gcs-server $GCS_VERSION (from the Go module proxy) into $GCS_HOME"
  # Go's module and build caches under SLUICE_CACHE too, so a rebuild is quick.
  export GOMODCACHE="$SLUICE_CACHE/go/mod" GOCACHE="$SLUICE_CACHE/go/build" GOFLAGS=-mod=mod
  local src
  src=$(go mod download -json "github.com/fsouza/fake-gcs-server@$GCS_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -d "$src" ] || die "go mod download github.com/fsouza/fake-gcs-server@$GCS_VERSION failed"
  rm -rf "$GCS_HOME"; mkdir -p "$GCS_HOME/bin"
  cp -r "$src" "$GCS_HOME/src"; chmod -R u+w "$GCS_HOME/src"
  cp "$PATCH" "$GCS_HOME/src/fakestorage/xml_api.go"
  # The route, ahead of the signed-URL upload route that would take the same requests.
  grep -q '// Signed URLs (upload and download)' "$GCS_HOME/src/fakestorage/server.go" \
    || die "fake-gcs-server $GCS_VERSION: the signed-URL routes moved; update scripts/gcs.sh"
  sed -i 's|^\t// Signed URLs (upload and download)$|\thandler.MatcherFunc(s.publicHostMatcher).Path("/{bucketName}/{objectName:.+}").Methods(http.MethodPut).MatcherFunc(isXMLUpload).HandlerFunc(s.xmlUploadObject)\n&|' \
    "$GCS_HOME/src/fakestorage/server.go"
  sed -i 's|HandlerFunc(xmlToHTTPHandler(s.xmlListObjects))|HandlerFunc(xmlToHTTPHandler(s.xmlListObjectsAfter))|' \
    "$GCS_HOME/src/fakestorage/server.go"
  (cd "$GCS_HOME/src" && go build -o "$GCS_HOME/bin/fake-gcs-server" .) >&2 \
    || die "building fake-gcs-server failed"
  cp "$PATCH" "$GCS_HOME/xml_api.go"
}

start() {
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    log "already running (pid $(cat "$PIDFILE"))"; echo "http://127.0.0.1:$PORT"; return 0
  fi
  port_open "$PORT" && die "port $PORT is taken by another process; set SLUICE_GCS_PORT"
  fetch
  rm -rf "$DIR"; mkdir -p "$DIR/data"
  setsid "$GCS_HOME/bin/fake-gcs-server" -scheme http -host 127.0.0.1 -port "$PORT" \
    -public-host "127.0.0.1:$PORT" -external-url "http://127.0.0.1:$PORT" \
    -backend filesystem -filesystem-root "$DIR/data" -log-level warn \
    >"$DIR/server.log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  wait_ready "$PIDFILE" "$DIR/server.log" fake-gcs-server 60 \
    curl -fsS -o /dev/null "http://127.0.0.1:$PORT/storage/v1/b"
  curl -fsS -X POST -H 'Content-Type: application/json' -o /dev/null \
    -d "{\"name\":\"$BUCKET\"}" "http://127.0.0.1:$PORT/storage/v1/b" || die "could not create the test bucket"
  printf '{"gcs_base_url": "http://127.0.0.1:%s", "disable_oauth": true, "client_email": "", "private_key": "", "private_key_id": ""}\n' \
    "$PORT" >"$DIR/service-account.json"
  log "ready: fake-gcs-server $GCS_VERSION on http://127.0.0.1:$PORT, bucket $BUCKET"
  echo "http://127.0.0.1:$PORT"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop_pidfile "$PIDFILE" "fake-gcs-server" ;;
  url) echo "http://127.0.0.1:$PORT" ;;
  service-account) echo "$DIR/service-account.json" ;;
  status)
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then echo "running on 127.0.0.1:$PORT"; else echo "stopped"; exit 1; fi ;;
  *) echo "usage: $0 fetch|start|stop|status|url|service-account" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Starts or stops an S3-compatible server (moto's server mode) on 127.0.0.1 over HTTP.
#
#   scripts/s3.sh start     # install moto[server] into a venv if missing, start, wait until ready
#   scripts/s3.sh stop
#   scripts/s3.sh status
#   scripts/s3.sh tls-url   # a second S3 server over HTTPS (port + 443), same bucket name
#   scripts/s3.sh ca-file   # the certificate it presents (self-signed, for 127.0.0.1)
#
# moto implements S3's conditional writes (If-None-Match: * on PutObject), which is what
# deltalake 1.x relies on for safe commits on S3 (see docs/s3.md). Port: SLUICE_S3_PORT
# (default 19000). Access key and secret are the test pair below; clients sign with SigV4.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PORT=$SLUICE_S3_PORT
DIR="$SLUICE_RUN_DIR/s3-$PORT"
PIDFILE="$DIR/s3.pid"
TLS_PORT=$((PORT + 443))
TLS_PIDFILE="$DIR/s3-tls.pid"
MOTO_VERSION="5.2.1"

install_moto() {
  "$SCRIPTS_DIR/python-env.sh" >&2
}

start() {
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    log "already running (pid $(cat "$PIDFILE"))"; echo "http://127.0.0.1:$PORT"; return 0
  fi
  port_open "$PORT" && die "port $PORT is taken by another process; set SLUICE_S3_PORT"
  install_moto
  rm -rf "$DIR"; mkdir -p "$DIR"
  setsid "$SLUICE_VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$DIR/server.log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  wait_ready "$PIDFILE" "$DIR/server.log" "the S3 server" 60 \
    curl -fsS -o /dev/null "http://127.0.0.1:$PORT/moto-api/data.json"
  # The bucket the tests use; each test works under its own prefix.
  curl -fsS -X PUT -o /dev/null "http://127.0.0.1:$PORT/${SLUICE_S3_BUCKET:-sluice-test}" || die "could not create the test bucket"
  start_tls
  log "ready: S3 (moto $MOTO_VERSION) on http://127.0.0.1:$PORT and https://127.0.0.1:$TLS_PORT, bucket ${SLUICE_S3_BUCKET:-sluice-test}"
  echo "http://127.0.0.1:$PORT"
}

# start_tls: the HTTPS server, with a certificate for 127.0.0.1 made with openssl.
start_tls() {
  port_open "$TLS_PORT" && die "port $TLS_PORT is taken by another process; set SLUICE_S3_PORT"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=127.0.0.1" \
    -addext "subjectAltName=IP:127.0.0.1" \
    -keyout "$DIR/tls-key.pem" -out "$DIR/tls-cert.pem" >/dev/null 2>&1 || die "openssl could not make the S3 server's certificate"
  setsid "$SLUICE_VENV/bin/moto_server" -H 127.0.0.1 -p "$TLS_PORT" -c "$DIR/tls-cert.pem" -k "$DIR/tls-key.pem" \
    >"$DIR/tls-server.log" 2>&1 </dev/null &
  echo $! >"$TLS_PIDFILE"
  wait_ready "$TLS_PIDFILE" "$DIR/tls-server.log" "the HTTPS S3 server" 60 \
    curl -fsS --cacert "$DIR/tls-cert.pem" -o /dev/null "https://127.0.0.1:$TLS_PORT/moto-api/data.json"
  curl -fsS --cacert "$DIR/tls-cert.pem" -X PUT -o /dev/null "https://127.0.0.1:$TLS_PORT/${SLUICE_S3_BUCKET:-sluice-test}" || die "could not create the test bucket over HTTPS"
}

case "${1:-}" in
  start) start ;;
  stop) stop_pidfile "$TLS_PIDFILE" "s3 (https)"; stop_pidfile "$PIDFILE" "s3" ;;
  tls-url) echo "https://127.0.0.1:$TLS_PORT" ;;
  ca-file) echo "$DIR/tls-cert.pem" ;;
  status)
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then echo "running on http://127.0.0.1:$PORT"; else echo "stopped"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status|tls-url|ca-file" >&2; exit 2 ;;
esac

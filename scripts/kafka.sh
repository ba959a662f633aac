#!/usr/bin/env bash
# Starts or stops a single-node Apache Kafka broker (KRaft, combined broker+controller) on
# 127.0.0.1 for tests and development.
#
#   scripts/kafka.sh start    # fetch jars if missing, format storage, start, wait until ready
#   scripts/kafka.sh stop     # stop it; no process is left behind
#   scripts/kafka.sh status
#   scripts/kafka.sh crash    # SIGKILL the broker, keeping its data (the chaos runner)
#   scripts/kafka.sh restart  # start it again on the data it had
#   scripts/kafka.sh sasl     # the SASL_SSL listener, its CA file and a SCRAM user, as
#                             # shell assignments (SASL_ADDR, SASL_CA, SCRAM_USER, SCRAM_PASSWORD)
#
# The broker's jars come from Maven Central through Maven (scripts/kafka/pom.xml) into
# $SLUICE_CACHE/kafka-<version>/libs and are reused when present. Port: SLUICE_KAFKA_PORT
# (default 19092, PLAINTEXT); the controller listens on the next port and a SASL_SSL listener
# (SCRAM-SHA-256 and -512 over TLS) on the one after. Its certificate, for 127.0.0.1, is signed
# by a CA made with openssl at each start; the SCRAM user `sluice` gets a random password,
# written beside the CA under the run directory.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PORT=$SLUICE_KAFKA_PORT
CONTROLLER_PORT=$((PORT + 1))
SASL_PORT=$((PORT + 2))
DIR="$SLUICE_RUN_DIR/kafka-$PORT"
TLS="$DIR/tls"
PIDFILE="$DIR/kafka.pid"

fetch_jars() {
  if [ -f "$KAFKA_HOME/libs/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch the Kafka jars"
  command -v java >/dev/null || die "Java 17+ is needed to run Kafka"
  log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_HOME/libs"
  rm -rf "$KAFKA_HOME/libs"
  mvn -q -B -Dstyle.color=never -f "$SCRIPTS_DIR/kafka/pom.xml" dependency:copy-dependencies \
    -Dkafka.version="$KAFKA_VERSION" -DincludeScope=runtime \
    -DoutputDirectory="$KAFKA_HOME/libs" >&2 || die "mvn could not fetch the Kafka jars"
  touch "$KAFKA_HOME/libs/.complete"
}

# make_tls: a CA, the broker's key and certificate for 127.0.0.1 signed by it (as a PKCS12
# keystore), and the SCRAM user's password.
make_tls() {
  mkdir -p "$TLS"
  local pass
  pass=$(openssl rand -hex 16)
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=sluice test CA" \
    -keyout "$TLS/ca.key" -out "$TLS/ca.pem" >/dev/null 2>&1 || die "openssl could not make the CA"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$TLS/broker.key" -out "$TLS/broker.csr" >/dev/null 2>&1 || die "openssl could not make the broker's key"
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$TLS/san.ext"
  openssl x509 -req -in "$TLS/broker.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" -CAcreateserial \
    -days 30 -extfile "$TLS/san.ext" -out "$TLS/broker.pem" >/dev/null 2>&1 || die "openssl could not sign the broker's certificate"
  openssl pkcs12 -export -in "$TLS/broker.pem" -inkey "$TLS/broker.key" -certfile "$TLS/ca.pem" \
    -name broker -passout "pass:$pass" -out "$TLS/broker.p12" || die "openssl could not make the keystore"
  echo "$pass" >"$TLS/keystore-password"
  openssl rand -hex 12 >"$TLS/scram-password"
}

write_config() {
  mkdir -p "$DIR/data"
  local pass
  pass=$(cat "$TLS/keystore-password")
  cat >"$DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT,SASL_SSL://127.0.0.1:$SASL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT,SASL_SSL://127.0.0.1:$SASL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS/broker.p12
ssl.keystore.password=$pass
ssl.key.password=$pass
log.dirs=$DIR/data
num.partitions=3
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.consumer.session.timeout.ms=10000
group.consumer.min.session.timeout.ms=1000
group.min.session.timeout.ms=1000
log.segment.bytes=16777216
log.retention.check.interval.ms=5000
PROPS
  cat >"$DIR/log4j2.properties" <<PROPS
rootLogger.level=WARN
rootLogger.appenderRef.file.ref=FILE
appender.file.type=File
appender.file.name=FILE
appender.file.fileName=$DIR/server.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
PROPS
}

JAVA=(java -Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$DIR/log4j2.properties" -cp "$KAFKA_HOME/libs/*")

start() {
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    log "already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"
    echo "127.0.0.1:$PORT"
    return 0
  fi
  port_open "$PORT" && die "port $PORT is taken by another process; set SLUICE_KAFKA_PORT"
  fetch_jars
  rm -rf "$DIR"
  make_tls
  write_config
  local cluster_id
  # A random 16-byte id in URL-safe base64; one starting with "-" would be read as an option.
  cluster_id=$(python3 -c '
import base64, uuid
while True:
    i = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not i.startswith("-"):
        print(i)
        break')
  "${JAVA[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$DIR/server.properties" \
    --add-scram "SCRAM-SHA-256=[name=sluice,password=$(cat "$TLS/scram-password")]" \
    --add-scram "SCRAM-SHA-512=[name=sluice,password=$(cat "$TLS/scram-password")]" \
    >"$DIR/format.log" 2>&1 || { cat "$DIR/format.log" >&2; die "formatting the storage failed"; }
  launch
}

# launch: runs the broker on the storage under $DIR and waits until it answers metadata.
launch() {
  setsid "${JAVA[@]}" kafka.Kafka "$DIR/server.properties" >"$DIR/stdout.log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  log "started (pid $(cat "$PIDFILE")); waiting for 127.0.0.1:$PORT to answer a metadata request"
  local deadline=$((SECONDS + 90))
  until port_open "$PORT"; do
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { tail -n 50 "$DIR/stdout.log" "$DIR/server.log" >&2 || true; die "the broker exited during start-up"; }
    [ $SECONDS -lt $deadline ] || die "the broker did not open 127.0.0.1:$PORT within 90s"
    sleep 0.5
  done
  # A metadata request through the admin client: the broker is ready when it lists topics.
  until "${JAVA[@]}" org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$PORT" --list >/dev/null 2>"$DIR/ready.log"; do
    [ $SECONDS -lt $deadline ] || { cat "$DIR/ready.log" >&2; die "the broker did not answer metadata within 90s"; }
    sleep 1
  done
  log "ready: Apache Kafka $KAFKA_VERSION (KRaft) listening on 127.0.0.1:$PORT"
  echo "127.0.0.1:$PORT"
}

# crash: SIGKILL the broker's process group; its data stays for `restart`.
crash() {
  [ -f "$PIDFILE" ] || die "no broker to crash (no $PIDFILE)"
  kill -KILL -- "-$(cat "$PIDFILE")" 2>/dev/null || kill -KILL "$(cat "$PIDFILE")" 2>/dev/null || true
  while kill -0 "$(cat "$PIDFILE")" 2>/dev/null; do sleep 0.1; done
  rm -f "$PIDFILE"
  log "crashed (SIGKILL); data kept in $DIR/data"
}

case "${1:-}" in
  start) start ;;
  crash) crash ;;
  restart)
    [ -f "$DIR/server.properties" ] || die "no broker storage under $DIR to restart; use start"
    launch ;;
  sasl)
    printf 'SASL_ADDR=127.0.0.1:%s\nSASL_CA=%s\nSCRAM_USER=sluice\nSCRAM_PASSWORD=%s\n' \
      "$SASL_PORT" "$TLS/ca.pem" "$(cat "$TLS/scram-password")" ;;
  stop) stop_pidfile "$PIDFILE" "kafka"; rm -rf "$DIR/data" ;;
  status)
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then echo "running on 127.0.0.1:$PORT"; else echo "stopped"; exit 1; fi ;;
  fetch) fetch_jars ;;
  *) echo "usage: $0 start|stop|status|fetch|crash|restart|sasl" >&2; exit 2 ;;
esac

//! Test support: the real services' addresses, unique names, producing records, and reading
//! tables back. Every test makes its own topics, S3 prefixes and temporary directories, so
//! tests run in parallel.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use nix::sys::signal::Signal;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice_lake::deltalake::arrow::record_batch::RecordBatch;

/// The real Kafka broker started by `scripts/test` (`SLUICE_TEST_KAFKA`).
pub fn kafka() -> String {
    std::env::var("SLUICE_TEST_KAFKA").unwrap_or_else(|_| {
        panic!("SLUICE_TEST_KAFKA is not set: run the suite with scripts/test, which starts Apache Kafka and S3")
    })
}

/// The real S3 server started by `scripts/test` (`SLUICE_TEST_S3`).
pub fn s3_endpoint() -> String {
    std::env::var("SLUICE_TEST_S3")
        .unwrap_or_else(|_| panic!("SLUICE_TEST_S3 is not set: run the suite with scripts/test"))
}

/// The bucket `scripts/s3.sh` creates.
pub const BUCKET: &str = "sluice-test";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let r: u32 = rand::random();
    format!("{prefix}-{}-{n}-{r:08x}", std::process::id())
}

/// Object-store options for the test S3 server.
pub fn s3_options() -> HashMap<String, String> {
    HashMap::from([
        ("aws_endpoint".to_string(), s3_endpoint()),
        ("aws_region".to_string(), "us-east-1".to_string()),
        (
            "aws_access_key_id".to_string(),
            "sluice-test-key".to_string(),
        ),
        (
            "aws_secret_access_key".to_string(),
            "sluice-test-secret".to_string(),
        ),
        ("aws_allow_http".to_string(), "true".to_string()),
    ])
}

/// A lake config rooted at a fresh prefix of the test bucket.
pub fn s3_lake() -> sluice_config::LakeConfig {
    sluice_config::LakeConfig {
        root: format!("s3://{BUCKET}/{}", unique("lake")),
        options: s3_options().into_iter().collect(),
    }
}

/// A lake config rooted at a fresh local directory (kept alive by the returned guard).
pub fn local_lake() -> (tempfile::TempDir, sluice_config::LakeConfig) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = sluice_config::LakeConfig {
        root: dir.path().display().to_string(),
        options: Default::default(),
    };
    (dir, cfg)
}

/// A lake config rooted at a fresh prefix of the Azurite container `scripts/azurite.sh`
/// creates. The emulator's address reaches object_store through `AZURITE_BLOB_STORAGE_URL`,
/// which `scripts/test` exports (and child processes inherit).
pub fn azure_lake() -> sluice_config::LakeConfig {
    assert!(
        std::env::var_os("AZURITE_BLOB_STORAGE_URL").is_some(),
        "AZURITE_BLOB_STORAGE_URL is not set: run the suite with scripts/test, which starts Azurite"
    );
    sluice_config::LakeConfig {
        root: format!("az://{BUCKET}/{}", unique("lake")),
        options: [("azure_storage_use_emulator", "true")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// A lake config rooted at a fresh prefix of the fake-gcs-server bucket `scripts/gcs.sh`
/// creates, reached through its service-account file (`SLUICE_TEST_GCS_SERVICE_ACCOUNT`).
pub fn gcs_lake() -> sluice_config::LakeConfig {
    let account = std::env::var("SLUICE_TEST_GCS_SERVICE_ACCOUNT").unwrap_or_else(|_| {
        panic!("SLUICE_TEST_GCS_SERVICE_ACCOUNT is not set: run the suite with scripts/test, which starts fake-gcs-server")
    });
    sluice_config::LakeConfig {
        root: format!("gs://{BUCKET}/{}", unique("lake")),
        options: [("google_service_account".to_string(), account)]
            .into_iter()
            .collect(),
    }
}

/// An admin client for the test broker.
pub fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .create()
        .expect("admin client")
}

/// Creates a topic with `partitions` partitions (replication 1).
pub async fn create_topic(name: &str, partitions: i32) {
    create_topic_with(name, partitions, &[]).await
}

/// Creates a topic with extra topic configs.
pub async fn create_topic_with(name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let res = admin()
        .create_topics(
            &[topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create_topics");
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

/// A producer for the test broker (idempotent, all acks).
pub fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer")
}

/// One record to produce.
#[derive(Clone, Debug, Default)]
pub struct TestRecord {
    /// Target partition (`None`: by key).
    pub partition: Option<i32>,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub value: Option<Vec<u8>>,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Record timestamp in ms (`None`: now).
    pub timestamp: Option<i64>,
}

/// Produces records and waits for every delivery; returns (partition, offset) of each, in order.
pub async fn produce(
    topic: &str,
    records: impl IntoIterator<Item = TestRecord>,
) -> Vec<(i32, i64)> {
    let producer = producer();
    let mut pending = Vec::new();
    for r in records {
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
        if let Some(p) = r.partition {
            rec = rec.partition(p);
        }
        if let Some(k) = &r.key {
            rec = rec.key(k.as_slice());
        }
        if let Some(v) = &r.value {
            rec = rec.payload(v.as_slice());
        }
        if let Some(ts) = r.timestamp {
            rec = rec.timestamp(ts);
        }
        if !r.headers.is_empty() {
            let mut h = OwnedHeaders::new();
            for (k, v) in &r.headers {
                h = h.insert(Header {
                    key: k,
                    value: Some(v.as_slice()),
                });
            }
            rec = rec.headers(h);
        }
        // send_result queues without waiting; the futures resolve on delivery.
        let fut = loop {
            match producer.send_result(rec) {
                Ok(f) => break f,
                Err((e, back)) => {
                    assert!(
                        matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "produce: {e}"
                    );
                    rec = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        pending.push(fut);
    }
    let mut out = Vec::with_capacity(pending.len());
    for f in pending {
        let delivery = f
            .await
            .expect("delivery future")
            .unwrap_or_else(|(e, _)| panic!("delivery: {e}"));
        out.push((delivery.partition, delivery.offset));
    }
    out
}

/// Every row of table `name` in `lake`.
pub async fn read_table(lake: &sluice_lake::Lake, name: &str) -> Vec<RecordBatch> {
    let table = lake
        .open(name)
        .await
        .expect("open table")
        .unwrap_or_else(|| panic!("table {name} does not exist"));
    sluice_lake::scan(name, &table).await.expect("scan")
}

/// Total rows in a set of batches.
pub fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

/// The repository's root. Read from the environment cargo sets when it runs the tests, not the
/// path compiled in: a test binary cargo reuses from another checkout sharing the target
/// directory would name that checkout.
pub fn repo_root() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

/// The `sluice` binary cargo built for these tests.
pub fn sluice_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sluice")
}

/// The `[kafka]`, `[lake]` and `[server]` sections every test config starts with: the test
/// broker with group `group`, the lake at `lake`, no listener, a 30 s shutdown.
pub fn service_sections(group: &str, lake: &sluice_config::LakeConfig) -> String {
    let options: String = lake
        .options
        .iter()
        .map(|(k, v)| format!("{k} = {v:?}\n"))
        .collect();
    format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
[kafka.options]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"

[lake]
root = "{root}"
[lake.options]
{options}
[server]
listen = ""
shutdown_timeout = "30s"
"#,
        brokers = kafka(),
        root = lake.root,
    )
}

/// A config file for one pipeline reading `topic` into table `events` under `lake`.
pub fn pipeline_config(
    dir: &std::path::Path,
    topic: &str,
    lake: &sluice_config::LakeConfig,
    extra: &str,
) -> std::path::PathBuf {
    let text = format!(
        r#"{service}
[[pipeline]]
name = "clicks"
topics = ["{topic}"]
table = "events"
schema = [
  {{ name = "user_id", type = "string", nullable = false }},
  {{ name = "page", type = "string" }},
  {{ name = "amount", type = "double" }},
  {{ name = "ts", type = "timestamp" }},
]
event_time = {{ field = "ts", format = "rfc3339" }}
partition_by = ["event_date"]
{extra}
"#,
        service = service_sections(&unique("sluice-it"), lake),
    );
    let path = dir.join("sluice.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// A port for a service's HTTP listener: random in 20000..32000, below the kernel's range
/// for outgoing connections (32768 and up by default), where a port picked at random could be
/// the local end of one of the suite's many client connections and the service could not bind
/// it (a clean-clone CI run had three services fail to serve that way).
pub fn listen_port() -> u16 {
    20_000 + rand::random::<u16>() % 12_000
}

/// Sends `sig` to the process `child` (SIGTERM for a clean stop, SIGSTOP/SIGCONT to stall it).
pub fn signal(child: &std::process::Child, sig: Signal) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, sig).expect("signal the child process");
}

/// What `sluice status --json --config <config>` prints, parsed; panics with its stderr if it
/// fails.
pub fn status_json(config: &std::path::Path) -> serde_json::Value {
    let out = std::process::Command::new(sluice_bin())
        .args(["status", "--json", "--config"])
        .arg(config)
        .output()
        .expect("run sluice status");
    assert!(
        out.status.success(),
        "sluice status --json failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("sluice status --json prints JSON")
}

/// Runs `sluice run --until-caught-up` to completion; panics with its output on failure.
pub fn run_until_caught_up(config: &std::path::Path) -> String {
    let out = std::process::Command::new(sluice_bin())
        .args(["run", "--until-caught-up", "--config"])
        .arg(config)
        .env("SLUICE_LOG", "info")
        .output()
        .expect("run sluice");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    if std::env::var_os("SLUICE_TEST_SHOW_LOG").is_some() {
        eprintln!("{log}");
    }
    assert!(
        out.status.success(),
        "sluice run failed ({}):\n{log}",
        out.status
    );
    log
}

/// A JSON click event.
pub fn click(i: u64, ts: &str) -> Vec<u8> {
    format!(
        r#"{{"user_id":"u{}","page":"/p/{}","amount":{}.5,"ts":"{ts}"}}"#,
        i % 1000,
        i % 7,
        i % 100
    )
    .into_bytes()
}

/// (partition, offset) of every row of an events table.
pub fn positions(batches: &[RecordBatch]) -> Vec<(i32, i64)> {
    use sluice_lake::deltalake::arrow::array::{Int32Array, Int64Array};
    let mut out = Vec::new();
    for b in batches {
        let p = b
            .column_by_name("_kafka_partition")
            .expect("partition")
            .as_any()
            .downcast_ref::<Int32Array>()
            .expect("i32")
            .clone();
        let o = b
            .column_by_name("_kafka_offset")
            .expect("offset")
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("i64")
            .clone();
        for i in 0..b.num_rows() {
            out.push((p.value(i), o.value(i)));
        }
    }
    out
}

/// Panics unless fetching `offset` of a partition from the broker fails (it was deleted).
pub async fn assert_offset_gone(topic: &str, partition: i32, offset: i64) {
    use rdkafka::Message as _;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let strict: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .set("group.id", unique("strict"))
        .set("auto.offset.reset", "error")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, rdkafka::Offset::Offset(offset))
        .expect("tpl");
    strict.assign(&tpl).expect("assign");
    let err = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            match strict.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => panic!("offset {} of a deleted range was served", m.offset()),
                Some(Err(e)) => return e,
                None => {}
            }
        }
        panic!("no error for a deleted offset within 30s");
    })
    .await
    .expect("thread");
    assert!(
        matches!(
            err.rdkafka_error_code(),
            Some(
                rdkafka::types::RDKafkaErrorCode::OffsetOutOfRange
                    | rdkafka::types::RDKafkaErrorCode::AutoOffsetReset
            )
        ),
        "{err}"
    );
}

/// (log start, high watermark) of a partition.
pub fn watermarks(topic: &str, partition: i32) -> (i64, i64) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .set("group.id", unique("marks"))
        .create()
        .expect("consumer");
    c.fetch_watermarks(topic, partition, Duration::from_secs(10))
        .expect("watermarks")
}

/// Scrapes `/metrics` from a running sluice.
pub fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut c) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(
        c,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut t = String::new();
    let _ = c.read_to_string(&mut t);
    t
}

/// The value of one series (exact name and labels, as rendered) in a scrape.
pub fn metric(scraped: &str, series: &str) -> Option<f64> {
    scraped.lines().find_map(|l| {
        l.strip_prefix(series)
            .filter(|rest| rest.starts_with(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// A TCP forwarder to `upstream` that can be cut, to make a service unreachable mid-test.
pub struct Proxy {
    /// Where clients connect.
    pub addr: String,
    enabled: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    /// Starts forwarding.
    pub async fn start(upstream: &str) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("addr").to_string();
        let enabled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let upstream = upstream.to_string();
        let (en, cut_tx) = (enabled.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !en.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                let mut cut_rx = cut_tx.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Self { addr, enabled, cut }
    }

    /// Refuses new connections and drops open ones.
    pub fn cut(&self) {
        self.enabled
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|v| *v += 1);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.enabled
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A child process that is killed when the guard drops, so a failing test leaves no service
/// behind.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A GET of `path` from the service listening on `addr`: its status and body.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    Some((status, body))
}

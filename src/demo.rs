//! `sluice demo`: the whole path on one machine with no external service. librdkafka's
//! in-process mock cluster stands in for Kafka, a local directory for the lake.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice_lake::deltalake::arrow::util::pretty::pretty_format_batches;
use tokio_util::sync::CancellationToken;

const PAGES: [&str; 6] = ["/", "/search", "/item", "/cart", "/checkout", "/help"];
/// 2026-01-01T12:00:00Z.
const BASE_MS: i64 = 1_767_268_800_000;

/// What the generator produced.
struct Produced {
    valid: u64,
    malformed: u64,
    late: u64,
}

/// Runs the demo: `events` clicks into a lake under `dir`.
pub async fn run(dir: Option<PathBuf>, events: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = prepare_dir(dir)?;
    let cluster = MockCluster::new(1).context("starting librdkafka's mock cluster")?;
    cluster
        .create_topic("clicks", 3, 1)
        .context("creating the topic")?;
    let brokers = cluster.bootstrap_servers();

    let produced = generate(&brokers, events).await?;
    println!(
        "produced {} clicks to topic `clicks` (3 partitions): {} valid, {} malformed, {} sent minutes late",
        produced.valid + produced.malformed,
        produced.valid,
        produced.malformed,
        produced.late
    );
    let config_text = config_text(&brokers, &dir);
    let path = dir.join("sluice-demo.toml");
    std::fs::write(&path, &config_text)?;
    let cfg = sluice_config::Config::from_toml_with_env(
        &config_text,
        &path,
        Vec::<(String, String)>::new(),
    )?;
    let lake = sluice_lake::Lake::new(&cfg.lake)?;
    ingest(&cfg, &lake, &produced, started).await?;
    compact_and_tier(&cfg, &lake, &brokers).await?;
    print_results(&cfg, &lake).await?;
    println!(
        "\nThe lake is in {dir}: plain Delta tables (DuckDB, Polars, Spark and delta-rs read them).\nQuery it again with: sluice query --config {cfg} \"SELECT page, sum(views) FROM clicks_per_minute GROUP BY page\"\n(kafka.clicks needs the demo's in-process broker, which is gone now). Done in {:.1}s.",
        started.elapsed().as_secs_f64(),
        dir = dir.display(),
        cfg = path.display()
    );
    Ok(())
}

/// The demo's lake directory (default `./sluice-demo-lake`), emptied.
fn prepare_dir(dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = match dir {
        Some(d) => d,
        None => std::env::current_dir()?.join("sluice-demo-lake"),
    };
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    println!(
        "sluice demo: an in-process Kafka (librdkafka's mock cluster) and a lake in {}",
        dir.display()
    );
    Ok(dir)
}

/// The demo's config: one windowed pipeline and the topic tiered.
fn config_text(brokers: &str, dir: &std::path::Path) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "sluice-demo"
[lake]
root = "{root}"
[[pipeline]]
name = "clicks"
topics = ["clicks"]
table = "clicks"
schema = [
  {{ name = "user_id", type = "string", nullable = false }},
  {{ name = "page", type = "string" }},
  {{ name = "amount", type = "double" }},
  {{ name = "ts", type = "timestamp" }},
]
event_time = {{ field = "ts", format = "rfc3339" }}
partition_by = ["event_date"]
flush = {{ max_rows = 5000, max_latency = "1s" }}
idle_timeout = "5m"
[[pipeline.aggregate]]
table = "clicks_per_minute"
window = {{ kind = "tumbling", size = "1m" }}
grace = "30s"
group_by = ["page"]
aggregates = ["count(*) AS views", "sum(amount) AS revenue", "count_distinct(user_id) AS users"]
late_table = "clicks_late"
[[tiering]]
topic = "clicks"
archive_table = "archive_clicks"
hot_retention = "1h"
[maintenance]
target_file_size = "64MiB"
[server]
listen = ""
"#,
        root = dir.display()
    )
}

/// Runs the pipeline until it has committed what was produced, printing its progress.
async fn ingest(
    cfg: &sluice_config::Config,
    lake: &sluice_lake::Lake,
    produced: &Produced,
    started: Instant,
) -> anyhow::Result<()> {
    println!(
        "ingesting: decode, event time, 1-minute windows with 30s grace, exactly-once commits ..."
    );
    let pipeline = sluice_ingest::Pipeline::open(cfg, &cfg.pipelines[0], lake).await?;
    let cancel = CancellationToken::new();
    let task = tokio::spawn(pipeline.run(
        sluice_ingest::RunOptions {
            until_caught_up: true,
        },
        cancel.clone(),
    ));
    let total = (produced.valid + produced.malformed) as f64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(task);
    let summary = loop {
        tokio::select! {
            done = &mut task => break done.context("the pipeline task failed")??,
            _ = tick.tick() => {
                let n = sluice_telemetry::spec::RECORDS_IN.value(["clicks"]).unwrap_or(0.0);
                println!("  {:>6.0} / {total:.0} records ({:.0}%)", n, 100.0 * n / total.max(1.0));
            }
        }
    };
    println!(
        "ingested {} records in {:.1}s: {} events, {} dead letters, {} aggregate rows, {} late",
        summary.records,
        started.elapsed().as_secs_f64(),
        summary.events,
        summary.dead_letters,
        summary.aggregate_rows,
        summary.late_rows
    );

    Ok(())
}

/// Compacts the events table, archives the topic, and produces fresh clicks that stay hot.
async fn compact_and_tier(
    cfg: &sluice_config::Config,
    lake: &sluice_lake::Lake,
    brokers: &str,
) -> anyhow::Result<()> {
    let report = sluice_compaction::compact(
        lake,
        "clicks",
        cfg.maintenance.target_file_size.bytes(),
        &[],
    )
    .await?;
    println!(
        "compacted clicks: {} files -> {} files",
        report.before.files, report.after.files
    );
    // Tiering: every click carries its event time as Kafka timestamp, so all of them are
    // older than the one-hour hot window: archive them, then trim the broker.
    // librdkafka's mock cluster has no DeleteRecords (and no topic settings to check): the
    // demo archives and leaves the broker as it is. Against Apache Kafka, the same round then
    // moves each partition's log start up to its boundary, less the hot window.
    let opts = sluice_tiering::TierOptions {
        check_topic_settings: false,
        delete_records: false,
    };
    let mut tierer = sluice_tiering::Tierer::open_with(cfg, &cfg.tiering[0], lake, opts).await?;
    let round = tierer.round().await?;
    println!(
        "tiered topic clicks: {} records archived into archive_clicks up to the boundaries {} (the in-process broker cannot delete records; Apache Kafka would now drop them)",
        round.archived,
        round
            .partitions
            .values()
            .map(|p| p.boundary.to_string())
            .collect::<Vec<_>>()
            .join("/")
    );
    let fresh = 300;
    let producer = producer_for(brokers)?;
    for i in 0..fresh {
        let now = chrono::Utc::now().timestamp_millis();
        send(
            &producer,
            i % 3,
            format!(
                r#"{{"user_id":"u{i}","page":"/","amount":1,"ts":"{}"}}"#,
                rfc3339(now)
            ),
            Some(now),
        )
        .await?;
    }
    println!("produced {fresh} fresh clicks: they stay in the broker (the hot tier)");

    Ok(())
}

/// Queries the windows, then counts the rows of every destination.
async fn print_results(
    cfg: &sluice_config::Config,
    lake: &sluice_lake::Lake,
) -> anyhow::Result<()> {
    let session =
        sluice_query::QuerySession::for_config(cfg, lake, sluice_query::AsOf::Latest).await?;
    let rows = session
        .sql("SELECT window_start, page, views, round(revenue, 2) AS revenue, users FROM clicks_per_minute ORDER BY window_start, page LIMIT 12")
        .await?;
    println!(
        "\nSELECT window_start, page, views, revenue, users FROM clicks_per_minute (first 12 rows):"
    );
    println!("{}", pretty_format_batches(&rows)?);
    println!("\nrows per destination:");
    for table in [
        "clicks",
        "clicks_dead_letter",
        "clicks_late",
        "clicks_per_minute",
        "archive_clicks",
        "kafka.clicks",
    ] {
        let batches = session
            .sql(&format!("SELECT count(*) AS n FROM {table}"))
            .await?;
        let n = batches
            .first()
            .and_then(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<sluice_lake::deltalake::arrow::array::Int64Array>()
                    .map(|a| a.value(0))
            })
            .unwrap_or(0);
        let note = if table == "kafka.clicks" {
            "  (the topic as one table: archive + broker)"
        } else {
            ""
        };
        println!("  {table:<20} {n:>8}{note}");
    }
    Ok(())
}

/// Produces `n` clicks, out of order, with some late and some malformed.
fn producer_for(brokers: &str) -> anyhow::Result<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("creating the demo producer")
}

async fn generate(brokers: &str, n: u64) -> anyhow::Result<Produced> {
    let producer = producer_for(brokers)?;
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut p = Produced {
        valid: 0,
        malformed: 0,
        late: 0,
    };
    let mut pending = Vec::with_capacity(n as usize + 3);
    let span_ms = 10 * 60_000; // ten minutes of event time
    for i in 0..n {
        let r = next();
        let mut t = BASE_MS + (i as i64 * span_ms) / n as i64 + (r % 20_000) as i64 - 10_000;
        let partition = (i % 3) as i32;
        let value = if r % 200 == 7 {
            p.malformed += 1;
            match r % 3 {
                0 => r#"{"user_id": "u1", "page": "/"#.to_string(),
                1 => format!(r#"{{"page":"/","ts":"{}"}}"#, rfc3339(t)),
                _ => r#"{"user_id":"u1","ts":"yesterday"}"#.to_string(),
            }
        } else {
            if r % 150 == 11 && i > n / 2 {
                t -= 4 * 60_000; // four minutes behind: past its window's grace
                p.late += 1;
            }
            p.valid += 1;
            let page = PAGES[(r % PAGES.len() as u64) as usize];
            format!(
                r#"{{"user_id":"u{}","page":"{page}","amount":{:.2},"ts":"{}"}}"#,
                r % 500,
                (r % 10_000) as f64 / 100.0,
                rfc3339(t)
            )
        };
        pending.push(send(&producer, partition, value, Some(t)));
    }
    // One click far ahead on every partition moves the clock past the last window.
    for partition in 0..3 {
        p.valid += 1;
        pending.push(send(
            &producer,
            partition,
            format!(
                r#"{{"user_id":"u0","page":"/","amount":0,"ts":"{}"}}"#,
                rfc3339(BASE_MS + 3_600_000)
            ),
            Some(BASE_MS + 3_600_000),
        ));
    }
    for f in pending {
        f.await?;
    }
    Ok(p)
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Enqueues one record now (not when awaited) and returns its delivery.
fn send(
    producer: &FutureProducer,
    partition: i32,
    value: String,
    timestamp: Option<i64>,
) -> impl std::future::Future<Output = anyhow::Result<()>> + use<> {
    let mut record = FutureRecord::<(), String>::to("clicks")
        .partition(partition)
        .payload(&value);
    if let Some(ts) = timestamp {
        record = record.timestamp(ts);
    }
    let delivery = loop {
        match producer.send_result(record) {
            Ok(d) => break Ok(d),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                r,
            )) => {
                producer.poll(Duration::from_millis(10));
                record = r;
            }
            Err((e, _)) => break Err(anyhow::anyhow!("producing to the mock cluster: {e}")),
        }
    };
    async move {
        delivery?
            .await
            .map_err(|_| anyhow::anyhow!("the mock cluster dropped a delivery"))?
            .map_err(|(e, _)| anyhow::anyhow!("producing to the mock cluster: {e}"))?;
        Ok(())
    }
}

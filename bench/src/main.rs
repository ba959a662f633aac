//! `sluice-bench`: sluice end to end against a real broker, next to the limits of its stages.
//!
//! `throughput` produces N events, then times a consume-only loop, JSON-to-Arrow decoding
//! alone, Parquet encoding alone, `sluice run --until-caught-up`, archiving (`sluice tier
//! --once`) and replaying the archive through the unified log. `freshness` produces at a fixed
//! rate and measures produce-to-queryable latency. `soak` produces at a fixed rate for minutes
//! and samples the process's memory. Every run writes JSON and markdown under `--out`, with
//! the machine, the commit and the exact command.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde_json::{Value, json};
use sluice_bench::{config_text, config_text_with, event_json, raw_batch, write_results};

mod changelog;
mod formats;
mod scale;

#[derive(Parser)]
#[command(name = "sluice-bench", about = "sluice's benchmark harness")]
struct Cli {
    /// Bootstrap servers of the broker to use.
    #[arg(long, default_value = "127.0.0.1:19092", global = true)]
    brokers: String,
    /// The sluice binary to measure (build it with --release).
    #[arg(long, global = true)]
    sluice: Option<PathBuf>,
    /// Where results go.
    #[arg(long, default_value = "bench/results", global = true)]
    out: PathBuf,
    /// Where the lake goes (cleared first).
    #[arg(long, default_value = "/tmp/sluice-bench-lake", global = true)]
    lake: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// End-to-end throughput and the stage limits, then archive and replay.
    Throughput {
        /// Events to produce.
        #[arg(long, default_value_t = 5_000_000)]
        events: u64,
        /// Partitions of the topic.
        #[arg(long, default_value_t = 3)]
        partitions: i32,
    },
    /// The same events as JSON and as Avro (schema in the registry), side by side: decode
    /// alone and end to end.
    Formats {
        /// Events to produce in each format.
        #[arg(long, default_value_t = 2_000_000)]
        events: u64,
        /// Partitions of each topic.
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        /// The schema registry's Confluent-compatible API.
        #[arg(long, default_value = "http://127.0.0.1:18081/apis/ccompat/v7")]
        registry: String,
    },
    /// An upsert pipeline over a keyed topic of changes (one in ten a tombstone).
    Changelog {
        /// Changes to produce.
        #[arg(long, default_value_t = 1_000_000)]
        changes: u64,
        /// Distinct keys they change.
        #[arg(long, default_value_t = 100_000)]
        keys: u64,
        /// Partitions of the topic.
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        /// The pipeline's `flush.max_rows`.
        #[arg(long, default_value_t = 200_000)]
        max_rows: u64,
        /// How flushes are applied: `rewrite`, `merge`, or `both` (one run each).
        #[arg(long, default_value = "both")]
        apply: String,
    },
    /// Produce-to-queryable latency at a fixed rate.
    Freshness {
        /// Events per second.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// How long to produce.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Windowed throughput (`clock = "partition"`) with 1, 2, ... instances on this machine.
    Windows {
        /// Events to produce.
        #[arg(long, default_value_t = 2_000_000)]
        events: u64,
        /// Partitions of the topic.
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        /// The most instances to run at once.
        #[arg(long, default_value_t = 3)]
        instances: usize,
    },
    /// Memory over a long run at a fixed rate.
    Soak {
        /// Events per second.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// How long to produce.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let sluice = match &cli.sluice {
        Some(p) => p.clone(),
        None => default_sluice()?,
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    std::fs::create_dir_all(&cli.out)?;
    let (name, results) = match cli.command {
        Cmd::Throughput { events, partitions } => (
            "throughput",
            throughput(&cli.brokers, &sluice, &cli.lake, events, partitions).await?,
        ),
        Cmd::Formats {
            events,
            partitions,
            registry,
        } => (
            "formats",
            formats::formats(
                &cli.brokers,
                &registry,
                &sluice,
                &cli.lake,
                events,
                partitions,
            )
            .await?,
        ),
        Cmd::Changelog {
            changes,
            keys,
            partitions,
            max_rows,
            apply,
        } => (
            "changelog",
            changelog::changelog(
                &cli.brokers,
                &sluice,
                &cli.lake,
                changes,
                keys,
                partitions,
                max_rows,
                &apply,
            )
            .await?,
        ),
        Cmd::Freshness { rate, seconds } => (
            "freshness",
            freshness(&cli.brokers, &sluice, &cli.lake, rate, seconds).await?,
        ),
        Cmd::Windows {
            events,
            partitions,
            instances,
        } => (
            "windows",
            scale::windows(
                &cli.brokers,
                &sluice,
                &cli.lake,
                events,
                partitions,
                instances,
            )
            .await?,
        ),
        Cmd::Soak { rate, minutes } => (
            "soak",
            soak(&cli.brokers, &sluice, &cli.lake, rate, minutes).await?,
        ),
    };
    write_results(&cli.out, name, &command, &sluice, results)
}

fn default_sluice() -> anyhow::Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let p = target.join("release/sluice");
    if !p.exists() {
        bail!(
            "{} does not exist: build it with `cargo build --release` or pass --sluice",
            p.display()
        );
    }
    Ok(p)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", chrono::Utc::now().format("%Y%m%d-%H%M%S"))
}

async fn create_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1))
        .set("retention.ms", "-1")
        .set("retention.bytes", "-1");
    for r in admin.create_topics([&t], &AdminOptions::new()).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("creating topic {t}: {e}"))?;
    }
    Ok(())
}

fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "2000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()?)
}

/// Sends one record, waiting while the producer queue is full; returns the delivery future.
fn send(
    p: &FutureProducer,
    topic: &str,
    partition: i32,
    value: &[u8],
    ts: i64,
) -> rdkafka::producer::DeliveryFuture {
    let mut rec = FutureRecord::<(), [u8]>::to(topic)
        .partition(partition)
        .payload(value)
        .timestamp(ts);
    loop {
        match p.send_result(rec) {
            Ok(f) => return f,
            Err((_, back)) => {
                p.poll(Duration::from_millis(5));
                rec = back;
            }
        }
    }
}

/// Produces `n` events as fast as the producer allows; returns (seconds, JSON bytes).
async fn produce_all(
    brokers: &str,
    topic: &str,
    n: u64,
    partitions: i32,
    encode: impl Fn(u64, i64) -> Vec<u8>,
) -> anyhow::Result<(f64, u64)> {
    let p = producer(brokers)?;
    let started = Instant::now();
    let base = chrono::Utc::now().timestamp_millis() - 86_400_000;
    let step = (86_400_000 / n.max(1) as i64).max(1);
    let mut bytes = 0u64;
    let mut pending = Vec::with_capacity(100_000);
    for i in 0..n {
        let ts = base + i as i64 * step;
        let v = encode(i, ts);
        bytes += v.len() as u64;
        pending.push(send(&p, topic, (i % partitions as u64) as i32, &v, ts));
        if pending.len() == 100_000 {
            for f in pending.drain(..) {
                f.await?
                    .map_err(|(e, _)| anyhow::anyhow!("delivery: {e}"))?;
            }
            eprint!("\rproduced {}/{n}", i + 1);
        }
    }
    for f in pending.drain(..) {
        f.await?
            .map_err(|(e, _)| anyhow::anyhow!("delivery: {e}"))?;
    }
    p.flush(Duration::from_secs(30))?;
    eprintln!("\rproduced {n}/{n}");
    Ok((started.elapsed().as_secs_f64(), bytes))
}

/// Consumes every partition from 0 to its end and drops the records; returns seconds.
fn consume_only(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<(f64, u64)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("bench-consume"))
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("queued.max.messages.kbytes", "65536")
        // As sluice's consumer: with librdkafka's default (1 s) a full prefetch queue pauses
        // fetching long enough to make this bar vary by 2x between runs.
        .set("fetch.queue.backoff.ms", "20")
        .create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)?;
        ends.insert(p, c.fetch_watermarks(topic, p, Duration::from_secs(10))?.1);
    }
    c.assign(&tpl)?;
    let started = Instant::now();
    let mut n = 0u64;
    let mut bytes = 0u64;
    while !ends.is_empty() {
        if let Some(m) = c.poll(Duration::from_millis(500)) {
            use rdkafka::Message as _;
            let m = m?;
            n += 1;
            bytes += m.payload().map_or(0, |p| p.len()) as u64;
            if let Some(end) = ends.get(&m.partition())
                && m.offset() + 1 >= *end
            {
                ends.remove(&m.partition());
            }
        }
    }
    eprintln!("consume-only read {:.1} MB of values", bytes as f64 / 1e6);
    Ok((started.elapsed().as_secs_f64(), n))
}

/// Peak and current RSS of a process in bytes (VmHWM, VmRSS).
fn memory_of(pid: u32) -> Option<(u64, u64)> {
    let [hwm, rss] = status_bytes(pid, ["VmHWM:", "VmRSS:"])?;
    Some((hwm, rss))
}

/// Fields of `/proc/<pid>/status` given in kB, in bytes.
fn status_bytes<const N: usize>(pid: u32, names: [&str; N]) -> Option<[u64; N]> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let kb: u64 = s
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb * 1024)
    };
    let mut out = [0; N];
    for (o, n) in out.iter_mut().zip(names) {
        *o = field(n)?;
    }
    Some(out)
}

/// The child processes of `pid` (Linux).
fn children_of(pid: u32) -> Vec<u32> {
    // Each thread lists the children it started.
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|c| c.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// One gauge's value from the Prometheus text at `http://{addr}/metrics` (`None` when the
/// service does not answer or has no such gauge).
async fn scrape_gauge(addr: &str, name: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
            .await
            .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await.ok()?;
        Some(text)
    };
    let text = tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .ok()??;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn spawn_sluice(sluice: &Path, args: &[&str], config: &Path) -> anyhow::Result<Child> {
    Command::new(sluice)
        .args(args)
        .arg("--config")
        .arg(config)
        // BENCH_SLUICE_LOG=sluice_ingest::pipeline=debug shows where each flush's time goes.
        .env(
            "SLUICE_LOG",
            std::env::var("BENCH_SLUICE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", sluice.display()))
}

/// Waits for a child, sampling its memory every `every` (its exit is seen within 5 ms, so the
/// time is not rounded up to the sampling period); returns (seconds, peak RSS, RSS samples).
fn wait_sampling(child: &mut Child, every: Duration) -> anyhow::Result<(f64, u64, Vec<u64>)> {
    let started = Instant::now();
    let mut peak = 0;
    let mut samples = Vec::new();
    let mut next_sample = started;
    loop {
        if Instant::now() >= next_sample {
            if let Some((hwm, rss)) = memory_of(child.id()) {
                peak = peak.max(hwm);
                samples.push(rss);
            }
            next_sample += every;
        }
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("sluice exited with {status}");
            }
            return Ok((started.elapsed().as_secs_f64(), peak, samples));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn fresh_lake(lake: &Path) -> anyhow::Result<()> {
    if lake.exists() {
        std::fs::remove_dir_all(lake)?;
    }
    std::fs::create_dir_all(lake)?;
    Ok(())
}

async fn throughput(
    brokers: &str,
    sluice: &Path,
    lake: &Path,
    events: u64,
    partitions: i32,
) -> anyhow::Result<Value> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    fresh_lake(lake)?;
    let topic = unique("bench");
    create_topic(brokers, &topic, partitions).await?;
    eprintln!("producing {events} events into {topic} ...");
    let (produce_s, json_bytes) =
        produce_all(brokers, &topic, events, partitions, event_json).await?;
    let mb = json_bytes as f64 / 1e6;

    eprintln!("consume-only ...");
    let (b, t) = (brokers.to_string(), topic.clone());
    let (consume_s, consumed) =
        tokio::task::spawn_blocking(move || consume_only(&b, &t, partitions)).await??;
    if consumed != events {
        bail!("the consume-only loop read {consumed} records, not {events}");
    }

    eprintln!("decode alone and encode alone ...");
    let stage_n = events.min(1_000_000) as usize;
    let (decode_s, general_s, encode_s, encoded_bytes, avro_s) =
        tokio::task::spawn_blocking(move || stages(stage_n)).await??;

    eprintln!("sluice run --until-caught-up ...");
    let config = lake.join("bench.toml");
    std::fs::write(
        &config,
        config_text(
            brokers,
            &unique("bench-group"),
            &lake.display().to_string(),
            &topic,
            "flush = { max_rows = 1000000, max_bytes = \"128MiB\", max_latency = \"10s\" }",
        ),
    )?;
    let mut child = spawn_sluice(sluice, &["run", "--until-caught-up"], &config)?;
    let (e2e_s, peak_rss, _) = wait_sampling(&mut child, Duration::from_millis(100))?;
    let cfg = sluice_config::Config::load(&config)?;
    let lake_h = sluice_lake::Lake::new(&cfg.lake)?;
    let table = lake_h.open("events").await?.context("no events table")?;
    let rows = sluice_lake::table_row_count("events", &table).await?;
    if rows != events {
        bail!("the events table has {rows} rows, not {events}");
    }
    let files = sluice_compaction::file_stats("events", &table)?;

    eprintln!("sluice tier --once, then a replay of the archive ...");
    let tier_config = lake.join("tier.toml");
    let mut text = std::fs::read_to_string(&config)?;
    text.push_str(&format!(
        "\n[[tiering]]\ntopic = \"{topic}\"\narchive_table = \"archive\"\nhot_retention = \"3650d\"\nmax_records_per_round = 100000000\n"
    ));
    std::fs::write(&tier_config, text)?;
    let mut child = spawn_sluice(sluice, &["tier", "--once"], &tier_config)?;
    let (tier_s, tier_rss, _) = wait_sampling(&mut child, Duration::from_millis(100))?;
    let tcfg = sluice_config::Config::load(&tier_config)?;
    let log = sluice_tiering::UnifiedLog::new(&tcfg, &lake_h, &topic)?.with_headers(false);
    let started = Instant::now();
    let (replayed, from_archive) = replay_archive(&log, partitions).await?;
    let replay_s = started.elapsed().as_secs_f64();
    if replayed != events || from_archive != events {
        bail!("the replay read {replayed} records ({from_archive} from the archive), not {events}");
    }

    eprintln!("sluice log read (JSON lines) of the archived topic ...");
    let (log_read_s, printed) = log_read(sluice, &tier_config, &topic)?;
    if printed != events {
        bail!("sluice log read printed {printed} records, not {events}");
    }

    let rate = |s: f64| events as f64 / s;
    Ok(json!({
        "events": events,
        "partitions": partitions,
        "json_bytes": json_bytes,
        "cores": cores,
        "produce": { "seconds": produce_s, "records_per_s": rate(produce_s) },
        "consume_only": { "seconds": consume_s, "records_per_s": rate(consume_s), "mb_per_s": mb / consume_s },
        "decode_only": { "records": stage_n, "seconds": decode_s, "records_per_s": stage_n as f64 / decode_s, "mb_per_s": (mb * stage_n as f64 / events as f64) / decode_s },
        "decode_only_arrow_json": { "records": stage_n, "seconds": general_s, "records_per_s": stage_n as f64 / general_s },
        "decode_only_avro": { "records": stage_n, "seconds": avro_s, "records_per_s": stage_n as f64 / avro_s },
        "parquet_encode_only": { "records": stage_n, "seconds": encode_s, "records_per_s": stage_n as f64 / encode_s, "compressed_bytes": encoded_bytes },
        "end_to_end": {
            "seconds": e2e_s,
            "records_per_s": rate(e2e_s),
            "mb_per_s": mb / e2e_s,
            "records_per_s_per_core": rate(e2e_s) / cores,
            "share_of_consume_only": consume_s / e2e_s,
            "peak_rss_mb": peak_rss as f64 / 1e6,
            "files": files.files,
            "bytes": files.bytes,
            "rows": rows,
        },
        "archive": { "seconds": tier_s, "records_per_s": rate(tier_s), "peak_rss_mb": tier_rss as f64 / 1e6 },
        "replay_from_archive": { "seconds": replay_s, "records_per_s": rate(replay_s), "vs_broker_consume": consume_s / replay_s },
        "log_read_json": { "seconds": log_read_s, "records_per_s": rate(log_read_s) },
    }))
}

/// `sluice log read` of the whole topic as JSON lines into a pipe this process drains:
/// (seconds, lines printed).
fn log_read(sluice: &Path, config: &Path, topic: &str) -> anyhow::Result<(f64, u64)> {
    use std::io::Read;
    let started = Instant::now();
    let mut child = Command::new(sluice)
        .args(["log", "read", "--topic", topic, "--config"])
        .arg(config)
        .env("SLUICE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting sluice log read")?;
    let mut out = child.stdout.take().context("no stdout")?;
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0u64;
    loop {
        let n = out.read(&mut buf)?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("sluice log read exited with {status}");
    }
    Ok((started.elapsed().as_secs_f64(), lines))
}

/// Reads every partition of the archived topic at once, as the consume-only loop reads them
/// (and as a backfill does): (records read, of which from the archive).
async fn replay_archive(
    log: &sluice_tiering::UnifiedLog,
    partitions: i32,
) -> anyhow::Result<(u64, u64)> {
    let mut readers = Vec::new();
    for p in 0..partitions {
        let log = log.clone();
        readers.push(tokio::spawn(async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel(8);
            let counter = tokio::spawn(async move {
                let mut n = 0u64;
                while let Some(b) = rx.recv().await {
                    let b: sluice_kafka::RawBatch = b;
                    n += b.len() as u64;
                }
                n
            });
            let stats = log
                .read(
                    p,
                    sluice_tiering::LogStart::Offset(0),
                    sluice_tiering::LogEnd::End,
                    &tx,
                    &tokio_util::sync::CancellationToken::new(),
                )
                .await?;
            drop(tx);
            anyhow::Ok((counter.await?, stats.from_archive))
        }));
    }
    let mut replayed = 0u64;
    let mut from_archive = 0u64;
    for r in readers {
        let (n, a) = r.await??;
        replayed += n;
        from_archive += a;
    }
    Ok((replayed, from_archive))
}

/// Decode alone and Parquet encode alone over `n` generated records (one thread each).
/// Decoding alone (the fast path, then arrow-json's for comparison) and encoding alone, one
/// thread each: (decode s, arrow-json decode s, encode s, encoded bytes).
fn stages(n: usize) -> anyhow::Result<(f64, f64, f64, u64, f64)> {
    let cfg = sluice_bench::pipeline_config()?;
    let p = &cfg.pipelines[0];
    let schema = sluice_formats::schema::events_schema(p);
    let mut decoder =
        sluice_formats::JsonDecoder::new(p, schema.clone()).map_err(|e| anyhow::anyhow!(e))?;
    let batches: Vec<_> = (0..n.div_ceil(10_000))
        .map(|i| raw_batch(10_000.min(n - i * 10_000), (i * 10_000) as u64))
        .collect();
    decoder.set_fast_path(false);
    let started = Instant::now();
    for b in &batches {
        black_box(decoder.decode(b).map_err(|e| anyhow::anyhow!(e))?);
    }
    let general_s = started.elapsed().as_secs_f64();
    decoder.set_fast_path(true);
    let started = Instant::now();
    let mut decoded = Vec::with_capacity(batches.len());
    for b in &batches {
        let d = decoder.decode(b).map_err(|e| anyhow::anyhow!(e))?;
        decoded.extend(d.events);
    }
    let decode_s = started.elapsed().as_secs_f64();
    let avro_s = formats::avro_decode_only(n)?;
    // The properties the events table's files are written with.
    let props = sluice_lake::WriterOptions {
        compression: p.compression,
        ..Default::default()
    }
    .parquet_properties();
    let started = Instant::now();
    let mut sink = Vec::new();
    {
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut sink, schema, Some(props))?;
        for b in &decoded {
            w.write(b)?;
        }
        w.close()?;
    }
    Ok((
        decode_s,
        general_s,
        started.elapsed().as_secs_f64(),
        sink.len() as u64,
        avro_s,
    ))
}

/// Committed next offset per partition of the events table (its `txn` versions).
async fn committed(
    lake: &sluice_lake::Lake,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<Vec<i64>> {
    let mut out = vec![0; partitions as usize];
    if let Some(t) = lake.open("events").await? {
        for p in 0..partitions {
            let app = sluice_lake::progress_app_id("bench", topic, p);
            out[p as usize] = sluice_lake::committed_progress("events", &t, &app)
                .await?
                .unwrap_or(0);
        }
    }
    Ok(out)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Produces at `rate` per second for `seconds`, paced in 10 ms steps; returns the
/// (partition, offset, send time in ms) of every record.
async fn produce_paced(
    brokers: &str,
    topic: &str,
    partitions: i32,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<Vec<(i32, i64, i64)>> {
    let p = Arc::new(producer(brokers)?);
    let total = rate * seconds;
    let started = Instant::now();
    let mut futs = Vec::new();
    let mut i = 0u64;
    while i < total {
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while i < due.min(total) {
            let now = chrono::Utc::now().timestamp_millis();
            let v = event_json(i, now);
            let part = (i % partitions as u64) as i32;
            futs.push((now, send(&p, topic, part, &v, now)));
            i += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut out = Vec::with_capacity(futs.len());
    for (sent, f) in futs {
        let d = f
            .await?
            .map_err(|(e, _)| anyhow::anyhow!("delivery: {e}"))?;
        out.push((d.partition, d.offset, sent));
    }
    Ok(out)
}

/// A fresh lake and a 3-partition topic, and `sluice run` reading it with `max_latency`.
async fn start_service(
    brokers: &str,
    sluice: &Path,
    lake: &Path,
    name: &str,
    max_latency: &str,
    maintenance: &str,
    listen: &str,
) -> anyhow::Result<(String, PathBuf, Child)> {
    fresh_lake(lake)?;
    let topic = unique(name);
    create_topic(brokers, &topic, 3).await?;
    let config = lake.join("bench.toml");
    std::fs::write(
        &config,
        config_text_with(
            brokers,
            &unique(&format!("{name}-group")),
            &lake.display().to_string(),
            &topic,
            &format!(
                "flush = {{ max_rows = 1000000, max_bytes = \"128MiB\", max_latency = \"{max_latency}\" }}"
            ),
            maintenance,
        )
        .replace("listen = \"\"", &format!("listen = \"{listen}\"")),
    )?;
    let child = spawn_sluice(sluice, &["run"], &config)?;
    Ok((topic, config, child))
}

async fn freshness(
    brokers: &str,
    sluice: &Path,
    lake: &Path,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<Value> {
    let partitions = 3;
    let (topic, config, mut child) = start_service(
        brokers,
        sluice,
        lake,
        "fresh",
        "1s",
        "compact_interval = \"0s\"",
        "",
    )
    .await?;
    let cfg = sluice_config::Config::load(&config)?;
    let lake_h = sluice_lake::Lake::new(&cfg.lake)?;
    // Wait until the pipeline has created its table and joined the group.
    tokio::time::sleep(Duration::from_secs(8)).await;
    // Poll the committed offsets every 100 ms: a record is queryable from the first poll
    // that sees a committed offset above it.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let poller = {
        let lake_h = lake_h.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            let mut seen: Vec<(i64, Vec<i64>)> = Vec::new();
            loop {
                let now = chrono::Utc::now().timestamp_millis();
                if let Ok(c) = committed(&lake_h, &topic, partitions).await {
                    seen.push((now, c));
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stop_rx.changed() => break,
                }
            }
            seen
        })
    };
    eprintln!("producing {rate}/s for {seconds}s ...");
    let sent = produce_paced(brokers, &topic, partitions, rate, seconds).await?;
    // Let the last flush land.
    let last: Vec<i64> = {
        let mut ends = vec![0i64; partitions as usize];
        for (p, o, _) in &sent {
            ends[*p as usize] = ends[*p as usize].max(o + 1);
        }
        ends
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed(&lake_h, &topic, partitions).await? != last {
        if Instant::now() > deadline {
            bail!("sluice did not commit everything within a minute");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop_tx.send(true);
    let seen = poller.await?;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let mut lat: Vec<f64> = Vec::with_capacity(sent.len());
    for (p, o, t) in &sent {
        if let Some((when, _)) = seen.iter().find(|(_, c)| c[*p as usize] > *o) {
            lat.push((when - t) as f64 / 1000.0);
        }
    }
    if lat.len() != sent.len() {
        bail!(
            "{} of {} records were never seen committed",
            sent.len() - lat.len(),
            sent.len()
        );
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    Ok(json!({
        "rate": rate,
        "seconds": seconds,
        "records": sent.len(),
        "max_latency_setting": "1s",
        "poll_interval_ms": 100,
        "latency_s": {
            "p50": percentile(&lat, 0.50),
            "p90": percentile(&lat, 0.90),
            "p99": percentile(&lat, 0.99),
            "max": lat.last().copied().unwrap_or(f64::NAN),
        },
    }))
}

async fn soak(
    brokers: &str,
    sluice: &Path,
    lake: &Path,
    rate: u64,
    minutes: u64,
) -> anyhow::Result<Value> {
    let partitions = 3;
    // The default maintenance (compaction every 5 minutes), as a long-running service runs;
    // BENCH_SOAK_MAINTENANCE replaces the [maintenance] section's body (e.g. compaction off:
    // `compact_interval = "0s"`).
    let maintenance = std::env::var("BENCH_SOAK_MAINTENANCE").unwrap_or_default();
    // The service's /metrics gives the live heap next to RSS: growth of the program's data
    // against memory the allocator holds.
    let listen = "127.0.0.1:19391";
    let (topic, _config, child) =
        start_service(brokers, sluice, lake, "soak", "2s", &maintenance, listen).await?;
    let pid = child.id();
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        let started = Instant::now();
        let mut children_peak = 0u64;
        while let Some((_, rss)) = memory_of(pid) {
            let heap = scrape_gauge(listen, "sluice_heap_allocated_bytes").await;
            let [anon] = status_bytes(pid, ["RssAnon:"]).unwrap_or_default();
            samples.push((started.elapsed().as_secs_f64(), rss, heap, anon));
            // The maintenance child (`sluice compact`), while one runs.
            let children: u64 = children_of(pid)
                .iter()
                .filter_map(|c| memory_of(*c).map(|(_, rss)| rss))
                .sum();
            children_peak = children_peak.max(children);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        (samples, children_peak)
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    eprintln!("producing {rate}/s for {minutes} minutes ...");
    let sent = produce_paced(brokers, &topic, partitions, rate, minutes * 60).await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let mut child = child;
    let _ = child.wait();
    let (samples, children_peak) = sampler.await?;
    // What: 0 RSS, 1 live heap, 2 anonymous RSS (the binary's mapped pages left out).
    let window = |from: f64, to: f64, what: u8| -> f64 {
        let v: Vec<f64> = samples
            .iter()
            .filter(|(t, _, _, _)| *t >= from && *t < to)
            .filter_map(|(_, r, h, a)| match what {
                0 => Some(*r as f64),
                1 => *h,
                _ => Some(*a as f64),
            })
            .map(|b| b / 1e6)
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    // The first minute of producing (after 5 s of start-up) against the last one.
    let produce_end = 5.0 + (minutes * 60) as f64;
    let [first, heap_first, anon_first] = [0, 1, 2].map(|w| window(5.0, 65.0, w));
    let [last, heap_last, anon_last] =
        [0, 1, 2].map(|w| window(produce_end - 60.0, produce_end, w));
    let peak = samples.iter().map(|(_, r, _, _)| *r).max().unwrap_or(0) as f64 / 1e6;
    Ok(json!({
        "rate": rate,
        "minutes": minutes,
        "maintenance": if maintenance.is_empty() { "defaults (compaction every 5 minutes, a checkpoint every 10 commits)".to_string() } else { maintenance.clone() },
        "records": sent.len(),
        "rss_mb": {
            "first_minute_mean": first,
            "last_minute_mean": last,
            "change_percent": (last - first) / first * 100.0,
            "peak": peak,
            "maintenance_child_peak": children_peak as f64 / 1e6,
        },
        "anon_rss_mb": {
            "first_minute_mean": anon_first,
            "last_minute_mean": anon_last,
            "change_percent": (anon_last - anon_first) / anon_first * 100.0,
        },
        "heap_allocated_mb": {
            "first_minute_mean": heap_first,
            "last_minute_mean": heap_last,
            "change_percent": (heap_last - heap_first) / heap_first * 100.0,
        },
        // [seconds, RSS MB, live heap MB, anonymous RSS MB] every 10 s.
        "samples_mb": samples.iter().step_by(10).map(|(t, r, h, a)| json!([t.round(), (*r as f64 / 1e6).round(), h.map(|h| (h / 1e6).round()), (*a as f64 / 1e6).round()])).collect::<Vec<_>>(),
    }))
}

#[cfg(test)]
mod avro_tests {
    /// The hand-encoded Avro events decode, every one, with no dead letter (the measure
    /// checks both).
    #[test]
    fn the_avro_events_decode_without_dead_letters() {
        assert!(super::formats::avro_decode_only(2_500).expect("decode") > 0.0);
    }

    /// The generated JSON events decode with inferred columns, every one, into 10 columns.
    #[test]
    fn the_json_events_decode_with_inferred_columns() {
        assert!(super::formats::json_inferred_decode_only(2_500).expect("decode") > 0.0);
    }

    /// The hand-encoded Protobuf events decode, every one, with no dead letter.
    #[test]
    fn the_protobuf_events_decode_without_dead_letters() {
        assert!(super::formats::protobuf_decode_only(2_500).expect("decode") > 0.0);
    }
}

//! `sluice-bench windows`: windowed throughput with 1, 2, ... instances of one pipeline
//! (`clock = "partition"`) on this machine, each count from a fresh lake over the same topic.

use super::*;

/// The aggregate every run computes: views per page and minute, a clock per partition.
const AGGREGATE: &str = r#"flush = { max_rows = 1000000, max_bytes = "128MiB", max_latency = "2s" }

[[pipeline.aggregate]]
table = "per_page"
window = { kind = "tumbling", size = "1m" }
grace = "10s"
group_by = ["page"]
aggregates = ["count(*) AS views", "sum(amount) AS revenue", "avg(amount) AS mean_amount"]
clock = "partition"
"#;

/// Rows of `table`, 0 before it exists.
async fn table_rows(lake: &sluice_lake::Lake, table: &str) -> anyhow::Result<u64> {
    Ok(match lake.open(table).await? {
        Some(t) => sluice_lake::table_row_count(table, &t).await?,
        None => 0,
    })
}

/// One run: `instances` processes of `sluice run` over `topic` from a fresh lake, timed from
/// the first start until the events table holds every event and the aggregate table
/// `want_rows` rows (the single instance's count; `None` for that first run, which is done
/// when its aggregate table stops growing). Returns (seconds, aggregate rows, the largest
/// peak RSS of one instance in bytes).
async fn run_instances(
    brokers: &str,
    sluice: &Path,
    lake: &Path,
    topic: &str,
    events: u64,
    instances: usize,
    want_rows: Option<u64>,
) -> anyhow::Result<(f64, u64, u64)> {
    fresh_lake(lake)?;
    let config = lake.join("bench.toml");
    let text = config_text(
        brokers,
        &unique("bench-windows"),
        &lake.display().to_string(),
        topic,
        AGGREGATE,
    );
    std::fs::write(&config, text)?;
    let cfg = sluice_config::Config::load(&config)?;
    let lake_h = sluice_lake::Lake::new(&cfg.lake)?;
    let started = Instant::now();
    let mut children = Vec::new();
    for _ in 0..instances {
        children.push(spawn_sluice(sluice, &["run"], &config)?);
    }
    let mut last = (0u64, Instant::now());
    let mut peak_rss = 0;
    let outcome = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        for c in &mut children {
            if let Some(status) = c.try_wait()? {
                bail!("an instance exited with {status}");
            }
            if let Some((hwm, _)) = memory_of(c.id()) {
                peak_rss = peak_rss.max(hwm);
            }
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("{instances} instance(s) did not finish in 30 minutes");
        }
        if table_rows(&lake_h, "events").await? < events {
            continue;
        }
        let rows = table_rows(&lake_h, "per_page").await?;
        match want_rows {
            Some(want) if rows >= want => {
                break (started.elapsed().as_secs_f64(), rows);
            }
            Some(_) => {}
            // The single instance: done once the aggregate table has not grown for 3 s
            // after every event was committed (the time of its last growth counts).
            None if rows != last.0 => last = (rows, Instant::now()),
            None if last.1.elapsed() > Duration::from_secs(3) => {
                break ((last.1 - started).as_secs_f64(), rows);
            }
            None => {}
        }
    };
    for c in &mut children {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    }
    for c in &mut children {
        let _ = c.wait();
    }
    Ok((outcome.0, outcome.1, peak_rss))
}

/// Windowed throughput with 1 to `max_instances` instances over `events` events on
/// `partitions` partitions.
pub async fn windows(
    brokers: &str,
    sluice: &Path,
    lake: &Path,
    events: u64,
    partitions: i32,
    max_instances: usize,
) -> anyhow::Result<Value> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let topic = unique("bench-windows");
    create_topic(brokers, &topic, partitions).await?;
    eprintln!("producing {events} events into {topic} ...");
    produce_all(brokers, &topic, events, partitions, event_json).await?;
    let mut runs = serde_json::Map::new();
    let mut want = None;
    for n in 1..=max_instances {
        eprintln!("{n} instance(s) ...");
        let (seconds, rows, peak_rss) =
            run_instances(brokers, sluice, lake, &topic, events, n, want).await?;
        if let Some(w) = want
            && rows != w
        {
            bail!("{n} instances wrote {rows} aggregate rows, one wrote {w}");
        }
        want = Some(rows);
        runs.insert(
            format!("instances_{n}"),
            json!({
                "seconds": seconds,
                "records_per_s": events as f64 / seconds,
                "aggregate_rows": rows,
                "peak_rss_mb_per_instance": peak_rss as f64 / 1e6,
            }),
        );
    }
    Ok(json!({
        "events": events,
        "partitions": partitions,
        "cores": cores,
        "clock": "partition",
        "window": "tumbling 1m, 3 aggregates, group by page",
        "runs": runs,
    }))
}

//! Windows beyond one instance (docs/windows.md, "Windows across instances"): several
//! `sluice run` processes of one windowed pipeline, one SIGKILLed and one added mid-run, give
//! the aggregate rows of a single uninterrupted instance, row for row.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_lake::deltalake::arrow::util::pretty::pretty_format_batches;

use crate::support::*;

/// 2026-03-01T10:00:00Z.
const T0: i64 = 1_772_359_200_000;
const PARTITIONS: i32 = 6;

/// The pipeline of these tests: JSON records {id, k, v, ts}, an aggregate per key and
/// 1-second window with `clock` ("partition" or "topic"), in its own directory `name`.
fn config(
    dir: &std::path::Path,
    name: &str,
    topic: &str,
    group: &str,
    clock: &str,
) -> std::path::PathBuf {
    let mut lake = s3_lake();
    lake.root = format!("{}/{}", lake.root, unique(name));
    let text = format!(
        r#"{service}
[[pipeline]]
name = "counts"
topics = ["{topic}"]
table = "events"
schema = [
  {{ name = "id", type = "long", nullable = false }},
  {{ name = "k", type = "string" }},
  {{ name = "v", type = "long" }},
  {{ name = "ts", type = "timestamp" }},
]
event_time = {{ field = "ts", format = "rfc3339" }}
flush = {{ max_latency = "500ms" }}
# Generous against a loaded machine (a late renewal hands the lease over, safely, but the test
# expects the active instance to keep it while it runs).
standby_takeover = "10s"

[[pipeline.aggregate]]
table = "per_key"
late_table = "late"
window = {{ kind = "tumbling", size = "1s" }}
grace = "500ms"
group_by = ["k"]
aggregates = ["count(*) AS n", "sum(v) AS total", "avg(v) AS mean", "max(v) AS biggest"]
clock = "{clock}"
"#,
        service = service_sections(group, &lake),
    );
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    let path = sub.join("sluice.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Record `i`: key `k<i % 25>`, event time 20 ms per record with up to 300 ms of disorder
/// (less than the grace), and every 41st record 4 s behind (late where its partition's clock
/// has moved on) unless `on_time`.
fn record(i: u64, keyed: bool) -> TestRecord {
    record_with(i, keyed, false)
}

fn record_with(i: u64, keyed: bool, on_time: bool) -> TestRecord {
    let k = format!("k{}", i % 25);
    let mut t = T0 + i as i64 * 20 + ((i * 7919) % 300) as i64;
    if i % 41 == 40 && !on_time {
        t -= 4_000;
    }
    let ts = chrono::DateTime::from_timestamp_millis(t)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let value = format!(r#"{{"id":{i},"k":"{k}","v":{},"ts":"{ts}"}}"#, i % 100);
    TestRecord {
        // Keyed: Kafka's partitioner keeps each key in one partition. Unkeyed: spread.
        key: keyed.then(|| k.into_bytes()),
        partition: (!keyed).then_some((i % PARTITIONS as u64) as i32),
        value: Some(value.into_bytes()),
        ..Default::default()
    }
}

/// One record per partition an hour past everything: every partition's clock passes every
/// window of the test.
fn closers(n: u64) -> Vec<TestRecord> {
    let ts = chrono::DateTime::from_timestamp_millis(T0 + 3_600_000)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    (0..PARTITIONS)
        .map(|p| TestRecord {
            partition: Some(p),
            value: Some(
                format!(
                    r#"{{"id":{},"k":"closer","v":0,"ts":"{ts}"}}"#,
                    n + p as u64
                )
                .into_bytes(),
            ),
            ..Default::default()
        })
        .collect()
}

fn spawn(config: &std::path::Path, name: &str) -> Child {
    spawn_listening(config, name, "")
}

/// [`spawn`] with the service's HTTP server on `listen`.
fn spawn_listening(config: &std::path::Path, name: &str, listen: &str) -> Child {
    let log = std::fs::File::create(config.with_file_name(format!("{name}.log"))).unwrap();
    Command::new(sluice_bin())
        .args(["run", "--config"])
        .arg(config)
        .env("SLUICE_LOG", "info")
        .env("SLUICE__SERVER__LISTEN", listen)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn stop(mut child: Child) {
    signal(&child, Signal::SIGTERM);
    let status = child.wait().unwrap();
    assert!(status.success(), "sluice run exited with {status}");
}

async fn session(config: &std::path::Path) -> sluice_query::QuerySession {
    let cfg = sluice_config::Config::load(config).unwrap();
    let lake = sluice_lake::Lake::new(&cfg.lake).unwrap();
    sluice_query::QuerySession::for_config(&cfg, &lake, Default::default())
        .await
        .unwrap()
}

async fn text(config: &std::path::Path, sql: &str) -> String {
    let batches = session(config).await.sql(sql).await.unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

async fn count(config: &std::path::Path, sql: &str) -> usize {
    rows(&session(config).await.sql(sql).await.unwrap())
}

/// Waits until `sql` over `config`'s tables returns `want` rows; fails with the logs after
/// `limit`.
async fn wait_rows(config: &std::path::Path, sql: &str, want: usize, limit: Duration) {
    let start = Instant::now();
    loop {
        let got = count(config, sql).await;
        if got == want {
            return;
        }
        if start.elapsed() > limit {
            let dir = config.parent().unwrap();
            let mut logs = String::new();
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                if e.path().extension().is_some_and(|x| x == "log") {
                    let log = std::fs::read_to_string(e.path()).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(25).collect();
                    logs.push_str(&format!("--- {}\n", e.path().display()));
                    logs.extend(tail.into_iter().rev().map(|l| format!("{l}\n")));
                }
            }
            panic!("{sql}: {got} rows, waiting for {want}\n{logs}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Produces records `range` in slices of 250 with a pause between them.
async fn produce_slowly(topic: &str, range: std::ops::Range<u64>, keyed: bool) {
    let ids: Vec<u64> = range.collect();
    for slice in ids.chunks(250) {
        produce(topic, slice.iter().map(|i| record(*i, keyed))).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Three instances with per-partition clocks, one SIGKILLed and one added while records
/// flow; then a single instance over the same topic from scratch as the reference. Returns
/// the two configs (the instances', the reference's).
async fn three_instances_and_a_reference(
    dir: &std::path::Path,
    keyed: bool,
) -> (std::path::PathBuf, std::path::PathBuf) {
    const N: u64 = 6_000;
    let topic = unique(if keyed { "inst-keyed" } else { "inst-spread" });
    create_topic(&topic, PARTITIONS).await;
    let shared = config(dir, "shared", &topic, &unique("inst"), "partition");
    let a = spawn(&shared, "a");
    let b = spawn(&shared, "b");
    let c = spawn(&shared, "c");
    produce_slowly(&topic, 0..N / 2, keyed).await;
    wait_rows(
        &shared,
        "SELECT id FROM events WHERE id < 1000",
        1000,
        Duration::from_secs(120),
    )
    .await;
    let mut b = b;
    b.kill().unwrap(); // SIGKILL
    b.wait().unwrap();
    produce_slowly(&topic, N / 2..N * 3 / 4, keyed).await;
    let metrics = format!("127.0.0.1:{}", listen_port());
    let d = spawn_listening(&shared, "d", &metrics);
    produce_slowly(&topic, N * 3 / 4..N, keyed).await;
    produce(&topic, closers(N)).await;
    let total = N as usize + PARTITIONS as usize;
    wait_rows(
        &shared,
        "SELECT id FROM events",
        total,
        Duration::from_secs(180),
    )
    .await;

    let reference = config(dir, "reference", &topic, &unique("ref"), "partition");
    run_until_caught_up(&reference);
    let want = count(&reference, "SELECT * FROM per_key").await;
    assert!(want > 1000, "the reference run emitted {want} rows");
    wait_rows(
        &shared,
        "SELECT * FROM per_key",
        want,
        Duration::from_secs(180),
    )
    .await;
    // `sluice status` names each partition's owner (one of the running instances) and its
    // committed window clock.
    let pids: Vec<String> = [&a, &c, &d]
        .iter()
        .map(|c| format!("-{} (", c.id()))
        .collect();
    let doc = status_json(&shared);
    let parts = doc["pipelines"][0]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), PARTITIONS as usize);
    // The added instance's metrics: a window clock for each partition it owns, none other.
    let scraped = scrape(&metrics);
    let mut owned_by_d = 0;
    for p in parts {
        let owner = p["owner"].as_str().unwrap_or_default();
        assert!(pids.iter().any(|pid| owner.contains(pid.as_str())), "{p}");
        assert_eq!(p["window_clocks"][0][0], "per_key");
        let clock = p["window_clocks"][0][1].as_i64().unwrap();
        assert!(clock >= T0 + 3_600_000, "{p}");
        let series = format!(
            "sluice_partition_window_clock_seconds{{pipeline=\"counts\",table=\"per_key\",topic=\"{topic}\",partition=\"{}\"}}",
            p["partition"]
        );
        if owner.contains(pids[2].as_str()) {
            owned_by_d += 1;
            assert_eq!(
                metric(&scraped, &series),
                Some(clock as f64 / 1000.0),
                "{series}\n{scraped}"
            );
        } else {
            assert_eq!(metric(&scraped, &series), None, "{series}");
        }
    }
    assert!(owned_by_d > 0, "the added instance owns a partition: {doc}");
    for child in [a, c, d] {
        stop(child);
    }
    // Every instance owned partitions at some point; B's went to the others when it died.
    for name in ["a", "b", "c", "d"] {
        let log = std::fs::read_to_string(shared.with_file_name(format!("{name}.log"))).unwrap();
        let n = log.matches("partition assigned").count();
        assert!(n > 0, "instance {name} never owned a partition:\n{log}");
    }
    (shared, reference)
}

/// The aggregate rows in a fixed order, every column.
const PER_PARTITION: &str = "SELECT * FROM per_key ORDER BY _kafka_partition, k, window_start";

/// The events minus the late records, grouped by key and 1-second window, as the aggregate
/// rows (per partition, or merged when `by_partition` is false).
fn batch_sql(by_partition: bool) -> String {
    let p = if by_partition {
        "e._kafka_partition, "
    } else {
        ""
    };
    format!(
        "SELECT {p}e.k, date_bin(INTERVAL '1 second', e._event_time, TIMESTAMP '1970-01-01T00:00:00Z') AS window_start, \
         count(*) AS n, sum(e.v) AS total, max(e.v) AS biggest \
         FROM events e LEFT ANTI JOIN late l ON e._kafka_partition = l.partition AND e._kafka_offset = l.offset \
         WHERE e.k <> 'closer' GROUP BY {p}e.k, window_start ORDER BY {p}e.k, window_start"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn three_instances_with_partition_clocks_one_killed_one_added_equal_one_instance() {
    let dir = tempfile::tempdir().unwrap();
    let (shared, reference) = three_instances_and_a_reference(dir.path(), true).await;
    let got = text(&shared, PER_PARTITION).await;
    assert_eq!(got, text(&reference, PER_PARTITION).await, "row for row");
    let late = count(&shared, "SELECT * FROM late").await;
    assert!(late > 0, "some records were late");
    assert_eq!(late, count(&reference, "SELECT * FROM late").await);
    // A keyed topic: each (key, window) has exactly one row, whatever the assignment.
    assert_eq!(
        count(
            &shared,
            "SELECT k, window_start FROM per_key GROUP BY k, window_start HAVING count(*) > 1"
        )
        .await,
        0
    );
    let rows = "SELECT _kafka_partition, k, window_start, n, total, biggest FROM per_key ORDER BY _kafka_partition, k, window_start";
    assert_eq!(
        text(&shared, rows).await,
        text(&shared, &batch_sql(true)).await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn three_instances_over_an_unkeyed_topic_merge_into_one_row_per_key_and_window() {
    let dir = tempfile::tempdir().unwrap();
    let (shared, reference) = three_instances_and_a_reference(dir.path(), false).await;
    assert_eq!(
        text(&shared, PER_PARTITION).await,
        text(&reference, PER_PARTITION).await,
        "row for row"
    );
    let merged = "SELECT k, window_start, window_end, n, total, round(mean, 9) AS mean, biggest, \
        record_count, max_event_time, partitions FROM per_key_merged ORDER BY k, window_start";
    let got = text(&shared, merged).await;
    assert_eq!(got, text(&reference, merged).await);
    // Spread over the partitions, a window's records are in several per-partition rows; the
    // view has one row per (key, window).
    assert!(
        count(&shared, "SELECT * FROM per_key").await
            > count(&shared, "SELECT * FROM per_key_merged").await
    );
    assert_eq!(
        count(
            &shared,
            "SELECT k, window_start FROM per_key_merged GROUP BY k, window_start HAVING count(*) > 1"
        )
        .await,
        0
    );
    let rows = "SELECT k, window_start, n, total, biggest FROM per_key_merged WHERE k <> 'closer' ORDER BY k, window_start";
    assert_eq!(
        text(&shared, rows).await,
        text(&shared, &batch_sql(false)).await
    );
    // The weighted average equals the batch average over the same records.
    let avg = "SELECT k, window_start, round(mean, 6) AS mean FROM per_key_merged ORDER BY k, window_start";
    let batch_avg = "SELECT e.k, date_bin(INTERVAL '1 second', e._event_time, TIMESTAMP '1970-01-01T00:00:00Z') AS window_start, round(avg(e.v), 6) AS mean \
         FROM events e LEFT ANTI JOIN late l ON e._kafka_partition = l.partition AND e._kafka_offset = l.offset \
         WHERE e.k <> 'closer' GROUP BY e.k, window_start ORDER BY e.k, window_start";
    assert_eq!(text(&shared, avg).await, text(&shared, batch_avg).await);
}

/// Waits until the log of instance `name` (beside `config`) contains `line`.
async fn wait_log(config: &std::path::Path, name: &str, line: &str, limit: Duration) -> Duration {
    let path = config.with_file_name(format!("{name}.log"));
    let start = Instant::now();
    loop {
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        if log.contains(line) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "instance {name} did not log {line:?} in {limit:?}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn log_of(config: &std::path::Path, name: &str) -> String {
    std::fs::read_to_string(config.with_file_name(format!("{name}.log"))).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn topic_clock_runs_on_one_instance_and_a_standby_takes_over_when_it_is_killed() {
    const N: u64 = 4_000;
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("inst-topic");
    create_topic(&topic, PARTITIONS).await;
    // No record later than the grace: with one clock over the topic, which records are late
    // could otherwise depend on how a replay interleaves the partitions (docs/windows.md).
    let on_time =
        |r: std::ops::Range<u64>| r.map(|i| record_with(i, true, true)).collect::<Vec<_>>();
    let shared = config(dir.path(), "shared", &topic, &unique("inst"), "topic");
    let a = spawn(&shared, "a");
    wait_log(
        &shared,
        "a",
        "active: this instance computes",
        Duration::from_secs(60),
    )
    .await;
    let b = spawn(&shared, "b");
    wait_log(&shared, "b", "standing by", Duration::from_secs(60)).await;
    for slice in on_time(0..N / 2).chunks(250) {
        produce(&topic, slice.to_vec()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_rows(
        &shared,
        "SELECT id FROM events WHERE id < 1500",
        1500,
        Duration::from_secs(120),
    )
    .await;
    let doc = status_json(&shared);
    let until = doc["pipelines"][0]["lease_until_ms"].as_i64().unwrap();
    assert!(
        until > chrono::Utc::now().timestamp_millis(),
        "the active instance holds the lease: {doc}"
    );
    let early = count(&shared, "SELECT * FROM per_key").await;
    assert!(
        early > 0,
        "the active instance emitted windows before it was killed"
    );
    // Only one instance computes: the standby has not joined the consumer group.
    assert!(
        !log_of(&shared, "b").contains("partition assigned"),
        "{}",
        log_of(&shared, "b")
    );
    let mut a = a;
    a.kill().unwrap(); // SIGKILL
    a.wait().unwrap();
    let took = wait_log(
        &shared,
        "b",
        "active: this instance computes",
        Duration::from_secs(60),
    )
    .await;
    eprintln!("the standby took over {took:?} after the SIGKILL (standby_takeover = 10s)");
    for slice in on_time(N / 2..N).chunks(250) {
        produce(&topic, slice.to_vec()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    produce(&topic, closers(N)).await;
    let total = N as usize + PARTITIONS as usize;
    wait_rows(
        &shared,
        "SELECT id FROM events",
        total,
        Duration::from_secs(180),
    )
    .await;

    let reference = config(dir.path(), "reference", &topic, &unique("ref"), "topic");
    run_until_caught_up(&reference);
    let want = count(&reference, "SELECT * FROM per_key").await;
    assert!(want > 500, "the reference run emitted {want} rows");
    wait_rows(
        &shared,
        "SELECT * FROM per_key",
        want,
        Duration::from_secs(180),
    )
    .await;
    // A third instance while B is active stands by too. B stalls (SIGSTOP) past its lease:
    // C takes over; when B resumes, its lease is gone and it stops instead of computing
    // windows beside C.
    let c = spawn(&shared, "c");
    wait_log(&shared, "c", "standing by", Duration::from_secs(60)).await;
    let mut b = b;
    signal(&b, Signal::SIGSTOP);
    wait_log(
        &shared,
        "c",
        "active: this instance computes",
        Duration::from_secs(60),
    )
    .await;
    signal(&b, Signal::SIGCONT);
    let status = b.wait().unwrap();
    assert!(!status.success(), "B went on after losing its lease");
    assert!(
        log_of(&shared, "b").contains("another instance took over its windows"),
        "{}",
        log_of(&shared, "b")
    );
    // C releases its lease on a clean stop: D takes over without waiting for it to expire.
    let d = spawn(&shared, "d");
    wait_log(&shared, "d", "standing by", Duration::from_secs(60)).await;
    stop(c);
    wait_log(
        &shared,
        "d",
        "active: this instance computes",
        Duration::from_secs(30),
    )
    .await;
    assert!(log_of(&shared, "c").contains("lease released"));
    stop(d);

    let rows = "SELECT * FROM per_key ORDER BY k, window_start";
    assert_eq!(
        text(&shared, rows).await,
        text(&reference, rows).await,
        "row for row"
    );
    assert_eq!(count(&shared, "SELECT * FROM late").await, 0);
    let batch = "SELECT k, date_bin(INTERVAL '1 second', _event_time, TIMESTAMP '1970-01-01T00:00:00Z') AS window_start, \
         count(*) AS n, sum(v) AS total FROM events WHERE k <> 'closer' GROUP BY k, window_start ORDER BY k, window_start";
    assert_eq!(
        text(
            &shared,
            "SELECT k, window_start, n, total FROM per_key ORDER BY k, window_start"
        )
        .await,
        text(&shared, batch).await
    );
}

//! `sluice run` against the real broker: every record lands exactly once in the events table
//! or the dead-letter table, through crashes, restarts, group resets and rebalances.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_lake::deltalake::arrow::array::{Array, Int64Array, StringArray};

use crate::support::*;

/// Starts `sluice run` (no end) as a child process.
fn spawn_run(config: &std::path::Path, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(sluice_bin());
    cmd.args(["run", "--config"])
        .arg(config)
        .env("SLUICE_LOG", "info")
        .stdout(Stdio::null());
    if std::env::var_os("SLUICE_TEST_SHOW_LOG").is_none() {
        cmd.stderr(Stdio::null());
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn sluice run")
}

/// `sluice run` with its log (info) going to `log`.
fn spawn_run_logging_to(config: &std::path::Path, log: &std::path::Path) -> Child {
    Command::new(sluice_bin())
        .args(["run", "--config"])
        .arg(config)
        .env("SLUICE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("create the log file"))
        .spawn()
        .expect("spawn sluice run")
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("sluice did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_exactly_once(rows: &[(i32, i64)], produced: &BTreeSet<(i32, i64)>) {
    let mut counts: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for r in rows {
        *counts.entry(*r).or_default() += 1;
    }
    let doubled: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        doubled.is_empty(),
        "rows written more than once: {doubled:?}"
    );
    let missing: Vec<_> = produced
        .iter()
        .filter(|p| !counts.contains_key(p))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "produced records missing from the table: {missing:?} (of {})",
        produced.len()
    );
    assert_eq!(rows.len(), produced.len());
}

/// Event times spread over 40 minutes around midnight in New York (05:00Z on 2026-03-01).
fn midnight_ts(i: u64) -> (String, bool) {
    let base = 1_772_340_000_000i64; // 2026-03-01T04:40:00Z
    let ms = base + (i as i64 * 24) % 2_400_000;
    let dt = chrono::DateTime::from_timestamp_millis(ms).unwrap();
    // EST is UTC-5 on this date: local midnight is 05:00Z.
    (
        dt.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ms < 1_772_341_200_000,
    )
}

async fn hundred_thousand(lake_cfg: sluice_config::LakeConfig, dir: &std::path::Path) {
    let topic = unique("ing-100k");
    create_topic(&topic, 3).await;
    let n = 100_000u64;
    let mut before_midnight = 0usize;
    let records: Vec<TestRecord> = (0..n)
        .map(|i| {
            let (ts, before) = midnight_ts(i);
            before_midnight += before as usize;
            TestRecord {
                key: Some(format!("u{}", i % 977).into_bytes()),
                value: Some(click(i, &ts)),
                ..Default::default()
            }
        })
        .collect();
    let produced: BTreeSet<(i32, i64)> = produce(&topic, records).await.into_iter().collect();
    let config = pipeline_config(
        dir,
        &topic,
        &lake_cfg,
        "timezone = \"America/New_York\"\nflush = { max_rows = 40000, max_latency = \"2s\" }",
    );
    run_until_caught_up(&config);

    let lake = sluice_lake::Lake::new(&lake_cfg).unwrap();
    let rows = read_table(&lake, "events").await;
    assert_exactly_once(&positions(&rows), &produced);
    let table = lake.open("events").await.unwrap().unwrap();
    let by_date = sluice_lake::scan_sql(
        "events",
        &table,
        "SELECT CAST(event_date AS VARCHAR) AS d, count(*) AS n FROM events GROUP BY event_date ORDER BY d",
    )
    .await
    .unwrap();
    let mut got = BTreeMap::new();
    for b in &by_date {
        let d = utf8(b.column(0));
        let c = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        for i in 0..b.num_rows() {
            got.insert(d.value(i).to_string(), c.value(i) as usize);
        }
    }
    let expected = BTreeMap::from([
        ("2026-02-28".to_string(), before_midnight),
        ("2026-03-01".to_string(), n as usize - before_midnight),
    ]);
    assert_eq!(
        got, expected,
        "event_date follows America/New_York, not UTC"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hundred_thousand_events_local_with_dates_around_midnight() {
    let (dir, lake) = local_lake();
    hundred_thousand(lake, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hundred_thousand_events_on_s3() {
    let dir = tempfile::tempdir().unwrap();
    hundred_thousand(s3_lake(), dir.path()).await;
}

/// Produces `batches` x `per` records while the test kills and restarts sluice.
async fn produce_in_background(
    topic: String,
    batches: u64,
    per: u64,
) -> tokio::task::JoinHandle<Vec<(i32, i64)>> {
    tokio::spawn(async move {
        let mut all = Vec::new();
        for b in 0..batches {
            let recs = (0..per).map(|i| TestRecord {
                value: Some(click(b * per + i, "2026-03-01T10:00:00Z")),
                ..Default::default()
            });
            all.extend(produce(&topic, recs).await);
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        all
    })
}

async fn sigkill_loop(lake_cfg: sluice_config::LakeConfig) {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("ing-kill");
    create_topic(&topic, 3).await;
    let config = pipeline_config(
        dir.path(),
        &topic,
        &lake_cfg,
        "flush = { max_rows = 700, max_latency = \"300ms\" }",
    );
    let producer = produce_in_background(topic.clone(), 40, 500).await;
    let mut kills = 0;
    while kills < 6 {
        let mut child = spawn_run(&config, &[]);
        let ms = 700 + rand::random::<u64>() % 2500;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        kills += 1;
    }
    let produced: BTreeSet<(i32, i64)> = producer.await.unwrap().into_iter().collect();
    run_until_caught_up(&config);
    let lake = sluice_lake::Lake::new(&lake_cfg).unwrap();
    assert_exactly_once(&positions(&read_table(&lake, "events").await), &produced);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_local() {
    let (_dir, lake) = local_lake();
    sigkill_loop(lake).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_on_s3() {
    sigkill_loop(s3_lake()).await;
}

/// Azure Blob Storage (Azurite): commits are conditional writes (If-None-Match: *) there too.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_on_azure_blob_storage() {
    sigkill_loop(azure_lake()).await;
}

/// Google Cloud Storage (fake-gcs-server): conditional writes are `x-goog-if-generation-match: 0`.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_on_google_cloud_storage() {
    sigkill_loop(gcs_lake()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_at_every_commit_step_loses_and_doubles_nothing() {
    let (dir, lake_cfg) = local_lake();
    let topic = unique("ing-fault");
    create_topic(&topic, 3).await;
    // Every 10th record is bad, so every flush commits the dead-letter table too.
    let value = |i: u64| {
        if i % 10 == 3 {
            b"{broken".to_vec()
        } else {
            click(i, "2026-03-01T10:00:00Z")
        }
    };
    let mut produced = BTreeSet::new();
    let mut bad = BTreeSet::new();
    let config = pipeline_config(
        dir.path(),
        &topic,
        &lake_cfg,
        "flush = { max_rows = 300, max_latency = \"200ms\" }",
    );
    let mut next = 0u64;
    for point in [
        "before_commit",
        "after_dead_letter_commit",
        "after_events_commit",
    ] {
        for hit in [1u64, 3] {
            let mut child = spawn_run(&config, &[("SLUICE_FAULT", &format!("{point}:{hit}"))]);
            // Keep producing until the process reaches its crash point and aborts.
            let deadline = Instant::now() + Duration::from_secs(90);
            let status = loop {
                let recs: Vec<TestRecord> = (next..next + 200)
                    .map(|i| TestRecord {
                        value: Some(value(i)),
                        ..Default::default()
                    })
                    .collect();
                let delivered = produce(&topic, recs).await;
                for (i, pos) in (next..next + 200).zip(delivered) {
                    if i % 10 == 3 {
                        bad.insert(pos);
                    } else {
                        produced.insert(pos);
                    }
                }
                next += 200;
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                assert!(
                    Instant::now() < deadline,
                    "sluice never reached {point}:{hit}"
                );
                tokio::time::sleep(Duration::from_millis(150)).await;
            };
            assert!(
                !status.success(),
                "sluice should have aborted at {point}:{hit}"
            );
        }
    }
    run_until_caught_up(&config);
    let lake = sluice_lake::Lake::new(&lake_cfg).unwrap();
    assert_exactly_once(&positions(&read_table(&lake, "events").await), &produced);
    let dead = positions_of(&read_table(&lake, "clicks_dead_letter").await);
    assert_exactly_once(&dead, &bad);
}

/// A string column as `StringArray`, whatever string layout the query engine chose.
fn utf8(a: &sluice_lake::deltalake::arrow::array::ArrayRef) -> StringArray {
    use sluice_lake::deltalake::arrow::compute::cast;
    use sluice_lake::deltalake::arrow::datatypes::DataType;
    cast(a, &DataType::Utf8)
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
        .clone()
}

fn positions_of(
    batches: &[sluice_lake::deltalake::arrow::record_batch::RecordBatch],
) -> Vec<(i32, i64)> {
    use sluice_lake::deltalake::arrow::array::Int32Array;
    let mut out = Vec::new();
    for b in batches {
        let p = b
            .column_by_name("partition")
            .unwrap()
            .as_any()
            .downcast_ref::<Int32Array>()
            .unwrap()
            .clone();
        let o = b
            .column_by_name("offset")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .clone();
        for i in 0..b.num_rows() {
            out.push((p.value(i), o.value(i)));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_resumes_from_the_table_not_the_consumer_group() {
    let (dir, lake_cfg) = local_lake();
    let topic = unique("ing-reset");
    create_topic(&topic, 3).await;
    let mut produced: BTreeSet<(i32, i64)> = produce(
        &topic,
        (0..2000u64).map(|i| TestRecord {
            value: Some(click(i, "2026-03-01T10:00:00Z")),
            ..Default::default()
        }),
    )
    .await
    .into_iter()
    .collect();
    let config = pipeline_config(dir.path(), &topic, &lake_cfg, "");
    run_until_caught_up(&config);
    // Reset the group's offsets to the beginning, as an operator might by mistake.
    let cfg = sluice_config::Config::load(&config).unwrap();
    let group = format!("{}.clicks", cfg.kafka.group_id);
    {
        use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", kafka())
            .set("group.id", &group)
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..3 {
            tpl.add_partition_offset(&topic, p, rdkafka::Offset::Offset(0))
                .unwrap();
        }
        // The group accepts a reset only once sluice's member has left it.
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(e) = c.commit(&tpl, CommitMode::Sync) {
            assert!(Instant::now() < deadline, "reset group offsets: {e}");
            std::thread::sleep(Duration::from_millis(500));
        }
        let back = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        assert!(
            back.elements()
                .iter()
                .all(|e| e.offset() == rdkafka::Offset::Offset(0))
        );
    }
    produced.extend(
        produce(
            &topic,
            (0..500u64).map(|i| TestRecord {
                value: Some(click(i, "2026-03-01T11:00:00Z")),
                ..Default::default()
            }),
        )
        .await,
    );
    run_until_caught_up(&config);
    let lake = sluice_lake::Lake::new(&lake_cfg).unwrap();
    assert_exactly_once(&positions(&read_table(&lake, "events").await), &produced);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_split_partitions_and_one_takes_over() {
    let (dir, lake_cfg) = local_lake();
    let topic = unique("ing-two");
    create_topic(&topic, 4).await;
    let config = pipeline_config(
        dir.path(),
        &topic,
        &lake_cfg,
        "flush = { max_rows = 500, max_latency = \"300ms\" }",
    );
    let producer = produce_in_background(topic.clone(), 60, 300).await;
    let mut a = spawn_run(&config, &[]);
    let mut b = spawn_run(&config, &[]);
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Both are working: commits come from two writers (two streaming query ids).
    let lake = sluice_lake::Lake::new(&lake_cfg).unwrap();
    let writers = writer_ids(&lake).await;
    assert!(
        writers.len() >= 2,
        "expected two instances to commit, saw {writers:?}"
    );
    a.kill().unwrap();
    a.wait().unwrap();
    let produced: BTreeSet<(i32, i64)> = producer.await.unwrap().into_iter().collect();
    // The survivor takes over the dead instance's partitions after its session times out.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = positions(&read_table(&lake, "events").await);
        if got.len() >= produced.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    signal(&b, Signal::SIGTERM);
    let status = wait_exit(&mut b, Duration::from_secs(40));
    assert!(status.success(), "survivor exit: {status}");
    assert_exactly_once(&positions(&read_table(&lake, "events").await), &produced);
}

/// The distinct streaming query ids in the events table's history (one per writer process).
async fn writer_ids(lake: &sluice_lake::Lake) -> BTreeSet<String> {
    use futures::StreamExt;
    let table = lake.open("events").await.unwrap().unwrap();
    let history: Vec<_> = table.history(None).collect().await;
    history
        .into_iter()
        .filter_map(|c| c.ok())
        .filter_map(|c| {
            c.operation_parameters
                .and_then(|p| p.get("queryId").cloned())
        })
        .map(|v| v.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_records_go_to_the_dead_letter_table_and_ingest_goes_on() {
    let (dir, lake_cfg) = local_lake();
    let topic = unique("ing-dead");
    create_topic(&topic, 1).await;
    let big = format!(
        r#"{{"user_id":"x","ts":"2026-03-01T10:00:00Z","pad":"{}"}}"#,
        "y".repeat(3000)
    );
    let bad: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("malformed_json", Some(b"{\"user_id\": \"a\",".to_vec())),
        (
            "schema_mismatch",
            Some(br#"{"user_id":"a","amount":"lots","ts":"2026-03-01T10:00:00Z"}"#.to_vec()),
        ),
        (
            "schema_mismatch",
            Some(br#"{"page":"/no-user","ts":"2026-03-01T10:00:00Z"}"#.to_vec()),
        ),
        (
            "invalid_event_time",
            Some(br#"{"user_id":"a","ts":"half past ten"}"#.to_vec()),
        ),
        ("oversized", Some(big.into_bytes())),
        ("empty_value", Some(Vec::new())),
        ("empty_value", None),
        ("invalid_utf8", Some(b"{\"user_id\":\"\xc3\x28\"}".to_vec())),
    ];
    let mut records = Vec::new();
    let mut expect_kind = Vec::new();
    for (i, (kind, value)) in bad.iter().enumerate() {
        records.push(TestRecord {
            partition: Some(0),
            value: Some(click(i as u64, "2026-03-01T10:00:00Z")),
            ..Default::default()
        });
        records.push(TestRecord {
            partition: Some(0),
            key: Some(b"bad".to_vec()),
            value: value.clone(),
            ..Default::default()
        });
        expect_kind.push(*kind);
    }
    records.push(TestRecord {
        partition: Some(0),
        value: Some(click(99, "2026-03-01T10:00:00Z")),
        ..Default::default()
    });
    let delivered = produce(&topic, records).await;
    let config = pipeline_config(dir.path(), &topic, &lake_cfg, "max_record_size = \"2KiB\"");
    run_until_caught_up(&config);

    let lake = sluice_lake::Lake::new(&lake_cfg).unwrap();
    let good: BTreeSet<(i32, i64)> = delivered
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, p)| *p)
        .collect();
    assert_exactly_once(&positions(&read_table(&lake, "events").await), &good);
    let table = lake.open("clicks_dead_letter").await.unwrap().unwrap();
    let dead = sluice_lake::scan_sql(
        "dl",
        &table,
        "SELECT \"offset\", error_kind, error_message, topic, key FROM dl ORDER BY \"offset\"",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    for b in &dead {
        let o = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let k = utf8(b.column(1));
        let m = utf8(b.column(2));
        let t = utf8(b.column(3));
        for i in 0..b.num_rows() {
            assert!(!m.value(i).is_empty());
            assert_eq!(t.value(i), topic);
            assert!(!b.column(4).is_null(i), "the key is kept");
            got.push((o.value(i), k.value(i).to_string()));
        }
    }
    let expected: Vec<(i64, String)> = expect_kind
        .iter()
        .enumerate()
        .map(|(i, k)| (delivered[2 * i + 1].1, k.to_string()))
        .collect();
    assert_eq!(got, expected);
}

/// Another writer changes the events table's properties while `sluice run` is running: the
/// next commit is refused (a metadata change goes to delta-rs's conflict checker), the pipeline
/// reloads its tables, re-reads progress and goes on; the process does not exit, and every
/// record lands once.
#[tokio::test(flavor = "multi_thread")]
async fn a_property_change_by_another_writer_is_reloaded_and_ingest_goes_on() {
    let (dir, lake_cfg) = local_lake();
    let topic = unique("ing-meta");
    create_topic(&topic, 3).await;
    let config = pipeline_config(
        dir.path(),
        &topic,
        &lake_cfg,
        "flush = { max_latency = \"1s\" }",
    );
    let log_path = dir.path().join("run.log");
    let mut child = spawn_run_logging_to(&config, &log_path);
    let lake = sluice_lake::Lake::new(&lake_cfg).unwrap();
    let batch = |from: u64| {
        (from..from + 500).map(|i| TestRecord {
            value: Some(click(i, "2026-03-01T10:00:00Z")),
            ..Default::default()
        })
    };
    let wait_for = |want: BTreeSet<(i32, i64)>| {
        let lake = &lake;
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let got: BTreeSet<(i32, i64)> = positions(&read_table(lake, "events").await)
                    .into_iter()
                    .collect();
                if want.is_subset(&got) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} of {} records committed",
                    want.intersection(&got).count(),
                    want.len()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let mut produced: BTreeSet<(i32, i64)> = produce(&topic, batch(0)).await.into_iter().collect();
    wait_for(produced.clone()).await;
    let table = lake.open("events").await.unwrap().unwrap();
    let changed = table
        .set_tbl_properties()
        .with_properties(std::collections::HashMap::from([(
            "delta.logRetentionDuration".to_string(),
            "interval 60 days".to_string(),
        )]))
        .await
        .unwrap();
    let changed_at = changed.version().unwrap();
    produced.extend(produce(&topic, batch(500)).await);
    wait_for(produced.clone()).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "sluice run exited:\n{}",
        std::fs::read_to_string(&log_path).unwrap()
    );
    let table = lake.open("events").await.unwrap().unwrap();
    assert!(table.version().unwrap() > changed_at);
    assert_eq!(
        table
            .snapshot()
            .unwrap()
            .metadata()
            .configuration()
            .get("delta.logRetentionDuration")
            .map(String::as_str),
        Some("interval 60 days")
    );
    let rows = positions(&read_table(&lake, "events").await);
    assert_exactly_once(&rows, &produced);
    signal(&child, Signal::SIGTERM);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("changed the table's metadata or protocol"),
        "the conflict path was not taken:\n{log}"
    );
    let summary = log
        .lines()
        .find(|l| l.contains("pipeline finished"))
        .unwrap_or_else(|| panic!("no summary in:\n{log}"));
    assert!(
        summary.split_whitespace().any(|f| f == "conflicts=1"),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_is_readable_within_seconds_and_sigterm_exits_cleanly() {
    let (dir, lake_cfg) = local_lake();
    let topic = unique("ing-fresh");
    create_topic(&topic, 3).await;
    let config = pipeline_config(
        dir.path(),
        &topic,
        &lake_cfg,
        "start = \"latest\"\nflush = { max_latency = \"1s\" }",
    );
    let log_path = dir.path().join("run.log");
    let mut child = spawn_run_logging_to(&config, &log_path);
    let lake = sluice_lake::Lake::new(&lake_cfg).unwrap();
    // Wait until sluice has created its table and joined the group.
    let ready = Instant::now() + Duration::from_secs(30);
    while lake.open("events").await.unwrap().is_none() {
        assert!(Instant::now() < ready, "table not created");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = Instant::now();
    let pos = produce(
        &topic,
        [TestRecord {
            value: Some(click(1, "2026-03-01T10:00:00Z")),
            ..Default::default()
        }],
    )
    .await;
    loop {
        let got = positions(&read_table(&lake, "events").await);
        if got.contains(&pos[0]) {
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "record not readable within 10s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // More records, then SIGTERM: everything consumed is committed and the exit code is 0.
    let more: BTreeSet<(i32, i64)> = produce(
        &topic,
        (0..300u64).map(|i| TestRecord {
            value: Some(click(i, "2026-03-01T10:00:00Z")),
            ..Default::default()
        }),
    )
    .await
    .into_iter()
    .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    signal(&child, Signal::SIGTERM);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(30),
        "exit within server.shutdown_timeout"
    );
    let got: BTreeSet<(i32, i64)> = positions(&read_table(&lake, "events").await)
        .into_iter()
        .collect();
    // Every record the process received before the signal was committed before it exited.
    let log = std::fs::read_to_string(&log_path).unwrap();
    let field = |name: &str| -> u64 {
        let line = log
            .lines()
            .find(|l| l.contains("pipeline finished"))
            .unwrap_or_else(|| panic!("no summary in:\n{log}"));
        let v = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap();
        v.parse().unwrap()
    };
    assert!(field("records") > 0);
    assert_eq!(
        field("records"),
        field("events") + field("dead_letters"),
        "{log}"
    );
    assert_eq!(
        field("events") as usize,
        got.len(),
        "the table holds exactly what the process received"
    );
    let mut all = more;
    all.insert(pos[0]);
    // Everything consumed before the signal is committed; a final catch-up adds the rest once.
    run_until_caught_up(&config);
    assert_exactly_once(&positions(&read_table(&lake, "events").await), &all);
    assert!(got.contains(&pos[0]));
}

#[test]
fn validate_names_every_mistake_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[kafka]
brokers = "127.0.0.1:9092"
[lake]
root = "/tmp/lake"
[[pipeline]]
name = "clicks"
topics = ["clicks"]
table = "clicks"
start = "beginning"
timezone = "Europe/Atlantis"
schema = [{ name = "ts", type = "datetime" }]
event_time = { field = "ts" }
flush = { max_rows = 0 }
"#,
    )
    .unwrap();
    let out = Command::new(sluice_bin())
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "pipeline[0].start",
        "pipeline[0].timezone",
        "pipeline[0].schema[0].type",
        "pipeline[0].flush.max_rows",
    ] {
        assert!(err.contains(key), "{key} not named in:\n{err}");
    }
    assert!(
        err.contains(&path.display().to_string()),
        "the file is named:\n{err}"
    );
    // Every example config is valid.
    let mut examples: Vec<_> = std::fs::read_dir(repo_root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    examples.sort();
    assert!(examples.len() >= 6, "{examples:?}");
    for example in examples {
        let ok = Command::new(sluice_bin())
            .arg("validate")
            .arg("--config")
            .arg(&example)
            .current_dir(repo_root())
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "{}: {}",
            example.display(),
            String::from_utf8_lossy(&ok.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_topics_two_pipelines_headers_and_a_schema_taken_from_the_table() {
    let (dir, lake_cfg) = local_lake();
    let (a, b, c) = (
        unique("ing-multi-a"),
        unique("ing-multi-b"),
        unique("ing-multi-c"),
    );
    for t in [&a, &b, &c] {
        create_topic(t, 2).await;
    }
    let click = |i: u64| TestRecord {
        value: Some(click(i, "2026-03-01T10:00:00Z")),
        headers: vec![("trace".into(), format!("t{i}").into_bytes())],
        ..Default::default()
    };
    let mut clicks: BTreeSet<(String, i32, i64)> = BTreeSet::new();
    for t in [&a, &b] {
        for (p, o) in produce(t, (0..300u64).map(click)).await {
            clicks.insert((t.clone(), p, o));
        }
    }
    let orders = produce(
        &c,
        (0..120u64).map(|i| TestRecord {
            value: Some(format!(r#"{{"order_id":"o{i}","amount":{i}.25}}"#).into_bytes()),
            ..Default::default()
        }),
    )
    .await;
    let text = |schema: &str| {
        format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
[lake]
root = "{root}"
[server]
listen = ""

[[pipeline]]
name = "clicks"
topics = ["{a}", "{b}"]
table = "clicks"
include_headers = true
{schema}

[[pipeline]]
name = "orders"
topics = ["{c}"]
table = "orders"
schema = [{{ name = "order_id", type = "string", nullable = false }}, {{ name = "amount", type = "double" }}]
"#,
            brokers = kafka(),
            group = unique("multi"),
            root = lake_cfg.root,
        )
    };
    let config = dir.path().join("multi.toml");
    std::fs::write(
        &config,
        text(r#"schema = [{ name = "user_id", type = "string", nullable = false }, { name = "page", type = "string" }, { name = "amount", type = "double" }, { name = "ts", type = "timestamp" }]
event_time = { field = "ts", format = "rfc3339" }"#),
    )
    .unwrap();
    run_until_caught_up(&config);
    let lake = sluice_lake::Lake::new(&lake_cfg).unwrap();
    let table = lake.open("clicks").await.unwrap().unwrap();
    let got = sluice_lake::scan_sql("clicks", &table, "SELECT _kafka_topic, _kafka_partition, _kafka_offset, _kafka_headers[1]['value'] AS trace FROM clicks").await.unwrap();
    let mut seen = BTreeSet::new();
    for batch in &got {
        let topic = utf8(batch.column(0));
        let p = cast(batch.column(1), &DataType::Int32).unwrap();
        let p = p
            .as_any()
            .downcast_ref::<sluice_lake::deltalake::arrow::array::Int32Array>()
            .unwrap();
        let o = batch
            .column(2)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let trace = cast(batch.column(3), &DataType::Binary).unwrap();
        let trace = trace
            .as_any()
            .downcast_ref::<sluice_lake::deltalake::arrow::array::BinaryArray>()
            .unwrap();
        for i in 0..batch.num_rows() {
            assert!(trace.value(i).starts_with(b"t"), "the trace header is kept");
            assert!(
                seen.insert((topic.value(i).to_string(), p.value(i), o.value(i))),
                "duplicate row"
            );
        }
    }
    assert_eq!(
        seen, clicks,
        "both topics land in one events table, exactly once"
    );
    let order_rows = positions(&read_table(&lake, "orders").await);
    assert_exactly_once(&order_rows, &orders.into_iter().collect());

    // A later config without `schema` uses the existing table's columns.
    std::fs::write(
        &config,
        text("event_time = { field = \"ts\", format = \"rfc3339\" }"),
    )
    .unwrap();
    for (p, o) in produce(&a, (300..400u64).map(click)).await {
        clicks.insert((a.clone(), p, o));
    }
    run_until_caught_up(&config);
    let rows = read_table(&lake, "clicks").await;
    assert_eq!(
        rows.iter().map(|b| b.num_rows()).sum::<usize>(),
        clicks.len()
    );
}

use sluice_lake::deltalake::arrow::compute::cast;
use sluice_lake::deltalake::arrow::datatypes::DataType;

/// `start = "latest"` applies once: a run that was assigned a partition records where it
/// started, so records produced while sluice is stopped are read by the next run (as a Kafka
/// consumer keeps its position), not skipped by resolving `latest` again.
#[tokio::test(flavor = "multi_thread")]
async fn start_latest_is_kept_across_a_restart_with_nothing_read() {
    let (dir, lake_cfg) = local_lake();
    let topic = unique("ing-latest");
    create_topic(&topic, 3).await;
    let config = pipeline_config(dir.path(), &topic, &lake_cfg, "start = \"latest\"");
    run_until_caught_up(&config);
    let produced: BTreeSet<(i32, i64)> = produce(
        &topic,
        (0..90u64).map(|i| TestRecord {
            partition: Some((i % 3) as i32),
            value: Some(click(i, "2026-03-01T10:00:00Z")),
            ..Default::default()
        }),
    )
    .await
    .into_iter()
    .collect();
    run_until_caught_up(&config);
    let lake = sluice_lake::Lake::new(&lake_cfg).unwrap();
    assert_exactly_once(&positions(&read_table(&lake, "events").await), &produced);
}

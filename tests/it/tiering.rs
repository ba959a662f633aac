//! Tiering against the real broker: cold records move into the archive table, the broker's
//! log start follows the boundary (less the hot window), the unified log reads both tiers as
//! one, crashes between the steps lose and double nothing, and a backfill over the unified log
//! reproduces the live pipeline's tables.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use sluice_lake::Lake;
use sluice_lake::deltalake::arrow::record_batch::RecordBatch;
use sluice_tiering::reader::ReadStats;
use sluice_tiering::{LogEnd, LogStart, UnifiedLog};
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// A config with one tiered topic and, when `pipeline` is given, that pipeline text.
fn tiering_config(
    dir: &std::path::Path,
    topic: &str,
    lake: &sluice_config::LakeConfig,
    tiering: &str,
    rest: &str,
) -> std::path::PathBuf {
    let options: String = lake
        .options
        .iter()
        .map(|(k, v)| format!("{k} = {v:?}\n"))
        .collect();
    let text = format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"

[lake]
root = "{root}"
[lake.options]
{options}
[server]
listen = ""

[[tiering]]
topic = "{topic}"
archive_table = "archive"
{tiering}

{rest}
"#,
        brokers = kafka(),
        group = unique("sluice-tier"),
        root = lake.root,
    );
    let path = dir.join("sluice.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn tier_once(config: &std::path::Path, fault: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(sluice_bin());
    cmd.args(["tier", "--once", "--config"]).arg(config);
    if let Some(f) = fault {
        cmd.env("SLUICE_FAULT", f);
    }
    let out = cmd.output().expect("run sluice tier");
    if std::env::var_os("SLUICE_TEST_SHOW_LOG").is_some() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    out
}

fn load_config(path: &std::path::Path) -> sluice_config::Config {
    sluice_config::Config::load(path).expect("config")
}

/// One record as the reader returned it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Got {
    offset: i64,
    timestamp: Option<i64>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

async fn read_partition(
    log: &UnifiedLog,
    partition: i32,
    from: LogStart,
    until: LogEnd,
) -> (Vec<Got>, ReadStats) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let collect = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(raw) = rx.recv().await {
            let raw: sluice_kafka::RawBatch = raw;
            for i in 0..raw.len() {
                assert_eq!(raw.partitions[i], partition);
                out.push(Got {
                    offset: raw.offsets[i],
                    timestamp: raw.timestamps[i],
                    key: raw.key(i).map(|k| k.to_vec()),
                    value: raw.value(i).map(|v| v.to_vec()),
                    headers: raw
                        .headers
                        .as_ref()
                        .map(|h| h[i].clone())
                        .unwrap_or_default(),
                });
            }
        }
        out
    });
    let stats = log
        .read(partition, from, until, &tx, &CancellationToken::new())
        .await
        .expect("unified read");
    drop(tx);
    (collect.await.expect("collect"), stats)
}

fn expected(produced: &[((i32, i64), TestRecord)], partition: i32) -> BTreeMap<i64, &TestRecord> {
    produced
        .iter()
        .filter(|((p, _), _)| *p == partition)
        .map(|((_, o), r)| (*o, r))
        .collect()
}

fn assert_same(got: &Got, want: &TestRecord) {
    assert_eq!(got.key, want.key, "key at offset {}", got.offset);
    assert_eq!(got.value, want.value, "value at offset {}", got.offset);
    assert_eq!(
        got.timestamp, want.timestamp,
        "timestamp at offset {}",
        got.offset
    );
    let headers: Vec<(String, Option<Vec<u8>>)> = want
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    assert_eq!(got.headers, headers, "headers at offset {}", got.offset);
}

fn record(i: u64, partition: i32, timestamp: i64) -> TestRecord {
    // Values are binary, not text: every byte value appears.
    let mut value = i.to_le_bytes().to_vec();
    value.extend((0..(i % 40) as u8).map(|b| b.wrapping_mul(37)));
    TestRecord {
        partition: Some(partition),
        key: (!i.is_multiple_of(11)).then(|| format!("key-{i}").into_bytes()),
        value: (!i.is_multiple_of(997)).then_some(value),
        headers: if i.is_multiple_of(3) {
            vec![
                ("trace".into(), format!("t{i}").into_bytes()),
                ("dup".into(), b"a".to_vec()),
                ("dup".into(), Vec::new()),
            ]
        } else {
            Vec::new()
        },
        timestamp: Some(timestamp),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_thousand_records_tier_and_read_back_as_one_log() {
    let (dir, lake_cfg) = local_lake();
    let topic = unique("tier-50k");
    create_topic_with(&topic, 3, &[("retention.ms", "-1")]).await;
    let now = chrono::Utc::now().timestamp_millis();
    // 45,000 cold records (three hours old) and 5,000 hot ones (ten minutes old).
    let mut recs = Vec::new();
    for i in 0..50_000u64 {
        let ts = if i < 45_000 {
            now - 3 * 3_600_000 + i as i64 * 100
        } else {
            now - 600_000 + (i - 45_000) as i64 * 10
        };
        recs.push(record(i, (i % 3) as i32, ts));
    }
    let positions = produce(&topic, recs.clone()).await;
    let produced: Vec<((i32, i64), TestRecord)> = positions.into_iter().zip(recs).collect();
    let config = tiering_config(dir.path(), &topic, &lake_cfg, "hot_retention = \"1h\"", "");

    let out = tier_once(&config, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("archived 50000 records"), "{report}");

    let cfg = load_config(&config);
    let lake = Lake::new(&cfg.lake).unwrap();
    let log = UnifiedLog::new(&cfg, &lake, &topic).unwrap();
    for p in 0..3 {
        let want = expected(&produced, p);
        let end = *want.keys().last().unwrap() + 1;
        // The boundary is the end; the log start is the first hot record.
        assert_eq!(log.boundary(p).await.unwrap(), Some(end));
        let first_hot = want
            .iter()
            .find(|(_, r)| r.timestamp.unwrap() >= now - 3_600_000)
            .map(|(o, _)| *o)
            .unwrap();
        assert_eq!(watermarks(&topic, p), (first_hot, end), "partition {p}");
        assert_offset_gone(&topic, p, 0).await;
    }
    // The archive holds exactly the records, once each.
    let table = lake.open("archive").await.unwrap().unwrap();
    let n = sluice_lake::scan_sql(
        "archive",
        &table,
        "SELECT count(*) AS n, count(DISTINCT (\"partition\", \"offset\")) AS d FROM archive",
    )
    .await
    .unwrap();
    let counts = format!(
        "{}",
        sluice_lake::deltalake::arrow::util::pretty::pretty_format_batches(&n).unwrap()
    );
    assert!(counts.contains("| 50000 | 50000 |"), "{counts}");

    // Records produced after tiering are only in the broker.
    let later: Vec<TestRecord> = (50_000..50_300u64)
        .map(|i| record(i, (i % 3) as i32, now + i as i64))
        .collect();
    let later_pos = produce(&topic, later.clone()).await;
    let mut produced = produced;
    produced.extend(later_pos.into_iter().zip(later));

    for p in 0..3 {
        let want = expected(&produced, p);
        let (got, stats) = read_partition(&log, p, LogStart::Offset(0), LogEnd::End).await;
        assert_eq!(got.len(), want.len(), "partition {p}: every record once");
        assert!(
            stats.from_archive > 0 && stats.from_broker == 100,
            "{stats:?}"
        );
        for (g, (o, w)) in got.iter().zip(&want) {
            assert_eq!(g.offset, *o, "offset order, no gap");
            assert_same(g, w);
        }
    }

    // Reading from a time in the archive, and from one in the hot tier.
    for (label, at) in [
        ("archive", produced[20_000].1.timestamp.unwrap()),
        ("hot tier", produced[47_000].1.timestamp.unwrap()),
    ] {
        for p in 0..3 {
            let want = expected(&produced, p);
            let first = want
                .iter()
                .find(|(_, r)| r.timestamp.unwrap() >= at)
                .map(|(o, _)| *o)
                .unwrap();
            let (got, _) =
                read_partition(&log, p, LogStart::Time(at), LogEnd::Offset(first + 50)).await;
            assert_eq!(got.len(), 50, "{label}, partition {p}");
            assert_eq!(got[0].offset, first, "{label}, partition {p}");
            assert_same(&got[0], want[&first]);
        }
    }

    // `sluice log read` prints the same log: every record once, each partition in offset
    // order, bytes as produced (binary values as base64).
    let out = Command::new(sluice_bin())
        .args(["log", "read", "--topic", &topic, "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut printed: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    let by_position: BTreeMap<(i32, i64), &TestRecord> =
        produced.iter().map(|(pos, r)| (*pos, r)).collect();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let p = v["partition"].as_i64().unwrap() as i32;
        let offset = v["offset"].as_i64().unwrap();
        let want = by_position
            .get(&(p, offset))
            .unwrap_or_else(|| panic!("printed a record never produced: {line}"));
        let bytes = |name: &str| -> Option<Vec<u8>> {
            use base64::Engine as _;
            match (&v[name], &v[format!("{name}_base64")]) {
                (serde_json::Value::String(t), _) => Some(t.clone().into_bytes()),
                (_, serde_json::Value::String(b)) => {
                    Some(base64::engine::general_purpose::STANDARD.decode(b).unwrap())
                }
                _ => None,
            }
        };
        assert_eq!(bytes("value"), want.value, "value at {p}/{offset}");
        assert_eq!(bytes("key"), want.key, "key at {p}/{offset}");
        printed.entry(p).or_default().push(offset);
    }
    for p in 0..3 {
        let want: Vec<i64> = expected(&produced, p).keys().copied().collect();
        assert_eq!(
            printed.get(&p),
            Some(&want),
            "partition {p}: once each, in offset order"
        );
    }
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(
        summary.contains(
            "50300 record(s): 50000 read from the archive table archive, 300 from the broker"
        ),
        "{summary}"
    );
    // One partition from an offset, a few records, as a table for people.
    let out = Command::new(sluice_bin())
        .args(["log", "read", "--topic", &topic, "--partition", "1"])
        .args([
            "--from",
            "offset:100",
            "--limit",
            "3",
            "--format",
            "table",
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let offsets: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(offsets, ["100", "101", "102"], "{text}");

    // Following: the read goes on with records produced while it runs.
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let cancel = CancellationToken::new();
    let follow = {
        let (log, cancel) = (log.clone(), cancel.clone());
        tokio::spawn(async move {
            log.read(0, LogStart::Offset(0), LogEnd::Follow, &tx, &cancel)
                .await
        })
    };
    let before = expected(&produced, 0).len();
    let more: Vec<TestRecord> = (60_000..60_020u64)
        .map(|i| record(i, 0, now + i as i64))
        .collect();
    let more_pos = produce(&topic, more).await;
    let mut seen = Vec::new();
    while seen.len() < before + more_pos.len() {
        let raw = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("followed records arrive")
            .expect("reader alive");
        seen.extend(raw.offsets.iter().copied());
    }
    cancel.cancel();
    let stats = follow.await.unwrap().unwrap();
    let all: Vec<i64> = (0..(before + more_pos.len()) as i64).collect();
    assert_eq!(seen, all, "followed without gap or duplicate");
    assert_eq!(stats.next, all.len() as i64);
}

#[tokio::test(flavor = "multi_thread")]
async fn crashes_between_upload_commit_and_delete_lose_and_double_nothing() {
    let (dir, lake_cfg) = local_lake();
    let topic = unique("tier-crash");
    create_topic_with(&topic, 2, &[("retention.ms", "-1")]).await;
    let old = chrono::Utc::now().timestamp_millis() - 7_200_000;
    let recs: Vec<TestRecord> = (0..5_000u64)
        .map(|i| record(i, (i % 2) as i32, old + i as i64))
        .collect();
    produce(&topic, recs).await;
    let config = tiering_config(dir.path(), &topic, &lake_cfg, "hot_retention = \"0s\"", "");
    let cfg = load_config(&config);
    let lake = Lake::new(&cfg.lake).unwrap();
    let log = UnifiedLog::new(&cfg, &lake, &topic).unwrap();
    let archived = |lake: Lake| async move {
        let Some(t) = lake.open("archive").await.unwrap() else {
            return (0usize, 0usize);
        };
        let b = sluice_lake::scan_sql(
            "archive",
            &t,
            "SELECT \"partition\", \"offset\" FROM archive",
        )
        .await
        .unwrap();
        let rows = crate::support::rows(&b);
        let mut distinct = BTreeSet::new();
        for batch in &b {
            let p =
                arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Int32).unwrap();
            let o =
                arrow::compute::cast(batch.column(1), &arrow::datatypes::DataType::Int64).unwrap();
            let p = p
                .as_any()
                .downcast_ref::<arrow::array::Int32Array>()
                .unwrap();
            let o = o
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap();
            for i in 0..batch.num_rows() {
                distinct.insert((p.value(i), o.value(i)));
            }
        }
        (rows, distinct.len())
    };

    // Killed after the files are uploaded, before the commit: nothing archived, nothing deleted.
    let out = tier_once(&config, Some("tier_after_upload:1"));
    assert!(!out.status.success(), "the fault point was reached");
    assert!(String::from_utf8_lossy(&out.stderr).contains("aborting at tier_after_upload"));
    let orphans = walk_parquet(&dir.path().join("archive"));
    assert!(orphans > 0, "the files were uploaded before the crash");
    assert_eq!(archived(lake.clone()).await, (0, 0));
    for p in 0..2 {
        assert_eq!(log.boundary(p).await.unwrap(), None);
        assert_eq!(
            watermarks(&topic, p).0,
            0,
            "nothing deleted from the broker"
        );
    }

    // Killed after the commit, before DeleteRecords: archived once, nothing deleted yet.
    let out = tier_once(&config, Some("tier_after_commit:1"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("aborting at tier_after_commit"));
    assert_eq!(archived(lake.clone()).await, (5_000, 5_000));
    for p in 0..2 {
        assert_eq!(log.boundary(p).await.unwrap(), Some(2_500));
        assert_eq!(watermarks(&topic, p).0, 0, "DeleteRecords never ran");
    }

    // More records, then a clean round: each record archived once, the broker trimmed to the
    // boundary and no further.
    let recs: Vec<TestRecord> = (5_000..6_000u64)
        .map(|i| record(i, (i % 2) as i32, old + i as i64))
        .collect();
    produce(&topic, recs).await;
    let out = tier_once(&config, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(archived(lake.clone()).await, (6_000, 6_000));
    for p in 0..2 {
        assert_eq!(log.boundary(p).await.unwrap(), Some(3_000));
        assert_eq!(watermarks(&topic, p), (3_000, 3_000));
        let (got, stats) = read_partition(&log, p, LogStart::Earliest, LogEnd::End).await;
        let offsets: Vec<i64> = got.iter().map(|g| g.offset).collect();
        assert_eq!(offsets, (0..3_000).collect::<Vec<_>>());
        assert_eq!((stats.from_archive, stats.from_broker), (3_000, 0));
    }
    // `sluice status` shows each partition's boundary and the broker's offsets.
    let out = Command::new(sluice_bin())
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("tiering {topic} -> table archive")),
        "{text}"
    );
    for p in 0..2 {
        let row: Vec<&str> = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&p.to_string()))
            .unwrap_or_else(|| panic!("no row for partition {p}: {text}"))
            .split_whitespace()
            .collect();
        assert_eq!(
            row,
            vec![p.to_string().as_str(), "3000", "3000", "3000", "0"]
        );
    }
}

fn walk_parquet(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                walk_parquet(&p)
            } else {
                usize::from(p.extension().is_some_and(|x| x == "parquet"))
            }
        })
        .sum()
}

const PIPELINE: &str = r#"
[[pipeline]]
name = "clicks"
topics = ["TOPIC"]
table = "events"
schema = [
  { name = "user_id", type = "string", nullable = false },
  { name = "page", type = "string" },
  { name = "amount", type = "double" },
  { name = "ts", type = "timestamp" },
]
event_time = { field = "ts", format = "rfc3339" }
partition_by = ["event_date"]
flush = { max_rows = 2000, max_latency = "500ms" }

[[pipeline.aggregate]]
table = "per_minute"
window = { kind = "tumbling", size = "1m" }
grace = "10m"
group_by = ["page"]
aggregates = ["count(*) AS views", "sum(amount) AS revenue", "count_distinct(user_id) AS users"]
"#;

fn sorted_rows(batches: &[RecordBatch], skip: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let keep: Vec<usize> = (0..b.num_columns())
            .filter(|i| !skip.contains(&b.schema().field(*i).name().as_str()))
            .collect();
        let b = b.project(&keep).unwrap();
        let mut cols: Vec<(String, usize)> = b
            .schema()
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name().clone(), i))
            .collect();
        cols.sort();
        for r in 0..b.num_rows() {
            let row: Vec<String> = cols
                .iter()
                .map(|(name, i)| {
                    let v = arrow::util::display::array_value_to_string(b.column(*i), r).unwrap();
                    format!("{name}={v}")
                })
                .collect();
            out.push(row.join(","));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_from_the_archive_reproduces_the_live_tables() {
    let (dir, lake_cfg) = local_lake();
    let topic = unique("tier-backfill");
    create_topic_with(&topic, 3, &[("retention.ms", "-1")]).await;
    // Twenty minutes of clicks per partition in offset order, some malformed; every partition
    // ends at the same event time, so the window clock ends in the same place however the
    // partitions interleave.
    let mut recs = Vec::new();
    for i in 0..6_000u64 {
        let p = (i % 3) as i32;
        let secs = (i / 3) as i64 * 20 * 60 / 2_000;
        let ts = chrono::DateTime::from_timestamp(1_772_359_200 + secs, 0)
            .unwrap()
            .to_rfc3339();
        let value = if i % 500 == 7 {
            b"{not json".to_vec()
        } else {
            click(i, &ts)
        };
        recs.push(TestRecord {
            partition: Some(p),
            key: Some(format!("u{}", i % 50).into_bytes()),
            value: Some(value),
            ..Default::default()
        });
    }
    for p in 0..3 {
        recs.push(TestRecord {
            partition: Some(p),
            value: Some(click(99_999, "2026-03-01T10:30:00Z")),
            ..Default::default()
        });
    }
    produce(&topic, recs).await;
    let config = tiering_config(
        dir.path(),
        &topic,
        &lake_cfg,
        "hot_retention = \"0s\"",
        &PIPELINE.replace("TOPIC", &topic),
    );
    run_until_caught_up(&config);
    let out = tier_once(&config, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in 0..3 {
        let (low, high) = watermarks(&topic, p);
        assert_eq!(
            (low, high),
            (2_000, 2_001),
            "the broker dropped every record but the one an open window still needs"
        );
        assert_offset_gone(&topic, p, 0).await;
    }

    let out = Command::new(sluice_bin())
        .args([
            "backfill",
            "--pipeline",
            "clicks",
            "--from",
            "earliest",
            "--until",
            "end",
            "--into",
            "bf",
            "--config",
        ])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("backfill read 6003 records (6003 from the archive, 0 from the broker)"),
        "{stdout}"
    );
    assert!(stderr.contains("100.0%"), "a progress bar: {stderr}");

    let lake = Lake::new(&lake_cfg).unwrap();
    for (live, backfilled, skip) in [
        ("events", "bf", &[][..]),
        ("per_minute", "bf_per_minute", &[][..]),
        ("clicks_dead_letter", "bf_dead_letter", &["pipeline"][..]),
    ] {
        let a = sorted_rows(&read_table(&lake, live).await, skip);
        let b = sorted_rows(&read_table(&lake, backfilled).await, skip);
        assert!(!a.is_empty(), "{live} has rows");
        assert_eq!(a.len(), b.len(), "{live} vs {backfilled}");
        assert!(a == b, "{live} and {backfilled} hold the same rows");
    }
    // Known counts: 12 malformed records; every other record is an event.
    assert_eq!(rows(&read_table(&lake, "bf_dead_letter").await), 12);
    assert_eq!(rows(&read_table(&lake, "bf").await), 6_003 - 12);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_store_unreachable_nothing_is_deleted_and_the_alarm_rises() {
    let topic = unique("tier-down");
    create_topic_with(&topic, 1, &[("retention.ms", "-1")]).await;
    let proxy = Proxy::start(s3_endpoint().trim_start_matches("http://")).await;
    let mut lake_cfg = s3_lake();
    lake_cfg
        .options
        .insert("aws_endpoint".into(), format!("http://{}", proxy.addr));
    lake_cfg.options.insert("max_retries".into(), "1".into());
    lake_cfg.options.insert("retry_timeout".into(), "2s".into());
    let dir = tempfile::tempdir().unwrap();
    let metrics_addr = format!("127.0.0.1:{}", listen_port());
    let config = tiering_config(
        dir.path(),
        &topic,
        &lake_cfg,
        "hot_retention = \"0s\"\ninterval = \"1s\"",
        "",
    );
    let old = chrono::Utc::now().timestamp_millis() - 7_200_000;
    let produce_n = |from: u64, n: u64| {
        let recs: Vec<TestRecord> = (from..from + n)
            .map(|i| record(i, 0, old + i as i64))
            .collect();
        let topic = topic.clone();
        async move { produce(&topic, recs).await }
    };
    produce_n(0, 1_000).await;
    let mut child = KillOnDrop(
        Command::new(sluice_bin())
            .args(["run", "--config"])
            .arg(&config)
            .env("SLUICE__SERVER__LISTEN", &metrics_addr)
            .env("SLUICE__MAINTENANCE__COMPACT_INTERVAL", "0s")
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("SLUICE_TEST_SHOW_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap(),
    );
    let alarm = format!("sluice_tiering_alarm{{topic=\"{topic}\"}}");
    let failed = format!("sluice_tiering_rounds_total{{topic=\"{topic}\",result=\"failed\"}}");
    let wait_for = |what: &'static str, check: &dyn Fn(&str) -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            let s = scrape(&metrics_addr);
            if check(&s) {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    // Healthy: archived and trimmed.
    wait_for("the first round", &|_| {
        watermarks(&topic, 0) == (1_000, 1_000)
    });
    let s = wait_for("alarm 0", &|s| metric(s, &alarm) == Some(0.0));
    assert_eq!(metric(&s, &failed), None, "no failed round yet");

    // The store goes away; new records are not archived and must stay in the broker.
    eprintln!("{} cutting the store", chrono::Utc::now());
    proxy.cut();
    produce_n(1_000, 500).await;
    let s = wait_for("the alarm", &|s| {
        metric(s, &alarm) == Some(1.0) && metric(s, &failed).is_some_and(|n| n >= 2.0)
    });
    assert_eq!(
        metric(
            &s,
            &format!("sluice_tiering_boundary{{topic=\"{topic}\",partition=\"0\"}}")
        ),
        Some(1_000.0)
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        watermarks(&topic, 0),
        (1_000, 1_500),
        "nothing unarchived deleted"
    );
    let s = scrape(&metrics_addr);
    assert_eq!(
        metric(
            &s,
            &format!("sluice_tiering_broker_backlog_records{{topic=\"{topic}\",partition=\"0\"}}")
        ),
        Some(500.0),
        "the backlog grows while the store is down:\n{s}"
    );

    // Back again: the backlog is archived, then deleted, and the alarm clears.
    eprintln!("{} restoring the store", chrono::Utc::now());
    proxy.restore();
    wait_for("catch-up", &|s| {
        metric(s, &alarm) == Some(0.0) && watermarks(&topic, 0) == (1_500, 1_500)
    });
    signal(&child.0, Signal::SIGTERM);
    assert!(child.0.wait().unwrap().success());
    let lake = Lake::new(&lake_cfg).unwrap();
    assert_eq!(rows(&read_table(&lake, "archive").await), 1_500);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compacted_topic_is_refused_with_a_clear_message() {
    let (dir, lake_cfg) = local_lake();
    let topic = unique("tier-compacted");
    create_topic_with(&topic, 1, &[("cleanup.policy", "compact")]).await;
    let config = tiering_config(dir.path(), &topic, &lake_cfg, "", "");
    let out = tier_once(&config, None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cleanup.policy is \"compact\"") && err.contains("does not tier it"),
        "{err}"
    );
    // A topic whose own retention can drop records before they are archived gets a warning.
    let risky = unique("tier-risky");
    create_topic_with(&risky, 1, &[("retention.ms", "600000")]).await;
    let config = tiering_config(dir.path(), &risky, &lake_cfg, "", "");
    let out = tier_once(&config, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("retention_ms=600000") && err.contains("set retention.ms=-1"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_topic_table_counts_every_record_once_across_both_tiers() {
    let (dir, lake_cfg) = local_lake();
    let topic = unique("tier-query");
    create_topic_with(&topic, 2, &[("retention.ms", "-1")]).await;
    let old = chrono::Utc::now().timestamp_millis() - 7_200_000;
    let clicks = |from: u64, n: u64, ts: i64| -> Vec<TestRecord> {
        (from..from + n)
            .map(|i| TestRecord {
                partition: Some((i % 2) as i32),
                value: Some(click(i, "2026-03-01T10:00:00Z")),
                timestamp: Some(ts + i as i64),
                ..Default::default()
            })
            .collect()
    };
    produce(&topic, clicks(0, 3_000, old)).await;
    let config = tiering_config(
        dir.path(),
        &topic,
        &lake_cfg,
        "hot_retention = \"0s\"",
        &PIPELINE
            .split("[[pipeline.aggregate]]")
            .next()
            .unwrap()
            .replace("TOPIC", &topic),
    );
    // The pipeline ingests the first 3,000; tiering archives them and, once the pipeline has
    // committed them, deletes them from the broker. Then 700 more are only in the broker.
    run_until_caught_up(&config);
    let out = tier_once(&config, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    produce(
        &topic,
        clicks(3_000, 700, chrono::Utc::now().timestamp_millis()),
    )
    .await;
    for p in 0..2 {
        assert_eq!(watermarks(&topic, p), (1_500, 1_850));
    }
    let sql = format!(
        "SELECT count(*) AS n, count(DISTINCT (\"partition\", \"offset\")) AS d, count(page) AS decoded, min(\"offset\") AS lo, max(\"offset\") AS hi FROM kafka.\"{topic}\";\nSELECT count(*) AS archived FROM archive;"
    );
    let query_stdin = || {
        let out = Command::new(sluice_bin())
            .args(["query", "--format", "csv", "--config"])
            .arg(&config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(sql.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Decoded columns come from the events table: null for the 700 not ingested yet.
    let stdout = query_stdin();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        vec![
            "n,d,decoded,lo,hi",
            "3700,3700,3000,0,1849",
            "archived",
            "3000"
        ],
        "{stdout}"
    );
    // After another run everything is ingested and archived; still each record once.
    run_until_caught_up(&config);
    let stdout = query_stdin();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        vec![
            "n,d,decoded,lo,hi",
            "3700,3700,3700,0,1849",
            "archived",
            "3700"
        ],
        "{stdout}"
    );
    // An unknown topic table names the known ones.
    let out = Command::new(sluice_bin())
        .args(["query", "--config"])
        .arg(&config)
        .arg("SELECT * FROM kafka.nope")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no topic table kafka.nope") && err.contains(&format!("kafka.{topic}")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_survives_the_log_start_moving_past_it() {
    let (dir, lake_cfg) = local_lake();
    let topic = unique("tier-moving");
    create_topic_with(&topic, 1, &[("retention.ms", "-1")]).await;
    let old = chrono::Utc::now().timestamp_millis() - 7_200_000;
    // 20,000 records of about 1 KB, read through a small fetch window, slowly.
    let recs: Vec<TestRecord> = (0..20_000u64)
        .map(|i| TestRecord {
            partition: Some(0),
            key: Some(i.to_be_bytes().to_vec()),
            value: Some(vec![(i % 251) as u8; 1000]),
            timestamp: Some(old + i as i64),
            ..Default::default()
        })
        .collect();
    produce(&topic, recs).await;
    let config = tiering_config(dir.path(), &topic, &lake_cfg, "hot_retention = \"0s\"", "");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace(
        "[lake]",
        "[kafka.options]\n\"queued.max.messages.kbytes\" = \"64\"\n\"fetch.max.bytes\" = \"1048576\"\n\"message.max.bytes\" = \"1000000\"\n\"max.partition.fetch.bytes\" = \"65536\"\n\n[lake]",
    );
    std::fs::write(&config, text).unwrap();
    let cfg = load_config(&config);
    let lake = Lake::new(&cfg.lake).unwrap();
    // Small batches: the read stays within a few hundred records of what was received.
    let log = UnifiedLog::new(&cfg, &lake, &topic)
        .unwrap()
        .with_batch_records(100);
    assert_eq!(log.boundary(0).await.unwrap(), None, "nothing archived yet");

    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let reader = {
        let log = log.clone();
        tokio::spawn(async move {
            log.read(
                0,
                LogStart::Offset(0),
                LogEnd::End,
                &tx,
                &CancellationToken::new(),
            )
            .await
        })
    };
    let mut offsets = Vec::new();
    let mut tiered = false;
    while let Some(raw) = rx.recv().await {
        offsets.extend(raw.offsets.iter().copied());
        if !tiered && offsets.len() > 500 {
            // Archive everything and delete it from the broker while the read is at ~500.
            let out = tier_once(&config, None);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(watermarks(&topic, 0), (20_000, 20_000));
            tiered = true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = reader.await.unwrap().unwrap();
    assert!(tiered);
    assert_eq!(
        offsets,
        (0..20_000).collect::<Vec<i64>>(),
        "no gap, no duplicate"
    );
    assert!(
        stats.from_broker > 0 && stats.from_archive > 0 && stats.from_broker < 20_000,
        "the read moved from the broker to the archive: {stats:?}"
    );
}

/// Archive rows for `offsets` of partition 0 of `topic`, in the order given.
fn archive_rows(topic: &str, offsets: impl IntoIterator<Item = i64>) -> RecordBatch {
    let topic: std::sync::Arc<str> = std::sync::Arc::from(topic);
    let mut b = sluice_kafka::RawBatchBuilder::new(1024, true);
    for o in offsets {
        let value = format!("value-{o}").into_bytes();
        b.push(
            &topic,
            0,
            o,
            Some(1_700_000_000_000 + o),
            0,
            Some(format!("k{o}").as_bytes()),
            Some(&value),
            || vec![("h".into(), Some(o.to_be_bytes().to_vec()))],
        );
    }
    let raw = b.finish();
    sluice_tiering::archive::to_archive_batch(&raw, &sluice_tiering::archive_schema()).unwrap()
}

/// The archive is read straight from its Parquet files. Files that a compaction concatenated
/// out of order are sorted row group by row group, and overlapping files fall back to a sorted
/// query: either way the unified read returns every offset once, in order, with its bytes.
#[tokio::test(flavor = "multi_thread")]
async fn archive_files_out_of_order_or_overlapping_read_back_in_offset_order() {
    let (dir, lake_cfg) = local_lake();
    let topic = unique("tier-order");
    let config = tiering_config(dir.path(), &topic, &lake_cfg, "", "");
    let cfg = load_config(&config);
    let lake = Lake::new(&cfg.lake).unwrap();
    let spec = sluice_lake::TableSpec {
        partition_columns: vec!["partition".into()],
        properties: Default::default(),
        description: None,
    };
    let table = lake
        .open_or_create("archive", &sluice_tiering::archive_schema(), &spec)
        .await
        .unwrap();
    let mut writer =
        sluice_lake::TableWriter::new("archive", table, sluice_lake::WriterOptions::default())
            .unwrap();
    let app = sluice_tiering::archive_app_id(&topic, 0);
    // One file in order; one file whose single row group holds [2000, 3000) before [1000, 2000).
    writer.write(archive_rows(&topic, 0..1000)).await.unwrap();
    writer
        .commit(&[(app.clone(), 1000)], Default::default())
        .await
        .unwrap();
    writer
        .write(archive_rows(&topic, (2000..3000).chain(1000..2000)))
        .await
        .unwrap();
    writer
        .commit(&[(app.clone(), 3000)], Default::default())
        .await
        .unwrap();

    let log = UnifiedLog::new(&cfg, &lake, &topic).unwrap();
    let check = |got: &[Got], end: i64| {
        let offsets: Vec<i64> = got.iter().map(|g| g.offset).collect();
        assert_eq!(
            offsets,
            (0..end).collect::<Vec<_>>(),
            "every offset once, in order"
        );
        for g in got {
            assert_eq!(
                g.value.as_deref(),
                Some(format!("value-{}", g.offset).as_bytes())
            );
            assert_eq!(g.key.as_deref(), Some(format!("k{}", g.offset).as_bytes()));
            assert_eq!(g.timestamp, Some(1_700_000_000_000 + g.offset));
            assert_eq!(
                g.headers,
                vec![("h".to_string(), Some(g.offset.to_be_bytes().to_vec()))]
            );
        }
    };
    let snapshot = lake.open("archive").await.unwrap().unwrap();
    let plan = sluice_tiering::archive_files::plan(&snapshot, 0, 0, 3000)
        .await
        .unwrap();
    assert_eq!(
        plan.map(|p| p.len()),
        Some(2),
        "read directly: two disjoint row groups"
    );
    let (got, stats) = read_partition(&log, 0, LogStart::Offset(0), LogEnd::Offset(3000)).await;
    assert_eq!((stats.from_archive, stats.from_broker), (3000, 0));
    check(&got, 3000);
    // A range inside the unsorted row group.
    let (got, _) = read_partition(&log, 0, LogStart::Offset(1500), LogEnd::Offset(2500)).await;
    assert_eq!(got.first().map(|g| g.offset), Some(1500));
    assert_eq!(got.len(), 1000);

    // Two files whose ranges interleave (even and odd offsets of [3000, 4000)).
    writer
        .write(archive_rows(&topic, (3000..4000).step_by(2)))
        .await
        .unwrap();
    writer.upload().await.unwrap();
    writer
        .write(archive_rows(&topic, (3001..4000).step_by(2)))
        .await
        .unwrap();
    writer
        .commit(&[(app.clone(), 4000)], Default::default())
        .await
        .unwrap();
    let snapshot = lake.open("archive").await.unwrap().unwrap();
    let plan = sluice_tiering::archive_files::plan(&snapshot, 0, 0, 4000)
        .await
        .unwrap();
    assert!(plan.is_none(), "overlapping files are not read directly");
    let (got, stats) = read_partition(&log, 0, LogStart::Offset(0), LogEnd::Offset(4000)).await;
    assert_eq!(stats.from_archive, 4000);
    check(&got, 4000);
}

/// The dead-letter table commits only when it has rows, so its progress stays at an old bad
/// record: it must not hold the brokers' log start there (docs/windows.md, "Restarts": the
/// dead-letter and late tables never need records below the events table's progress).
#[tokio::test(flavor = "multi_thread")]
async fn an_old_dead_letter_does_not_hold_the_log_start_back() {
    let (dir, lake_cfg) = local_lake();
    let topic = unique("tier-dead");
    create_topic_with(&topic, 3, &[("retention.ms", "-1")]).await;
    let pipeline =
        PIPELINE[..PIPELINE.find("[[pipeline.aggregate]]").unwrap()].replace("TOPIC", &topic);
    let config = tiering_config(
        dir.path(),
        &topic,
        &lake_cfg,
        "hot_retention = \"0s\"",
        &pipeline,
    );
    // A dead letter first in every partition, committed in a flush of its own.
    let bad = (0..3).map(|p| TestRecord {
        partition: Some(p),
        value: Some(b"{not json".to_vec()),
        ..Default::default()
    });
    produce(&topic, bad).await;
    run_until_caught_up(&config);
    // Then good records only, committed in later flushes.
    let good = (0..300u64).map(|i| TestRecord {
        partition: Some((i % 3) as i32),
        value: Some(click(i, "2026-03-01T10:00:00Z")),
        ..Default::default()
    });
    produce(&topic, good).await;
    run_until_caught_up(&config);
    let lake = sluice_lake::Lake::new(&lake_cfg).unwrap();
    assert_eq!(rows(&read_table(&lake, "clicks_dead_letter").await), 3);
    assert_eq!(rows(&read_table(&lake, "events").await), 300);
    let out = tier_once(&config, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One round moves every partition's log start to the pipeline's committed progress.
    for p in 0..3 {
        assert_eq!(watermarks(&topic, p), (101, 101), "partition {p}");
    }
}

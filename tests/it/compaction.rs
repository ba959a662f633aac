//! Compaction and vacuum: fewer files, the same rows, history and time travel intact, safe
//! alongside live ingest; orphans of a killed writer removed only after the retention.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use sluice_lake::deltalake::arrow::array::{Array, Int64Array, StringArray};
use sluice_lake::deltalake::arrow::datatypes::{DataType, Field, Schema};
use sluice_lake::deltalake::arrow::record_batch::RecordBatch;
use sluice_lake::{Lake, TableSpec, TableWriter};

use crate::support::*;

async fn ids(lake: &Lake, name: &str, version: Option<i64>) -> Vec<i64> {
    let table = match version {
        Some(v) => lake.open_at_version(name, v).await.unwrap(),
        None => lake.open(name).await.unwrap().unwrap(),
    };
    let batches = sluice_lake::scan_sql("t", &table, "SELECT id FROM t ORDER BY id")
        .await
        .unwrap();
    batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect()
}

/// Files and bytes per partition directory of the table's current version.
fn files_per_partition(
    table: &sluice_lake::deltalake::DeltaTable,
) -> BTreeMap<String, (usize, u64)> {
    let mut out: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for f in table.snapshot().unwrap().log_data().iter() {
        let path = f.path().to_string();
        let part = path.split('/').next().unwrap_or("").to_string();
        let e = out.entry(part).or_default();
        e.0 += 1;
        e.1 += f.size() as u64;
    }
    out
}

async fn small_commits(lake: &Lake, name: &str, commits: i64) {
    small_commits_with(lake, name, commits, &[]).await
}

/// [`small_commits`] on a table created with extra Delta table properties.
async fn small_commits_with(lake: &Lake, name: &str, commits: i64, properties: &[(&str, &str)]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("payload", DataType::Utf8, true),
        Field::new("day", DataType::Utf8, false),
    ]));
    let spec = TableSpec {
        partition_columns: vec!["day".into()],
        properties: [("delta.checkpointInterval", "10")]
            .iter()
            .chain(properties)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        description: None,
    };
    let table = lake.open_or_create(name, &schema, &spec).await.unwrap();
    let mut w = TableWriter::new(name, table, Default::default()).unwrap();
    for c in 0..commits {
        commit_small(&mut w, c).await;
    }
}

/// Commit `c` of [`small_commits`]: ids `20c..20c+20` over two days, progress `c + 1`.
async fn commit_small(w: &mut TableWriter, c: i64) {
    let ids: Vec<i64> = (c * 20..c * 20 + 20).collect();
    let batch = RecordBatch::try_new(
        w.schema(),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(StringArray::from_iter_values(
                ids.iter()
                    .map(|i| format!("row {i} {}", "x".repeat((*i % 50) as usize))),
            )),
            Arc::new(StringArray::from_iter_values(ids.iter().map(|i| {
                if i % 2 == 0 {
                    "2026-01-01"
                } else {
                    "2026-01-02"
                }
            }))),
        ],
    )
    .unwrap();
    w.write(batch).await.unwrap();
    w.commit(&[("sluice:test:t:0".into(), c + 1)], Default::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn three_hundred_small_commits_compact_into_few_files_with_history_intact() {
    let (_dir, lake_cfg) = local_lake();
    let lake = Lake::new(&lake_cfg).unwrap();
    small_commits(&lake, "small", 300).await;
    let before_ids = ids(&lake, "small", None).await;
    assert_eq!(before_ids.len(), 6000);
    let before = lake.open("small").await.unwrap().unwrap();
    assert_eq!(before.version(), Some(300));
    let before_files: usize = files_per_partition(&before).values().map(|v| v.0).sum();
    assert_eq!(before_files, 600, "one file per partition per commit");

    // Checkpoints every 10 commits (delta.checkpointInterval).
    let log = _dir.path().join("small").join("_delta_log");
    assert!(log.join("_last_checkpoint").exists());
    let listing: Vec<String> = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("checkpoint"))
        .collect();
    let checkpoints = listing
        .iter()
        .filter(|n| n.ends_with(".checkpoint.parquet"))
        .count();
    assert_eq!(
        checkpoints, 30,
        "one checkpoint every 10 commits: {listing:?}"
    );
    assert!(log.join(format!("{:020}.checkpoint.parquet", 299)).exists());
    let target = 16 * 1024;
    let report = sluice_compaction::compact(&lake, "small", target, &[])
        .await
        .unwrap();
    assert_eq!(report.before.files, 600);
    let version = report.version.expect("compaction committed");
    // A lease commit, one commit per optimize pass, a release commit.
    assert!(
        (302..=306).contains(&version),
        "version after compaction: {version}"
    );
    let after = lake.open("small").await.unwrap().unwrap();
    for (part, (files, bytes)) in files_per_partition(&after) {
        let bound = bytes.div_ceil(target) as usize + 1;
        assert!(
            files <= bound,
            "{part}: {files} files for {bytes} bytes (bound {bound})"
        );
    }
    assert_eq!(
        report.after.files,
        files_per_partition(&after)
            .values()
            .map(|v| v.0)
            .sum::<usize>()
    );
    assert!(
        report.after.files < 40,
        "{} files after compaction",
        report.after.files
    );
    assert_eq!(
        ids(&lake, "small", None).await,
        before_ids,
        "the row set is unchanged"
    );
    // The history is intact and time travel still reads the pre-compaction files.
    use futures::StreamExt;
    let history: Vec<_> = after.history(None).collect().await;
    assert_eq!(
        history.len() as i64,
        after.version().unwrap() as i64 + 1,
        "no version is missing"
    );
    let ops: BTreeSet<String> = history
        .iter()
        .filter_map(|c| c.as_ref().ok()?.operation.clone())
        .collect();
    assert!(
        ops.contains("OPTIMIZE") && ops.contains("STREAMING UPDATE"),
        "{ops:?}"
    );
    let old = lake.open_at_version("small", 300).await.unwrap();
    assert_eq!(
        files_per_partition(&old)
            .values()
            .map(|v| v.0)
            .sum::<usize>(),
        600
    );
    assert_eq!(ids(&lake, "small", Some(300)).await, before_ids);
    assert_eq!(ids(&lake, "small", Some(150)).await.len(), 3000);
    // Progress survives compaction.
    assert_eq!(
        sluice_lake::committed_progress("small", &after, "sluice:test:t:0")
            .await
            .unwrap(),
        Some(300)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_during_live_ingest_keeps_every_offset_exactly_once() {
    let (dir, lake_cfg) = local_lake();
    let topic = unique("cmp-live");
    create_topic(&topic, 3).await;
    let config = pipeline_config(
        dir.path(),
        &topic,
        &lake_cfg,
        "flush = { max_rows = 300, max_latency = \"200ms\" }",
    );
    // The service compacts every second on its own, and the CLI compacts too.
    let metrics_addr = format!("127.0.0.1:{}", listen_port());
    let mut child = Command::new(sluice_bin())
        .args(["run", "--config"])
        .arg(&config)
        .env("SLUICE__MAINTENANCE__COMPACT_INTERVAL", "1s")
        .env("SLUICE__SERVER__LISTEN", &metrics_addr)
        .env("SLUICE__MAINTENANCE__TARGET_FILE_SIZE", "64KiB")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut produced = BTreeSet::new();
    let mut compactions = Vec::new();
    for round in 0..6u64 {
        let recs = (0..3000u64).map(|i| TestRecord {
            value: Some(click(round * 3000 + i, "2026-03-01T10:00:00Z")),
            ..Default::default()
        });
        produced.extend(produce(&topic, recs).await);
        tokio::time::sleep(Duration::from_millis(700)).await;
        let out = Command::new(sluice_bin())
            .args(["compact", "--table", "events", "--config"])
            .arg(&config)
            .env("SLUICE__MAINTENANCE__TARGET_FILE_SIZE", "64KiB")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        compactions.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    // The service reports its own compactions.
    let scraped = {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(&metrics_addr).unwrap();
        write!(
            c,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut t = String::new();
        c.read_to_string(&mut t).unwrap();
        t
    };
    let removed: f64 = scraped
        .lines()
        .find_map(|l| {
            l.strip_prefix("sluice_compaction_files_removed_total{table=\"events\"}")
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0);
    assert!(
        removed > 0.0,
        "no compaction reported by the service:\n{scraped}"
    );
    signal(&child, Signal::SIGTERM);
    assert!(child.wait().unwrap().success());
    run_until_caught_up(&config);
    let lake = Lake::new(&lake_cfg).unwrap();
    let rows = positions(&read_table(&lake, "events").await);
    assert_eq!(rows.len(), produced.len(), "no row lost or duplicated");
    assert_eq!(rows.into_iter().collect::<BTreeSet<_>>(), produced);
    // The CLI ran beside the service's own compactions. Which of the two found the small
    // files first is a race, so each CLI report only has to be well formed and never grow
    // the file count; the service's removals are asserted above, and a CLI compaction
    // that shrinks a table is shown by `three_hundred_small_commits_...`.
    for o in &compactions {
        let line = o
            .lines()
            .find(|l| l.starts_with("events:"))
            .unwrap_or_else(|| panic!("no report line for events: {o}"));
        let n: Vec<usize> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        assert!(n.len() >= 4 && n[2] <= n[0], "{line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn vacuum_removes_orphans_after_the_retention_and_never_live_files() {
    let (dir, lake_cfg) = local_lake();
    let lake = Lake::new(&lake_cfg).unwrap();
    small_commits(&lake, "vac", 20).await;
    let rows = ids(&lake, "vac", None).await;
    // A writer killed after uploading a file but before committing leaves an orphan.
    let table = lake.open("vac").await.unwrap().unwrap();
    let live: Vec<String> = table
        .snapshot()
        .unwrap()
        .log_data()
        .iter()
        .map(|f| f.path().to_string())
        .collect();
    let table_dir = dir.path().join("vac");
    let orphan = table_dir
        .join("day=2026-01-01")
        .join("part-orphan-from-a-killed-writer.parquet");
    std::fs::copy(table_dir.join(&live[0]), &orphan).unwrap();
    // Compaction makes the 40 small files unreferenced (but keeps them for time travel).
    sluice_compaction::compact(&lake, "vac", 1 << 20, &[])
        .await
        .unwrap();

    let err = sluice_compaction::vacuum(&lake, "vac", Duration::from_secs(10), false, false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    let young = sluice_compaction::vacuum(&lake, "vac", Duration::from_secs(3600), false, false)
        .await
        .unwrap();
    assert!(
        young.files_deleted.is_empty(),
        "nothing is older than an hour: {:?}",
        young.files_deleted
    );
    assert!(orphan.exists());

    tokio::time::sleep(Duration::from_secs(3)).await;
    let dry = sluice_compaction::vacuum(&lake, "vac", Duration::from_secs(2), true, true)
        .await
        .unwrap();
    assert!(orphan.exists(), "a dry run deletes nothing");
    let done = sluice_compaction::vacuum(&lake, "vac", Duration::from_secs(2), true, false)
        .await
        .unwrap();
    assert_eq!(done.files_deleted.len(), dry.files_deleted.len());
    assert!(!orphan.exists(), "the orphan is gone");
    assert_eq!(
        done.files_deleted.len(),
        41,
        "the orphan and the 40 compacted-away files: {:?}",
        done.files_deleted
    );
    let current = lake.open("vac").await.unwrap().unwrap();
    for f in current.snapshot().unwrap().log_data().iter() {
        assert!(
            table_dir.join(f.path().as_ref()).exists(),
            "a live file was deleted: {}",
            f.path()
        );
    }
    assert_eq!(ids(&lake, "vac", None).await, rows);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_concurrent_compactions_never_duplicate_rows() {
    let (_dir, lake_cfg) = local_lake();
    let lake = Lake::new(&lake_cfg).unwrap();
    small_commits(&lake, "race", 60).await;
    let rows = ids(&lake, "race", None).await;
    for _ in 0..3 {
        // Without the lease, delta-rs lets both commit removes of the same files.
        let (a, b) = tokio::join!(
            sluice_compaction::compact(&lake, "race", 1 << 20, &[]),
            sluice_compaction::compact(&lake, "race", 1 << 20, &[])
        );
        a.unwrap();
        b.unwrap();
        assert_eq!(
            ids(&lake, "race", None).await,
            rows,
            "rows duplicated or lost by racing compactions"
        );
        small_commits(&lake, "race_more", 1).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn z_ordered_compaction_keeps_the_rows() {
    let (_dir, lake_cfg) = local_lake();
    let lake = Lake::new(&lake_cfg).unwrap();
    small_commits(&lake, "z", 30).await;
    let rows = ids(&lake, "z", None).await;
    let report = sluice_compaction::compact(&lake, "z", 1 << 20, &["id".to_string()])
        .await
        .unwrap();
    assert_eq!(report.before.files, 60);
    assert!(report.after.files < report.before.files, "{report:?}");
    assert!(report.version.is_some());
    assert_eq!(ids(&lake, "z", None).await, rows);
}

/// Ingest commits do not sweep `_delta_log` (delta-rs would list all of it after every
/// commit); maintenance deletes the expired entries before the newest old-enough checkpoint,
/// and the table still reads every row and its progress.
#[tokio::test(flavor = "multi_thread")]
async fn expired_log_entries_are_left_by_ingest_commits_and_deleted_by_maintenance() {
    let (dir, lake_cfg) = local_lake();
    let lake = Lake::new(&lake_cfg).unwrap();
    let retention = [("delta.logRetentionDuration", "interval 1 second")];
    small_commits_with(&lake, "logs", 25, &retention).await;
    let log = dir.path().join("logs").join("_delta_log");
    let commit = |v: i64| log.join(format!("{v:020}.json"));
    // Versions 0 (create) to 25; checkpoints at 9 and 19.
    assert!((0..=25).all(|v| commit(v).exists()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Another ingest commit, past the retention: still nothing deleted.
    small_commits_more(&lake, "logs").await;
    assert!(
        (0..=26).all(|v| commit(v).exists()),
        "an ingest commit deleted log entries"
    );

    let deleted = sluice_compaction::clean_expired_logs(&lake, "logs")
        .await
        .unwrap();
    // Everything before the newest checkpoint (19): commits 0-18 and checkpoint 9.
    assert_eq!(deleted, 20);
    assert!((0..=18).all(|v| !commit(v).exists()));
    assert!((19..=26).all(|v| commit(v).exists()));
    assert!(!log.join(format!("{:020}.checkpoint.parquet", 9)).exists());
    assert!(log.join(format!("{:020}.checkpoint.parquet", 19)).exists());

    let table = lake.open("logs").await.unwrap().unwrap();
    assert_eq!(table.version(), Some(26));
    assert_eq!(ids(&lake, "logs", None).await, (0..520).collect::<Vec<_>>());
    assert_eq!(
        sluice_lake::committed_progress("logs", &table, "sluice:test:t:0")
            .await
            .unwrap(),
        Some(26)
    );

    // With `delta.enableExpiredLogCleanup = false` nothing is deleted.
    let keep = [
        ("delta.logRetentionDuration", "interval 1 second"),
        ("delta.enableExpiredLogCleanup", "false"),
    ];
    small_commits_with(&lake, "kept", 25, &keep).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        sluice_compaction::clean_expired_logs(&lake, "kept")
            .await
            .unwrap(),
        0
    );
    let kept = dir.path().join("kept").join("_delta_log");
    assert!((0..=25).all(|v| kept.join(format!("{v:020}.json")).exists()));
}

/// One more [`commit_small`] to table `name` (the next after its current version).
async fn small_commits_more(lake: &Lake, name: &str) {
    let table = lake.open(name).await.unwrap().unwrap();
    let version = table.version().unwrap() as i64;
    let mut w = TableWriter::new(name, table, Default::default()).unwrap();
    commit_small(&mut w, version).await;
}

/// `sluice run` compacts on its `compact_interval` in a child process (`sluice compact
/// --report-json`): the table ends with fewer files than commits, every record exactly once,
/// the service's metrics count what the child rewrote, and no child outlives the service.
#[tokio::test(flavor = "multi_thread")]
async fn the_service_compacts_in_a_child_process_while_ingesting() {
    let (dir, lake_cfg) = local_lake();
    let topic = unique("compact-child");
    create_topic(&topic, 3).await;
    let config = pipeline_config(
        dir.path(),
        &topic,
        &lake_cfg,
        "flush = { max_latency = \"200ms\" }",
    );
    let port = listen_port();
    let addr = format!("127.0.0.1:{port}");
    let mut service = KillOnDrop(
        Command::new(sluice_bin())
            .args(["run", "--config"])
            .arg(&config)
            .env("SLUICE__SERVER__LISTEN", &addr)
            .env("SLUICE__MAINTENANCE__COMPACT_INTERVAL", "2s")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Ten rounds of 60 records a second apart: many small commits for the child to merge.
    let mut next = 0u64;
    for _ in 0..10 {
        produce(
            &topic,
            (next..next + 60).map(|i| TestRecord {
                value: Some(click(i, "2026-03-01T10:00:00Z")),
                ..Default::default()
            }),
        )
        .await;
        next += 60;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let removed = loop {
        let text = scrape(&addr);
        let rows = metric(
            &text,
            "sluice_rows_out_total{pipeline=\"clicks\",destination=\"events\"}",
        )
        .unwrap_or(0.0);
        let removed = metric(
            &text,
            "sluice_compaction_files_removed_total{table=\"events\"}",
        )
        .unwrap_or(0.0);
        // Wait for a compaction after the last rows were committed.
        if rows >= 600.0
            && removed >= 2.0
            && metric(&text, "sluice_table_files{table=\"events\"}") == Some(1.0)
        {
            break removed;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no compaction of all 600 rows seen:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    signal(&service.0, Signal::SIGTERM);
    assert!(service.0.wait().unwrap().success());

    let lake = Lake::new(&lake_cfg).unwrap();
    let table = lake.open("events").await.unwrap().unwrap();
    let files: usize = files_per_partition(&table).values().map(|v| v.0).sum();
    let commits = table.version().unwrap();
    assert!(
        (files as u64) < commits,
        "{files} files after {commits} commits ({removed} removed by compaction)"
    );
    let batches = read_table(&lake, "events").await;
    let positions = positions(&batches);
    assert_eq!(positions.len(), 600);
    assert_eq!(
        positions.iter().collect::<BTreeSet<_>>().len(),
        600,
        "a record twice"
    );
    // No `sluice compact` child of this service is left running.
    let needle = config.display().to_string();
    let children: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(" compact ") && c.contains(&needle))
        .collect();
    assert!(children.is_empty(), "left running: {children:?}");
}

/// Every data file under `dir` (not the log), relative to it.
fn data_files(dir: &std::path::Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() && !p.ends_with("_delta_log") {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel);
            }
        }
    }
    out
}

fn set_age(path: &std::path::Path, age: Duration) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::SystemTime::now() - age).unwrap();
}

fn vacuum_cmd(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(sluice_bin())
        .arg("vacuum")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_vacuums_on_its_interval_and_never_deletes_live_or_young_files() {
    let (dir, lake_cfg) = local_lake();
    let topic = unique("vacuum-run");
    create_topic(&topic, 1).await;
    let config = pipeline_config(dir.path(), &topic, &lake_cfg, "");
    // Three runs, three commits and three small files; compaction then replaces them with one
    // and keeps the three (removed, for time travel) until a vacuum past the retention.
    for round in 0..3u64 {
        let recs = (round * 100..round * 100 + 100).map(|i| TestRecord {
            value: Some(click(i, "2026-03-01T10:00:00Z")),
            ..Default::default()
        });
        produce(&topic, recs).await;
        run_until_caught_up(&config);
    }
    let compact = Command::new(sluice_bin())
        .args(["compact", "--table", "events", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(compact.status.success(), "{compact:?}");
    let lake = Lake::new(&lake_cfg).unwrap();
    let table_dir = dir.path().join("events");
    let table = lake.open("events").await.unwrap().unwrap();
    let live: BTreeSet<String> = table
        .snapshot()
        .unwrap()
        .log_data()
        .iter()
        .map(|f| f.path().to_string())
        .collect();
    let removed: BTreeSet<String> = data_files(&table_dir).difference(&live).cloned().collect();
    assert!(
        live.len() == 1 && removed.len() >= 3,
        "{live:?} {removed:?}"
    );
    // Every data file two hours old: the live one must survive because the table references
    // it, the removed ones because their removal is younger than the retention. Orphans of
    // a killed writer: one two hours old (past the retention), one 30 minutes old.
    for f in live.iter().chain(&removed) {
        set_age(&table_dir.join(f), Duration::from_secs(7_200));
    }
    let partition_dir = table_dir
        .join(live.first().unwrap())
        .parent()
        .unwrap()
        .to_path_buf();
    let old_orphan = partition_dir.join("part-orphan-old.parquet");
    let young_orphan = partition_dir.join("part-orphan-young.parquet");
    for (orphan, age) in [(&old_orphan, 7_200), (&young_orphan, 1_800)] {
        std::fs::copy(table_dir.join(live.first().unwrap()), orphan).unwrap();
        set_age(orphan, Duration::from_secs(age));
    }

    let port = listen_port();
    let addr = format!("127.0.0.1:{port}");
    let mut service = KillOnDrop(
        Command::new(sluice_bin())
            .args(["run", "--config"])
            .arg(&config)
            .env("SLUICE__SERVER__LISTEN", &addr)
            .env("SLUICE__MAINTENANCE__COMPACT_INTERVAL", "0s")
            .env("SLUICE__MAINTENANCE__VACUUM_INTERVAL", "1s")
            .env("SLUICE__MAINTENANCE__VACUUM_RETENTION", "1h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let deleted = metric(
            &scrape(&addr),
            "sluice_vacuum_files_deleted_total{table=\"events\"}",
        );
        let shown = http_get(&addr, "/api/status")
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|doc| {
                doc["tables"]
                    .as_array()?
                    .iter()
                    .find(|t| t["name"] == "events")
                    .map(|t| t["last_vacuum_ms"].as_i64())
            })
            .flatten();
        // The counter adds up every round; the status shows the last round's time.
        if deleted == Some(1.0) && shown.is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no vacuum of the events table: {deleted:?} {shown:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // More rounds come and delete nothing more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let text = scrape(&addr);
    assert_eq!(
        metric(&text, "sluice_vacuum_files_deleted_total{table=\"events\"}"),
        Some(1.0),
        "{text}"
    );
    signal(&service.0, Signal::SIGTERM);
    assert!(service.0.wait().unwrap().success());
    assert!(!old_orphan.exists(), "the old orphan is vacuumed");
    assert!(
        young_orphan.exists(),
        "an orphan younger than the retention stays"
    );
    for f in live.iter().chain(&removed) {
        assert!(table_dir.join(f).exists(), "{f} was deleted");
    }
    assert_eq!(rows(&read_table(&lake, "events").await), 300);

    // The command by hand: a retention under an hour is refused without --force; a dry run
    // lists and deletes nothing; then the young orphan goes, and nothing live.
    let refused = vacuum_cmd(&config, &["--retention", "10m"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("under 1 hour") && err.contains("--force"),
        "{err}"
    );
    let dry = vacuum_cmd(
        &config,
        &[
            "--table",
            "events",
            "--retention",
            "20m",
            "--force",
            "--dry-run",
        ],
    );
    let out = String::from_utf8_lossy(&dry.stdout);
    assert!(out.contains("events: 1 file(s) would be deleted"), "{out}");
    assert!(young_orphan.exists());
    let done = vacuum_cmd(
        &config,
        &["--table", "events", "--retention", "20m", "--force"],
    );
    let out = String::from_utf8_lossy(&done.stdout);
    assert!(out.contains("events: 1 file(s) deleted"), "{out}");
    assert!(!young_orphan.exists());
    for f in &live {
        assert!(table_dir.join(f).exists(), "{f} was deleted");
    }
    assert_eq!(rows(&read_table(&lake, "events").await), 300);

    // A config asking for a retention under an hour names the key and the way out.
    let validate = Command::new(sluice_bin())
        .args(["validate", "--config"])
        .arg(&config)
        .env("SLUICE__MAINTENANCE__VACUUM_RETENTION", "10m")
        .output()
        .unwrap();
    assert!(!validate.status.success());
    let err = format!(
        "{}{}",
        String::from_utf8_lossy(&validate.stdout),
        String::from_utf8_lossy(&validate.stderr)
    );
    assert!(
        err.contains("maintenance.vacuum_retention") && err.contains("vacuum_retention_check"),
        "{err}"
    );
}

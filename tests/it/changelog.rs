//! Upsert mode end to end: changelog topics produced by an independent client
//! (tests/py/changelog.py, confluent-kafka) give a table equal to the last state per key,
//! checked by the same script through the deltalake Python package, also after SIGKILLs and
//! at every version of the table.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

fn python() -> String {
    std::env::var("SLUICE_TEST_PYTHON").expect("SLUICE_TEST_PYTHON (set by scripts/test)")
}

fn script(args: &[&str]) -> String {
    let path = repo_root().join("tests/py/changelog.py");
    let out = Command::new(python())
        .arg(path)
        .args(args)
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "changelog.py {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// An upsert pipeline `accounts` over `topic` into table `accounts`; `extra` holds more
/// pipeline lines (the envelope, how changes are applied, a flush policy replacing the
/// default one).
fn upsert_config(
    dir: &std::path::Path,
    topic: &str,
    lake_root: &str,
    extra: &str,
) -> std::path::PathBuf {
    let flush = if extra.contains("flush =") {
        ""
    } else {
        r#"flush = { max_rows = 5000, max_latency = "500ms" }"#
    };
    let text = format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
[kafka.options]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"

[lake]
root = "{lake_root}"

[server]
listen = ""

[[pipeline]]
name = "accounts"
topics = ["{topic}"]
table = "accounts"
mode = "upsert"
key = ["id"]
{extra}
schema = [
  {{ name = "id", type = "long", nullable = false }},
  {{ name = "name", type = "string" }},
  {{ name = "balance", type = "double" }},
  {{ name = "visits", type = "long" }},
]
{flush}
"#,
        brokers = kafka(),
        group = unique("sluice-it"),
    );
    let path = dir.join("sluice.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// The offsets the table has committed, summed over the topic's partitions.
async fn committed(lake: &sluice_lake::Lake, topic: &str) -> i64 {
    let Some(table) = lake.open("accounts").await.unwrap() else {
        return 0;
    };
    let mut sum = 0;
    for p in 0..3 {
        let app = sluice_lake::progress_app_id("accounts", topic, p);
        sum += sluice_lake::committed_progress("accounts", &table, &app)
            .await
            .unwrap()
            .unwrap_or(0);
    }
    sum
}

#[tokio::test(flavor = "multi_thread")]
async fn debezium_changes_survive_sigkills_and_every_version_is_the_state_at_its_offsets() {
    let (dir, lake_cfg) = local_lake();
    let topic = unique("cdc-accounts");
    create_topic(&topic, 3).await;
    let changes = dir.path().join("changes.jsonl");
    let changes = changes.to_str().unwrap();
    let config = upsert_config(
        dir.path(),
        &topic,
        &lake_cfg.root,
        "envelope = \"debezium\"",
    );
    let lake = sluice_lake::Lake::new(&lake_cfg).unwrap();
    // The 200,000 changes go out in ten slices, one before each run, and every run dies
    // while its slice is being applied: half are SIGKILLed at a random moment after their
    // first commit of their own, half abort themselves at a commit step (`SLUICE_FAULT`:
    // right after the first events commit, or before the second flush's commits). A death
    // counts when the table's progress is then short of what was produced.
    const TOTAL: u64 = 200_000;
    const SLICE: u64 = 20_000;
    let faults = ["after_events_commit:1", "before_commit:2"];
    let mut produced: i64 = 0;
    let mut kills_mid_run = 0;
    let mut runs = 0;
    for start in (0..TOTAL).step_by(SLICE as usize) {
        let (from, to) = (start.to_string(), (start + SLICE).to_string());
        let total = TOTAL.to_string();
        let out = script(&[
            "debezium",
            &kafka(),
            &topic,
            &total,
            "10000",
            changes,
            "7",
            &from,
            &to,
        ]);
        produced += out.trim().parse::<i64>().unwrap();
        let before = committed(&lake, &topic).await;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("sluice.log"))
            .unwrap();
        let mut cmd = Command::new(sluice_bin());
        cmd.args(["run", "--config"])
            .arg(&config)
            .env("SLUICE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        let fault = (runs % 2 == 1).then(|| faults[(runs / 2) % faults.len()]);
        if let Some(f) = fault {
            cmd.env("SLUICE_FAULT", f);
        }
        runs += 1;
        let mut child = KillOnDrop(cmd.spawn().unwrap());
        let started = std::time::Instant::now();
        if fault.is_some() {
            while child.0.try_wait().unwrap().is_none()
                && started.elapsed() < Duration::from_secs(90)
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else {
            while committed(&lake, &topic).await == before
                && started.elapsed() < Duration::from_secs(90)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 100)).await;
        }
        let _ = child.0.kill();
        child.0.wait().unwrap();
        if committed(&lake, &topic).await < produced {
            kills_mid_run += 1;
        }
    }
    let log = || std::fs::read_to_string(dir.path().join("sluice.log")).unwrap_or_default();
    assert!(
        kills_mid_run >= 5,
        "only {kills_mid_run} kills landed mid-run in {runs} runs; log:\n{}",
        log()
    );
    run_until_caught_up(&config);
    assert_eq!(committed(&lake, &topic).await, produced);
    let table = format!("{}/accounts", lake_cfg.root);
    let out = script(&["check", &table, changes]);
    assert!(out.starts_with("ok "), "{out}");
    let prefix = sluice_lake::progress_app_id("accounts", &topic, 0);
    let prefix = prefix.trim_end_matches('0');
    let out = script(&["check-versions", &table, changes, prefix]);
    assert!(out.starts_with("ok "), "{out}");
    eprintln!("{kills_mid_run} kills mid-run in {runs} runs; versions: {out}");
    // Nothing was a dead letter: every change applied.
    let dead = read_table(&lake, "accounts_dead_letter").await;
    assert_eq!(rows(&dead), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compacted_topic_with_tombstones_gives_the_table_of_its_compacted_log() {
    let (dir, lake_cfg) = local_lake();
    let topic = unique("compacted");
    create_topic_with(
        &topic,
        3,
        &[
            ("cleanup.policy", "compact"),
            ("segment.ms", "2000"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "600000"),
        ],
    )
    .await;
    let changes = dir.path().join("changes.jsonl");
    let changes = changes.to_str().unwrap();
    script(&[
        "compacted",
        &kafka(),
        &topic,
        "30000",
        "2000",
        changes,
        "11",
    ]);
    let config = upsert_config(
        dir.path(),
        &topic,
        &lake_cfg.root,
        // The other way of applying changes: delta-rs's MERGE.
        "apply = \"merge\"",
    );
    run_until_caught_up(&config);
    let table = format!("{}/accounts", lake_cfg.root);
    let out = script(&["check-log", &table, &kafka(), &topic]);
    assert!(out.starts_with("ok "), "{out}");
    // And the same as the produced changes (the log read back holds their last states).
    let out = script(&["check", &table, changes]);
    assert!(out.starts_with("ok "), "{out}");
    let keys: u64 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    // `sluice status` says how many keys the table holds and what the last flush did.
    let status = Command::new(sluice_bin())
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.contains(&format!("upsert table: {keys} keys; last flush: ")),
        "{status}"
    );
    assert!(status.contains(" inserted, "), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_and_vacuum_of_an_upsert_table_while_it_changes_keep_the_last_state() {
    let (dir, lake_cfg) = local_lake();
    let topic = unique("upsert-maint");
    create_topic(&topic, 3).await;
    let changes = dir.path().join("changes.jsonl");
    let changes = changes.to_str().unwrap();
    let config = upsert_config(
        dir.path(),
        &topic,
        &lake_cfg.root,
        "flush = { max_rows = 500, max_latency = \"200ms\" }",
    );
    let lake = sluice_lake::Lake::new(&lake_cfg).unwrap();
    let mut child = KillOnDrop(
        Command::new(sluice_bin())
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let wait_for = |produced: i64| {
        let lake = &lake;
        let topic = &topic;
        async move {
            let started = std::time::Instant::now();
            while committed(lake, topic).await < produced {
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "the table did not catch up with {produced} changes"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    // New keys only: every flush adds files and rewrites none, so small files pile up.
    let mut produced: i64 = 0;
    for first in (0..6000).step_by(1000) {
        let out = script(&[
            "inserts",
            &kafka(),
            &topic,
            &first.to_string(),
            "1000",
            changes,
        ]);
        produced += out.trim().parse::<i64>().unwrap();
        wait_for(produced).await;
    }
    let files_before = live_files(&lake).await;
    // Compact while updates and deletes over those keys rewrite files at the same time.
    let compact = Command::new(sluice_bin())
        .args(["compact", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = script(&[
        "compacted",
        &kafka(),
        &topic,
        "20000",
        "6000",
        changes,
        "5",
        "0",
        "20000",
    ]);
    produced += out.trim().parse::<i64>().unwrap();
    let compact = compact.wait_with_output().unwrap();
    assert!(compact.status.success(), "sluice compact failed");
    wait_for(produced).await;
    signal(&child.0, Signal::SIGTERM);
    assert!(child.0.wait().unwrap().success());
    // Compact again now that nothing writes, then vacuum everything no version needs.
    let compacted = Command::new(sluice_bin())
        .args(["compact", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(compacted.status.success());
    let vacuum = Command::new(sluice_bin())
        .args(["vacuum", "--retention", "0s", "--force", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        vacuum.status.success(),
        "{}",
        String::from_utf8_lossy(&vacuum.stderr)
    );
    let files_after = live_files(&lake).await;
    assert!(
        files_after < files_before,
        "compaction left {files_after} files of {files_before}"
    );
    let table = lake.open("accounts").await.unwrap().unwrap();
    let optimized = {
        use futures::StreamExt;
        table
            .history(None)
            .filter_map(|c| async move { c.ok() })
            .any(|c| async move { c.operation.as_deref() == Some("OPTIMIZE") })
            .await
    };
    assert!(optimized, "no compaction was committed");
    let table_dir = format!("{}/accounts", lake_cfg.root);
    let out = script(&["check", &table_dir, changes]);
    assert!(out.starts_with("ok "), "{out}");
}

/// Live data files of the table `accounts`.
async fn live_files(lake: &sluice_lake::Lake) -> usize {
    let table = lake.open("accounts").await.unwrap().unwrap();
    table.snapshot().unwrap().log_data().iter().count()
}

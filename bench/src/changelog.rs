//! `sluice-bench changelog`: an upsert pipeline over a keyed topic of changes (JSON rows with
//! the id as the Kafka key, one in ten a tombstone), `sluice run --until-caught-up` end to end
//! from an empty lake: changes per second, peak and sampled RSS, and per flush (one table
//! version each) the rows changed and copied and the bytes written and replaced, read from
//! the table's Delta log.

use super::*;

/// The change `i` of a topic over `keys` keys: (key, partition, value or None for a
/// tombstone).
fn change(i: u64, keys: u64, partitions: i32) -> (u64, i32, Option<Vec<u8>>) {
    let key = sluice_bench::mix(i) % keys;
    let partition = (key % partitions as u64) as i32;
    if sluice_bench::mix(i ^ 0x5eed).is_multiple_of(10) {
        return (key, partition, None);
    }
    let value = format!(
        r#"{{"id":{key},"name":"customer-{key}","balance":{}.{:02},"visits":{i},"tier":"{}"}}"#,
        sluice_bench::mix(i) % 100_000,
        i % 100,
        ["bronze", "silver", "gold"][(i % 3) as usize]
    );
    (key, partition, Some(value.into_bytes()))
}

/// Produces the changes; returns (seconds, value bytes, live keys at the end).
async fn produce_changes(
    brokers: &str,
    topic: &str,
    n: u64,
    keys: u64,
    partitions: i32,
) -> anyhow::Result<(f64, u64, u64)> {
    let p = producer(brokers)?;
    let started = Instant::now();
    let mut live = std::collections::HashSet::new();
    let mut bytes = 0u64;
    let mut pending = Vec::with_capacity(100_000);
    for i in 0..n {
        let (key, partition, value) = change(i, keys, partitions);
        let key_text = key.to_string();
        let mut rec = FutureRecord::<str, [u8]>::to(topic)
            .partition(partition)
            .key(&key_text);
        match &value {
            Some(v) => {
                bytes += v.len() as u64;
                live.insert(key);
                rec = rec.payload(v);
            }
            None => {
                live.remove(&key);
            }
        }
        let f = loop {
            match p.send_result(rec) {
                Ok(f) => break f,
                Err((_, back)) => {
                    p.poll(Duration::from_millis(5));
                    rec = back;
                }
            }
        };
        pending.push(f);
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
    Ok((started.elapsed().as_secs_f64(), bytes, live.len() as u64))
}

/// Per version of a local table: (rows changed, rows copied, bytes added, bytes removed),
/// from what each commit of changes says it did and its add and remove actions.
fn flushes(table: &Path) -> anyhow::Result<Vec<(u64, u64, u64, u64)>> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(table.join("_delta_log"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    logs.sort();
    let mut out = Vec::new();
    for log in logs {
        let (mut changed, mut copied, mut added, mut removed) = (0, 0, 0, 0);
        let mut merge = false;
        for line in std::fs::read_to_string(&log)?.lines() {
            let action: Value = serde_json::from_str(line)?;
            if let Some(a) = action.get("add") {
                added += a.get("size").and_then(Value::as_u64).unwrap_or(0);
            }
            if let Some(r) = action.get("remove") {
                removed += r.get("size").and_then(Value::as_u64).unwrap_or(0);
            }
            let Some(info) = action.get("commitInfo") else {
                continue;
            };
            // sluice's rewrite says what it did under `sluice.changes`; a MERGE in its
            // operationMetrics.
            if let Some(c) = info.get("sluice.changes") {
                merge = true;
                let n = |k: &str| c.get(k).and_then(Value::as_u64).unwrap_or(0);
                changed = n("inserted") + n("updated") + n("deleted");
                copied = n("copied");
            } else if info.get("operation").and_then(Value::as_str) == Some("MERGE") {
                merge = true;
                let m = info.get("operationMetrics").cloned().unwrap_or_default();
                let n = |k: &str| m.get(k).and_then(Value::as_u64).unwrap_or(0);
                changed = n("num_target_rows_inserted")
                    + n("num_target_rows_updated")
                    + n("num_target_rows_deleted");
                copied = n("num_target_rows_copied");
            }
        }
        if merge {
            out.push((changed, copied, added, removed));
        }
    }
    Ok(out)
}

/// `sluice-bench changelog`: one topic of changes, applied by each way `apply` names
/// (`rewrite`, `merge` or `both`), each from an empty lake.
#[allow(clippy::too_many_arguments)]
pub async fn changelog(
    brokers: &str,
    sluice: &Path,
    lake: &Path,
    changes: u64,
    keys: u64,
    partitions: i32,
    max_rows: u64,
    apply: &str,
) -> anyhow::Result<Value> {
    let topic = unique("bench-changes");
    create_topic(brokers, &topic, partitions).await?;
    let (produce_s, bytes, live) =
        produce_changes(brokers, &topic, changes, keys, partitions).await?;
    let ways: Vec<&str> = match apply {
        "both" => vec!["rewrite", "merge"],
        one => vec![one],
    };
    let mut out = json!({
        "changes": changes,
        "keys": keys,
        "live_keys_at_end": live,
        "partitions": partitions,
        "flush_max_rows": max_rows,
        "value_bytes": bytes,
        "produce_seconds": produce_s,
    });
    for way in ways {
        out[way] = apply_once(brokers, sluice, lake, &topic, changes, live, max_rows, way).await?;
    }
    Ok(out)
}

/// One `sluice run --until-caught-up` over the topic with `apply = way`.
#[allow(clippy::too_many_arguments)]
async fn apply_once(
    brokers: &str,
    sluice: &Path,
    lake: &Path,
    topic: &str,
    changes: u64,
    live: u64,
    max_rows: u64,
    way: &str,
) -> anyhow::Result<Value> {
    fresh_lake(lake)?;
    let extra = format!(
        r#"mode = "upsert"
key = ["id"]
apply = "{way}"
flush = {{ max_rows = {max_rows}, max_latency = "5s" }}
"#
    );
    let config = sluice_bench::config_text_upsert(
        brokers,
        &unique("bench-group"),
        lake.to_str().context("lake path")?,
        topic,
        &extra,
    );
    let path = lake.join("bench.toml");
    std::fs::write(&path, config)?;
    let mut child = spawn_sluice(sluice, &["run", "--until-caught-up"], &path)?;
    let (seconds, peak_rss, samples) = wait_sampling(&mut child, Duration::from_millis(250))?;
    let cfg = sluice_config::Config::load(&path)?;
    let lake_h = sluice_lake::Lake::new(&cfg.lake)?;
    let table = lake_h.open("events").await?.context("no table")?;
    let rows = sluice_lake::table_row_count("events", &table).await?;
    anyhow::ensure!(
        rows == live,
        "the table has {rows} rows, not the {live} live keys"
    );
    let per_flush = flushes(&lake.join("events"))?;
    let n = per_flush.len().max(1) as f64;
    let sum = |f: fn(&(u64, u64, u64, u64)) -> u64| per_flush.iter().map(f).sum::<u64>();
    let (changed, copied, added, removed) =
        (sum(|x| x.0), sum(|x| x.1), sum(|x| x.2), sum(|x| x.3));
    let tenth = samples.len() / 10;
    let rss_mid = samples.get(samples.len() / 2).copied().unwrap_or(0);
    let rss_late = samples
        .get(samples.len().saturating_sub(tenth + 1))
        .copied()
        .unwrap_or(0);
    Ok(json!({
        "end_to_end": {
            "seconds": seconds,
            "changes_per_s": changes as f64 / seconds,
            "peak_rss_mb": peak_rss as f64 / 1e6,
            "rss_at_half_mb": rss_mid as f64 / 1e6,
            "rss_at_nine_tenths_mb": rss_late as f64 / 1e6,
        },
        "per_flush": {
            "flushes": per_flush.len(),
            "rows_changed_mean": changed as f64 / n,
            "rows_copied_mean": copied as f64 / n,
            "bytes_written_mean": added as f64 / n,
            "bytes_rewritten_mean": removed as f64 / n,
            "rows_written_per_row_changed": (changed + copied) as f64 / changed.max(1) as f64,
        },
    }))
}

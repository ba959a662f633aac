//! sluice's metrics: one table defines every metric (name, type, help), the code records into a
//! process-wide registry, and `/metrics` renders it in Prometheus text format.
//!
//! Names follow `sluice_<noun>_<unit>_total`; labels are bounded (pipeline, table, topic,
//! partition, reason); diverted records carry a `reason`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

/// Every metric sluice exports: (name, type, help).
pub const SPEC: &[(&str, &str, &str)] = &[
    (
        "sluice_records_in_total",
        "counter",
        "Records received from Kafka, by pipeline.",
    ),
    (
        "sluice_rows_out_total",
        "counter",
        "Rows committed, by pipeline and destination (events, dead_letter, aggregate, late).",
    ),
    (
        "sluice_dead_letters_total",
        "counter",
        "Records sent to the dead-letter table, by pipeline and reason.",
    ),
    (
        "sluice_late_records_total",
        "counter",
        "Records whose every window had closed, by pipeline and aggregate table.",
    ),
    (
        "sluice_future_records_total",
        "counter",
        "Records whose event time was more than max_future_skew ahead of their Kafka timestamp: they joined no window and did not move the clock (they are in the events table), by pipeline and aggregate table.",
    ),
    (
        "sluice_late_window_assignments_skipped_total",
        "counter",
        "Window assignments skipped because the window had closed, by pipeline and aggregate table.",
    ),
    (
        "sluice_bytes_written_total",
        "counter",
        "Compressed bytes of data files committed, by pipeline and table.",
    ),
    (
        "sluice_commits_total",
        "counter",
        "Delta commits, by pipeline and table.",
    ),
    (
        "sluice_fenced_commits_total",
        "counter",
        "Commits lost to another writer of the same partitions, by pipeline.",
    ),
    (
        "sluice_commit_conflicts_total",
        "counter",
        "Commits refused because another writer changed a table's metadata or protocol (the pipeline reloads and goes on from the tables' progress), by pipeline.",
    ),
    (
        "sluice_commit_duration_seconds",
        "histogram",
        "Time to commit one flush (all tables), by pipeline.",
    ),
    (
        "sluice_consumer_lag_records",
        "gauge",
        "High watermark minus committed offset, by pipeline, topic and partition.",
    ),
    (
        "sluice_committed_offset",
        "gauge",
        "Next offset committed in the events table, by pipeline, topic and partition.",
    ),
    (
        "sluice_partitions_assigned",
        "gauge",
        "Partitions this instance owns, by pipeline.",
    ),
    (
        "sluice_window_clock_lag_seconds",
        "gauge",
        "Wall time minus the window clock, by pipeline and aggregate table.",
    ),
    (
        "sluice_compaction_files_removed_total",
        "counter",
        "Small files rewritten by compaction, by table.",
    ),
    (
        "sluice_compaction_files_added_total",
        "counter",
        "Files written by compaction, by table.",
    ),
    (
        "sluice_table_files",
        "gauge",
        "Active data files of a table after its last compaction, by table.",
    ),
    (
        "sluice_tiering_boundary",
        "gauge",
        "First offset not yet archived (the boundary), by topic and partition.",
    ),
    (
        "sluice_tiering_log_start_offset",
        "gauge",
        "The broker's log start offset after the last tiering round, by topic and partition.",
    ),
    (
        "sluice_tiering_broker_backlog_records",
        "gauge",
        "Records in the broker at or above the boundary (not archived yet), by topic and partition.",
    ),
    (
        "sluice_tiering_records_archived_total",
        "counter",
        "Records copied into the archive table, by topic.",
    ),
    (
        "sluice_tiering_records_deleted_total",
        "counter",
        "Records removed from the broker by DeleteRecords after archiving, by topic.",
    ),
    (
        "sluice_tiering_rounds_total",
        "counter",
        "Tiering rounds, by topic and result (ok, failed).",
    ),
    (
        "sluice_tiering_alarm",
        "gauge",
        "1 while tiering of a topic is failing or behind (records older than hot_retention are not archived), or a pipeline still needs records older than hot_retention, by topic.",
    ),
    (
        "sluice_memory_resident_bytes",
        "gauge",
        "Resident set size of the process (from /proc), updated when metrics are read.",
    ),
    (
        "sluice_heap_allocated_bytes",
        "gauge",
        "Bytes the program holds in live heap allocations (jemalloc), updated when metrics are read.",
    ),
    (
        "sluice_heap_resident_bytes",
        "gauge",
        "Bytes of the heap resident in memory, including freed pages not yet returned (jemalloc).",
    ),
    (
        "sluice_heap_metadata_bytes",
        "gauge",
        "Bytes jemalloc uses for its own bookkeeping.",
    ),
    (
        "sluice_heap_thread_cache_bytes",
        "gauge",
        "Bytes of freed blocks held in jemalloc's per-thread caches.",
    ),
    (
        "sluice_heap_dirty_bytes",
        "gauge",
        "Bytes of freed heap pages jemalloc has not yet returned to the system.",
    ),
    (
        "sluice_tiering_retention_risk",
        "gauge",
        "1 when the topic's own retention.ms/retention.bytes may drop records before they are archived, by topic.",
    ),
];

const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Registry {
    values: BTreeMap<(&'static str, Labels), f64>,
    histograms: BTreeMap<(&'static str, Labels), (Vec<u64>, f64, u64)>,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn labels(l: &[(&'static str, &str)]) -> Labels {
    l.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// Adds `by` to a counter.
pub fn inc(name: &'static str, l: &[(&'static str, &str)], by: u64) {
    if let Ok(mut r) = registry().lock() {
        *r.values.entry((name, labels(l))).or_default() += by as f64;
    }
}

/// Sets a gauge.
pub fn set(name: &'static str, l: &[(&'static str, &str)], value: f64) {
    if let Ok(mut r) = registry().lock() {
        r.values.insert((name, labels(l)), value);
    }
}

/// Records one observation (seconds) in a histogram.
pub fn observe(name: &'static str, l: &[(&'static str, &str)], seconds: f64) {
    if let Ok(mut r) = registry().lock() {
        let h = r
            .histograms
            .entry((name, labels(l)))
            .or_insert_with(|| (vec![0; BUCKETS.len()], 0.0, 0));
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                h.0[i] += 1;
            }
        }
        h.1 += seconds;
        h.2 += 1;
    }
}

/// The current value of a counter or gauge (tests and `status`).
pub fn value(name: &str, l: &[(&str, &str)]) -> Option<f64> {
    let r = registry().lock().ok()?;
    r.values
        .iter()
        .find(|((n, ls), _)| {
            *n == name
                && ls.len() == l.len()
                && ls.iter().zip(l).all(|((a, b), (c, d))| a == c && b == d)
        })
        .map(|(_, v)| *v)
}

fn readiness() -> &'static Mutex<BTreeMap<String, bool>> {
    static R: OnceLock<Mutex<BTreeMap<String, bool>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// A component that is starting (`pipeline <name>`, `tiering <topic>`): not ready until
/// [`mark_ready`].
pub fn register_component(name: &str) {
    if let Ok(mut r) = readiness().lock() {
        r.entry(name.to_string()).or_insert(false);
    }
}

/// A component is ready: a pipeline has its tables open and has joined its consumer group
/// (its assignment may be empty: a standby is ready), a tierer has its archive table open.
pub fn mark_ready(name: &str) {
    if let Ok(mut r) = readiness().lock() {
        r.insert(name.to_string(), true);
    }
}

/// The readiness name of a pipeline.
pub fn pipeline_component(pipeline: &str) -> String {
    format!("pipeline {pipeline}")
}

/// The readiness name of a tiered topic.
pub fn tiering_component(topic: &str) -> String {
    format!("tiering {topic}")
}

/// True when every registered component is ready (and there is at least one).
pub fn all_ready() -> bool {
    readiness()
        .lock()
        .map(|r| !r.is_empty() && r.values().all(|v| *v))
        .unwrap_or(false)
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn label_text(l: &Labels, extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// Everything in Prometheus text format (0.0.4).
pub fn render() -> String {
    let Ok(r) = registry().lock() else {
        return String::new();
    };
    let mut out = String::new();
    for (name, kind, help) in SPEC {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        if *kind == "histogram" {
            for ((n, l), (counts, sum, count)) in &r.histograms {
                if n != name {
                    continue;
                }
                for (b, c) in BUCKETS.iter().zip(counts) {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {c}",
                        label_text(l, Some(("le", b.to_string())))
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {count}",
                    label_text(l, Some(("le", "+Inf".into())))
                );
                let _ = writeln!(out, "{name}_sum{} {sum}", label_text(l, None));
                let _ = writeln!(out, "{name}_count{} {count}", label_text(l, None));
            }
        } else {
            for ((n, l), v) in &r.values {
                if n == name {
                    let _ = writeln!(out, "{name}{} {v}", label_text(l, None));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        inc("sluice_records_in_total", &[("pipeline", "t1")], 5);
        inc("sluice_records_in_total", &[("pipeline", "t1")], 2);
        set("sluice_partitions_assigned", &[("pipeline", "t1")], 3.0);
        observe(
            "sluice_commit_duration_seconds",
            &[("pipeline", "t1")],
            0.02,
        );
        let text = render();
        assert!(
            text.contains("sluice_records_in_total{pipeline=\"t1\"} 7"),
            "{text}"
        );
        assert!(text.contains("sluice_partitions_assigned{pipeline=\"t1\"} 3"));
        assert!(
            text.contains("sluice_commit_duration_seconds_bucket{pipeline=\"t1\",le=\"0.025\"} 1")
        );
        assert!(text.contains("sluice_commit_duration_seconds_count{pipeline=\"t1\"} 1"));
        assert_eq!(
            value("sluice_records_in_total", &[("pipeline", "t1")]),
            Some(7.0)
        );
        for (name, _, _) in SPEC {
            assert!(name.starts_with("sluice_"));
            assert!(text.contains(&format!("# TYPE {name} ")));
        }
    }
}

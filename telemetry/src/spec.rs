//! Every metric sluice exports, defined once: name, label names and help. Call sites use
//! these handles (`spec::RECORDS_IN.inc([pipeline], n)`), never a name as text.

use crate::{Counter, Described, Gauge, Histogram};

/// Records received from Kafka, by pipeline.
pub static RECORDS_IN: Counter<1> = Counter::new(
    "sluice_records_in_total",
    ["pipeline"],
    "Records received from Kafka, by pipeline.",
);

/// Key and value bytes received from Kafka, by pipeline.
pub static BYTES_IN: Counter<1> = Counter::new(
    "sluice_bytes_in_total",
    ["pipeline"],
    "Key and value bytes received from Kafka, by pipeline.",
);

/// Rows committed, by pipeline and destination (events, dead_letter, aggregate, late).
pub static ROWS_OUT: Counter<2> = Counter::new(
    "sluice_rows_out_total",
    ["pipeline", "destination"],
    "Rows committed, by pipeline and destination (events, dead_letter, aggregate, late).",
);

/// Records sent to the dead-letter table, by pipeline and reason.
pub static DEAD_LETTERS: Counter<2> = Counter::new(
    "sluice_dead_letters_total",
    ["pipeline", "reason"],
    "Records sent to the dead-letter table, by pipeline and reason.",
);

/// Records whose every window had closed, by pipeline and aggregate table.
pub static LATE_RECORDS: Counter<2> = Counter::new(
    "sluice_late_records_total",
    ["pipeline", "table"],
    "Records whose every window had closed, by pipeline and aggregate table.",
);

/// Records whose event time was more than max_future_skew ahead of their Kafka timestamp: they joined no window and did not move the clock (they are in the events table), by pipeline and aggregate table.
pub static FUTURE_RECORDS: Counter<2> = Counter::new(
    "sluice_future_records_total",
    ["pipeline", "table"],
    "Records whose event time was more than max_future_skew ahead of their Kafka timestamp: they joined no window and did not move the clock (they are in the events table), by pipeline and aggregate table.",
);

/// Window assignments skipped because the window had closed, by pipeline and aggregate table.
pub static LATE_WINDOW_ASSIGNMENTS_SKIPPED: Counter<2> = Counter::new(
    "sluice_late_window_assignments_skipped_total",
    ["pipeline", "table"],
    "Window assignments skipped because the window had closed, by pipeline and aggregate table.",
);

/// Compressed bytes of data files committed, by pipeline and table.
pub static BYTES_WRITTEN: Counter<2> = Counter::new(
    "sluice_bytes_written_total",
    ["pipeline", "table"],
    "Compressed bytes of data files committed, by pipeline and table.",
);

/// Delta commits, by pipeline and table.
pub static COMMITS: Counter<2> = Counter::new(
    "sluice_commits_total",
    ["pipeline", "table"],
    "Delta commits, by pipeline and table.",
);

/// Schema changes a pipeline's events table took (columns or nested fields added), by pipeline.
pub static SCHEMA_CHANGES: Counter<1> = Counter::new(
    "sluice_schema_changes_total",
    ["pipeline"],
    "Schema changes a pipeline's events table took (columns or nested fields added), by pipeline.",
);

/// Rows an upsert pipeline's merges inserted, updated and deleted, by pipeline, table and op
/// (`inserted`, `updated`, `deleted`).
pub static CHANGE_ROWS: Counter<3> = Counter::new(
    "sluice_change_rows_total",
    ["pipeline", "table", "op"],
    "Rows an upsert pipeline's merges inserted, updated and deleted, by pipeline, table and op.",
);

/// Unchanged rows an upsert pipeline's merges copied into new files (they shared a file with a
/// changed row), by pipeline and table.
pub static CHANGE_ROWS_COPIED: Counter<2> = Counter::new(
    "sluice_change_rows_copied_total",
    ["pipeline", "table"],
    "Unchanged rows an upsert pipeline's merges copied into new files, by pipeline and table.",
);

/// Bytes of the files an upsert pipeline's merges replaced, by pipeline and table.
pub static CHANGE_BYTES_REWRITTEN: Counter<2> = Counter::new(
    "sluice_change_bytes_rewritten_total",
    ["pipeline", "table"],
    "Bytes of the files an upsert pipeline's merges replaced, by pipeline and table.",
);

/// Commits lost to another writer of the same partitions, by pipeline.
pub static FENCED_COMMITS: Counter<1> = Counter::new(
    "sluice_fenced_commits_total",
    ["pipeline"],
    "Commits lost to another writer of the same partitions, by pipeline.",
);

/// Commits refused because another writer changed a table's metadata or protocol (the pipeline reloads and goes on from the tables' progress), by pipeline.
pub static COMMIT_CONFLICTS: Counter<1> = Counter::new(
    "sluice_commit_conflicts_total",
    ["pipeline"],
    "Commits refused because another writer changed a table's metadata or protocol (the pipeline reloads and goes on from the tables' progress), by pipeline.",
);

/// Time to commit one flush (all tables), by pipeline.
pub static COMMIT_DURATION_SECONDS: Histogram<1> = Histogram::new(
    "sluice_commit_duration_seconds",
    ["pipeline"],
    "Time to commit one flush (all tables), by pipeline.",
);

/// High watermark minus committed offset, by pipeline, topic and partition.
pub static CONSUMER_LAG_RECORDS: Gauge<3> = Gauge::new(
    "sluice_consumer_lag_records",
    ["pipeline", "topic", "partition"],
    "High watermark minus committed offset, by pipeline, topic and partition.",
);

/// Next offset committed in the events table, by pipeline, topic and partition.
pub static COMMITTED_OFFSET: Gauge<3> = Gauge::new(
    "sluice_committed_offset",
    ["pipeline", "topic", "partition"],
    "Next offset committed in the events table, by pipeline, topic and partition.",
);

/// Partitions this instance owns, by pipeline.
pub static PARTITIONS_ASSIGNED: Gauge<1> = Gauge::new(
    "sluice_partitions_assigned",
    ["pipeline"],
    "Partitions this instance owns, by pipeline.",
);

/// 1 where this instance computes the pipeline's topic-clock windows (it holds the lease), 0
/// where it stands by.
pub static PIPELINE_ACTIVE: Gauge<1> = Gauge::new(
    "sluice_pipeline_active",
    ["pipeline"],
    "1 where this instance computes the pipeline's topic-clock windows (holds the lease), 0 where it stands by.",
);

/// A partition's window clock (`clock = "partition"`), by pipeline, aggregate table, topic
/// and partition; only for the partitions this instance owns.
pub static PARTITION_WINDOW_CLOCK_SECONDS: Gauge<4> = Gauge::new(
    "sluice_partition_window_clock_seconds",
    ["pipeline", "table", "topic", "partition"],
    "A partition's window clock in seconds since the epoch (clock = partition), for the partitions this instance owns.",
);

/// Wall time minus the window clock, by pipeline and aggregate table.
pub static WINDOW_CLOCK_LAG_SECONDS: Gauge<2> = Gauge::new(
    "sluice_window_clock_lag_seconds",
    ["pipeline", "table"],
    "Wall time minus the window clock, by pipeline and aggregate table.",
);

/// Small files rewritten by compaction, by table.
pub static COMPACTION_FILES_REMOVED: Counter<1> = Counter::new(
    "sluice_compaction_files_removed_total",
    ["table"],
    "Small files rewritten by compaction, by table.",
);

/// Files written by compaction, by table.
pub static COMPACTION_FILES_ADDED: Counter<1> = Counter::new(
    "sluice_compaction_files_added_total",
    ["table"],
    "Files written by compaction, by table.",
);

/// Active data files of a table after its last compaction, by table.
pub static TABLE_FILES: Gauge<1> = Gauge::new(
    "sluice_table_files",
    ["table"],
    "Active data files of a table after its last compaction, by table.",
);

/// First offset not yet archived (the boundary), by topic and partition.
pub static TIERING_BOUNDARY: Gauge<2> = Gauge::new(
    "sluice_tiering_boundary",
    ["topic", "partition"],
    "First offset not yet archived (the boundary), by topic and partition.",
);

/// The broker's log start offset after the last tiering round, by topic and partition.
pub static TIERING_LOG_START_OFFSET: Gauge<2> = Gauge::new(
    "sluice_tiering_log_start_offset",
    ["topic", "partition"],
    "The broker's log start offset after the last tiering round, by topic and partition.",
);

/// Records in the broker at or above the boundary (not archived yet), by topic and partition.
pub static TIERING_BROKER_BACKLOG_RECORDS: Gauge<2> = Gauge::new(
    "sluice_tiering_broker_backlog_records",
    ["topic", "partition"],
    "Records in the broker at or above the boundary (not archived yet), by topic and partition.",
);

/// Records copied into the archive table, by topic.
pub static TIERING_RECORDS_ARCHIVED: Counter<1> = Counter::new(
    "sluice_tiering_records_archived_total",
    ["topic"],
    "Records copied into the archive table, by topic.",
);

/// Records removed from the broker by DeleteRecords after archiving, by topic.
pub static TIERING_RECORDS_DELETED: Counter<1> = Counter::new(
    "sluice_tiering_records_deleted_total",
    ["topic"],
    "Records removed from the broker by DeleteRecords after archiving, by topic.",
);

/// Tiering rounds, by topic and result (ok, failed).
pub static TIERING_ROUNDS: Counter<2> = Counter::new(
    "sluice_tiering_rounds_total",
    ["topic", "result"],
    "Tiering rounds, by topic and result (ok, failed).",
);

/// 1 while tiering of a topic is failing or behind (records older than hot_retention are not archived), or a pipeline still needs records older than hot_retention, by topic.
pub static TIERING_ALARM: Gauge<1> = Gauge::new(
    "sluice_tiering_alarm",
    ["topic"],
    "1 while tiering of a topic is failing or behind (records older than hot_retention are not archived), or a pipeline still needs records older than hot_retention, by topic.",
);

/// Resident set size of the process (from /proc), updated when metrics are read.
pub static MEMORY_RESIDENT_BYTES: Gauge<0> = Gauge::new(
    "sluice_memory_resident_bytes",
    [],
    "Resident set size of the process (from /proc), updated when metrics are read.",
);

/// Bytes the program holds in live heap allocations (jemalloc), updated when metrics are read.
pub static HEAP_ALLOCATED_BYTES: Gauge<0> = Gauge::new(
    "sluice_heap_allocated_bytes",
    [],
    "Bytes the program holds in live heap allocations (jemalloc), updated when metrics are read.",
);

/// Bytes of the heap resident in memory, including freed pages not yet returned (jemalloc).
pub static HEAP_RESIDENT_BYTES: Gauge<0> = Gauge::new(
    "sluice_heap_resident_bytes",
    [],
    "Bytes of the heap resident in memory, including freed pages not yet returned (jemalloc).",
);

/// Bytes jemalloc uses for its own bookkeeping.
pub static HEAP_METADATA_BYTES: Gauge<0> = Gauge::new(
    "sluice_heap_metadata_bytes",
    [],
    "Bytes jemalloc uses for its own bookkeeping.",
);

/// Bytes of freed blocks held in jemalloc's per-thread caches.
pub static HEAP_THREAD_CACHE_BYTES: Gauge<0> = Gauge::new(
    "sluice_heap_thread_cache_bytes",
    [],
    "Bytes of freed blocks held in jemalloc's per-thread caches.",
);

/// Bytes of freed heap pages jemalloc has not yet returned to the system.
pub static HEAP_DIRTY_BYTES: Gauge<0> = Gauge::new(
    "sluice_heap_dirty_bytes",
    [],
    "Bytes of freed heap pages jemalloc has not yet returned to the system.",
);

/// 1 when the topic's own retention.ms/retention.bytes may drop records before they are archived, by topic.
pub static TIERING_RETENTION_RISK: Gauge<1> = Gauge::new(
    "sluice_tiering_retention_risk",
    ["topic"],
    "1 when the topic's own retention.ms/retention.bytes may drop records before they are archived, by topic.",
);

/// The window clock (seconds since the epoch), by pipeline and aggregate table.
pub static WINDOW_CLOCK_SECONDS: Gauge<2> = Gauge::new(
    "sluice_window_clock_seconds",
    ["pipeline", "table"],
    "The window clock (seconds since the epoch), by pipeline and aggregate table.",
);

/// Open (key, window) states, by pipeline and aggregate table.
pub static OPEN_WINDOWS: Gauge<2> = Gauge::new(
    "sluice_open_windows",
    ["pipeline", "table"],
    "Open (key, window) states, by pipeline and aggregate table.",
);

/// Files deleted by vacuum (unreferenced or orphaned, past the retention), by table.
pub static VACUUM_FILES_DELETED: Counter<1> = Counter::new(
    "sluice_vacuum_files_deleted_total",
    ["table"],
    "Files deleted by vacuum (unreferenced or orphaned, past the retention), by table.",
);

/// Every metric, in the order `/metrics` lists them.
pub static ALL: &[&dyn Described] = &[
    &RECORDS_IN,
    &BYTES_IN,
    &ROWS_OUT,
    &DEAD_LETTERS,
    &LATE_RECORDS,
    &FUTURE_RECORDS,
    &LATE_WINDOW_ASSIGNMENTS_SKIPPED,
    &BYTES_WRITTEN,
    &COMMITS,
    &SCHEMA_CHANGES,
    &CHANGE_ROWS,
    &CHANGE_ROWS_COPIED,
    &CHANGE_BYTES_REWRITTEN,
    &FENCED_COMMITS,
    &COMMIT_CONFLICTS,
    &COMMIT_DURATION_SECONDS,
    &CONSUMER_LAG_RECORDS,
    &COMMITTED_OFFSET,
    &PARTITIONS_ASSIGNED,
    &PIPELINE_ACTIVE,
    &PARTITION_WINDOW_CLOCK_SECONDS,
    &WINDOW_CLOCK_LAG_SECONDS,
    &WINDOW_CLOCK_SECONDS,
    &OPEN_WINDOWS,
    &COMPACTION_FILES_REMOVED,
    &COMPACTION_FILES_ADDED,
    &TABLE_FILES,
    &VACUUM_FILES_DELETED,
    &TIERING_BOUNDARY,
    &TIERING_LOG_START_OFFSET,
    &TIERING_BROKER_BACKLOG_RECORDS,
    &TIERING_RECORDS_ARCHIVED,
    &TIERING_RECORDS_DELETED,
    &TIERING_ROUNDS,
    &TIERING_ALARM,
    &MEMORY_RESIDENT_BYTES,
    &HEAP_ALLOCATED_BYTES,
    &HEAP_RESIDENT_BYTES,
    &HEAP_METADATA_BYTES,
    &HEAP_THREAD_CACHE_BYTES,
    &HEAP_DIRTY_BYTES,
    &TIERING_RETENTION_RISK,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_listed_once_with_a_sluice_name_and_bounded_labels() {
        let mut seen = std::collections::BTreeSet::new();
        for m in ALL {
            let d = m.describe();
            assert!(d.name.starts_with("sluice_"), "{}", d.name);
            assert!(seen.insert(d.name), "{} is listed twice", d.name);
            for l in d.labels {
                assert!(
                    [
                        "pipeline",
                        "table",
                        "topic",
                        "partition",
                        "reason",
                        "destination",
                        "result",
                        "op"
                    ]
                    .contains(l),
                    "{}: label {l} is not one of the bounded labels",
                    d.name
                );
            }
        }
    }

    #[test]
    fn renders_counters_gauges_and_histograms() {
        RECORDS_IN.inc(["t1"], 5);
        RECORDS_IN.inc(["t1"], 2);
        PARTITIONS_ASSIGNED.set(["t1"], 3.0);
        COMMIT_DURATION_SECONDS.observe(["t1"], 0.02);
        let text = crate::render();
        assert!(
            text.contains("sluice_records_in_total{pipeline=\"t1\"} 7"),
            "{text}"
        );
        assert!(text.contains("sluice_partitions_assigned{pipeline=\"t1\"} 3"));
        assert!(
            text.contains("sluice_commit_duration_seconds_bucket{pipeline=\"t1\",le=\"0.025\"} 1")
        );
        assert!(text.contains("sluice_commit_duration_seconds_count{pipeline=\"t1\"} 1"));
        assert_eq!(RECORDS_IN.value(["t1"]), Some(7.0));
        for m in ALL {
            let name = m.describe().name;
            assert!(text.contains(&format!("# TYPE {name} ")));
        }
    }
}

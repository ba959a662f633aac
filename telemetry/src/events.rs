//! The log events an operator acts on, defined once: each is one function with typed fields
//! and a stable `event` name, so that a search for `event="commit_lost"` finds every
//! occurrence, whichever crate logged it. Other log lines are narration and may change.

use std::fmt::{Debug, Display};

/// A partition was assigned to a pipeline and starts at `start` (`committed`: the events
/// table's progress, when it has any).
pub fn partition_assigned(
    pipeline: &str,
    topic: &str,
    partition: i32,
    start: i64,
    committed: Option<i64>,
) {
    tracing::info!(event = "partition_assigned", pipeline, topic, partition, start, committed = ?committed, "partition assigned");
}

/// One table's commit of a flush landed (debug: one per table per flush).
pub fn table_committed(pipeline: &str, table: &str, version: i64, rows: u64, files: usize) {
    tracing::debug!(
        event = "table_committed",
        pipeline,
        table,
        version,
        rows,
        files,
        "committed"
    );
}

/// A record went to the dead-letter table (debug: one per record).
pub fn dead_letter(
    pipeline: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    reason: &str,
    message: &str,
) {
    tracing::debug!(
        event = "dead_letter",
        pipeline,
        topic,
        partition,
        offset,
        reason,
        "dead letter: {message}"
    );
}

/// A flush's commit was refused (fenced by another writer, or a metadata conflict); the
/// pipeline does `action` and goes on.
pub fn commit_lost(pipeline: &str, error: &dyn Display, action: &str) {
    tracing::warn!(event = "commit_lost", pipeline, "{error}; {action}");
}

/// A pipeline's events table took new columns (or nested fields) at `version`, before the
/// rows that need them: `reason` names the schema and what it adds.
pub fn schema_changed(
    pipeline: &str,
    table: &str,
    version: Option<i64>,
    columns: &[String],
    reason: &str,
) {
    tracing::info!(
        event = "schema_changed",
        pipeline,
        table,
        version = ?version,
        columns = ?columns,
        "table schema changed: {reason}"
    );
}

/// A tiering round archived `rows` records of `topic` in one commit of `table`.
pub fn archived(topic: &str, table: &str, version: i64, rows: u64, files: usize) {
    tracing::info!(
        event = "archived",
        topic,
        table,
        version,
        rows,
        files,
        "archived"
    );
}

/// The broker's log start of `topic` moved up to `upto` (per partition) after archiving.
pub fn broker_trimmed(topic: &str, deleted: u64, upto: &dyn Debug) {
    tracing::info!(
        event = "broker_trimmed",
        topic,
        deleted,
        "moved the broker's log start up to {upto:?}"
    );
}

/// Records left the broker before they were archived (the topic's own retention).
pub fn archive_gap(topic: &str, partition: i32, boundary: i64, log_start: i64) {
    tracing::error!(
        event = "archive_gap",
        topic,
        partition,
        boundary,
        log_start,
        "offsets [{boundary}, {log_start}) left the broker before they were archived (the topic's own retention deleted them); they are lost to the archive"
    );
}

/// A tiering round failed; nothing was deleted from the broker.
pub fn tiering_round_failed(topic: &str, error: &dyn Display) {
    tracing::error!(
        event = "tiering_round_failed",
        topic,
        "tiering round failed, nothing was deleted from the broker: {error}"
    );
}

//! Ingest: Kafka records decoded into Arrow and committed exactly once to Delta tables.
//!
//! The data flow, stage by stage: [`source`] delivers Kafka records in batches
//! ([`sluice_kafka::RawBatch`]) from a consumer group or a replay; [`sluice_formats`] turns
//! them into events rows and dead letters; [`pipeline`]
//! buffers rows per table, flushes by rows, bytes or latency, and commits each table with the
//! Kafka progress of the rows it holds, then commits the offsets to the consumer group.

pub use sluice_lake::fault;
pub mod lease;
pub mod live;
pub mod pipeline;
pub mod positions;
pub mod schema_change;
mod sink;
pub mod source;
pub mod status;
pub mod windows;

pub use pipeline::{Pipeline, PipelineSummary, RunOptions};

/// Everything that can stop a pipeline (bad records never do: they are dead letters).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Reading or writing a table failed.
    #[error(transparent)]
    Lake(#[from] sluice_lake::LakeError),
    /// The record source (Kafka, or a replay) could not answer.
    #[error(transparent)]
    Source(#[from] source::SourceError),
    /// Kafka could not be reached or answered with an error.
    #[error(transparent)]
    Kafka(#[from] sluice_kafka::KafkaError),
    /// The decoder could not build rows (never a record's content: that is a dead letter).
    #[error("table {table}: {source}")]
    Format {
        /// The table.
        table: String,
        /// What went wrong.
        #[source]
        source: sluice_formats::FormatError,
    },
    /// A window operator refused its input.
    #[error("aggregate table {table}: {source}")]
    Window {
        /// The aggregate table.
        table: String,
        /// What went wrong.
        #[source]
        source: sluice_window::WindowError,
    },
    /// Arrow refused to build rows.
    #[error("table {table}: {what}: {source}")]
    Arrow {
        /// The table.
        table: String,
        /// What was being built.
        what: &'static str,
        /// Arrow's error.
        #[source]
        source: arrow::error::ArrowError,
    },
    /// The changes of an upsert pipeline could not be kept.
    #[error(transparent)]
    Changelog(#[from] sluice_changelog::ChangelogError),
    /// Another instance took over this pipeline's windows: this one stalled for longer than
    /// `standby_takeover` without renewing its lease.
    #[error(
        "pipeline {pipeline}: another instance took over its windows (this one did not renew its lease within standby_takeover); stopping so that one instance computes them; a restart makes this instance a standby"
    )]
    LeaseLost {
        /// The pipeline.
        pipeline: String,
    },
    /// The table does not fit the pipeline's schema.
    #[error("table {table}: {message}")]
    Schema {
        /// The table.
        table: String,
        /// What does not fit.
        message: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = IngestError> = std::result::Result<T, E>;

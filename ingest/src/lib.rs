//! Ingest: Kafka records decoded into Arrow and committed exactly once to Delta tables.
//!
//! The data flow, stage by stage: [`source`] polls Kafka in batches on its own thread into
//! [`raw::RawBatch`]es; [`decode`] turns them into events rows and dead letters; [`pipeline`]
//! buffers rows per table, flushes by rows, bytes or latency, and commits each table with the
//! Kafka progress of the rows it holds, then commits the offsets to the consumer group.

pub mod dead_letter;
pub mod decode;
pub mod fast_json;
pub use sluice_lake::fault;
pub mod headers;
pub mod metrics;
pub mod pipeline;
pub mod raw;
pub mod schema;
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
    /// Kafka could not be reached or answered with an error.
    #[error("kafka: {0}")]
    Kafka(String),
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

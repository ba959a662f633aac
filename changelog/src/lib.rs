//! Changelog topics (CDC feeds, compacted topics) into tables that hold the latest row per
//! key (docs/changelog.md). The data flow of one flush:
//!
//! 1. [`envelope::split`]: each record is an upsert (its row) or a delete (its key), read
//!    from a plain value, a tombstone's Kafka key, or a Debezium change event;
//! 2. the rows and keys are decoded into Arrow by the pipeline's decoders;
//! 3. [`Latest`] keeps the last change per key (the highest offset; a key's changes must
//!    come from one partition);
//! 4. [`UpsertWriter::commit`] applies them in one Delta MERGE that also records the flush's
//!    progress, so a crash anywhere replays to the same table.

pub mod envelope;
mod latest;
mod writer;

pub use latest::{Latest, Refused};
pub use writer::{ChangeCounts, UpsertWriter};

/// What can go wrong keeping changes.
#[derive(Debug, thiserror::Error)]
pub enum ChangelogError {
    /// A batch lacks a column the changes need.
    #[error("table {table}: the changes have no column {column}")]
    MissingColumn {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// Arrow refused an operation on the buffered changes.
    #[error("table {table}: {source}")]
    Arrow {
        /// The table.
        table: String,
        /// The cause.
        #[source]
        source: arrow::error::ArrowError,
    },
}

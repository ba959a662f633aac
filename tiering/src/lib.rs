//! Tiering: the cold records of a topic move from the brokers into its archive table, and the
//! unified log reads both tiers as one log.
//!
//! The data flow, stage by stage: [`sluice_kafka::Cluster`] talks to Kafka (watermarks, time
//! lookups, DeleteRecords, topic settings); [`tier`] copies each partition's records in offset order
//! into the archive table ([`archive`] defines its rows), committing one `txn` per partition
//! whose version is the boundary (the first offset not archived), and only then moves the
//! broker's log start up to min(boundary, first offset younger than `hot_retention`);
//! [`reader`] reads `[from, boundary)` from the archive and the rest from the broker;
//! [`backfill`] runs an ingest pipeline over that reader.

pub mod archive;
pub mod archive_files;
pub mod backfill;
pub mod reader;
pub mod tier;

pub use archive::{archive_app_id, archive_schema};
pub use backfill::{BackfillOptions, BackfillSummary, backfill};
pub use reader::{LogEnd, LogStart, UnifiedLog};
pub use tier::{RoundReport, TierOptions, Tierer};

/// Everything that can stop tiering, a unified read or a backfill.
#[derive(Debug, thiserror::Error)]
pub enum TieringError {
    /// Reading or writing the archive table failed.
    #[error(transparent)]
    Lake(#[from] sluice_lake::LakeError),
    /// The pipeline of a backfill failed.
    #[error(transparent)]
    Ingest(#[from] sluice_ingest::IngestError),
    /// Kafka could not be reached or answered with an error.
    #[error("kafka: {0}")]
    Kafka(#[from] sluice_kafka::KafkaError),
    /// A task of this crate ended without an answer (it panicked or was cancelled).
    #[error("{what}: the task ended without an answer")]
    TaskLost {
        /// What the task was doing.
        what: &'static str,
    },
    /// The topic cannot be tiered or read as asked.
    #[error("topic {topic}: {message}")]
    Topic {
        /// The topic.
        topic: String,
        /// What is wrong and what would be right.
        message: String,
    },
    /// The archive table holds something sluice did not write, or cannot be read.
    #[error("archive table {table}: {source}")]
    Archive {
        /// The table.
        table: String,
        /// What is wrong.
        #[source]
        source: archive::ArchiveError,
    },
    /// A command-line argument is wrong.
    #[error("{0}")]
    Invalid(String),
}

/// Result alias for this crate.
pub type Result<T, E = TieringError> = std::result::Result<T, E>;

/// Runs a blocking broker call off the async runtime.
pub(crate) async fn blocking<T: Send + 'static, E: Into<TieringError> + Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, E> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(move || f().map_err(Into::into))
        .await
        .map_err(|_| TieringError::TaskLost {
            what: "a broker call",
        })?
}

//! The lake crate's error type.

use deltalake::DeltaTableError;
use deltalake::kernel::transaction::{CommitConflictError, TransactionError};

/// Everything that can go wrong reading or writing tables.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// The lake root or a table location is unusable.
    #[error("lake: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// A Delta or object-store operation failed.
    #[error("table {table}: {source}")]
    Delta {
        /// The table.
        table: String,
        /// The cause.
        #[source]
        source: Box<DeltaTableError>,
    },
    /// Another writer committed progress for the same partitions since this writer's snapshot;
    /// this writer's buffered rows must be dropped and its partitions re-read from the table.
    #[error(
        "table {table}: fenced: another writer committed progress for the same partitions ({detail})"
    )]
    Fenced {
        /// The table.
        table: String,
        /// The conflict.
        detail: String,
    },
    /// The table's schema does not fit what is being written.
    #[error("table {table}: schema mismatch: {message}")]
    Schema {
        /// The table.
        table: String,
        /// The difference.
        message: String,
    },
    /// A query over tables failed.
    #[error("query: {0}")]
    Query(#[from] deltalake::datafusion::error::DataFusionError),
}

impl LakeError {
    /// Wraps a Delta error with its table, recognising commit fencing.
    pub fn delta(table: &str, source: DeltaTableError) -> Self {
        if let DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(c),
        } = &source
            && matches!(c, CommitConflictError::ConcurrentTransaction)
        {
            return Self::Fenced {
                table: table.into(),
                detail: c.to_string(),
            };
        }
        Self::Delta {
            table: table.into(),
            source: Box::new(source),
        }
    }

    /// True when this error means the writer was fenced by another writer.
    pub fn is_fenced(&self) -> bool {
        matches!(self, Self::Fenced { .. })
    }

    /// True when a commit was refused because the table changed under the writer in a way
    /// its own catch-up does not move over (another writer changed the table's metadata or
    /// protocol: its properties, say). Nothing was committed; after a reload the writer can go
    /// on from the table's progress.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Self::Delta { source, .. } if matches!(
                source.as_ref(),
                DeltaTableError::Transaction {
                    source: TransactionError::CommitConflict(_)
                }
            )
        )
    }
}

impl LakeError {
    /// True when an object-store request of a commit failed (an error answer, a timeout, a
    /// dropped connection): whether the commit landed is unknown, and the table's progress
    /// says. Answers such as "not found" or "already exists" are not this.
    pub fn is_store_failure(&self) -> bool {
        let Self::Delta { source, .. } = self else {
            return false;
        };
        let store = match source.as_ref() {
            DeltaTableError::ObjectStore { source } => source,
            DeltaTableError::Transaction {
                source: TransactionError::ObjectStore { source },
            } => source,
            _ => return false,
        };
        matches!(store, object_store::Error::Generic { .. })
    }
}

/// Result alias for this crate.
pub type Result<T, E = LakeError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn generic() -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: "error sending request".into(),
        }
    }

    /// A failed request while committing is a store failure (the commit's outcome is read back
    /// from the table); an answer about the object, a conflict or a fence is not.
    #[test]
    fn a_failed_store_request_is_a_store_failure_and_an_answer_is_not() {
        let commit = DeltaTableError::Transaction {
            source: TransactionError::ObjectStore { source: generic() },
        };
        assert!(LakeError::delta("t", commit).is_store_failure());
        let read = DeltaTableError::ObjectStore { source: generic() };
        assert!(LakeError::delta("t", read).is_store_failure());
        let missing = DeltaTableError::ObjectStore {
            source: object_store::Error::NotFound {
                path: "x".into(),
                source: "gone".into(),
            },
        };
        assert!(!LakeError::delta("t", missing).is_store_failure());
        let exists = DeltaTableError::Transaction {
            source: TransactionError::VersionAlreadyExists(3),
        };
        assert!(!LakeError::delta("t", exists).is_store_failure());
    }
}

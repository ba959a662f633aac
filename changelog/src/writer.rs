//! [`UpsertWriter`]: the table of an upsert pipeline. Changes are reduced as they arrive
//! ([`Latest`]) and applied at commit in one MERGE that carries the flush's progress.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema};
use sluice_lake::merge::MergeOutcome;
use sluice_lake::{CommitOutcome, LakeError, TableWriter};

use crate::{ChangelogError, Latest, Refused};

/// What one commit of changes did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeCounts {
    /// Changes taken in (after replay filtering and refusals).
    pub changes: u64,
    /// Distinct keys among them.
    pub keys: u64,
    /// What the merge did.
    pub merge: MergeOutcome,
}

impl ChangeCounts {
    /// Rows written per row changed: 1.0 when every file the merge rewrote held only changed
    /// rows; the rows copied along with them make it larger.
    pub fn amplification(&self) -> f64 {
        let changed = self.merge.inserted + self.merge.updated + self.merge.deleted;
        if changed == 0 {
            return 0.0;
        }
        (self.merge.inserted + self.merge.updated + self.merge.copied) as f64 / changed as f64
    }
}

/// Writes changes into a table that holds the latest row per key.
#[derive(Debug)]
pub struct UpsertWriter {
    writer: TableWriter,
    latest: Latest,
    key: Vec<String>,
    how: sluice_lake::merge::Apply,
}

impl UpsertWriter {
    /// The writer of `writer`'s table, keyed by the columns `key`, applying each flush as
    /// `how` says.
    pub fn new(writer: TableWriter, key: &[String], how: sluice_config::Apply) -> Self {
        Self {
            latest: Latest::new(writer.name(), key),
            writer,
            key: key.to_vec(),
            how: match how {
                sluice_config::Apply::Rewrite => sluice_lake::merge::Apply::Rewrite,
                sluice_config::Apply::Merge => sluice_lake::merge::Apply::Merge,
            },
        }
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        self.writer.name()
    }

    /// The table's schema.
    pub fn schema(&self) -> Arc<Schema> {
        self.writer.schema()
    }

    /// Changes waiting for the next commit.
    pub fn buffered_rows(&self) -> u64 {
        self.latest.changes()
    }

    /// Memory they hold.
    pub fn buffered_bytes(&self) -> u64 {
        self.latest.bytes()
    }

    /// Takes in decoded upserts (`delete` false: rows of the table) or deletes (rows holding
    /// the key columns); returns the rows refused (see [`Latest::add`]).
    pub fn add(
        &mut self,
        batch: &RecordBatch,
        delete: bool,
    ) -> Result<Vec<Refused>, ChangelogError> {
        self.latest.add(batch, delete)
    }

    /// The next offset committed for `app_id`.
    pub async fn progress(&mut self, app_id: &str) -> Result<Option<i64>, LakeError> {
        self.writer.progress(app_id).await
    }

    /// Drops the buffered changes and moves to the table's latest version.
    pub async fn refresh(&mut self) -> Result<(), LakeError> {
        self.latest.clear();
        self.writer.refresh().await
    }

    /// Adds columns to the table (see [`TableWriter::add_columns`]).
    pub async fn add_columns(&mut self, fields: &[Field]) -> Result<Arc<Schema>, LakeError> {
        self.writer.add_columns(fields).await
    }

    /// Applies the last change per key with `progress` in one commit; a flush without
    /// changes commits the progress alone. `None` when there was nothing to commit.
    pub async fn commit(
        &mut self,
        progress: &[(String, i64)],
        app_metadata: HashMap<String, serde_json::Value>,
    ) -> Result<Option<(CommitOutcome, ChangeCounts)>, LakeError> {
        let changes = self.latest.changes();
        let keys = self.latest.keys() as u64;
        let schema = self.writer.schema();
        let taken = self.latest.take(&schema).map_err(|e| LakeError::Schema {
            table: self.writer.name().into(),
            message: e.to_string(),
        })?;
        let Some(taken) = taken else {
            if progress.is_empty() {
                return Ok(None);
            }
            let out = self.writer.commit_progress(progress, app_metadata).await?;
            return Ok(Some((out, ChangeCounts::default())));
        };
        let merge = self
            .writer
            .merge(self.how, &self.key, taken, progress, app_metadata)
            .await?;
        let out = CommitOutcome {
            version: merge.version,
            files: merge.files_added as usize,
            rows: merge.inserted + merge.updated + merge.deleted,
            bytes: merge.bytes_added,
            caught_up: false,
        };
        Ok(Some((
            out,
            ChangeCounts {
                changes,
                keys,
                merge,
            },
        )))
    }
}

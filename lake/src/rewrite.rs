//! sluice's own copy-on-write for changes to a table that holds the latest row per key, the
//! alternative to a Delta MERGE ([`crate::merge`]): the key columns of every file are read
//! to find the files that hold a changed key; only those are read whole and rewritten
//! without the changed keys, next to the upserts, in one commit that removes them and carries
//! the flush's progress. No SQL plan and no join: a hash set of the changed keys in Arrow's
//! row format.
//!
//! The commit is made on the snapshot the files were read from, with no retry: if another
//! writer committed in between, the snapshot moves forward (refused with
//! [`LakeError::Fenced`] when the other commit moved this writer's progress) and the files
//! are read again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deltalake::DeltaTable;
use deltalake::arrow::array::{Array, BooleanArray, RecordBatch};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::datatypes::Schema;
use deltalake::arrow::row::{RowConverter, SortField};
use deltalake::errors::DeltaTableError;
use deltalake::kernel::scalars::ScalarExt as _;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, Remove, Transaction};
use deltalake::parquet::arrow::ProjectionMask;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::merge::{Changes, MergeOutcome};
use crate::{LakeError, Result};

/// How many times a rewrite is redone on a newer snapshot before giving up.
const ATTEMPTS: usize = 8;

/// One live file of the table.
struct LiveFile {
    path: String,
    size: i64,
    partition_values: HashMap<String, Option<String>>,
}

/// Applies `changes` to `table` by rewriting the files that hold changed keys, in one commit
/// that also records `progress`. Same contract as [`crate::merge::apply`].
pub async fn apply(
    name: &str,
    table: &mut DeltaTable,
    key: &[String],
    changes: Changes,
    progress: &[(String, i64)],
    app_metadata: HashMap<String, serde_json::Value>,
    writer_properties: WriterProperties,
) -> Result<MergeOutcome> {
    let keys = KeySet::of(name, key, &changes)?;
    for _ in 0..ATTEMPTS {
        let schema = crate::table_arrow_schema(name, table)?;
        let (survivors, touched, mut out) = read_touched(name, table, &keys, &schema).await?;
        out.inserted = (changes.upserts.num_rows() as u64).saturating_sub(out.updated);
        let mut writer = RecordBatchWriter::for_table(table)
            .map_err(|e| LakeError::delta(name, e))?
            .with_writer_properties(writer_properties.clone());
        for b in survivors
            .into_iter()
            .chain([conform(name, &changes.upserts, &schema)?])
        {
            if b.num_rows() > 0 {
                writer
                    .write(b)
                    .await
                    .map_err(|e| LakeError::delta(name, e))?;
            }
        }
        let adds = writer
            .flush()
            .await
            .map_err(|e| LakeError::delta(name, e))?;
        out.files_added = adds.len() as u64;
        out.files_removed = touched.len() as u64;
        out.bytes_added = adds.iter().map(|a| a.size.max(0) as u64).sum();
        let now = chrono::Utc::now().timestamp_millis();
        let mut actions: Vec<Action> = touched
            .into_iter()
            .map(|f| {
                Action::Remove(Remove {
                    path: f.path,
                    data_change: true,
                    deletion_timestamp: Some(now),
                    extended_file_metadata: Some(true),
                    partition_values: Some(f.partition_values),
                    size: Some(f.size),
                    tags: None,
                    deletion_vector: None,
                    base_row_id: None,
                    default_row_commit_version: None,
                })
            })
            .collect();
        actions.extend(adds.into_iter().map(Action::Add));
        let txns: Vec<Transaction> = progress
            .iter()
            .map(|(id, v)| Transaction::new_with_last_update(id, *v, Some(now)))
            .collect();
        // What the commit did, in its commitInfo (as a MERGE's operationMetrics would say).
        let mut metadata = app_metadata.clone();
        metadata.insert(
            "sluice.changes".to_string(),
            serde_json::json!({
                "inserted": out.inserted,
                "updated": out.updated,
                "deleted": out.deleted,
                "copied": out.copied,
            }),
        );
        let props = CommitProperties::default()
            .with_application_transactions(txns)
            .with_metadata(metadata)
            .with_max_retries(0)
            .with_cleanup_expired_logs(Some(false));
        let snapshot = table.snapshot().map_err(|e| LakeError::delta(name, e))?;
        let committed = CommitBuilder::from(props)
            .with_actions(actions)
            .build(
                Some(snapshot),
                table.log_store(),
                DeltaOperation::Update { predicate: None },
            )
            .await;
        match committed {
            Ok(finalized) => {
                out.version = finalized.version() as i64;
                table.state = Some(finalized.snapshot());
                return Ok(out);
            }
            // Another writer committed since the snapshot: what was read may be gone. Move
            // on to the newest snapshot (unless it moved this writer's progress) and redo.
            Err(DeltaTableError::Transaction {
                source: TransactionError::MaxCommitAttempts(0),
            }) => catch_up(name, table, progress).await?,
            Err(e) => return Err(LakeError::delta(name, e)),
        }
    }
    Err(LakeError::Fenced {
        table: name.into(),
        detail: format!("other writers kept committing during {ATTEMPTS} rewrites"),
    })
}

/// The rows to keep of every file that holds a changed key (in `schema`), those files, and
/// the counts of rows replaced, deleted and copied.
async fn read_touched(
    name: &str,
    table: &DeltaTable,
    keys: &KeySet,
    schema: &Arc<Schema>,
) -> Result<(Vec<RecordBatch>, Vec<LiveFile>, MergeOutcome)> {
    let store = table.log_store().object_store(None);
    let mut survivors = Vec::new();
    let mut touched = Vec::new();
    let mut out = MergeOutcome::default();
    for f in live_files(name, table)? {
        let path = Path::from_url_path(&f.path).map_err(|e| LakeError::Config {
            message: format!("table {name}: file path {}: {e}", f.path),
        })?;
        let bytes = fetch(name, &store, &path).await?;
        if !keys.any_in(name, &bytes)? {
            continue;
        }
        for batch in parse(name, &bytes, None)? {
            let (keep, gone_upserted, gone_deleted) = keys.split(name, &batch)?;
            out.updated += gone_upserted;
            out.deleted += gone_deleted;
            let kept = filter_record_batch(&batch, &keep).map_err(|e| arrow(name, e))?;
            out.copied += kept.num_rows() as u64;
            if kept.num_rows() > 0 {
                survivors.push(conform(name, &kept, schema)?);
            }
        }
        out.bytes_removed += f.size.max(0) as u64;
        touched.push(f);
    }
    Ok((survivors, touched, out))
}

/// Moves `table` to its newest version, refusing with [`LakeError::Fenced`] when the move
/// changes the progress of an app id in `progress`.
async fn catch_up(name: &str, table: &mut DeltaTable, progress: &[(String, i64)]) -> Result<()> {
    let mut latest = table.clone();
    latest
        .update_state()
        .await
        .map_err(|e| LakeError::delta(name, e))?;
    for (app_id, _) in progress {
        let was = crate::committed_progress(name, table, app_id).await?;
        let now = crate::committed_progress(name, &latest, app_id).await?;
        if was != now {
            return Err(LakeError::Fenced {
                table: name.into(),
                detail: format!("progress of {app_id} moved from {was:?} to {now:?}"),
            });
        }
    }
    *table = latest;
    Ok(())
}

fn arrow(name: &str, e: deltalake::arrow::error::ArrowError) -> LakeError {
    LakeError::Schema {
        table: name.into(),
        message: e.to_string(),
    }
}

fn live_files(name: &str, table: &DeltaTable) -> Result<Vec<LiveFile>> {
    let snapshot = table.snapshot().map_err(|e| LakeError::delta(name, e))?;
    let partition_columns = snapshot.metadata().partition_columns().to_vec();
    Ok(snapshot
        .log_data()
        .iter()
        .map(|f| {
            let values = f.partition_values();
            let partition_values = partition_columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let v = values
                        .as_ref()
                        .and_then(|v| v.values().get(i).cloned())
                        .filter(|v| !v.is_null())
                        .map(|v| v.serialize());
                    (c.clone(), v)
                })
                .collect();
            LiveFile {
                path: f.path().to_string(),
                size: f.size(),
                partition_values,
            }
        })
        .collect())
}

/// The bytes of one Parquet file, fetched whole: a touched file is parsed twice from
/// them (its key columns, then every column) and fetched once.
async fn fetch(name: &str, store: &Arc<dyn ObjectStore>, path: &Path) -> Result<bytes::Bytes> {
    let failed = |e: object_store::Error| LakeError::Schema {
        table: name.into(),
        message: format!("reading {path}: {e}"),
    };
    store
        .get(path)
        .await
        .map_err(failed)?
        .bytes()
        .await
        .map_err(failed)
}

/// The batches of one Parquet file's `bytes`, all columns or the named ones.
fn parse(name: &str, bytes: &bytes::Bytes, columns: Option<&[String]>) -> Result<Vec<RecordBatch>> {
    let parquet = |e: deltalake::parquet::errors::ParquetError| LakeError::Schema {
        table: name.into(),
        message: format!("reading a data file: {e}"),
    };
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
        .map_err(parquet)?
        .with_batch_size(65_536);
    if let Some(columns) = columns {
        let descr = builder.metadata().file_metadata().schema_descr();
        let mask = ProjectionMask::columns(descr, columns.iter().map(String::as_str));
        builder = builder.with_projection(mask);
    }
    builder
        .build()
        .map_err(parquet)?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| arrow(name, e))
}

fn conform(name: &str, batch: &RecordBatch, schema: &Arc<Schema>) -> Result<RecordBatch> {
    crate::conform_batch(batch, schema).map_err(|e| arrow(name, e))
}

/// The changed keys, in Arrow's row format, split by kind.
struct KeySet {
    key: Vec<String>,
    converter: RowConverter,
    upserted: HashSet<Box<[u8]>>,
    deleted: HashSet<Box<[u8]>>,
}

impl KeySet {
    fn of(name: &str, key: &[String], changes: &Changes) -> Result<Self> {
        let columns = |b: &RecordBatch| -> Result<Vec<Arc<dyn Array>>> {
            key.iter()
                .map(|k| {
                    b.column_by_name(k)
                        .cloned()
                        .ok_or_else(|| LakeError::Schema {
                            table: name.into(),
                            message: format!("the changes have no key column {k}"),
                        })
                })
                .collect()
        };
        let up = columns(&changes.upserts)?;
        let del = columns(&changes.deletes)?;
        let fields = up
            .iter()
            .map(|a| SortField::new(a.data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields).map_err(|e| arrow(name, e))?;
        let set = |cols: &[Arc<dyn Array>]| -> Result<HashSet<Box<[u8]>>> {
            let rows = converter
                .convert_columns(cols)
                .map_err(|e| arrow(name, e))?;
            Ok(rows.iter().map(|r| r.as_ref().into()).collect())
        };
        Ok(Self {
            key: key.to_vec(),
            upserted: set(&up)?,
            deleted: set(&del)?,
            converter,
        })
    }

    fn rows(&self, name: &str, batch: &RecordBatch) -> Result<deltalake::arrow::row::Rows> {
        let cols: Vec<Arc<dyn Array>> = self
            .key
            .iter()
            .map(|k| {
                batch
                    .column_by_name(k)
                    .cloned()
                    .ok_or_else(|| LakeError::Schema {
                        table: name.into(),
                        message: format!("a file of the table has no key column {k}"),
                    })
            })
            .collect::<Result<_>>()?;
        self.converter
            .convert_columns(&cols)
            .map_err(|e| arrow(name, e))
    }

    /// Whether the Parquet file in `bytes` holds a changed key (parsing its key columns only).
    fn any_in(&self, name: &str, bytes: &bytes::Bytes) -> Result<bool> {
        for batch in parse(name, bytes, Some(&self.key))? {
            let rows = self.rows(name, &batch)?;
            if rows
                .iter()
                .any(|r| self.upserted.contains(r.as_ref()) || self.deleted.contains(r.as_ref()))
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The rows of `batch` to keep (their key did not change), and how many of the others
    /// are replaced by an upsert and how many deleted.
    fn split(&self, name: &str, batch: &RecordBatch) -> Result<(BooleanArray, u64, u64)> {
        let rows = self.rows(name, batch)?;
        let (mut upserted, mut deleted) = (0, 0);
        let keep: BooleanArray = rows
            .iter()
            .map(|r| {
                if self.upserted.contains(r.as_ref()) {
                    upserted += 1;
                    Some(false)
                } else if self.deleted.contains(r.as_ref()) {
                    deleted += 1;
                    Some(false)
                } else {
                    Some(true)
                }
            })
            .collect();
        Ok((keep, upserted, deleted))
    }
}

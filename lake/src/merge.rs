//! Applying changes to a table that holds the latest row per key: one Delta MERGE that
//! deletes, updates and inserts, and carries the writer's progress (`txn` actions) in the
//! same commit, so a crash before it leaves the table as it was and a crash after it leaves
//! the progress past the changes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deltalake::DeltaTable;
use deltalake::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, new_null_array};
use deltalake::arrow::compute::concat_batches;
use deltalake::arrow::datatypes::{Field, Schema, SchemaRef};
use deltalake::datafusion::prelude::{Expr, SessionContext, col, lit};
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::parquet::file::properties::WriterProperties;

use crate::{LakeError, Result};

/// The column of the merge source that marks a delete.
const DELETE: &str = "_sluice_delete";

/// Changes reduced to the last one per key.
#[derive(Debug)]
pub struct Changes {
    /// Rows to insert or replace, in the table's schema.
    pub upserts: RecordBatch,
    /// Keys to delete: the key columns (other columns, if any, are ignored).
    pub deletes: RecordBatch,
}

/// What one merge did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// The committed version.
    pub version: i64,
    /// Rows of new keys.
    pub inserted: u64,
    /// Rows replaced.
    pub updated: u64,
    /// Rows deleted.
    pub deleted: u64,
    /// Unchanged rows copied into new files because they shared a file with a changed one.
    pub copied: u64,
    /// Files written.
    pub files_added: u64,
    /// Files replaced.
    pub files_removed: u64,
    /// Bytes of the files written.
    pub bytes_added: u64,
    /// Bytes of the files replaced.
    pub bytes_removed: u64,
}

/// How a flush's changes are applied to the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Apply {
    /// sluice's copy-on-write ([`crate::rewrite`]).
    #[default]
    Rewrite,
    /// delta-rs's MERGE ([`apply`]).
    Merge,
}

/// Applies `changes` the way `how` says; see [`apply`] for the contract.
#[allow(clippy::too_many_arguments)]
pub async fn apply_with(
    how: Apply,
    name: &str,
    table: &mut DeltaTable,
    key: &[String],
    changes: Changes,
    progress: &[(String, i64)],
    app_metadata: HashMap<String, serde_json::Value>,
    writer_properties: WriterProperties,
) -> Result<MergeOutcome> {
    match how {
        Apply::Merge => {
            apply(
                name,
                table,
                key,
                changes,
                progress,
                app_metadata,
                writer_properties,
            )
            .await
        }
        Apply::Rewrite => {
            crate::rewrite::apply(
                name,
                table,
                key,
                changes,
                progress,
                app_metadata,
                writer_properties,
            )
            .await
        }
    }
}

/// Applies `changes` to `table` in one commit that also records `progress` (`app_id` ->
/// next offset). A commit that loses to another writer's progress for the same app ids is
/// [`LakeError::Fenced`]; one that loses to a compaction of the files it read is a conflict
/// ([`LakeError::is_conflict`]) and nothing is committed.
pub async fn apply(
    name: &str,
    table: &mut DeltaTable,
    key: &[String],
    changes: Changes,
    progress: &[(String, i64)],
    app_metadata: HashMap<String, serde_json::Value>,
    writer_properties: WriterProperties,
) -> Result<MergeOutcome> {
    let delta = |e| LakeError::delta(name, e);
    let before = file_sizes(name, table)?;
    let source = source_batch(name, &changes)?;
    let ctx = SessionContext::new();
    let df = ctx.read_batch(source).map_err(LakeError::Query)?;
    let on = key
        .iter()
        .map(|k| col(format!("target.{}", quoted(k))).eq(col(format!("source.{}", quoted(k)))))
        .reduce(Expr::and)
        .ok_or_else(|| LakeError::Schema {
            table: name.into(),
            message: "no key columns".into(),
        })?;
    let columns: Vec<String> = changes
        .upserts
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let now = chrono::Utc::now().timestamp_millis();
    let txns: Vec<Transaction> = progress
        .iter()
        .map(|(id, v)| Transaction::new_with_last_update(id, *v, Some(now)))
        .collect();
    let props = CommitProperties::default()
        .with_application_transactions(txns)
        .with_metadata(app_metadata)
        .with_cleanup_expired_logs(Some(false));
    let is_delete = || col(format!("source.{DELETE}"));
    let (merged, metrics) = table
        .clone()
        .merge(df, on)
        .with_source_alias("source")
        .with_target_alias("target")
        .with_writer_properties(writer_properties)
        .with_commit_properties(props)
        .when_matched_delete(|d| d.predicate(is_delete().eq(lit(true))))
        .map_err(delta)?
        .when_matched_update(|u| {
            columns
                .iter()
                .fold(u.predicate(is_delete().eq(lit(false))), |u, c| {
                    u.update(quoted(c), col(format!("source.{}", quoted(c))))
                })
        })
        .map_err(delta)?
        .when_not_matched_insert(|i| {
            columns
                .iter()
                .fold(i.predicate(is_delete().eq(lit(false))), |i, c| {
                    i.set(quoted(c), col(format!("source.{}", quoted(c))))
                })
        })
        .map_err(delta)?
        .await
        .map_err(delta)?;
    let after = file_sizes(name, &merged)?;
    let version = merged.version().unwrap_or_default() as i64;
    *table = merged;
    let added: Vec<u64> = after
        .iter()
        .filter(|(p, _)| !before.contains_key(*p))
        .map(|(_, s)| *s)
        .collect();
    let removed: Vec<u64> = before
        .iter()
        .filter(|(p, _)| !after.contains_key(*p))
        .map(|(_, s)| *s)
        .collect();
    Ok(MergeOutcome {
        version,
        inserted: metrics.num_target_rows_inserted as u64,
        updated: metrics.num_target_rows_updated as u64,
        deleted: metrics.num_target_rows_deleted as u64,
        copied: metrics.num_target_rows_copied as u64,
        files_added: added.len() as u64,
        files_removed: removed.len() as u64,
        bytes_added: added.iter().sum(),
        bytes_removed: removed.iter().sum(),
    })
}

/// A column name as DataFusion reads it (case kept).
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn file_sizes(name: &str, table: &DeltaTable) -> Result<HashMap<String, u64>> {
    let snapshot = table.snapshot().map_err(|e| LakeError::delta(name, e))?;
    Ok(snapshot
        .log_data()
        .iter()
        .map(|f| (f.path().to_string(), f.size().max(0) as u64))
        .collect())
}

/// One batch of both kinds of change: the upserts' rows, then the deletes' keys with nulls
/// in the other columns, and a [`DELETE`] flag column. Every column is nullable here.
fn source_batch(name: &str, changes: &Changes) -> Result<RecordBatch> {
    let table_schema = changes.upserts.schema();
    let mut fields: Vec<Field> = table_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    fields.push(Field::new(
        DELETE,
        deltalake::arrow::datatypes::DataType::Boolean,
        false,
    ));
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let arrow = |e: deltalake::arrow::error::ArrowError| LakeError::Schema {
        table: name.into(),
        message: e.to_string(),
    };
    let mut upsert_cols: Vec<ArrayRef> = changes.upserts.columns().to_vec();
    upsert_cols.push(Arc::new(BooleanArray::from(vec![
        false;
        changes.upserts.num_rows()
    ])));
    let upserts = RecordBatch::try_new(schema.clone(), upsert_cols).map_err(arrow)?;
    let n = changes.deletes.num_rows();
    let mut delete_cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    let delete_schema = changes.deletes.schema();
    let key_names: HashSet<&str> = delete_schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    for f in table_schema.fields() {
        if key_names.contains(f.name().as_str()) {
            let c = changes
                .deletes
                .column_by_name(f.name())
                .map(Arc::clone)
                .unwrap_or_else(|| new_null_array(f.data_type(), n));
            if c.data_type() != f.data_type() {
                return Err(LakeError::Schema {
                    table: name.into(),
                    message: format!(
                        "key column {} of the deletes is {}, the table's is {}",
                        f.name(),
                        c.data_type(),
                        f.data_type()
                    ),
                });
            }
            delete_cols.push(c);
        } else {
            delete_cols.push(new_null_array(f.data_type(), n));
        }
    }
    delete_cols.push(Arc::new(BooleanArray::from(vec![true; n])));
    let deletes = RecordBatch::try_new(schema.clone(), delete_cols).map_err(arrow)?;
    concat_batches(&schema, [&upserts, &deletes]).map_err(arrow)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use deltalake::arrow::array::{Int64Array, StringArray};
    use deltalake::arrow::datatypes::DataType;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    fn rows(ids: &[i64], names: &[&str]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(names.to_vec())),
            ],
        )
        .unwrap()
    }

    fn keys(ids: &[i64]) -> RecordBatch {
        let s = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        RecordBatch::try_new(s, vec![Arc::new(Int64Array::from(ids.to_vec()))]).unwrap()
    }

    async fn state(lake: &crate::Lake) -> Vec<(i64, String)> {
        let table = lake.open("t").await.unwrap().unwrap();
        let batches = crate::scan_sql("t", &table, "SELECT id, name FROM t ORDER BY id")
            .await
            .unwrap();
        let mut out = Vec::new();
        for b in batches {
            let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let names = deltalake::arrow::compute::cast(b.column(1), &DataType::Utf8).unwrap();
            let names = names.as_any().downcast_ref::<StringArray>().unwrap();
            for i in 0..b.num_rows() {
                out.push((ids.value(i), names.value(i).to_string()));
            }
        }
        out
    }

    #[tokio::test]
    async fn inserts_updates_and_deletes_land_with_the_progress_in_one_commit() {
        for how in [Apply::Merge, Apply::Rewrite] {
            one_way(how).await;
        }
    }

    async fn one_way(how: Apply) {
        let dir = tempfile::tempdir().unwrap();
        let lake = crate::Lake::new(&sluice_config::LakeConfig {
            root: dir.path().to_str().unwrap().into(),
            ..Default::default()
        })
        .unwrap();
        let mut table = lake
            .open_or_create("t", &schema(), &crate::TableSpec::default())
            .await
            .unwrap();
        let key = vec!["id".to_string()];
        let props = WriterProperties::builder().build();
        let first = Changes {
            upserts: rows(&[1, 2, 3], &["a", "b", "c"]),
            deletes: keys(&[]),
        };
        let p1 = vec![("app".to_string(), 10)];
        let out = apply(
            "t",
            &mut table,
            &key,
            first,
            &p1,
            HashMap::new(),
            props.clone(),
        )
        .await
        .unwrap();
        assert_eq!((out.inserted, out.updated, out.deleted), (3, 0, 0));
        let second = Changes {
            upserts: rows(&[2, 4], &["B", "d"]),
            deletes: keys(&[3, 99]),
        };
        let p2 = vec![("app".to_string(), 20)];
        let out = apply_with(
            how,
            "t",
            &mut table,
            &key,
            second,
            &p2,
            HashMap::new(),
            props.clone(),
        )
        .await
        .unwrap();
        assert_eq!(
            (out.inserted, out.updated, out.deleted),
            (1, 1, 1),
            "{how:?}"
        );
        assert_eq!(out.version, 2);
        // A third flush touching one key: only the files holding it are rewritten.
        let third = Changes {
            upserts: rows(&[5], &["e"]),
            deletes: keys(&[]),
        };
        let p3 = vec![("app".to_string(), 30)];
        let out = apply_with(
            how,
            "t",
            &mut table,
            &key,
            third,
            &p3,
            HashMap::new(),
            props,
        )
        .await
        .unwrap();
        assert_eq!(
            (out.inserted, out.updated, out.deleted),
            (1, 0, 0),
            "{how:?}"
        );
        assert_eq!(out.files_removed, 0, "{how:?}: a new key rewrites no file");
        // An update of that key rewrites its file only, not the one holding 1, 2 and 4.
        let fourth = Changes {
            upserts: rows(&[5], &["e"]),
            deletes: keys(&[]),
        };
        let p4 = vec![("app".to_string(), 30)];
        let files_before = table.snapshot().unwrap().log_data().iter().count();
        let out = apply_with(
            how,
            "t",
            &mut table,
            &key,
            fourth,
            &p4,
            HashMap::new(),
            WriterProperties::builder().build(),
        )
        .await
        .unwrap();
        assert_eq!(
            (out.inserted, out.updated, out.copied),
            (0, 1, 0),
            "{how:?}"
        );
        assert_eq!(out.files_removed, 1, "{how:?}: only the file holding key 5");
        assert_eq!(files_before, 2, "{how:?}");
        assert_eq!(
            state(&lake).await,
            vec![
                (1, "a".into()),
                (2, "B".into()),
                (4, "d".into()),
                (5, "e".into())
            ],
            "{how:?}"
        );
        let t = lake.open("t").await.unwrap().unwrap();
        assert_eq!(
            crate::committed_progress("t", &t, "app").await.unwrap(),
            Some(30)
        );
        let v2 = lake.open_at_version("t", 2).await.unwrap();
        assert_eq!(
            crate::committed_progress("t", &v2, "app").await.unwrap(),
            Some(20)
        );
        let v1 = lake.open_at_version("t", 1).await.unwrap();
        assert_eq!(
            crate::committed_progress("t", &v1, "app").await.unwrap(),
            Some(10)
        );
    }
}

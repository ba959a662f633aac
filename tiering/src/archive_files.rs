//! Reads a partition's archive straight from its Parquet files, in offset order, without a
//! query engine: files are picked by the `offset` statistics of their Delta `add` actions,
//! row groups by their Parquet statistics, and each row group is read whole, sorted when it
//! is not already (a compaction may have concatenated files out of order), and cut to the
//! range asked for.
//!
//! This only works when the chosen row groups cover disjoint offset ranges, which is how the
//! tierer writes them; [`plan`] returns `None` otherwise (or when statistics are missing), and
//! the caller falls back to a sorted query.

use std::sync::Arc;

use arrow::array::{AsArray, Int32Array, Int64Array, RecordBatch};
use arrow::compute::{sort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use bytes::Bytes;
use deltalake::DeltaTable;
use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::statistics::Statistics;

use crate::archive::{ArchiveError, PARTITION_COLUMN};

/// One row group to read: its file, its index and its offset range (inclusive).
#[derive(Clone, Debug)]
pub struct RowGroupRead {
    path: Path,
    size: u64,
    metadata: Arc<ParquetMetaData>,
    index: usize,
    min: i64,
    max: i64,
}

/// Row groups of one partition covering `[lo, hi)`, in offset order, with disjoint ranges.
#[derive(Clone, Debug)]
pub struct Plan {
    store: Arc<dyn ObjectStore>,
    groups: Vec<RowGroupRead>,
}

/// (min, max) of the `offset` column in a Delta `add` action's statistics.
fn file_range(stats: Option<String>) -> Option<(i64, i64)> {
    let v: serde_json::Value = serde_json::from_str(&stats?).ok()?;
    Some((
        v.get("minValues")?.get("offset")?.as_i64()?,
        v.get("maxValues")?.get("offset")?.as_i64()?,
    ))
}

/// Plans the read of `[lo, hi)` of `partition`; `None` when the direct read cannot guarantee
/// offset order (overlapping ranges, or statistics missing).
pub async fn plan(
    table: &DeltaTable,
    partition: i32,
    lo: i64,
    hi: i64,
) -> Result<Option<Plan>, ArchiveError> {
    let snapshot = table.snapshot()?;
    let wanted = partition.to_string();
    let mut files = Vec::new();
    for f in snapshot.log_data().iter() {
        let part = f.partition_values_map().remove(PARTITION_COLUMN).flatten();
        if part.as_deref() != Some(wanted.as_str()) {
            continue;
        }
        let Some((min, max)) = file_range(f.stats()) else {
            return Ok(None);
        };
        if max >= lo && min < hi {
            files.push((min, f.object_store_path(), f.size().max(0) as u64));
        }
    }
    files.sort_by_key(|(min, _, _)| *min);
    let store = table.object_store();
    let mut groups = Vec::new();
    for (_, path, size) in files {
        let mut reader = FileReader::new(&store, &path, size);
        let metadata = reader
            .get_metadata(None)
            .await
            .map_err(|source| ArchiveError::File {
                path: path.to_string(),
                source,
            })?;
        let Some(col) = metadata
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .position(|c| c.name() == "offset")
        else {
            return Ok(None);
        };
        for (index, rg) in metadata.row_groups().iter().enumerate() {
            let Some(Statistics::Int64(s)) = rg.column(col).statistics() else {
                return Ok(None);
            };
            let (Some(min), Some(max)) = (s.min_opt(), s.max_opt()) else {
                return Ok(None);
            };
            if *max >= lo && *min < hi {
                groups.push(RowGroupRead {
                    path: path.clone(),
                    size,
                    metadata: metadata.clone(),
                    index,
                    min: *min,
                    max: *max,
                });
            }
        }
    }
    groups.sort_by_key(|g| g.min);
    if groups.windows(2).any(|w| w[0].max >= w[1].min) {
        return Ok(None);
    }
    Ok(Some(Plan { store, groups }))
}

impl Plan {
    /// Row groups to read.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// True when nothing is to be read.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Reads row group `i` whole, in offset order, cut to `[lo, hi)`, with the partition
    /// column (which Delta keeps in the path, not the file) added.
    pub async fn read(
        &self,
        i: usize,
        partition: i32,
        lo: i64,
        hi: i64,
    ) -> Result<RecordBatch, ArchiveError> {
        let g = &self.groups[i];
        let file = |source| ArchiveError::File {
            path: g.path.to_string(),
            source,
        };
        let rows = g.metadata.row_group(g.index).num_rows().max(1) as usize;
        let metadata = ArrowReaderMetadata::try_new(g.metadata.clone(), ArrowReaderOptions::new())
            .map_err(file)?;
        let reader = FileReader::new(&self.store, &g.path, g.size);
        let mut stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata)
            .with_row_groups(vec![g.index])
            .with_batch_size(rows)
            .build()
            .map_err(file)?;
        let mut batches = Vec::new();
        while let Some(b) = stream.next().await {
            batches.push(b.map_err(file)?);
        }
        let batch = match batches.len() {
            1 => batches.remove(0),
            _ => {
                let schema = match batches.first() {
                    Some(b) => b.schema(),
                    None => {
                        return Err(ArchiveError::EmptyRowGroup {
                            path: g.path.to_string(),
                            index: g.index,
                        });
                    }
                };
                arrow::compute::concat_batches(&schema, &batches)?
            }
        };
        cut(with_partition(sorted(batch)?, partition)?, lo, hi)
    }
}

/// A Parquet file in the object store, of known size.
struct FileReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

impl FileReader {
    fn new(store: &Arc<dyn ObjectStore>, path: &Path, size: u64) -> Self {
        Self {
            store: store.clone(),
            path: path.clone(),
            size,
        }
    }
}

fn store_error(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl AsyncFileReader for FileReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(store_error)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(store_error)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

fn offsets(batch: &RecordBatch) -> Result<&Int64Array, ArchiveError> {
    batch
        .column_by_name("offset")
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .ok_or(ArchiveError::MissingColumn("offset"))
}

/// The batch in offset order (unchanged when it already is).
fn sorted(batch: RecordBatch) -> Result<RecordBatch, ArchiveError> {
    let o = offsets(&batch)?;
    if o.values().windows(2).all(|w| w[0] < w[1]) {
        return Ok(batch);
    }
    let idx = sort_to_indices(o, None, None)?;
    Ok(take_record_batch(&batch, &idx)?)
}

/// Rows of a sorted batch with offsets in `[lo, hi)`.
fn cut(batch: RecordBatch, lo: i64, hi: i64) -> Result<RecordBatch, ArchiveError> {
    let o = offsets(&batch)?.values();
    let a = o.partition_point(|x| *x < lo);
    let b = o.partition_point(|x| *x < hi);
    Ok(batch.slice(a, b.saturating_sub(a)))
}

fn with_partition(batch: RecordBatch, partition: i32) -> Result<RecordBatch, ArchiveError> {
    if batch.column_by_name(PARTITION_COLUMN).is_some() {
        return Ok(batch);
    }
    let mut fields: Vec<Arc<Field>> = batch.schema().fields().iter().cloned().collect();
    let mut columns = batch.columns().to_vec();
    fields.push(Arc::new(Field::new(
        PARTITION_COLUMN,
        DataType::Int32,
        false,
    )));
    columns.push(Arc::new(Int32Array::from(vec![
        partition;
        batch.num_rows()
    ])));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;

    fn batch(offsets: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("offset", DataType::Int64, false),
            Field::new("value", DataType::Utf8, false),
        ]));
        let values: Vec<String> = offsets.iter().map(|o| format!("v{o}")).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(offsets.to_vec())),
                Arc::new(StringArray::from(values)),
            ],
        )
        .unwrap()
    }

    fn values(b: &RecordBatch) -> Vec<String> {
        let v = b.column_by_name("value").unwrap().as_string::<i32>();
        (0..b.num_rows()).map(|i| v.value(i).to_string()).collect()
    }

    #[test]
    fn an_unsorted_row_group_is_sorted_with_its_rows() {
        let b = sorted(batch(&[7, 3, 5, 4])).unwrap();
        assert_eq!(offsets(&b).unwrap().values().to_vec(), vec![3, 4, 5, 7]);
        assert_eq!(values(&b), vec!["v3", "v4", "v5", "v7"]);
    }

    #[test]
    fn cut_keeps_exactly_the_range() {
        let b = cut(batch(&[10, 11, 12, 13, 14]), 11, 14).unwrap();
        assert_eq!(offsets(&b).unwrap().values().to_vec(), vec![11, 12, 13]);
        let none = cut(batch(&[10, 11]), 20, 30).unwrap();
        assert_eq!(none.num_rows(), 0);
    }

    #[test]
    fn the_partition_column_is_added_once() {
        let b = with_partition(batch(&[1, 2]), 4).unwrap();
        let p = b.column_by_name(PARTITION_COLUMN).unwrap();
        assert_eq!(
            p.as_primitive::<arrow::datatypes::Int32Type>()
                .values()
                .to_vec(),
            vec![4, 4]
        );
        let again = with_partition(b.clone(), 9).unwrap();
        assert_eq!(again.num_columns(), b.num_columns());
    }

    #[test]
    fn file_ranges_come_from_delta_statistics() {
        let s =
            r#"{"numRecords":3,"minValues":{"offset":5,"timestamp":"x"},"maxValues":{"offset":9}}"#;
        assert_eq!(file_range(Some(s.into())), Some((5, 9)));
        assert_eq!(file_range(Some(r#"{"numRecords":3}"#.into())), None);
        assert_eq!(file_range(None), None);
    }
}

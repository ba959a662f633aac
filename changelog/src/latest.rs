//! [`Latest`]: the last change per key of one flush, kept as it arrives: the decoded batches
//! stay as they are, and a map from each key (in Arrow's row format) to the row of its
//! highest offset says which rows the flush applies.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int32Array, Int64Array, RecordBatch};
use arrow::compute::interleave;
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use sluice_formats::ErrorKind;
use sluice_formats::schema::columns;
use sluice_lake::merge::Changes;

use crate::ChangelogError;

/// A change the flush cannot apply, with its row in the batch given to [`Latest::add`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The row.
    pub row: usize,
    /// Why ([`ErrorKind::NullKey`] or [`ErrorKind::KeyInTwoPartitions`]).
    pub kind: ErrorKind,
    /// For a person.
    pub message: String,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    partition: i32,
    offset: i64,
    delete: bool,
    batch: usize,
    row: usize,
}

/// The changes of one flush, reduced to the last per key.
#[derive(Debug)]
pub struct Latest {
    table: String,
    key: Vec<String>,
    converter: Option<RowConverter>,
    slots: HashMap<Box<[u8]>, Slot>,
    upserts: Vec<RecordBatch>,
    deletes: Vec<RecordBatch>,
    changes: u64,
    bytes: u64,
}

impl Latest {
    /// An empty flush of table `table` keyed by the columns `key`.
    pub fn new(table: &str, key: &[String]) -> Self {
        Self {
            table: table.into(),
            key: key.to_vec(),
            converter: None,
            slots: HashMap::new(),
            upserts: Vec::new(),
            deletes: Vec::new(),
            changes: 0,
            bytes: 0,
        }
    }

    /// Changes taken in since the last [`Latest::take`].
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Distinct keys among them.
    pub fn keys(&self) -> usize {
        self.slots.len()
    }

    /// Memory held by the buffered batches.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Drops the buffered changes (after a refused commit: they are read again).
    pub fn clear(&mut self) {
        self.slots.clear();
        self.upserts.clear();
        self.deletes.clear();
        self.changes = 0;
        self.bytes = 0;
    }

    fn column<'a>(
        &self,
        batch: &'a RecordBatch,
        name: &str,
    ) -> Result<&'a ArrayRef, ChangelogError> {
        batch
            .column_by_name(name)
            .ok_or_else(|| ChangelogError::MissingColumn {
                table: self.table.clone(),
                column: name.into(),
            })
    }

    /// Takes in a decoded batch of upserts (rows of the table) or deletes (rows holding the
    /// key columns), each with its `_kafka_partition` and `_kafka_offset`. Returns the rows
    /// it refused: a null in a key column, or a key another partition changed in this flush
    /// (a key's changes are ordered only within one partition).
    pub fn add(
        &mut self,
        batch: &RecordBatch,
        delete: bool,
    ) -> Result<Vec<Refused>, ChangelogError> {
        let arrow = |source| ChangelogError::Arrow {
            table: self.table.clone(),
            source,
        };
        let keys: Vec<ArrayRef> = self
            .key
            .iter()
            .map(|k| self.column(batch, k).cloned())
            .collect::<Result<_, _>>()?;
        let partitions = self.column(batch, columns::PARTITION)?;
        let offsets = self.column(batch, columns::OFFSET)?;
        let (Some(partitions), Some(offsets)) = (
            partitions.as_any().downcast_ref::<Int32Array>(),
            offsets.as_any().downcast_ref::<Int64Array>(),
        ) else {
            return Err(ChangelogError::MissingColumn {
                table: self.table.clone(),
                column: format!(
                    "{} (int) and {} (long)",
                    columns::PARTITION,
                    columns::OFFSET
                ),
            });
        };
        if self.converter.is_none() {
            let fields = keys
                .iter()
                .map(|a| SortField::new(a.data_type().clone()))
                .collect();
            self.converter = Some(RowConverter::new(fields).map_err(arrow)?);
        }
        let Some(converter) = self.converter.as_ref() else {
            return Ok(Vec::new());
        };
        let rows = converter.convert_columns(&keys).map_err(arrow)?;
        let at = if delete {
            self.deletes.len()
        } else {
            self.upserts.len()
        };
        let mut refused = Vec::new();
        for i in 0..batch.num_rows() {
            if let Some(k) = keys.iter().position(|a| a.is_null(i)) {
                refused.push(Refused {
                    row: i,
                    kind: ErrorKind::NullKey,
                    message: format!("key column {} is null", self.key[k]),
                });
                continue;
            }
            let slot = Slot {
                partition: partitions.value(i),
                offset: offsets.value(i),
                delete,
                batch: at,
                row: i,
            };
            match self.slots.get_mut(rows.row(i).as_ref()) {
                Some(old) if old.partition != slot.partition => refused.push(Refused {
                    row: i,
                    kind: ErrorKind::KeyInTwoPartitions,
                    message: format!(
                        "partition {} changed this key in the same flush; a key's changes must stay in one partition (key the topic by it)",
                        old.partition
                    ),
                }),
                Some(old) => {
                    if slot.offset > old.offset {
                        *old = slot;
                    }
                }
                None => {
                    self.slots.insert(rows.row(i).as_ref().into(), slot);
                }
            }
        }
        self.changes += (batch.num_rows() - refused.len()) as u64;
        self.bytes += batch.get_array_memory_size() as u64;
        if delete {
            let key_cols: Vec<usize> = self
                .key
                .iter()
                .filter_map(|k| batch.schema().index_of(k).ok())
                .collect();
            self.deletes.push(batch.project(&key_cols).map_err(arrow)?);
        } else {
            self.upserts.push(batch.clone());
        }
        Ok(refused)
    }

    /// The last change per key, upserts in the table's `schema` (batches decoded before a
    /// column was added read null in it); `None` when there is nothing to apply. Empties the
    /// flush.
    pub fn take(&mut self, schema: &SchemaRef) -> Result<Option<Changes>, ChangelogError> {
        if self.slots.is_empty() {
            self.clear();
            return Ok(None);
        }
        let arrow = |source| ChangelogError::Arrow {
            table: self.table.clone(),
            source,
        };
        let mut up = Vec::new();
        let mut del = Vec::new();
        for s in self.slots.values() {
            if s.delete {
                del.push((s.batch, s.row));
            } else {
                up.push((s.batch, s.row));
            }
        }
        // Keep the rows in arrival order within each kind: files then follow the topic.
        up.sort_unstable();
        del.sort_unstable();
        let upserts: Vec<RecordBatch> = self
            .upserts
            .iter()
            .map(|b| sluice_lake::conform_batch(b, schema))
            .collect::<Result<_, _>>()
            .map_err(arrow)?;
        let upserts = pick(schema, &upserts, &up).map_err(arrow)?;
        let key_schema: SchemaRef = Arc::new(
            schema
                .project(
                    &self
                        .key
                        .iter()
                        .filter_map(|k| schema.index_of(k).ok())
                        .collect::<Vec<_>>(),
                )
                .map_err(arrow)?,
        );
        let deletes: Vec<RecordBatch> = self
            .deletes
            .iter()
            .map(|b| sluice_lake::conform_batch(b, &key_schema))
            .collect::<Result<_, _>>()
            .map_err(arrow)?;
        let deletes = pick(&key_schema, &deletes, &del).map_err(arrow)?;
        self.clear();
        Ok(Some(Changes { upserts, deletes }))
    }
}

/// The rows at `indices` ((batch, row) pairs) of `batches`, all of schema `schema`.
fn pick(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    indices: &[(usize, usize)],
) -> Result<RecordBatch, arrow::error::ArrowError> {
    if indices.is_empty() {
        return Ok(RecordBatch::new_empty(schema.clone()));
    }
    let columns = (0..schema.fields().len())
        .map(|c| {
            let arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(c).as_ref()).collect();
            interleave(&arrays, indices)
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use arrow::array::StringArray;
    use arrow::datatypes::{DataType, Field, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
            Field::new(columns::PARTITION, DataType::Int32, false),
            Field::new(columns::OFFSET, DataType::Int64, false),
        ]))
    }

    fn rows(r: &[(Option<i64>, &str, i32, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(r.iter().map(|x| x.0).collect::<Vec<_>>())),
                Arc::new(StringArray::from(r.iter().map(|x| x.1).collect::<Vec<_>>())),
                Arc::new(Int32Array::from(r.iter().map(|x| x.2).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(r.iter().map(|x| x.3).collect::<Vec<_>>())),
            ],
        )
        .unwrap()
    }

    fn ids(b: &RecordBatch) -> Vec<i64> {
        let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        a.values().to_vec()
    }

    #[test]
    fn the_highest_offset_per_key_wins_across_batches_and_kinds() {
        let mut l = Latest::new("t", &["id".into()]);
        let r = l
            .add(
                &rows(&[
                    (Some(1), "a", 0, 10),
                    (Some(2), "b", 0, 11),
                    (Some(1), "c", 0, 12),
                ]),
                false,
            )
            .unwrap();
        assert!(r.is_empty());
        l.add(&rows(&[(Some(2), "", 0, 13)]), true).unwrap();
        // A replayed older change does not overwrite a newer one.
        l.add(
            &rows(&[(Some(1), "old", 0, 9), (Some(3), "x", 0, 14)]),
            false,
        )
        .unwrap();
        assert_eq!((l.changes(), l.keys()), (6, 3));
        let c = l.take(&schema()).unwrap().unwrap();
        assert_eq!(ids(&c.upserts), vec![1, 3]);
        let v = c
            .upserts
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(v.value(0), "c");
        assert_eq!(ids(&c.deletes), vec![2]);
        assert_eq!(c.deletes.num_columns(), 1);
        assert!(l.take(&schema()).unwrap().is_none());
    }

    #[test]
    fn null_keys_and_keys_from_a_second_partition_are_refused() {
        let mut l = Latest::new("t", &["id".into()]);
        let r = l
            .add(
                &rows(&[
                    (Some(1), "a", 0, 1),
                    (None, "b", 0, 2),
                    (Some(1), "c", 1, 3),
                ]),
                false,
            )
            .unwrap();
        let kinds: Vec<(usize, ErrorKind)> = r.iter().map(|x| (x.row, x.kind)).collect();
        assert_eq!(
            kinds,
            vec![(1, ErrorKind::NullKey), (2, ErrorKind::KeyInTwoPartitions)]
        );
        let c = l.take(&schema()).unwrap().unwrap();
        assert_eq!(ids(&c.upserts), vec![1]);
    }

    #[test]
    fn rows_decoded_before_a_column_was_added_read_null_in_it() {
        let mut l = Latest::new("t", &["id".into()]);
        let old = rows(&[(Some(1), "a", 0, 1)]).project(&[0, 2, 3]).unwrap();
        l.add(&old, false).unwrap();
        l.add(&rows(&[(Some(2), "b", 0, 2)]), false).unwrap();
        let c = l.take(&schema()).unwrap().unwrap();
        assert_eq!(ids(&c.upserts), vec![1, 2]);
        let v = c.upserts.column(1);
        assert!(v.is_null(0) && !v.is_null(1));
    }
}

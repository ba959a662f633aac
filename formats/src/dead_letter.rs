//! Rows of the dead-letter table.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    UInt32Array,
};
use arrow::compute::take;
use arrow::datatypes::SchemaRef;

use sluice_kafka::RawBatch;

use crate::{DeadLetter, FormatError};

/// Builds dead-letter rows (in `schema`, the table's stored schema) for `dead` records of `raw`.
pub fn dead_letter_batch(
    schema: &SchemaRef,
    pipeline: &str,
    raw: &RawBatch,
    dead: &[DeadLetter],
) -> Result<RecordBatch, FormatError> {
    let idx = UInt32Array::from(dead.iter().map(|d| d.index as u32).collect::<Vec<_>>());
    let pick = |a: ArrayRef| {
        take(a.as_ref(), &idx, None).map_err(|source| FormatError::Arrow {
            what: "taking dead records' bytes",
            source,
        })
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![pipeline; dead.len()])),
        Arc::new(StringArray::from_iter_values(
            dead.iter().map(|d| raw.topics[d.index].as_ref()),
        )),
        Arc::new(Int32Array::from_iter_values(
            dead.iter().map(|d| raw.partitions[d.index]),
        )),
        Arc::new(Int64Array::from_iter_values(
            dead.iter().map(|d| raw.offsets[d.index]),
        )),
        Arc::new(
            TimestampMicrosecondArray::from(
                dead.iter()
                    .map(|d| raw.timestamps[d.index].map(|ms| ms * 1000))
                    .collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        ),
        pick(Arc::new(raw.keys.clone()))?,
        pick(Arc::new(raw.values.clone()))?,
        Arc::new(StringArray::from_iter_values(
            dead.iter().map(|d| d.kind.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            dead.iter().map(|d| d.message.as_str()),
        )),
    ];
    RecordBatch::try_new(schema.clone(), columns).map_err(|source| FormatError::Arrow {
        what: "building dead-letter rows",
        source,
    })
}

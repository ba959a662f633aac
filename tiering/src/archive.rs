//! The archive table's rows: one per Kafka record, exactly as the producer wrote it.
//!
//! Columns: `partition` (int, the Delta partition column), `offset` (long), `timestamp`
//! (timestamp, UTC, µs precision holding Kafka's ms), `timestamp_type` (`create_time`,
//! `log_append_time` or `none`), `key` and `value` (binary, null when absent) and `headers`
//! (array of `{key: string, value: binary}` in record order, duplicates kept). Within a file the
//! rows are sorted by offset, so file and row-group statistics on `offset` and `timestamp` let
//! readers skip what a range does not need.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, Int32Array, Int64Array, ListBuilder,
    RecordBatch, StringArray, StringBuilder, StructBuilder,
};
use arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit};
use sluice_kafka::{RawBatch, RecordHeaders};
use sluice_lake::progress_app_id;

/// The Delta partition column of archive tables.
pub const PARTITION_COLUMN: &str = "partition";

fn header_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Binary, true),
    ])
}

/// The Arrow schema of an archive table.
pub fn archive_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new(PARTITION_COLUMN, DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("timestamp_type", DataType::Utf8, false),
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, true),
        Field::new(
            "headers",
            DataType::List(Arc::new(Field::new(
                "element",
                DataType::Struct(header_fields()),
                true,
            ))),
            true,
        ),
    ]))
}

/// The app id under which the archive table records a partition's boundary.
pub fn archive_app_id(topic: &str, partition: i32) -> String {
    progress_app_id("archive", topic, partition)
}

fn timestamp_type_name(t: i8) -> &'static str {
    match t {
        0 => "create_time",
        1 => "log_append_time",
        _ => "none",
    }
}

fn timestamp_type_code(name: &str) -> i8 {
    match name {
        "create_time" => 0,
        "log_append_time" => 1,
        _ => -1,
    }
}

/// What is wrong with archive rows or files (never with the records in them).
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A column sluice writes is missing.
    #[error("the archive has no column {0:?}")]
    MissingColumn(&'static str),
    /// A column has a type sluice does not write.
    #[error("archive column {column:?} has type {found}; expected {expected}")]
    ColumnType {
        /// The column.
        column: &'static str,
        /// Its type.
        found: DataType,
        /// The type sluice writes.
        expected: &'static str,
    },
    /// A Parquet file of the archive could not be read.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A row group that the file's metadata lists held no rows.
    #[error("{path}: row group {index} is empty")]
    EmptyRowGroup {
        /// The file.
        path: String,
        /// The row group.
        index: usize,
    },
    /// The table's snapshot could not be read.
    #[error(transparent)]
    Table(#[from] sluice_lake::deltalake::DeltaTableError),
    /// A task reading a row group ended without an answer.
    #[error("a row-group read ended without an answer")]
    TaskLost,
    /// Arrow refused to build or cast rows.
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
}

fn wrong_type(column: &'static str, found: &DataType, expected: &'static str) -> ArchiveError {
    ArchiveError::ColumnType {
        column,
        found: found.clone(),
        expected,
    }
}

/// Archive rows for `raw` (which must carry headers), laid out as `schema` (the table's).
pub fn to_archive_batch(raw: &RawBatch, schema: &Arc<Schema>) -> Result<RecordBatch, ArchiveError> {
    let (partitions, offsets, timestamps) = raw.position_arrays();
    let types =
        StringArray::from_iter_values(raw.timestamp_types.iter().map(|t| timestamp_type_name(*t)));
    let headers_type = schema
        .field_with_name("headers")
        .map(|f| f.data_type().clone())
        .map_err(|_| ArchiveError::MissingColumn("headers"))?;
    let DataType::List(element) = &headers_type else {
        return Err(wrong_type("headers", &headers_type, "a list"));
    };
    let element = element.clone();
    let DataType::Struct(fields) = element.data_type().clone() else {
        return Err(wrong_type("headers", &headers_type, "a list of structs"));
    };
    let mut headers = ListBuilder::new(StructBuilder::new(
        fields,
        vec![
            Box::new(StringBuilder::new()) as Box<dyn arrow::array::ArrayBuilder>,
            Box::new(BinaryBuilder::new()),
        ],
    ))
    .with_field(element);
    let empty = Vec::new();
    for i in 0..raw.len() {
        let hs: &RecordHeaders = raw
            .headers
            .as_ref()
            .and_then(|h| h.get(i))
            .unwrap_or(&empty);
        let s = headers.values();
        for (k, v) in hs {
            s.field_builder::<StringBuilder>(0)
                .ok_or_else(|| wrong_type("headers", &headers_type, "(key string, value binary)"))?
                .append_value(k);
            s.field_builder::<BinaryBuilder>(1)
                .ok_or_else(|| wrong_type("headers", &headers_type, "(key string, value binary)"))?
                .append_option(v.as_deref());
            s.append(true);
        }
        headers.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        partitions,
        offsets,
        timestamps,
        Arc::new(types),
        Arc::new(raw.keys.clone()),
        Arc::new(raw.values.clone()),
        Arc::new(headers.finish()),
    ];
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

fn column<'a>(batch: &'a RecordBatch, name: &'static str) -> Result<&'a ArrayRef, ArchiveError> {
    batch
        .column_by_name(name)
        .ok_or(ArchiveError::MissingColumn(name))
}

fn cast(a: &ArrayRef, to: &DataType) -> Result<ArrayRef, ArchiveError> {
    Ok(arrow::compute::cast(a, to)?)
}

/// Turns archive rows back into the records they were, for `topic`.
pub fn from_archive_batch(
    batch: &RecordBatch,
    topic: &Arc<str>,
    with_headers: bool,
) -> Result<RawBatch, ArchiveError> {
    let n = batch.num_rows();
    let partitions = cast(column(batch, PARTITION_COLUMN)?, &DataType::Int32)?;
    let partitions = partitions
        .as_any()
        .downcast_ref::<Int32Array>()
        .ok_or_else(|| wrong_type(PARTITION_COLUMN, &DataType::Int32, "int"))?;
    let offsets = cast(column(batch, "offset")?, &DataType::Int64)?;
    let offsets = offsets
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| wrong_type("offset", &DataType::Int64, "long"))?;
    let ts = cast(
        column(batch, "timestamp")?,
        &DataType::Timestamp(TimeUnit::Microsecond, None),
    )?;
    let ts = ts.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
    let types = cast(column(batch, "timestamp_type")?, &DataType::Utf8)?;
    let types = types.as_string::<i32>();
    let keys = cast(column(batch, "key")?, &DataType::Binary)?;
    let values = cast(column(batch, "value")?, &DataType::Binary)?;
    let headers = if with_headers {
        Some(read_headers(column(batch, "headers")?, n)?)
    } else {
        None
    };
    Ok(RawBatch {
        topics: vec![topic.clone(); n],
        partitions: partitions.values().to_vec(),
        offsets: offsets.values().to_vec(),
        timestamps: (0..n)
            .map(|i| (!ts.is_null(i)).then(|| ts.value(i).div_euclid(1000)))
            .collect(),
        timestamp_types: (0..n)
            .map(|i| timestamp_type_code(types.value(i)))
            .collect(),
        keys: keys
            .as_any()
            .downcast_ref::<BinaryArray>()
            .ok_or_else(|| wrong_type("key", keys.data_type(), "binary"))?
            .clone(),
        values: values
            .as_any()
            .downcast_ref::<BinaryArray>()
            .ok_or_else(|| wrong_type("value", values.data_type(), "binary"))?
            .clone(),
        headers,
    })
}

fn read_headers(col: &ArrayRef, n: usize) -> Result<Vec<RecordHeaders>, ArchiveError> {
    let list = match col.data_type() {
        DataType::List(_) => col.as_list::<i32>().clone(),
        DataType::LargeList(f) => cast(col, &DataType::List(f.clone()))?
            .as_list::<i32>()
            .clone(),
        other => return Err(wrong_type("headers", other, "a list of (key, value)")),
    };
    let items = list.values().as_struct();
    let keys = cast(items.column(0), &DataType::Utf8)?;
    let keys = keys.as_string::<i32>();
    let vals = cast(items.column(1), &DataType::Binary)?;
    let vals = vals.as_binary::<i32>();
    let offsets = list.value_offsets();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if list.is_null(i) {
            out.push(Vec::new());
            continue;
        }
        let (a, b) = (offsets[i] as usize, offsets[i + 1] as usize);
        out.push(
            (a..b)
                .map(|j| {
                    (
                        keys.value(j).to_string(),
                        (!vals.is_null(j)).then(|| vals.value(j).to_vec()),
                    )
                })
                .collect(),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_kafka::RawBatchBuilder;

    #[test]
    fn records_survive_the_round_trip_through_archive_rows() {
        let topic: Arc<str> = Arc::from("t");
        let mut b = RawBatchBuilder::new(4, true);
        b.push(
            &topic,
            2,
            7,
            Some(1_700_000_000_123),
            0,
            Some(b"k"),
            Some(b"v"),
            || vec![("a".into(), Some(vec![1])), ("a".into(), None)],
        );
        b.push(&topic, 2, 9, None, -1, None, None, Vec::new);
        b.push(
            &topic,
            2,
            10,
            Some(5),
            1,
            Some(b""),
            Some(&[0, 255]),
            || vec![("x".into(), Some(Vec::new()))],
        );
        let raw = b.finish();
        let schema = archive_schema();
        let batch = to_archive_batch(&raw, &schema).expect("archive batch");
        assert_eq!(batch.num_rows(), 3);
        let back = from_archive_batch(&batch, &topic, true).expect("raw again");
        assert_eq!(back.offsets, raw.offsets);
        assert_eq!(back.partitions, raw.partitions);
        assert_eq!(back.timestamps, raw.timestamps);
        assert_eq!(back.timestamp_types, raw.timestamp_types);
        assert_eq!(back.keys, raw.keys);
        assert_eq!(back.values, raw.values);
        assert_eq!(back.headers, raw.headers);
    }
}

//! [`RawBatch`]: records as they came from Kafka, column by column, before decoding.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BinaryBuilder, Int32Builder, Int64Builder, StringArray,
    TimestampMicrosecondBuilder,
};

/// The headers of one record: (name, value) pairs in record order.
pub type RecordHeaders = Vec<(String, Option<Vec<u8>>)>;

/// Records polled from Kafka, stored as Arrow columns so that the key and value bytes are
/// copied once, into contiguous buffers, and become output columns without another copy.
#[derive(Debug, Clone)]
pub struct RawBatch {
    /// Topic of each record.
    pub topics: Vec<Arc<str>>,
    /// Partition of each record.
    pub partitions: Vec<i32>,
    /// Offset of each record.
    pub offsets: Vec<i64>,
    /// Record timestamp in ms, if the record has one.
    pub timestamps: Vec<Option<i64>>,
    /// 0 create time, 1 log-append time, -1 none.
    pub timestamp_types: Vec<i8>,
    /// Keys (null for no key).
    pub keys: BinaryArray,
    /// Values (null for a tombstone).
    pub values: BinaryArray,
    /// Headers per record (only collected when asked for).
    pub headers: Option<Vec<RecordHeaders>>,
}

impl RawBatch {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }
    /// True when there are no records.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }
    /// The value bytes of record `i` (`None` for a null value).
    pub fn value(&self, i: usize) -> Option<&[u8]> {
        use arrow::array::Array;
        if self.values.is_null(i) {
            None
        } else {
            Some(self.values.value(i))
        }
    }
    /// The key bytes of record `i`.
    pub fn key(&self, i: usize) -> Option<&[u8]> {
        use arrow::array::Array;
        if self.keys.is_null(i) {
            None
        } else {
            Some(self.keys.value(i))
        }
    }
    /// The topic column as an Arrow array.
    pub fn topic_array(&self) -> ArrayRef {
        Arc::new(StringArray::from_iter_values(
            self.topics.iter().map(|t| t.as_ref()),
        ))
    }
    /// Partition, offset and timestamp (µs, UTC) columns.
    pub fn position_arrays(&self) -> (ArrayRef, ArrayRef, ArrayRef) {
        let mut p = Int32Builder::with_capacity(self.len());
        p.append_slice(&self.partitions);
        let mut o = Int64Builder::with_capacity(self.len());
        o.append_slice(&self.offsets);
        let mut t = TimestampMicrosecondBuilder::with_capacity(self.len()).with_timezone("UTC");
        for ts in &self.timestamps {
            t.append_option(ts.map(|ms| ms.saturating_mul(1000)));
        }
        (
            Arc::new(p.finish()),
            Arc::new(o.finish()),
            Arc::new(t.finish()),
        )
    }
}

/// Builds a [`RawBatch`] record by record.
#[derive(Debug)]
pub struct RawBatchBuilder {
    topics: Vec<Arc<str>>,
    partitions: Vec<i32>,
    offsets: Vec<i64>,
    timestamps: Vec<Option<i64>>,
    timestamp_types: Vec<i8>,
    keys: BinaryBuilder,
    values: BinaryBuilder,
    headers: Option<Vec<RecordHeaders>>,
    bytes: usize,
}

impl RawBatchBuilder {
    /// An empty builder; `with_headers` collects record headers too. Room is made for
    /// `capacity` records of about 256 value bytes each.
    pub fn new(capacity: usize, with_headers: bool) -> Self {
        Self::with_capacity(capacity, capacity * 256, with_headers)
    }

    /// An empty builder with room for `capacity` records and `value_bytes` of values.
    pub fn with_capacity(capacity: usize, value_bytes: usize, with_headers: bool) -> Self {
        Self {
            topics: Vec::with_capacity(capacity),
            partitions: Vec::with_capacity(capacity),
            offsets: Vec::with_capacity(capacity),
            timestamps: Vec::with_capacity(capacity),
            timestamp_types: Vec::with_capacity(capacity),
            keys: BinaryBuilder::with_capacity(capacity, capacity * 16),
            values: BinaryBuilder::with_capacity(capacity, value_bytes),
            headers: with_headers.then(Vec::new),
            bytes: 0,
        }
    }

    /// Appends one record.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        topic: &Arc<str>,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
        timestamp_type: i8,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl FnOnce() -> RecordHeaders,
    ) {
        self.topics.push(topic.clone());
        self.partitions.push(partition);
        self.offsets.push(offset);
        self.timestamps.push(timestamp);
        self.timestamp_types.push(timestamp_type);
        self.bytes += key.map_or(0, |k| k.len()) + value.map_or(0, |v| v.len()) + 32;
        self.keys.append_option(key);
        self.values.append_option(value);
        if let Some(h) = &mut self.headers {
            h.push(headers());
        }
    }

    /// Records so far.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Approximate bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The finished batch.
    pub fn finish(mut self) -> RawBatch {
        RawBatch {
            topics: self.topics,
            partitions: self.partitions,
            offsets: self.offsets,
            timestamps: self.timestamps,
            timestamp_types: self.timestamp_types,
            keys: self.keys.finish(),
            values: self.values.finish(),
            headers: self.headers,
        }
    }
}

impl RawBatch {
    /// The records at `rows` (ascending), as a new batch.
    pub fn select(&self, rows: &[usize]) -> RawBatch {
        let idx =
            arrow::array::UInt32Array::from(rows.iter().map(|&r| r as u32).collect::<Vec<_>>());
        let pick = |a: &BinaryArray| -> BinaryArray {
            arrow::compute::take(a, &idx, None)
                .ok()
                .and_then(|x| x.as_any().downcast_ref::<BinaryArray>().cloned())
                .unwrap_or_else(|| BinaryArray::from(Vec::<Option<&[u8]>>::new()))
        };
        RawBatch {
            topics: rows.iter().map(|&r| self.topics[r].clone()).collect(),
            partitions: rows.iter().map(|&r| self.partitions[r]).collect(),
            offsets: rows.iter().map(|&r| self.offsets[r]).collect(),
            timestamps: rows.iter().map(|&r| self.timestamps[r]).collect(),
            timestamp_types: rows.iter().map(|&r| self.timestamp_types[r]).collect(),
            keys: pick(&self.keys),
            values: pick(&self.values),
            headers: self
                .headers
                .as_ref()
                .map(|h| rows.iter().map(|&r| h[r].clone()).collect()),
        }
    }
}

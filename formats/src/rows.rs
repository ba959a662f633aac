//! The events rows every format ends with: its decoded columns, then sluice's own (topic,
//! partition, offset, timestamp, key, headers, event time, date, hour) for the kept records.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, TimestampMicrosecondArray, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::SchemaRef;
use chrono_tz::Tz;
use sluice_kafka::RawBatch;

use crate::FormatError;
use crate::time::date_and_hour;

/// How the rows are laid out.
#[derive(Clone, Debug)]
pub struct RowLayout {
    /// The events table's schema: the decoded columns, then sluice's.
    pub output: SchemaRef,
    /// The zone of the date and hour columns.
    pub tz: Tz,
    /// Whether the table has a headers column.
    pub include_headers: bool,
}

impl RowLayout {
    /// The events rows of records `kept` (indices into `raw`): `decoded` holds their decoded
    /// columns (one row per kept record) and `event_us` their event times.
    pub fn rows(
        &self,
        raw: &RawBatch,
        kept: &[usize],
        decoded: Vec<ArrayRef>,
        event_us: Vec<i64>,
    ) -> Result<RecordBatch, FormatError> {
        let take_idx = UInt32Array::from(kept.iter().map(|&i| i as u32).collect::<Vec<_>>());
        let (partitions, offsets, timestamps) = raw.position_arrays();
        let topics = raw.topic_array();
        let pick = |a: &ArrayRef| {
            take(a.as_ref(), &take_idx, None).map_err(|source| FormatError::Arrow {
                what: "taking the Kafka columns",
                source,
            })
        };
        let keys: ArrayRef = Arc::new(raw.keys.clone());
        let (dates, hours) = date_and_hour(&event_us, self.tz);
        let mut out = decoded;
        out.push(pick(&topics)?);
        out.push(pick(&partitions)?);
        out.push(pick(&offsets)?);
        out.push(pick(&timestamps)?);
        out.push(pick(&keys)?);
        if self.include_headers {
            out.push(crate::headers::headers_array(raw, kept));
        }
        out.push(Arc::new(
            TimestampMicrosecondArray::from(event_us).with_timezone("UTC"),
        ));
        out.push(Arc::new(dates));
        out.push(Arc::new(hours));
        RecordBatch::try_new(self.output.clone(), out).map_err(|source| FormatError::Arrow {
            what: "building the events batch",
            source,
        })
    }
}

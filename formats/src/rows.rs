//! The events rows every format ends with: its decoded columns, then sluice's own (topic,
//! partition, offset, timestamp, key, headers, event time, date, hour) for the kept records.

use std::sync::Arc;

use std::collections::HashMap;

use arrow::array::{ArrayRef, RecordBatch, TimestampMicrosecondArray, UInt32Array, new_null_array};
use arrow::compute::take;
use arrow::datatypes::SchemaRef;
use chrono_tz::Tz;
use sluice_kafka::RawBatch;

use crate::FormatError;
use crate::schema::columns;
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
    /// columns by name (one row per kept record) and `event_us` their event times.
    ///
    /// Columns are matched to the table's by name, never by position: a configuration that
    /// lists its columns in another order than the table writes each value into its own
    /// column, and a table column the configuration no longer has reads null.
    pub fn rows(
        &self,
        raw: &RawBatch,
        kept: &[usize],
        decoded: Vec<(String, ArrayRef)>,
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
        let mut by_name: HashMap<String, ArrayRef> = decoded.into_iter().collect();
        by_name.insert(columns::TOPIC.into(), pick(&topics)?);
        by_name.insert(columns::PARTITION.into(), pick(&partitions)?);
        by_name.insert(columns::OFFSET.into(), pick(&offsets)?);
        by_name.insert(columns::TIMESTAMP.into(), pick(&timestamps)?);
        by_name.insert(columns::KEY.into(), pick(&keys)?);
        if self.include_headers {
            by_name.insert(
                columns::HEADERS.into(),
                crate::headers::headers_array(raw, kept),
            );
        }
        by_name.insert(
            columns::EVENT_TIME.into(),
            Arc::new(TimestampMicrosecondArray::from(event_us).with_timezone("UTC")),
        );
        by_name.insert(columns::EVENT_DATE.into(), Arc::new(dates));
        by_name.insert(columns::EVENT_HOUR.into(), Arc::new(hours));
        let mut out = Vec::with_capacity(self.output.fields().len());
        for f in self.output.fields() {
            match by_name.remove(f.name()) {
                Some(c) => out.push(c),
                None if f.is_nullable() => out.push(new_null_array(f.data_type(), kept.len())),
                None => {
                    return Err(FormatError::DroppedRequiredColumn {
                        column: f.name().clone(),
                    });
                }
            }
        }
        RecordBatch::try_new(self.output.clone(), out).map_err(|source| FormatError::Arrow {
            what: "building the events batch",
            source,
        })
    }
}

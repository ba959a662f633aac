//! Windowed aggregates inside a pipeline: one [`AggregateSink`] per `[[pipeline.aggregate]]`,
//! and the rows of the late table.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use sluice_config::{AggregateConfig, PipelineConfig, WindowClock};
use sluice_formats::schema::{columns, timestamp_type};
use sluice_lake::TableWriter;
use sluice_window::{
    LateRecord, PartitionWindows, WindowError, WindowOperator, WindowOutput, WindowSpec,
};

/// Commit metadata key that held the window clock (ms) before the clock became a `txn`
/// (`sluice_lake::clock_app_id`); read only for tables written by older versions.
pub const CLOCK_KEY: &str = "sluice.clock";

/// One windowed aggregate: its operator and its table.
pub struct AggregateSink {
    /// The aggregate's config.
    pub cfg: AggregateConfig,
    /// The index of its late table among the pipeline's late tables.
    pub late_index: usize,
    /// The windows: one operator for the topic, or one per partition.
    pub op: Windows,
    /// The aggregate table.
    pub writer: TableWriter,
}

impl std::fmt::Debug for AggregateSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AggregateSink")
            .field("table", &self.cfg.table)
            .finish_non_exhaustive()
    }
}

/// An aggregate's windows under its `clock`: one operator whose clock is the minimum over the
/// topic's partitions, or one operator per partition (docs/windows.md).
#[derive(Debug)]
pub enum Windows {
    /// `clock = "topic"`.
    Topic(Box<WindowOperator>),
    /// `clock = "partition"`.
    Partition(PartitionWindows),
}

impl Windows {
    /// The windows of aggregate `agg` of pipeline `p`, over rows of the events table's schema.
    pub fn new(
        p: &PipelineConfig,
        agg: &AggregateConfig,
        input: SchemaRef,
    ) -> Result<Self, WindowError> {
        let spec = window_spec(p, agg);
        Ok(match agg.clock {
            WindowClock::Topic => {
                Self::Topic(Box::new(WindowOperator::with_input_schema(spec, &input)?))
            }
            WindowClock::Partition => Self::Partition(PartitionWindows::new(spec, input)?),
        })
    }

    /// The aggregate table's schema.
    pub fn output_schema(&mut self) -> SchemaRef {
        match self {
            Self::Topic(op) => op.output_schema(&[]),
            Self::Partition(w) => w.output_schema(),
        }
    }

    /// The topic clock, or the slowest partition's clock.
    pub fn clock(&self) -> Option<i64> {
        match self {
            Self::Topic(op) => op.clock(),
            Self::Partition(w) => w.min_clock(),
        }
    }

    /// The topic clock (`None` with per-partition windows): what an aggregate commit records
    /// under `sluice:<pipeline>:clock`.
    pub fn topic_clock(&self) -> Option<i64> {
        match self {
            Self::Topic(op) => op.clock(),
            Self::Partition(_) => None,
        }
    }

    /// Each open partition's clock (per-partition windows only).
    pub fn partition_clocks(&self) -> Vec<(u32, i64)> {
        match self {
            Self::Topic(_) => Vec::new(),
            Self::Partition(w) => w.clocks().collect(),
        }
    }

    /// Open (key, window) states.
    pub fn open_windows(&self) -> usize {
        match self {
            Self::Topic(op) => op.open_windows(),
            Self::Partition(w) => w.open_windows(),
        }
    }

    /// The open windows' running values.
    pub fn open_rows(&mut self) -> Result<Option<RecordBatch>, WindowError> {
        match self {
            Self::Topic(op) => op.open_rows(),
            Self::Partition(w) => w.open_rows(),
        }
    }

    /// Per partition id, the lowest offset an open window holds.
    pub fn needed_offsets(&self) -> HashMap<u32, i64> {
        match self {
            Self::Topic(op) => op.needed_offsets(),
            Self::Partition(w) => w.needed_offsets(),
        }
    }

    /// Forgets every open window (and the topic clock).
    pub fn reset(&mut self) {
        match self {
            Self::Topic(op) => op.reset(),
            Self::Partition(w) => w.clear(),
        }
    }

    /// Lets the topic clock see idle partitions (a partition's own clock moves only with its
    /// records).
    pub fn tick(&mut self, now_ms: i64) -> Result<WindowOutput, WindowError> {
        match self {
            Self::Topic(op) => op.tick(now_ms),
            Self::Partition(_) => Ok(WindowOutput::default()),
        }
    }

    /// Partition `pid` holds the topic clock from `now_ms` until it is idle.
    pub fn assign(&mut self, pid: u32, now_ms: i64) {
        if let Self::Topic(op) = self {
            op.assign(pid, now_ms);
        }
    }

    /// Restores the topic clock where it has none yet.
    pub fn restore_topic_clock(&mut self, clock: Option<i64>) {
        if let Self::Topic(op) = self
            && op.clock().is_none()
        {
            op.restore_clock(clock);
        }
    }
}

/// The operator spec of one aggregate of pipeline `p`.
pub fn window_spec(p: &PipelineConfig, agg: &AggregateConfig) -> WindowSpec {
    WindowSpec {
        kind: agg.window,
        grace_ms: agg.grace.as_millis_i64(),
        group_by: agg.group_by.clone(),
        aggregates: agg.aggregates.clone(),
        event_time_column: columns::EVENT_TIME.to_string(),
        idle_timeout_ms: p.idle_timeout.as_millis_i64(),
        max_future_skew_ms: Some(p.max_future_skew.as_millis_i64()),
        reference_time_column: Some(columns::TIMESTAMP.to_string()),
    }
}

/// The late table's schema.
pub fn late_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("pipeline", DataType::Utf8, false),
        Field::new("aggregate", DataType::Utf8, false),
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("key", DataType::Binary, true),
        Field::new("event_time", timestamp_type(), false),
        Field::new("clock", timestamp_type(), false),
        Field::new("window_start", timestamp_type(), false),
        Field::new("window_end", timestamp_type(), false),
    ]))
}

/// Late-table rows for `late` records of `events` (rows of the events table's schema).
pub fn late_rows(
    schema: &SchemaRef,
    pipeline: &str,
    aggregate: &str,
    events: &RecordBatch,
    late: &[LateRecord],
) -> Result<RecordBatch, ArrowError> {
    let idx = UInt32Array::from(late.iter().map(|l| l.row as u32).collect::<Vec<_>>());
    let col = |name: &str| -> Result<ArrayRef, ArrowError> {
        let c = events
            .column_by_name(name)
            .ok_or_else(|| ArrowError::SchemaError(format!("column {name} missing")))?;
        take(c.as_ref(), &idx, None)
    };
    let ts =
        |v: Vec<i64>| Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC")) as ArrayRef;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![pipeline; late.len()])),
        Arc::new(StringArray::from(vec![aggregate; late.len()])),
        col(columns::TOPIC)?,
        col(columns::PARTITION)?,
        col(columns::OFFSET)?,
        col(columns::KEY)?,
        ts(late.iter().map(|l| l.event_time_ms * 1000).collect()),
        ts(late.iter().map(|l| l.clock_ms * 1000).collect()),
        ts(late.iter().map(|l| l.missed_start_ms * 1000).collect()),
        ts(late.iter().map(|l| l.missed_end_ms * 1000).collect()),
    ];
    RecordBatch::try_new(schema.clone(), columns)
}

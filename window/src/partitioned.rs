//! [`PartitionWindows`]: one window operator per source partition (`clock = "partition"`,
//! docs/windows.md "Windows across instances").
//!
//! Each partition has its own clock, moved only by its own records, and its own windows: what
//! a partition emits and which of its records are late depends on that partition's records in
//! offset order alone, never on how partitions interleave or which instance reads them.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::operator::{WindowError, WindowOperator, WindowOutput, WindowSpec};

/// Window operators keyed by a small partition id, each with its partition's clock.
pub struct PartitionWindows {
    spec: WindowSpec,
    input: SchemaRef,
    schema: SchemaRef,
    ops: BTreeMap<u32, WindowOperator>,
}

impl std::fmt::Debug for PartitionWindows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionWindows")
            .field("partitions", &self.ops.len())
            .field("open", &self.open_windows())
            .finish()
    }
}

impl PartitionWindows {
    /// Per-partition windows over rows of `input`'s schema.
    pub fn new(spec: WindowSpec, input: SchemaRef) -> Result<Self, WindowError> {
        let mut template = WindowOperator::for_partition(spec.clone(), &input, "", 0)?;
        let schema = template.output_schema(&[]);
        Ok(Self {
            spec,
            input,
            schema,
            ops: BTreeMap::new(),
        })
    }

    /// The schema of the rows: the closed-window columns, then `_kafka_topic`,
    /// `_kafka_partition` and the `avg` weights.
    pub fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Starts partition `pid` (`topic`, `partition`) afresh at the clock its table committed:
    /// a replay from the partition's needed offset rebuilds its open windows, and windows it
    /// emitted before are closed under that clock. Replaces what was open for `pid`.
    pub fn open(
        &mut self,
        pid: u32,
        (topic, partition): (&str, i32),
        clock: Option<i64>,
        now_ms: i64,
    ) -> Result<(), WindowError> {
        let mut op =
            WindowOperator::for_partition(self.spec.clone(), &self.input, topic, partition)?;
        op.restore_clock(clock);
        op.assign(pid, now_ms);
        self.ops.insert(pid, op);
        Ok(())
    }

    /// Drops partition `pid`'s windows (given up: its new owner rebuilds them).
    pub fn close(&mut self, pid: u32) {
        self.ops.remove(&pid);
    }

    /// Drops every partition's windows.
    pub fn clear(&mut self) {
        self.ops.clear();
    }

    /// Whether partition `pid` is open here.
    pub fn is_open(&self, pid: u32) -> bool {
        self.ops.contains_key(&pid)
    }

    /// Each open partition's clock (partitions that have not moved theirs are left out).
    pub fn clocks(&self) -> impl Iterator<Item = (u32, i64)> + '_ {
        self.ops
            .iter()
            .filter_map(|(pid, op)| Some((*pid, op.clock()?)))
    }

    /// The slowest partition's clock: the earliest window end any open partition may still
    /// be waiting for.
    pub fn min_clock(&self) -> Option<i64> {
        self.clocks().map(|(_, c)| c).min()
    }

    /// Number of open (key, window) states over every partition.
    pub fn open_windows(&self) -> usize {
        self.ops.values().map(WindowOperator::open_windows).sum()
    }

    /// Per partition, the lowest source offset its open windows hold.
    pub fn needed_offsets(&self) -> HashMap<u32, i64> {
        self.ops
            .values()
            .flat_map(|op| op.needed_offsets())
            .collect()
    }

    /// Processes `batch`, whose rows come in runs of one partition each (`runs`: row range and
    /// partition id), `offsets[i]` being row i's source offset. Row indices in the output
    /// (late and future records) are indices into `batch`.
    pub fn process_runs(
        &mut self,
        batch: &RecordBatch,
        runs: &[(Range<usize>, u32)],
        offsets: &[i64],
        now_ms: i64,
    ) -> Result<WindowOutput, WindowError> {
        if offsets.len() != batch.num_rows() {
            return Err(WindowError::Misaligned {
                rows: batch.num_rows(),
                partitions: offsets.len(),
            });
        }
        let mut out = WindowOutput::default();
        let mut closed = Vec::new();
        for (range, pid) in runs {
            let op = self
                .ops
                .get_mut(pid)
                .ok_or(WindowError::UnknownPartition(*pid))?;
            let rows = batch.slice(range.start, range.len());
            let pids = vec![*pid; range.len()];
            let part = op.process_at(&rows, &pids, &offsets[range.clone()], now_ms)?;
            closed.extend(part.closed);
            out.late.extend(part.late.into_iter().map(|mut l| {
                l.row += range.start;
                l
            }));
            out.future
                .extend(part.future.into_iter().map(|r| r + range.start));
            out.skipped_assignments += part.skipped_assignments;
            out.accepted += part.accepted;
        }
        out.closed = self.concat(closed)?;
        Ok(out)
    }

    /// Every partition's open windows' running values (see [`WindowOperator::open_rows`]).
    pub fn open_rows(&mut self) -> Result<Option<RecordBatch>, WindowError> {
        let mut rows = Vec::new();
        for op in self.ops.values_mut() {
            rows.extend(op.open_rows()?);
        }
        self.concat(rows)
    }

    fn concat(&self, batches: Vec<RecordBatch>) -> Result<Option<RecordBatch>, WindowError> {
        match batches.len() {
            0 => Ok(None),
            1 => Ok(batches.into_iter().next()),
            _ => Ok(Some(arrow::compute::concat_batches(
                &self.schema,
                &batches,
            )?)),
        }
    }
}

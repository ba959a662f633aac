//! [`WindowOperator`]: records in, closed windows and late records out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, Int64Array, Int64Builder, RecordBatch, StringArray,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType};
use arrow::row::{OwnedRow, RowConverter, SortField};
use sluice_config::{AggregateFunction, AggregateSpec, WindowKind};

use crate::aggregate::{Accumulator, InputKind, finish, normalise, output_type, value_at};
use crate::clock::Clock;
use crate::{hopping_starts, tumbling_start};

/// Errors of the window operator (bad input shape; never a record's content).
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    /// A configured column is missing.
    #[error("window input: column {0:?} is missing")]
    MissingColumn(String),
    /// An aggregate's column cannot be aggregated.
    #[error("window input: {aggregate}: {source}")]
    Input {
        /// The aggregate, as configured.
        aggregate: String,
        /// Why.
        #[source]
        source: crate::aggregate::InputError,
    },
    /// The partition ids do not match the rows.
    #[error("window input: {partitions} partition ids for {rows} rows")]
    Misaligned {
        /// Rows of the batch.
        rows: usize,
        /// Partition ids given.
        partitions: usize,
    },
    /// Rows of a partition that per-partition windows were not opened for.
    #[error("window input: partition id {0} is not open here")]
    UnknownPartition(u32),
    /// Output asked for before any input set up the group keys.
    #[error("window state: no input seen yet")]
    NoInputYet,
    /// Arrow failed to build output.
    #[error("window output: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

/// What a window operator computes.
#[derive(Clone, Debug)]
pub struct WindowSpec {
    /// Window kind and sizes (ms).
    pub kind: WindowKind,
    /// Grace (ms).
    pub grace_ms: i64,
    /// Group-by columns.
    pub group_by: Vec<String>,
    /// Aggregates.
    pub aggregates: Vec<AggregateSpec>,
    /// The event-time column (timestamp µs).
    pub event_time_column: String,
    /// Idle timeout of a partition (wall ms).
    pub idle_timeout_ms: i64,
    /// A record whose event time is more than this past its reference time (ms) is a
    /// future record: it does not move the clock and joins no window. `None`: no bound.
    pub max_future_skew_ms: Option<i64>,
    /// The reference time of the future bound: a timestamp column of the input (the Kafka
    /// timestamp in a pipeline). Rows where it is null are not checked.
    pub reference_time_column: Option<String>,
}

/// A record whose every window had closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LateRecord {
    /// Row index in the input batch.
    pub row: usize,
    /// Its event time (ms).
    pub event_time_ms: i64,
    /// The clock when it arrived (ms).
    pub clock_ms: i64,
    /// The (last) window it missed, `[start, end)` in ms.
    pub missed_start_ms: i64,
    /// End of the missed window.
    pub missed_end_ms: i64,
}

/// The result of one call.
#[derive(Debug, Default)]
pub struct WindowOutput {
    /// Windows closed by this input, one row each.
    pub closed: Option<RecordBatch>,
    /// Fully late records.
    pub late: Vec<LateRecord>,
    /// Window assignments skipped because that window had closed (per window).
    pub skipped_assignments: u64,
    /// Records added to at least one window.
    pub accepted: u64,
    /// Rows (indices in the input batch) whose event time is past the future bound: they
    /// did not move the clock and joined no window.
    pub future: Vec<usize>,
}

#[derive(Clone, Debug)]
struct WindowState {
    accs: Vec<Accumulator>,
    records: i64,
    max_event_ms: i64,
    /// Lowest source offset per partition that went into this window (for replay after a crash).
    min_offsets: Vec<(u32, i64)>,
}

#[derive(Clone, Debug)]
struct Session {
    start: i64,
    last: i64,
    state: WindowState,
}

/// Aggregate input columns, normalised, and their kinds.
type AggregateInputs = (Vec<Option<ArrayRef>>, Vec<Option<InputKind>>);

/// Tumbling, hopping or session windows over Arrow batches with the rules of docs/windows.md.
pub struct WindowOperator {
    spec: WindowSpec,
    clock: Clock,
    converter: Option<RowConverter>,
    input_kinds: Vec<Option<InputKind>>,
    /// Fixed windows: (end, start, key) -> state. Ordered by end so closing pops the front.
    fixed: BTreeMap<(i64, i64, OwnedRow), WindowState>,
    /// Sessions per key, and an index of (last + gap, key, start) for closing.
    sessions: HashMap<OwnedRow, Vec<Session>>,
    session_close: BTreeSet<(i64, OwnedRow, i64)>,
    output_schema: Option<SchemaRef>,
    /// The source partition of a per-partition operator: its rows carry it, and each `avg`
    /// its weight, so that rows of several partitions can be merged.
    source: Option<(String, i32)>,
}

impl std::fmt::Debug for WindowOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowOperator")
            .field("clock", &self.clock.value())
            .field("open", &self.open_windows())
            .finish()
    }
}

impl WindowOperator {
    /// An operator whose input rows have `input`'s schema: input kinds and the output schema
    /// are fixed up front, so the output table can be created before any record arrives.
    pub fn with_input_schema(spec: WindowSpec, input: &Schema) -> Result<Self, WindowError> {
        let mut op = Self::new(spec);
        op.set_input_schema(input)?;
        Ok(op)
    }

    fn set_input_schema(&mut self, input: &Schema) -> Result<(), WindowError> {
        let op = self;
        let mut kinds = Vec::new();
        for a in &op.spec.aggregates {
            kinds.push(match &a.column {
                None => None,
                Some(c) => {
                    let f = input
                        .field_with_name(c)
                        .map_err(|_| WindowError::MissingColumn(c.clone()))?;
                    Some(crate::aggregate::kind_of(f.data_type()).map_err(|source| {
                        WindowError::Input {
                            aggregate: a.to_string(),
                            source,
                        }
                    })?)
                }
            });
        }
        op.input_kinds = kinds;
        let mut key_types = Vec::new();
        for g in &op.spec.group_by {
            let f = input
                .field_with_name(g)
                .map_err(|_| WindowError::MissingColumn(g.clone()))?;
            key_types.push(f.data_type().clone());
        }
        op.output_schema(&key_types);
        Ok(())
    }

    /// A new operator.
    pub fn new(spec: WindowSpec) -> Self {
        let idle = spec.idle_timeout_ms;
        Self {
            spec,
            clock: Clock::new(idle),
            converter: None,
            input_kinds: Vec::new(),
            fixed: BTreeMap::new(),
            sessions: HashMap::new(),
            session_close: BTreeSet::new(),
            output_schema: None,
            source: None,
        }
    }

    /// A per-partition operator: its clock is the partition's alone, and its rows carry
    /// `_kafka_topic` and `_kafka_partition` and, for each `avg`, its weight
    /// (`AggregateSpec::weight_column`).
    pub fn for_partition(
        spec: WindowSpec,
        input: &Schema,
        topic: &str,
        partition: i32,
    ) -> Result<Self, WindowError> {
        let mut op = Self::new(spec);
        op.source = Some((topic.to_string(), partition));
        op.set_input_schema(input)?;
        Ok(op)
    }

    /// The clock value (ms).
    pub fn clock(&self) -> Option<i64> {
        self.clock.value()
    }

    /// Number of open (key, window) states.
    pub fn open_windows(&self) -> usize {
        self.fixed.len() + self.sessions.values().map(|v| v.len()).sum::<usize>()
    }

    /// A partition was assigned at wall time `now_ms`.
    pub fn assign(&mut self, partition: u32, now_ms: i64) {
        self.clock.assign(partition, now_ms);
    }

    /// A partition was revoked.
    pub fn revoke(&mut self, partition: u32) {
        self.clock.revoke(partition);
    }

    /// Re-evaluates idle partitions at `now_ms`; may close windows.
    pub fn tick(&mut self, now_ms: i64) -> Result<WindowOutput, WindowError> {
        self.clock.advance(now_ms);
        let mut closed = Vec::new();
        self.close_due(&mut closed);
        Ok(WindowOutput {
            closed: self.build_output(closed)?,
            ..Default::default()
        })
    }

    fn grace_line(&self) -> Option<i64> {
        self.clock.value().map(|c| c - self.spec.grace_ms)
    }

    /// Processes a batch; `partitions[i]` is row i's source partition, `now_ms` the wall time.
    pub fn process(
        &mut self,
        batch: &RecordBatch,
        partitions: &[u32],
        now_ms: i64,
    ) -> Result<WindowOutput, WindowError> {
        self.process_at(batch, partitions, &[], now_ms)
    }

    /// Restores the clock after a restart (it never moves back).
    pub fn restore_clock(&mut self, value: Option<i64>) {
        self.clock.restore(value);
    }

    /// Forgets every open window, the clock and the partitions, as a freshly built operator
    /// (after a commit was refused, before the input is replayed from the tables' progress).
    pub fn reset(&mut self) {
        self.clock = Clock::new(self.spec.idle_timeout_ms);
        self.fixed.clear();
        self.sessions.clear();
        self.session_close.clear();
    }

    /// Per partition, the lowest source offset still held by an open window: replaying from
    /// there rebuilds every open window.
    pub fn needed_offsets(&self) -> HashMap<u32, i64> {
        let mut out: HashMap<u32, i64> = HashMap::new();
        let states = self.fixed.values().chain(
            self.sessions
                .values()
                .flat_map(|v| v.iter().map(|s| &s.state)),
        );
        for st in states {
            for (p, o) in &st.min_offsets {
                let e = out.entry(*p).or_insert(*o);
                *e = (*e).min(*o);
            }
        }
        out
    }

    /// Like [`WindowOperator::process`], also recording each row's source offset
    /// (`offsets[i]`) so that [`WindowOperator::needed_offsets`] can be answered.
    pub fn process_at(
        &mut self,
        batch: &RecordBatch,
        partitions: &[u32],
        offsets: &[i64],
        now_ms: i64,
    ) -> Result<WindowOutput, WindowError> {
        let n = batch.num_rows();
        if partitions.len() != n {
            return Err(WindowError::Misaligned {
                rows: n,
                partitions: partitions.len(),
            });
        }
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| WindowError::MissingColumn(name.to_string()))
        };
        let et = col(&self.spec.event_time_column)?;
        let et = arrow::compute::cast(&et, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
        let et = et.as_primitive::<TimestampMicrosecondType>().clone();
        let reference = match (
            &self.spec.max_future_skew_ms,
            &self.spec.reference_time_column,
        ) {
            (Some(skew), Some(c)) => {
                let r = arrow::compute::cast(
                    &col(c)?,
                    &DataType::Timestamp(TimeUnit::Microsecond, None),
                )?;
                Some((*skew, r.as_primitive::<TimestampMicrosecondType>().clone()))
            }
            _ => None,
        };
        // Group keys as comparable rows.
        let key_cols: Vec<ArrayRef> = self
            .spec
            .group_by
            .iter()
            .map(|g| col(g))
            .collect::<Result<_, _>>()?;
        if self.converter.is_none() {
            let fields = key_cols
                .iter()
                .map(|c| SortField::new(c.data_type().clone()))
                .collect();
            self.converter = Some(RowConverter::new(fields)?);
        }
        let converter = self.converter.as_ref().ok_or(WindowError::NoInputYet)?;
        let rows = converter.convert_columns(&key_cols)?;
        let (inputs, kinds) = self.aggregate_inputs(batch)?;
        if self.input_kinds.is_empty() {
            self.input_kinds = kinds.clone();
        }
        let mut out = WindowOutput::default();
        let mut closed = Vec::new();
        for (i, &partition) in partitions.iter().enumerate() {
            if et.is_null(i) {
                continue; // callers only pass rows with an event time
            }
            let t = et.value(i).div_euclid(1000);
            if let Some((skew, r)) = &reference
                && r.is_valid(i)
                && t > r.value(i).div_euclid(1000).saturating_add(*skew)
            {
                out.future.push(i);
                continue;
            }
            self.clock.observe(partition, t, now_ms);
            self.close_due(&mut closed);
            let key = rows.row(i).owned();
            let values: Vec<Option<crate::aggregate::Value>> = inputs
                .iter()
                .zip(&kinds)
                .map(|(a, k)| a.as_ref().and_then(|a| k.and_then(|k| value_at(a, k, i))))
                .collect();
            let offset = offsets.get(i).copied();
            match self.spec.kind {
                WindowKind::Session { gap } => self.add_to_session(
                    key,
                    gap,
                    (i, t, partition, offset),
                    &values,
                    &kinds,
                    &mut out,
                ),
                kind => self.add_to_fixed(
                    kind,
                    key,
                    (i, t, partition, offset),
                    &values,
                    &kinds,
                    &mut out,
                ),
            }
        }
        out.closed = self.build_output(closed)?;
        Ok(out)
    }

    /// Each aggregate's input column of `batch`, normalised once, with its kind (`None` for
    /// `count(*)`).
    fn aggregate_inputs(&self, batch: &RecordBatch) -> Result<AggregateInputs, WindowError> {
        let mut inputs = Vec::with_capacity(self.spec.aggregates.len());
        let mut kinds = Vec::with_capacity(self.spec.aggregates.len());
        for a in &self.spec.aggregates {
            let Some(c) = &a.column else {
                inputs.push(None);
                kinds.push(None);
                continue;
            };
            let column = batch
                .column_by_name(c)
                .ok_or_else(|| WindowError::MissingColumn(c.clone()))?;
            let (arr, kind) = normalise(column).map_err(|source| WindowError::Input {
                aggregate: a.to_string(),
                source,
            })?;
            inputs.push(Some(arr));
            kinds.push(Some(kind));
        }
        Ok((inputs, kinds))
    }

    /// Adds row `i` (event time `t`, from `partition` at `offset`) to each of its tumbling or
    /// hopping windows that is still open; late when all of them have closed.
    fn add_to_fixed(
        &mut self,
        kind: WindowKind,
        key: OwnedRow,
        (i, t, partition, offset): (usize, i64, u32, Option<i64>),
        values: &[Option<crate::aggregate::Value>],
        kinds: &[Option<InputKind>],
        out: &mut WindowOutput,
    ) {
        let line = self.grace_line().unwrap_or(i64::MIN);
        let (size, starts): (i64, Vec<i64>) = match kind {
            WindowKind::Hopping {
                size,
                advance,
                offset,
            } => (size, hopping_starts(t, size, advance, offset).collect()),
            WindowKind::Tumbling { size, offset } => (size, vec![tumbling_start(t, size, offset)]),
            WindowKind::Session { .. } => return,
        };
        let mut added = false;
        let mut last_missed = None;
        for s in starts {
            let e = s + size;
            if line >= e {
                out.skipped_assignments += 1;
                last_missed = Some((s, e));
                continue;
            }
            let st = self
                .fixed
                .entry((e, s, key.clone()))
                .or_insert_with(|| new_state(&self.spec.aggregates, kinds));
            update(st, &self.spec.aggregates, values, t);
            if let Some(o) = offset {
                note_offset(st, partition, o);
            }
            added = true;
        }
        if added {
            out.accepted += 1;
        } else if let Some((s, e)) = last_missed {
            out.late.push(LateRecord {
                row: i,
                event_time_ms: t,
                clock_ms: self.clock.value().unwrap_or(t),
                missed_start_ms: s,
                missed_end_ms: e,
            });
        }
    }

    /// Adds row `i` to the open sessions of its key within `gap` (merging them), or to a new
    /// session of its own; late when it joins none and a session of it alone would be closed.
    fn add_to_session(
        &mut self,
        key: OwnedRow,
        gap: i64,
        (i, t, partition, offset): (usize, i64, u32, Option<i64>),
        values: &[Option<crate::aggregate::Value>],
        kinds: &[Option<InputKind>],
        out: &mut WindowOutput,
    ) {
        let line = self.grace_line().unwrap_or(i64::MIN);
        // Every session in `sessions` is open. A record within `gap` of one joins it; only a
        // record that joins none is judged by a session of its own, late when that one would
        // already be closed.
        let joins = self
            .sessions
            .get(&key)
            .is_some_and(|list| list.iter().any(|s| t >= s.start - gap && t <= s.last + gap));
        if !joins && line > t + gap {
            out.skipped_assignments += 1;
            out.late.push(LateRecord {
                row: i,
                event_time_ms: t,
                clock_ms: self.clock.value().unwrap_or(t),
                missed_start_ms: t,
                missed_end_ms: t + gap,
            });
            return;
        }
        out.accepted += 1;
        let mut merged = Session {
            start: t,
            last: t,
            state: new_state(&self.spec.aggregates, kinds),
        };
        update(&mut merged.state, &self.spec.aggregates, values, t);
        if let Some(o) = offset {
            note_offset(&mut merged.state, partition, o);
        }
        let list = self.sessions.entry(key.clone()).or_default();
        let mut keep = Vec::with_capacity(list.len());
        for s in list.drain(..) {
            // Records at most `gap` apart belong to one session.
            if t >= s.start - gap && t <= s.last + gap {
                self.session_close
                    .remove(&(s.last + gap, key.clone(), s.start));
                merged.start = merged.start.min(s.start);
                merged.last = merged.last.max(s.last);
                merge_state(&mut merged.state, s.state);
            } else {
                keep.push(s);
            }
        }
        self.session_close
            .insert((merged.last + gap, key.clone(), merged.start));
        keep.push(merged);
        *list = keep;
    }

    /// Pops every window the clock has closed, in close order.
    fn close_due(&mut self, closed: &mut Vec<(OwnedRow, i64, i64, WindowState)>) {
        let Some(line) = self.grace_line() else {
            return;
        };
        while let Some(entry) = self.fixed.first_entry() {
            let (e, _, _) = entry.key();
            if line < *e {
                break;
            }
            let ((e, s, key), st) = entry.remove_entry();
            closed.push((key, s, e, st));
        }
        // Sessions close when C - grace > last + gap.
        while let Some(first) = self.session_close.first() {
            if line <= first.0 {
                break;
            }
            let (end, key, start) = self
                .session_close
                .pop_first()
                .unwrap_or_else(|| unreachable!());
            if let Some(list) = self.sessions.get_mut(&key) {
                if let Some(pos) = list.iter().position(|s| s.start == start) {
                    let s = list.remove(pos);
                    closed.push((key.clone(), s.start, end, s.state));
                }
                if list.is_empty() {
                    self.sessions.remove(&key);
                }
            }
        }
    }

    /// The open windows' running values, as rows of the closed-window schema in window order
    /// (a session's `window_end` is its last record plus the gap, as if it closed now).
    /// Provisional: a window's final value is the row committed when the clock closes it.
    /// `None` when no window is open.
    pub fn open_rows(&mut self) -> Result<Option<RecordBatch>, WindowError> {
        let gap = match self.spec.kind {
            WindowKind::Session { gap } => gap,
            _ => 0,
        };
        let mut open: Vec<(OwnedRow, i64, i64, WindowState)> = self
            .fixed
            .iter()
            .map(|((e, s, key), st)| (key.clone(), *s, *e, st.clone()))
            .collect();
        for (key, list) in &self.sessions {
            for s in list {
                open.push((key.clone(), s.start, s.last + gap, s.state.clone()));
            }
        }
        open.sort_by(|a, b| (a.1, a.2, &a.0).cmp(&(b.1, b.2, &b.0)));
        self.build_output(open)
    }

    /// The schema of closed-window rows: group-by columns, window_start, window_end,
    /// aggregates, record_count, max_event_time.
    pub fn output_schema(&mut self, key_types: &[DataType]) -> SchemaRef {
        if let Some(s) = &self.output_schema {
            return s.clone();
        }
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let mut fields: Vec<Field> = self
            .spec
            .group_by
            .iter()
            .zip(key_types)
            .map(|(g, t)| Field::new(g, t.clone(), true))
            .collect();
        fields.push(Field::new("window_start", ts.clone(), false));
        fields.push(Field::new("window_end", ts.clone(), false));
        for (a, k) in self.spec.aggregates.iter().zip(self.kinds_or_default()) {
            fields.push(Field::new(&a.alias, output_type(a.function, k), true));
        }
        fields.push(Field::new("record_count", DataType::Int64, false));
        fields.push(Field::new("max_event_time", ts, false));
        if self.source.is_some() {
            fields.push(Field::new("_kafka_topic", DataType::Utf8, false));
            fields.push(Field::new("_kafka_partition", DataType::Int32, false));
            for a in &self.spec.aggregates {
                if a.function == AggregateFunction::Avg {
                    fields.push(Field::new(a.weight_column(), DataType::Int64, false));
                }
            }
        }
        let s = Arc::new(Schema::new(fields));
        self.output_schema = Some(s.clone());
        s
    }

    fn kinds_or_default(&self) -> Vec<Option<InputKind>> {
        if self.input_kinds.is_empty() {
            vec![None; self.spec.aggregates.len()]
        } else {
            self.input_kinds.clone()
        }
    }

    fn build_output(
        &mut self,
        closed: Vec<(OwnedRow, i64, i64, WindowState)>,
    ) -> Result<Option<RecordBatch>, WindowError> {
        if closed.is_empty() {
            return Ok(None);
        }
        let converter = self.converter.as_ref().ok_or(WindowError::NoInputYet)?;
        let keys = converter.convert_rows(closed.iter().map(|c| c.0.row()))?;
        let key_types: Vec<DataType> = keys.iter().map(|k| k.data_type().clone()).collect();
        let schema = self.output_schema(&key_types);
        let mut columns: Vec<ArrayRef> = keys;
        let mut starts =
            TimestampMicrosecondBuilder::with_capacity(closed.len()).with_timezone("UTC");
        let mut ends =
            TimestampMicrosecondBuilder::with_capacity(closed.len()).with_timezone("UTC");
        let mut counts = Int64Builder::with_capacity(closed.len());
        let mut maxes =
            TimestampMicrosecondBuilder::with_capacity(closed.len()).with_timezone("UTC");
        for (_, s, e, st) in &closed {
            starts.append_value(s * 1000);
            ends.append_value(e * 1000);
            counts.append_value(st.records);
            maxes.append_value(st.max_event_ms * 1000);
        }
        columns.push(Arc::new(starts.finish()));
        columns.push(Arc::new(ends.finish()));
        let kinds = self.kinds_or_default();
        for (j, (a, k)) in self.spec.aggregates.iter().zip(kinds).enumerate() {
            let accs: Vec<&Accumulator> = closed.iter().map(|c| &c.3.accs[j]).collect();
            columns.push(finish(&accs, &output_type(a.function, k)));
        }
        columns.push(Arc::new(counts.finish()));
        columns.push(Arc::new(maxes.finish()));
        if let Some((topic, partition)) = &self.source {
            let n = closed.len();
            columns.push(Arc::new(StringArray::from(vec![topic.as_str(); n])));
            columns.push(Arc::new(Int32Array::from(vec![*partition; n])));
            for (j, a) in self.spec.aggregates.iter().enumerate() {
                if a.function == AggregateFunction::Avg {
                    let weights = closed.iter().map(|c| match &c.3.accs[j] {
                        Accumulator::Avg(_, w) => *w,
                        _ => 0,
                    });
                    columns.push(Arc::new(Int64Array::from_iter_values(weights)));
                }
            }
        }
        Ok(Some(RecordBatch::try_new(schema, columns)?))
    }
}

fn new_state(aggs: &[AggregateSpec], kinds: &[Option<InputKind>]) -> WindowState {
    WindowState {
        accs: aggs
            .iter()
            .zip(kinds)
            .map(|(a, k)| Accumulator::new(a.function, *k))
            .collect(),
        records: 0,
        max_event_ms: i64::MIN,
        min_offsets: Vec::new(),
    }
}

fn note_offset(st: &mut WindowState, partition: u32, offset: i64) {
    match st.min_offsets.iter_mut().find(|(p, _)| *p == partition) {
        Some((_, o)) => *o = (*o).min(offset),
        None => st.min_offsets.push((partition, offset)),
    }
}

fn update(
    st: &mut WindowState,
    aggs: &[AggregateSpec],
    values: &[Option<crate::aggregate::Value>],
    t: i64,
) {
    for ((acc, a), v) in st.accs.iter_mut().zip(aggs).zip(values) {
        acc.update(
            v.as_ref(),
            a.column.is_none() && a.function == AggregateFunction::Count,
        );
    }
    st.records += 1;
    st.max_event_ms = st.max_event_ms.max(t);
}

fn merge_state(into: &mut WindowState, other: WindowState) {
    for (a, b) in into.accs.iter_mut().zip(other.accs) {
        a.merge(b);
    }
    into.records += other.records;
    into.max_event_ms = into.max_event_ms.max(other.max_event_ms);
    for (p, o) in other.min_offsets {
        note_offset(into, p, o);
    }
}

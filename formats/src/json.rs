//! JSON records into Arrow rows of the events table, and everything that does not fit into
//! dead letters.
//!
//! The common path is one pass per batch: for a flat schema, [`crate::json_fast`] reads each
//! record straight into the columns' Arrow builders. Whatever it does not handle (nested
//! columns, coercions, and every malformed record) goes through one arrow-json decoder for the
//! whole batch; only when that decoder reports a problem are the offending records isolated (a
//! syntax error is found at the record that caused it; a type error by bisecting the batch), so
//! a bad record costs little and never stops the pipeline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, TimestampMicrosecondArray,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_json::reader::{Decoder, ReaderBuilder};
use chrono_tz::Tz;
use sluice_config::{PipelineConfig, TimeFormat, UnknownFields};

use sluice_kafka::RawBatch;

use crate::json_fast::{FastJsonDecoder, GiveUp};
use crate::rows::RowLayout;
use crate::time::{event_time_of, parse_time};
use crate::{DeadLetter, Decoded, ErrorKind, FormatError};

/// Decodes one pipeline's records.
pub struct JsonDecoder {
    output: SchemaRef,
    decode_schema: SchemaRef,
    /// Positions (in `decode_schema`) of top-level timestamp columns, read as text first.
    timestamp_columns: Vec<(usize, TimeFormat)>,
    event_time: EventTimeSource,
    tz: Tz,
    max_record_size: usize,
    strict: bool,
    layout: RowLayout,
    /// The specialised decoder for flat schemas, tried first (see [`crate::json_fast`]).
    fast: Option<FastJsonDecoder>,
    fast_gate: FastGate,
}

impl std::fmt::Debug for JsonDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonDecoder")
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug)]
enum EventTimeSource {
    Kafka,
    /// Column index in the decode schema, and how it is written.
    Field(usize, TimeFormat),
}

impl JsonDecoder {
    /// A decoder producing rows of `output` (the events table's schema, as stored).
    pub fn new(p: &PipelineConfig, output: SchemaRef) -> Result<Self, FormatError> {
        let mut decode_fields = Vec::new();
        let mut timestamp_columns = Vec::new();
        for (i, f) in p.schema.iter().enumerate() {
            let out = output
                .field_with_name(&f.name)
                .map_err(|_| FormatError::MissingColumn {
                    column: f.name.clone(),
                })?;
            let is_event_field = p.event_time.field.as_deref() == Some(f.name.as_str());
            let field = if matches!(out.data_type(), DataType::Timestamp(..)) {
                let fmt = if is_event_field {
                    p.event_time.format
                } else {
                    f.format.unwrap_or(TimeFormat::Rfc3339)
                };
                timestamp_columns.push((i, fmt));
                Field::new(&f.name, DataType::Utf8, true)
            } else {
                Field::new(&f.name, out.data_type().clone(), out.is_nullable())
            };
            decode_fields.push(field);
        }
        let event_time = match (&p.event_time.field, p.event_time.format) {
            (_, TimeFormat::KafkaTimestamp) | (None, _) => EventTimeSource::Kafka,
            (Some(name), fmt) => {
                let idx = p
                    .schema
                    .iter()
                    .position(|f| &f.name == name)
                    .ok_or_else(|| FormatError::NoEventTimeField {
                        field: name.clone(),
                    })?;
                EventTimeSource::Field(idx, fmt)
            }
        };
        Ok(Self {
            output: output.clone(),
            decode_schema: Arc::new(Schema::new(decode_fields)),
            timestamp_columns,
            event_time,
            tz: p.time_zone(),
            max_record_size: p.max_record_size.bytes() as usize,
            strict: p.unknown_fields == UnknownFields::Reject,
            layout: RowLayout {
                output: output.clone(),
                tz: p.time_zone(),
                include_headers: p.include_headers,
            },
            fast: None,
            fast_gate: FastGate::default(),
        }
        .with_fast_path())
    }

    fn with_fast_path(mut self) -> Self {
        self.set_fast_path(true);
        self
    }

    /// The events table schema rows are produced in.
    pub fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn new_decoder(&self, records: usize) -> Result<Decoder, FormatError> {
        ReaderBuilder::new(self.decode_schema.clone())
            // One more than the records fed, so `decode` never stops early at the batch size.
            .with_batch_size(records + 1)
            .with_coerce_primitive(true)
            .with_strict_mode(self.strict)
            .build_decoder()
            .map_err(|source| FormatError::Arrow {
                what: "making a JSON decoder",
                source,
            })
    }

    /// Decodes a batch. Never fails on record content: bad records become dead letters.
    pub fn decode(&self, raw: &RawBatch) -> Result<Decoded, FormatError> {
        if let Some(fast) = &self.fast
            && self.fast_gate.should_try()
        {
            match self.decode_fast(fast, raw) {
                Ok(decoded) => {
                    self.fast_gate.succeeded();
                    return Ok(decoded);
                }
                Err(why) => {
                    self.fast_gate.gave_up();
                    tracing::debug!(
                        "the fast JSON decoder gave up on a batch ({why}); arrow-json decodes it"
                    );
                }
            }
        }
        self.decode_with_tape(raw)
    }

    /// Turns the fast path on or off (it is on when the schema allows it). For tests and
    /// benchmarks comparing the two decoders.
    pub fn set_fast_path(&mut self, on: bool) {
        self.fast = if on {
            FastJsonDecoder::new(self.decode_schema.clone(), self.strict)
        } else {
            None
        };
    }

    /// True when batches go to the specialised decoder first.
    pub fn has_fast_path(&self) -> bool {
        self.fast.is_some()
    }

    /// The checks every record goes through before its JSON is read: a value, not blank, not
    /// too large, UTF-8, an object.
    fn precheck<'a>(&self, i: usize, value: Option<&'a [u8]>) -> Result<&'a str, DeadLetter> {
        let value = match value {
            None => {
                return Err(dl(
                    i,
                    ErrorKind::EmptyValue,
                    "the record has no value (a tombstone)",
                ));
            }
            Some(v) if v.iter().all(|b| b.is_ascii_whitespace()) => {
                return Err(dl(i, ErrorKind::EmptyValue, "the record's value is empty"));
            }
            Some(v) => v,
        };
        if value.len() > self.max_record_size {
            return Err(dl(
                i,
                ErrorKind::Oversized,
                &format!(
                    "the value is {} bytes; max_record_size is {}",
                    value.len(),
                    self.max_record_size
                ),
            ));
        }
        let text = std::str::from_utf8(value).map_err(|e| {
            dl(
                i,
                ErrorKind::InvalidUtf8,
                &format!("the value is not UTF-8: {e}"),
            )
        })?;
        if text
            .trim_start_matches(|c: char| c.is_ascii_whitespace())
            .as_bytes()
            .first()
            != Some(&b'{')
        {
            return Err(dl(
                i,
                ErrorKind::MalformedJson,
                "the value is not a JSON object",
            ));
        }
        Ok(text)
    }

    /// The specialised decoder: the whole batch in one pass, or it gives up.
    fn decode_fast(&self, fast: &FastJsonDecoder, raw: &RawBatch) -> Result<Decoded, GiveUp> {
        let mut dead = Vec::new();
        let mut rows = Vec::with_capacity(raw.len());
        let mut texts = Vec::with_capacity(raw.len());
        for i in 0..raw.len() {
            match self.precheck(i, raw.value(i)) {
                Ok(text) => {
                    rows.push(i);
                    texts.push(text);
                }
                Err(d) => dead.push(d),
            }
        }
        let parts = if rows.is_empty() {
            Vec::new()
        } else {
            vec![(rows, fast.decode(texts.into_iter())?)]
        };
        self.finish_parts(raw, parts, dead)
            .map_err(|_| "the rows could not be finished")
    }

    /// The general decoder: arrow-json's tape, isolating bad records.
    fn decode_with_tape(&self, raw: &RawBatch) -> Result<Decoded, FormatError> {
        let mut dead = Vec::new();
        // Pass 1: syntax, record by record boundaries, into one tape.
        let mut parts: Vec<(Vec<usize>, RecordBatch)> = Vec::new();
        let mut pending: Vec<usize> = Vec::new();
        let mut decoder = self.new_decoder(raw.len())?;
        for i in 0..raw.len() {
            let value = match self.precheck(i, raw.value(i)) {
                Ok(text) => text.as_bytes(),
                Err(d) => {
                    dead.push(d);
                    continue;
                }
            };
            let before = decoder.len();
            let problem = match decoder.decode(value) {
                Err(e) => Some(clean(&e.to_string())),
                Ok(n) if n != value.len() => {
                    Some("more than one JSON value in the record".to_string())
                }
                Ok(_) if decoder.has_partial_record() => {
                    Some("the JSON object is incomplete (truncated)".to_string())
                }
                Ok(_) if decoder.len() != before + 1 => {
                    Some("more than one JSON value in the record".to_string())
                }
                Ok(_) => None,
            };
            match problem {
                None => pending.push(i),
                Some(msg) => {
                    dead.push(dl(i, ErrorKind::MalformedJson, &msg));
                    // The tape now holds a broken record: rebuild it from the good ones.
                    decoder = self.new_decoder(raw.len())?;
                    self.flush_pending(
                        &mut decoder,
                        std::mem::take(&mut pending),
                        raw,
                        &mut parts,
                        &mut dead,
                    )?;
                }
            }
        }
        self.flush_pending(
            &mut decoder,
            std::mem::take(&mut pending),
            raw,
            &mut parts,
            &mut dead,
        )?;
        self.finish_parts(raw, parts, dead)
    }

    /// Pass 2: timestamps and the event time, row by row on the decoded columns; then one
    /// events batch in record order.
    fn finish_parts(
        &self,
        raw: &RawBatch,
        parts: Vec<(Vec<usize>, RecordBatch)>,
        mut dead: Vec<DeadLetter>,
    ) -> Result<Decoded, FormatError> {
        let mut good: Vec<usize> = Vec::with_capacity(raw.len());
        let mut batches = Vec::with_capacity(parts.len());
        for (indices, batch) in parts {
            let (batch, kept) = self.finish_rows(raw, batch, &indices, &mut dead)?;
            if let Some(b) = batch {
                good.extend(kept);
                batches.push(b);
            }
        }
        dead.sort_by_key(|d| d.index);
        let events = match batches.len() {
            0 => None,
            1 => batches.pop(),
            _ => Some(
                arrow::compute::concat_batches(&self.output, &batches).map_err(|source| {
                    FormatError::Arrow {
                        what: "joining decoded rows",
                        source,
                    }
                })?,
            ),
        };
        let event_indices = good.into_iter().map(|i| i as u32).collect();
        Ok(Decoded {
            events,
            event_indices,
            dead,
        })
    }

    /// Re-feeds syntactically good records and converts them to Arrow, isolating records the
    /// schema rejects by bisection.
    fn flush_pending(
        &self,
        decoder: &mut Decoder,
        pending: Vec<usize>,
        raw: &RawBatch,
        parts: &mut Vec<(Vec<usize>, RecordBatch)>,
        dead: &mut Vec<DeadLetter>,
    ) -> Result<(), FormatError> {
        if pending.is_empty() {
            return Ok(());
        }
        if decoder.len() != pending.len() {
            *decoder = self.new_decoder(raw.len())?;
            for &i in &pending {
                decoder
                    .decode(raw.value(i).unwrap_or_default())
                    .map_err(|source| FormatError::Arrow {
                        what: "re-reading good records",
                        source,
                    })?;
            }
        }
        match decoder.flush() {
            Ok(Some(batch)) => {
                parts.push((pending, batch));
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) if pending.len() == 1 => {
                *decoder = self.new_decoder(raw.len())?;
                dead.push(dl(
                    pending[0],
                    ErrorKind::SchemaMismatch,
                    &clean(&e.to_string()),
                ));
                Ok(())
            }
            Err(_) => {
                *decoder = self.new_decoder(raw.len())?;
                let mid = pending.len() / 2;
                let (a, b) = pending.split_at(mid);
                for half in [a.to_vec(), b.to_vec()] {
                    let mut d = self.new_decoder(raw.len())?;
                    self.flush_pending(&mut d, half, raw, parts, dead)?;
                }
                Ok(())
            }
        }
    }

    /// Timestamp column `col` of `batch` (decoded as text) parsed as `fmt`; rows that fail
    /// become dead letters and are marked in `ok`.
    fn timestamp_column(
        &self,
        batch: &RecordBatch,
        col: usize,
        fmt: TimeFormat,
        indices: &[usize],
        ok: &mut [bool],
        dead: &mut Vec<DeadLetter>,
    ) -> ArrayRef {
        let n = batch.num_rows();
        let text = batch.column(col).as_string::<i32>();
        let is_event = matches!(self.event_time, EventTimeSource::Field(c, _) if c == col);
        let mut values = Vec::with_capacity(n);
        for row in 0..n {
            if text.is_null(row) {
                values.push(None);
                continue;
            }
            match parse_time(text.value(row), fmt, self.tz) {
                Ok(us) => values.push(Some(us)),
                Err(e) => {
                    values.push(None);
                    if ok[row] {
                        ok[row] = false;
                        let name = self.decode_schema.field(col).name();
                        let kind = if is_event {
                            ErrorKind::InvalidEventTime
                        } else {
                            ErrorKind::SchemaMismatch
                        };
                        dead.push(dl(indices[row], kind, &format!("field {name:?}: {e}")));
                    }
                }
            }
        }
        let out_nullable = self.output.field(col).is_nullable();
        for (row, v) in values.iter().enumerate() {
            if v.is_none() && !text.is_null(row) {
                continue;
            }
            if v.is_none() && !out_nullable && ok[row] {
                ok[row] = false;
                let name = self.decode_schema.field(col).name();
                dead.push(dl(
                    indices[row],
                    ErrorKind::SchemaMismatch,
                    &format!("field {name:?} is required but missing or null"),
                ));
            }
        }
        Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC"))
    }

    /// Parses timestamp columns and the event time, drops rows that fail, and appends the
    /// Kafka and partition columns.
    fn finish_rows(
        &self,
        raw: &RawBatch,
        batch: RecordBatch,
        indices: &[usize],
        dead: &mut Vec<DeadLetter>,
    ) -> Result<(Option<RecordBatch>, Vec<usize>), FormatError> {
        let n = batch.num_rows();
        let mut ok = vec![true; n];
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        for &(col, fmt) in &self.timestamp_columns {
            columns[col] = self.timestamp_column(&batch, col, fmt, indices, &mut ok, dead);
        }
        // Event time in µs.
        let mut event_us: Vec<i64> = vec![0; n];
        for row in 0..n {
            if !ok[row] {
                continue;
            }
            let t = match self.event_time {
                EventTimeSource::Kafka => raw.timestamps[indices[row]]
                    .map(|ms| ms.saturating_mul(1000))
                    .ok_or(crate::time::TimeError::NoKafkaTimestamp),
                EventTimeSource::Field(col, fmt) => event_time_of(&columns[col], row, fmt, self.tz),
            };
            match t {
                Ok(us) => event_us[row] = us,
                Err(e) => {
                    ok[row] = false;
                    dead.push(dl(
                        indices[row],
                        ErrorKind::InvalidEventTime,
                        &e.to_string(),
                    ));
                }
            }
        }
        let kept: Vec<usize> = (0..n).filter(|&r| ok[r]).map(|r| indices[r]).collect();
        if kept.is_empty() {
            return Ok((None, kept));
        }
        let mask = BooleanArray::from(ok.clone());
        let decoded = RecordBatch::try_new(
            Arc::new(Schema::new(
                self.decode_schema
                    .fields()
                    .iter()
                    .enumerate()
                    .map(|(i, f)| Field::new(f.name(), columns[i].data_type().clone(), true))
                    .collect::<Vec<_>>(),
            )),
            columns,
        )
        .and_then(|b| filter_record_batch(&b, &mask))
        .map_err(|source| FormatError::Arrow {
            what: "dropping rows with bad times",
            source,
        })?;
        let event: Vec<i64> = (0..n).filter(|&r| ok[r]).map(|r| event_us[r]).collect();
        let named = self
            .decode_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .zip(decoded.columns().iter().cloned())
            .collect();
        let batch = self.layout.rows(raw, &kept, named, event)?;
        Ok((Some(batch), kept))
    }
}

/// When to try the fast decoder: every batch while it succeeds; after it gives up, skip it for
/// 1, 2, 4, ... up to 64 batches, so that a topic it cannot read costs almost nothing extra.
#[derive(Debug, Default)]
struct FastGate {
    skip: AtomicU32,
    penalty: AtomicU32,
}

impl FastGate {
    fn should_try(&self) -> bool {
        let skip = self.skip.load(Ordering::Relaxed);
        if skip > 0 {
            self.skip.store(skip - 1, Ordering::Relaxed);
            return false;
        }
        true
    }
    fn succeeded(&self) {
        self.penalty.store(0, Ordering::Relaxed);
    }
    fn gave_up(&self) {
        let p = (self.penalty.load(Ordering::Relaxed) * 2).clamp(1, 64);
        self.penalty.store(p, Ordering::Relaxed);
        self.skip.store(p, Ordering::Relaxed);
    }
}

fn dl(index: usize, kind: ErrorKind, message: &str) -> DeadLetter {
    DeadLetter {
        index,
        kind,
        message: message.to_string(),
    }
}

/// arrow's messages start with "Json error: " or "Parser error: ": keep what a person needs.
fn clean(msg: &str) -> String {
    msg.trim_start_matches("Json error: ")
        .trim_start_matches("Parser error: ")
        .to_string()
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;

//! Avro records in the Confluent wire format (magic byte `0`, a 4-byte big-endian schema id,
//! the Avro body) into rows of the events table, with arrow-avro decoding straight into Arrow
//! builders.
//!
//! The table's columns are the top-level fields of the subject's latest schema when the
//! pipeline opens ([`table_columns`]). Each record is read with its writer's schema (looked
//! up by id in the registry, once per id) resolved to that schema, Avro's schema resolution:
//! a field the reader has and the writer lacks takes its default (or null), a widening (int
//! to long, float to double) is applied. A record whose id the registry does not know, whose
//! writer schema cannot be resolved (a narrowing, a type change), whose value is not framed,
//! or whose body does not decode is a dead letter with its own reason; the batch goes on.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, new_null_array};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use sluice_config::{FieldConfig, PipelineConfig, TimeFormat};
use sluice_kafka::RawBatch;

use crate::registry::{RegisteredSchema, Registry, SchemaType};
use crate::rows::RowLayout;
use crate::schema::column_type_of;
use crate::time::{TimeError, event_time_of};
use crate::{DeadLetter, Decoded, ErrorKind, FormatError};

/// The Confluent wire format's header: magic byte and schema id.
const HEADER: usize = 5;

/// The events table's columns for the schema `latest` (the subject's latest version).
pub fn table_columns(
    subject: &str,
    latest: &RegisteredSchema,
) -> Result<Vec<FieldConfig>, FormatError> {
    let bad = |message: String| FormatError::Subject {
        subject: subject.to_string(),
        message,
    };
    if latest.schema_type != SchemaType::Avro {
        return Err(bad(format!(
            "its latest schema (id {}) is {:?}, not Avro",
            latest.id, latest.schema_type
        )));
    }
    let reader = AvroSchema::new(latest.text.clone());
    let decoder =
        build(&reader, &BTreeMap::from([(latest.id, reader.clone())]), 1).map_err(|e| {
            bad(format!(
                "its latest schema (id {}) does not read: {e}",
                latest.id
            ))
        })?;
    decoder
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let ty = column_type_of(f.data_type()).ok_or_else(|| {
                bad(format!(
                    "field {:?} has type {}, which a Delta table cannot hold",
                    f.name(),
                    f.data_type()
                ))
            })?;
            Ok(FieldConfig {
                name: f.name().clone(),
                ty,
                nullable: f.is_nullable(),
                format: None,
            })
        })
        .collect()
}

/// A decoder over `writers` (by schema id) resolved to `reader`.
fn build(
    reader: &AvroSchema,
    writers: &BTreeMap<u32, AvroSchema>,
    batch_size: usize,
) -> Result<Decoder, arrow::error::ArrowError> {
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    for (id, schema) in writers {
        store.set(Fingerprint::Id(*id), schema.clone())?;
    }
    ReaderBuilder::new()
        .with_reader_schema(reader.clone())
        .with_writer_schema_store(store)
        .with_batch_size(batch_size.max(1))
        .build_decoder()
}

/// Where the event time comes from.
#[derive(Clone, Copy, Debug)]
enum EventTime {
    Kafka,
    /// Column index in the table, and how it is written.
    Field(usize, TimeFormat),
}

/// Decodes one Avro pipeline's records.
pub struct AvroDecoder {
    registry: Arc<Registry>,
    subject: String,
    /// The table's schema in the registry.
    reader_id: u32,
    reader: AvroSchema,
    /// Writer schemas that resolve to the reader, by id.
    writers: BTreeMap<u32, AvroSchema>,
    /// Ids whose records are dead letters, with the reason.
    refused: HashMap<u32, (ErrorKind, String)>,
    /// Built on first use after the writers change.
    decoder: Option<Decoder>,
    /// The columns the records decode into (the table's, without sluice's own).
    columns: Vec<(String, DataType)>,
    event_time: EventTime,
    max_record_size: usize,
    layout: RowLayout,
}

impl std::fmt::Debug for AvroDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroDecoder")
            .field("subject", &self.subject)
            .field("reader_id", &self.reader_id)
            .field("writers", &self.writers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl AvroDecoder {
    /// A decoder of pipeline `p` (whose schema came from [`table_columns`] of `latest`),
    /// producing rows of `output`, the events table's schema.
    pub fn new(
        p: &PipelineConfig,
        registry: Arc<Registry>,
        latest: &RegisteredSchema,
        output: SchemaRef,
    ) -> Result<Self, FormatError> {
        let mut columns = Vec::with_capacity(p.schema.len());
        for f in &p.schema {
            let out = output
                .field_with_name(&f.name)
                .map_err(|_| FormatError::MissingColumn {
                    column: f.name.clone(),
                })?;
            columns.push((f.name.clone(), out.data_type().clone()));
        }
        let event_time = match (&p.event_time.field, p.event_time.format) {
            (_, TimeFormat::KafkaTimestamp) | (None, _) => EventTime::Kafka,
            (Some(name), fmt) => {
                let idx = columns.iter().position(|(c, _)| c == name).ok_or_else(|| {
                    FormatError::NoEventTimeField {
                        field: name.clone(),
                    }
                })?;
                EventTime::Field(idx, fmt)
            }
        };
        let reader = AvroSchema::new(latest.text.clone());
        Ok(Self {
            registry,
            subject: p.value_subject(),
            reader_id: latest.id,
            writers: BTreeMap::from([(latest.id, reader.clone())]),
            reader,
            refused: HashMap::new(),
            decoder: None,
            columns,
            event_time,
            max_record_size: p.max_record_size.bytes() as usize,
            layout: RowLayout {
                output,
                tz: p.time_zone(),
                include_headers: p.include_headers,
            },
        })
    }

    /// Looks up the writer schemas of ids in `raw` not seen before (one registry request per
    /// new id). An id the registry does not know, or whose schema does not resolve to the
    /// table's, makes its records dead letters; a registry that does not answer is an error.
    pub async fn prepare(&mut self, raw: &RawBatch) -> Result<(), FormatError> {
        let mut new_ids = Vec::new();
        for i in 0..raw.len() {
            if let Some(id) = raw.value(i).and_then(schema_id)
                && !self.writers.contains_key(&id)
                && !self.refused.contains_key(&id)
                && !new_ids.contains(&id)
            {
                new_ids.push(id);
            }
        }
        for id in new_ids {
            let schema = match self.registry.schema_by_id(id).await {
                Ok(s) => s,
                Err(e) if e.is_not_found() => {
                    let why = format!("schema id {id} is not in the registry");
                    self.refused.insert(id, (ErrorKind::UnknownSchema, why));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if schema.schema_type != SchemaType::Avro {
                let why = format!(
                    "schema id {id} is a {:?} schema; this pipeline reads Avro",
                    schema.schema_type
                );
                self.refused
                    .insert(id, (ErrorKind::IncompatibleSchema, why));
                continue;
            }
            let writer = AvroSchema::new(schema.text.clone());
            match build(&self.reader, &BTreeMap::from([(id, writer.clone())]), 1) {
                Ok(_) => {
                    self.writers.insert(id, writer);
                    self.decoder = None;
                }
                Err(e) => {
                    let why = format!(
                        "schema id {id} cannot be read as the table's schema (subject {}, id {}): {e}",
                        self.subject, self.reader_id
                    );
                    tracing::warn!(subject = %self.subject, id, "{why}");
                    self.refused
                        .insert(id, (ErrorKind::IncompatibleSchema, why));
                }
            }
        }
        Ok(())
    }

    /// Decodes a batch (after [`AvroDecoder::prepare`]). Never fails on record content: bad
    /// records become dead letters.
    pub fn decode(&mut self, raw: &RawBatch) -> Result<Decoded, FormatError> {
        let mut dead = Vec::new();
        let mut good = Vec::with_capacity(raw.len());
        for i in 0..raw.len() {
            match self.precheck(i, raw.value(i)) {
                Ok(()) => good.push(i),
                Err(d) => dead.push(d),
            }
        }
        let (batches, kept) = match self.decode_all(raw, &good) {
            Some(batches) => (batches, good),
            None => self.decode_one_by_one(raw, &good, &mut dead)?,
        };
        let decoded = self.to_table_columns(&batches)?;
        let (events, event_indices) = self.finish(raw, decoded, kept, &mut dead)?;
        dead.sort_by_key(|d| d.index);
        Ok(Decoded {
            events,
            event_indices,
            dead,
        })
    }

    fn precheck(&self, i: usize, value: Option<&[u8]>) -> Result<(), DeadLetter> {
        let dl = |kind, message: String| DeadLetter {
            index: i,
            kind,
            message,
        };
        let Some(value) = value else {
            return Err(dl(
                ErrorKind::EmptyValue,
                "the record has no value (a tombstone)".into(),
            ));
        };
        if value.len() > self.max_record_size {
            return Err(dl(
                ErrorKind::Oversized,
                format!(
                    "the value is {} bytes; max_record_size is {}",
                    value.len(),
                    self.max_record_size
                ),
            ));
        }
        let Some(id) = schema_id(value) else {
            return Err(dl(
                ErrorKind::BadFraming,
                "the value is not in the Confluent wire format (magic byte 0, a 4-byte schema id, the body)".into(),
            ));
        };
        if let Some((kind, why)) = self.refused.get(&id) {
            return Err(dl(*kind, why.clone()));
        }
        if !self.writers.contains_key(&id) {
            return Err(dl(
                ErrorKind::UnknownSchema,
                format!("schema id {id} was not looked up"),
            ));
        }
        Ok(())
    }

    fn decoder(&mut self, batch_size: usize) -> Result<&mut Decoder, FormatError> {
        if self
            .decoder
            .as_ref()
            .is_none_or(|d| d.batch_size() < batch_size)
        {
            let d = build(&self.reader, &self.writers, batch_size).map_err(|source| {
                FormatError::Arrow {
                    what: "making an Avro decoder",
                    source,
                }
            })?;
            self.decoder = Some(d);
        }
        self.decoder.as_mut().ok_or(FormatError::Subject {
            subject: String::new(),
            message: "no decoder".into(),
        })
    }

    /// Every record of `rows` in one decoder; `None` when any record fails (or does not make
    /// exactly one row), and the batch is then decoded record by record.
    fn decode_all(&mut self, raw: &RawBatch, rows: &[usize]) -> Option<Vec<RecordBatch>> {
        if rows.is_empty() {
            return Some(Vec::new());
        }
        let dec = self.decoder(rows.len() + 1).ok()?;
        let mut out = Vec::new();
        for &i in rows {
            if feed(dec, raw.value(i).unwrap_or_default(), &mut out).is_err() {
                self.decoder = None;
                return None;
            }
        }
        match dec.flush() {
            Ok(Some(b)) => out.push(b),
            Ok(None) => {}
            Err(_) => {
                self.decoder = None;
                return None;
            }
        }
        let n: usize = out.iter().map(|b| b.num_rows()).sum();
        if n != rows.len() {
            self.decoder = None;
            return None;
        }
        Some(out)
    }

    /// Each record of `rows` alone, so that a bad one is found and the others kept.
    fn decode_one_by_one(
        &mut self,
        raw: &RawBatch,
        rows: &[usize],
        dead: &mut Vec<DeadLetter>,
    ) -> Result<(Vec<RecordBatch>, Vec<usize>), FormatError> {
        let mut batches = Vec::new();
        let mut kept = Vec::new();
        for &i in rows {
            let dec = self.decoder(2)?;
            let mut out = Vec::new();
            let fed = feed(dec, raw.value(i).unwrap_or_default(), &mut out)
                .and_then(|()| dec.flush().map_err(BodyError::from))
                .map(|last| {
                    out.extend(last);
                    out
                });
            match fed {
                Ok(out) if out.iter().map(|b| b.num_rows()).sum::<usize>() == 1 => {
                    batches.extend(out);
                    kept.push(i);
                }
                Ok(_) => {
                    self.decoder = None;
                    dead.push(DeadLetter {
                        index: i,
                        kind: ErrorKind::MalformedAvro,
                        message: "the value holds more than one record (trailing bytes)".into(),
                    });
                }
                Err(e) => {
                    self.decoder = None;
                    dead.push(DeadLetter {
                        index: i,
                        kind: ErrorKind::MalformedAvro,
                        message: format!("the body does not decode: {e}"),
                    });
                }
            }
        }
        Ok((batches, kept))
    }

    /// The decoded batches as the table's columns: matched by name, cast to the table's
    /// types (enums to strings, millisecond times to microseconds); a column the records lack
    /// is null.
    fn to_table_columns(&self, batches: &[RecordBatch]) -> Result<Vec<ArrayRef>, FormatError> {
        let arrow = |what, source| FormatError::Arrow { what, source };
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let joined = match batches {
            [] => None,
            [one] => Some(one.clone()),
            [first, ..] => Some(
                arrow::compute::concat_batches(&first.schema(), batches)
                    .map_err(|e| arrow("joining Avro rows", e))?,
            ),
        };
        self.columns
            .iter()
            .map(
                |(name, ty)| match joined.as_ref().and_then(|b| b.column_by_name(name)) {
                    Some(c) if c.data_type() == ty => Ok(c.clone()),
                    Some(c) => cast(c, ty)
                        .map_err(|e| arrow("casting an Avro column to the table's type", e)),
                    None => Ok(new_null_array(ty, rows)),
                },
            )
            .collect()
    }

    /// Event times, then the events rows of the records whose event time reads.
    fn finish(
        &self,
        raw: &RawBatch,
        decoded: Vec<ArrayRef>,
        kept: Vec<usize>,
        dead: &mut Vec<DeadLetter>,
    ) -> Result<(Option<RecordBatch>, Vec<u32>), FormatError> {
        let n = kept.len();
        let mut ok = vec![true; n];
        let mut event_us = Vec::with_capacity(n);
        for (row, &i) in kept.iter().enumerate() {
            let t = match self.event_time {
                EventTime::Kafka => raw.timestamps[i]
                    .map(|ms| ms.saturating_mul(1000))
                    .ok_or(TimeError::NoKafkaTimestamp),
                EventTime::Field(col, fmt) => {
                    event_time_of(&decoded[col], row, fmt, self.layout.tz)
                }
            };
            match t {
                Ok(us) => event_us.push(us),
                Err(e) => {
                    ok[row] = false;
                    dead.push(DeadLetter {
                        index: i,
                        kind: ErrorKind::InvalidEventTime,
                        message: e.to_string(),
                    });
                }
            }
        }
        let (decoded, kept) = if ok.iter().all(|k| *k) {
            (decoded, kept)
        } else {
            let mask = BooleanArray::from(ok.clone());
            let schema = Arc::new(Schema::new(
                self.columns
                    .iter()
                    .map(|(c, t)| arrow::datatypes::Field::new(c, t.clone(), true))
                    .collect::<Vec<_>>(),
            ));
            let batch = RecordBatch::try_new(schema, decoded)
                .and_then(|b| filter_record_batch(&b, &mask))
                .map_err(|source| FormatError::Arrow {
                    what: "dropping rows with bad times",
                    source,
                })?;
            let kept = kept
                .iter()
                .zip(&ok)
                .filter(|(_, k)| **k)
                .map(|(i, _)| *i)
                .collect();
            (batch.columns().to_vec(), kept)
        };
        if kept.is_empty() {
            return Ok((None, Vec::new()));
        }
        let named = self
            .columns
            .iter()
            .map(|(c, _)| c.clone())
            .zip(decoded)
            .collect();
        let rows = self.layout.rows(raw, &kept, named, event_us)?;
        Ok((Some(rows), kept.iter().map(|i| *i as u32).collect()))
    }
}

/// The schema id of a value in the Confluent wire format.
pub fn schema_id(value: &[u8]) -> Option<u32> {
    match value {
        [0, a, b, c, d, ..] if value.len() >= HEADER => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// Feeds one whole record to `dec`, flushing into `out` when the decoder asks for it (a
/// full batch, or a change of writer schema).
fn feed(dec: &mut Decoder, msg: &[u8], out: &mut Vec<RecordBatch>) -> Result<(), BodyError> {
    let mut at = 0;
    while at < msg.len() {
        let n = dec.decode(&msg[at..])?;
        at += n;
        if at < msg.len() {
            let flushed = dec.flush()?;
            if n == 0 && flushed.is_none() {
                return Err(BodyError::Truncated);
            }
            out.extend(flushed);
        }
    }
    Ok(())
}

/// Why a record's body does not decode.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    /// arrow-avro refused it.
    #[error(transparent)]
    Avro(#[from] arrow_avro::errors::AvroError),
    /// It ends before its last field.
    #[error("the body is truncated")]
    Truncated,
}

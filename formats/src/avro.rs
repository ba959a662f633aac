//! Avro records in the Confluent wire format (magic byte `0`, a 4-byte big-endian schema id,
//! the Avro body) into rows of the events table, with arrow-avro decoding straight into Arrow
//! builders.
//!
//! The table's columns are the top-level fields of the subject's latest schema when the
//! pipeline opens ([`table_columns`]), integers as long and floats as double
//! ([`crate::evolve::widest`]). Each record is decoded with its writer's schema (looked up by
//! id in the registry, once per id) and its columns are then matched to the table's by name
//! ([`crate::evolve::conform`]): a column the writer lacks is null, a narrower number goes into
//! the wider column, an enum becomes its symbol. A writer schema with a field the table lacks
//! (a new field, a new nested field) is a schema change: [`AvroDecoder::take_change`] hands
//! it to the pipeline, which adds the columns to the table before any of its rows are written.
//! A writer schema the table cannot hold (a type change) makes its records dead letters with a
//! reason naming the field, as do records whose id the registry does not know, whose value is
//! not framed, or whose body does not decode; the batch goes on.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, new_null_array};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use sluice_config::{FieldConfig, PipelineConfig, TimeFormat};
use sluice_kafka::RawBatch;

use crate::evolve::{conform, growth, widest};
use crate::registry::{RegisteredSchema, Registry, SchemaType};
use crate::rows::RowLayout;
use crate::schema::{column_type_of, is_sluice_column};
use crate::time::{TimeError, event_time_of};
use crate::{DeadLetter, Decoded, ErrorKind, FormatError, SchemaChange};

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
    columns_of(&AvroSchema::new(latest.text.clone()), latest.id)
        .map_err(|e| bad(format!("its latest schema (id {}) {e}", latest.id)))
}

/// Why an Avro schema does not make table columns.
#[derive(Debug, thiserror::Error)]
enum ColumnsError {
    /// arrow-avro cannot read it.
    #[error("does not read: {0}")]
    DoesNotRead(#[from] arrow::error::ArrowError),
    /// A field's Arrow type has no Delta type.
    #[error("has field {field:?} of type {ty}, which a Delta table cannot hold")]
    Unsupported {
        /// The field.
        field: String,
        /// Its Arrow type.
        ty: DataType,
    },
}

/// The table columns of an Avro record schema: its top-level fields, numbers at their widest.
fn columns_of(schema: &AvroSchema, id: u32) -> Result<Vec<FieldConfig>, ColumnsError> {
    let decoder = build(schema, id, 1)?;
    decoder
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let ty = column_type_of(f.data_type()).ok_or_else(|| ColumnsError::Unsupported {
                field: f.name().clone(),
                ty: f.data_type().clone(),
            })?;
            Ok(FieldConfig {
                name: f.name().clone(),
                ty: widest(&ty),
                nullable: f.is_nullable(),
                format: None,
            })
        })
        .collect()
}

/// A decoder of records written with `schema` (id `id`), read as written.
fn build(
    schema: &AvroSchema,
    id: u32,
    batch_size: usize,
) -> Result<Decoder, arrow::error::ArrowError> {
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    store.set(Fingerprint::Id(id), schema.clone())?;
    ReaderBuilder::new()
        .with_reader_schema(schema.clone())
        .with_writer_schema_store(store)
        .with_batch_size(batch_size.max(1))
        .build_decoder()
}

/// Where the event time comes from.
#[derive(Clone, Debug)]
enum EventTime {
    Kafka,
    /// The column, and how it is written.
    Field(String, TimeFormat),
}

/// A writer schema whose records go into the table, and its decoder (built on first use).
struct Writer {
    schema: AvroSchema,
    decoder: Option<Decoder>,
}

/// Decodes one Avro pipeline's records.
pub struct AvroDecoder {
    registry: Arc<Registry>,
    subject: String,
    /// Writer schemas whose records go into the table, by id.
    writers: HashMap<u32, Writer>,
    /// Ids whose records are dead letters, with the reason.
    refused: HashMap<u32, (ErrorKind, String)>,
    /// The table's data columns (sluice's own left out), grown by the writer schemas seen.
    table: Vec<FieldConfig>,
    /// Columns grown or added since the last [`AvroDecoder::take_change`], and why.
    pending: Vec<(String, String)>,
    /// The table's data columns and their Arrow types, as the events schema has them.
    columns: Vec<(String, DataType)>,
    event_time: EventTime,
    max_record_size: usize,
    layout: RowLayout,
    /// The keys' decoder, with `key_format = "avro"`.
    keys: Option<crate::avro_key::AvroKeys>,
}

impl std::fmt::Debug for AvroDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroDecoder")
            .field("subject", &self.subject)
            .field("writers", &self.writers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl AvroDecoder {
    /// A decoder of pipeline `p` producing rows of `output`, the events table's schema; the
    /// subject's `latest` schema is known without asking the registry again.
    pub fn new(
        p: &PipelineConfig,
        registry: Arc<Registry>,
        latest: &RegisteredSchema,
        output: SchemaRef,
    ) -> Result<Self, FormatError> {
        let event_time = match (&p.event_time.field, p.event_time.format) {
            (_, TimeFormat::KafkaTimestamp) | (None, _) => EventTime::Kafka,
            (Some(name), fmt) => EventTime::Field(name.clone(), fmt),
        };
        let mut table = Vec::new();
        for f in output
            .fields()
            .iter()
            .filter(|f| !is_sluice_column(f.name()))
        {
            let ty = column_type_of(f.data_type()).ok_or_else(|| FormatError::Subject {
                subject: p.value_subject(),
                message: format!(
                    "the table's column {:?} has type {}, which Avro records do not decode into",
                    f.name(),
                    f.data_type()
                ),
            })?;
            table.push(FieldConfig {
                name: f.name().clone(),
                ty,
                nullable: f.is_nullable(),
                format: None,
            });
        }
        let mut decoder = Self {
            registry,
            subject: p.value_subject(),
            writers: HashMap::new(),
            refused: HashMap::new(),
            table,
            pending: Vec::new(),
            columns: Vec::new(),
            event_time,
            max_record_size: p.max_record_size.bytes() as usize,
            layout: RowLayout {
                output: output.clone(),
                tz: p.time_zone(),
                include_headers: p.include_headers,
            },
            keys: None,
        };
        decoder.retarget(output)?;
        decoder.admit(latest.id, latest);
        Ok(decoder)
    }

    /// Decodes the records' keys too, into their column (`key_format = "avro"`).
    pub fn with_keys(mut self, keys: crate::avro_key::AvroKeys) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Looks up the writer schemas of ids in `raw` not seen before (one registry request per
    /// new id). An id the registry does not know, or whose schema the table cannot hold,
    /// makes its records dead letters; a schema with new fields leaves a change for
    /// [`AvroDecoder::take_change`]; a registry that does not answer is an error.
    pub async fn prepare(&mut self, raw: &RawBatch) -> Result<(), FormatError> {
        let new_ids = crate::registry::unseen_ids((0..raw.len()).map(|i| raw.value(i)), |id| {
            self.writers.contains_key(&id) || self.refused.contains_key(&id)
        });
        if let Some(keys) = self.keys.as_mut() {
            keys.prepare(raw).await?;
        }
        for id in new_ids {
            match self.registry.find_by_id(id).await? {
                Some(schema) => self.admit(id, &schema),
                None => {
                    let why = format!("schema id {id} is not in the registry");
                    self.refused.insert(id, (ErrorKind::UnknownSchema, why));
                }
            }
        }
        Ok(())
    }

    /// Takes writer schema `id` in: its records go into the table (which may have to grow
    /// first), or, when the table cannot hold them, to the dead-letter table.
    fn admit(&mut self, id: u32, schema: &RegisteredSchema) {
        let mut refuse = |why: String| {
            tracing::warn!(subject = %self.subject, id, "{why}");
            self.refused
                .insert(id, (ErrorKind::IncompatibleSchema, why));
        };
        if schema.schema_type != SchemaType::Avro {
            return refuse(format!(
                "schema id {id} is a {:?} schema; this pipeline reads Avro",
                schema.schema_type
            ));
        }
        let writer = AvroSchema::new(schema.text.clone());
        let columns = match columns_of(&writer, id) {
            Ok(c) => c,
            Err(e) => return refuse(format!("schema id {id} {e}")),
        };
        let grow = match growth(&self.table, &columns) {
            Ok(g) => g,
            Err(clash) => {
                return refuse(format!("schema id {id} does not fit the table: {clash}"));
            }
        };
        if !grow.is_empty() {
            let why = format!(
                "schema id {id} of subject {} {}",
                self.subject,
                grow.describe()
            );
            for f in grow.grown {
                if let Some(t) = self.table.iter_mut().find(|t| t.name == f.name) {
                    *t = f.clone();
                }
                self.pending.push((f.name, why.clone()));
            }
            for f in grow.added {
                self.pending.push((f.name.clone(), why.clone()));
                self.table.push(f);
            }
        }
        self.writers.insert(
            id,
            Writer {
                schema: writer,
                decoder: None,
            },
        );
    }

    /// The columns the table must add or grow before the records prepared last can be
    /// decoded, if any; afterwards, [`AvroDecoder::retarget`] to the table's new schema.
    pub fn take_change(&mut self) -> Option<SchemaChange> {
        if self.pending.is_empty() {
            return None;
        }
        let pending = std::mem::take(&mut self.pending);
        let mut reasons: Vec<String> = Vec::new();
        let mut columns: Vec<FieldConfig> = Vec::new();
        for (name, why) in pending {
            if !reasons.contains(&why) {
                reasons.push(why);
            }
            if !columns.iter().any(|c| c.name == name)
                && let Some(t) = self.table.iter().find(|t| t.name == name)
            {
                columns.push(t.clone());
            }
        }
        Some(SchemaChange {
            columns,
            reason: reasons.join("; "),
        })
    }

    /// Decodes into `output`, the events table's schema after a change.
    pub fn retarget(&mut self, output: SchemaRef) -> Result<(), FormatError> {
        let mut columns = Vec::with_capacity(self.table.len());
        for f in &self.table {
            let out = output
                .field_with_name(&f.name)
                .map_err(|_| FormatError::MissingColumn {
                    column: f.name.clone(),
                })?;
            columns.push((f.name.clone(), out.data_type().clone()));
        }
        if let EventTime::Field(name, _) = &self.event_time
            && !columns.iter().any(|(c, _)| c == name)
        {
            return Err(FormatError::NoEventTimeField {
                field: name.clone(),
            });
        }
        self.columns = columns;
        self.layout.output = output;
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
        if !self.pending.is_empty() {
            return Err(FormatError::UnappliedChange {
                columns: self.pending.iter().map(|(c, _)| c.clone()).collect(),
            });
        }
        let (parts, kept) = match self.decode_all(raw, &good)? {
            Some(parts) => (parts, good),
            None => self.decode_one_by_one(raw, &good, &mut dead)?,
        };
        let decoded = self.join(parts, kept.len())?;
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

    /// The decoder of writer `id`, able to hold `batch_size` rows.
    fn decoder(&mut self, id: u32, batch_size: usize) -> Result<&mut Decoder, FormatError> {
        let subject = &self.subject;
        let missing = || FormatError::Subject {
            subject: subject.clone(),
            message: format!("schema id {id} was not looked up"),
        };
        let w = self.writers.get_mut(&id).ok_or_else(missing)?;
        if w.decoder
            .as_ref()
            .is_none_or(|d| d.batch_size() < batch_size)
        {
            let d = build(&w.schema, id, batch_size).map_err(|source| FormatError::Arrow {
                what: "making an Avro decoder",
                source,
            })?;
            w.decoder = Some(d);
        }
        w.decoder.as_mut().ok_or_else(missing)
    }

    /// Forgets writer `id`'s decoder (after it failed mid-record).
    fn reset(&mut self, id: u32) {
        if let Some(w) = self.writers.get_mut(&id) {
            w.decoder = None;
        }
    }

    /// Every record of `rows`, each run of one writer schema in that schema's decoder, as the
    /// table's columns (one part per run, in record order); `None` when any record fails (or
    /// does not make exactly one row), and the batch is then decoded record by record.
    fn decode_all(
        &mut self,
        raw: &RawBatch,
        rows: &[usize],
    ) -> Result<Option<Vec<Vec<ArrayRef>>>, FormatError> {
        let id_of = |i: usize| raw.value(i).and_then(schema_id).unwrap_or_default();
        let mut parts = Vec::new();
        let mut at = 0;
        while at < rows.len() {
            let id = id_of(rows[at]);
            let mut end = at + 1;
            while end < rows.len() && id_of(rows[end]) == id {
                end += 1;
            }
            let run = &rows[at..end];
            match self.decode_run(id, raw, run)? {
                Some(batch) => parts.push(self.to_table_columns(&batch)?),
                None => return Ok(None),
            }
            at = end;
        }
        Ok(Some(parts))
    }

    /// The records `run`, all of writer `id`, in one batch; `None` if any does not decode.
    fn decode_run(
        &mut self,
        id: u32,
        raw: &RawBatch,
        run: &[usize],
    ) -> Result<Option<RecordBatch>, FormatError> {
        let dec = self.decoder(id, run.len() + 1)?;
        let mut out = Vec::new();
        let mut ok = true;
        for &i in run {
            if feed(dec, raw.value(i).unwrap_or_default(), &mut out).is_err() {
                ok = false;
                break;
            }
        }
        if ok {
            match dec.flush() {
                Ok(last) => out.extend(last),
                Err(_) => ok = false,
            }
        }
        if !ok || out.iter().map(|b| b.num_rows()).sum::<usize>() != run.len() {
            self.reset(id);
            return Ok(None);
        }
        match out.as_slice() {
            [one] => Ok(Some(one.clone())),
            [first, ..] => arrow::compute::concat_batches(&first.schema(), &out)
                .map(Some)
                .map_err(|source| FormatError::Arrow {
                    what: "joining Avro rows",
                    source,
                }),
            [] => Ok(None),
        }
    }

    /// Each record of `rows` alone, so that a bad one is found and the others kept.
    fn decode_one_by_one(
        &mut self,
        raw: &RawBatch,
        rows: &[usize],
        dead: &mut Vec<DeadLetter>,
    ) -> Result<(Vec<Vec<ArrayRef>>, Vec<usize>), FormatError> {
        let mut parts = Vec::new();
        let mut kept = Vec::new();
        for &i in rows {
            let value = raw.value(i).unwrap_or_default();
            let id = schema_id(value).unwrap_or_default();
            let dec = self.decoder(id, 2)?;
            let mut out = Vec::new();
            let fed = feed(dec, value, &mut out)
                .and_then(|()| dec.flush().map_err(BodyError::from))
                .map(|last| {
                    out.extend(last);
                    out
                });
            let message = match fed {
                Ok(out) if out.iter().map(|b| b.num_rows()).sum::<usize>() == 1 => {
                    parts.push(self.to_table_columns(&out[0])?);
                    kept.push(i);
                    continue;
                }
                Ok(_) => "the value holds more than one record (trailing bytes)".to_string(),
                Err(e) => format!("the body does not decode: {e}"),
            };
            self.reset(id);
            dead.push(DeadLetter {
                index: i,
                kind: ErrorKind::MalformedAvro,
                message,
            });
        }
        Ok((parts, kept))
    }

    /// A decoded batch as the table's columns: matched by name, conformed to the table's types
    /// (enums to strings, narrower numbers to wider ones, missing nested fields null); a
    /// column the writer lacks is null.
    fn to_table_columns(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>, FormatError> {
        self.columns
            .iter()
            .map(|(name, ty)| match batch.column_by_name(name) {
                Some(c) => conform(c, ty).map_err(|source| FormatError::Arrow {
                    what: "matching an Avro column to the table's type",
                    source,
                }),
                None => Ok(new_null_array(ty, batch.num_rows())),
            })
            .collect()
    }

    /// The parts (each the table's columns) joined into one array per column.
    fn join(
        &self,
        mut parts: Vec<Vec<ArrayRef>>,
        rows: usize,
    ) -> Result<Vec<ArrayRef>, FormatError> {
        match parts.len() {
            0 => Ok(self
                .columns
                .iter()
                .map(|(_, ty)| new_null_array(ty, rows))
                .collect()),
            1 => Ok(parts.remove(0)),
            _ => (0..self.columns.len())
                .map(|c| {
                    let arrays: Vec<&dyn Array> = parts.iter().map(|p| p[c].as_ref()).collect();
                    arrow::compute::concat(&arrays).map_err(|source| FormatError::Arrow {
                        what: "joining Avro rows",
                        source,
                    })
                })
                .collect(),
        }
    }

    /// Event times, then the events rows of the records whose event time reads.
    fn finish(
        &mut self,
        raw: &RawBatch,
        mut decoded: Vec<ArrayRef>,
        kept: Vec<usize>,
        dead: &mut Vec<DeadLetter>,
    ) -> Result<(Option<RecordBatch>, Vec<u32>), FormatError> {
        let n = kept.len();
        let mut ok = vec![true; n];
        if let Some(keys) = self.keys.as_mut() {
            let (column, bad) = keys.decode(raw, &kept)?;
            if let Some(at) = self.columns.iter().position(|(c, _)| c == keys.column()) {
                decoded[at] = column;
            }
            for (row, message) in bad {
                ok[row] = false;
                dead.push(DeadLetter {
                    index: kept[row],
                    kind: ErrorKind::BadKey,
                    message,
                });
            }
        }
        let time_col = match &self.event_time {
            EventTime::Field(name, _) => self
                .columns
                .iter()
                .position(|(c, _)| c == name)
                .unwrap_or_default(),
            EventTime::Kafka => 0,
        };
        let mut event_us = Vec::with_capacity(n);
        for (row, &i) in kept.iter().enumerate() {
            if !ok[row] {
                continue;
            }
            let t = match &self.event_time {
                EventTime::Kafka => raw.timestamps[i]
                    .map(|ms| ms.saturating_mul(1000))
                    .ok_or(TimeError::NoKafkaTimestamp),
                EventTime::Field(_, fmt) => {
                    event_time_of(&decoded[time_col], row, *fmt, self.layout.tz)
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

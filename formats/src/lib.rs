//! Record formats: the bytes of Kafka records ([`sluice_kafka::RawBatch`]) decoded into Arrow
//! rows of a table, and everything that does not decode into dead letters with a reason.
//!
//! - [`json`]: JSON objects against a configured schema ([`JsonDecoder`]); [`json_fast`] is
//!   its one-pass decoder for flat schemas, arrow-json its general one;
//! - [`time`]: event times and the date and hour partition columns;
//! - [`schema`]: the columns of the events and dead-letter tables;
//! - [`headers`] and [`dead_letter`]: the headers column and dead-letter rows.
//!
//! A decoder never fails on a record's content: a [`FormatError`] means the decoder or the
//! table is wrong, not the record.

pub mod avro;
pub mod avro_key;
pub mod dead_letter;
pub mod evolve;
pub mod headers;
pub mod infer;
pub mod json;
pub mod json_fast;
pub mod protobuf;
pub mod registry;
pub mod rows;
pub mod schema;
pub mod time;

pub use json::JsonDecoder;

use arrow::array::RecordBatch;

/// Why a record went to the dead-letter table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The value is missing or empty.
    EmptyValue,
    /// The value is larger than `max_record_size`.
    Oversized,
    /// The value is not UTF-8.
    InvalidUtf8,
    /// The value is not one well-formed JSON object.
    MalformedJson,
    /// The object does not fit the schema (type, missing field, unknown field).
    SchemaMismatch,
    /// The event time is missing or cannot be parsed.
    InvalidEventTime,
    /// The value is not in the Confluent wire format (magic byte 0, a 4-byte schema id).
    BadFraming,
    /// The schema id is not in the registry.
    UnknownSchema,
    /// The writer's schema cannot be read as the table's (a narrowing, a type change, or
    /// another kind of schema).
    IncompatibleSchema,
    /// The body does not decode with the writer's schema (truncated, corrupt, trailing bytes).
    MalformedAvro,
    /// The Protobuf body does not decode with the writer's message.
    MalformedProtobuf,
    /// The key does not decode (`key_format = "avro"`).
    BadKey,
    /// A change (upsert mode) that cannot be applied: an unknown Debezium `op`, a missing
    /// `after` or `before`, a tombstone without a usable key.
    BadChange,
    /// A change (upsert mode) whose key has a null column.
    NullKey,
    /// A change (upsert mode) to a key that another partition changed in the same flush.
    KeyInTwoPartitions,
}

impl ErrorKind {
    /// The name stored in the `error_kind` column and used as the metric `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EmptyValue => "empty_value",
            Self::Oversized => "oversized",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::MalformedJson => "malformed_json",
            Self::SchemaMismatch => "schema_mismatch",
            Self::InvalidEventTime => "invalid_event_time",
            Self::BadFraming => "bad_framing",
            Self::UnknownSchema => "unknown_schema",
            Self::IncompatibleSchema => "incompatible_schema",
            Self::MalformedAvro => "malformed_avro",
            Self::MalformedProtobuf => "malformed_protobuf",
            Self::BadKey => "bad_key",
            Self::BadChange => "bad_change",
            Self::NullKey => "null_key",
            Self::KeyInTwoPartitions => "key_in_two_partitions",
        }
    }
}

/// One record that could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Index of the record in its [`RawBatch`].
    pub index: usize,
    /// The kind of error.
    pub kind: ErrorKind,
    /// What went wrong, for a person.
    pub message: String,
}

/// The decoded part of a batch.
#[derive(Debug)]
pub struct Decoded {
    /// Rows in the events table's schema (record order preserved).
    pub events: Option<RecordBatch>,
    /// Index into the raw batch of each events row (so that a row's topic, partition and
    /// offset are read from the raw batch, not from the events columns).
    pub event_indices: Vec<u32>,
    /// Records that go to the dead-letter table, in record order.
    pub dead: Vec<DeadLetter>,
}

/// What stops a decoder (never a record's content: that makes a dead letter).
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// A configured column is not in the table.
    #[error("column {column:?} is missing from the table")]
    MissingColumn {
        /// The column.
        column: String,
    },
    /// A column of the table that cannot be null is not in the configuration any more.
    #[error(
        "the table's column {column:?} cannot be null and the configuration no longer has it; add it back to schema"
    )]
    DroppedRequiredColumn {
        /// The column.
        column: String,
    },
    /// The event time field is not a configured column.
    #[error("event time field {field:?} is not in the schema")]
    NoEventTimeField {
        /// The field.
        field: String,
    },
    /// The schema registry could not answer (not: it does not know an id, which makes dead
    /// letters).
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    /// The subject's schema cannot become a table.
    #[error("subject {subject}: {message}")]
    Subject {
        /// The registry subject.
        subject: String,
        /// What is wrong.
        message: String,
    },
    /// A batch was decoded before the table took the schema change the decoder asked for.
    #[error("the table has not taken the new columns {columns:?} yet")]
    UnappliedChange {
        /// The columns waiting.
        columns: Vec<String>,
    },
    /// Arrow refused to build what the decoder asked for.
    #[error("{what}: {source}")]
    Arrow {
        /// What was being built.
        what: &'static str,
        /// Arrow's error.
        #[source]
        source: arrow::error::ArrowError,
    },
}

/// Columns a table must add or grow before the records a decoder has prepared can be written:
/// a new schema version with new fields, or new nested fields.
#[derive(Clone, Debug, PartialEq)]
pub struct SchemaChange {
    /// The added and grown columns, as the table should have them.
    pub columns: Vec<sluice_config::FieldConfig>,
    /// Which schema asked for it and what it adds, for the log.
    pub reason: String,
}

/// A pipeline's decoder, whichever its format.
#[derive(Debug)]
pub enum RecordDecoder {
    /// `format = "json"`.
    Json(Box<JsonDecoder>),
    /// `format = "avro"`.
    Avro(Box<avro::AvroDecoder>),
    /// `format = "protobuf"`.
    Protobuf(Box<protobuf::ProtobufDecoder>),
    /// `format = "json"` without a configured `schema`: columns inferred from the records.
    InferredJson(Box<infer::InferringJson>),
}

impl RecordDecoder {
    /// Whatever the decoder must fetch before it can decode `raw` (the writer schemas of new
    /// Avro schema ids).
    pub async fn prepare(&mut self, raw: &sluice_kafka::RawBatch) -> Result<(), FormatError> {
        match self {
            Self::Json(_) => Ok(()),
            Self::Avro(a) => a.prepare(raw).await,
            Self::Protobuf(p) => p.prepare(raw).await,
            Self::InferredJson(j) => {
                j.prepare(raw);
                Ok(())
            }
        }
    }

    /// The columns the table must take before the prepared records are decoded, if any.
    pub fn take_change(&mut self) -> Option<SchemaChange> {
        match self {
            Self::Json(_) => None,
            Self::Avro(a) => a.take_change(),
            Self::Protobuf(p) => p.take_change(),
            Self::InferredJson(j) => j.take_change(),
        }
    }

    /// Decodes into the table's new schema `output` after a [`SchemaChange`].
    pub fn retarget(&mut self, output: arrow::datatypes::SchemaRef) -> Result<(), FormatError> {
        match self {
            Self::Json(_) => Ok(()),
            Self::Avro(a) => a.retarget(output),
            Self::Protobuf(p) => p.retarget(output),
            Self::InferredJson(j) => j.retarget(output),
        }
    }

    /// Decodes a batch; bad records become dead letters.
    pub fn decode(&mut self, raw: &sluice_kafka::RawBatch) -> Result<Decoded, FormatError> {
        match self {
            Self::Json(j) => j.decode(raw),
            Self::Avro(a) => a.decode(raw),
            Self::Protobuf(p) => p.decode(raw),
            Self::InferredJson(j) => j.decode(raw),
        }
    }
}

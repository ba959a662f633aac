//! Protocol Buffers records in the Confluent wire format (magic byte `0`, a 4-byte big-endian
//! schema id, the message indexes, the body) into rows of the events table.
//!
//! A schema from the registry is a `.proto` file, as text (compiled in process by protox) or
//! as a base64-encoded `FileDescriptorProto` (what Confluent's Python serializer registers);
//! the google well-known types resolve without references. The message indexes pick the
//! record's message in that file (`[0]`, the first message, written as one zero byte).
//!
//! The table's columns are the fields of the first message of the subject's latest schema
//! ([`table_columns`]); numbers at their widest (every integer kind is long, float is double),
//! enums as their names, `bytes` as base64 text, `google.protobuf.Timestamp` as a timestamp,
//! the wrapper types as their value, nested messages as structs, `repeated` as lists, maps as
//! maps. Each record is decoded with its writer's descriptor (prost-reflect's dynamic message),
//! written in protobuf's canonical JSON mapping and decoded by the JSON decoder against the
//! table's columns, matched by name. New fields in a writer's schema grow the table
//! ([`crate::SchemaChange`]) as for Avro; a type change makes that schema's records dead
//! letters naming the field.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::BinaryBuilder;
use arrow::datatypes::SchemaRef;
use base64::Engine as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor,
    SerializeOptions,
};
use sluice_config::{ColumnType, FieldConfig, PipelineConfig, StructField, UnknownFields};
use sluice_kafka::RawBatch;

use crate::evolve::growth;
use crate::json::JsonDecoder;
use crate::registry::{RegisteredSchema, Registry, SchemaType};
use crate::schema::{column_type_of, is_sluice_column};
use crate::{DeadLetter, Decoded, ErrorKind, FormatError, SchemaChange};

/// The name the registered file gets when it is compiled from text.
const MAIN_FILE: &str = "sluice_registered.proto";

/// Nested messages deeper than this are refused (a recursive message has no table type).
const MAX_DEPTH: usize = 16;

/// Why a registered schema does not make a table.
#[derive(Debug, thiserror::Error)]
pub enum ProtoSchemaError {
    /// The schema is neither a `.proto` file that compiles nor a base64 descriptor.
    #[error("does not compile: {0}")]
    Compile(String),
    /// The file has no message.
    #[error("has no message")]
    NoMessage,
    /// A field has no table type.
    #[error("field {field:?} is {what}, which a table cannot hold")]
    Unsupported {
        /// The field's path.
        field: String,
        /// What it is.
        what: String,
    },
}

/// The file a registered schema holds, in a pool with its imports (the well-known types).
fn file_of(text: &str) -> Result<FileDescriptor, ProtoSchemaError> {
    let compile = |e: &dyn std::fmt::Display| ProtoSchemaError::Compile(e.to_string());
    let looks_like_base64 = !text.contains(char::is_whitespace) && !text.contains(';');
    if looks_like_base64
        && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(text.trim())
    {
        let mut pool = DescriptorPool::global();
        let before: Vec<String> = pool.files().map(|f| f.name().to_string()).collect();
        pool.decode_file_descriptor_proto(bytes.as_slice())
            .map_err(|e| compile(&e))?;
        return pool
            .files()
            .find(|f| !before.iter().any(|b| b == f.name()))
            .ok_or(ProtoSchemaError::NoMessage);
    }
    let mut compiler = protox::Compiler::with_file_resolver(Source(text.to_string()));
    compiler.include_imports(true);
    compiler.open_file(MAIN_FILE).map_err(|e| compile(&e))?;
    let pool = DescriptorPool::from_file_descriptor_set(compiler.file_descriptor_set())
        .map_err(|e| compile(&e))?;
    pool.get_file_by_name(MAIN_FILE)
        .ok_or(ProtoSchemaError::NoMessage)
}

/// The registered text as the main file; the google well-known types as its imports.
struct Source(String);

impl protox::file::FileResolver for Source {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        if name == MAIN_FILE {
            return protox::file::File::from_source(name, &self.0);
        }
        protox::file::GoogleFileResolver::new().open_file(name)
    }
}

/// The message of `file` at `indexes` (`[0]`: its first message; `[1, 0]`: the first message
/// nested in its second).
fn message_at(file: &FileDescriptor, indexes: &[usize]) -> Option<MessageDescriptor> {
    let (first, rest) = indexes.split_first()?;
    let mut m = file.messages().nth(*first)?;
    for i in rest {
        let child = m.child_messages().nth(*i)?;
        m = child;
    }
    Some(m)
}

/// The table type of a field.
fn field_type(
    f: &FieldDescriptor,
    path: &str,
    depth: usize,
) -> Result<ColumnType, ProtoSchemaError> {
    if f.is_map() {
        let entry = f.kind();
        let entry = entry
            .as_message()
            .ok_or_else(|| ProtoSchemaError::Unsupported {
                field: path.to_string(),
                what: "a map without an entry message".into(),
            })?;
        let key = kind_type(&entry.map_entry_key_field().kind(), path, depth)?;
        let value = kind_type(&entry.map_entry_value_field().kind(), path, depth)?;
        return Ok(ColumnType::Map(Box::new(key), Box::new(value)));
    }
    let t = kind_type(&f.kind(), path, depth)?;
    Ok(if f.is_list() {
        ColumnType::Array(Box::new(t))
    } else {
        t
    })
}

fn kind_type(kind: &Kind, path: &str, depth: usize) -> Result<ColumnType, ProtoSchemaError> {
    Ok(match kind {
        Kind::Double | Kind::Float => ColumnType::Double,
        Kind::Int32
        | Kind::Int64
        | Kind::Uint32
        | Kind::Uint64
        | Kind::Sint32
        | Kind::Sint64
        | Kind::Fixed32
        | Kind::Fixed64
        | Kind::Sfixed32
        | Kind::Sfixed64 => ColumnType::Long,
        Kind::Bool => ColumnType::Boolean,
        Kind::String | Kind::Bytes | Kind::Enum(_) => ColumnType::String,
        Kind::Message(m) => return message_type(m, path, depth + 1),
    })
}

fn message_type(
    m: &MessageDescriptor,
    path: &str,
    depth: usize,
) -> Result<ColumnType, ProtoSchemaError> {
    let unsupported = |what: &str| ProtoSchemaError::Unsupported {
        field: path.to_string(),
        what: what.to_string(),
    };
    Ok(match m.full_name() {
        "google.protobuf.Timestamp" => ColumnType::Timestamp,
        "google.protobuf.StringValue" | "google.protobuf.BytesValue" => ColumnType::String,
        "google.protobuf.Int32Value"
        | "google.protobuf.Int64Value"
        | "google.protobuf.UInt32Value"
        | "google.protobuf.UInt64Value" => ColumnType::Long,
        "google.protobuf.FloatValue" | "google.protobuf.DoubleValue" => ColumnType::Double,
        "google.protobuf.BoolValue" => ColumnType::Boolean,
        "google.protobuf.Duration" => ColumnType::String,
        name if name.starts_with("google.protobuf.") => {
            return Err(unsupported(&format!("a {name}")));
        }
        _ if depth > MAX_DEPTH => return Err(unsupported("nested too deep (a recursive message)")),
        _ => ColumnType::Struct(
            m.fields()
                .map(|f| {
                    Ok(StructField {
                        name: f.name().to_string(),
                        ty: field_type(&f, &format!("{path}.{}", f.name()), depth)?,
                    })
                })
                .collect::<Result<Vec<_>, ProtoSchemaError>>()?,
        ),
    })
}

/// The columns of message `m`: one per field, all nullable.
fn columns_of(m: &MessageDescriptor) -> Result<Vec<FieldConfig>, ProtoSchemaError> {
    m.fields()
        .map(|f| {
            Ok(FieldConfig {
                name: f.name().to_string(),
                ty: field_type(&f, f.name(), 0)?,
                nullable: true,
                format: None,
            })
        })
        .collect()
}

/// The events table's columns for the subject's latest schema `latest`: the fields of its
/// file's first message.
pub fn table_columns(
    subject: &str,
    latest: &RegisteredSchema,
) -> Result<Vec<FieldConfig>, FormatError> {
    let bad = |message: String| FormatError::Subject {
        subject: subject.to_string(),
        message,
    };
    if latest.schema_type != SchemaType::Protobuf {
        return Err(bad(format!(
            "its latest schema (id {}) is {:?}, not Protobuf",
            latest.id, latest.schema_type
        )));
    }
    let file = file_of(&latest.text).map_err(|e| bad(format!("schema id {} {e}", latest.id)))?;
    let m = message_at(&file, &[0])
        .ok_or_else(|| bad(format!("schema id {} has no message", latest.id)))?;
    columns_of(&m).map_err(|e| bad(format!("schema id {}: {e}", latest.id)))
}

/// The schema id, message indexes and body of a value in the Confluent wire format.
pub fn frame(value: &[u8]) -> Option<(u32, Vec<usize>, &[u8])> {
    let id = crate::avro::schema_id(value)?;
    let mut rest = &value[5..];
    let count = zigzag(&mut rest)?;
    let indexes = if count == 0 {
        vec![0]
    } else {
        let count = usize::try_from(count).ok().filter(|c| *c <= 64)?;
        (0..count)
            .map(|_| zigzag(&mut rest).and_then(|i| usize::try_from(i).ok()))
            .collect::<Option<Vec<_>>>()?
    };
    Some((id, indexes, rest))
}

/// One zigzag varint off the front of `buf`.
fn zigzag(buf: &mut &[u8]) -> Option<i64> {
    let mut v: u64 = 0;
    for (i, b) in buf.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Some(((v >> 1) as i64) ^ -((v & 1) as i64));
        }
    }
    None
}

/// Decodes one Protobuf pipeline's records.
pub struct ProtobufDecoder {
    registry: Arc<Registry>,
    subject: String,
    /// Files of the writer schemas whose records go into the table, by id.
    writers: HashMap<u32, FileDescriptor>,
    /// Ids whose records are dead letters, with the reason.
    refused: HashMap<u32, (ErrorKind, String)>,
    /// The pipeline, `schema` being the table's data columns as they are now.
    pipeline: PipelineConfig,
    /// Columns grown or added since the last [`ProtobufDecoder::take_change`], and why.
    pending: Vec<FieldConfig>,
    reasons: Vec<String>,
    json: JsonDecoder,
    max_record_size: usize,
}

impl std::fmt::Debug for ProtobufDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtobufDecoder")
            .field("subject", &self.subject)
            .field("writers", &self.writers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ProtobufDecoder {
    /// A decoder of pipeline `p` producing rows of `output`; the subject's `latest` schema is
    /// known without asking the registry again.
    pub fn new(
        p: &PipelineConfig,
        registry: Arc<Registry>,
        latest: &RegisteredSchema,
        output: SchemaRef,
    ) -> Result<Self, FormatError> {
        let mut pipeline = p.clone();
        pipeline.unknown_fields = UnknownFields::Ignore;
        pipeline.schema = data_columns(&output)?;
        let json = JsonDecoder::new(&pipeline, output)?;
        let mut decoder = Self {
            registry,
            subject: p.value_subject(),
            writers: HashMap::new(),
            refused: HashMap::new(),
            pipeline,
            pending: Vec::new(),
            reasons: Vec::new(),
            json,
            max_record_size: p.max_record_size.bytes() as usize,
        };
        decoder.admit(latest.id, latest);
        Ok(decoder)
    }

    /// Looks up the writer schemas of ids in `raw` not seen before (one request per new id).
    pub async fn prepare(&mut self, raw: &RawBatch) -> Result<(), FormatError> {
        let new_ids = crate::registry::unseen_ids((0..raw.len()).map(|i| raw.value(i)), |id| {
            self.writers.contains_key(&id) || self.refused.contains_key(&id)
        });
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

    /// Takes writer schema `id` in, growing the table when its first message has new fields,
    /// or refuses it (its records become dead letters).
    fn admit(&mut self, id: u32, schema: &RegisteredSchema) {
        let mut refuse = |why: String| {
            tracing::warn!(subject = %self.subject, id, "{why}");
            self.refused
                .insert(id, (ErrorKind::IncompatibleSchema, why));
        };
        if schema.schema_type != SchemaType::Protobuf {
            return refuse(format!(
                "schema id {id} is a {:?} schema; this pipeline reads Protobuf",
                schema.schema_type
            ));
        }
        let file = match file_of(&schema.text) {
            Ok(f) => f,
            Err(e) => return refuse(format!("schema id {id} {e}")),
        };
        let columns = match message_at(&file, &[0]).map(|m| columns_of(&m)) {
            Some(Ok(c)) => c,
            Some(Err(e)) => return refuse(format!("schema id {id}: {e}")),
            None => return refuse(format!("schema id {id} has no message")),
        };
        let grow = match growth(&self.pipeline.schema, &columns) {
            Ok(g) => g,
            Err(clash) => return refuse(format!("schema id {id} does not fit the table: {clash}")),
        };
        if !grow.is_empty() {
            self.reasons.push(format!(
                "schema id {id} of subject {} {}",
                self.subject,
                grow.describe()
            ));
            for f in grow.fields() {
                match self.pipeline.schema.iter_mut().find(|c| c.name == f.name) {
                    Some(c) => *c = f.clone(),
                    None => self.pipeline.schema.push(f.clone()),
                }
                self.pending.retain(|p| p.name != f.name);
                self.pending.push(f);
            }
        }
        self.writers.insert(id, file);
    }

    /// The columns the table must take before the prepared records are decoded.
    pub fn take_change(&mut self) -> Option<SchemaChange> {
        if self.pending.is_empty() {
            return None;
        }
        Some(SchemaChange {
            columns: std::mem::take(&mut self.pending),
            reason: std::mem::take(&mut self.reasons).join("; "),
        })
    }

    /// Decodes into the table's new schema `output`.
    pub fn retarget(&mut self, output: SchemaRef) -> Result<(), FormatError> {
        self.pipeline.schema = data_columns(&output)?;
        self.json = JsonDecoder::new(&self.pipeline, output)?;
        Ok(())
    }

    /// Decodes a batch (after [`ProtobufDecoder::prepare`]); bad records become dead letters.
    pub fn decode(&mut self, raw: &RawBatch) -> Result<Decoded, FormatError> {
        if !self.pending.is_empty() {
            return Err(FormatError::UnappliedChange {
                columns: self.pending.iter().map(|c| c.name.clone()).collect(),
            });
        }
        let mut dead = Vec::new();
        let mut good = Vec::with_capacity(raw.len());
        let mut json = BinaryBuilder::with_capacity(raw.len(), raw.values.values().len() * 2);
        let options = SerializeOptions::new()
            .stringify_64_bit_integers(false)
            .use_proto_field_name(true)
            .skip_default_fields(false);
        for i in 0..raw.len() {
            match self.to_json(raw.value(i), &options) {
                Ok(bytes) => {
                    good.push(i);
                    json.append_value(bytes);
                }
                Err((kind, message)) => dead.push(DeadLetter {
                    index: i,
                    kind,
                    message,
                }),
            }
        }
        let mut sub = raw.select(&good);
        sub.values = json.finish();
        let decoded = self.json.decode(&sub)?;
        dead.extend(decoded.dead.into_iter().map(|d| DeadLetter {
            index: good[d.index],
            ..d
        }));
        dead.sort_by_key(|d| d.index);
        Ok(Decoded {
            events: decoded.events,
            event_indices: decoded
                .event_indices
                .iter()
                .map(|i| good[*i as usize] as u32)
                .collect(),
            dead,
        })
    }

    /// One record's value in protobuf's JSON mapping, or why it is a dead letter.
    fn to_json(
        &self,
        value: Option<&[u8]>,
        options: &SerializeOptions,
    ) -> Result<Vec<u8>, (ErrorKind, String)> {
        let value = value.ok_or((
            ErrorKind::EmptyValue,
            "the record has no value (a tombstone)".to_string(),
        ))?;
        if value.len() > self.max_record_size {
            return Err((
                ErrorKind::Oversized,
                format!(
                    "the value is {} bytes; max_record_size is {}",
                    value.len(),
                    self.max_record_size
                ),
            ));
        }
        let (id, indexes, body) = frame(value).ok_or((
            ErrorKind::BadFraming,
            "the value is not in the Confluent wire format (magic byte 0, a 4-byte schema id, message indexes, the body)".to_string(),
        ))?;
        if let Some((kind, why)) = self.refused.get(&id) {
            return Err((*kind, why.clone()));
        }
        let file = self.writers.get(&id).ok_or((
            ErrorKind::UnknownSchema,
            format!("schema id {id} was not looked up"),
        ))?;
        let message = message_at(file, &indexes).ok_or_else(|| {
            (
                ErrorKind::BadFraming,
                format!("schema id {id} has no message at indexes {indexes:?}"),
            )
        })?;
        let decoded = DynamicMessage::decode(message, body).map_err(|e| {
            (
                ErrorKind::MalformedProtobuf,
                format!("the body does not decode: {e}"),
            )
        })?;
        let mut out = Vec::with_capacity(body.len() * 2);
        let mut ser = serde_json::Serializer::new(&mut out);
        decoded
            .serialize_with_options(&mut ser, options)
            .map_err(|e| {
                (
                    ErrorKind::MalformedProtobuf,
                    format!("the message has no JSON form: {e}"),
                )
            })?;
        Ok(out)
    }
}

/// The data columns (sluice's own left out) of the events table's schema.
fn data_columns(output: &SchemaRef) -> Result<Vec<FieldConfig>, FormatError> {
    output
        .fields()
        .iter()
        .filter(|f| !is_sluice_column(f.name()))
        .map(|f| {
            let ty = column_type_of(f.data_type()).ok_or_else(|| FormatError::MissingColumn {
                column: f.name().clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    const PROTO: &str = r#"
syntax = "proto3";
package sluice.test;
import "google/protobuf/timestamp.proto";
message Order {
  int64 id = 1;
  string user = 2;
  enum Status { NEW = 0; PAID = 1; }
  Status status = 3;
  google.protobuf.Timestamp ts = 4;
  message Address { string city = 1; int32 zip = 2; }
  Address address = 5;
  repeated string tags = 6;
  int32 qty = 7;
  map<string, int64> counts = 8;
}
message Other { string x = 1; }
"#;

    #[test]
    fn a_proto_file_makes_columns_at_their_widest() {
        let file = file_of(PROTO).unwrap();
        let cols = columns_of(&message_at(&file, &[0]).unwrap()).unwrap();
        let types: Vec<String> = cols
            .iter()
            .map(|c| format!("{}:{}", c.name, c.ty))
            .collect();
        assert_eq!(
            types,
            vec![
                "id:long",
                "user:string",
                "status:string",
                "ts:timestamp",
                "address:struct<city:string,zip:long>",
                "tags:array<string>",
                "qty:long",
                "counts:map<string,long>",
            ]
        );
        assert_eq!(message_at(&file, &[1]).unwrap().name(), "Other");
    }

    /// A table made from version 1, then a decoder whose latest schema is version 2 (a new
    /// field, a new nested field): the change asks for both, and a field whose type changed is
    /// refused, naming it.
    #[test]
    fn a_newer_message_grows_the_table_and_a_changed_type_is_refused() {
        let v1 = "syntax = \"proto3\"; message M { int64 id = 1; message A { string city = 1; } A a = 2; }";
        let v2 = "syntax = \"proto3\"; message M { int64 id = 1; message A { string city = 1; int32 zip = 2; } A a = 2; string note = 3; }";
        let v3 = "syntax = \"proto3\"; message M { string id = 1; }";
        let schema = |id, text: &str| RegisteredSchema {
            id,
            schema_type: SchemaType::Protobuf,
            text: text.to_string(),
        };
        let p = PipelineConfig {
            name: "p".into(),
            topics: vec!["t".into()],
            table: "t".into(),
            ..Default::default()
        };
        let cols = table_columns("t-value", &schema(1, v1)).unwrap();
        let p1 = p.with_schema(cols).unwrap();
        let output = crate::schema::events_schema(&p1);
        let registry = Arc::new(
            Registry::new(&sluice_config::SchemaRegistryConfig {
                url: "http://127.0.0.1:9".into(),
                ..Default::default()
            })
            .unwrap(),
        );
        let mut d = ProtobufDecoder::new(&p1, registry, &schema(2, v2), output).unwrap();
        let change = d.take_change().expect("a change");
        let names: Vec<String> = change
            .columns
            .iter()
            .map(|c| format!("{}:{}", c.name, c.ty))
            .collect();
        assert_eq!(names, vec!["a:struct<city:string,zip:long>", "note:string"]);
        d.admit(3, &schema(3, v3));
        let (kind, why) = d.refused.get(&3).expect("refused");
        assert_eq!(*kind, ErrorKind::IncompatibleSchema);
        assert!(
            why.contains("field \"id\" is string in the data but long"),
            "{why}"
        );
    }

    #[test]
    fn the_wire_format_gives_the_id_the_message_indexes_and_the_body() {
        // One zero byte: the first message.
        assert_eq!(
            frame(&[0, 0, 0, 0, 7, 0, 8, 1]),
            Some((7, vec![0], &[8u8, 1][..]))
        );
        // Two indexes (count 2 as zigzag 4, then 1 and 0): the first message nested in the
        // second.
        assert_eq!(
            frame(&[0, 0, 0, 1, 0, 4, 2, 0, 9]),
            Some((256, vec![1, 0], &[9u8][..]))
        );
        assert_eq!(frame(&[1, 0, 0, 0, 7, 0]), None);
    }
}

//! Avro record keys (`key_format = "avro"`): each key in the Confluent wire format decoded with
//! its writer's schema from the key subject into one column of the events table, a struct for
//! a record key, the value itself for a primitive one. The raw bytes stay in `_kafka_key`.
//!
//! A key that is not framed, whose id the registry does not know, whose schema does not fit
//! the key column, or whose body does not decode makes its record a dead letter (`bad_key`);
//! a record without a key reads null. The key column's type is the key subject's latest schema
//! when the table is made; a key schema that changes the column is refused for now.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StructArray, new_null_array};
use arrow::datatypes::DataType;
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use sluice_config::{ColumnType, FieldConfig};
use sluice_kafka::RawBatch;

use crate::FormatError;
use crate::avro::schema_id;
use crate::evolve::{conform, merge_type, widest};
use crate::registry::{RegisteredSchema, Registry, SchemaType};
use crate::schema::column_type_of;

/// Why a key schema or a key does not go into the key column.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// arrow-avro cannot read the schema.
    #[error("does not read: {0}")]
    DoesNotRead(#[from] arrow::error::ArrowError),
    /// The schema's type has no table type.
    #[error("is {0}, which a table cannot hold")]
    Unsupported(DataType),
    /// The key is not in the Confluent wire format.
    #[error(
        "the key is not in the Confluent wire format (magic byte 0, a 4-byte schema id, the body)"
    )]
    NotFramed,
    /// The key's schema id was refused when it was looked up.
    #[error("{0}")]
    Refused(String),
    /// The key's schema id was not looked up.
    #[error("key schema id {0} was not looked up")]
    NotLookedUp(u32),
    /// The key's body does not decode.
    #[error("the key does not decode{0}")]
    Body(String),
    /// The decoded key does not fit the column.
    #[error("the key does not fit its column: {0}")]
    Fit(arrow::error::ArrowError),
}

/// The field a primitive key is wrapped in, so that arrow-avro reads it as a record (a record
/// of one field is encoded exactly as that field).
const WRAPPED: &str = "key";

/// A writer schema of the keys, as a record, and whether it was wrapped.
struct KeyWriter {
    schema: AvroSchema,
    wrapped: bool,
    decoder: Option<Decoder>,
}

/// `text` as a record schema: records as they are, anything else wrapped in a record of one
/// field.
fn as_record(text: &str) -> (AvroSchema, bool) {
    let parsed: Option<serde_json::Value> = serde_json::from_str(text).ok();
    let is_record = parsed
        .as_ref()
        .and_then(|v| v.get("type"))
        .and_then(serde_json::Value::as_str)
        == Some("record");
    if is_record {
        return (AvroSchema::new(text.to_string()), false);
    }
    let inner = parsed.unwrap_or_else(|| serde_json::Value::String(text.trim_matches('"').into()));
    let wrapped = serde_json::json!({
        "type": "record",
        "name": "SluiceKey",
        "fields": [{ "name": WRAPPED, "type": inner }],
    });
    (AvroSchema::new(wrapped.to_string()), true)
}

fn build(schema: &AvroSchema, id: u32) -> Result<Decoder, arrow::error::ArrowError> {
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    store.set(Fingerprint::Id(id), schema.clone())?;
    ReaderBuilder::new()
        .with_reader_schema(schema.clone())
        .with_writer_schema_store(store)
        .with_batch_size(2)
        .build_decoder()
}

/// The key column's type for a key schema.
fn key_type(schema: &AvroSchema, wrapped: bool, id: u32) -> Result<ColumnType, KeyError> {
    let decoder = build(schema, id)?;
    let arrow = decoder.schema();
    let t = if wrapped {
        arrow.field_with_name(WRAPPED)?.data_type().clone()
    } else {
        DataType::Struct(arrow.fields().clone())
    };
    column_type_of(&t)
        .map(|t| widest(&t))
        .ok_or(KeyError::Unsupported(t))
}

/// The key column of a table whose keys have the schema `latest` (the key subject's latest).
pub fn key_column(
    column: &str,
    subject: &str,
    latest: &RegisteredSchema,
) -> Result<FieldConfig, FormatError> {
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
    let (schema, wrapped) = as_record(&latest.text);
    let ty = key_type(&schema, wrapped, latest.id)
        .map_err(|e| bad(format!("its latest schema (id {}) {e}", latest.id)))?;
    Ok(FieldConfig {
        name: column.to_string(),
        ty,
        nullable: true,
        format: None,
    })
}

/// Decodes one pipeline's keys into its key column.
pub struct AvroKeys {
    registry: Arc<Registry>,
    subject: String,
    column: String,
    /// The key column's type in the table.
    ty: ColumnType,
    arrow_type: DataType,
    writers: HashMap<u32, KeyWriter>,
    refused: HashMap<u32, String>,
}

impl std::fmt::Debug for AvroKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroKeys")
            .field("subject", &self.subject)
            .field("column", &self.column)
            .finish_non_exhaustive()
    }
}

impl AvroKeys {
    /// Keys of `subject` into `column`, whose type in the table is `arrow_type`.
    pub fn new(
        registry: Arc<Registry>,
        subject: String,
        column: String,
        arrow_type: DataType,
    ) -> Result<Self, FormatError> {
        let ty = column_type_of(&arrow_type).ok_or_else(|| FormatError::Subject {
            subject: subject.clone(),
            message: format!(
                "the key column {column:?} is {arrow_type}, which keys do not decode into"
            ),
        })?;
        Ok(Self {
            registry,
            subject,
            column,
            ty,
            arrow_type,
            writers: HashMap::new(),
            refused: HashMap::new(),
        })
    }

    /// The key column's name.
    pub fn column(&self) -> &str {
        &self.column
    }

    /// Looks up the writer schemas of key ids not seen before (one request per new id).
    pub async fn prepare(&mut self, raw: &RawBatch) -> Result<(), FormatError> {
        let new_ids = crate::registry::unseen_ids((0..raw.len()).map(|i| raw.key(i)), |id| {
            self.writers.contains_key(&id) || self.refused.contains_key(&id)
        });
        for id in new_ids {
            match self.registry.find_by_id(id).await? {
                Some(schema) => self.admit(id, &schema),
                None => {
                    self.refused
                        .insert(id, format!("key schema id {id} is not in the registry"));
                }
            }
        }
        Ok(())
    }

    fn admit(&mut self, id: u32, schema: &RegisteredSchema) {
        if schema.schema_type != SchemaType::Avro {
            self.refused.insert(
                id,
                format!(
                    "key schema id {id} is a {:?} schema, not Avro",
                    schema.schema_type
                ),
            );
            return;
        }
        let (record, wrapped) = as_record(&schema.text);
        let fits = match key_type(&record, wrapped, id) {
            Err(e) => Err(e.to_string()),
            Ok(t) => match merge_type(&self.column, &self.ty, &t) {
                Ok(None) => Ok(()),
                Ok(Some(_)) => Err(format!(
                    "adds fields to the key column {:?}, which keys cannot change yet",
                    self.column
                )),
                Err(clash) => Err(clash.to_string()),
            },
        };
        match fits {
            Ok(()) => {
                self.writers.insert(
                    id,
                    KeyWriter {
                        schema: record,
                        wrapped,
                        decoder: None,
                    },
                );
            }
            Err(why) => {
                let why = format!("key schema id {id} of subject {}: {why}", self.subject);
                tracing::warn!("{why}");
                self.refused.insert(id, why);
            }
        }
    }

    /// The keys of records `rows` of `raw` as the key column (one row each, null for a
    /// missing key), and the positions in `rows` of the keys that do not decode, with why.
    pub fn decode(
        &mut self,
        raw: &RawBatch,
        rows: &[usize],
    ) -> Result<(ArrayRef, Vec<(usize, String)>), FormatError> {
        let mut parts: Vec<ArrayRef> = Vec::with_capacity(rows.len());
        let mut bad = Vec::new();
        for (at, &i) in rows.iter().enumerate() {
            match raw.key(i).map(|k| self.one(k)) {
                None => parts.push(new_null_array(&self.arrow_type, 1)),
                Some(Ok(a)) => parts.push(a),
                Some(Err(why)) => {
                    parts.push(new_null_array(&self.arrow_type, 1));
                    bad.push((at, why.to_string()));
                }
            }
        }
        let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
        let column = if refs.is_empty() {
            new_null_array(&self.arrow_type, 0)
        } else {
            arrow::compute::concat(&refs).map_err(|source| FormatError::Arrow {
                what: "joining keys",
                source,
            })?
        };
        Ok((column, bad))
    }

    /// One key as a one-row array of the key column's type.
    fn one(&mut self, key: &[u8]) -> Result<ArrayRef, KeyError> {
        let id = schema_id(key).ok_or(KeyError::NotFramed)?;
        if let Some(why) = self.refused.get(&id) {
            return Err(KeyError::Refused(why.clone()));
        }
        let w = self.writers.get_mut(&id).ok_or(KeyError::NotLookedUp(id))?;
        let dec = match w.decoder.as_mut() {
            Some(d) => d,
            None => w.decoder.insert(build(&w.schema, id)?),
        };
        let decoded = match dec.decode(key) {
            Ok(n) if n == key.len() => dec.flush().map_err(|e| format!(": {e}")),
            Ok(_) => Err(" (trailing bytes)".to_string()),
            Err(e) => Err(format!(": {e}")),
        };
        let batch = match decoded {
            Ok(Some(b)) if b.num_rows() == 1 => b,
            Ok(_) => {
                w.decoder = None;
                return Err(KeyError::Body(String::new()));
            }
            Err(e) => {
                w.decoder = None;
                return Err(KeyError::Body(e));
            }
        };
        let array: ArrayRef = if w.wrapped {
            batch.column(0).clone()
        } else {
            Arc::new(StructArray::from(batch))
        };
        conform(&array, &self.arrow_type).map_err(KeyError::Fit)
    }
}

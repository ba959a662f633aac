//! JSON without a configured `schema`: the table's columns inferred from the records.
//!
//! Every record of a batch is read for fields the table does not have yet (top-level, or
//! nested in a struct column); each new field's type is inferred from its values in the batch
//! (rules below, and in docs/formats.md), and the new columns go to the table, in a metadata
//! commit, before the batch is decoded. The records are then decoded by the ordinary JSON
//! decoder against the grown table, so every field lands in its own column.
//!
//! Rules: `true`/`false` is boolean; an integer is long, a number with a fraction or exponent
//! double, and a field seen with both in one batch is double; a string is string (the event
//! time field is a timestamp); an object is a struct of its fields; an array is a list of its
//! elements' merged type; a null, an empty array or an empty object says nothing yet (the
//! field becomes a column when a value with a type arrives). Once a column exists its type
//! stays: a later value of another type is a dead letter (`schema_mismatch`) naming it.

use arrow::datatypes::SchemaRef;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sluice_config::{ColumnType, FieldConfig, PipelineConfig, StructField, UnknownFields};
use sluice_kafka::RawBatch;

use crate::evolve::merge_type;
use crate::json::JsonDecoder;
use crate::schema::{column_type_of, is_sluice_column};
use crate::{Decoded, FormatError, SchemaChange};

/// The inferred type of a JSON value; `None` for a value that says nothing (null, `[]`, `{}`).
pub fn infer_type(v: &Value) -> Option<ColumnType> {
    match v {
        Value::Null => None,
        Value::Bool(_) => Some(ColumnType::Boolean),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(ColumnType::Long),
        Value::Number(_) => Some(ColumnType::Double),
        Value::String(_) => Some(ColumnType::String),
        Value::Array(items) => {
            let mut element: Option<ColumnType> = None;
            for item in items {
                if let Some(t) = infer_type(item) {
                    element = Some(match element {
                        None => t,
                        Some(e) => unite(&e, &t).unwrap_or(e),
                    });
                }
            }
            element.map(|e| ColumnType::Array(Box::new(e)))
        }
        Value::Object(map) => {
            let fields: Vec<StructField> = map
                .iter()
                .filter_map(|(k, v)| {
                    infer_type(v).map(|ty| StructField {
                        name: k.clone(),
                        ty,
                    })
                })
                .collect();
            (!fields.is_empty()).then_some(ColumnType::Struct(fields))
        }
    }
}

/// The type that holds values of both `a` and `b`, seen in the same batch before a column
/// exists: long and double make double, structs take the union of their fields; `None` when
/// the two clash (the column takes the first type; the other records become dead letters).
fn unite(a: &ColumnType, b: &ColumnType) -> Option<ColumnType> {
    match (a, b) {
        (ColumnType::Long, ColumnType::Double) | (ColumnType::Double, ColumnType::Long) => {
            Some(ColumnType::Double)
        }
        _ => match merge_type("", a, b) {
            Ok(None) => Some(a.clone()),
            Ok(Some(grown)) => Some(grown),
            Err(_) => match (a, b) {
                (ColumnType::Array(x), ColumnType::Array(y)) => {
                    unite(x, y).map(|e| ColumnType::Array(Box::new(e)))
                }
                _ => None,
            },
        },
    }
}

/// A JSON decoder whose table's columns follow the records.
#[derive(Debug)]
pub struct InferringJson {
    /// The pipeline, `schema` being the table's data columns as they are now.
    pipeline: PipelineConfig,
    decoder: JsonDecoder,
    /// Columns to add or grow before the prepared batch is decoded.
    pending: Vec<FieldConfig>,
    /// Records read for new fields (for the log).
    seen: u64,
}

impl InferringJson {
    /// A decoder of pipeline `p` (without a configured schema) into `output`, the events
    /// table's schema as it is.
    pub fn new(p: &PipelineConfig, output: SchemaRef) -> Result<Self, FormatError> {
        let mut pipeline = p.clone();
        // Every field becomes a column; a field whose values are all null has none yet.
        pipeline.unknown_fields = UnknownFields::Ignore;
        pipeline.schema = data_columns(&output, p)?;
        let decoder = JsonDecoder::new(&pipeline, output)?;
        Ok(Self {
            pipeline,
            decoder,
            pending: Vec::new(),
            seen: 0,
        })
    }

    /// Reads the batch's records for fields the table lacks.
    pub fn prepare(&mut self, raw: &RawBatch) {
        let mut found: Vec<FieldConfig> = Vec::new();
        for i in 0..raw.len() {
            let Some(bytes) = raw.value(i) else { continue };
            // The top-level fields without parsing their values; a value is parsed only when
            // its field is new or a struct or list column that may have grown. Keys with
            // escapes do not borrow: those records are parsed whole.
            match top_level(bytes) {
                Some(fields) => self.observe_raw(&fields, &mut found),
                None => {
                    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(bytes) {
                        self.observe(&map, &mut found);
                    }
                }
            }
        }
        self.seen += raw.len() as u64;
        // Keep what the table does not hold yet; a clash with an existing column is left to
        // the decoder (a dead letter).
        for f in found {
            match self.pipeline.schema.iter().find(|c| c.name == f.name) {
                None => self.pending.push(f),
                Some(c) => {
                    if let Ok(Some(ty)) = merge_type(&c.name, &c.ty, &f.ty) {
                        self.pending.push(FieldConfig { ty, ..c.clone() });
                    }
                }
            }
        }
    }

    /// [`InferringJson::observe`] over a record's top-level fields, parsing only the values of
    /// fields that may add a column or a nested field.
    fn observe_raw(&self, fields: &[(&str, &RawValue)], found: &mut Vec<FieldConfig>) {
        let mut map = Map::new();
        for (name, raw) in fields {
            let settled = self.pipeline.schema.iter().any(|c| {
                c.name == *name && !matches!(c.ty, ColumnType::Struct(_) | ColumnType::Array(_))
            });
            if settled {
                continue;
            }
            if let Ok(v) = serde_json::from_str::<Value>(raw.get()) {
                map.insert((*name).to_string(), v);
            }
        }
        if !map.is_empty() {
            self.observe(&map, found);
        }
    }

    /// Adds the types of `map`'s fields that the table (or an earlier record) lacks.
    fn observe(&self, map: &Map<String, Value>, found: &mut Vec<FieldConfig>) {
        for (name, value) in map {
            let known = self.pipeline.schema.iter().find(|c| &c.name == name);
            if let Some(c) = known
                && !matches!(c.ty, ColumnType::Struct(_) | ColumnType::Array(_))
            {
                continue;
            }
            let Some(ty) = infer_type(value) else {
                continue;
            };
            if let Some(c) = known
                && !matches!(merge_type(name, &c.ty, &ty), Ok(Some(_)))
            {
                continue;
            }
            match found.iter_mut().find(|f| &f.name == name) {
                Some(f) => {
                    if let Some(t) = unite(&f.ty, &ty) {
                        f.ty = t;
                    }
                }
                None => found.push(FieldConfig {
                    name: name.clone(),
                    ty,
                    nullable: true,
                    format: None,
                }),
            }
        }
    }

    /// The columns the table must take before the prepared batch is decoded.
    pub fn take_change(&mut self) -> Option<SchemaChange> {
        if self.pending.is_empty() {
            return None;
        }
        let columns = std::mem::take(&mut self.pending);
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        let reason = format!(
            "records of pipeline {} (after {} read) have new fields: {}",
            self.pipeline.name,
            self.seen,
            names.join(", ")
        );
        Some(SchemaChange { columns, reason })
    }

    /// Decodes into the table's new schema `output`.
    pub fn retarget(&mut self, output: SchemaRef) -> Result<(), FormatError> {
        self.pipeline.schema = data_columns(&output, &self.pipeline)?;
        self.decoder = JsonDecoder::new(&self.pipeline, output)?;
        Ok(())
    }

    /// Decodes a batch (after [`InferringJson::prepare`] and any change it asked for).
    pub fn decode(&self, raw: &RawBatch) -> Result<Decoded, FormatError> {
        if !self.pending.is_empty() {
            return Err(FormatError::UnappliedChange {
                columns: self.pending.iter().map(|c| c.name.clone()).collect(),
            });
        }
        self.decoder.decode(raw)
    }
}

/// A JSON object's top-level fields, unparsed, when its keys need no unescaping.
fn top_level(bytes: &[u8]) -> Option<Vec<(&str, &RawValue)>> {
    serde_json::from_slice::<Fields<'_>>(bytes)
        .ok()
        .map(|f| f.0)
}

/// The fields of a JSON object, in order, their values left unparsed.
struct Fields<'a>(Vec<(&'a str, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Fields<'de>, A::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(16));
                while let Some(entry) = m.next_entry::<&'de str, &'de RawValue>()? {
                    out.push(entry);
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// The data columns of an events table's schema (sluice's own left out), the event time field
/// read with the pipeline's format.
fn data_columns(output: &SchemaRef, p: &PipelineConfig) -> Result<Vec<FieldConfig>, FormatError> {
    output
        .fields()
        .iter()
        .filter(|f| !is_sluice_column(f.name()))
        .map(|f| {
            let ty = column_type_of(f.data_type()).ok_or_else(|| FormatError::MissingColumn {
                column: f.name().clone(),
            })?;
            let format = p
                .schema
                .iter()
                .find(|c| &c.name == f.name())
                .and_then(|c| c.format);
            Ok(FieldConfig {
                name: f.name().clone(),
                ty,
                nullable: f.is_nullable(),
                format,
            })
        })
        .collect()
}

/// The columns a table inferred from JSON starts with: the event time field, as a timestamp.
pub fn seed_columns(p: &PipelineConfig) -> Vec<FieldConfig> {
    match &p.event_time.field {
        Some(name) if p.event_time.format != sluice_config::TimeFormat::KafkaTimestamp => {
            vec![FieldConfig {
                name: name.clone(),
                ty: ColumnType::Timestamp,
                nullable: true,
                format: None,
            }]
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_values_infer_their_types() {
        assert_eq!(infer_type(&json!(3)), Some(ColumnType::Long));
        assert_eq!(infer_type(&json!(3.5)), Some(ColumnType::Double));
        assert_eq!(infer_type(&json!("x")), Some(ColumnType::String));
        assert_eq!(infer_type(&json!(true)), Some(ColumnType::Boolean));
        assert_eq!(infer_type(&json!(null)), None);
        assert_eq!(infer_type(&json!([])), None);
        assert_eq!(
            infer_type(&json!([1, 2.5, null])),
            Some(ColumnType::Array(Box::new(ColumnType::Double)))
        );
        assert_eq!(
            infer_type(&json!({"a": 1, "b": null, "c": {"d": "x"}})),
            Some(ColumnType::Struct(vec![
                StructField {
                    name: "a".into(),
                    ty: ColumnType::Long
                },
                StructField {
                    name: "c".into(),
                    ty: ColumnType::Struct(vec![StructField {
                        name: "d".into(),
                        ty: ColumnType::String
                    }])
                },
            ]))
        );
    }

    #[test]
    fn top_level_fields_come_unparsed_and_escaped_keys_fall_back_to_a_full_parse() {
        let fields = top_level(br#"{"a": {"b": [1, 2]}, "c": "x"}"#).unwrap();
        let got: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.get())).collect();
        assert_eq!(got, vec![("a", r#"{"b": [1, 2]}"#), ("c", r#""x""#)]);
        assert!(top_level(br#"{"a\"b": 1}"#).is_none());
        assert!(top_level(b"[1]").is_none());
    }

    #[test]
    fn a_long_and_a_double_in_one_batch_make_a_double_and_structs_unite() {
        assert_eq!(
            unite(&ColumnType::Long, &ColumnType::Double),
            Some(ColumnType::Double)
        );
        assert_eq!(unite(&ColumnType::Long, &ColumnType::String), None);
        let a = infer_type(&json!({"x": 1})).unwrap();
        let b = infer_type(&json!({"y": "s"})).unwrap();
        assert_eq!(
            unite(&a, &b),
            Some(ColumnType::Struct(vec![
                StructField {
                    name: "x".into(),
                    ty: ColumnType::Long
                },
                StructField {
                    name: "y".into(),
                    ty: ColumnType::String
                },
            ]))
        );
    }
}

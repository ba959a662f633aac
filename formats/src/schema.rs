//! Arrow schemas of the tables a pipeline writes, derived from its config.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use sluice_config::{ColumnType, PipelineConfig, StructField};

/// Columns sluice adds to every events table.
pub mod columns {
    /// Source topic.
    pub const TOPIC: &str = "_kafka_topic";
    /// Source partition.
    pub const PARTITION: &str = "_kafka_partition";
    /// Source offset.
    pub const OFFSET: &str = "_kafka_offset";
    /// Kafka record timestamp.
    pub const TIMESTAMP: &str = "_kafka_timestamp";
    /// Kafka record key.
    pub const KEY: &str = "_kafka_key";
    /// Kafka record headers (when configured).
    pub const HEADERS: &str = "_kafka_headers";
    /// The event time (docs/windows.md, "Event time"), µs UTC.
    pub const EVENT_TIME: &str = "_event_time";
    /// Calendar date of the event time in the pipeline's time zone.
    pub const EVENT_DATE: &str = "event_date";
    /// Hour (0-23) of the event time in the pipeline's time zone.
    pub const EVENT_HOUR: &str = "event_hour";
}

/// The UTC microsecond timestamp type used for every timestamp column.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The Arrow type of a configured column type (Delta's canonical Arrow mapping).
pub fn arrow_type(t: &ColumnType) -> DataType {
    match t {
        ColumnType::String => DataType::Utf8,
        ColumnType::Long => DataType::Int64,
        ColumnType::Integer => DataType::Int32,
        ColumnType::Short => DataType::Int16,
        ColumnType::Byte => DataType::Int8,
        ColumnType::Double => DataType::Float64,
        ColumnType::Float => DataType::Float32,
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Binary => DataType::Binary,
        ColumnType::Date => DataType::Date32,
        ColumnType::Timestamp => timestamp_type(),
        ColumnType::Decimal(p, s) => DataType::Decimal128(*p, *s),
        ColumnType::Struct(fields) => DataType::Struct(Fields::from(
            fields
                .iter()
                .map(|f| Field::new(&f.name, arrow_type(&f.ty), true))
                .collect::<Vec<_>>(),
        )),
        ColumnType::Array(t) => {
            DataType::List(Arc::new(Field::new("element", arrow_type(t), true)))
        }
        ColumnType::Map(k, v) => DataType::Map(
            Arc::new(Field::new(
                "key_value",
                DataType::Struct(Fields::from(vec![
                    Field::new("key", arrow_type(k), false),
                    Field::new("value", arrow_type(v), true),
                ])),
                false,
            )),
            false,
        ),
    }
}

/// The events table's schema: configured columns, then sluice's own.
pub fn events_schema(p: &PipelineConfig) -> SchemaRef {
    let mut fields: Vec<Field> = p
        .schema
        .iter()
        .map(|f| Field::new(&f.name, arrow_type(&f.ty), f.is_nullable()))
        .collect();
    fields.push(Field::new(columns::TOPIC, DataType::Utf8, false));
    fields.push(Field::new(columns::PARTITION, DataType::Int32, false));
    fields.push(Field::new(columns::OFFSET, DataType::Int64, false));
    fields.push(Field::new(columns::TIMESTAMP, timestamp_type(), true));
    fields.push(Field::new(columns::KEY, DataType::Binary, true));
    if p.include_headers {
        fields.push(Field::new(columns::HEADERS, headers_type(), true));
    }
    fields.push(Field::new(columns::EVENT_TIME, timestamp_type(), false));
    fields.push(Field::new(columns::EVENT_DATE, DataType::Date32, false));
    fields.push(Field::new(columns::EVENT_HOUR, DataType::Int32, false));
    Arc::new(Schema::new(fields))
}

/// `_kafka_headers`: a list of (key, value) pairs, in record order (keys may repeat).
pub fn headers_type() -> DataType {
    DataType::List(Arc::new(Field::new(
        "element",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, true),
            Field::new("value", DataType::Binary, true),
        ])),
        true,
    )))
}

/// The dead-letter table's schema.
pub fn dead_letter_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("pipeline", DataType::Utf8, false),
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("timestamp", timestamp_type(), true),
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, true),
        Field::new("error_kind", DataType::Utf8, false),
        Field::new("error_message", DataType::Utf8, false),
    ]))
}

/// The column type of an Arrow type read from a table (`None` for a type sluice does not
/// decode into).
pub fn column_type_of(t: &DataType) -> Option<ColumnType> {
    Some(match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnType::String,
        DataType::Int64 => ColumnType::Long,
        DataType::Int32 => ColumnType::Integer,
        DataType::Int16 => ColumnType::Short,
        DataType::Int8 => ColumnType::Byte,
        DataType::Float64 => ColumnType::Double,
        DataType::Float32 => ColumnType::Float,
        DataType::Boolean => ColumnType::Boolean,
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => ColumnType::Binary,
        DataType::Date32 => ColumnType::Date,
        // Avro enums decode as dictionaries; the table holds their symbols.
        DataType::Dictionary(_, v) => column_type_of(v)?,
        // Avro time-of-day: micro- or milliseconds after midnight.
        DataType::Time32(_) => ColumnType::Integer,
        DataType::Time64(_) => ColumnType::Long,
        DataType::Timestamp(..) => ColumnType::Timestamp,
        DataType::Decimal128(p, s) => ColumnType::Decimal(*p, *s),
        DataType::List(f) | DataType::LargeList(f) => {
            ColumnType::Array(Box::new(column_type_of(f.data_type())?))
        }
        DataType::Struct(fields) => ColumnType::Struct(
            fields
                .iter()
                .map(|f| {
                    Some(StructField {
                        name: f.name().clone(),
                        ty: column_type_of(f.data_type())?,
                    })
                })
                .collect::<Option<Vec<_>>>()?,
        ),
        DataType::Map(entry, _) => match entry.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => ColumnType::Map(
                Box::new(column_type_of(kv[0].data_type())?),
                Box::new(column_type_of(kv[1].data_type())?),
            ),
            _ => return None,
        },
        _ => return None,
    })
}

/// True for the columns sluice adds to every events table.
pub fn is_sluice_column(name: &str) -> bool {
    name.starts_with("_kafka_")
        || name == columns::EVENT_TIME
        || name == columns::EVENT_DATE
        || name == columns::EVENT_HOUR
}

//! The `_kafka_headers` column.

use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryBuilder, ListBuilder, StringBuilder, StructBuilder};
use arrow::datatypes::{DataType, Field, Fields};

use sluice_kafka::RawBatch;

/// Headers of the records at `rows`, as a list of (key, value) structs per record.
pub fn headers_array(raw: &RawBatch, rows: &[usize]) -> ArrayRef {
    let fields = Fields::from(vec![
        Field::new("key", DataType::Utf8, true),
        Field::new("value", DataType::Binary, true),
    ]);
    let item = StructBuilder::new(
        fields.clone(),
        vec![
            Box::new(StringBuilder::new()),
            Box::new(BinaryBuilder::new()),
        ],
    );
    let mut list = ListBuilder::new(item).with_field(Arc::new(Field::new(
        "element",
        DataType::Struct(fields),
        true,
    )));
    for &r in rows {
        let hs = raw.headers.as_ref().and_then(|h| h.get(r));
        if let Some(hs) = hs {
            for (k, v) in hs {
                let s = list.values();
                if let Some(b) = s.field_builder::<StringBuilder>(0) {
                    b.append_value(k)
                }
                if let Some(b) = s.field_builder::<BinaryBuilder>(1) {
                    b.append_option(v.as_deref())
                }
                s.append(true);
            }
        }
        list.append(true);
    }
    Arc::new(list.finish())
}

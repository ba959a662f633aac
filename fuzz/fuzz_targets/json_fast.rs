//! The fast JSON decoder on its own, for schemas it takes: it decodes every row or gives up,
//! never panics, and a batch it returns has one row per record.
#![no_main]

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use libfuzzer_sys::fuzz_target;
use sluice_formats::json_fast::FastJsonDecoder;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let Some((b, data)) = data.split_first() else { return };
    let schema = Arc::new(Schema::new(vec![
        Field::new("s", DataType::Utf8, b & 2 == 0),
        Field::new("l", DataType::Int64, true),
        Field::new("d", DataType::Float64, true),
        Field::new("b", DataType::Boolean, true),
        Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
        Field::new("i", DataType::Int32, true),
    ]));
    let Some(decoder) = FastJsonDecoder::new(schema, b & 1 == 1) else { return };
    let rows: Vec<&str> = data
        .split(|c| *c == b'\n')
        .take(64)
        .filter_map(|r| std::str::from_utf8(r).ok())
        .collect();
    if let Ok(batch) = decoder.decode(rows.iter().copied()) {
        assert_eq!(batch.num_rows(), rows.len());
    }
});

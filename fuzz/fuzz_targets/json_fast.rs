//! The fast JSON decoder on its own, for schemas it takes: it decodes every row or gives up,
//! never panics, and a batch it returns has one row per record.
#![no_main]

use arrow::datatypes::{DataType, Field, Schema};
use libfuzzer_sys::fuzz_target;
use sluice_formats::json_fast::FastJsonDecoder;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let Some((b, data)) = data.split_first() else {
        return;
    };
    // The types the fast path takes (event times reach it as text).
    let schema = Arc::new(Schema::new(vec![
        Field::new("s", DataType::Utf8, b & 2 == 0),
        Field::new("l", DataType::Int64, true),
        Field::new("i", DataType::Int32, true),
        Field::new("h", DataType::Int16, true),
        Field::new("b", DataType::Int8, true),
        Field::new("d", DataType::Float64, true),
        Field::new("f", DataType::Float32, true),
        Field::new("t", DataType::Boolean, true),
        Field::new("ts", DataType::Utf8, true),
    ]));
    let decoder =
        FastJsonDecoder::new(schema, b & 1 == 1).expect("the fast path takes these types");
    let rows: Vec<&str> = data
        .split(|c| *c == b'\n')
        .take(64)
        .filter_map(|r| std::str::from_utf8(r).ok())
        .collect();
    if let Ok(batch) = decoder.decode(rows.iter().copied()) {
        assert_eq!(batch.num_rows(), rows.len());
    }
});

//! Avro records in the Confluent wire format through the pipeline's decoder: every record a
//! row or a dead letter, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_formats::avro::{AvroDecoder, table_columns};
use sluice_formats::registry::SchemaType;
use std::sync::{Mutex, OnceLock};

const SCHEMA: &str = r#"{"type":"record","name":"Order","fields":[
 {"name":"id","type":"long"},
 {"name":"user","type":"string"},
 {"name":"amount","type":["null","double"],"default":null},
 {"name":"status","type":{"type":"enum","name":"S","symbols":["NEW","PAID"]}},
 {"name":"tags","type":{"type":"array","items":"string"}},
 {"name":"addr","type":["null",{"type":"record","name":"A","fields":[
   {"name":"city","type":"string"},{"name":"zip","type":"int"}]}],"default":null},
 {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
 {"name":"f","type":"float"},
 {"name":"ok","type":"boolean"}
]}"#;

/// One decoder for the whole run (making one builds an HTTP client and reads the schema):
/// it holds the writer schema of id 1 and nothing else changes in it between inputs.
fn decoder() -> &'static Mutex<AvroDecoder> {
    static DECODER: OnceLock<Mutex<AvroDecoder>> = OnceLock::new();
    DECODER.get_or_init(|| {
        let r = sluice_fuzz::registered(SchemaType::Avro, SCHEMA, table_columns);
        Mutex::new(AvroDecoder::new(&r.pipeline, r.registry, &r.latest, r.output).expect("decoder"))
    })
}

fuzz_target!(|data: &[u8]| {
    let mut d = decoder().lock().unwrap_or_else(|e| e.into_inner());
    let raw = sluice_fuzz::framed_records(data, &[0, 0, 0, 0, 1]);
    let out = d.decode(&raw).expect("a batch decodes");
    let rows = out.events.as_ref().map_or(0, |e| e.num_rows());
    assert_eq!(
        rows + out.dead.len(),
        raw.len(),
        "a record is neither a row nor a dead letter"
    );
});

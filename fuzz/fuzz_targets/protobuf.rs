//! Protobuf records in the Confluent wire format through the pipeline's decoder: every
//! record a row or a dead letter, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_formats::protobuf::{ProtobufDecoder, table_columns};
use sluice_formats::registry::SchemaType;
use std::sync::{Mutex, OnceLock};

const PROTO: &str = r#"
syntax = "proto3";
package sluice.fuzz;
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";
message Order {
  int64 id = 1;
  string user = 2;
  enum Status { NEW = 0; PAID = 1; }
  Status status = 3;
  google.protobuf.Timestamp ts = 4;
  message Address { string city = 1; int32 zip = 2; }
  Address address = 5;
  repeated string tags = 6;
  sint32 qty = 7;
  map<string, int64> counts = 8;
  double amount = 9;
  bytes raw = 10;
  google.protobuf.DoubleValue maybe = 11;
  fixed64 f64 = 12;
  bool ok = 13;
}
message Other { string x = 1; }
"#;

/// One decoder for the whole run (making one builds an HTTP client and reads the schema):
/// it holds the writer schema of id 1 and nothing else changes in it between inputs.
fn decoder() -> &'static Mutex<ProtobufDecoder> {
    static DECODER: OnceLock<Mutex<ProtobufDecoder>> = OnceLock::new();
    DECODER.get_or_init(|| {
        let r = sluice_fuzz::registered(SchemaType::Protobuf, PROTO, table_columns);
        Mutex::new(
            ProtobufDecoder::new(&r.pipeline, r.registry, &r.latest, r.output).expect("decoder"),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let mut d = decoder().lock().unwrap_or_else(|e| e.into_inner());
    let raw = sluice_fuzz::framed_records(data, &[0, 0, 0, 0, 1, 0]);
    let out = d.decode(&raw).expect("a batch decodes");
    let rows = out.events.as_ref().map_or(0, |e| e.num_rows());
    assert_eq!(
        rows + out.dead.len(),
        raw.len(),
        "a record is neither a row nor a dead letter"
    );
});

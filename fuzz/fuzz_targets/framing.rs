//! The Confluent wire format's framing as the Avro and Protobuf decoders read it: a schema
//! id behind the magic byte, Protobuf's message indexes, and what is left as the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_formats::{avro, protobuf};

fuzz_target!(|data: &[u8]| {
    let id = avro::schema_id(data);
    if id.is_some() {
        assert!(
            data.len() >= 5 && data[0] == 0,
            "an id read from a value without a header"
        );
    }
    if let Some((pid, indexes, body)) = protobuf::frame(data) {
        assert_eq!(Some(pid), id, "the two framings disagree on the schema id");
        assert!(
            body.len() + 5 <= data.len(),
            "the body is longer than the value"
        );
        assert!(data.ends_with(body), "the body is not the value's tail");
        assert!(
            indexes.len() <= data.len(),
            "more message indexes than bytes"
        );
    }
});

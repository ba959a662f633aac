//! JSON records through the pipeline's decoder, fast path against arrow-json: both must give
//! the same rows and the same dead letters, and neither may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_formats::JsonDecoder;
use sluice_formats::schema::events_schema;

const SCHEMA: &str = r#"schema = [
  { name = "user_id", type = "string", nullable = false },
  { name = "amount", type = "double" },
  { name = "n", type = "long" },
  { name = "ok", type = "boolean" },
  { name = "ts", type = "timestamp" },
]
event_time = { field = "ts", format = "rfc3339" }"#;

fuzz_target!(|data: &[u8]| {
    let (strict, data) = match data.split_first() {
        Some((b, rest)) => (b & 1 == 1, rest),
        None => return,
    };
    let extra = if strict {
        "unknown_fields = \"reject\""
    } else {
        ""
    };
    let p = sluice_fuzz::pipeline(&format!("{SCHEMA}\n{extra}"));
    let raw = sluice_fuzz::records(data);
    let mut fast = JsonDecoder::new(&p, events_schema(&p)).expect("decoder");
    fast.set_fast_path(true);
    let mut tape = JsonDecoder::new(&p, events_schema(&p)).expect("decoder");
    tape.set_fast_path(false);
    let a = fast.decode(&raw).expect("a batch decodes");
    let b = tape.decode(&raw).expect("a batch decodes");
    let dead = |d: &sluice_formats::Decoded| -> Vec<(usize, &'static str)> {
        d.dead.iter().map(|x| (x.index, x.kind.as_str())).collect()
    };
    assert_eq!(dead(&a), dead(&b), "dead letters differ");
    assert_eq!(a.event_indices, b.event_indices, "decoded records differ");
    assert_eq!(a.events, b.events, "decoded rows differ");
    let rows = a.events.as_ref().map_or(0, |e| e.num_rows());
    assert_eq!(
        rows + a.dead.len(),
        raw.len(),
        "a record is neither a row nor a dead letter"
    );
});

//! JSON without a configured schema: columns inferred from the records, the table grown as
//! the pipeline grows it, then decoded. Never a panic; every record a row or a dead letter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_formats::infer::{InferringJson, seed_columns};
use sluice_formats::schema::events_schema;

fuzz_target!(|data: &[u8]| {
    let p = sluice_fuzz::pipeline("event_time = { field = \"ts\", format = \"rfc3339\" }");
    let mut table = p.with_schema(seed_columns(&p)).expect("the seed columns");
    let mut decoder = InferringJson::new(&p, events_schema(&table)).expect("decoder");
    let raw = sluice_fuzz::records(data);
    decoder.prepare(&raw);
    if let Some(change) = decoder.take_change() {
        // As the pipeline does: the table takes the new and grown columns, then the decoder
        // decodes into the table's new schema.
        let mut columns = table.schema.clone();
        for c in change.columns {
            match columns.iter_mut().find(|x| x.name == c.name) {
                Some(old) => *old = c,
                None => columns.push(c),
            }
        }
        // A change the table's rules refuse would stop the pipeline on a record's content.
        table = match table.with_schema(columns) {
            Ok(t) => t,
            Err(problems) => panic!("an inferred change is refused: {problems:?}"),
        };
        decoder.retarget(events_schema(&table)).expect("retarget");
    }
    let d = decoder.decode(&raw).expect("a batch decodes");
    let rows = d.events.as_ref().map_or(0, |e| e.num_rows());
    assert_eq!(
        rows + d.dead.len(),
        raw.len(),
        "a record is neither a row nor a dead letter"
    );
});

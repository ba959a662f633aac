use super::*;
use crate::schema::events_schema;
use arrow::array::{
    Date32Array, Float64Array, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use sluice_config::Config;
use sluice_kafka::RawBatchBuilder;

/// The test pipeline's config with these schema fields (TOML inline tables, one per line)
/// and `extra` keys.
fn pipeline_with(fields: &[&str], extra: &str) -> PipelineConfig {
    let fields = fields.join(",\n  ");
    let text = format!(
        r#"
[kafka]
brokers = "x:1"
[lake]
root = "/tmp/x"
[[pipeline]]
name = "p"
topics = ["t"]
table = "events"
schema = [
  {fields},
]
event_time = {{ field = "ts", format = "rfc3339" }}
{extra}
"#
    );
    Config::from_toml_with_env(
        &text,
        std::path::Path::new("t.toml"),
        Vec::<(String, String)>::new(),
    )
    .unwrap()
    .pipelines
    .remove(0)
}

fn pipeline(extra: &str) -> PipelineConfig {
    pipeline_with(
        &[
            r#"{ name = "user_id", type = "string", nullable = false }"#,
            r#"{ name = "amount", type = "double" }"#,
            r#"{ name = "n", type = "long" }"#,
            r#"{ name = "ts", type = "timestamp" }"#,
            r#"{ name = "tags", type = "array<string>" }"#,
            r#"{ name = "geo", type = "struct<lat: double, lon: double>" }"#,
        ],
        extra,
    )
}

fn raw(values: &[Option<&[u8]>]) -> RawBatch {
    let topic: Arc<str> = Arc::from("t");
    let mut b = RawBatchBuilder::new(values.len(), false);
    for (i, v) in values.iter().enumerate() {
        b.push(
            &topic,
            0,
            i as i64,
            Some(1_700_000_000_000 + i as i64),
            0,
            Some(b"k"),
            *v,
            Vec::new,
        );
    }
    b.finish()
}

fn decoder(p: &PipelineConfig) -> JsonDecoder {
    JsonDecoder::new(p, events_schema(p)).unwrap()
}

#[test]
fn decodes_with_coercions_nested_types_and_kafka_columns() {
    let p = pipeline("");
    let d = decoder(&p);
    let r = raw(&[
        Some(br#"{"user_id": 42, "amount": 3, "n": 7, "ts": "2026-01-02T03:04:05.678Z", "tags": ["a","b"], "geo": {"lat": 1.5, "lon": 2}, "extra": true}"#),
        Some(br#"{"user_id": "u2", "ts": 1767323045678}"#),
    ]);
    let out = d.decode(&r).unwrap();
    assert!(out.dead.is_empty(), "{:?}", out.dead);
    let b = out.events.unwrap();
    assert_eq!(b.num_rows(), 2);
    let col = |name: &str| b.column_by_name(name).unwrap().clone();
    let users = col("user_id");
    let users = users.as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(users.value(0), "42", "numbers coerce into string columns");
    assert_eq!(
        col("amount")
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .value(0),
        3.0,
        "integers into doubles"
    );
    let ts = col("ts");
    let ts = ts
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .unwrap();
    assert_eq!(ts.value(0), 1_767_323_045_678_000);
    assert_eq!(
        ts.value(1),
        1_767_323_045_678_000,
        "epoch millis into a timestamp column"
    );
    let et = col("_event_time");
    assert_eq!(
        et.as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap()
            .value(0),
        1_767_323_045_678_000
    );
    assert_eq!(
        col("_kafka_offset")
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .values()
            .to_vec(),
        vec![0, 1]
    );
    let date = col("event_date");
    assert_eq!(
        date.as_any()
            .downcast_ref::<Date32Array>()
            .unwrap()
            .value(0),
        20455
    ); // 2026-01-02
    assert_eq!(
        col("event_hour")
            .as_any()
            .downcast_ref::<Int32Array>()
            .unwrap()
            .value(0),
        3
    );
    assert_eq!(out.event_indices, vec![0, 1]);
}

#[test]
fn every_kind_of_bad_record_is_a_dead_letter_and_good_neighbours_survive() {
    let p = pipeline("max_record_size = \"200B\"\nunknown_fields = \"reject\"");
    let d = decoder(&p);
    let big = format!(
        r#"{{"user_id":"u","ts":"2026-01-01T00:00:00Z","pad":"{}"}}"#,
        "x".repeat(300)
    );
    let values: Vec<Option<&[u8]>> = vec![
        Some(br#"{"user_id":"ok0","ts":"2026-01-01T00:00:00Z"}"#),
        Some(b"{not json"),                                     // malformed
        Some(br#"{"user_id":"ok2","ts":"2026-01-01T00:00:00Z"}"#),
        Some(br#"{"user_id":"u","n":"seven","ts":"2026-01-01T00:00:00Z"}"#), // wrong type
        Some(br#"{"n": 1, "ts":"2026-01-01T00:00:00Z"}"#),     // missing non-nullable
        Some(br#"{"user_id":"u","ts":"yesterday"}"#),          // bad event time
        Some(br#"{"user_id":"u"}"#),                           // missing event time
        Some(big.as_bytes()),                                  // oversized
        Some(b""),                                             // empty
        None,                                                  // tombstone
        Some(b"\xff\xfe{}"),                                   // not UTF-8
        Some(br#"{"user_id":"u","ts":"2026-01-01T00:00:00Z","bogus":1}"#), // unknown field (reject)
        Some(br#"[1,2,3]"#),                                   // not an object
        Some(br#"{"user_id":"a","ts":"2026-01-01T00:00:00Z"}{"user_id":"b","ts":"2026-01-01T00:00:00Z"}"#), // two values
        Some(br#"{"user_id":"ok14","ts":"2026-01-01T00:00:00Z"}"#),
    ];
    let out = d.decode(&raw(&values)).unwrap();
    let kinds: Vec<(usize, &str)> = out
        .dead
        .iter()
        .map(|x| (x.index, x.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (1, "malformed_json"),
            (3, "schema_mismatch"),
            (4, "schema_mismatch"),
            (5, "invalid_event_time"),
            (6, "invalid_event_time"),
            (7, "oversized"),
            (8, "empty_value"),
            (9, "empty_value"),
            (10, "invalid_utf8"),
            (11, "schema_mismatch"),
            (12, "malformed_json"),
            (13, "malformed_json"),
        ]
    );
    assert!(out.dead.iter().all(|x| !x.message.is_empty()));
    assert_eq!(out.event_indices, vec![0, 2, 14]);
    let b = out.events.unwrap();
    let users = b.column_by_name("user_id").unwrap();
    let users = users.as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(
        (users.value(0), users.value(1), users.value(2)),
        ("ok0", "ok2", "ok14")
    );
}

#[test]
fn a_truncated_record_does_not_swallow_the_next_one() {
    let p = pipeline("");
    let d = decoder(&p);
    let out = d
        .decode(&raw(&[
            Some(br#"{"user_id":"a","ts":"2026-01-01T00:00:00Z""#),
            Some(br#","n":1}"#),
            Some(br#"{"user_id":"c","ts":"2026-01-01T00:00:00Z"}"#),
        ]))
        .unwrap();
    assert_eq!(
        out.dead.iter().map(|x| x.index).collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert_eq!(out.event_indices, vec![2]);
}

#[test]
fn naive_times_are_read_in_the_pipeline_time_zone_and_dates_follow_it() {
    let p = pipeline("timezone = \"America/New_York\"");
    let d = decoder(&p);
    // 23:30 local on Jan 1 is 04:30 UTC on Jan 2; the event_date must be Jan 1.
    let out = d
        .decode(&raw(&[
            Some(br#"{"user_id":"a","ts":"2026-01-01T23:30:00"}"#),
            Some(br#"{"user_id":"b","ts":"2026-01-02T00:30:00-05:00"}"#),
        ]))
        .unwrap();
    let b = out.events.unwrap();
    let et = b.column_by_name("_event_time").unwrap();
    let et = et
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .unwrap();
    assert_eq!(
        et.value(0),
        chrono::DateTime::parse_from_rfc3339("2026-01-02T04:30:00Z")
            .unwrap()
            .timestamp_micros()
    );
    let dates = b.column_by_name("event_date").unwrap();
    let dates = dates.as_any().downcast_ref::<Date32Array>().unwrap();
    assert_eq!(dates.value(0), 20454, "2026-01-01 in New York");
    assert_eq!(dates.value(1), 20455, "2026-01-02 in New York");
    let hours = b.column_by_name("event_hour").unwrap();
    assert_eq!(
        hours
            .as_any()
            .downcast_ref::<Int32Array>()
            .unwrap()
            .values()
            .to_vec(),
        vec![23, 0]
    );
}

#[test]
fn parse_time_handles_epochs_and_negative_times() {
    let utc = chrono_tz::UTC;
    assert_eq!(
        parse_time("1000", TimeFormat::EpochSeconds, utc).unwrap(),
        1_000_000_000
    );
    assert_eq!(
        parse_time("-1500", TimeFormat::EpochMillis, utc).unwrap(),
        -1_500_000
    );
    assert_eq!(
        parse_time("1969-12-31T23:59:59Z", TimeFormat::Rfc3339, utc).unwrap(),
        -1_000_000
    );
    assert!(parse_time("2026-13-01T00:00:00Z", TimeFormat::Rfc3339, utc).is_err());
}

fn flat_pipeline(extra: &str) -> PipelineConfig {
    pipeline_with(
        &[
            r#"{ name = "user_id", type = "string", nullable = false }"#,
            r#"{ name = "amount", type = "double" }"#,
            r#"{ name = "n", type = "long" }"#,
            r#"{ name = "ok", type = "boolean" }"#,
            r#"{ name = "seen", type = "timestamp", format = "epoch_millis" }"#,
            r#"{ name = "ts", type = "timestamp" }"#,
        ],
        extra,
    )
}

/// Values for the flat pipeline: good records, records only arrow-json reads (coercions), and
/// every kind of dead letter.
const FLAT_VALUES: &[&[u8]] = &[
    br#"{"user_id":"a","amount":1.5,"n":3,"ok":true,"seen":1700000000000,"ts":"2026-01-01T00:00:00Z"}"#,
    br#"{"ts":"2026-03-29T01:30:00+01:00","user_id":"b\u00e9","extra":{"x":[1]}}"#,
    br#"{"user_id":"c","n":null,"ts":"2026-01-01 12:00:00"}"#,
    br#"{"user_id":"d","amount":"2.5","ts":"2026-01-01T00:00:00Z"}"#,
    br#"{"user_id":"e","n":4.0,"ts":"2026-01-01T00:00:00Z"}"#,
    br#"{"user_id":"f","seen":"yesterday","ts":"2026-01-01T00:00:00Z"}"#,
    br#"{"user_id":"g","ts":"not a time"}"#,
    br#"{"user_id":"h"}"#,
    br#"{"n":1,"ts":"2026-01-01T00:00:00Z"}"#,
    br#"{"user_id":"i","ts":"2026-01-01T00:00:00Z","user_id":"j"}"#,
    br#"{"user_id":"k","ts":"2026-01-01T00:00:00Z"} x"#,
    br#"{"user_id":"l","ts":"2026-01-01T00:00:00Z""#,
    br#"{"user_id":"m","n":"seven","ts":"2026-01-01T00:00:00Z"}"#,
    br#"[1]"#,
    b"",
    b"\xff{}",
    br#"{"user_id":"n","ts":"2026-01-01T00:00:00Z","pad":"0123456789012345678901234567890123456789012345678901234567890123456789"}"#,
];

proptest::proptest! {
    /// The fast path and arrow-json make the same rows and the same dead letters from any
    /// batch, whether the fast path takes it or gives up on it.
    #[test]
    fn fast_and_general_decoders_agree_on_every_batch(
        picks in proptest::collection::vec(0usize..FLAT_VALUES.len() + 1, 1..12),
        reject in proptest::bool::ANY,
    ) {
        let extra = if reject {
            "max_record_size = \"120B\"\nunknown_fields = \"reject\""
        } else {
            "max_record_size = \"120B\""
        };
        let p = flat_pipeline(extra);
        let fast = decoder(&p);
        proptest::prop_assert!(fast.has_fast_path());
        let mut general = decoder(&p);
        general.set_fast_path(false);
        let values: Vec<Option<&[u8]>> = picks.iter().map(|&i| FLAT_VALUES.get(i).copied()).collect();
        let batch = raw(&values);
        let (a, b) = (fast.decode(&batch).unwrap(), general.decode(&batch).unwrap());
        proptest::prop_assert_eq!(a.events, b.events);
        proptest::prop_assert_eq!(a.event_indices, b.event_indices);
        proptest::prop_assert_eq!(a.dead, b.dead);
    }
}

#[test]
fn only_flat_schemas_get_the_fast_path() {
    assert!(decoder(&flat_pipeline("")).has_fast_path());
    assert!(!decoder(&pipeline("")).has_fast_path());
}

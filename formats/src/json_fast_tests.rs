use super::*;
use arrow::array::{Array, AsArray};
use arrow::datatypes::{Field, Schema};
use arrow_json::reader::ReaderBuilder;
use proptest::prelude::*;

/// Every type the fast decoder reads; `s` is required.
fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("s", DataType::Utf8, false),
        Field::new("sn", DataType::Utf8, true),
        Field::new("l", DataType::Int64, true),
        Field::new("i", DataType::Int32, true),
        Field::new("h", DataType::Int16, true),
        Field::new("b", DataType::Int8, true),
        Field::new("d", DataType::Float64, true),
        Field::new("f", DataType::Float32, true),
        Field::new("t", DataType::Boolean, true),
        Field::new("ts", DataType::Utf8, true),
    ]))
}

/// arrow-json's reading of the same rows, as the pipeline's general path configures it.
fn arrow_json(schema: &SchemaRef, strict: bool, rows: &[String]) -> Result<RecordBatch, String> {
    let mut d = ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.len() + 1)
        .with_coerce_primitive(true)
        .with_strict_mode(strict)
        .build_decoder()
        .map_err(|e| e.to_string())?;
    for r in rows {
        let n = d.decode(r.as_bytes()).map_err(|e| e.to_string())?;
        if n != r.len() {
            return Err("not all bytes read".into());
        }
    }
    if d.has_partial_record() || d.len() != rows.len() {
        return Err("not one value per row".into());
    }
    d.flush()
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "no rows".into())
}

fn fast(strict: bool, rows: &[String]) -> Result<RecordBatch, GiveUp> {
    FastJsonDecoder::new(schema(), strict)
        .expect("a flat schema")
        .decode(rows.iter().map(String::as_str))
}

#[test]
fn reads_a_typical_batch_exactly_like_arrow_json() {
    let rows: Vec<String> = [
        r#"{"s":"a","sn":"x","l":-9007199254740993,"i":2147483647,"h":-32768,"b":127,"d":1.5e-3,"f":0.1,"t":true,"ts":"2026-01-01T00:00:00Z"}"#,
        r#" { "t" : false , "s" : "b\"q\u00e9\ud83d\ude00\n" , "extra" : [1, {"x": null}], "d": 7 } "#,
        r#"{"s":"c","sn":12.50,"ts":1700000000000,"l":null}"#,
        r#"{"s":"d","sn":true,"ts":false}"#,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let got = fast(false, &rows).expect("accepted");
    assert_eq!(
        got,
        arrow_json(&schema(), false, &rows).expect("arrow reads it")
    );
    let s = got.column(0).as_string::<i32>();
    assert_eq!(s.value(1), "b\"q\u{e9}\u{1F600}\n");
    let sn = got.column(1).as_string::<i32>();
    assert_eq!((sn.value(2), sn.value(3)), ("12.50", "true"));
    assert_eq!(got.column(9).as_string::<i32>().value(2), "1700000000000");
    assert_eq!(got.column(2).null_count(), 3);
}

#[test]
fn gives_up_on_what_it_does_not_handle() {
    for (row, why) in [
        (r#"{"s":"a","s":"b"}"#, "duplicate key"),
        (r#"{"sn":"a"}"#, "required field missing"),
        (r#"{"s":null}"#, "required field null"),
        (r#"{"s":"a","i":"5"}"#, "string into an integer"),
        (r#"{"s":"a","i":1.0}"#, "fraction into an integer"),
        (r#"{"s":"a","i":2147483648}"#, "integer out of range"),
        (r#"{"s":"a","b":128}"#, "byte out of range"),
        (r#"{"s":"a","i":01}"#, "leading zero"),
        (r#"{"s":"a","d":1.}"#, "no fraction digits"),
        (r#"{"s":"a","t":1}"#, "number into a boolean"),
        (r#"{"s":{"x":1}}"#, "object into text"),
        (r#"{"s":"\ud800"}"#, "lone surrogate"),
        (r#"{"s":"\q"}"#, "bad escape"),
        (r#"{"s\u0041":"a","s":"b"}"#, "escaped key"),
        (r#"{"s":"a"} {"s":"b"}"#, "two objects"),
        (r#"{"s":"a",}"#, "trailing comma"),
        (r#"{"s":"a""#, "truncated"),
        (r#"{"s":"a","x":[1,}"#, "bad unknown value"),
    ] {
        assert!(
            fast(false, &[row.to_string()]).is_err(),
            "{why}: {row} was accepted"
        );
    }
    assert!(fast(true, &[r#"{"s":"a","x":1}"#.to_string()]).is_err());
    assert!(fast(false, &[r#"{"s":"a","x":1}"#.to_string()]).is_ok());
}

#[test]
fn schemas_with_other_types_have_no_fast_path() {
    let nested = Arc::new(Schema::new(vec![Field::new(
        "l",
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        true,
    )]));
    assert!(FastJsonDecoder::new(nested, false).is_none());
    assert!(FastJsonDecoder::new(schema(), false).is_some());
}

// Fragments valid and invalid for each kind of value, to build records from.
const ANY_VALUE: &[&str] = &[
    r#""abc""#,
    r#""""#,
    r#""a\"b\\c\/""#,
    r#""\u00e9\n\t\b\f\r""#,
    r#""\ud83d\ude00""#,
    r#""\ud83d""#,
    r#""\ude00x""#,
    r#""\x""#,
    "\"é😀 raw\ttab\"",
    r#""123""#,
    "0",
    "-0",
    "12",
    "-7",
    "1.5",
    "1e3",
    "1E+2",
    "-2.5e-3",
    "01",
    "1.",
    "-",
    ".5",
    "1.2.3",
    "99999999999",
    "9223372036854775808",
    "1e400",
    "127",
    "128",
    "-129",
    "32768",
    "2147483648",
    "true",
    "false",
    "null",
    "nul",
    "tru",
    "{}",
    "[]",
    r#"{"a":[1,{"b":null}],"c":"d"}"#,
    "[1,2",
    r#"{"a" 1}"#,
    "[true, false, null, \"x\"]",
];
const KEYS: &[&str] = &[
    "s", "sn", "l", "i", "h", "b", "d", "f", "t", "ts", "extra", "S", r"s\u0041",
];
const SPACE: &[&str] = &["", " ", "\n", " \t\r\n", "\u{c}"];
const TAIL: &[&str] = &["", " ", "\n", "x", "{}", ","];

/// One generated record: fields as (key, value, whitespace, valid?) where a valid value is one
/// the key's column accepts and the others come from every fragment; keys are kept distinct
/// and `s` (required) comes first unless `dup` or `drop_s` say otherwise.
#[derive(Clone, Debug)]
struct Shape {
    fields: Vec<(usize, usize, usize, bool)>,
    lead: usize,
    tail: usize,
    dup: bool,
    drop_s: bool,
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        prop::collection::vec(
            (
                0usize..64,
                0usize..64,
                0usize..4,
                prop::bool::weighted(0.85),
            ),
            0..10,
        ),
        0usize..40,
        0usize..40,
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(fields, lead, tail, dup, drop_s)| Shape {
            fields,
            lead,
            tail,
            dup,
            drop_s,
        })
}

fn record(shape: &Shape) -> String {
    let mut fields = shape.fields.clone();
    if !shape.drop_s {
        fields.insert(0, (0, 0, 0, true));
    }
    let mut seen = std::collections::HashSet::new();
    if !shape.dup {
        fields.retain(|f| seen.insert(f.0 % KEYS.len()));
    }
    // Mostly plain whitespace and nothing after the object; sometimes the odd ones.
    let lead = if shape.lead < SPACE.len() {
        SPACE[shape.lead]
    } else {
        " "
    };
    let tail = if shape.tail < TAIL.len() {
        TAIL[shape.tail]
    } else {
        ""
    };
    let mut r = String::from(lead);
    r.push('{');
    for (n, &(k, v, w, valid)) in fields.iter().enumerate() {
        if n > 0 {
            r.push(',');
        }
        let space = SPACE[w % SPACE.len()];
        let k = k % KEYS.len();
        r.push_str(space);
        r.push('"');
        r.push_str(KEYS[k]);
        r.push('"');
        r.push_str(space);
        r.push(':');
        r.push_str(space);
        r.push_str(if valid {
            valid_value(k, v)
        } else {
            ANY_VALUE[v % ANY_VALUE.len()]
        });
        r.push_str(space);
    }
    r.push('}');
    r.push_str(tail);
    r
}

/// A value every decoder must accept for the column.
fn valid_value(col: usize, pick: usize) -> &'static str {
    const TEXTS: &[&str] = &[
        r#""abc""#,
        r#""a\"b\u00e9\ud83d\ude00""#,
        "\"\"",
        "-1.5e3",
        "0",
        "true",
    ];
    let pool: Vec<&'static str> = match col {
        0 => TEXTS.to_vec(),
        1 | 9 => [TEXTS, &["null"]].concat(),
        2..=5 => vec!["0", "-0", "12", "-100", "127", "-128", "null"],
        6 | 7 => vec![
            "0",
            "-0",
            "1.5",
            "-2.5e-3",
            "1E+2",
            "12345678901234567890",
            "null",
        ],
        8 => vec!["true", "false", "null"],
        _ => [0, 3, 10, 15, 33, 36, 37, 38, 41]
            .iter()
            .map(|&i| ANY_VALUE[i])
            .collect(),
    };
    pool[pick % pool.len()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever the fast decoder accepts, it reads exactly as arrow-json does.
    #[test]
    fn accepted_rows_equal_arrow_json(
        shapes in prop::collection::vec(shape(), 1..4),
        strict in any::<bool>(),
    ) {
        let rows: Vec<String> = shapes.iter().map(record).collect();
        if let Ok(batch) = fast(strict, &rows) {
            let reference = arrow_json(&schema(), strict, &rows);
            prop_assert_eq!(Ok(batch), reference, "rows: {:?}", rows);
        }
    }

    /// Well-formed records of the schema, in any field order, with unknown fields and
    /// whitespace, are all taken by the fast decoder.
    #[test]
    fn well_formed_rows_are_accepted(
        rows in prop::collection::vec(
            (Just((0..11usize).collect::<Vec<_>>()).prop_shuffle(), prop::collection::vec(0usize..16, 11), prop::collection::vec(any::<bool>(), 11), 0usize..4),
            1..6,
        ),
    ) {
        let rows: Vec<String> = rows
            .iter()
            .map(|(order, picks, keep, space)| {
                let sp = SPACE[space % 4];
                let fields: Vec<String> = order
                    .iter()
                    .filter(|&&c| c == 0 || keep[c])
                    .map(|&c| {
                        let key = if c == 10 { "extra" } else { KEYS[c] };
                        format!("{sp}\"{key}\"{sp}:{sp}{}", valid_value(c, picks[c]))
                    })
                    .collect();
                format!("{sp}{{{}}}{sp}", fields.join(","))
            })
            .collect();
        let got = fast(false, &rows);
        prop_assert!(got.is_ok(), "gave up ({:?}) on {:?}", got.err(), rows);
        prop_assert_eq!(got.ok(), arrow_json(&schema(), false, &rows).ok());
    }
}

//! What the fuzz targets share: a fuzzer's bytes as a batch of Kafka records, and the
//! pipelines the decoders are built for.

use std::sync::Arc;

use sluice_config::{Config, FieldConfig, PipelineConfig, SchemaRegistryConfig};
use sluice_formats::FormatError;
use sluice_formats::registry::{RegisteredSchema, Registry, SchemaType};
use sluice_kafka::{RawBatch, RawBatchBuilder};

/// The fuzzer's bytes as records: one record per line (`\n`), at most 64; an empty line is a
/// record without a value (a tombstone).
pub fn records(data: &[u8]) -> RawBatch {
    records_split(data, b'\n')
}

/// The fuzzer's bytes as records separated by `sep`, at most 64.
pub fn records_split(data: &[u8], sep: u8) -> RawBatch {
    let values: Vec<Option<&[u8]>> = data
        .split(|b| *b == sep)
        .take(64)
        .map(|v| (!v.is_empty()).then_some(v))
        .collect();
    batch(&values)
}

/// Records with these values on three partitions of topic `t`, keyed `k`.
fn batch(values: &[Option<&[u8]>]) -> RawBatch {
    let topic: Arc<str> = Arc::from("t");
    let mut b = RawBatchBuilder::new(values.len(), false);
    for (i, v) in values.iter().enumerate() {
        b.push(
            &topic,
            (i % 3) as i32,
            i as i64,
            Some(1_700_000_000_000 + i as i64),
            0,
            Some(b"k".as_slice()),
            *v,
            Vec::new,
        );
    }
    b.finish()
}

/// The first pipeline of a config whose `[[pipeline]]` section has `body` after its name,
/// topics and table.
pub fn pipeline(body: &str) -> PipelineConfig {
    let text = format!(
        "[kafka]\nbrokers = \"x:1\"\n[lake]\nroot = \"/tmp/sluice-fuzz\"\n\
         [[pipeline]]\nname = \"p\"\ntopics = [\"t\"]\ntable = \"events\"\n{body}\n"
    );
    match Config::from_toml_with_env(
        &text,
        std::path::Path::new("fuzz.toml"),
        Vec::<(String, String)>::new(),
    ) {
        Ok(mut c) => c.pipelines.remove(0),
        Err(e) => panic!("the fuzz pipeline's config is refused: {e}"),
    }
}

/// The fuzzer's bytes as length-prefixed records, at most 64: a length byte `n`, then
/// `n & 0x7f` bytes of value (none: a tombstone). With `header` and `n`'s top bit clear, the
/// value is prefixed with `header` (a valid Confluent frame); with it set, the bytes are the
/// whole value, so framing errors are fuzzed too.
pub fn framed_records(data: &[u8], header: &[u8]) -> RawBatch {
    let mut values: Vec<Option<Vec<u8>>> = Vec::new();
    let mut rest = data;
    while let Some((n, tail)) = rest.split_first() {
        if values.len() == 64 {
            break;
        }
        let len = usize::from(n & 0x7f).min(tail.len());
        let (body, next) = tail.split_at(len);
        rest = next;
        values.push(match (len, n & 0x80 == 0) {
            (0, _) => None,
            (_, true) => Some([header, body].concat()),
            (_, false) => Some(body.to_vec()),
        });
    }
    let values: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
    batch(&values)
}

/// A pipeline whose table was made from the registered schema `latest` (id 1) by `columns`,
/// its table's schema, and a registry client that is never asked: decoders read the writer
/// schemas they already hold.
pub struct Registered {
    /// The pipeline with the schema's columns.
    pub pipeline: PipelineConfig,
    /// The events table's schema.
    pub output: arrow::datatypes::SchemaRef,
    /// The schema (id 1).
    pub latest: RegisteredSchema,
    /// A client of an address nothing listens on.
    pub registry: Arc<Registry>,
}

/// [`Registered`] for a schema of `schema_type` with text `text`.
pub fn registered(
    schema_type: SchemaType,
    text: &str,
    columns: fn(&str, &RegisteredSchema) -> Result<Vec<FieldConfig>, FormatError>,
) -> Registered {
    let latest = RegisteredSchema {
        id: 1,
        schema_type,
        text: text.to_string(),
    };
    let p = PipelineConfig {
        name: "p".into(),
        topics: vec!["t".into()],
        table: "t".into(),
        ..Default::default()
    };
    let cols = columns("t-value", &latest).expect("the schema makes columns");
    let pipeline = p.with_schema(cols).expect("the columns make a table");
    let output = sluice_formats::schema::events_schema(&pipeline);
    let registry = Registry::new(&SchemaRegistryConfig {
        url: "http://127.0.0.1:9".into(),
        ..Default::default()
    })
    .expect("registry client");
    Registered {
        pipeline,
        output,
        latest,
        registry: Arc::new(registry),
    }
}

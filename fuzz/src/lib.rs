//! What the fuzz targets share: a fuzzer's bytes as a batch of Kafka records, and the
//! pipelines the decoders are built for.

use std::sync::Arc;

use sluice_config::{Config, PipelineConfig};
use sluice_kafka::{RawBatch, RawBatchBuilder};

/// The fuzzer's bytes as records: one record per line (`\n`), at most 64; an empty line is a
/// record without a value (a tombstone).
pub fn records(data: &[u8]) -> RawBatch {
    records_split(data, b'\n')
}

/// The fuzzer's bytes as records separated by `sep`, at most 64.
pub fn records_split(data: &[u8], sep: u8) -> RawBatch {
    let topic: Arc<str> = Arc::from("t");
    let parts: Vec<&[u8]> = data.split(|b| *b == sep).take(64).collect();
    let mut b = RawBatchBuilder::new(parts.len(), false);
    for (i, v) in parts.iter().enumerate() {
        let value = (!v.is_empty()).then_some(*v);
        b.push(
            &topic,
            (i % 3) as i32,
            i as i64,
            Some(1_700_000_000_000 + i as i64),
            0,
            Some(b"k".as_slice()),
            value,
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
    let topic: Arc<str> = Arc::from("t");
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
    let mut b = RawBatchBuilder::new(values.len(), false);
    for (i, v) in values.iter().enumerate() {
        b.push(
            &topic,
            (i % 3) as i32,
            i as i64,
            Some(1_700_000_000_000 + i as i64),
            0,
            Some(b"k".as_slice()),
            v.as_deref(),
            Vec::new,
        );
    }
    b.finish()
}

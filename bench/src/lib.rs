//! Shared pieces of sluice's benchmarks: the generated events and the pipeline they run
//! through, so that the end-to-end harness and the criterion stage benchmarks measure the same
//! data.

use std::sync::Arc;

use serde_json::{Value, json};

use sluice_kafka::{RawBatch, RawBatchBuilder};

const PAGES: [&str; 8] = [
    "/",
    "/search",
    "/item/17",
    "/item/42",
    "/cart",
    "/checkout",
    "/help",
    "/account",
];
const COUNTRIES: [&str; 6] = ["DE", "US", "FR", "JP", "BR", "IN"];
const REFERRERS: [&str; 4] = [
    "https://www.example.com/",
    "https://news.example.org/today",
    "https://search.example.net/?q=shoes",
    "",
];

/// A cheap deterministic mixer (splitmix64).
pub fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Event `i` as JSON: 10 fields of mixed types, about 250 bytes.
pub fn event_json(i: u64, ts_ms: i64) -> Vec<u8> {
    let r = mix(i);
    let ts = chrono::DateTime::from_timestamp_millis(ts_ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    format!(
        r#"{{"event_id":"ev-{i:012}-{:08x}","user_id":"user-{:06}","session_id":"s-{:016x}","page":"{}","referrer":"{}","amount":{}.{:02},"quantity":{},"is_mobile":{},"country":"{}","ts":"{ts}"}}"#,
        r as u32,
        r % 250_000,
        r.rotate_left(17),
        PAGES[(r % 8) as usize],
        REFERRERS[((r >> 8) % 4) as usize],
        (r >> 16) % 500,
        (r >> 24) % 100,
        (r >> 32) % 9 + 1,
        (r >> 40).is_multiple_of(3),
        COUNTRIES[((r >> 44) % 6) as usize],
    )
    .into_bytes()
}

/// The generated events' Avro schema (the same fields as [`event_json`]; `ts` is
/// `timestamp-millis`), registered as id [`AVRO_SCHEMA_ID`] in the Avro benchmarks.
pub const AVRO_SCHEMA: &str = r#"{"type":"record","name":"Event","namespace":"sluice.bench","fields":[
  {"name":"event_id","type":"string"},
  {"name":"user_id","type":"string"},
  {"name":"session_id","type":"string"},
  {"name":"page","type":"string"},
  {"name":"referrer","type":"string"},
  {"name":"amount","type":"double"},
  {"name":"quantity","type":"int"},
  {"name":"is_mobile","type":"boolean"},
  {"name":"country","type":"string"},
  {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;

/// The schema id the Avro benchmarks' records carry.
pub const AVRO_SCHEMA_ID: u32 = 1;

/// Event `i` of [`event_json`] as Avro in the Confluent wire format (magic byte, schema id
/// [`AVRO_SCHEMA_ID`], body), encoded here by hand: the benchmark needs the bytes a producer
/// sends, not sluice's own encoder.
pub fn event_avro(i: u64, ts_ms: i64) -> Vec<u8> {
    event_avro_with_id(i, ts_ms, AVRO_SCHEMA_ID)
}

/// [`event_avro`] framed with schema id `id` (the id a registry gave [`AVRO_SCHEMA`]).
pub fn event_avro_with_id(i: u64, ts_ms: i64, id: u32) -> Vec<u8> {
    fn long(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }
    fn string(out: &mut Vec<u8>, s: &str) {
        long(out, s.len() as i64);
        out.extend_from_slice(s.as_bytes());
    }
    let r = mix(i);
    let mut out = Vec::with_capacity(160);
    out.push(0);
    out.extend_from_slice(&id.to_be_bytes());
    string(&mut out, &format!("ev-{i:012}-{:08x}", r as u32));
    string(&mut out, &format!("user-{:06}", r % 250_000));
    string(&mut out, &format!("s-{:016x}", r.rotate_left(17)));
    string(&mut out, PAGES[(r % 8) as usize]);
    string(&mut out, REFERRERS[((r >> 8) % 4) as usize]);
    let amount = ((r >> 16) % 500) as f64 + ((r >> 24) % 100) as f64 / 100.0;
    out.extend_from_slice(&amount.to_le_bytes());
    long(&mut out, ((r >> 32) % 9 + 1) as i64);
    out.push(u8::from((r >> 40).is_multiple_of(3)));
    string(&mut out, COUNTRIES[((r >> 44) % 6) as usize]);
    long(&mut out, ts_ms);
    out
}

/// The generated events' Protobuf schema (the same fields as [`event_json`]; `ts` is a
/// `google.protobuf.Timestamp`), registered as `.proto` text in the Protobuf benchmarks.
pub const PROTO_SCHEMA: &str = r#"syntax = "proto3";
package sluice.bench;
import "google/protobuf/timestamp.proto";
message Event {
  string event_id = 1;
  string user_id = 2;
  string session_id = 3;
  string page = 4;
  string referrer = 5;
  double amount = 6;
  int32 quantity = 7;
  bool is_mobile = 8;
  string country = 9;
  google.protobuf.Timestamp ts = 10;
}
"#;

/// Event `i` of [`event_json`] as Protobuf in the Confluent wire format (magic byte, schema
/// id `id`, message indexes `[0]`, body), encoded here by hand as a producer would send it.
pub fn event_protobuf_with_id(i: u64, ts_ms: i64, id: u32) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn string(out: &mut Vec<u8>, field: u64, s: &str) {
        varint(out, field << 3 | 2);
        varint(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
    let r = mix(i);
    let mut out = Vec::with_capacity(160);
    out.push(0);
    out.extend_from_slice(&id.to_be_bytes());
    out.push(0);
    string(&mut out, 1, &format!("ev-{i:012}-{:08x}", r as u32));
    string(&mut out, 2, &format!("user-{:06}", r % 250_000));
    string(&mut out, 3, &format!("s-{:016x}", r.rotate_left(17)));
    string(&mut out, 4, PAGES[(r % 8) as usize]);
    string(&mut out, 5, REFERRERS[((r >> 8) % 4) as usize]);
    let amount = ((r >> 16) % 500) as f64 + ((r >> 24) % 100) as f64 / 100.0;
    varint(&mut out, 6 << 3 | 1);
    out.extend_from_slice(&amount.to_le_bytes());
    varint(&mut out, 7 << 3);
    varint(&mut out, (r >> 32) % 9 + 1);
    varint(&mut out, 8 << 3);
    varint(&mut out, u64::from((r >> 40).is_multiple_of(3)));
    string(&mut out, 9, COUNTRIES[((r >> 44) % 6) as usize]);
    let mut ts = Vec::with_capacity(12);
    varint(&mut ts, 1 << 3);
    varint(&mut ts, ts_ms.div_euclid(1000) as u64);
    varint(&mut ts, 2 << 3);
    varint(&mut ts, (ts_ms.rem_euclid(1000) * 1_000_000) as u64);
    varint(&mut out, 10 << 3 | 2);
    varint(&mut out, ts.len() as u64);
    out.extend_from_slice(&ts);
    out
}

/// `n` generated records as Protobuf (schema id 1), as the Kafka source would hand them over.
pub fn raw_batch_protobuf(n: usize, start: u64) -> RawBatch {
    raw_batch_with(n, start, |id, ts| event_protobuf_with_id(id, ts, 1))
}

fn raw_batch_with(n: usize, start: u64, encode: impl Fn(u64, i64) -> Vec<u8>) -> RawBatch {
    let topic: Arc<str> = Arc::from("bench");
    let mut b = RawBatchBuilder::new(n, false);
    let base = 1_772_359_200_000i64;
    for i in 0..n as u64 {
        let id = start + i;
        let ts = base + id as i64 * 7;
        let v = encode(id, ts);
        b.push(
            &topic,
            (id % 3) as i32,
            id as i64,
            Some(ts),
            0,
            None,
            Some(&v),
            Vec::new,
        );
    }
    b.finish()
}

/// `n` generated records as Avro, as the Kafka source would hand them over.
pub fn raw_batch_avro(n: usize, start: u64) -> RawBatch {
    raw_batch_with(n, start, event_avro)
}

/// The `[[pipeline]]` schema of the generated events.
pub const SCHEMA: &str = r#"schema = [
  { name = "event_id", type = "string", nullable = false },
  { name = "user_id", type = "string" },
  { name = "session_id", type = "string" },
  { name = "page", type = "string" },
  { name = "referrer", type = "string" },
  { name = "amount", type = "double" },
  { name = "quantity", type = "integer" },
  { name = "is_mobile", type = "boolean" },
  { name = "country", type = "string" },
  { name = "ts", type = "timestamp" },
]
event_time = { field = "ts", format = "rfc3339" }
partition_by = ["event_date"]"#;

/// A config for one pipeline `bench` reading `topic` into table `events` under `root`, with
/// background compaction off (the throughput and freshness figures measure ingestion alone).
pub fn config_text(brokers: &str, group: &str, root: &str, topic: &str, extra: &str) -> String {
    config_text_with(
        brokers,
        group,
        root,
        topic,
        extra,
        "compact_interval = \"0s\"",
    )
}

/// [`config_text`] with `maintenance` as the `[maintenance]` section's body (empty: the
/// defaults, compaction every 5 minutes, as a deployment runs).
pub fn config_text_with(
    brokers: &str,
    group: &str,
    root: &str,
    topic: &str,
    extra: &str,
    maintenance: &str,
) -> String {
    format!(
        r#"[kafka]
brokers = "{brokers}"
group_id = "{group}"

[lake]
root = "{root}"

[server]
listen = ""

[maintenance]
{maintenance}

[[pipeline]]
name = "bench"
topics = ["{topic}"]
table = "events"
{SCHEMA}
{extra}
"#
    )
}

/// A config for one upsert pipeline `bench` reading the changes of `topic` (rows keyed by
/// `id`) into table `events` under `root`; `extra` holds the mode, key and flush lines.
pub fn config_text_upsert(
    brokers: &str,
    group: &str,
    root: &str,
    topic: &str,
    extra: &str,
) -> String {
    format!(
        r#"[kafka]
brokers = "{brokers}"
group_id = "{group}"

[lake]
root = "{root}"

[server]
listen = ""

[maintenance]
compact_interval = "0s"

[[pipeline]]
name = "bench"
topics = ["{topic}"]
table = "events"
schema = [
  {{ name = "id", type = "long", nullable = false }},
  {{ name = "name", type = "string" }},
  {{ name = "balance", type = "double" }},
  {{ name = "visits", type = "long" }},
  {{ name = "tier", type = "string" }},
]
{extra}
"#
    )
}

/// A config for one Avro pipeline `bench` reading `topic` into table `events` under `root`,
/// its columns from the registry at `registry` (subject `<topic>-value`).
pub fn config_text_avro(
    brokers: &str,
    group: &str,
    root: &str,
    topic: &str,
    registry: &str,
    extra: &str,
) -> String {
    format!(
        r#"[kafka]
brokers = "{brokers}"
group_id = "{group}"

[lake]
root = "{root}"

[server]
listen = ""

[maintenance]
compact_interval = "0s"

[schema_registry]
url = "{registry}"

[[pipeline]]
name = "bench"
topics = ["{topic}"]
table = "events"
format = "avro"
event_time = {{ field = "ts" }}
partition_by = ["event_date"]
{extra}
"#
    )
}

/// The parsed pipeline config of [`config_text`] (for the stage benchmarks).
pub fn pipeline_config() -> anyhow::Result<sluice_config::Config> {
    let text = config_text("127.0.0.1:9092", "bench", "/tmp/sluice-bench", "bench", "");
    Ok(sluice_config::Config::from_toml_with_env(
        &text,
        std::path::Path::new("bench.toml"),
        Vec::<(String, String)>::new(),
    )?)
}

/// `n` generated records as one raw batch, as the Kafka source would hand them over.
pub fn raw_batch(n: usize, start: u64) -> RawBatch {
    let topic: Arc<str> = Arc::from("bench");
    let mut b = RawBatchBuilder::new(n, false);
    let base = 1_772_359_200_000i64;
    for i in 0..n as u64 {
        let id = start + i;
        let ts = base + id as i64 * 7;
        let v = event_json(id, ts);
        b.push(
            &topic,
            (id % 3) as i32,
            id as i64,
            Some(ts),
            0,
            None,
            Some(&v),
            Vec::new,
        );
    }
    b.finish()
}

/// The machine a result was measured on: cores, CPU model, memory, OS.
pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.to_string()))
        .unwrap_or_default();
    json!({
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "cpu": cpu,
        "memory": mem,
        "os": std::env::consts::OS,
    })
}

/// The commit checked out where the harness runs.
pub fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Writes `<out>/<name>.json` and `.md` with the machine, the commit and the exact command, and
/// prints the markdown.
pub fn write_results(
    out: &std::path::Path,
    name: &str,
    command: &str,
    sluice: &std::path::Path,
    results: Value,
) -> anyhow::Result<()> {
    let doc = json!({
        "benchmark": name,
        "date": chrono::Utc::now().to_rfc3339(),
        "commit": git_commit(),
        "command": command,
        "sluice": sluice.display().to_string(),
        "machine": machine(),
        "results": results,
    });
    let json_path = out.join(format!("{name}.json"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&doc)?)?;
    let mut md = format!(
        "# {name}\n\n- date: {}\n- commit: `{}`\n- command: `{command}`\n- machine: {}\n\n| measure | value |\n| --- | --- |\n",
        doc["date"].as_str().unwrap_or_default(),
        doc["commit"].as_str().unwrap_or_default(),
        doc["machine"],
    );
    flatten("", &doc["results"], &mut md);
    let md_path = out.join(format!("{name}.md"));
    std::fs::write(&md_path, &md)?;
    println!("{md}");
    eprintln!("wrote {} and {}", json_path.display(), md_path.display());
    Ok(())
}

fn flatten(prefix: &str, v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, x, out);
            }
        }
        Value::Array(_) => {}
        Value::Number(n) => {
            let text = n
                .as_f64()
                .filter(|f| f.fract() != 0.0)
                .map_or(n.to_string(), |f| format!("{f:.3}"));
            out.push_str(&format!("| {prefix} | {text} |\n"));
        }
        other => out.push_str(&format!("| {prefix} | {other} |\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_about_250_bytes_of_valid_json_that_decodes_without_dead_letters() {
        let sizes: Vec<usize> = (0..1000)
            .map(|i| event_json(i, 1_772_359_200_000).len())
            .collect();
        let mean = sizes.iter().sum::<usize>() / sizes.len();
        assert!((200..=300).contains(&mean), "mean size {mean}");
        let cfg = pipeline_config().expect("config");
        let p = &cfg.pipelines[0];
        let schema = sluice_formats::schema::events_schema(p);
        let decoder = sluice_formats::JsonDecoder::new(p, schema).expect("decoder");
        let decoded = decoder.decode(&raw_batch(1000, 0)).expect("decode");
        assert!(decoded.dead.is_empty());
        assert_eq!(decoded.events.map(|e| e.num_rows()), Some(1000));
    }
}

//! `sluice-bench formats`: the same generated events as JSON, as Avro and as Protobuf
//! (Confluent wire format, schemas in a real registry), side by side: bytes per record, consume-only, decode
//! alone (one thread) and `sluice run --until-caught-up` end to end with peak RSS.

use super::*;

/// Registers `schema` (of `kind`, e.g. `AVRO` or `PROTOBUF`) under `subject`; returns its id.
async fn register(registry: &str, subject: &str, kind: &str, schema: &str) -> anyhow::Result<u32> {
    let url = format!(
        "{}/subjects/{subject}/versions",
        registry.trim_end_matches('/')
    );
    let answer: Value = reqwest::Client::new()
        .post(&url)
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .json(&json!({ "schemaType": kind, "schema": schema }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = answer
        .get("id")
        .and_then(Value::as_u64)
        .with_context(|| format!("no id in the registry's answer {answer}"))?;
    Ok(u32::try_from(id)?)
}

/// One format's figures over `events` records of `topic`.
async fn one_format(
    brokers: &str,
    sluice: &Path,
    lake: &Path,
    topic: &str,
    config: String,
    events: u64,
    partitions: i32,
) -> anyhow::Result<Value> {
    let (b, t) = (brokers.to_string(), topic.to_string());
    let (consume_s, consumed) =
        tokio::task::spawn_blocking(move || consume_only(&b, &t, partitions)).await??;
    anyhow::ensure!(consumed == events, "consumed {consumed} of {events}");
    fresh_lake(lake)?;
    let path = lake.join("bench.toml");
    std::fs::write(&path, config)?;
    let mut child = spawn_sluice(sluice, &["run", "--until-caught-up"], &path)?;
    let (e2e_s, peak_rss, _) = wait_sampling(&mut child, Duration::from_millis(100))?;
    let cfg = sluice_config::Config::load(&path)?;
    let lake_h = sluice_lake::Lake::new(&cfg.lake)?;
    let table = lake_h.open("events").await?.context("no events table")?;
    let rows = sluice_lake::table_row_count("events", &table).await?;
    anyhow::ensure!(
        rows == events,
        "the events table has {rows} rows, not {events}"
    );
    let rate = |s: f64| events as f64 / s;
    Ok(json!({
        "consume_only": { "seconds": consume_s, "records_per_s": rate(consume_s) },
        "end_to_end": {
            "seconds": e2e_s,
            "records_per_s": rate(e2e_s),
            "peak_rss_mb": peak_rss as f64 / 1e6,
            "rows": rows,
        },
    }))
}

/// The three topics of the formats benchmark and the bytes produced into each.
struct Produced {
    json: (String, u64),
    avro: (String, u64),
    proto: (String, u64),
}

/// Registers the Avro and Protobuf schemas and produces `events` events into a topic per
/// format.
async fn produce_formats(
    brokers: &str,
    registry: &str,
    events: u64,
    partitions: i32,
) -> anyhow::Result<Produced> {
    let json_topic = unique("bench-json");
    let avro_topic = unique("bench-avro");
    let proto_topic = unique("bench-protobuf");
    let subject = |t: &str| format!("{t}-value");
    let id = register(
        registry,
        &subject(&avro_topic),
        "AVRO",
        sluice_bench::AVRO_SCHEMA,
    )
    .await?;
    let proto_id = register(
        registry,
        &subject(&proto_topic),
        "PROTOBUF",
        sluice_bench::PROTO_SCHEMA,
    )
    .await?;
    for t in [&json_topic, &avro_topic, &proto_topic] {
        create_topic(brokers, t, partitions).await?;
    }
    eprintln!("producing {events} events as JSON, as Avro and as Protobuf ...");
    let (_, json_bytes) = produce_all(
        brokers,
        &json_topic,
        events,
        partitions,
        sluice_bench::event_json,
    )
    .await?;
    let (_, avro_bytes) = produce_all(brokers, &avro_topic, events, partitions, move |i, ts| {
        sluice_bench::event_avro_with_id(i, ts, id)
    })
    .await?;
    let (_, proto_bytes) = produce_all(brokers, &proto_topic, events, partitions, move |i, ts| {
        sluice_bench::event_protobuf_with_id(i, ts, proto_id)
    })
    .await?;
    Ok(Produced {
        json: (json_topic, json_bytes),
        avro: (avro_topic, avro_bytes),
        proto: (proto_topic, proto_bytes),
    })
}

/// JSON, Avro and Protobuf side by side on the same `events` generated events.
pub(crate) async fn formats(
    brokers: &str,
    registry: &str,
    sluice: &Path,
    lake: &Path,
    events: u64,
    partitions: i32,
) -> anyhow::Result<Value> {
    let Produced {
        json: (json_topic, json_bytes),
        avro: (avro_topic, avro_bytes),
        proto: (proto_topic, proto_bytes),
    } = produce_formats(brokers, registry, events, partitions).await?;

    eprintln!("decode alone ...");
    let stage_n = events.min(1_000_000) as usize;
    let (json_s, inferred_s, avro_s, proto_s) = tokio::task::spawn_blocking(move || {
        anyhow::Ok((
            json_decode_only(stage_n)?,
            json_inferred_decode_only(stage_n)?,
            avro_decode_only(stage_n)?,
            protobuf_decode_only(stage_n)?,
        ))
    })
    .await??;

    let group = |f: &str| unique(&format!("bench-{f}-group"));
    let root = lake.display().to_string();
    let flush = "flush = { max_rows = 1000000, max_bytes = \"128MiB\", max_latency = \"10s\" }";
    let json_cfg = |g: &str| config_text(brokers, &group(g), &root, &json_topic, flush);
    let registry_cfg = |g: &str, topic: &str| {
        sluice_bench::config_text_avro(brokers, &group(g), &root, topic, registry, flush)
            .replace("format = \"avro\"", &format!("format = \"{g}\""))
    };
    // (result key, topic, config, bytes produced, decode-alone seconds), run in this order.
    let runs = [
        (
            "json_inferred",
            &json_topic,
            without_schema(&json_cfg("json-inferred")),
            None,
            inferred_s,
        ),
        (
            "json",
            &json_topic,
            json_cfg("json"),
            Some(json_bytes),
            json_s,
        ),
        (
            "avro",
            &avro_topic,
            registry_cfg("avro", &avro_topic),
            Some(avro_bytes),
            avro_s,
        ),
        (
            "protobuf",
            &proto_topic,
            registry_cfg("protobuf", &proto_topic),
            Some(proto_bytes),
            proto_s,
        ),
    ];
    let mut out = json!({ "events": events, "partitions": partitions });
    for (key, topic, config, bytes, decode_s) in runs {
        eprintln!("{key} end to end ...");
        let measured = one_format(brokers, sluice, lake, topic, config, events, partitions).await?;
        let mut entry = json!({
            "decode_only": {
                "records": stage_n,
                "seconds": decode_s,
                "records_per_s": stage_n as f64 / decode_s,
            },
            "end_to_end": measured["end_to_end"],
        });
        if let Some(bytes) = bytes {
            entry["bytes_per_record"] = json!(bytes as f64 / events as f64);
            entry["consume_only"] = measured["consume_only"].clone();
        }
        out[key] = entry;
    }
    Ok(out)
}

/// `config` (a JSON pipeline's) without its `schema`: the columns are inferred.
fn without_schema(config: &str) -> String {
    match (config.find("schema = ["), config.find("]\nevent_time")) {
        (Some(from), Some(to)) => format!("{}{}", &config[..from], &config[to + 2..]),
        _ => config.to_string(),
    }
}

/// The JSON decoder with inferred columns alone over `n` generated records: each batch read
/// for new fields, then decoded (the first batch's fields become the columns).
pub(crate) fn json_inferred_decode_only(n: usize) -> anyhow::Result<f64> {
    use sluice_formats::infer::{InferringJson, seed_columns};
    let cfg = sluice_bench::pipeline_config()?;
    let base = &cfg.pipelines[0];
    let mut columns = seed_columns(base);
    let schema_of = |cols: &[sluice_config::FieldConfig]| {
        base.with_schema(cols.to_vec())
            .map(|p| sluice_formats::schema::events_schema(&p))
            .map_err(|e| anyhow::anyhow!("{e:?}"))
    };
    let p = base
        .with_schema(columns.clone())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut decoder = InferringJson::new(&p, schema_of(&columns)?)?;
    let batches: Vec<_> = (0..n.div_ceil(10_000))
        .map(|i| raw_batch(10_000.min(n - i * 10_000), (i * 10_000) as u64))
        .collect();
    let started = Instant::now();
    let mut rows = 0;
    for b in &batches {
        decoder.prepare(b);
        if let Some(change) = decoder.take_change() {
            for c in change.columns {
                match columns.iter_mut().find(|have| have.name == c.name) {
                    Some(have) => *have = c,
                    None => columns.push(c),
                }
            }
            decoder.retarget(schema_of(&columns)?)?;
        }
        let d = decoder.decode(b)?;
        anyhow::ensure!(d.dead.is_empty(), "dead letters: {:?}", d.dead.first());
        rows += d.events.map_or(0, |e| e.num_rows());
    }
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        rows == n,
        "decoded {rows} of {n} JSON records with inferred columns"
    );
    anyhow::ensure!(
        columns.len() == 10,
        "inferred {} columns, not 10",
        columns.len()
    );
    Ok(seconds)
}

/// The JSON decoder alone (its fast path, as a pipeline runs it) over `n` generated records.
fn json_decode_only(n: usize) -> anyhow::Result<f64> {
    let cfg = sluice_bench::pipeline_config()?;
    let p = &cfg.pipelines[0];
    let schema = sluice_formats::schema::events_schema(p);
    let decoder = sluice_formats::JsonDecoder::new(p, schema).map_err(|e| anyhow::anyhow!(e))?;
    let batches: Vec<_> = (0..n.div_ceil(10_000))
        .map(|i| raw_batch(10_000.min(n - i * 10_000), (i * 10_000) as u64))
        .collect();
    let started = Instant::now();
    let mut rows = 0;
    for b in &batches {
        let d = decoder.decode(b).map_err(|e| anyhow::anyhow!(e))?;
        anyhow::ensure!(d.dead.is_empty(), "dead letters: {:?}", d.dead.first());
        rows += d.events.map_or(0, |e| e.num_rows());
    }
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(rows == n, "decoded {rows} of {n} JSON records");
    Ok(seconds)
}

/// The Protobuf decoder alone over `n` generated records (the same events, one thread).
pub(crate) fn protobuf_decode_only(n: usize) -> anyhow::Result<f64> {
    use sluice_formats::registry::{RegisteredSchema, Registry, SchemaType};
    let cfg = sluice_bench::pipeline_config()?;
    let latest = RegisteredSchema {
        id: 1,
        schema_type: SchemaType::Protobuf,
        text: sluice_bench::PROTO_SCHEMA.to_string(),
    };
    let columns = sluice_formats::protobuf::table_columns("bench-value", &latest)?;
    let mut p = cfg.pipelines[0]
        .with_schema(columns)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    p.format = sluice_config::Format::Protobuf;
    let schema = sluice_formats::schema::events_schema(&p);
    // Never asked: the one schema id is the table's own.
    let registry = std::sync::Arc::new(Registry::new(&sluice_config::SchemaRegistryConfig {
        url: "http://127.0.0.1:9".into(),
        ..Default::default()
    })?);
    let mut decoder =
        sluice_formats::protobuf::ProtobufDecoder::new(&p, registry, &latest, schema)?;
    let batches: Vec<_> = (0..n.div_ceil(10_000))
        .map(|i| sluice_bench::raw_batch_protobuf(10_000.min(n - i * 10_000), (i * 10_000) as u64))
        .collect();
    let started = Instant::now();
    let mut rows = 0;
    for b in &batches {
        let d = decoder.decode(b)?;
        anyhow::ensure!(d.dead.is_empty(), "dead letters: {:?}", d.dead.first());
        rows += d.events.map_or(0, |e| e.num_rows());
    }
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(rows == n, "decoded {rows} of {n} Protobuf records");
    Ok(seconds)
}

/// The Avro decoder alone over `n` generated records (the same events, one thread).
pub(crate) fn avro_decode_only(n: usize) -> anyhow::Result<f64> {
    use sluice_formats::registry::{RegisteredSchema, Registry, SchemaType};
    let cfg = sluice_bench::pipeline_config()?;
    let latest = RegisteredSchema {
        id: sluice_bench::AVRO_SCHEMA_ID,
        schema_type: SchemaType::Avro,
        text: sluice_bench::AVRO_SCHEMA.to_string(),
    };
    let columns = sluice_formats::avro::table_columns("bench-value", &latest)?;
    let mut p = cfg.pipelines[0]
        .with_schema(columns)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    p.format = sluice_config::Format::Avro;
    let schema = sluice_formats::schema::events_schema(&p);
    // Never asked: the one schema id is the table's own.
    let registry = std::sync::Arc::new(Registry::new(&sluice_config::SchemaRegistryConfig {
        url: "http://127.0.0.1:9".into(),
        ..Default::default()
    })?);
    let mut decoder = sluice_formats::avro::AvroDecoder::new(&p, registry, &latest, schema)?;
    let batches: Vec<_> = (0..n.div_ceil(10_000))
        .map(|i| sluice_bench::raw_batch_avro(10_000.min(n - i * 10_000), (i * 10_000) as u64))
        .collect();
    let started = Instant::now();
    let mut rows = 0;
    for b in &batches {
        let d = decoder.decode(b)?;
        anyhow::ensure!(d.dead.is_empty(), "dead letters: {:?}", d.dead.first());
        rows += d.events.map_or(0, |e| e.num_rows());
    }
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(rows == n, "decoded {rows} of {n} Avro records");
    Ok(seconds)
}

//! Criterion benchmarks of the hot stages, on the same generated events as the end-to-end
//! harness: JSON decoding into Arrow, event-time partition columns, the window operator and
//! Parquet encoding. `cargo bench -p sluice-bench` shows each stage's before/after.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn decoder() -> (sluice_formats::JsonDecoder, sluice_config::PipelineConfig) {
    let cfg = sluice_bench::pipeline_config().expect("config");
    let p = cfg.pipelines[0].clone();
    let schema = sluice_formats::schema::events_schema(&p);
    (
        sluice_formats::JsonDecoder::new(&p, schema).expect("decoder"),
        p,
    )
}

fn decode(c: &mut Criterion) {
    let (decoder, _) = self::decoder();
    let raw = sluice_bench::raw_batch(10_000, 0);
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(raw.len() as u64));
    g.bench_function("json_to_arrow_10k", |b| {
        b.iter(|| black_box(decoder.decode(black_box(&raw)).expect("decode")))
    });
    // The same batch through arrow-json's general decoder (what nested schemas and batches the
    // fast path gives up on take).
    let (mut general, _) = self::decoder();
    general.set_fast_path(false);
    g.bench_function("json_to_arrow_general_10k", |b| {
        b.iter(|| black_box(general.decode(black_box(&raw)).expect("decode")))
    });
    g.finish();
}

fn partitioning(c: &mut Criterion) {
    let us: Vec<i64> = (0..10_000i64)
        .map(|i| 1_772_359_200_000_000 + i * 7_919_000)
        .collect();
    let tz: chrono_tz::Tz = "America/New_York".parse().expect("tz");
    let mut g = c.benchmark_group("event_time_partitioning");
    g.throughput(Throughput::Elements(us.len() as u64));
    g.bench_function("date_and_hour_utc_10k", |b| {
        b.iter(|| {
            black_box(sluice_formats::time::date_and_hour(
                black_box(&us),
                chrono_tz::UTC,
            ))
        })
    });
    g.bench_function("date_and_hour_new_york_10k", |b| {
        b.iter(|| black_box(sluice_formats::time::date_and_hour(black_box(&us), tz)))
    });
    g.finish();
}

fn windows(c: &mut Criterion) {
    let text = sluice_bench::config_text(
        "127.0.0.1:9092",
        "bench",
        "/tmp/sluice-bench",
        "bench",
        "[[pipeline.aggregate]]\ntable = \"per_minute\"\nwindow = { kind = \"tumbling\", size = \"1m\" }\ngrace = \"30s\"\ngroup_by = [\"page\"]\naggregates = [\"count(*) AS views\", \"sum(amount) AS revenue\", \"count_distinct(user_id) AS users\"]\n",
    );
    let cfg = sluice_config::Config::from_toml_with_env(
        &text,
        std::path::Path::new("bench.toml"),
        Vec::<(String, String)>::new(),
    )
    .expect("config");
    let p = &cfg.pipelines[0];
    let (decoder, _) = decoder();
    let events = decoder
        .decode(&sluice_bench::raw_batch(10_000, 0))
        .expect("decode")
        .events
        .expect("events");
    let spec = sluice_ingest::windows::window_spec(p, &p.aggregates[0]);
    let partitions: Vec<u32> = (0..events.num_rows() as u32).map(|i| i % 3).collect();
    let mut g = c.benchmark_group("window_operator");
    g.throughput(Throughput::Elements(events.num_rows() as u64));
    g.bench_function("tumbling_1m_3_aggregates_10k", |b| {
        b.iter_batched(
            || {
                sluice_window::WindowOperator::with_input_schema(spec.clone(), &events.schema())
                    .expect("operator")
            },
            |mut op| black_box(op.process(&events, &partitions, 0).expect("process")),
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn parquet_encode(c: &mut Criterion) {
    let (decoder, _) = decoder();
    let events = decoder
        .decode(&sluice_bench::raw_batch(10_000, 0))
        .expect("decode")
        .events
        .expect("events");
    // The events table's own properties (zstd level 1), and the same at zstd level 3.
    let table = sluice_lake::WriterOptions::default().parquet_properties();
    let zstd3 = table
        .clone()
        .into_builder()
        .set_compression(parquet::basic::Compression::ZSTD(
            parquet::basic::ZstdLevel::try_new(3).expect("level"),
        ))
        .build();
    let mut g = c.benchmark_group("parquet_encode");
    g.throughput(Throughput::Elements(events.num_rows() as u64));
    for (name, props) in [("table_10k", table), ("zstd3_10k", zstd3)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut sink = Vec::with_capacity(1 << 20);
                let mut w = parquet::arrow::ArrowWriter::try_new(
                    &mut sink,
                    events.schema(),
                    Some(props.clone()),
                )
                .expect("writer");
                w.write(&events).expect("write");
                w.close().expect("close");
                black_box(sink.len())
            })
        });
    }
    g.finish();
}

mod group {
    #![allow(missing_docs)]
    use super::*;
    criterion_group!(benches, decode, partitioning, windows, parquet_encode);
}
use group::benches;
criterion_main!(benches);

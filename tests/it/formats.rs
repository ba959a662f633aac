//! Record formats against the real broker and schema registry: Avro produced by Confluent's
//! own serializer (Python `confluent-kafka`) lands with no schema in sluice's config.

use std::process::Command;

use crate::support::*;

fn python() -> String {
    std::env::var("SLUICE_TEST_PYTHON").expect("SLUICE_TEST_PYTHON (set by scripts/test)")
}

fn registry() -> String {
    std::env::var("SLUICE_TEST_REGISTRY").expect("SLUICE_TEST_REGISTRY (set by scripts/test)")
}

fn run_python(args: &[&str]) -> String {
    let out = Command::new(python()).args(args).output().expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// An Avro config for `topic` into table `orders`, with everything else as in
/// [`pipeline_config`] (whose JSON pipeline is replaced).
fn avro_config(
    dir: &std::path::Path,
    topic: &str,
    lake: &sluice_config::LakeConfig,
) -> std::path::PathBuf {
    let text = format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
[lake]
root = "{root}"
[server]
listen = ""
[schema_registry]
url = "{registry}"

[[pipeline]]
name = "orders"
topics = ["{topic}"]
table = "orders"
format = "avro"
event_time = {{ field = "ts" }}
partition_by = ["event_date"]
"#,
        brokers = kafka(),
        group = unique("sluice-avro"),
        root = lake.root,
        registry = registry(),
    );
    let path = dir.join("sluice.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// 50,000 Avro records (nested records, an enum, a decimal, a timestamp, nullable fields, an
/// array) from Confluent's serializer, then a value without the wire format and one with an
/// id the registry does not know: every record lands once with the values produced, the two
/// bad ones are dead letters with their reasons, and the config names no column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_records_from_the_registry_land_exactly_once_with_their_values() {
    let topic = unique("avro-orders");
    create_topic(&topic, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let produced = dir.path().join("produced.jsonl");
    let root = repo_root();
    let producer = root.join("tests/py/produce_avro.py");
    run_python(&[
        producer.to_str().unwrap(),
        &kafka(),
        &registry(),
        &topic,
        "50000",
        produced.to_str().unwrap(),
        "--bad",
    ]);
    let (_lake_dir, lake) = local_lake();
    let config = avro_config(dir.path(), &topic, &lake);
    let log = run_until_caught_up(&config);
    assert!(
        log.contains("records=50002 events=50000 dead_letters=2"),
        "{log}"
    );
    let checker = root.join("tests/py/check_avro_table.py");
    let table_root = lake
        .root
        .trim_start_matches("file://")
        .trim_end_matches('/');
    let out = run_python(&[
        checker.to_str().unwrap(),
        &format!("{table_root}/orders"),
        &format!("{table_root}/orders_dead_letter"),
        produced.to_str().unwrap(),
    ]);
    assert!(out.contains("rows 50000 equal\n"), "{out}");
    assert!(
        out.contains("dead [('bad_framing', 'bad-framing'), ('unknown_schema', 'unknown-id')]"),
        "{out}"
    );
    // A second run finds nothing new: nothing is written twice.
    let log = run_until_caught_up(&config);
    assert!(log.contains("records=0 events=0 dead_letters=0"), "{log}");
}

/// The columns of a JSON pipeline are matched to its table by name: after the config lists
/// them in another order (two string columns swapped), and then drops one, every value is in
/// its own column and the dropped column reads null.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_and_dropped_json_columns_keep_every_value_in_its_own_column() {
    let topic = unique("json-reorder");
    create_topic(&topic, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let (_lake_dir, lake_cfg) = local_lake();
    let config = pipeline_config(dir.path(), &topic, &lake_cfg, "");
    let text = std::fs::read_to_string(&config).unwrap();
    let original = r#"schema = [
  { name = "user_id", type = "string", nullable = false },
  { name = "page", type = "string" },
  { name = "amount", type = "double" },
  { name = "ts", type = "timestamp" },
]"#;
    assert!(text.contains(original), "{text}");
    let phase = |n: u64| {
        (n * 100..n * 100 + 100).map(|i| TestRecord {
            value: Some(click(i, "2026-03-01T10:00:00Z")),
            ..Default::default()
        })
    };
    produce(&topic, phase(0)).await;
    run_until_caught_up(&config);
    // The two string columns swapped, the rest reordered.
    let reordered = r#"schema = [
  { name = "ts", type = "timestamp" },
  { name = "page", type = "string" },
  { name = "amount", type = "double" },
  { name = "user_id", type = "string", nullable = false },
]"#;
    std::fs::write(&config, text.replace(original, reordered)).unwrap();
    produce(&topic, phase(1)).await;
    run_until_caught_up(&config);
    // `page` dropped.
    let dropped = r#"schema = [
  { name = "amount", type = "double" },
  { name = "user_id", type = "string", nullable = false },
  { name = "ts", type = "timestamp" },
]"#;
    std::fs::write(&config, text.replace(original, dropped)).unwrap();
    produce(&topic, phase(2)).await;
    run_until_caught_up(&config);

    let lake = sluice_lake::Lake::new(&lake_cfg).unwrap();
    let batches = read_table(&lake, "events").await;
    let mut seen = std::collections::BTreeMap::new();
    for b in &batches {
        use arrow::array::{Array, AsArray};
        let col = |name: &str, to: &arrow::datatypes::DataType| {
            arrow::compute::cast(b.column_by_name(name).unwrap(), to).unwrap()
        };
        use arrow::datatypes::DataType as D;
        let (offsets, users, pages, amounts) = (
            col("_kafka_offset", &D::Int64),
            col("user_id", &D::Utf8),
            col("page", &D::Utf8),
            col("amount", &D::Float64),
        );
        let offsets = offsets.as_primitive::<arrow::datatypes::Int64Type>();
        let users = users.as_string::<i32>();
        let pages = pages.as_string::<i32>();
        let amounts = amounts.as_primitive::<arrow::datatypes::Float64Type>();
        for r in 0..b.num_rows() {
            let page = (!pages.is_null(r)).then(|| pages.value(r).to_string());
            let prev = seen.insert(
                offsets.value(r),
                (users.value(r).to_string(), page, amounts.value(r)),
            );
            assert!(prev.is_none(), "offset {} twice", offsets.value(r));
        }
    }
    assert_eq!(seen.len(), 300);
    for (offset, (user, page, amount)) in seen {
        let i = offset as u64;
        assert_eq!(user, format!("u{}", i % 1000), "offset {offset}");
        assert_eq!(amount, (i % 100) as f64 + 0.5, "offset {offset}");
        let want_page = (i < 200).then(|| format!("/p/{}", i % 7));
        assert_eq!(page, want_page, "offset {offset}");
    }
}

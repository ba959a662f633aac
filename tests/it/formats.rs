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

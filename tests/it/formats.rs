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
    registry_config(dir, topic, lake, "avro")
}

/// [`avro_config`] for another registry format.
fn registry_config(
    dir: &std::path::Path,
    topic: &str,
    lake: &sluice_config::LakeConfig,
    format: &str,
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
format = "{format}"
event_time = {{ field = "ts" }}
partition_by = ["event_date"]
"#,
        brokers = kafka(),
        group = unique(&format!("sluice-{format}")),
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

/// Rows of table `name`, waiting (up to three minutes) until there are `want`; panics with
/// the service's log when they do not come.
async fn wait_for_rows(lake: &sluice_lake::Lake, name: &str, want: usize, log: &std::path::Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        let have = match lake.open(name).await {
            Ok(Some(t)) => rows(&sluice_lake::scan(name, &t).await.expect("scan")),
            _ => 0,
        };
        if have == want {
            return;
        }
        assert!(
            have < want,
            "{name}: {have} rows, more than {want}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        if std::time::Instant::now() > deadline {
            panic!(
                "{name}: {have} rows after 3 minutes, want {want}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

/// One `sluice run` stays up while the producer moves the subject on: version 2 adds a
/// nullable field and a nested field, adds an enum symbol and widens `qty` from int to long
/// (with values beyond int's range); the table takes the new columns in a commit of their
/// own before the first row that needs them, earlier rows read null, and every record lands
/// once with its values. Version 3 changes `qty` to a string: its records, and garbage bytes,
/// are dead letters naming the reason, and the records after them still land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_avro_subject_evolves_mid_run_and_an_incompatible_version_is_dead_lettered() {
    let topic = unique("avro-evolve");
    create_topic(&topic, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let root = repo_root();
    let producer = root.join("tests/py/produce_avro.py");
    let produce_version = |version: &str, start: &str, count: &str, out: &str, bad: bool| {
        let out = dir.path().join(out);
        let mut args = vec![
            producer.to_str().unwrap().to_string(),
            kafka(),
            registry(),
            topic.clone(),
            count.to_string(),
            out.to_str().unwrap().to_string(),
            "--version".into(),
            version.into(),
            "--start".into(),
            start.into(),
            "--evolving".into(),
        ];
        if bad {
            args.push("--bad".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_python(&args);
        std::fs::read_to_string(out).unwrap()
    };
    let v1 = produce_version("1", "0", "20000", "v1.jsonl", false);
    let (_lake_dir, lake_cfg) = local_lake();
    let config = avro_config(dir.path(), &topic, &lake_cfg);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "partition_by = [\"event_date\"]",
            "partition_by = [\"event_date\"]\nflush = { max_latency = \"300ms\" }",
        ),
    )
    .unwrap();
    let log_path = dir.path().join("sluice.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut service = KillOnDrop(
        std::process::Command::new(sluice_bin())
            .args(["run", "--config"])
            .arg(&config)
            .env("SLUICE_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start sluice"),
    );
    let lake = sluice_lake::Lake::new(&lake_cfg).unwrap();
    wait_for_rows(&lake, "orders", 20_000, &log_path).await;
    let v2 = produce_version("2", "20000", "20000", "v2.jsonl", false);
    wait_for_rows(&lake, "orders", 40_000, &log_path).await;
    produce_version("3", "40000", "10", "v3.jsonl", true);
    let v2_more = produce_version("2", "40010", "5000", "v2b.jsonl", false);
    wait_for_rows(&lake, "orders", 45_000, &log_path).await;
    wait_for_rows(&lake, "orders_dead_letter", 12, &log_path).await;
    assert!(
        matches!(service.0.try_wait(), Ok(None)),
        "the service stopped:\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    let _ = service.0.kill();
    let _ = service.0.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(
        log.matches("event=\"schema_changed\"").count(),
        1,
        "one schema change, in one process:\n{log}"
    );

    let produced = dir.path().join("produced.jsonl");
    std::fs::write(&produced, format!("{v1}{v2}{v2_more}")).unwrap();
    let table_root = lake_cfg
        .root
        .trim_start_matches("file://")
        .trim_end_matches('/');
    let checker = root.join("tests/py/check_avro_table.py");
    let out = run_python(&[
        checker.to_str().unwrap(),
        &format!("{table_root}/orders"),
        &format!("{table_root}/orders_dead_letter"),
        produced.to_str().unwrap(),
        "--evolved-at",
        "20000",
        "channel",
    ]);
    assert!(out.contains("rows 45000 equal\n"), "{out}");
    assert!(out.contains("('bad_framing', 'bad-framing')"), "{out}");
    assert!(out.contains("('unknown_schema', 'unknown-id')"), "{out}");
    assert_eq!(
        out.matches("('incompatible_schema', 'k400").count(),
        10,
        "{out}"
    );
    assert!(
        out.contains("field \"qty\" is string in the data but long in the table"),
        "{out}"
    );
    assert!(out.contains("evolved at version"), "{out}");

    // A restart, with the incompatible version now the subject's latest, opens the evolved
    // table and writes nothing twice.
    let log = run_until_caught_up(&config);
    assert!(log.contains("records=0 events=0 dead_letters=0"), "{log}");
}

/// JSON records into a pipeline whose config names no column: the table's columns come from
/// the records. The first run reads 15,000 records, of which the last 5,000 carry a new field
/// and a new nested field (they become columns mid-run); a second run, against the existing
/// table, reads 5,000 more with one more new field. Every value of every record is checked by
/// an independent reader; a field that is always null makes no column; the records that lack
/// a later field read null in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_without_a_schema_takes_its_columns_from_the_records_as_they_arrive() {
    let topic = unique("json-infer");
    create_topic(&topic, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let script = repo_root().join("tests/py/json_infer.py");
    let script = script.to_str().unwrap();
    run_python(&[script, "produce", &kafka(), &topic, "0", "15000"]);
    let (_lake_dir, lake) = local_lake();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
[lake]
root = "{root}"
[server]
listen = ""

[[pipeline]]
name = "inferred"
topics = ["{topic}"]
table = "inferred"
event_time = {{ field = "ts" }}
"#,
            brokers = kafka(),
            group = unique("sluice-infer"),
            root = lake.root,
        ),
    )
    .unwrap();
    // Each run is killed right after its first schema change, until a run finds no new field
    // left: the table keeps the columns, the rows are replayed, nothing is lost or doubled.
    let mut aborted = 0;
    let log = loop {
        let out = Command::new(sluice_bin())
            .args(["run", "--until-caught-up", "--config"])
            .arg(&config)
            .env("SLUICE_FAULT", "after_schema_change:1")
            .env("SLUICE_LOG", "info")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            break err;
        }
        assert!(
            err.contains("SLUICE_FAULT: aborting at after_schema_change"),
            "{err}"
        );
        aborted += 1;
        assert!(aborted < 5, "five runs each found a new field:\n{err}");
    };
    assert!(aborted >= 1, "no run changed the schema:\n{log}");
    assert!(log.contains("dead_letters=0"), "{log}");
    run_python(&[script, "produce", &kafka(), &topic, "15000", "5000"]);
    let log = run_until_caught_up(&config);
    assert!(
        log.contains("records=5000 events=5000 dead_letters=0"),
        "{log}"
    );
    let table_root = lake
        .root
        .trim_start_matches("file://")
        .trim_end_matches('/');
    let out = run_python(&[script, "check", &format!("{table_root}/inferred"), "20000"]);
    assert!(
        out.contains(
            "columns ['amount', 'coupon', 'geo', 'id', 'mixed', 'ok', 'score', 'tags', 'ts', 'user']"
        ),
        "{out}"
    );
    assert!(out.contains("rows 20000 equal"), "{out}");
}

/// A column added to a JSON pipeline's configured `schema` after its table exists is added to
/// the table when the pipeline opens again (an ADD COLUMN commit): the earlier rows read null
/// in it, the later ones hold their values, and no other column moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_added_to_the_configured_schema_joins_the_existing_table() {
    let topic = unique("json-add-column");
    create_topic(&topic, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let (_lake_dir, lake_cfg) = local_lake();
    let config = pipeline_config(dir.path(), &topic, &lake_cfg, "");
    let text = std::fs::read_to_string(&config).unwrap();
    let before = r#"  { name = "ts", type = "timestamp" },
]"#;
    assert!(text.contains(before), "{text}");
    let with_ref = |i: u64| {
        let click = String::from_utf8(click(i, "2026-03-01T10:00:00Z")).unwrap();
        click
            .replace('}', &format!(r#","referrer":"r{}"}}"#, i % 5))
            .into_bytes()
    };
    let phase = |range: std::ops::Range<u64>| {
        range
            .map(|i| TestRecord {
                value: Some(with_ref(i)),
                ..Default::default()
            })
            .collect::<Vec<_>>()
    };
    produce(&topic, phase(0..100)).await;
    run_until_caught_up(&config);
    let after = r#"  { name = "ts", type = "timestamp" },
  { name = "referrer", type = "string" },
]"#;
    std::fs::write(&config, text.replace(before, after)).unwrap();
    produce(&topic, phase(100..200)).await;
    let log = run_until_caught_up(&config);
    assert!(log.contains("event=\"schema_changed\""), "{log}");

    let lake = sluice_lake::Lake::new(&lake_cfg).unwrap();
    let batches = read_table(&lake, "events").await;
    let mut seen = std::collections::BTreeMap::new();
    for b in &batches {
        use arrow::array::{Array, AsArray};
        use arrow::datatypes::DataType as D;
        let col = |name: &str, to: &D| arrow::compute::cast(b.column_by_name(name).unwrap(), to);
        let offsets = col("_kafka_offset", &D::Int64).unwrap();
        let offsets = offsets.as_primitive::<arrow::datatypes::Int64Type>();
        let (users, pages, refs) = (
            col("user_id", &D::Utf8).unwrap(),
            col("page", &D::Utf8).unwrap(),
            col("referrer", &D::Utf8).unwrap(),
        );
        let (users, pages, refs) = (
            users.as_string::<i32>(),
            pages.as_string::<i32>(),
            refs.as_string::<i32>(),
        );
        for r in 0..b.num_rows() {
            let referrer = (!refs.is_null(r)).then(|| refs.value(r).to_string());
            let row = (
                users.value(r).to_string(),
                pages.value(r).to_string(),
                referrer,
            );
            assert!(seen.insert(offsets.value(r), row).is_none(), "a row twice");
        }
    }
    assert_eq!(seen.len(), 200);
    for (offset, (user, page, referrer)) in seen {
        let i = offset as u64;
        assert_eq!(user, format!("u{}", i % 1000), "offset {offset}");
        assert_eq!(page, format!("/p/{}", i % 7), "offset {offset}");
        let want = (i >= 100).then(|| format!("r{}", i % 5));
        assert_eq!(referrer, want, "offset {offset}");
    }
}

/// 50,000 Protobuf records from Confluent's own serializer (the message built at run time from
/// a descriptor, registered by the serializer), then a value without the wire format and one
/// with an unknown id: every record lands once with the values produced (an enum, a
/// Timestamp, a nested message, a repeated field, a wrapper that is null when unset), the two
/// bad ones are dead letters with their reasons, and the config names no column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_records_from_the_registry_land_exactly_once_with_their_values() {
    let topic = unique("proto-orders");
    create_topic(&topic, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let produced = dir.path().join("produced.jsonl");
    let root = repo_root();
    let producer = root.join("tests/py/produce_protobuf.py");
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
    let config = registry_config(dir.path(), &topic, &lake, "protobuf");
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
    let log = run_until_caught_up(&config);
    assert!(log.contains("records=0 events=0 dead_letters=0"), "{log}");
}

/// Avro keys (`key_format = "avro"`): every record's key, written by Confluent's key
/// serializer, lands decoded in the `key` column (a struct of the key record's fields) beside
/// its value, with its bytes still in `_kafka_key`; a record whose key is not Avro is a dead
/// letter (`bad_key`) and the rest go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_keys_land_decoded_in_their_own_column() {
    let topic = unique("avro-keys");
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
        "3000",
        produced.to_str().unwrap(),
        "--bad",
        "--avro-keys",
    ]);
    let (_lake_dir, lake) = local_lake();
    let config = avro_config(dir.path(), &topic, &lake);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "format = \"avro\"",
            "format = \"avro\"\nkey_format = \"avro\"",
        ),
    )
    .unwrap();
    let log = run_until_caught_up(&config);
    assert!(
        log.contains("records=3003 events=3000 dead_letters=3"),
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
    assert!(out.contains("rows 3000 equal\n"), "{out}");
    assert!(
        out.contains(
            "dead [('bad_framing', 'bad-framing'), ('bad_key', 'not-avro-key'), ('unknown_schema', 'unknown-id')]"
        ),
        "{out}"
    );
}

/// The registry over HTTPS: with `ca_file` naming the registry's certificate (self-signed, made
/// by scripts/registry.sh) the records land; without it the pipeline stops with an error that
/// names the registry, before it writes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_over_tls_is_trusted_through_ca_file() {
    let tls = std::env::var("SLUICE_TEST_REGISTRY_TLS").expect("SLUICE_TEST_REGISTRY_TLS");
    let ca = std::env::var("SLUICE_TEST_REGISTRY_CA").expect("SLUICE_TEST_REGISTRY_CA");
    let topic = unique("avro-tls");
    create_topic(&topic, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let produced = dir.path().join("produced.jsonl");
    let producer = repo_root().join("tests/py/produce_avro.py");
    run_python(&[
        producer.to_str().unwrap(),
        &kafka(),
        &registry(),
        &topic,
        "500",
        produced.to_str().unwrap(),
    ]);
    let (_lake_dir, lake) = local_lake();
    let config = avro_config(dir.path(), &topic, &lake);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("url = \"{}\"", registry()),
        &format!("url = \"{tls}\""),
    );
    assert!(text.contains(&tls), "{text}");
    std::fs::write(&config, &text).unwrap();
    let out = Command::new(sluice_bin())
        .args(["run", "--until-caught-up", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("registry") && !err.contains("panicked"),
        "{err}"
    );
    // An untrusted certificate is final: reported at once, not retried for retry_for.
    assert!(!err.contains("retrying"), "{err}");
    std::fs::write(
        &config,
        text.replace(
            &format!("url = \"{tls}\""),
            &format!("url = \"{tls}\"\nca_file = \"{ca}\""),
        ),
    )
    .unwrap();
    let log = run_until_caught_up(&config);
    assert!(
        log.contains("records=500 events=500 dead_letters=0"),
        "{log}"
    );
}

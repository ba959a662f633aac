use std::collections::BTreeSet;

use super::*;

fn load(text: &str) -> Result<Config> {
    Config::from_toml_with_env(text, Path::new("test.toml"), Vec::<(String, String)>::new())
}

const MINIMAL: &str = r#"
[kafka]
brokers = "127.0.0.1:9092"
[lake]
root = "/tmp/lake"
[[pipeline]]
name = "clicks"
topics = ["clicks"]
table = "clicks"
schema = [{ name = "user_id", type = "string", nullable = false }, { name = "ts", type = "timestamp" }]
event_time = { field = "ts", format = "rfc3339" }
"#;

#[test]
fn minimal_config_gets_defaults() {
    let c = load(MINIMAL).unwrap();
    let p = &c.pipelines[0];
    assert_eq!(c.kafka.group_id, "sluice");
    assert_eq!(p.start, StartPosition::Earliest);
    assert_eq!(p.dead_letter_table(), "clicks_dead_letter");
    assert_eq!(p.flush.max_rows, 500_000);
    assert_eq!(p.schema[0].ty, ColumnType::String);
    assert!(!p.schema[0].is_nullable());
    assert_eq!(p.time_zone(), chrono_tz::UTC);
    assert_eq!(c.maintenance.checkpoint_interval, 10);
}

#[test]
fn every_problem_is_reported_at_once_with_its_key() {
    let text = r#"
[kafka]
[lake]
root = "ftp://nope"
[[pipeline]]
name = "clicks"
topics = ["clicks"]
table = "clicks"
start = "yesterday"
timezone = "Mars/Olympus"
schema = [{ name = "ts", type = "timestampz" }]
event_time = { field = "when", format = "rfc3339" }
partition_by = ["country"]
flush = { max_rows = 0 }
bogus = 1
[[pipeline.aggregate]]
table = "clicks"
window = { kind = "hopping", size = "1m", advance = "2m" }
aggregates = ["median(x)"]
"#;
    let err = load(text).unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("expected Invalid, got {err}")
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for expected in [
        "kafka.brokers",
        "lake.root",
        "pipeline[0].start",
        "pipeline[0].timezone",
        "pipeline[0].schema[0].type",
        "pipeline[0].event_time.field",
        "pipeline[0].partition_by[0]",
        "pipeline[0].flush.max_rows",
        "pipeline[0].bogus",
        "pipeline[0].aggregate[0].table",
        "pipeline[0].aggregate[0].window.advance",
        "pipeline[0].aggregate[0].aggregates[0]",
    ] {
        assert!(
            keys.contains(&expected),
            "missing problem for {expected}; got {keys:?}"
        );
    }
    let text = err.to_string();
    assert!(text.contains("test.toml"), "{text}");
    assert!(
        text.contains("use earliest, latest, offset:N or time:RFC3339"),
        "{text}"
    );
    assert!(text.contains("already used by pipeline[0].table"), "{text}");
}

#[test]
fn a_wrongly_typed_value_names_the_key_and_line() {
    let err = load(&MINIMAL.replace(
        "table = \"clicks\"",
        "table = \"clicks\"\nflush = { max_latency = \"2 fortnights\" }",
    ))
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("max_latency") && msg.contains("unknown unit"),
        "{msg}"
    );
}

#[test]
fn environment_overrides_the_file() {
    let env = vec![
        (
            "SLUICE__KAFKA__BROKERS".to_string(),
            "10.0.0.1:9092".to_string(),
        ),
        (
            "SLUICE__KAFKA__OPTIONS__SASL_PASSWORD".to_string(),
            "hunter2".to_string(),
        ),
        (
            "SLUICE__PIPELINE__0__START".to_string(),
            "offset:42".to_string(),
        ),
        (
            "SLUICE__MAINTENANCE__CHECKPOINT_INTERVAL".to_string(),
            "25".to_string(),
        ),
        ("OTHER".to_string(), "x".to_string()),
    ];
    let c = Config::from_toml_with_env(MINIMAL, Path::new("t.toml"), env).unwrap();
    assert_eq!(c.kafka.brokers, "10.0.0.1:9092");
    assert_eq!(c.kafka.options["sasl.password"], "hunter2");
    assert_eq!(c.pipelines[0].start, StartPosition::Offset(42));
    assert_eq!(c.maintenance.checkpoint_interval, 25);
    assert!(
        !format!("{c:?}").contains("hunter2"),
        "secrets must not appear in Debug output"
    );
}

#[test]
fn windows_are_validated() {
    let ok = |w: &str| {
        load(&format!(
            "{MINIMAL}\n[[pipeline.aggregate]]\ntable = \"agg\"\nwindow = {w}\naggregates = [\"count(*)\"]\n"
        ))
    };
    let c = ok(r#"{ kind = "hopping", size = "10s", advance = "5s" }"#).unwrap();
    assert_eq!(
        c.pipelines[0].aggregates[0].window,
        WindowKind::Hopping {
            size: 10_000,
            advance: 5_000,
            offset: 0
        }
    );
    assert!(
        ok(r#"{ kind = "sliding", size = "10s" }"#)
            .unwrap_err()
            .to_string()
            .contains("unknown window kind")
    );
    assert!(
        ok(r#"{ kind = "session" }"#)
            .unwrap_err()
            .to_string()
            .contains("gap")
    );
    assert!(ok(r#"{ kind = "hopping", size = "10s", advance = "0s" }"#).is_err());
}

#[test]
fn start_positions_parse() {
    assert_eq!(
        StartPosition::parse("latest").unwrap(),
        StartPosition::Latest
    );
    assert_eq!(
        StartPosition::parse("time:1970-01-01T00:00:01Z").unwrap(),
        StartPosition::Time(1000)
    );
    assert!(StartPosition::parse("offset:-1").is_err());
}

/// This crate's directory, from the environment cargo sets when it runs the tests (the path
/// compiled in names whichever checkout built a test binary cargo reuses).
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

#[test]
fn every_example_config_loads() {
    let dir = manifest_dir().join("../examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            Config::from_toml_with_env(&text, &path, Vec::<(String, String)>::new())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 1, "no example configs found in {}", dir.display());
}

/// Every key path of a fully populated config, e.g. `pipeline.flush.max_rows`.
fn key_paths(v: &toml::Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(p.clone());
                // The keys of these maps are the user's (option names, table names).
                if k != "options" && k != "zorder_by" {
                    key_paths(v, &p, out);
                }
            }
        }
        toml::Value::Array(items) => {
            for item in items {
                key_paths(item, prefix, out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_config_key_is_documented() {
    // Every key the file can hold: the raw config, with every optional key set.
    let mut c: raw::RawConfig = toml::from_str(MINIMAL).unwrap();
    let agg = raw::RawAggregate {
        late_table: Some("late".into()),
        clock: crate::WindowClock::Topic,
        window: raw::RawWindow {
            kind: "hopping".into(),
            size: Some(Duration::from_secs(1)),
            advance: Some(Duration::from_secs(1)),
            gap: Some(Duration::from_secs(1)),
            offset: Some(Duration::from_secs(1)),
        },
        ..Default::default()
    };
    c.pipelines[0].aggregates.push(agg);
    c.pipelines[0].dead_letter_table = Some("dl".into());
    c.pipelines[0].subject = Some("s".into());
    c.schema_registry.username = Some("u".into());
    c.schema_registry.password = Some("p".into());
    c.schema_registry.ca_file = Some("ca.pem".into());
    c.pipelines[0].event_time.field = Some("ts".into());
    c.pipelines[0].schema[0].format = Some(TimeFormat::Rfc3339);
    c.pipelines[0].schema[0].nullable = Some(true);
    c.maintenance
        .zorder_by
        .insert("clicks".into(), vec!["page".into()]);
    c.tiering.push(TieringConfig {
        archive_table: Some("a".into()),
        ..Default::default()
    });
    let value = toml::Value::try_from(&c).unwrap();
    let mut keys = std::collections::BTreeSet::new();
    key_paths(&value, "", &mut keys);
    let doc = std::fs::read_to_string(manifest_dir().join("../docs/configuration.md")).unwrap();
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| {
            let leaf = k.rsplit('.').next().unwrap_or(k);
            !doc.contains(&format!("`{leaf}`")) && !doc.contains(&format!("[{leaf}]"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "config keys missing from docs/configuration.md: {missing:?}"
    );
    assert!(keys.len() > 50, "the walk found only {} keys", keys.len());
}

#[test]
fn values_that_do_not_parse_hide_no_other_problem() {
    // A bad duration, an unknown format and a bad size fail while parsing; the empty topic
    // list and the window without a size fail the rules checked after it. All are named.
    let text = r#"
[kafka]
brokers = "127.0.0.1:9092"
[lake]
root = "/tmp/lake"
[[pipeline]]
name = "clicks"
topics = []
format = "xml"
table = "clicks"
max_record_size = "lots"
flush = { max_latency = "5 parsecs" }
schema = [{ name = "ts", type = "timestamp" }]
[[pipeline.aggregate]]
table = "per_minute"
window = { kind = "tumbling" }
aggregates = ["count(*) AS n"]
"#;
    let Err(ConfigError::Invalid { problems, .. }) = load(text) else {
        panic!("expected problems");
    };
    let keys: BTreeSet<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for key in [
        "pipeline[0].flush.max_latency",
        "pipeline[0].format",
        "pipeline[0].max_record_size",
        "pipeline[0].topics",
        "pipeline[0].aggregate[0].window.size",
    ] {
        assert!(keys.contains(key), "{key} missing from {problems:?}");
    }
    let duration = problems
        .iter()
        .find(|p| p.key == "pipeline[0].flush.max_latency")
        .map(|p| p.message.as_str());
    assert!(
        duration.is_some_and(|m| m.contains("5 parsecs")),
        "{duration:?}"
    );
}

#[test]
fn avro_pipelines_need_a_registry_and_no_schema_and_the_password_is_never_printed() {
    let text = r#"
[kafka]
brokers = "127.0.0.1:9092"
[lake]
root = "/tmp/lake"
[schema_registry]
username = "sluice"
[[pipeline]]
name = "orders"
topics = ["a", "b"]
table = "orders"
format = "avro"
schema = [{ name = "id", type = "long" }]
"#;
    let err = load(text).unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("expected Invalid, got {err}")
    };
    let keys: BTreeSet<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "schema_registry.url",
            "schema_registry.username",
            "pipeline[0].schema",
            "pipeline[0].subject",
        ]),
        "{err}"
    );
    let ok = r#"
[kafka]
brokers = "127.0.0.1:9092"
[lake]
root = "/tmp/lake"
[schema_registry]
url = "https://registry.example/apis/ccompat/v7"
username = "sluice"
password = "hunter2"
[[pipeline]]
name = "orders"
topics = ["orders"]
table = "orders"
format = "avro"
"#;
    let c = load(ok).unwrap();
    assert_eq!(c.pipelines[0].format, Format::Avro);
    assert_eq!(c.pipelines[0].value_subject(), "orders-value");
    let printed = format!("{c:?}");
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(printed.contains("***"), "{printed}");
}

#[test]
fn protobuf_pipelines_need_a_registry_and_no_schema_like_avro_ones() {
    let text = r#"
[kafka]
brokers = "127.0.0.1:9092"
[lake]
root = "/tmp/lake"
[[pipeline]]
name = "payments"
topics = ["a", "b"]
table = "payments"
format = "protobuf"
schema = [{ name = "id", type = "long" }]
"#;
    let err = load(text).unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("expected Invalid, got {err}")
    };
    let by_key: std::collections::BTreeMap<&str, &str> = problems
        .iter()
        .map(|p| (p.key.as_str(), p.message.as_str()))
        .collect();
    assert!(
        by_key
            .get("schema_registry.url")
            .is_some_and(|m| m.contains("reads Protobuf")),
        "{err}"
    );
    assert!(
        by_key
            .get("pipeline[0].schema")
            .is_some_and(|m| m.contains("a Protobuf pipeline")),
        "{err}"
    );
    assert!(by_key.contains_key("pipeline[0].subject"), "{err}");
}

#[test]
fn avro_keys_need_an_avro_pipeline_a_key_subject_over_several_topics_and_a_free_column() {
    let text = r#"
[kafka]
brokers = "127.0.0.1:9092"
[lake]
root = "/tmp/lake"
[schema_registry]
url = "http://127.0.0.1:18081"
[[pipeline]]
name = "clicks"
topics = ["a", "b"]
table = "clicks"
subject = "clicks-value"
key_format = "avro"
key_column = "_kafka_key"
schema = [{ name = "id", type = "long" }]
"#;
    let err = load(text).unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("expected Invalid, got {err}")
    };
    let keys: BTreeSet<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "pipeline[0].key_format",
            "pipeline[0].key_subject",
            "pipeline[0].key_column",
        ]),
        "{err}"
    );
}

#[test]
fn upsert_mode_needs_a_key_of_schema_columns_and_takes_no_aggregates() {
    let ok = format!("{MINIMAL}mode = \"upsert\"\nkey = [\"user_id\"]\nenvelope = \"debezium\"\n");
    let c = load(&ok).unwrap();
    assert_eq!(c.pipelines[0].mode, Mode::Upsert);
    assert_eq!(c.pipelines[0].key, vec!["user_id".to_string()]);
    assert_eq!(c.pipelines[0].envelope, Envelope::Debezium);
    let cases = [
        (
            "mode = \"upsert\"\n",
            "pipeline[0].key",
            "needs the primary key",
        ),
        (
            "mode = \"upsert\"\nkey = [\"id\"]\n",
            "pipeline[0].key",
            "\"id\" is not a column of the schema",
        ),
        (
            "key = [\"user_id\"]\n",
            "pipeline[0].key",
            "only used with mode",
        ),
        (
            "envelope = \"debezium\"\n",
            "pipeline[0].envelope",
            "only read with mode",
        ),
        (
            "mode = \"upsert\"\nkey = [\"user_id\"]\n[[pipeline.aggregate]]\ntable = \"a\"\nwindow = { kind = \"tumbling\", size = \"1m\" }\naggregates = [\"count(*) AS n\"]\n",
            "pipeline[0].aggregate",
            "append pipeline",
        ),
        ("mode = \"merge\"\n", "pipeline[0].mode", "upsert"),
    ];
    for (extra, key, words) in cases {
        let err = load(&format!("{MINIMAL}{extra}")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(key) && text.contains(words),
            "{extra}: {text}"
        );
    }
}

#[test]
fn an_aggregate_takes_a_partition_clock_and_refuses_columns_it_would_shadow() {
    let agg = |clock: &str, aggregates: &str| {
        format!(
            "{MINIMAL}\n[[pipeline.aggregate]]\ntable = \"agg\"\nwindow = {{ kind = \"tumbling\", size = \"1m\" }}\n{clock}\naggregates = [{aggregates}]\n"
        )
    };
    let c = load(&agg("", "\"count(*) AS n\"")).unwrap();
    assert_eq!(c.pipelines[0].aggregates[0].clock, WindowClock::Topic);
    let c = load(&agg("clock = \"partition\"", "\"count(*) AS n\"")).unwrap();
    assert_eq!(c.pipelines[0].aggregates[0].clock, WindowClock::Partition);
    let err = load(&agg(
        "clock = \"partition\"",
        "\"count(*) AS _kafka_partition\"",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("pipeline[0].aggregate[0].clock"), "{err}");
    assert!(
        err.contains("rename the column \"_kafka_partition\""),
        "{err}"
    );
    let err = load(&agg("clock = \"wall\"", "\"count(*) AS n\""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("clock") && err.contains("partition"), "{err}");
}

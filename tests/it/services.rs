//! The test services are real: an Apache Kafka broker with consumer groups and DeleteRecords,
//! and an S3 server with conditional writes that Delta commits rely on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use rdkafka::admin::AdminOptions;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice_lake::deltalake::arrow::array::{Array, Int64Array, StringArray};
use sluice_lake::deltalake::arrow::datatypes::{DataType, Field, Schema};
use sluice_lake::deltalake::arrow::record_batch::RecordBatch;

use crate::support::*;

fn consumer(group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("consumer")
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_round_trip_with_keys_headers_and_group_offsets() {
    let topic = unique("svc-roundtrip");
    create_topic(&topic, 3).await;
    let records: Vec<TestRecord> = (0..1000)
        .map(|i| TestRecord {
            key: Some(format!("key-{}", i % 17).into_bytes()),
            value: Some(format!("{{\"n\":{i}}}").into_bytes()),
            headers: vec![
                ("source".into(), b"test".to_vec()),
                ("seq".into(), i.to_string().into_bytes()),
            ],
            ..Default::default()
        })
        .collect();
    let delivered = produce(&topic, records).await;
    assert_eq!(delivered.len(), 1000);
    let partitions: BTreeSet<i32> = delivered.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        partitions,
        BTreeSet::from([0, 1, 2]),
        "keys spread over all 3 partitions"
    );

    let group = unique("svc-group");
    let topic2 = topic.clone();
    let group2 = group.clone();
    let seen = tokio::task::spawn_blocking(move || {
        let c = consumer(&group2);
        c.subscribe(&[&topic2]).expect("subscribe");
        let mut seen = BTreeMap::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while seen.len() < 1000 && std::time::Instant::now() < deadline {
            if let Some(m) = c.poll(Duration::from_millis(200)) {
                let m = m.expect("message");
                let headers = m.headers().expect("headers");
                assert_eq!(headers.count(), 2);
                let seq = std::str::from_utf8(headers.get(1).value.expect("seq header"))
                    .expect("utf8")
                    .to_string();
                let value = std::str::from_utf8(m.payload().expect("payload")).expect("utf8");
                assert_eq!(value, format!("{{\"n\":{seq}}}"));
                let key = std::str::from_utf8(m.key().expect("key")).expect("utf8");
                assert_eq!(
                    key,
                    format!("key-{}", seq.parse::<u32>().expect("seq") % 17)
                );
                seen.insert((m.partition(), m.offset()), seq);
            }
        }
        c.commit_consumer_state(CommitMode::Sync).expect("commit");
        // Not `c.committed()`: in librdkafka 2.12 it leaves a partition reference behind and
        // the consumer's destroy then never returns. Offsets are read back below instead.
        seen
    })
    .await
    .expect("consumer thread");
    assert_eq!(
        seen.len(),
        1000,
        "every produced record consumed exactly once"
    );
    let produced: BTreeSet<(i32, i64)> = delivered.into_iter().collect();
    assert_eq!(seen.keys().copied().collect::<BTreeSet<_>>(), produced);

    let mut ends = BTreeMap::new();
    for (p, o) in &produced {
        let e = ends.entry(*p).or_insert(0i64);
        *e = (*e).max(o + 1);
    }
    // The group's committed offsets, read back by a client that never joined the group ...
    let reader = consumer(&group);
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition(&topic, p);
    }
    let fetched = reader
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed_offsets");
    for e in fetched.elements() {
        assert_eq!(
            e.offset(),
            Offset::Offset(ends[&e.partition()]),
            "partition {}",
            e.partition()
        );
    }
    // ... and through Kafka's own admin tool (Java AdminClient.listConsumerGroupOffsets).
    let described = describe_group(&group);
    for (p, end) in &ends {
        let line = described
            .lines()
            .find(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 3 && cols[1] == topic && cols[2] == p.to_string()
            })
            .unwrap_or_else(|| panic!("no row for partition {p} in:\n{described}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cols[3],
            end.to_string(),
            "current offset of partition {p}: {line}"
        );
    }
}

/// `kafka-consumer-groups.sh --describe`, run from the broker's own jars.
fn describe_group(group: &str) -> String {
    let libs = std::env::var("SLUICE_TEST_KAFKA_LIBS")
        .expect("SLUICE_TEST_KAFKA_LIBS (set by scripts/test)");
    let out = std::process::Command::new("java")
        .args([
            "-cp",
            &format!("{libs}/*"),
            "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        ])
        .args([
            "--bootstrap-server",
            &kafka(),
            "--describe",
            "--group",
            group,
        ])
        .output()
        .expect("run ConsumerGroupCommand");
    assert!(
        out.status.success(),
        "ConsumerGroupCommand failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_records_moves_the_log_start_and_old_offsets_are_gone() {
    let topic = unique("svc-delete");
    create_topic(&topic, 1).await;
    produce(
        &topic,
        (0..100).map(|i| TestRecord {
            partition: Some(0),
            value: Some(vec![i as u8]),
            ..Default::default()
        }),
    )
    .await;

    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(60))
        .expect("tpl");
    let res = admin()
        .delete_records(&tpl, &AdminOptions::new())
        .await
        .expect("delete_records");
    for e in res.elements() {
        assert!(e.error().is_ok(), "delete_records: {:?}", e.error());
    }
    let c = consumer(&unique("svc-delete-g"));
    let (low, high) = c
        .fetch_watermarks(&topic, 0, Duration::from_secs(10))
        .expect("watermarks");
    assert_eq!((low, high), (60, 100), "log start offset advanced to 60");

    // Fetching offset 10 now fails with OFFSET_OUT_OF_RANGE instead of returning data
    // (librdkafka reports it as "no offset to automatically reset to").
    assert_offset_gone(&topic, 0, 10).await;
}

fn s3_store(prefix: &str) -> Arc<dyn ObjectStore> {
    let mut b = AmazonS3Builder::new().with_bucket_name(BUCKET);
    for (k, v) in s3_options() {
        b = b.with_config(k.parse().expect("config key"), v);
    }
    let _ = prefix;
    Arc::new(b.build().expect("s3 store"))
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_put_get_list_and_conditional_put() {
    let prefix = unique("svc-s3");
    let store = s3_store(&prefix);
    let a = Path::from(format!("{prefix}/a.txt"));
    let b = Path::from(format!("{prefix}/b.txt"));
    store
        .put(&a, PutPayload::from_static(b"alpha"))
        .await
        .expect("put a");
    store
        .put(&b, PutPayload::from_static(b"beta"))
        .await
        .expect("put b");
    let got = store
        .get(&a)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(&got[..], b"alpha");
    let listed: Vec<_> = store
        .list(Some(&Path::from(prefix.as_str())))
        .try_collect()
        .await
        .expect("list");
    let mut names: Vec<String> = listed.iter().map(|m| m.location.to_string()).collect();
    names.sort();
    assert_eq!(names, vec![a.to_string(), b.to_string()]);

    // Two writers race to create the same object: the first wins, the second is told so.
    let c = Path::from(format!("{prefix}/_delta_log/00000000000000000000.json"));
    let create = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    store
        .put_opts(&c, PutPayload::from_static(b"first"), create.clone())
        .await
        .expect("first writer");
    let second = store
        .put_opts(&c, PutPayload::from_static(b"second"), create)
        .await;
    assert!(
        matches!(second, Err(object_store::Error::AlreadyExists { .. })),
        "second writer must lose: {second:?}"
    );
    let kept = store
        .get(&c)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(&kept[..], b"first", "the loser did not overwrite");
}

#[tokio::test(flavor = "multi_thread")]
async fn delta_table_on_s3_created_appended_twice_and_read_back() {
    let lake = sluice_lake::Lake::new(&s3_lake()).expect("lake");
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let table = lake
        .open_or_create("people", &schema, &Default::default())
        .await
        .expect("create");
    let mut writer =
        sluice_lake::TableWriter::new("people", table, Default::default()).expect("writer");
    for (round, range) in [(1i64, 0..100i64), (2, 100..250)] {
        let ids = Int64Array::from_iter_values(range.clone());
        let names = StringArray::from_iter_values(range.clone().map(|i| format!("n{i}")));
        let batch = RecordBatch::try_new(writer.schema(), vec![Arc::new(ids), Arc::new(names)])
            .expect("batch");
        writer.write(batch).await.expect("write");
        let out = writer
            .commit(
                &[("sluice:test:t:0".to_string(), range.end)],
                Default::default(),
            )
            .await
            .expect("commit")
            .expect("something committed");
        assert_eq!(out.version, round);
        assert_eq!(out.rows, range.count() as u64);
    }
    // A fresh reader sees both appends and the progress of the last one.
    let table = lake.open("people").await.expect("open").expect("exists");
    assert_eq!(table.version(), Some(2));
    let batches = sluice_lake::scan_sql("people", &table, "SELECT id FROM people ORDER BY id")
        .await
        .expect("scan");
    let ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("i64")
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(ids, (0..250).collect::<Vec<_>>());
    let progress = sluice_lake::committed_progress("people", &table, "sluice:test:t:0")
        .await
        .expect("txn");
    assert_eq!(progress, Some(250));
    assert!(
        table
            .get_file_uris()
            .expect("files")
            .all(|u| u.starts_with("s3://"))
    );
    let _ = batches.iter().map(|b| b.column(0).len()).sum::<usize>();
}

/// Two writers commit progress for the same partition from the same snapshot on Azure Blob
/// Storage (Azurite): the second one's put of the next log entry is refused by the store (a
/// conditional write), delta-rs sees the first one's `txn` and the second writer is fenced;
/// the log holds the first writer's commit, not an overwrite.
#[tokio::test(flavor = "multi_thread")]
async fn delta_commits_on_azure_blob_storage_are_conditional_and_fence_a_second_writer() {
    second_writer_is_fenced(azure_lake()).await;
}

/// The same through an ADLS Gen2 URL (`abfss://<container>@<account>.dfs.core.windows.net/`):
/// the table lands in the same container and prefix as the `az://` URL names, where a lake
/// opened by that URL reads it.
#[tokio::test(flavor = "multi_thread")]
async fn an_abfss_url_names_the_same_azure_container_and_prefix_as_az() {
    let az = azure_lake();
    let prefix = az.root.trim_start_matches(&format!("az://{BUCKET}/"));
    let abfss = sluice_config::LakeConfig {
        root: format!("abfss://{BUCKET}@devstoreaccount1.dfs.core.windows.net/{prefix}"),
        options: az.options.clone(),
    };
    second_writer_is_fenced(abfss).await;
    let lake = sluice_lake::Lake::new(&az).expect("lake");
    let table = lake
        .open("people")
        .await
        .expect("open")
        .expect("written through abfss://");
    assert_eq!(table.version(), Some(1));
    assert_eq!(
        sluice_lake::table_row_count("people", &table)
            .await
            .unwrap(),
        10
    );
}

/// The same on Google Cloud Storage (fake-gcs-server).
#[tokio::test(flavor = "multi_thread")]
async fn delta_commits_on_google_cloud_storage_are_conditional_and_fence_a_second_writer() {
    second_writer_is_fenced(gcs_lake()).await;
}

async fn second_writer_is_fenced(lake_cfg: sluice_config::LakeConfig) {
    let lake = sluice_lake::Lake::new(&lake_cfg).expect("lake");
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let created = lake
        .open_or_create("people", &schema, &Default::default())
        .await
        .expect("create");
    assert_eq!(created.version(), Some(0));
    let second = lake.open("people").await.expect("open").expect("exists");
    let mut writers = [
        sluice_lake::TableWriter::new("people", created, Default::default()).expect("writer"),
        sluice_lake::TableWriter::new("people", second, Default::default()).expect("writer"),
    ];
    let mut outcomes = Vec::new();
    for (w, first_id) in writers.iter_mut().zip([0i64, 1_000]) {
        let ids = Int64Array::from_iter_values(first_id..first_id + 10);
        let names = StringArray::from_iter_values((0..10).map(|i| format!("w{first_id}-{i}")));
        let batch =
            RecordBatch::try_new(w.schema(), vec![Arc::new(ids), Arc::new(names)]).expect("batch");
        w.write(batch).await.expect("write");
        outcomes.push(
            w.commit(&[("sluice:test:t:0".to_string(), 10)], Default::default())
                .await,
        );
    }
    let first = outcomes[0].as_ref().expect("the first commit lands");
    assert_eq!(first.as_ref().map(|o| o.version), Some(1));
    let err = outcomes[1]
        .as_ref()
        .expect_err("the second writer is fenced");
    assert!(err.is_fenced(), "{err}");
    let table = lake.open("people").await.expect("open").expect("exists");
    assert_eq!(table.version(), Some(1));
    let batches = sluice_lake::scan_sql(
        "people",
        &table,
        "SELECT min(id) AS lo, max(id) AS hi, count(*) AS n FROM people",
    )
    .await
    .expect("scan");
    let text = format!(
        "{}",
        sluice_lake::deltalake::arrow::util::pretty::pretty_format_batches(&batches).unwrap()
    );
    assert!(
        text.contains("| 0  | 9  | 10 |"),
        "only the first writer's rows:\n{text}"
    );
}

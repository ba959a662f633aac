//! The memory a long-running `TableWriter` holds for its table's snapshot stays near what the
//! same table takes loaded afresh, instead of growing with every commit (delta-rs keeps each
//! commit's file actions as a batch of their own until the snapshot is reloaded). Its own test
//! binary: the counting allocator sees this one test and nothing else.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;

use cap::Cap;
use sluice_lake::deltalake::arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use sluice_lake::deltalake::arrow::datatypes::{DataType, Field, Schema};
use sluice_lake::deltalake::arrow::record_batch::RecordBatch;
use sluice_lake::{Lake, TableSpec, TableWriter, WriterOptions};

#[global_allocator]
static ALLOCATOR: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

fn schema() -> Arc<Schema> {
    let mut fields = vec![Field::new("day", DataType::Utf8, false)];
    for i in 0..5 {
        fields.push(Field::new(format!("i{i}"), DataType::Int64, false));
        fields.push(Field::new(format!("s{i}"), DataType::Utf8, false));
        fields.push(Field::new(format!("f{i}"), DataType::Float64, false));
    }
    Arc::new(Schema::new(fields))
}

fn batch(rows: i64, first: i64) -> RecordBatch {
    let ids = first..first + rows;
    let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(
        ids.clone().map(|_| "2026-11-23"),
    ))];
    for _ in 0..5 {
        columns.push(Arc::new(Int64Array::from_iter_values(ids.clone())));
        columns.push(Arc::new(StringArray::from_iter_values(
            ids.clone().map(|i| format!("value-{i}")),
        )));
        columns.push(Arc::new(Float64Array::from_iter_values(
            ids.clone().map(|i| i as f64 / 3.0),
        )));
    }
    RecordBatch::try_new(schema(), columns).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writers_snapshot_stays_the_size_of_a_fresh_load_over_many_commits() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::new(&sluice_config::LakeConfig {
        root: dir.path().display().to_string(),
        ..Default::default()
    })
    .unwrap();
    let spec = TableSpec {
        partition_columns: vec!["day".into()],
        properties: HashMap::from([("delta.checkpointInterval".into(), "10".into())]),
        description: None,
    };
    let table = lake.open_or_create("t", &schema(), &spec).await.unwrap();
    let mut writer = TableWriter::new("t", table, WriterOptions::default()).unwrap();
    // One commit first, so that the writer's one-off allocations are in the baseline.
    writer.write(batch(100, 0)).await.unwrap();
    writer
        .commit(&[("p0".into(), 100)], HashMap::new())
        .await
        .unwrap();
    let baseline = ALLOCATOR.allocated();
    let commits = 300;
    for i in 1..=commits {
        writer.write(batch(100, i * 100)).await.unwrap();
        writer
            .commit(&[("p0".into(), i * 100 + 100)], HashMap::new())
            .await
            .unwrap()
            .unwrap();
    }
    let grown = ALLOCATOR.allocated().saturating_sub(baseline);
    let before_load = ALLOCATOR.allocated();
    let fresh = lake.open("t").await.unwrap().unwrap();
    let fresh_bytes = ALLOCATOR.allocated().saturating_sub(before_load);
    assert_eq!(fresh.snapshot().unwrap().log_data().num_files(), 301);
    assert_eq!(writer.progress("p0").await.unwrap(), Some(30_100));
    eprintln!(
        "writer grew {} KB over {commits} commits; the table loaded afresh takes {} KB",
        grown / 1024,
        fresh_bytes / 1024
    );
    // Without the reload at checkpoints the writer grows by about 20 KB a commit (6 MB here)
    // against a fresh load's few hundred KB.
    assert!(
        grown < 2 * fresh_bytes + 1024 * 1024,
        "the writer grew {grown} bytes over {commits} commits; a fresh load takes {fresh_bytes}"
    );
}

//! `sluice run` against the real broker: rows land exactly once, with the right columns.

use std::collections::BTreeSet;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn small_topic_lands_exactly_once_locally() {
    let topic = unique("ing-small");
    create_topic(&topic, 3).await;
    let produced = produce(
        &topic,
        (0..3000u64).map(|i| TestRecord {
            key: Some(format!("k{i}").into_bytes()),
            value: Some(click(i, "2026-03-01T10:00:00Z")),
            ..Default::default()
        }),
    )
    .await;
    let (dir, lake_cfg) = local_lake();
    let config = pipeline_config(
        dir.path(),
        &topic,
        &lake_cfg,
        "flush = { max_rows = 1000, max_latency = \"1s\" }",
    );
    run_until_caught_up(&config);
    let lake = sluice_lake::Lake::new(&lake_cfg).unwrap();
    let rows = read_table(&lake, "events").await;
    let got = positions(&rows);
    assert_eq!(got.len(), 3000);
    assert_eq!(
        got.iter().copied().collect::<BTreeSet<_>>(),
        produced.into_iter().collect::<BTreeSet<_>>()
    );
}

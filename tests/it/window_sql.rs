//! Differential test: with no late records, the window operator's output equals a DataFusion
//! `GROUP BY` over the same rows (tumbling and hopping windows, random inputs).

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_config::{AggregateSpec, WindowKind};
use sluice_lake::deltalake::arrow::array::{
    AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use sluice_lake::deltalake::arrow::compute::cast;
use sluice_lake::deltalake::arrow::datatypes::{
    DataType, Field, Int64Type, Schema, TimeUnit, TimestampMicrosecondType,
};
use sluice_lake::deltalake::datafusion::datasource::MemTable;
use sluice_lake::deltalake::datafusion::prelude::SessionContext;
use sluice_window::{WindowOperator, WindowSpec};

/// (key, window start ms) -> (count, sum, min, max, distinct)
type Rows = BTreeMap<(String, i64), (i64, i64, i64, i64, i64)>;

fn random_batch(n: usize, seed: u64) -> RecordBatch {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let keys: Vec<String> = (0..n).map(|_| format!("k{}", next() % 4)).collect();
    let ts: Vec<i64> = (0..n)
        .map(|_| ((next() % 2000) as i64 - 500) * 1000)
        .collect(); // µs, some negative
    let vs: Vec<i64> = (0..n).map(|_| (next() % 100) as i64).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new(
            "t",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("v", DataType::Int64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(keys)),
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
            Arc::new(Int64Array::from(vs)),
        ],
    )
    .unwrap()
}

fn operator_rows(kind: WindowKind, batch: &RecordBatch) -> Rows {
    let spec = WindowSpec {
        kind,
        grace_ms: 1_000_000, // nothing is late
        group_by: vec!["key".into()],
        aggregates: [
            "count(*) AS n",
            "sum(v) AS s",
            "min(v) AS lo",
            "max(v) AS hi",
            "count_distinct(v) AS d",
        ]
        .iter()
        .map(|a| AggregateSpec::parse(a).unwrap())
        .collect(),
        event_time_column: "t".into(),
        idle_timeout_ms: i64::MAX / 4,
        max_future_skew_ms: None,
        reference_time_column: None,
    };
    let mut op = WindowOperator::with_input_schema(spec, &batch.schema()).unwrap();
    op.assign(0, 0);
    let out = op.process(batch, &vec![0; batch.num_rows()], 0).unwrap();
    assert!(out.late.is_empty() && out.closed.is_none());
    // Push the clock far ahead to close everything.
    let far = RecordBatch::try_new(
        batch.schema(),
        vec![
            Arc::new(StringArray::from(vec!["zz"])),
            Arc::new(TimestampMicrosecondArray::from(vec![10_000_000_000i64]).with_timezone("UTC")),
            Arc::new(Int64Array::from(vec![0])),
        ],
    )
    .unwrap();
    let closed = op.process(&far, &[0], 0).unwrap().closed.unwrap();
    let k = closed.column(0).as_string::<i32>();
    let ws = closed
        .column_by_name("window_start")
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>();
    let get = |n: &str| {
        closed
            .column_by_name(n)
            .unwrap()
            .as_primitive::<Int64Type>()
            .clone()
    };
    let (n, s, lo, hi, d) = (get("n"), get("s"), get("lo"), get("hi"), get("d"));
    (0..closed.num_rows())
        .map(|i| {
            (
                (k.value(i).to_string(), ws.value(i) / 1000),
                (n.value(i), s.value(i), lo.value(i), hi.value(i), d.value(i)),
            )
        })
        .collect()
}

async fn sql_rows(batch: &RecordBatch, starts_sql: &str) -> Rows {
    let ctx = SessionContext::new();
    let table = MemTable::try_new(batch.schema(), vec![vec![batch.clone()]]).unwrap();
    ctx.register_table("t", Arc::new(table)).unwrap();
    let sql = format!(
        "WITH r AS (SELECT key, v, CAST(t AS BIGINT) / 1000 AS ms FROM t), \
         w AS ({starts_sql}) \
         SELECT key, ws, count(*) AS n, sum(v) AS s, min(v) AS lo, max(v) AS hi, count(DISTINCT v) AS d \
         FROM w GROUP BY key, ws"
    );
    let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    let mut out = Rows::new();
    for b in batches {
        let k = cast(b.column(0), &DataType::Utf8).unwrap();
        let k = k.as_any().downcast_ref::<StringArray>().unwrap().clone();
        let col = |i: usize| {
            cast(b.column(i), &DataType::Int64)
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .clone()
        };
        let (ws, n, s, lo, hi, d) = (col(1), col(2), col(3), col(4), col(5), col(6));
        for i in 0..b.num_rows() {
            out.insert(
                (k.value(i).to_string(), ws.value(i)),
                (n.value(i), s.value(i), lo.value(i), hi.value(i), d.value(i)),
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn tumbling_and_hopping_match_a_sql_group_by() {
    for seed in 0..12u64 {
        let batch = random_batch(300 + seed as usize * 37, seed);
        // Tumbling, size 100ms: floor division works for negative times too.
        let tumbling = operator_rows(
            WindowKind::Tumbling {
                size: 100,
                offset: 0,
            },
            &batch,
        );
        let sql = sql_rows(
            &batch,
            "SELECT key, v, CAST(floor(CAST(ms AS DOUBLE) / 100.0) * 100 AS BIGINT) AS ws FROM r",
        )
        .await;
        assert_eq!(tumbling, sql, "tumbling, seed {seed}");
        // Hopping, size 100ms, advance 50ms: every record is in two windows.
        let hopping = operator_rows(
            WindowKind::Hopping {
                size: 100,
                advance: 50,
                offset: 0,
            },
            &batch,
        );
        let sql = sql_rows(
            &batch,
            "SELECT key, v, CAST(floor(CAST(ms AS DOUBLE) / 50.0) * 50 AS BIGINT) AS ws FROM r \
             UNION ALL SELECT key, v, CAST(floor(CAST(ms AS DOUBLE) / 50.0) * 50 - 50 AS BIGINT) AS ws FROM r",
        )
        .await;
        assert_eq!(hopping, sql, "hopping, seed {seed}");
    }
}

//! Golden tests for every rule and worked example of semantics.md, plus boundary cases.

use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit, TimestampMicrosecondType};
use proptest::prelude::*;
use sluice_config::{AggregateSpec, WindowKind};

use crate::*;

/// (key, event time ms, partition)
type Rec = (&'static str, i64, u32);

fn spec(kind: WindowKind, grace: i64) -> WindowSpec {
    WindowSpec {
        kind,
        grace_ms: grace,
        group_by: vec!["key".into()],
        aggregates: vec![
            AggregateSpec::parse("count(*) AS n").unwrap(),
            AggregateSpec::parse("sum(v) AS total").unwrap(),
        ],
        event_time_column: "t".into(),
        idle_timeout_ms: 1_000_000,
    }
}

fn batch(recs: &[Rec]) -> (RecordBatch, Vec<u32>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new(
            "t",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("v", DataType::Int64, true),
    ]));
    let b = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(recs.iter().map(|r| r.0))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(recs.iter().map(|r| r.1 * 1000))
                    .with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from_iter_values(recs.iter().map(|r| r.1))),
        ],
    )
    .unwrap();
    (b, recs.iter().map(|r| r.2).collect())
}

/// A closed window as (key, start, end, count).
type Row = (String, i64, i64, i64);

fn rows(b: &RecordBatch) -> Vec<Row> {
    let k = b.column(0).as_string::<i32>();
    let s = b
        .column_by_name("window_start")
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>();
    let e = b
        .column_by_name("window_end")
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>();
    let n = b.column_by_name("n").unwrap().as_primitive::<Int64Type>();
    (0..b.num_rows())
        .map(|i| {
            (
                k.value(i).to_string(),
                s.value(i) / 1000,
                e.value(i) / 1000,
                n.value(i),
            )
        })
        .collect()
}

/// Feeds records one at a time; returns closed rows after each and late event times.
fn run(op: &mut WindowOperator, recs: &[Rec]) -> (Vec<Vec<Row>>, Vec<i64>, Vec<Option<i64>>) {
    let mut closed = Vec::new();
    let mut late = Vec::new();
    let mut clocks = Vec::new();
    for r in recs {
        let (b, p) = batch(&[*r]);
        let out = op.process(&b, &p, 0).unwrap();
        closed.push(out.closed.map(|b| rows(&b)).unwrap_or_default());
        late.extend(out.late.iter().map(|l| l.event_time_ms));
        clocks.push(op.clock());
    }
    (closed, late, clocks)
}

fn row(k: &str, s: i64, e: i64, n: i64) -> Row {
    (k.to_string(), s, e, n)
}

#[test]
fn example_1_tumbling_with_grace() {
    let mut op = WindowOperator::new(spec(
        WindowKind::Tumbling {
            size: 10,
            offset: 0,
        },
        5,
    ));
    op.assign(0, 0);
    let (closed, late, clocks) = run(
        &mut op,
        &[
            ("A", 1, 0),
            ("A", 4, 0),
            ("A", 12, 0),
            ("A", 7, 0),
            ("A", 16, 0),
            ("A", 3, 0),
        ],
    );
    assert_eq!(
        clocks,
        vec![Some(1), Some(4), Some(12), Some(12), Some(16), Some(16)]
    );
    assert_eq!(
        closed[4],
        vec![row("A", 0, 10, 3)],
        "[0,10) = 3, emitted when A@16 arrives"
    );
    assert!(
        closed
            .iter()
            .enumerate()
            .all(|(i, c)| i == 4 || c.is_empty())
    );
    assert_eq!(late, vec![3]);
    assert_eq!(op.open_windows(), 1, "[10,20) still open");
}

#[test]
fn example_2_session_late_record_does_not_reopen_a_closed_session() {
    let mut op = WindowOperator::new(spec(WindowKind::Session { gap: 5 }, 0));
    op.assign(0, 0);
    let (closed, late, _) = run(&mut op, &[("A", 10, 0), ("A", 30, 0), ("A", 12, 0)]);
    assert_eq!(closed[1], vec![row("A", 10, 15, 1)]);
    assert_eq!(late, vec![12]);
    assert_eq!(op.open_windows(), 1, "[30,35) still open");
}

#[test]
fn example_3_clock_is_the_minimum_over_partitions() {
    let mut op = WindowOperator::new(spec(
        WindowKind::Tumbling {
            size: 10,
            offset: 0,
        },
        2,
    ));
    op.assign(0, 0);
    op.assign(1, 0);
    let (closed, _, clocks) = run(&mut op, &[("A", 5, 0), ("A", 8, 1), ("A", 25, 0)]);
    assert_eq!(
        clocks,
        vec![None, Some(5), Some(8)],
        "p1 unseen holds the clock, then the min"
    );
    assert!(
        closed.iter().all(|c| c.is_empty()),
        "[0,10) needs a clock of 12"
    );
    // p0 keeps producing while p1 goes idle: the clock moves to p0's max and [0,10) closes.
    let (b, p) = batch(&[("A", 26, 0)]);
    let out = op.process(&b, &p, 1_500_000).unwrap();
    assert_eq!(rows(&out.closed.unwrap()), vec![row("A", 0, 10, 2)]);
    assert_eq!(op.clock(), Some(26));
}

#[test]
fn a_record_exactly_at_a_window_end_belongs_to_the_next_window() {
    let mut op = WindowOperator::new(spec(
        WindowKind::Tumbling {
            size: 10,
            offset: 0,
        },
        0,
    ));
    op.assign(0, 0);
    let (closed, late, _) = run(&mut op, &[("A", 9, 0), ("A", 10, 0)]);
    assert_eq!(
        closed[1],
        vec![row("A", 0, 10, 1)],
        "clock 10 closes [0,10) with grace 0"
    );
    assert!(late.is_empty());
}

#[test]
fn a_clock_at_exactly_end_plus_grace_closes_the_window() {
    let mut op = WindowOperator::new(spec(
        WindowKind::Tumbling {
            size: 10,
            offset: 0,
        },
        5,
    ));
    op.assign(0, 0);
    let (closed, late, _) = run(
        &mut op,
        &[
            ("A", 2, 0),
            ("A", 14, 0),
            ("A", 9, 0),
            ("A", 15, 0),
            ("A", 9, 0),
        ],
    );
    assert!(
        closed[1].is_empty() && closed[2].is_empty(),
        "clock 14: 14 - 5 < 10, open; A@9 on time"
    );
    assert_eq!(
        closed[3],
        vec![row("A", 0, 10, 2)],
        "clock 15: 15 - 5 >= 10, closed"
    );
    assert_eq!(late, vec![9], "the second A@9 arrives after the close");
}

#[test]
fn session_records_exactly_gap_apart_share_a_session() {
    let mut op = WindowOperator::new(spec(WindowKind::Session { gap: 5 }, 0));
    op.assign(0, 0);
    let (closed, _, _) = run(&mut op, &[("A", 10, 0), ("A", 15, 0), ("A", 21, 0)]);
    // 10 and 15 are 5 apart (<= gap): one session [10, 20). 21 is 6 after 15: a new one,
    // and the clock 21 > 15 + 5 closes the first.
    assert_eq!(closed[2], vec![row("A", 10, 20, 2)]);
}

#[test]
fn session_bridging_record_merges_two_open_sessions() {
    let mut op = WindowOperator::new(spec(WindowKind::Session { gap: 5 }, 100));
    op.assign(0, 0);
    run(&mut op, &[("A", 10, 0), ("A", 20, 0), ("A", 15, 0)]);
    assert_eq!(op.open_windows(), 1, "15 is within 5 of both 10 and 20");
    let out = op.process(&batch(&[("A", 1000, 0)]).0, &[0], 0).unwrap();
    assert_eq!(rows(&out.closed.unwrap()), vec![row("A", 10, 25, 3)]);
}

#[test]
fn negative_timestamps_use_floor_division() {
    assert_eq!(tumbling_start(-1, 10, 0), -10);
    assert_eq!(tumbling_start(-10, 10, 0), -10);
    assert_eq!(tumbling_start(-11, 10, 0), -20);
    assert_eq!(tumbling_start(7, 10, 3), 3);
    assert_eq!(
        hopping_starts(-1, 10, 5, 0).collect::<Vec<_>>(),
        vec![-10, -5]
    );
    let mut op = WindowOperator::new(spec(
        WindowKind::Tumbling {
            size: 10,
            offset: 0,
        },
        0,
    ));
    op.assign(0, 0);
    let (closed, _, _) = run(&mut op, &[("A", -15, 0), ("A", -1, 0), ("A", 0, 0)]);
    assert_eq!(closed[1], vec![row("A", -20, -10, 1)]);
    assert_eq!(closed[2], vec![row("A", -10, 0, 1)]);
}

#[test]
fn hopping_record_late_for_some_windows_only_is_not_late() {
    // size 10, advance 5: t=12 belongs to [5,15) and [10,20).
    let mut op = WindowOperator::new(spec(
        WindowKind::Hopping {
            size: 10,
            advance: 5,
            offset: 0,
        },
        0,
    ));
    op.assign(0, 0);
    let (b, p) = batch(&[("A", 16, 0)]);
    op.process(&b, &p, 0).unwrap(); // clock 16: [5,15) is closed
    let (b, p) = batch(&[("A", 12, 0)]);
    let out = op.process(&b, &p, 0).unwrap();
    assert!(out.late.is_empty(), "one of its windows is still open");
    assert_eq!(out.skipped_assignments, 1);
    assert_eq!(out.accepted, 1);
    let (b, p) = batch(&[("A", 7, 0)]); // [0,10) and [5,15): both closed
    let out = op.process(&b, &p, 0).unwrap();
    assert_eq!(out.late.len(), 1);
    assert_eq!(
        (
            out.late[0].missed_start_ms,
            out.late[0].missed_end_ms,
            out.late[0].clock_ms
        ),
        (5, 15, 16)
    );
    assert_eq!(out.skipped_assignments, 2);
}

#[test]
fn idle_and_never_seen_partitions() {
    let mut op = WindowOperator::new(WindowSpec {
        idle_timeout_ms: 100,
        ..spec(
            WindowKind::Tumbling {
                size: 10,
                offset: 0,
            },
            0,
        )
    });
    op.assign(0, 0);
    op.assign(1, 0); // never produces
    let (b, p) = batch(&[("A", 50, 0)]);
    op.process(&b, &p, 10).unwrap();
    assert_eq!(
        op.clock(),
        None,
        "a never-seen partition holds the clock until it is idle"
    );
    let (b, p) = batch(&[("A", 60, 0)]);
    op.process(&b, &p, 150).unwrap();
    assert_eq!(op.clock(), Some(60), "after 100ms of wall time p1 is idle");
    // All idle: the clock stays.
    op.tick(10_000).unwrap();
    assert_eq!(op.clock(), Some(60));
}

#[test]
fn aggregates_ignore_nulls_and_report_record_count_and_max_event_time() {
    let mut s = spec(
        WindowKind::Tumbling {
            size: 10,
            offset: 0,
        },
        0,
    );
    s.aggregates = [
        "count(*) AS n",
        "count(v) AS nv",
        "sum(v) AS total",
        "min(v) AS lo",
        "max(v) AS hi",
        "avg(v) AS mean",
        "count_distinct(v) AS d",
    ]
    .iter()
    .map(|a| AggregateSpec::parse(a).unwrap())
    .collect();
    let mut op = WindowOperator::new(s);
    op.assign(0, 0);
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new(
            "t",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("v", DataType::Int64, true),
    ]));
    let b = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["A", "A", "A", "A", "A"])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![1000, 2000, 3000, 4000, 20_000])
                    .with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from(vec![
                Some(4),
                None,
                Some(2),
                Some(4),
                Some(0),
            ])),
        ],
    )
    .unwrap();
    let out = op.process(&b, &[0; 5], 0).unwrap();
    let c = out.closed.unwrap();
    let get = |n: &str| c.column_by_name(n).unwrap().clone();
    assert_eq!(get("n").as_primitive::<Int64Type>().value(0), 4);
    assert_eq!(get("nv").as_primitive::<Int64Type>().value(0), 3);
    assert_eq!(get("total").as_primitive::<Int64Type>().value(0), 10);
    assert_eq!(get("lo").as_primitive::<Int64Type>().value(0), 2);
    assert_eq!(get("hi").as_primitive::<Int64Type>().value(0), 4);
    assert!(
        (get("mean")
            .as_primitive::<arrow::datatypes::Float64Type>()
            .value(0)
            - 10.0 / 3.0)
            .abs()
            < 1e-12
    );
    assert_eq!(get("d").as_primitive::<Int64Type>().value(0), 2);
    assert_eq!(get("record_count").as_primitive::<Int64Type>().value(0), 4);
    assert_eq!(
        get("max_event_time")
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        4_000
    );
    assert!(!get("lo").is_null(0));
}

fn collect_all(
    kind: WindowKind,
    grace: i64,
    recs: &[(String, i64, u32)],
    splits: &[usize],
) -> (Vec<Row>, Vec<i64>) {
    let mut op = WindowOperator::new(spec(kind, grace));
    op.assign(0, 0);
    op.assign(1, 0);
    let leaked: Vec<Rec> = recs
        .iter()
        .map(|(k, t, p)| (&*Box::leak(k.clone().into_boxed_str()), *t, *p))
        .collect();
    let mut out_rows = Vec::new();
    let mut late = Vec::new();
    let mut start = 0;
    let mut cuts: Vec<usize> = splits.iter().map(|s| s % (recs.len() + 1)).collect();
    cuts.push(recs.len());
    cuts.sort();
    for cut in cuts {
        if cut <= start {
            continue;
        }
        let (b, p) = batch(&leaked[start..cut]);
        let out = op.process(&b, &p, 0).unwrap();
        if let Some(c) = out.closed {
            out_rows.extend(rows(&c));
        }
        late.extend(out.late.iter().map(|l| l.event_time_ms));
        start = cut;
    }
    (out_rows, late)
}

proptest! {
    #[test]
    fn any_split_into_batches_gives_the_same_output(
        recs in proptest::collection::vec(("[AB]", -50i64..200, 0u32..2), 1..80),
        splits in proptest::collection::vec(0usize..100, 0..6),
        kind in 0u8..3,
        grace in 0i64..20,
    ) {
        let kind = match kind {
            0 => WindowKind::Tumbling { size: 10, offset: 0 },
            1 => WindowKind::Hopping { size: 10, advance: 5, offset: 0 },
            _ => WindowKind::Session { gap: 7 },
        };
        let whole = collect_all(kind, grace, &recs, &[]);
        let split = collect_all(kind, grace, &recs, &splits);
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn every_record_is_accepted_or_late(
        recs in proptest::collection::vec(("[AB]", -50i64..200, 0u32..2), 1..80),
        grace in 0i64..20,
    ) {
        let mut op = WindowOperator::new(spec(WindowKind::Hopping { size: 10, advance: 5, offset: 0 }, grace));
        op.assign(0, 0);
        op.assign(1, 0);
        let leaked: Vec<Rec> = recs.iter().map(|(k, t, p)| (&*Box::leak(k.clone().into_boxed_str()), *t, *p)).collect();
        let (b, p) = batch(&leaked);
        let out = op.process(&b, &p, 0).unwrap();
        prop_assert_eq!(out.accepted + out.late.len() as u64, recs.len() as u64);
    }
}

#[test]
fn needed_offsets_track_the_oldest_record_of_open_windows() {
    let mut op = WindowOperator::new(spec(
        WindowKind::Tumbling {
            size: 10,
            offset: 0,
        },
        0,
    ));
    op.assign(0, 0);
    let (b, p) = batch(&[("A", 1, 0), ("A", 2, 0), ("A", 11, 0), ("A", 12, 0)]);
    op.process_at(&b, &p, &[100, 101, 102, 103], 0).unwrap();
    // [0,10) closed at clock 11: only [10,20) is open, holding offsets 102 and 103.
    assert_eq!(op.needed_offsets().get(&0), Some(&102));
    op.restore_clock(Some(5));
    assert_eq!(op.clock(), Some(12), "restoring never moves the clock back");
}

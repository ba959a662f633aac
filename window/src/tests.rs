//! Golden tests for every rule and worked example of docs/windows.md, plus boundary cases.

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
        max_future_skew_ms: None,
        reference_time_column: None,
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
        max_future_skew_ms: None,
        reference_time_column: None,
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

#[test]
fn a_record_joins_its_open_session_before_it_is_judged_late() {
    // Gap 4, grace 2, one partition: the second A@10 joins the open session [10, 14] (which
    // closes only when the clock passes 20), though a session of its own, [10, 14), would be
    // closed at clock 17.
    let mut op = WindowOperator::new(spec(WindowKind::Session { gap: 4 }, 2));
    op.assign(0, 0);
    let (closed, late, _) = run(
        &mut op,
        &[
            ("A", 10, 0),
            ("A", 14, 0),
            ("B", 17, 0),
            ("A", 10, 0),
            ("B", 100, 0),
        ],
    );
    assert!(late.is_empty(), "nothing is late: {late:?}");
    let mut all: Vec<Row> = closed.into_iter().flatten().collect();
    all.sort();
    assert_eq!(all, vec![row("A", 10, 18, 3), row("B", 17, 21, 1)]);
}

#[test]
fn a_far_future_record_neither_moves_the_clock_nor_joins_a_window() {
    let mut s = spec(
        WindowKind::Tumbling {
            size: 10,
            offset: 0,
        },
        0,
    );
    s.max_future_skew_ms = Some(1_000);
    s.reference_time_column = Some("r".into());
    let mut op = WindowOperator::new(s);
    op.assign(0, 0);
    // (event time, reference time) in ms; the third is 10 years past its reference.
    let recs = [(1, 1), (5, 3), (315_360_000_000, 6), (12, 12), (9, 13)];
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), false),
        Field::new("r", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        Field::new("v", DataType::Int64, true),
    ]));
    let b = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(recs.iter().map(|_| "A"))),
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                recs.iter().map(|r| r.0 * 1000),
            )),
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                recs.iter().map(|r| r.1 * 1000),
            )),
            Arc::new(Int64Array::from_iter_values(recs.iter().map(|r| r.0))),
        ],
    )
    .unwrap();
    let out = op.process(&b, &[0; 5], 0).unwrap();
    assert_eq!(out.future, vec![2]);
    assert_eq!(
        op.clock(),
        Some(12),
        "the future record did not move the clock"
    );
    assert_eq!(
        out.closed.map(|c| rows(&c)).unwrap_or_default(),
        vec![row("A", 0, 10, 2)]
    );
    assert_eq!(
        out.late.iter().map(|l| l.event_time_ms).collect::<Vec<_>>(),
        vec![9]
    );
    assert_eq!(out.accepted, 3);
}

#[test]
fn replay_after_a_restore_gives_the_clock_of_the_uninterrupted_run() {
    // Two partitions. Uninterrupted: p0 reaches 50, p1 reaches 30, so the clock is 30; then
    // p1 gets 40 and the clock goes to 40. After a restart at clock 30, only records held by
    // open windows are replayed (p0's 50 among them, p0's 20 not): p1's 40 must still give 40.
    let kind = WindowKind::Tumbling {
        size: 100,
        offset: 0,
    };
    let mut whole = WindowOperator::new(spec(kind, 0));
    let mut restarted = WindowOperator::new(spec(kind, 0));
    for op in [&mut whole, &mut restarted] {
        op.assign(0, 0);
        op.assign(1, 0);
    }
    run(
        &mut whole,
        &[("A", 20, 0), ("A", 50, 0), ("A", 30, 1), ("A", 40, 1)],
    );
    restarted.restore_clock(Some(30));
    run(&mut restarted, &[("A", 50, 0), ("A", 40, 1)]);
    assert_eq!(whole.clock(), Some(40));
    assert_eq!(restarted.clock(), Some(40));
}

#[test]
fn reset_forgets_open_windows_and_the_clock() {
    let mut op = WindowOperator::new(spec(WindowKind::Session { gap: 5 }, 0));
    op.assign(0, 0);
    run(&mut op, &[("A", 1, 0), ("B", 3, 0)]);
    assert_eq!(op.open_windows(), 2);
    op.reset();
    assert_eq!((op.open_windows(), op.clock()), (0, None));
}

/// An independent implementation of the session rules of docs/windows.md, record by record,
/// with every partition in `parts` holding the clock until it has a record (no idleness).
fn reference_sessions(
    recs: &[(String, i64, u32)],
    parts: u32,
    gap: i64,
    grace: i64,
) -> (Vec<Row>, Vec<i64>) {
    let mut maxes: Vec<Option<i64>> = vec![None; parts as usize];
    let mut clock: Option<i64> = None;
    // Open sessions: (key, first, last, count).
    let mut open: Vec<(String, i64, i64, i64)> = Vec::new();
    let (mut emitted, mut late) = (Vec::new(), Vec::new());
    for (k, t, p) in recs {
        let m = &mut maxes[*p as usize];
        *m = Some(m.map_or(*t, |m| m.max(*t)));
        if maxes.iter().all(Option::is_some) {
            let min = maxes.iter().flatten().min().copied();
            clock = clock.max(min);
        }
        let line = clock.map(|c| c - grace);
        // Close: C - grace > last + gap.
        let mut still = Vec::new();
        for s in open {
            if line.is_some_and(|l| l > s.2 + gap) {
                emitted.push((s.0, s.1, s.2 + gap, s.3));
            } else {
                still.push(s);
            }
        }
        open = still;
        // Records at most gap apart share a session; only open sessions take records.
        let (joined, rest): (Vec<_>, Vec<_>) = open
            .into_iter()
            .partition(|s| s.0 == *k && *t >= s.1 - gap && *t <= s.2 + gap);
        open = rest;
        if joined.is_empty() && line.is_some_and(|l| l > t + gap) {
            late.push(*t);
            continue;
        }
        let merged = joined.into_iter().fold((k.clone(), *t, *t, 1), |a, s| {
            (a.0, a.1.min(s.1), a.2.max(s.2), a.3 + s.3)
        });
        open.push(merged);
    }
    emitted.sort();
    late.sort();
    (emitted, late)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Sessions over random out-of-order input equal the reference implementation above.
    #[test]
    fn sessions_equal_an_independent_implementation_of_the_rules(
        recs in proptest::collection::vec(("[ABC]", 0i64..120, 0u32..2), 1..120),
        gap in 1i64..12,
        grace in 0i64..10,
    ) {
        let (mut rows_got, mut late_got) =
            collect_all(WindowKind::Session { gap }, grace, &recs, &[]);
        rows_got.sort();
        late_got.sort();
        let (rows_want, late_want) = reference_sessions(&recs, 2, gap, grace);
        prop_assert_eq!(rows_got, rows_want);
        prop_assert_eq!(late_got, late_want);
    }
}

#[test]
fn open_rows_are_the_running_values_and_the_closed_row_is_the_last_of_them() {
    let mut op = WindowOperator::new(spec(
        WindowKind::Tumbling {
            size: 10,
            offset: 0,
        },
        5,
    ));
    op.assign(0, 0);
    assert!(op.open_rows().unwrap().is_none(), "nothing open yet");
    run(
        &mut op,
        &[("B", 2, 0), ("A", 1, 0), ("A", 4, 0), ("A", 12, 0)],
    );
    let open = rows(&op.open_rows().unwrap().unwrap());
    // Window order, then key: [0,10) for A and B, then [10,20) for A.
    assert_eq!(
        open,
        vec![row("A", 0, 10, 2), row("B", 0, 10, 1), row("A", 10, 20, 1)]
    );
    // A@16 closes [0,10): its committed rows are what the open rows showed.
    let (closed, _, _) = run(&mut op, &[("A", 16, 0)]);
    assert_eq!(closed[0], vec![row("A", 0, 10, 2), row("B", 0, 10, 1)]);
    assert_eq!(
        rows(&op.open_rows().unwrap().unwrap()),
        vec![row("A", 10, 20, 2)]
    );
}

#[test]
fn an_open_session_ends_at_its_last_record_plus_the_gap() {
    let mut op = WindowOperator::new(spec(WindowKind::Session { gap: 5 }, 0));
    op.assign(0, 0);
    run(&mut op, &[("A", 10, 0), ("A", 13, 0)]);
    assert_eq!(
        rows(&op.open_rows().unwrap().unwrap()),
        vec![row("A", 10, 18, 2)]
    );
}

/// Per-partition windows over `recs`, fed in batches of `chunk` records: the closed rows as
/// (partition, key, start, end, count) sorted, and the late records as (partition, time).
/// Closed rows with their partition, and late records as (partition, event time).
type PerPartition = (Vec<(i32, Row)>, Vec<(u32, i64)>);

fn per_partition(recs: &[Rec], chunk: usize) -> PerPartition {
    let mut spec = spec(
        WindowKind::Tumbling {
            size: 1000,
            offset: 0,
        },
        0,
    );
    spec.aggregates
        .push(AggregateSpec::parse("avg(v) AS mean").unwrap());
    let (whole, _) = batch(recs);
    let mut w = PartitionWindows::new(spec, whole.schema()).unwrap();
    for p in 0..2 {
        w.open(p, ("t", p as i32), None, 0).unwrap();
    }
    let mut closed = Vec::new();
    let mut late = Vec::new();
    for part in recs.chunks(chunk) {
        let (b, pids) = batch(part);
        let mut runs: Vec<(std::ops::Range<usize>, u32)> = Vec::new();
        for (i, p) in pids.iter().enumerate() {
            match runs.last_mut() {
                Some((r, q)) if q == p => r.end = i + 1,
                _ => runs.push((i..i + 1, *p)),
            }
        }
        let offsets: Vec<i64> = (0..part.len() as i64).collect();
        let out = w.process_runs(&b, &runs, &offsets, 0).unwrap();
        late.extend(out.late.iter().map(|l| (pids[l.row], l.event_time_ms)));
        if let Some(c) = out.closed {
            let parts = c
                .column_by_name("_kafka_partition")
                .unwrap()
                .as_primitive::<arrow::datatypes::Int32Type>();
            let weights = c
                .column_by_name("_n_mean")
                .unwrap()
                .as_primitive::<Int64Type>();
            for (i, r) in rows(&c).into_iter().enumerate() {
                assert_eq!(weights.value(i), r.3, "every record has a v");
                closed.push((parts.value(i), r));
            }
        }
    }
    closed.sort();
    late.sort();
    (closed, late)
}

#[test]
fn each_partition_closes_its_own_windows_by_its_own_clock() {
    // Partition 0 runs ahead to 5 s: its [1, 2) closes and its A@1.5 s is late. Partition 1
    // is at 1.2 s: its [1, 2) stays open until its own clock passes 2 s.
    let recs: Vec<Rec> = vec![
        ("A", 1000, 0),
        ("A", 1200, 1),
        ("A", 5000, 0),
        ("A", 1500, 0),
        ("A", 1900, 1),
    ];
    let (closed, late) = per_partition(&recs, recs.len());
    assert_eq!(closed, vec![(0, ("A".into(), 1000, 2000, 1))]);
    assert_eq!(late, vec![(0, 1500)]);
    let mut more = recs.clone();
    more.push(("B", 3000, 1));
    let (closed, _) = per_partition(&more, more.len());
    assert_eq!(
        closed,
        vec![
            (0, ("A".into(), 1000, 2000, 1)),
            (1, ("A".into(), 1000, 2000, 2)),
        ]
    );
}

proptest! {
    /// What each partition emits depends on its own records in order, not on how the
    /// partitions interleave or how the input is split into batches.
    #[test]
    fn per_partition_output_ignores_interleaving(
        p0 in proptest::collection::vec((0..3usize, 0..20_000i64), 1..40),
        p1 in proptest::collection::vec((0..3usize, 0..20_000i64), 1..40),
        chunk in 1..10usize,
    ) {
        let keys = ["A", "B", "C"];
        let tag = |v: &Vec<(usize, i64)>, p: u32| -> Vec<Rec> {
            v.iter().map(|(k, t)| (keys[*k], *t, p)).collect()
        };
        let (a, b) = (tag(&p0, 0), tag(&p1, 1));
        let mut sequential = a.clone();
        sequential.extend(b.iter().cloned());
        let mut alternating = Vec::new();
        for i in 0..a.len().max(b.len()) {
            alternating.extend(a.get(i).cloned());
            alternating.extend(b.get(i).cloned());
        }
        prop_assert_eq!(per_partition(&sequential, 1000), per_partition(&alternating, chunk));
    }
}

#[test]
fn rows_of_a_partition_that_is_not_open_are_refused() {
    let (b, _) = batch(&[("A", 1, 0)]);
    let mut w = PartitionWindows::new(
        spec(
            WindowKind::Tumbling {
                size: 10,
                offset: 0,
            },
            0,
        ),
        b.schema(),
    )
    .unwrap();
    let err = w.process_runs(&b, &[(0..1, 7)], &[0], 0).unwrap_err();
    assert!(matches!(err, WindowError::UnknownPartition(7)), "{err}");
}

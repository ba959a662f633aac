//! The ledger's rules, one by one, with plain values.

use std::collections::BTreeMap;

use crate::*;

fn stored(events: Option<i64>, dead: Option<i64>, late: Option<i64>, agg: Option<i64>) -> Stored {
    Stored {
        events,
        dead_letter: dead,
        late: vec![late],
        aggregates: vec![agg],
        clocks: vec![None],
    }
}

fn pending<'a>(
    rows: &'a [Table],
    needed: &'a [BTreeMap<i32, i64>],
    clocks: &'a [Option<i64>],
) -> Pending<'a, i32> {
    Pending {
        rows,
        needed,
        clocks,
        partition_clocks: &[],
    }
}

#[test]
fn a_fresh_partition_starts_at_the_start_position() {
    let mut l = Ledger::new(1, 1);
    assert_eq!(l.resume(0, &Stored::empty(1, 1), 42), 42);
    for t in [
        Table::Events,
        Table::DeadLetter,
        Table::Late(0),
        Table::Aggregate(0),
    ] {
        assert_eq!(l.threshold(&0, t), Some(42), "{t:?}");
    }
}

#[test]
fn a_partition_resumes_at_the_lowest_offset_a_table_needs() {
    let mut l = Ledger::new(1, 1);
    // Open windows need offset 30; the events are committed to 100.
    assert_eq!(
        l.resume(0, &stored(Some(100), Some(120), Some(7), Some(30)), 0),
        30
    );
    assert_eq!(l.threshold(&0, Table::Events), Some(100));
    assert_eq!(l.threshold(&0, Table::DeadLetter), Some(120));
    assert_eq!(
        l.threshold(&0, Table::Late(0)),
        Some(100),
        "late at 7 is behind the events"
    );
    assert_eq!(l.threshold(&0, Table::Aggregate(0)), Some(30));
    // Replayed records: fed to the windows, written nowhere else.
    for o in 30..100 {
        assert!(l.admit(&0, o));
        assert!(l.wants(&0, Table::Aggregate(0), o));
        assert!(!l.wants(&0, Table::Events, o));
        assert!(!l.wants(&0, Table::Late(0), o));
    }
    assert!(l.wants(&0, Table::Events, 100));
    assert!(!l.wants(&0, Table::DeadLetter, 119));
    assert!(l.wants(&0, Table::DeadLetter, 120));
}

#[test]
fn an_aggregate_without_progress_starts_with_the_events() {
    let mut l = Ledger::new(0, 2);
    let s = Stored {
        events: Some(50),
        dead_letter: None,
        late: vec![],
        aggregates: vec![Some(20), None],
        clocks: vec![None, None],
    };
    assert_eq!(l.resume(0, &s, 0), 20);
    assert_eq!(l.threshold(&0, Table::Aggregate(1)), Some(50));
}

#[test]
fn redeliveries_and_foreign_partitions_are_not_admitted() {
    let mut l = Ledger::new(0, 0);
    l.resume(0, &Stored::empty(0, 0), 10);
    assert!(!l.admit(&0, 9));
    assert!(l.admit(&0, 10));
    assert!(!l.admit(&0, 10), "a redelivery");
    assert!(
        l.admit(&0, 15),
        "a gap (compacted or deleted records) moves on"
    );
    assert!(!l.admit(&1, 0), "not owned");
    let mut admitted = Vec::new();
    l.admit_run(&0, &[14, 15, 16, 18], 7, &mut admitted);
    assert_eq!(
        admitted,
        vec![9, 10],
        "16 and 18, at positions 7 + 2 and 7 + 3"
    );
    assert_eq!(l.next(&0), Some(19));
    l.release(&0);
    assert!(!l.admit(&0, 19), "released");
}

#[test]
fn a_flush_commits_in_order_and_only_tables_with_something_to_say() {
    let mut l = Ledger::new(2, 1);
    l.resume(0, &Stored::empty(2, 1), 0);
    l.resume(1, &Stored::empty(2, 1), 0);
    for o in 0..10 {
        l.admit(&0, o);
    }
    let needed = [BTreeMap::from([(0, 4)])];
    let plan = l.plan(&pending(
        &[Table::Late(1), Table::Events],
        &needed,
        &[Some(77)],
    ));
    let tables: Vec<Table> = plan.iter().map(|c| c.table).collect();
    assert_eq!(
        tables,
        vec![
            Table::Late(1),
            Table::Aggregate(0),
            Table::Events,
            Table::Aggregate(0)
        ]
    );
    assert_eq!(
        plan[0].progress,
        vec![(0, 10)],
        "only partitions read past their progress"
    );
    assert_eq!(
        plan[1].progress,
        vec![(0, 0)],
        "the anchor: where partition 0 started"
    );
    assert_eq!((plan[1].clock, plan[1].rows), (None, false));
    assert_eq!(
        plan[2].progress,
        vec![(0, 10), (1, 0)],
        "partitions read past their progress, and where a partition with none started"
    );
    assert_eq!(
        plan[3].progress,
        vec![(0, 4), (1, 0)],
        "every owned partition"
    );
    assert_eq!(plan[3].clock, Some(77));
    for c in &plan {
        l.record(c);
    }
    assert_eq!(l.committed(&0, Table::Late(1)), Some(10));
    assert_eq!(
        l.committed(&0, Table::Late(0)),
        Some(i64::MIN),
        "never committed"
    );
    assert_eq!(l.committed_clock(0), Some(77));
    // Nothing new: nothing to commit.
    assert!(l.plan(&pending(&[], &needed, &[Some(77)])).is_empty());
    // The clock moved (an idle partition let windows close): the aggregate commits alone.
    let plan = l.plan(&pending(&[], &needed, &[Some(90)]));
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0].table, Table::Aggregate(0));
}

#[test]
fn an_aggregate_progress_never_moves_back() {
    // Committed by an older sluice whose aggregates committed before the events: the
    // aggregate is ahead of the events table.
    let mut l = Ledger::new(0, 1);
    assert_eq!(l.resume(0, &stored(Some(40), None, None, Some(100)), 0), 40);
    for o in 40..60 {
        l.admit(&0, o);
        assert!(!l.wants(&0, Table::Aggregate(0), o));
    }
    let plan = l.plan(&pending(&[], &[BTreeMap::new()], &[None]));
    assert_eq!(plan.len(), 1, "events only: {plan:?}");
    assert_eq!(plan[0].progress, vec![(0, 60)]);
}

#[test]
fn the_retention_floor_ignores_tables_with_nothing_pending() {
    // One old dead letter (progress 1) and one old late row (3) do not hold the floor back.
    assert_eq!(
        stored(Some(500), Some(1), Some(3), Some(480)).retention_floor(),
        Some(480)
    );
    assert_eq!(
        stored(Some(500), Some(1), Some(3), None).retention_floor(),
        Some(500)
    );
    assert_eq!(
        stored(None, Some(1), None, Some(480)).retention_floor(),
        None,
        "not started"
    );
    let mut l = Ledger::new(1, 1);
    l.resume(0, &stored(Some(500), Some(1), Some(3), Some(480)), 0);
    assert_eq!(l.stored(&0).and_then(|s| s.retention_floor()), Some(480));
}

#[test]
fn a_first_flush_that_dies_after_the_events_commit_keeps_the_aggregate_anchored() {
    let mut l = Ledger::new(0, 1);
    l.resume(0, &Stored::empty(0, 1), 100);
    for o in 100..150 {
        l.admit(&0, o);
    }
    let plan = l.plan(&pending(&[], &[BTreeMap::from([(0, 120)])], &[Some(5)]));
    let tables: Vec<Table> = plan.iter().map(|c| c.table).collect();
    assert_eq!(
        tables,
        vec![Table::Aggregate(0), Table::Events, Table::Aggregate(0)]
    );
    // Dies after the anchor and the events commit: the tables hold events 150, aggregate 100.
    let stored = Stored {
        events: Some(150),
        dead_letter: None,
        late: vec![],
        aggregates: vec![Some(100)],
        clocks: vec![None],
    };
    let mut again = Ledger::new(0, 1);
    assert_eq!(
        again.resume(0, &stored, 0),
        100,
        "the windows of 100..150 are rebuilt"
    );
    assert!(again.wants(&0, Table::Aggregate(0), 100));
    assert!(!again.wants(&0, Table::Events, 149));
    // Dies after the anchor only: nothing was committed for the partition, start afresh.
    let stored = Stored {
        events: None,
        dead_letter: None,
        late: vec![],
        aggregates: vec![Some(100)],
        clocks: vec![None],
    };
    assert_eq!(again.resume(0, &stored, 130), 130);
    assert_eq!(again.threshold(&0, Table::Aggregate(0)), Some(130));
    // Once anchored, a later flush needs no anchor.
    l.plan(&pending(&[], &[BTreeMap::from([(0, 120)])], &[Some(5)]))
        .iter()
        .for_each(|c| l.record(c));
    l.admit(&0, 150);
    let tables: Vec<Table> = l
        .plan(&pending(&[], &[BTreeMap::from([(0, 120)])], &[Some(5)]))
        .iter()
        .map(|c| c.table)
        .collect();
    assert_eq!(tables, vec![Table::Events]);
}

#[test]
fn a_partition_without_progress_records_where_it_started() {
    // Assigned at `latest` (offset 70) and stopped before a record arrived: the next flush
    // records 70, so that a restart does not resolve `latest` again and skip what came since.
    let mut l = Ledger::new(0, 0);
    l.resume(0, &Stored::empty(0, 0), 70);
    let stored = Stored {
        events: Some(10),
        ..Stored::empty(0, 0)
    };
    l.resume(1, &stored, 0);
    let plan = l.plan(&pending(&[], &[], &[]));
    assert_eq!(plan.len(), 1);
    assert_eq!(
        (plan[0].table, &plan[0].progress),
        (Table::Events, &vec![(0, 70)])
    );
    l.record(&plan[0]);
    assert!(l.plan(&pending(&[], &[], &[])).is_empty(), "recorded once");
}

#[test]
fn per_partition_clocks_commit_when_they_move_and_resume_from_the_table() {
    let mut l = Ledger::new(0, 1);
    let s = Stored {
        events: Some(10),
        aggregates: vec![Some(5)],
        clocks: vec![Some(500)],
        ..Stored::empty(0, 1)
    };
    assert_eq!(l.resume(0, &s, 0), 5);
    assert_eq!(l.partition_clock(&0, 0), Some(500));
    let needed = [BTreeMap::from([(0, 5)])];
    let same = [BTreeMap::from([(0, 500)])];
    let plan = l.plan(&Pending {
        rows: &[],
        needed: &needed,
        clocks: &[None],
        partition_clocks: &same,
    });
    assert!(plan.is_empty(), "nothing moved: {plan:?}");
    let moved = [BTreeMap::from([(0, 900), (1, 50)])];
    let plan = l.plan(&Pending {
        rows: &[],
        needed: &needed,
        clocks: &[None],
        partition_clocks: &moved,
    });
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0].table, Table::Aggregate(0));
    assert_eq!(
        plan[0].partition_clocks,
        vec![(0, 900)],
        "only owned partitions"
    );
    assert_eq!(plan[0].clock, None);
    l.record(&plan[0]);
    assert_eq!(l.partition_clock(&0, 0), Some(900));
    assert_eq!(l.stored(&0).unwrap().clocks, vec![Some(900)]);
}

#[test]
fn a_dead_letter_or_late_commit_during_a_replay_never_lowers_their_progress() {
    // Partition 0 crashed after its dead-letter and late commits (150) and before its events
    // commit (100): it replays from 100. A flush at 120 commits dead-letter and late rows (of
    // partition 1): partition 0's progress there must stay 150, or its records 120..150 would
    // be written to them again.
    let mut l = Ledger::new(1, 0);
    l.resume(0, &stored(Some(100), Some(150), Some(150), None), 0);
    l.resume(1, &stored(Some(40), Some(40), Some(40), None), 0);
    for o in 100..120 {
        l.admit(&0, o);
    }
    for o in 40..60 {
        l.admit(&1, o);
    }
    let plan = l.plan(&pending(&[Table::DeadLetter, Table::Late(0)], &[], &[]));
    for c in plan.iter().filter(|c| c.table != Table::Events) {
        assert_eq!(c.progress, vec![(0, 150), (1, 60)], "{:?}", c.table);
    }
    plan.iter().for_each(|c| l.record(c));
    assert_eq!(l.threshold(&0, Table::DeadLetter), Some(150));
    assert_eq!(l.threshold(&0, Table::Late(0)), Some(150));
    assert!(!l.wants(&0, Table::DeadLetter, 130));
    assert!(l.wants(&0, Table::Events, 120));
}

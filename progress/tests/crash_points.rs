//! A pipeline simulated over plain values: the [`Ledger`] decides, the real window operator
//! computes, an in-memory lake commits. A crash before any commit of any flush, a fence by a
//! second instance, a rebalance and a foreign commit must all leave the tables an
//! uninterrupted run leaves.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit, TimestampMicrosecondType};
use sluice_config::{AggregateSpec, WindowKind};
use sluice_progress::{Commit, Ledger, Pending, Stored, Table};
use sluice_window::{WindowOperator, WindowSpec};

#[derive(Clone, Debug)]
struct Rec {
    key: &'static str,
    t: i64,
    bad: bool,
}

/// Records per partition; a record's offset is its index.
type Log = Vec<Vec<Rec>>;

/// A closed window: (key, start, end, count).
type Row = (String, i64, i64, i64);

/// The tables, as the lake holds them.
#[derive(Clone, Debug, Default, PartialEq)]
struct Lake {
    events: Vec<(i32, i64)>,
    dead: Vec<(i32, i64)>,
    late: Vec<(i32, i64)>,
    agg: Vec<Row>,
    txns: BTreeMap<(Table, i32), i64>,
    /// The aggregate table's clock `txn`.
    clock: Option<i64>,
    /// The clock in the aggregate table's latest commit info, which a foreign commit hides.
    /// Nothing may restore from it.
    latest_commit_clock: Option<i64>,
    /// Commits made so far.
    made: usize,
}

impl Lake {
    fn stored(&self, p: i32) -> Stored {
        let get = |t| self.txns.get(&(t, p)).copied();
        Stored {
            events: get(Table::Events),
            dead_letter: get(Table::DeadLetter),
            late: vec![get(Table::Late(0))],
            aggregates: vec![get(Table::Aggregate(0))],
            clocks: vec![None],
        }
    }

    /// A compaction, a property change or a vacuum: a commit that leaves every `txn` alone.
    fn foreign_commit(&mut self) {
        self.latest_commit_clock = None;
    }

    /// The rows, the events' and aggregates' progress and the clock: what a run must give
    /// whatever its crashes. (The dead-letter and late tables' progress depends on which
    /// flushes had rows.)
    fn sorted(&self) -> Lake {
        let mut l = self.clone();
        l.txns
            .retain(|(t, _), _| matches!(t, Table::Events | Table::Aggregate(_)));
        l.events.sort();
        l.dead.sort();
        l.late.sort();
        l.agg.sort();
        l.latest_commit_clock = None;
        l.made = 0;
        l
    }
}

#[derive(Default)]
struct Buffers {
    events: Vec<(i32, i64)>,
    dead: Vec<(i32, i64)>,
    late: Vec<(i32, i64)>,
    agg: Vec<Row>,
}

enum Flushed {
    Done,
    Crashed,
    Fenced,
}

fn window_spec(kind: WindowKind, grace: i64) -> WindowSpec {
    WindowSpec {
        kind,
        grace_ms: grace,
        group_by: vec!["key".into()],
        aggregates: vec![AggregateSpec::parse("count(*) AS n").unwrap()],
        event_time_column: "t".into(),
        idle_timeout_ms: i64::MAX / 4,
        max_future_skew_ms: None,
        reference_time_column: None,
    }
}

fn closed_rows(b: &RecordBatch) -> Vec<Row> {
    let k = b.column(0).as_string::<i32>();
    let ts = |name| {
        b.column_by_name(name)
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>()
            .clone()
    };
    let (s, e) = (ts("window_start"), ts("window_end"));
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

/// One instance of the pipeline: its ledger, window operator, buffers and read positions.
struct Instance {
    spec: WindowSpec,
    ledger: Ledger<i32>,
    op: WindowOperator,
    buf: Buffers,
    /// The `txn` versions this instance's writers last saw (their snapshots).
    seen: BTreeMap<(Table, i32), i64>,
    seen_clock: Option<i64>,
    /// Next offset to read per owned partition.
    pos: BTreeMap<i32, i64>,
}

impl Instance {
    fn start(spec: &WindowSpec, lake: &Lake, parts: &[i32], all_parts: &[i32]) -> Self {
        let mut i = Instance {
            spec: spec.clone(),
            ledger: Ledger::new(1, 1),
            op: WindowOperator::new(spec.clone()),
            buf: Buffers::default(),
            seen: BTreeMap::new(),
            seen_clock: None,
            pos: BTreeMap::new(),
        };
        i.reload(lake, parts, all_parts);
        i
    }

    /// Loads the tables' progress and clock; every buffer and open window is dropped.
    fn reload(&mut self, lake: &Lake, parts: &[i32], all_parts: &[i32]) {
        self.ledger = Ledger::new(1, 1);
        self.op = WindowOperator::new(self.spec.clone());
        self.buf = Buffers::default();
        self.seen = lake.txns.clone();
        self.seen_clock = lake.clock;
        self.pos.clear();
        for p in all_parts {
            self.op.assign(*p as u32, 0);
        }
        self.ledger.restore_clocks(&[lake.clock]);
        self.op.restore_clock(lake.clock);
        for p in parts {
            let at = self.ledger.resume(*p, &lake.stored(*p), 0);
            self.pos.insert(*p, at);
        }
    }

    /// Reads up to `n` records round-robin from the owned partitions; false when none is left.
    fn poll(&mut self, log: &Log, n: usize) {
        for _ in 0..n {
            let mut any = false;
            let owned: Vec<i32> = self.pos.keys().copied().collect();
            for p in owned {
                let at = self.pos[&p];
                if let Some(r) = log[p as usize].get(at as usize) {
                    self.pos.insert(p, at + 1);
                    self.process(p, at, r);
                    any = true;
                }
            }
            if !any {
                return;
            }
        }
    }

    fn process(&mut self, p: i32, off: i64, r: &Rec) {
        if !self.ledger.admit(&p, off) {
            return;
        }
        if r.bad {
            if self.ledger.wants(&p, Table::DeadLetter, off) {
                self.buf.dead.push((p, off));
            }
            return;
        }
        if self.ledger.wants(&p, Table::Aggregate(0), off) {
            let schema = Arc::new(Schema::new(vec![
                Field::new("key", DataType::Utf8, false),
                Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), false),
            ]));
            let b = RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(StringArray::from(vec![r.key])),
                    Arc::new(TimestampMicrosecondArray::from(vec![r.t * 1000])),
                ],
            )
            .unwrap();
            let out = self.op.process_at(&b, &[p as u32], &[off], 0).unwrap();
            if let Some(c) = out.closed {
                self.buf.agg.extend(closed_rows(&c));
            }
            if !out.late.is_empty() && self.ledger.wants(&p, Table::Late(0), off) {
                self.buf.late.push((p, off));
            }
        }
        if self.ledger.wants(&p, Table::Events, off) {
            self.buf.events.push((p, off));
        }
    }

    /// Commits what is buffered in the ledger's order; dies before commit number `n` (over
    /// the lake's life) for each `n` in `crashes`, taking it out.
    fn flush(&mut self, lake: &mut Lake, crashes: &mut BTreeSet<usize>) -> Flushed {
        let needed: BTreeMap<i32, i64> = self
            .op
            .needed_offsets()
            .into_iter()
            .map(|(p, o)| (p as i32, o))
            .collect();
        let mut rows = Vec::new();
        for (t, n) in [
            (Table::DeadLetter, self.buf.dead.len()),
            (Table::Late(0), self.buf.late.len()),
            (Table::Events, self.buf.events.len()),
            (Table::Aggregate(0), self.buf.agg.len()),
        ] {
            if n > 0 {
                rows.push(t);
            }
        }
        let plan = self.ledger.plan(&Pending {
            rows: &rows,
            needed: &[needed],
            clocks: &[self.op.clock()],
            partition_clocks: &[],
        });
        for c in plan {
            if crashes.remove(&lake.made) {
                return Flushed::Crashed;
            }
            if !self.commit(lake, &c) {
                return Flushed::Fenced;
            }
            self.ledger.record(&c);
        }
        Flushed::Done
    }

    /// One Delta commit: refused (fenced) when another writer moved one of its `txn`s since
    /// this instance's snapshot, as the lake's writer does.
    fn commit(&mut self, lake: &mut Lake, c: &Commit<i32>) -> bool {
        let moved = |k: &(Table, i32)| lake.txns.get(k) != self.seen.get(k);
        if c.progress.iter().any(|(p, _)| moved(&(c.table, *p)))
            || (matches!(c.table, Table::Aggregate(_)) && lake.clock != self.seen_clock)
        {
            return false;
        }
        match c.table {
            _ if !c.rows => {}
            Table::DeadLetter => lake.dead.append(&mut self.buf.dead),
            Table::Late(_) => lake.late.append(&mut self.buf.late),
            Table::Events => lake.events.append(&mut self.buf.events),
            Table::Aggregate(_) => {
                lake.agg.append(&mut self.buf.agg);
                lake.latest_commit_clock = c.clock;
                if c.clock.is_some() {
                    lake.clock = c.clock;
                    self.seen_clock = c.clock;
                }
            }
        }
        for (p, v) in &c.progress {
            lake.txns.insert((c.table, *p), *v);
            self.seen.insert((c.table, *p), *v);
        }
        lake.made += 1;
        true
    }

    fn done(&self, log: &Log) -> bool {
        self.pos
            .iter()
            .all(|(p, at)| *at as usize >= log[*p as usize].len())
    }
}

/// Runs the pipeline over `log` with one instance owning every partition, flushing every
/// `every` polls; dies before the commits numbered in `crashes` and restarts from the lake;
/// makes a foreign commit after every flush when asked.
fn run(spec: &WindowSpec, log: &Log, every: usize, crashes: &[usize], foreign: bool) -> Lake {
    let parts: Vec<i32> = (0..log.len() as i32).collect();
    let mut lake = Lake::default();
    let mut crashes: BTreeSet<usize> = crashes.iter().copied().collect();
    'restart: loop {
        let mut inst = Instance::start(spec, &lake, &parts, &parts);
        loop {
            inst.poll(log, every);
            match inst.flush(&mut lake, &mut crashes) {
                Flushed::Crashed => continue 'restart,
                Flushed::Fenced => unreachable!("one instance is never fenced"),
                Flushed::Done => {}
            }
            if foreign {
                lake.foreign_commit();
            }
            if inst.done(log) {
                return lake;
            }
        }
    }
}

/// Panics with what differs between two lakes' sorted contents.
fn assert_same(got: &Lake, want: &Lake, what: &str) {
    let (g, w) = (got.sorted(), want.sorted());
    if g == w {
        return;
    }
    fn diff<T: Ord + Clone + std::fmt::Debug>(name: &str, g: &[T], w: &[T]) -> String {
        let gs: BTreeSet<T> = g.iter().cloned().collect();
        let ws: BTreeSet<T> = w.iter().cloned().collect();
        let extra: Vec<_> = gs.difference(&ws).collect();
        let missing: Vec<_> = ws.difference(&gs).collect();
        format!(
            "{name}: {} rows against {}; extra {extra:?}; missing {missing:?}\n",
            g.len(),
            w.len()
        )
    }
    panic!(
        "{what}:\n{}{}{}{}txns {:?} against {:?}; clock {:?} against {:?}",
        diff("events", &g.events, &w.events),
        diff("dead", &g.dead, &w.dead),
        diff("late", &g.late, &w.late),
        diff("agg", &g.agg, &w.agg),
        g.txns,
        w.txns,
        g.clock,
        w.clock
    );
}

/// A deterministic log: out-of-order event times, some of them late, some bad records, and
/// a last record per partition far ahead that closes every earlier window.
fn log(parts: usize, per_part: usize, seed: u64) -> Log {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut rnd = move |m: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % m
    };
    (0..parts)
        .map(|_| {
            let mut v: Vec<Rec> = (0..per_part)
                .map(|i| Rec {
                    key: ["A", "B", "C"][rnd(3) as usize],
                    // Time moves forward with up to 40 ms of disorder.
                    t: (i as i64) * 3 + rnd(40) as i64,
                    bad: rnd(17) == 0,
                })
                .collect();
            v.push(Rec {
                key: "Z",
                t: 1_000_000,
                bad: false,
            });
            v
        })
        .collect()
}

fn tumbling(grace: i64) -> WindowSpec {
    window_spec(
        WindowKind::Tumbling {
            size: 20,
            offset: 0,
        },
        grace,
    )
}

/// Events and dead letters exactly once, no window twice; with `counts` (tumbling and
/// session windows, where a record is in one window) every good record in a window or late.
fn assert_exactly_once(lake: &Lake, log: &Log, counts: bool) {
    let good: BTreeSet<(i32, i64)> = positions(log, false);
    let bad: BTreeSet<(i32, i64)> = positions(log, true);
    let events: BTreeSet<_> = lake.events.iter().copied().collect();
    assert_eq!(events.len(), lake.events.len(), "an event row twice");
    assert_eq!(events, good);
    let dead: BTreeSet<_> = lake.dead.iter().copied().collect();
    assert_eq!(dead.len(), lake.dead.len(), "a dead letter twice");
    assert_eq!(dead, bad);
    let windows: BTreeSet<_> = lake.agg.iter().map(|r| (&r.0, r.1)).collect();
    assert_eq!(windows.len(), lake.agg.len(), "a window emitted twice");
    if !counts {
        return;
    }
    // Every good record is in a window or late, never both, never neither (the last record
    // of each partition is in a window still open).
    let counted: i64 = lake.agg.iter().map(|r| r.3).sum();
    assert_eq!(
        counted + lake.late.len() as i64,
        good.len() as i64 - log.len() as i64
    );
}

fn positions(log: &Log, bad: bool) -> BTreeSet<(i32, i64)> {
    log.iter()
        .enumerate()
        .flat_map(|(p, recs)| {
            recs.iter()
                .enumerate()
                .filter(move |(_, r)| r.bad == bad)
                .map(move |(o, _)| (p as i32, o as i64))
        })
        .collect()
}

#[test]
fn a_crash_before_any_commit_of_any_flush_gives_the_uninterrupted_tables() {
    for kind in [
        WindowKind::Tumbling {
            size: 20,
            offset: 0,
        },
        WindowKind::Hopping {
            size: 20,
            advance: 10,
            offset: 0,
        },
    ] {
        let spec = window_spec(kind, 15);
        let log = log(1, 300, 7);
        let whole = run(&spec, &log, 40, &[], false);
        let one_window = !matches!(kind, WindowKind::Hopping { .. });
        assert_exactly_once(&whole, &log, one_window);
        assert!(!whole.late.is_empty(), "the log has late records");
        let total = whole.made;
        assert!(total >= 20, "{total} commits");
        for crash in 0..total {
            let crashed = run(&spec, &log, 40, &[crash], false);
            assert_same(
                &crashed,
                &whole,
                &format!("{kind:?}: crash before commit {crash}"),
            );
        }
        // Several crashes in one run.
        let crashed = run(&spec, &log, 40, &[3, 4, 9, 10, 11, 17], false);
        assert_same(&crashed, &whole, &format!("{kind:?}: six crashes"));
    }
}

#[test]
fn a_crash_with_session_windows_loses_and_doubles_no_event() {
    // Sessions are rebuilt by replay under the restored clock, which can split a session that
    // was open at the crash (docs/windows.md, "Restarts and session windows"): events and
    // dead letters stay exactly once and no session is emitted twice.
    let spec = window_spec(WindowKind::Session { gap: 4 }, 15);
    let log = log(1, 300, 7);
    let whole = run(&spec, &log, 40, &[], false);
    assert_exactly_once(&whole, &log, true);
    for crash in 0..whole.made {
        let crashed = run(&spec, &log, 40, &[crash], false);
        assert_exactly_once(&crashed, &log, false);
    }
}

#[test]
fn the_clock_survives_foreign_commits_between_flushes() {
    let spec = tumbling(15);
    let log = log(1, 300, 11);
    let whole = run(&spec, &log, 40, &[], false);
    for crash in [2, 5, 8, 13] {
        let crashed = run(&spec, &log, 40, &[crash], true);
        assert_same(&crashed, &whole, &format!("crash before commit {crash}"));
    }
}

#[test]
fn crashes_over_three_partitions_lose_and_double_nothing() {
    // With several partitions, which records are late depends on how their records
    // interleave, which a restart changes (docs/windows.md, "Replays and several
    // partitions"): check events, dead letters and windows exactly once, and with a grace no
    // disorder reaches, the exact windows.
    let log = log(3, 200, 5);
    let spec = tumbling(15);
    for crashes in [vec![1], vec![2, 3], vec![4, 8, 9], vec![6, 7, 12, 20]] {
        let lake = run(&spec, &log, 25, &crashes, false);
        assert_exactly_once(&lake, &log, false);
    }
    let wide = tumbling(10_000);
    let whole = run(&wide, &log, 25, &[], false);
    assert!(whole.late.is_empty());
    for crashes in [vec![1], vec![2, 3], vec![4, 8, 9], vec![5, 6, 7, 10]] {
        let crashed = run(&wide, &log, 25, &crashes, false);
        assert_same(&crashed, &whole, &format!("crashes {crashes:?}"));
    }
}

#[test]
fn a_zombie_is_fenced_and_the_new_owner_finishes_exactly_once() {
    // Instance A owns both partitions and stalls with rows buffered; the group moves both to
    // B, which commits; A's next events commit is refused, and A, reloaded, owns nothing.
    // A's dead-letter or late commit may still land first where B has not written yet: then
    // B's next commit to that table is refused in turn, and B reloads and goes on.
    let spec = tumbling(10_000);
    let log = log(2, 150, 3);
    let whole = run(&spec, &log, 20, &[], false);
    let parts = [0, 1];
    let mut lake = Lake::default();
    let mut a = Instance::start(&spec, &lake, &parts, &parts);
    a.poll(&log, 30);
    assert!(matches!(
        a.flush(&mut lake, &mut BTreeSet::new()),
        Flushed::Done
    ));
    a.poll(&log, 30);
    let mut b = Instance::start(&spec, &lake, &parts, &parts);
    b.poll(&log, 50);
    assert!(matches!(
        b.flush(&mut lake, &mut BTreeSet::new()),
        Flushed::Done
    ));
    let events_before = lake.events.clone();
    assert!(matches!(
        a.flush(&mut lake, &mut BTreeSet::new()),
        Flushed::Fenced
    ));
    assert_eq!(
        lake.events, events_before,
        "the zombie's events were refused"
    );
    a.reload(&lake, &[], &parts);
    a.poll(&log, 20);
    assert!(a.buf.events.is_empty() && a.ledger.owned().next().is_none());
    let mut fenced = 0;
    while !b.done(&log) {
        b.poll(&log, 20);
        if let Flushed::Fenced = b.flush(&mut lake, &mut BTreeSet::new()) {
            fenced += 1;
            b.reload(&lake, &parts, &parts);
        }
    }
    assert!(fenced <= 1, "fenced {fenced} times");
    assert_exactly_once(&lake, &log, true);
    assert_same(&lake, &whole, "zombie fenced");
}

#[test]
fn a_partition_revoked_and_assigned_back_resumes_from_the_tables() {
    let spec = tumbling(15);
    let log = log(1, 300, 13);
    let whole = run(&spec, &log, 40, &[], false);
    let mut lake = Lake::default();
    let mut inst = Instance::start(&spec, &lake, &[0], &[0]);
    inst.poll(&log, 100);
    assert!(matches!(
        inst.flush(&mut lake, &mut BTreeSet::new()),
        Flushed::Done
    ));
    inst.poll(&log, 50);
    // Revoked with 50 records read: the shell commits before it lets a partition go.
    assert!(matches!(
        inst.flush(&mut lake, &mut BTreeSet::new()),
        Flushed::Done
    ));
    inst.ledger.release(&0);
    assert!(!inst.ledger.admit(&0, 150));
    // Assigned back: a fresh instance state from the tables.
    inst.reload(&lake, &[0], &[0]);
    while !inst.done(&log) {
        inst.poll(&log, 40);
        assert!(matches!(
            inst.flush(&mut lake, &mut BTreeSet::new()),
            Flushed::Done
        ));
    }
    assert_same(&lake, &whole, "revoked and assigned back");
}

//! Exactly-once bookkeeping of one pipeline, free of I/O: no Kafka client, no object store.
//!
//! A pipeline reads source partitions and, per flush, commits up to four kinds of Delta table.
//! Every commit carries, per source partition, one `txn` version in the same commit as its
//! rows, so rows and progress become visible together or not at all:
//!
//! | table | committed when | its `txn` version per partition |
//! | --- | --- | --- |
//! | dead-letter | it has rows | the next offset to read |
//! | late (one per late table) | it has rows | the next offset to read |
//! | events | records were read, or a partition has no progress yet | the next offset to read |
//! | aggregate (one per aggregate) | rows, progress or clock moved | the lowest offset an open window still needs |
//!
//! Before a partition's first events commit, each aggregate also commits an anchor: its
//! progress where the partition starts. From then on, whenever the events table holds
//! progress for a partition, so does every aggregate that existed then.
//!
//! An aggregate commit also carries the window clock as a `txn` of its own, so that no other
//! writer's commit (a compaction, a property change, a vacuum) can hide it.
//!
//! The [`Ledger`] holds what each table has committed, per partition, and decides from it:
//! - where a partition resumes ([`Ledger::resume`]): the lowest offset any table still needs;
//! - the replay rule ([`Ledger::threshold`]): a record goes to a table only at or above that
//!   table's threshold, so a replay never writes a row twice;
//! - what each commit of a flush records, in commit order ([`Ledger::plan`]);
//! - what the brokers may delete ([`Stored::retention_floor`]).
//!
//! The commit order of a flush is dead letters, late rows, events, aggregates
//! ([`Table`]'s order). Why this order keeps every crash point safe:
//! - Dead-letter and late rows commit before the events of the same flush. A record below the
//!   events table's progress therefore has its dead-letter and late rows committed too, and
//!   those tables never need a replay below it: they do not hold the retention floor back.
//! - Aggregates commit after the events. Between the two commits a crash leaves an
//!   aggregate's progress and clock at the previous flush; the replay rebuilds exactly the
//!   windows that flush would have closed, under the clock they were open under. Records below
//!   the events table's progress are only fed to the windows, never written again.

use std::collections::BTreeMap;

/// A Kafka offset.
pub type Offset = i64;

/// A table a pipeline commits to. The declaration order is the commit order of one flush.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// The dead-letter table.
    DeadLetter,
    /// The late table with this index (aggregates of a pipeline may share one).
    Late(usize),
    /// The events table.
    Events,
    /// The aggregate table of the aggregate with this index.
    Aggregate(usize),
}

/// What a pipeline's tables hold for one source partition: each table's `txn` version for
/// the partition's app id, `None` where the table has none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// The events table: the next offset to read.
    pub events: Option<Offset>,
    /// The dead-letter table: the next offset to read at its last commit with rows.
    pub dead_letter: Option<Offset>,
    /// Each late table: the next offset to read at its last commit with rows.
    pub late: Vec<Option<Offset>>,
    /// Each aggregate table: the lowest offset an open window needed at its last commit.
    pub aggregates: Vec<Option<Offset>>,
    /// Each aggregate table with per-partition windows (`clock = "partition"`): the
    /// partition's window clock at its last commit.
    pub clocks: Vec<Option<i64>>,
}

impl Stored {
    /// Nothing stored yet, for a pipeline with `late_tables` late tables and `aggregates`
    /// aggregates.
    pub fn empty(late_tables: usize, aggregates: usize) -> Self {
        Self {
            events: None,
            dead_letter: None,
            late: vec![None; late_tables],
            aggregates: vec![None; aggregates],
            clocks: vec![None; aggregates],
        }
    }

    /// The offset below which the pipeline needs nothing from the brokers: the events
    /// table's progress, or lower where an aggregate's open windows still need older
    /// records. `None` when the events table has no progress for the partition yet (the
    /// pipeline has not started there: keep everything).
    ///
    /// The dead-letter and late tables do not count: they commit before the events of the
    /// same flush, so below the events table's progress they hold every row they will ever
    /// need. Counting them would let one old bad record cap the brokers' log start until the
    /// next bad record arrives.
    pub fn retention_floor(&self) -> Option<Offset> {
        let events = self.events?;
        Some(
            self.aggregates
                .iter()
                .flatten()
                .fold(events, |f, a| f.min(*a)),
        )
    }
}

/// One commit of a flush: the table, the progress per partition it records, and for an
/// aggregate the window clock it records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit<K> {
    /// The table.
    pub table: Table,
    /// `txn` version per partition.
    pub progress: Vec<(K, Offset)>,
    /// The window clock (aggregate commits only): `None` leaves the stored clock as it is.
    pub clock: Option<i64>,
    /// Per-partition window clocks (aggregate commits of `clock = "partition"` only).
    pub partition_clocks: Vec<(K, i64)>,
    /// Whether the commit carries the table's buffered rows. An anchor carries progress only;
    /// the rows go with the aggregate's commit after the events.
    pub rows: bool,
}

/// What is pending at a flush, beside the records read: which tables hold rows, and per
/// aggregate its open windows' needs and its clock.
#[derive(Clone, Debug)]
pub struct Pending<'a, K> {
    /// Tables holding rows that are not committed yet.
    pub rows: &'a [Table],
    /// Per aggregate: per partition, the lowest offset its open windows hold.
    pub needed: &'a [BTreeMap<K, Offset>],
    /// Per aggregate: its window clock now.
    pub clocks: &'a [Option<i64>],
    /// Per aggregate with per-partition windows: each partition's clock now (empty for the
    /// others).
    pub partition_clocks: &'a [BTreeMap<K, i64>],
}

/// What the tables have committed for one owned partition.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Book {
    /// The next offset to accept from the source.
    next: Offset,
    events: Offset,
    /// `Offset::MIN` when the table has no progress: the events table's progress rules.
    dead_letter: Offset,
    late: Vec<Offset>,
    aggregates: Vec<Offset>,
    /// Whether each aggregate table holds progress for this partition.
    anchored: Vec<bool>,
    /// Each aggregate's committed clock for this partition (per-partition windows).
    clocks: Vec<Option<i64>>,
    /// Whether the events table holds progress for this partition. Until it does, the next
    /// events commit records where the partition started, read or not, so that a restart
    /// resumes there instead of resolving the start position (`latest`, say) again.
    events_stored: bool,
}

/// The exactly-once bookkeeping of one pipeline over the partitions it owns (`K` names a
/// partition, e.g. `(topic, partition)`). See the crate docs for the rules.
#[derive(Clone, Debug)]
pub struct Ledger<K> {
    late_tables: usize,
    aggregates: usize,
    books: BTreeMap<K, Book>,
    /// The clock each aggregate table has committed.
    clocks: Vec<Option<i64>>,
}

impl<K: Ord + Clone> Ledger<K> {
    /// A ledger for a pipeline with `late_tables` late tables and `aggregates` aggregates,
    /// owning no partition yet.
    pub fn new(late_tables: usize, aggregates: usize) -> Self {
        Self {
            late_tables,
            aggregates,
            books: BTreeMap::new(),
            clocks: vec![None; aggregates],
        }
    }

    /// Takes partition `key` over from what its tables store (`fresh_start`, the configured
    /// start position, when the events table has none) and returns the offset to read from:
    /// the lowest offset some table still needs. Replaces what the ledger held for `key`.
    pub fn resume(&mut self, key: K, stored: &Stored, fresh_start: Offset) -> Offset {
        let late = (0..self.late_tables)
            .map(|i| stored.late.get(i).copied().flatten().unwrap_or(Offset::MIN))
            .collect();
        let stored_agg = |j: usize| stored.aggregates.get(j).copied().flatten();
        let (events, aggregates, anchored) = match stored.events {
            // Never committed here: every table starts fresh. An aggregate's progress without
            // the events' is an anchor of a first flush that did not finish, or of a
            // partition that had no record yet.
            None => (
                fresh_start,
                vec![fresh_start; self.aggregates],
                vec![false; self.aggregates],
            ),
            // An aggregate without progress beside the events' was added to the pipeline
            // later (every first events commit is preceded by the aggregates' anchors): it
            // starts where the events are and never pulls the start back.
            Some(events) => (
                events,
                (0..self.aggregates)
                    .map(|j| stored_agg(j).unwrap_or(events))
                    .collect(),
                (0..self.aggregates)
                    .map(|j| stored_agg(j).is_some())
                    .collect(),
            ),
        };
        let next = aggregates.iter().fold(events, |n: Offset, a| n.min(*a));
        self.books.insert(
            key,
            Book {
                next,
                events,
                dead_letter: stored.dead_letter.unwrap_or(Offset::MIN),
                late,
                aggregates,
                anchored,
                clocks: (0..self.aggregates)
                    .map(|j| stored.clocks.get(j).copied().flatten())
                    .collect(),
                events_stored: stored.events.is_some(),
            },
        );
        next
    }

    /// Sets the clocks the aggregate tables have committed (read with their progress).
    pub fn restore_clocks(&mut self, clocks: &[Option<i64>]) {
        for (j, c) in self.clocks.iter_mut().enumerate() {
            *c = clocks.get(j).copied().flatten();
        }
    }

    /// The clock aggregate `j`'s table has committed.
    pub fn committed_clock(&self, j: usize) -> Option<i64> {
        self.clocks.get(j).copied().flatten()
    }

    /// The clock aggregate `j`'s table has committed for partition `key` (per-partition
    /// windows).
    pub fn partition_clock(&self, key: &K, j: usize) -> Option<i64> {
        self.books.get(key)?.clocks.get(j).copied().flatten()
    }

    /// Gives partition `key` up (revoked): its records are no longer admitted.
    pub fn release(&mut self, key: &K) {
        self.books.remove(key);
    }

    /// The partitions owned.
    pub fn owned(&self) -> impl Iterator<Item = &K> {
        self.books.keys()
    }

    /// Whether partition `key` is owned.
    pub fn owns(&self, key: &K) -> bool {
        self.books.contains_key(key)
    }

    /// Admits the record at `offset` of `key`: true when it is at or past the next offset
    /// expected (which moves past it), false for a redelivery or a partition not owned.
    pub fn admit(&mut self, key: &K, offset: Offset) -> bool {
        match self.books.get_mut(key) {
            Some(b) if offset >= b.next => {
                b.next = offset + 1;
                true
            }
            _ => false,
        }
    }

    /// [`Ledger::admit`] for a run of records of one partition in offset order (one lookup):
    /// pushes `first + i` onto `admitted` for each admitted `offsets[i]`.
    pub fn admit_run(
        &mut self,
        key: &K,
        offsets: &[Offset],
        first: usize,
        admitted: &mut Vec<usize>,
    ) {
        let Some(b) = self.books.get_mut(key) else {
            return;
        };
        for (i, o) in offsets.iter().enumerate() {
            if *o >= b.next {
                b.next = o + 1;
                admitted.push(first + i);
            }
        }
    }

    /// The next offset expected from `key`.
    pub fn next(&self, key: &K) -> Option<Offset> {
        self.books.get(key).map(|b| b.next)
    }

    /// The replay rule: a record of `key` goes to `table` only when its offset is at least
    /// this (`None`: not owned, it goes nowhere).
    ///
    /// - events: the events table's progress;
    /// - dead-letter and late: the higher of their own progress and the events table's (a
    ///   record below the events table's progress had its rows committed with it);
    /// - an aggregate: its own progress, which may be lower than the events table's: records
    ///   between the two are fed to the windows again to rebuild the open ones, and never
    ///   written to any other table.
    pub fn threshold(&self, key: &K, table: Table) -> Option<Offset> {
        let b = self.books.get(key)?;
        Some(match table {
            Table::Events => b.events,
            Table::DeadLetter => b.dead_letter.max(b.events),
            Table::Late(i) => b.late.get(i).copied().unwrap_or(Offset::MIN).max(b.events),
            Table::Aggregate(j) => b.aggregates.get(j).copied().unwrap_or(b.events),
        })
    }

    /// [`Ledger::threshold`] as a predicate.
    pub fn wants(&self, key: &K, table: Table, offset: Offset) -> bool {
        self.threshold(key, table).is_some_and(|t| offset >= t)
    }

    /// What table `table` has committed for `key`.
    pub fn committed(&self, key: &K, table: Table) -> Option<Offset> {
        let b = self.books.get(key)?;
        Some(match table {
            Table::Events => b.events,
            Table::DeadLetter => b.dead_letter,
            Table::Late(i) => b.late.get(i).copied()?,
            Table::Aggregate(j) => b.aggregates.get(j).copied()?,
        })
    }

    /// Partitions with records read past the events table's progress, with their next offset.
    pub fn dirty(&self) -> Vec<(K, Offset)> {
        self.books
            .iter()
            .filter(|(_, b)| b.next > b.events)
            .map(|(k, b)| (k.clone(), b.next))
            .collect()
    }

    /// What the tables hold for `key`, as the ledger knows it: [`Stored::retention_floor`] of
    /// it is what the brokers may delete below.
    pub fn stored(&self, key: &K) -> Option<Stored> {
        let b = self.books.get(key)?;
        let known = |o: Offset| (o != Offset::MIN).then_some(o);
        Some(Stored {
            events: Some(b.events),
            dead_letter: known(b.dead_letter),
            late: b.late.iter().map(|o| known(*o)).collect(),
            aggregates: b.aggregates.iter().map(|o| Some(*o)).collect(),
            clocks: b.clocks.clone(),
        })
    }

    /// The commits of one flush, in commit order. Empty when nothing is pending.
    ///
    /// Dead-letter and late tables commit only when they hold rows; the events table when
    /// records were read; an aggregate when it holds rows or its progress or clock moved.
    pub fn plan(&self, pending: &Pending<'_, K>) -> Vec<Commit<K>> {
        let dirty = self.dirty();
        let has_rows = |t: Table| pending.rows.contains(&t);
        let mut out = Vec::new();
        // A dead-letter or late table's progress never moves back: during a replay below it
        // (after a crash between its commit and the events'), a commit of rows of another
        // partition must not lower it, or the replay would write those rows again.
        let read_progress = |table| Commit {
            table,
            progress: dirty
                .iter()
                .map(|(k, next)| {
                    let stored = self.books.get(k).map_or(Offset::MIN, |b| match table {
                        Table::DeadLetter => b.dead_letter,
                        Table::Late(i) => b.late.get(i).copied().unwrap_or(Offset::MIN),
                        _ => Offset::MIN,
                    });
                    (k.clone(), (*next).max(stored))
                })
                .collect(),
            clock: None,
            partition_clocks: Vec::new(),
            rows: true,
        };
        if has_rows(Table::DeadLetter) {
            out.push(read_progress(Table::DeadLetter));
        }
        for i in 0..self.late_tables {
            if has_rows(Table::Late(i)) {
                out.push(read_progress(Table::Late(i)));
            }
        }
        // Anchors: before a partition's first events commit, each aggregate without
        // progress there records where it starts, so that a crash before its own commit
        // cannot make it look like an aggregate added later.
        for j in 0..self.aggregates {
            let unanchored: Vec<(K, Offset)> = dirty
                .iter()
                .filter_map(|(k, _)| {
                    let b = self.books.get(k)?;
                    let at = *b.aggregates.get(j)?;
                    (!b.anchored.get(j).copied().unwrap_or(true)).then(|| (k.clone(), at))
                })
                .collect();
            if !unanchored.is_empty() {
                out.push(Commit {
                    table: Table::Aggregate(j),
                    progress: unanchored,
                    clock: None,
                    partition_clocks: Vec::new(),
                    rows: false,
                });
            }
        }
        // The events commit also records where a partition without stored progress started.
        let events: Vec<(K, Offset)> = self
            .books
            .iter()
            .filter(|(_, b)| b.next > b.events || !b.events_stored)
            .map(|(k, b)| (k.clone(), b.next))
            .collect();
        if !events.is_empty() || has_rows(Table::Events) {
            out.push(Commit {
                table: Table::Events,
                progress: events,
                clock: None,
                partition_clocks: Vec::new(),
                rows: true,
            });
        }
        for j in 0..self.aggregates {
            let needed = pending.needed.get(j);
            let mut moved = false;
            let progress: Vec<(K, Offset)> = self
                .books
                .iter()
                .map(|(k, b)| {
                    let committed = b.aggregates.get(j).copied().unwrap_or(b.events);
                    // Records below the committed offset are not fed to this aggregate again:
                    // its progress never moves back.
                    let at = needed
                        .and_then(|n| n.get(k))
                        .map_or(b.next, |n| (*n).min(b.next))
                        .max(committed);
                    moved |= committed != at;
                    (k.clone(), at)
                })
                .collect();
            let clock = pending.clocks.get(j).copied().flatten();
            moved |= clock != self.committed_clock(j);
            let partition_clocks: Vec<(K, i64)> = match pending.partition_clocks.get(j) {
                None => Vec::new(),
                Some(clocks) => self
                    .books
                    .iter()
                    .filter_map(|(k, b)| {
                        let c = *clocks.get(k)?;
                        moved |= b.clocks.get(j).copied().flatten() != Some(c);
                        Some((k.clone(), c))
                    })
                    .collect(),
            };
            if moved || has_rows(Table::Aggregate(j)) {
                out.push(Commit {
                    table: Table::Aggregate(j),
                    progress,
                    clock,
                    partition_clocks,
                    rows: true,
                });
            }
        }
        out
    }

    /// Records that `commit` landed.
    pub fn record(&mut self, commit: &Commit<K>) {
        for (k, v) in &commit.progress {
            let Some(b) = self.books.get_mut(k) else {
                continue;
            };
            let slot = match commit.table {
                Table::Events => {
                    b.events_stored = true;
                    &mut b.events
                }
                Table::DeadLetter => &mut b.dead_letter,
                Table::Late(i) => match b.late.get_mut(i) {
                    Some(s) => s,
                    None => continue,
                },
                Table::Aggregate(j) => match b.aggregates.get_mut(j) {
                    Some(s) => {
                        if let Some(a) = b.anchored.get_mut(j) {
                            *a = true;
                        }
                        s
                    }
                    None => continue,
                },
            };
            *slot = *v;
        }
        if let Table::Aggregate(j) = commit.table {
            for (k, c) in &commit.partition_clocks {
                if let Some(slot) = self.books.get_mut(k).and_then(|b| b.clocks.get_mut(j)) {
                    *slot = Some(*c);
                }
            }
        }
        if let (Table::Aggregate(j), Some(c)) = (commit.table, commit.clock)
            && let Some(slot) = self.clocks.get_mut(j)
        {
            *slot = Some(c);
        }
    }
}

#[cfg(test)]
mod tests;

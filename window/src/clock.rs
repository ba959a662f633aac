//! The pipeline clock (docs/windows.md, "The clock").

use std::collections::BTreeMap;

/// Per-partition maxima combined into a clock that never moves backwards.
#[derive(Clone, Debug)]
pub struct Clock {
    idle_timeout_ms: i64,
    /// partition -> (largest event time seen, wall time of the last record or the assignment)
    partitions: BTreeMap<u32, (Option<i64>, i64)>,
    value: Option<i64>,
    /// The restored value: a partition's first record after a restart counts as at least
    /// this, as its maximum was before the restart (see [`Clock::restore`]).
    floor: Option<i64>,
}

impl Clock {
    /// A clock whose partitions go idle after `idle_timeout_ms` of wall time without records.
    pub fn new(idle_timeout_ms: i64) -> Self {
        Self {
            idle_timeout_ms,
            partitions: BTreeMap::new(),
            value: None,
            floor: None,
        }
    }

    /// The clock value `C` (`None` until it first advances).
    pub fn value(&self) -> Option<i64> {
        self.value
    }

    /// Restores a clock value (after a restart), never moving it back.
    ///
    /// Every partition that took part when the clock last advanced had a maximum of at least
    /// the clock, and any record above the clock is held by an open window, so it is replayed.
    /// Counting each partition's maximum from the restored value on therefore gives the clock
    /// the replay would have had without the restart. A partition with no record since the
    /// restart still holds the clock until it goes idle.
    pub fn restore(&mut self, value: Option<i64>) {
        self.value = self.value.max(value);
        self.floor = self.floor.max(value);
    }

    /// A partition was assigned at wall time `now`: until it has a record or goes idle it holds
    /// the clock.
    pub fn assign(&mut self, partition: u32, now: i64) {
        self.partitions.entry(partition).or_insert((None, now));
    }

    /// A partition was taken away: it no longer holds the clock.
    pub fn revoke(&mut self, partition: u32) {
        self.partitions.remove(&partition);
    }

    /// Records event time `t` from `partition` at wall time `now` and advances the clock.
    pub fn observe(&mut self, partition: u32, t: i64, now: i64) -> Option<i64> {
        let e = self.partitions.entry(partition).or_insert((None, now));
        e.0 = Some(e.0.or(self.floor).map_or(t, |m| m.max(t)));
        e.1 = now;
        self.advance(now)
    }

    /// Re-evaluates idleness at wall time `now` and advances the clock if it can.
    pub fn advance(&mut self, now: i64) -> Option<i64> {
        let mut min: Option<i64> = None;
        let mut any_active = false;
        for (max, last) in self.partitions.values() {
            if now - *last >= self.idle_timeout_ms {
                continue; // idle: does not hold the clock
            }
            any_active = true;
            match max {
                None => return self.value, // assigned, no record yet: holds the clock
                Some(m) => min = Some(min.map_or(*m, |x: i64| x.min(*m))),
            }
        }
        if any_active {
            self.value = self.value.max(min);
        }
        self.value
    }
}

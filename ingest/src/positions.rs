//! [`Positions`]: where each row of an events batch came from (topic, partition, offset), read
//! once per batch from the raw records and carried beside the rows through every filter, so
//! that the replay rule and the window operators never decode them back from the columns.

use std::ops::Range;

use arrow::array::BooleanArray;
use sluice_kafka::{RawBatch, TopicPartition};

/// The source position of each row of an events batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Positions {
    /// Runs of consecutive rows from one partition, in row order: records arrive grouped by
    /// partition, so per-partition lookups are made once per run, not once per row.
    pub runs: Vec<(Range<usize>, TopicPartition)>,
    /// The offset of each row.
    pub offsets: Vec<i64>,
}

impl Positions {
    /// The positions of the records `rows` (indices into `raw`, in row order).
    pub fn of(raw: &RawBatch, rows: &[u32]) -> Self {
        let mut runs: Vec<(Range<usize>, TopicPartition)> = Vec::new();
        let mut offsets = Vec::with_capacity(rows.len());
        for (row, &i) in rows.iter().enumerate() {
            let i = i as usize;
            let (topic, partition) = (&raw.topics[i], raw.partitions[i]);
            match runs.last_mut() {
                Some((range, (t, p))) if *p == partition && t == topic => range.end = row + 1,
                _ => runs.push((row..row + 1, (topic.clone(), partition))),
            }
            offsets.push(raw.offsets[i]);
        }
        Self { runs, offsets }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The partition of row `row`.
    pub fn partition_of(&self, row: usize) -> Option<&TopicPartition> {
        let i = self.runs.partition_point(|(range, _)| range.end <= row);
        self.runs
            .get(i)
            .filter(|(range, _)| range.contains(&row))
            .map(|(_, tp)| tp)
    }

    /// (partition, offset) of row `row`.
    pub fn at(&self, row: usize) -> Option<(&TopicPartition, i64)> {
        Some((self.partition_of(row)?, *self.offsets.get(row)?))
    }

    /// The positions of the rows `mask` keeps.
    pub fn filter(&self, mask: &BooleanArray) -> Self {
        let mut runs: Vec<(Range<usize>, TopicPartition)> = Vec::new();
        let mut offsets = Vec::with_capacity(self.len());
        for (range, tp) in &self.runs {
            let start = offsets.len();
            for row in range.clone() {
                if mask.value(row) {
                    offsets.push(self.offsets[row]);
                }
            }
            if offsets.len() > start {
                runs.push((start..offsets.len(), tp.clone()));
            }
        }
        Self { runs, offsets }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sluice_kafka::RawBatchBuilder;

    use super::*;

    fn raw(records: &[(&str, i32, i64)]) -> RawBatch {
        let mut b = RawBatchBuilder::new(records.len(), false);
        for (t, p, o) in records {
            b.push(
                &Arc::from(*t),
                *p,
                *o,
                None,
                -1,
                None,
                Some(b"{}"),
                Vec::new,
            );
        }
        b.finish()
    }

    #[test]
    fn runs_follow_partitions_in_row_order_and_filter_keeps_them_aligned() {
        let raw = raw(&[
            ("a", 0, 5),
            ("a", 0, 6),
            ("a", 1, 9),
            ("b", 1, 2),
            ("a", 0, 7),
        ]);
        // Record 1 did not decode.
        let pos = Positions::of(&raw, &[0, 2, 3, 4]);
        let tp = |t: &str, p: i32| (Arc::<str>::from(t), p);
        assert_eq!(pos.offsets, vec![5, 9, 2, 7]);
        assert_eq!(
            pos.runs,
            vec![
                (0..1, tp("a", 0)),
                (1..2, tp("a", 1)),
                (2..3, tp("b", 1)),
                (3..4, tp("a", 0)),
            ]
        );
        assert_eq!(pos.at(2), Some((&tp("b", 1), 2)));
        assert_eq!(pos.at(4), None);
        let kept = pos.filter(&BooleanArray::from(vec![false, true, false, true]));
        assert_eq!(kept.offsets, vec![9, 7]);
        assert_eq!(kept.runs, vec![(0..1, tp("a", 1)), (1..2, tp("a", 0))]);
        assert_eq!(kept.at(1), Some((&tp("a", 0), 7)));
    }
}

//! sluice-compaction.

//! Crash points for tests: `SLUICE_FAULT=<point>:<n>` aborts the process (no cleanup, like
//! SIGKILL) the n-th time execution reaches `<point>`. Unset, each check is one relaxed load.
//!
//! Ingest points: `before_commit` (data files uploaded, nothing committed),
//! `after_dead_letter_commit` (dead letters committed, events not), `after_aggregate_commit`,
//! `after_events_commit` (events committed, consumer-group offsets not), `after_schema_change`
//! (new columns committed to the events table, the rows that need them not). Tiering points:
//! `tier_after_upload` (archive files uploaded, not committed), `tier_after_commit` (archive
//! committed, DeleteRecords not sent).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static PLAN: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

/// Aborts the process if the configured fault is `point` and this is its n-th hit.
pub fn point(point: &str) {
    let plan = PLAN.get_or_init(|| {
        let v = std::env::var("SLUICE_FAULT").ok()?;
        let (name, n) = v.split_once(':')?;
        Some((name.to_string(), n.parse().ok()?))
    });
    if let Some((name, n)) = plan
        && name == point
        && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *n
    {
        eprintln!("SLUICE_FAULT: aborting at {point} (hit {n})");
        std::process::abort();
    }
}

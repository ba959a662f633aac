//! The process's memory, for `/metrics`: its resident set (from `/proc`) and, with jemalloc as
//! the allocator, the live heap next to the heap's resident pages, which tells growth of the
//! program's data apart from memory the allocator has not returned yet.

use sluice_ingest::metrics;

/// Updates the memory gauges (called when metrics are read).
pub fn refresh_metrics() {
    if let Some(rss) = resident_bytes() {
        metrics::set("sluice_memory_resident_bytes", &[], rss as f64);
    }
    if let Some((allocated, resident)) = heap_bytes() {
        metrics::set("sluice_heap_allocated_bytes", &[], allocated as f64);
        metrics::set("sluice_heap_resident_bytes", &[], resident as f64);
    }
}

/// Resident set size from `/proc/self/status` (Linux), in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// jemalloc's `stats.allocated` and `stats.resident`, refreshed by advancing its epoch.
#[cfg(feature = "jemalloc")]
fn heap_bytes() -> Option<(u64, u64)> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    let allocated = stats::allocated::read().ok()?;
    let resident = stats::resident::read().ok()?;
    Some((allocated as u64, resident as u64))
}

#[cfg(not(feature = "jemalloc"))]
fn heap_bytes() -> Option<(u64, u64)> {
    None
}

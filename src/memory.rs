//! The process's memory, for `/metrics`: its resident set (from `/proc`) and, with jemalloc as
//! the allocator, the live heap next to the heap's resident pages, which tells growth of the
//! program's data apart from memory the allocator has not returned yet.

use sluice_telemetry::spec;

/// Updates the memory gauges (called when metrics are read).
pub fn refresh_metrics() {
    if let Some(rss) = resident_bytes() {
        spec::MEMORY_RESIDENT_BYTES.set([], rss as f64);
    }
    if let Some(heap) = heap_stats() {
        spec::HEAP_ALLOCATED_BYTES.set([], heap.allocated as f64);
        spec::HEAP_RESIDENT_BYTES.set([], heap.resident as f64);
        spec::HEAP_METADATA_BYTES.set([], heap.metadata as f64);
        spec::HEAP_THREAD_CACHE_BYTES.set([], heap.thread_caches as f64);
        spec::HEAP_DIRTY_BYTES.set([], heap.dirty as f64);
    }
}

/// Resident set size from `/proc/self/status` (Linux), in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What jemalloc holds, in bytes: see [`heap_stats`].
#[cfg_attr(not(feature = "jemalloc"), allow(dead_code))]
struct HeapStats {
    /// Live allocations of the program (`stats.allocated`).
    allocated: u64,
    /// Pages of the heap resident in memory (`stats.resident`).
    resident: u64,
    /// The allocator's own bookkeeping (`stats.metadata`).
    metadata: u64,
    /// Freed blocks kept in the threads' caches, over all arenas.
    thread_caches: u64,
    /// Freed pages not yet returned to the system (decaying), over all arenas.
    dirty: u64,
}

/// jemalloc's statistics, refreshed by advancing its epoch. The per-arena ones are read
/// merged over all arenas (`stats.arenas.4096.*`, jemalloc's `MALLCTL_ARENAS_ALL`).
#[cfg(feature = "jemalloc")]
fn heap_stats() -> Option<HeapStats> {
    use tikv_jemalloc_ctl::{Access, AsName, epoch, stats};
    epoch::advance().ok()?;
    let merged = |key: &'static [u8]| -> u64 {
        let value: Result<usize, _> = key.name().read();
        value.map(|v| v as u64).unwrap_or(0)
    };
    let page = {
        let value: Result<usize, _> = b"arenas.page\0".name().read();
        value.unwrap_or(4096) as u64
    };
    Some(HeapStats {
        allocated: stats::allocated::read().ok()? as u64,
        resident: stats::resident::read().ok()? as u64,
        metadata: stats::metadata::read().ok()? as u64,
        thread_caches: merged(b"stats.arenas.4096.tcache_bytes\0"),
        dirty: merged(b"stats.arenas.4096.pdirty\0") * page,
    })
}

#[cfg(not(feature = "jemalloc"))]
fn heap_stats() -> Option<HeapStats> {
    None
}

//! Event-time windows exactly as `docs/windows.md` defines them, free of I/O: Arrow batches in,
//! closed windows and late records out, with the wall clock passed in by the caller.
//!
//! - [`Clock`]: the pipeline clock (watermark): per source partition the largest event time
//!   seen, combined as the minimum over non-idle partitions; it never moves back.
//! - [`WindowOperator`]: assigns each record to its tumbling, hopping or session windows,
//!   record by record (so any split into batches gives the same result), closes windows when
//!   `C - grace` passes them, and reports records whose every window had closed as late.
//! - [`PartitionWindows`]: one operator per source partition, each with its partition's clock
//!   (`clock = "partition"`).

mod aggregate;
mod clock;
mod operator;
mod partitioned;

pub use aggregate::Accumulator;
pub use clock::Clock;
pub use operator::{LateRecord, WindowError, WindowOperator, WindowOutput, WindowSpec};
pub use partitioned::PartitionWindows;

/// `floor(a / b)` for any sign of `a` (b > 0).
pub fn floor_div(a: i64, b: i64) -> i64 {
    a.div_euclid(b)
}

/// The tumbling window `[start, start + size)` holding `t`.
pub fn tumbling_start(t: i64, size: i64, offset: i64) -> i64 {
    floor_div(t - offset, size) * size + offset
}

/// Starts of every hopping window `[k*advance + offset, ... + size)` that contains `t`, ascending.
pub fn hopping_starts(t: i64, size: i64, advance: i64, offset: i64) -> impl Iterator<Item = i64> {
    // The last window starting at or before t, then step back while the window still holds t.
    let last = floor_div(t - offset, advance) * advance + offset;
    let first_k = floor_div(t - offset - size, advance) + 1;
    let first = first_k * advance + offset;
    (0..)
        .map(move |i| first + i * advance)
        .take_while(move |s| *s <= last)
        .filter(move |s| t < s + size)
}

#[cfg(test)]
mod tests;

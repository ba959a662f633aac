//! The lease of a pipeline with `clock = "topic"` aggregates (docs/windows.md, "Windows across
//! instances"): one instance computes the windows, any other instance of the pipeline stands
//! by without consuming and takes over once the lease has not been renewed for
//! `standby_takeover`.
//!
//! The lease is a `txn` (`sluice_lake::lease_app_id`) in a small table of its own
//! ([`sluice_lake::lease_table`]), whose version is the lease's expiry in ms. The active
//! instance renews it there every third of `standby_takeover`, so the pipeline's own tables
//! get no commit for it while nothing happens. The instance taking the lease over:
//! - takes it with a commit to the lease table (two standbys racing: one is fenced);
//! - writes its **epoch** (the expiry it took the lease with) under the same app id into every
//!   table of the pipeline, before it consumes anything;
//! - writes that epoch again in every commit it makes to those tables.
//!
//! An instance that stalled past its lease (a long pause) and comes back finds each of its
//! commits fenced, because a commit fails when a `txn` it writes moved since its snapshot: it
//! stops with [`crate::IngestError::LeaseLost`] instead of computing windows beside the new
//! active instance. A clean stop releases the lease (expiry 0) so a standby takes over at
//! once.

use std::time::{Duration, Instant};

/// What this instance knows of its pipeline's lease.
#[derive(Debug)]
pub struct Lease {
    app_id: String,
    ttl: Duration,
    /// The expiry last written to the lease table (0: not held).
    held: i64,
    /// The epoch this instance wrote into the pipeline's tables when it took the lease.
    epoch: i64,
    /// When the lease table last got a renewal from this instance.
    renewed: Instant,
}

impl Lease {
    /// The lease of pipeline `pipeline`, lasting `ttl` without renewal.
    pub fn new(pipeline: &str, ttl: Duration) -> Self {
        Self {
            app_id: sluice_lake::lease_app_id(pipeline),
            ttl,
            held: 0,
            epoch: 0,
            renewed: Instant::now(),
        }
    }

    /// The lease's app id.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The expiry a write made now carries.
    pub fn next_expiry(&self, now_ms: i64) -> i64 {
        now_ms + self.ttl.as_millis() as i64
    }

    /// Taken with `expiry`, which is also the epoch written into the pipeline's tables.
    pub fn taken(&mut self, expiry: i64) {
        self.epoch = expiry;
        self.renewed(expiry);
    }

    /// The lease table now holds `expiry` from this instance.
    pub fn renewed(&mut self, expiry: i64) {
        self.held = expiry;
        self.renewed = Instant::now();
    }

    /// The expiry this instance last wrote (0: it does not hold the lease).
    pub fn held(&self) -> i64 {
        self.held
    }

    /// The epoch every commit to the pipeline's tables carries (0: not held).
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Whether the lease needs renewing (a third of its time has passed).
    pub fn due(&self) -> bool {
        self.held > 0 && self.renewed.elapsed() >= self.ttl / 3
    }

    /// How long a standby waits before looking again, seeing `expiry` at `now_ms`.
    pub fn standby_wait(expiry: i64, now_ms: i64) -> Duration {
        Duration::from_millis((expiry - now_ms).clamp(50, 1000) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_due_after_a_third_of_its_time_and_only_when_held() {
        let mut l = Lease::new("p", Duration::from_millis(30));
        assert_eq!(l.app_id(), "sluice:p:lease");
        assert!(!l.due(), "not held");
        l.taken(l.next_expiry(1_000));
        assert_eq!((l.held(), l.epoch()), (1_030, 1_030));
        assert!(!l.due());
        std::thread::sleep(Duration::from_millis(12));
        assert!(l.due());
        l.renewed(2_000);
        assert_eq!(
            (l.held(), l.epoch()),
            (2_000, 1_030),
            "a renewal keeps the epoch"
        );
        assert_eq!(Lease::standby_wait(5_000, 1_000), Duration::from_secs(1));
        assert_eq!(Lease::standby_wait(1_010, 1_000), Duration::from_millis(50));
    }
}

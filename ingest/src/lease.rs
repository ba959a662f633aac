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
//!
//! A commit to the lease table whose answer is lost (the store applied it, the client saw an
//! error) is recognised afterwards: every expiry this instance tried to write since its last
//! confirmed one counts as its own.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sluice_lake::{Lake, LakeError, TableSpec, TableWriter, WriterOptions};

/// What a look at the lease table found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// No instance holds it (never taken, released or expired).
    Free,
    /// This instance holds it.
    Us,
    /// Another instance holds it until this time (ms).
    Other(i64),
}

/// A pipeline's lease, as this instance knows it, with the lease table.
pub struct Lease {
    app_id: String,
    ttl: Duration,
    table: TableWriter,
    meta: HashMap<String, serde_json::Value>,
    /// The expiry last confirmed in the lease table from this instance (0: not held).
    held: i64,
    /// Expiries written since, whose commits may or may not have landed.
    attempts: Vec<i64>,
    /// The epoch this instance wrote into the pipeline's tables when it took the lease.
    epoch: i64,
    /// When the lease table last got a renewal from this instance.
    renewed: Instant,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("app_id", &self.app_id)
            .field("held", &self.held)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// Opens (or creates) the lease table of `pipeline` in `lake`: no rows, only the lease's
    /// `txn`. Its log is kept for an hour (maintenance deletes older entries), since it takes a
    /// commit every few seconds for as long as the pipeline runs.
    pub async fn open(lake: &Lake, pipeline: &str, ttl: Duration) -> Result<Self, LakeError> {
        let name = sluice_lake::lease_table(pipeline);
        let schema = arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
            "holder",
            arrow::datatypes::DataType::Utf8,
            true,
        )]);
        let spec = TableSpec {
            partition_columns: Vec::new(),
            properties: HashMap::from([
                ("delta.checkpointInterval".to_string(), "20".to_string()),
                (
                    "delta.logRetentionDuration".to_string(),
                    "interval 1 hours".to_string(),
                ),
            ]),
            description: Some(format!("sluice lease of pipeline {pipeline}")),
        };
        let table = lake.open_or_create(&name, &schema, &spec).await?;
        Ok(Self {
            app_id: sluice_lake::lease_app_id(pipeline),
            ttl,
            table: TableWriter::new(&name, table, WriterOptions::default())?,
            meta: HashMap::from([(
                "sluice.pipeline".to_string(),
                serde_json::Value::from(pipeline),
            )]),
            held: 0,
            attempts: Vec::new(),
            epoch: 0,
            renewed: Instant::now(),
        })
    }

    /// The lease's app id.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The epoch every commit to the pipeline's tables carries (0: not held).
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Whether the lease needs renewing (a third of its time has passed).
    pub fn due(&self) -> bool {
        self.held > 0 && self.renewed.elapsed() >= self.ttl / 3
    }

    /// How long a standby waits before looking again at `now_ms`, another instance holding
    /// the lease until `expiry`.
    pub fn standby_wait(expiry: i64, now_ms: i64) -> Duration {
        Duration::from_millis((expiry - now_ms).clamp(50, 1000) as u64)
    }

    fn is_ours(&self, expiry: i64) -> bool {
        expiry > 0 && (expiry == self.held || self.attempts.contains(&expiry))
    }

    fn confirmed(&mut self, expiry: i64) {
        self.held = expiry;
        self.attempts.clear();
        self.renewed = Instant::now();
    }

    /// Reads the lease table's latest version: who holds the lease at `now_ms`.
    pub async fn look(&mut self, now_ms: i64) -> Result<Holder, LakeError> {
        self.table.refresh().await?;
        let expiry = self.table.progress(&self.app_id).await?.unwrap_or(0);
        if self.is_ours(expiry) {
            self.confirmed(expiry);
            return Ok(Holder::Us);
        }
        Ok(if expiry > now_ms {
            Holder::Other(expiry)
        } else {
            Holder::Free
        })
    }

    /// Writes a new expiry from `now_ms` on the snapshot of the last [`Lease::look`] or
    /// write: fenced when another instance wrote since. Taking the lease sets the epoch.
    pub async fn write(&mut self, now_ms: i64) -> Result<(), LakeError> {
        let expiry = now_ms + self.ttl.as_millis() as i64;
        self.attempts.push(expiry);
        let progress = [(self.app_id.clone(), expiry)];
        self.table
            .commit_progress(&progress, self.meta.clone())
            .await?;
        if self.held == 0 {
            self.epoch = expiry;
        }
        self.confirmed(expiry);
        Ok(())
    }

    /// Sets the epoch to the expiry held (after a take whose answer was lost).
    pub fn take_epoch(&mut self) {
        if self.epoch == 0 {
            self.epoch = self.held;
        }
    }

    /// Gives the lease up (expiry 0).
    pub async fn release(&mut self) -> Result<(), LakeError> {
        let progress = [(self.app_id.clone(), 0)];
        self.table
            .commit_progress(&progress, self.meta.clone())
            .await?;
        self.held = 0;
        Ok(())
    }

    /// Whether this instance holds the lease (has taken it and not released it).
    pub fn held(&self) -> bool {
        self.held > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lease_is_taken_renewed_fenced_and_released_in_its_table() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = sluice_config::LakeConfig {
            root: dir.path().display().to_string(),
            ..Default::default()
        };
        let lake = Lake::new(&cfg).unwrap();
        let ttl = Duration::from_millis(30);
        let mut a = Lease::open(&lake, "p", ttl).await.unwrap();
        let mut b = Lease::open(&lake, "p", ttl).await.unwrap();
        assert_eq!(a.app_id(), "sluice:p:lease");
        assert_eq!(a.look(1_000).await.unwrap(), Holder::Free);
        assert_eq!(b.look(1_000).await.unwrap(), Holder::Free);
        a.write(1_000).await.unwrap();
        assert_eq!(a.epoch(), 1_030);
        // B looked before A's take: its write is fenced, and it sees A's lease.
        assert!(b.write(1_001).await.unwrap_err().is_fenced());
        assert_eq!(b.look(1_010).await.unwrap(), Holder::Other(1_030));
        assert!(a.held());
        a.write(1_020).await.unwrap();
        assert_eq!(a.epoch(), 1_030, "a renewal keeps the epoch");
        assert_eq!(a.look(1_021).await.unwrap(), Holder::Us);
        // Expired: B takes it; A's next renewal is fenced and A no longer holds it.
        assert_eq!(b.look(1_100).await.unwrap(), Holder::Free);
        b.write(1_100).await.unwrap();
        assert!(a.write(1_101).await.unwrap_err().is_fenced());
        assert_eq!(a.look(1_101).await.unwrap(), Holder::Other(1_130));
        b.release().await.unwrap();
        assert!(!b.held());
        assert_eq!(a.look(1_102).await.unwrap(), Holder::Free);
        assert_eq!(Lease::standby_wait(5_000, 1_000), Duration::from_secs(1));
        assert_eq!(Lease::standby_wait(1_010, 1_000), Duration::from_millis(50));
    }
}

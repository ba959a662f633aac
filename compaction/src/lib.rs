//! Upkeep of the tables sluice writes: bin-packing compaction of small files (Delta optimize,
//! `dataChange = false`, safe alongside live ingest commits), and vacuum, including orphan files
//! that a killed writer uploaded but never committed.

use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use sluice_lake::deltalake::DeltaTable;
use sluice_lake::deltalake::operations::optimize::OptimizeType;
use sluice_lake::deltalake::operations::vacuum::VacuumMode;
use sluice_lake::{Lake, LakeError};

/// Vacuum retentions shorter than this need `force`.
pub const MIN_SAFE_RETENTION: Duration = Duration::from_secs(3600);

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum CompactionError {
    /// The table could not be read or written.
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// The table does not exist.
    #[error("table {0} does not exist")]
    NoSuchTable(String),
    /// A vacuum retention below the safety floor without `force`.
    #[error(
        "vacuum retention {0:?} is under 1 hour: files that a running reader or backfill still needs could be deleted; pass --force to do it anyway"
    )]
    UnsafeRetention(Duration),
}

/// Result alias for this crate.
pub type Result<T, E = CompactionError> = std::result::Result<T, E>;

/// Files and bytes of a table's current version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileStats {
    /// Active data files (what a full scan reads).
    pub files: usize,
    /// Their compressed bytes.
    pub bytes: u64,
}

/// The outcome of compacting one table.
#[derive(Clone, Debug, Default)]
pub struct CompactionReport {
    /// The table.
    pub table: String,
    /// Before.
    pub before: FileStats,
    /// After.
    pub after: FileStats,
    /// Files rewritten.
    pub files_removed: u64,
    /// Files written.
    pub files_added: u64,
    /// Partitions touched.
    pub partitions_optimized: u64,
    /// Version created (`None` when there was nothing worth compacting).
    pub version: Option<i64>,
    /// Time taken.
    pub duration: Duration,
}

/// The outcome of vacuuming one table.
#[derive(Clone, Debug, Default)]
pub struct VacuumReport {
    /// The table.
    pub table: String,
    /// Files deleted (or that would be, on a dry run).
    pub files_deleted: Vec<String>,
    /// Nothing was deleted.
    pub dry_run: bool,
}

/// Counts the active files and bytes of a loaded table.
pub fn file_stats(name: &str, table: &DeltaTable) -> Result<FileStats> {
    let snapshot = table.snapshot().map_err(|e| LakeError::delta(name, e))?;
    let mut s = FileStats::default();
    for f in snapshot.log_data().iter() {
        s.files += 1;
        s.bytes += f.size().max(0) as u64;
    }
    Ok(s)
}

/// Rewrites small files of `name` into files of about `target_file_size` per partition, only
/// where at least two files can be merged. Optionally z-orders by `zorder` columns. Commits with
/// `dataChange = false`; a conflict with a concurrent commit is retried by delta-rs, and one
/// that cannot be retried fails this compaction, never an ingest commit.
pub async fn compact(
    lake: &Lake,
    name: &str,
    target_file_size: u64,
    zorder: &[String],
) -> Result<CompactionReport> {
    let started = Instant::now();
    let table = lake
        .open(name)
        .await?
        .ok_or_else(|| CompactionError::NoSuchTable(name.into()))?;
    let before = file_stats(name, &table)?;
    // Nothing rewritten: the table as it was.
    let unchanged = || CompactionReport {
        table: name.into(),
        before,
        after: before,
        duration: started.elapsed(),
        ..Default::default()
    };
    if zorder.is_empty() && !worth_compacting(name, &table, target_file_size)? {
        return Ok(unchanged());
    }
    // delta-rs does not treat two compactions removing the same files as a conflict (their
    // removes have dataChange = false), which would duplicate rows: take a lease first.
    let Some(table) = acquire_lease(name, table).await? else {
        tracing::info!(table = name, "another compaction holds the lease; skipping");
        return Ok(unchanged());
    };
    let result = compact_leased(name, table, target_file_size, zorder, before, started).await;
    release_lease(lake, name).await;
    result
}

/// How long a compaction lease lasts if its holder dies.
const LEASE: Duration = Duration::from_secs(3600);

fn lease_app_id(name: &str) -> String {
    format!("sluice:compaction:{name}")
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// True when some partition has at least two files under the target size.
fn worth_compacting(name: &str, table: &DeltaTable, target: u64) -> Result<bool> {
    let snapshot = table.snapshot().map_err(|e| LakeError::delta(name, e))?;
    let mut small: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for f in snapshot.log_data().iter() {
        if (f.size().max(0) as u64) < target {
            let path = f.path().to_string();
            let dir = path
                .rsplit_once('/')
                .map(|(d, _)| d.to_string())
                .unwrap_or_default();
            let n = small.entry(dir).or_default();
            *n += 1;
            if *n >= 2 {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Takes the table's compaction lease with a txn-only commit; `None` if someone holds it.
async fn acquire_lease(name: &str, table: DeltaTable) -> Result<Option<DeltaTable>> {
    let app = lease_app_id(name);
    if let Some(expiry) = sluice_lake::committed_progress(name, &table, &app).await?
        && expiry > now_ms()
    {
        return Ok(None);
    }
    let mut writer = sluice_lake::TableWriter::new(name, table, Default::default())?;
    let expiry = now_ms() + LEASE.as_millis() as i64;
    match writer.commit(&[(app, expiry)], Default::default()).await {
        Ok(_) => Ok(Some(writer.into_table())),
        Err(e) if e.is_fenced() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn release_lease(lake: &Lake, name: &str) {
    let release = async {
        let table = lake
            .open(name)
            .await?
            .ok_or_else(|| CompactionError::NoSuchTable(name.into()))?;
        let mut writer = sluice_lake::TableWriter::new(name, table, Default::default())?;
        writer
            .commit(&[(lease_app_id(name), 0)], Default::default())
            .await?;
        Ok::<(), CompactionError>(())
    };
    if let Err(e) = release.await {
        tracing::warn!(
            table = name,
            "could not release the compaction lease (it expires on its own): {e}"
        );
    }
}

async fn compact_leased(
    name: &str,
    mut table: DeltaTable,
    target_file_size: u64,
    zorder: &[String],
    before: FileStats,
    started: Instant,
) -> Result<CompactionReport> {
    let version_before = table.version();
    let target = NonZeroU64::new(target_file_size.max(1)).unwrap_or(NonZeroU64::MIN);
    let mut report = CompactionReport {
        table: name.into(),
        before,
        ..Default::default()
    };
    // Optimize bins files by their input sizes; merged small files compress better, so one pass
    // can leave files well under the target. Repeat while a pass still reduces the file count.
    for pass in 0..MAX_PASSES {
        if pass > 0 && !zorder.is_empty() {
            break; // z-ordering rewrites everything: one pass
        }
        let files_now = file_stats(name, &table)?.files;
        let mut builder = table
            .optimize()
            .with_target_size(target)
            .with_max_concurrent_tasks(1);
        if !zorder.is_empty() {
            builder = builder.with_type(OptimizeType::ZOrder(zorder.to_vec()));
        }
        let (next, metrics) = builder.await.map_err(|e| LakeError::delta(name, e))?;
        table = next;
        report.files_removed += metrics.num_files_removed;
        report.files_added += metrics.num_files_added;
        report.partitions_optimized = report
            .partitions_optimized
            .max(metrics.partitions_optimized);
        if metrics.num_files_removed == 0 || file_stats(name, &table)?.files >= files_now {
            break;
        }
    }
    report.after = file_stats(name, &table)?;
    report.version = table
        .version()
        .filter(|v| Some(*v) != version_before)
        .map(|v| v as i64);
    report.duration = started.elapsed();
    tracing::info!(
        table = name,
        files_before = before.files,
        files_after = report.after.files,
        bytes_before = before.bytes,
        bytes_after = report.after.bytes,
        "compacted"
    );
    Ok(report)
}

/// Deletes the `_delta_log` entries older than the table's `delta.logRetentionDuration` (30 days
/// by default) that come before a checkpoint, unless `delta.enableExpiredLogCleanup` is off.
/// Ingest commits leave this to maintenance, which runs it after each compaction (delta-rs would
/// otherwise list the whole log after every commit). Returns the number of entries deleted.
pub async fn clean_expired_logs(lake: &Lake, name: &str) -> Result<usize> {
    use sluice_lake::deltalake::table::config::TablePropertiesExt as _;
    let table = lake
        .open(name)
        .await?
        .ok_or_else(|| CompactionError::NoSuchTable(name.into()))?;
    let enabled = table
        .snapshot()
        .map_err(|e| LakeError::delta(name, e))?
        .table_config()
        .enable_expired_log_cleanup();
    if !enabled {
        return Ok(0);
    }
    let deleted = sluice_lake::deltalake::checkpoints::cleanup_metadata(&table, None)
        .await
        .map_err(|e| LakeError::delta(name, e))?;
    if deleted > 0 {
        tracing::info!(table = name, deleted, "deleted expired log entries");
    }
    Ok(deleted)
}

/// Most optimize passes in one compaction.
const MAX_PASSES: usize = 4;

/// Deletes files that the table no longer references and that are older than `retention`:
/// files removed by compaction, and orphans uploaded by a writer that died before committing.
/// A retention under [`MIN_SAFE_RETENTION`] is refused unless `force`.
pub async fn vacuum(
    lake: &Lake,
    name: &str,
    retention: Duration,
    force: bool,
    dry_run: bool,
) -> Result<VacuumReport> {
    if retention < MIN_SAFE_RETENTION && !force {
        return Err(CompactionError::UnsafeRetention(retention));
    }
    let table = lake
        .open(name)
        .await?
        .ok_or_else(|| CompactionError::NoSuchTable(name.into()))?;
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let (_, metrics) = table
        .vacuum()
        .with_retention_period(retention)
        .with_enforce_retention_duration(false)
        .with_mode(VacuumMode::Full)
        .with_dry_run(dry_run)
        .await
        .map_err(|e| LakeError::delta(name, e))?;
    tracing::info!(
        table = name,
        deleted = metrics.files_deleted.len(),
        dry_run,
        "vacuumed"
    );
    Ok(VacuumReport {
        table: name.into(),
        files_deleted: metrics.files_deleted,
        dry_run,
    })
}

//! [`TableWriter`]: rows into one Delta table, committed together with stream progress.

use std::collections::HashMap;
use std::sync::Arc;

use delta_kernel::expressions::Scalar;
use deltalake::arrow::datatypes::Schema as ArrowSchema;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::scalars::ScalarExt as _;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, Transaction};
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::protocol::{DeltaOperation, OutputMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use deltalake::{DeltaTable, DeltaTableError};
use indexmap::IndexMap;

use crate::{LakeError, Result, table_arrow_schema};

/// Dictionary size at which a column chunk falls back to plain encoding.
const DICTIONARY_PAGE_BYTES: usize = 256 * 1024;

/// How data files are encoded.
#[derive(Clone, Debug)]
pub struct WriterOptions {
    /// Parquet compression.
    pub compression: sluice_config::Compression,
    /// Roll to a new file once one reaches this many compressed bytes.
    pub target_file_size: u64,
    /// Rows per row group.
    pub row_group_rows: usize,
    /// Columns whose values are sorted within files (statistics stay tight for pruning).
    pub sorted_hint: Vec<String>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            compression: sluice_config::Compression::Zstd,
            target_file_size: 128 * 1024 * 1024,
            row_group_rows: 128 * 1024,
            sorted_hint: Vec::new(),
        }
    }
}

impl WriterOptions {
    /// The Parquet writer properties of files written with these options.
    pub fn parquet_properties(&self) -> WriterProperties {
        let compression = match self.compression {
            // Level 1: ingest files are short-lived (compaction rewrites them at delta-rs's
            // level 4); for the bench's events, level 3 made files 0.4% smaller (bench/README.md).
            sluice_config::Compression::Zstd => {
                Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default())
            }
            sluice_config::Compression::Snappy => Compression::SNAPPY,
            sluice_config::Compression::Lz4 => Compression::LZ4_RAW,
            sluice_config::Compression::None => Compression::UNCOMPRESSED,
        };
        WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(self.row_group_rows.max(1)))
            .set_statistics_enabled(EnabledStatistics::Page)
            // A column falls back from dictionary to plain encoding once its dictionary
            // reaches this size. Low-cardinality columns stay far below it; ids and other
            // unique strings fall back after a quarter of the default's values interned
            // (interning was 13% of the ingest profile; bench/README.md).
            .set_dictionary_page_size_limit(DICTIONARY_PAGE_BYTES)
            .build()
    }
}

/// Rows `range` of a batch, all with these partition values.
type PartitionRun = (std::ops::Range<usize>, IndexMap<String, Scalar>);

/// Runs of consecutive rows with equal partition values, with those values, when the batch has
/// few of them (rows arrive in offset order and event dates change rarely). `None` for an
/// unpartitioned table, or when runs are so short that sorting the batch once is cheaper.
fn partition_runs(partition_columns: &[String], batch: &RecordBatch) -> Option<Vec<PartitionRun>> {
    if partition_columns.is_empty() {
        return None;
    }
    let columns = partition_columns
        .iter()
        .map(|n| batch.column_by_name(n).cloned())
        .collect::<Option<Vec<_>>>()?;
    let ranges = deltalake::arrow::compute::kernels::partition::partition(&columns)
        .ok()?
        .ranges();
    if ranges.len() > MAX_PARTITION_RUNS {
        return None;
    }
    ranges
        .into_iter()
        .map(|range| {
            let values = partition_columns
                .iter()
                .zip(&columns)
                .map(|(n, c)| Some((n.clone(), Scalar::from_array(c.as_ref(), range.start)?)))
                .collect::<Option<IndexMap<_, _>>>()?;
            Some((range, values))
        })
        .collect()
}

/// More runs of partition values than this in one batch and the batch is split by sorting.
const MAX_PARTITION_RUNS: usize = 32;

/// Commit attempts that catch up over other writers' commits before the last attempt goes
/// through delta-rs's conflict checker.
const CATCH_UP_ATTEMPTS: usize = 10;

/// Commits after which a writer reloads its snapshot even if none of them wrote a checkpoint.
const RELOAD_EVERY: u64 = 100;

/// Retries the conflict checker gets on that last attempt.
const CHECKED_RETRIES: usize = 50;

/// What [`TableWriter::catch_up`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CatchUp {
    /// The snapshot is at the latest version and no app id's progress moved.
    Moved,
    /// The metadata or protocol changed: the snapshot stayed, the conflict checker decides.
    Unsure,
}

/// What a commit did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitOutcome {
    /// The table version created.
    pub version: i64,
    /// Data files added.
    pub files: usize,
    /// Rows added.
    pub rows: u64,
    /// Bytes added (compressed).
    pub bytes: u64,
    /// Whether the writer first moved its snapshot over other writers' commits.
    pub caught_up: bool,
}

/// Buffers rows for one table and commits them, with progress, in one Delta commit.
///
/// Rows stream into Parquet files as they are written; nothing is visible until
/// [`TableWriter::commit`]. The writer's snapshot moves forward through its own commits, an
/// explicit [`TableWriter::refresh`], or, when a commit attempt finds the table moved, over
/// other writers' commits that left the progress of its app ids untouched; a commit after
/// another writer's progress for the same app id is refused, which is what makes commits fence
/// zombies. After a commit that wrote a checkpoint the snapshot is reloaded from it.
pub struct TableWriter {
    name: String,
    table: DeltaTable,
    schema: Arc<ArrowSchema>,
    /// The table's partition columns.
    partition_columns: Vec<String>,
    options: WriterOptions,
    writer: Option<RecordBatchWriter>,
    /// Files uploaded by [`TableWriter::upload`] and not committed yet.
    uploaded: Vec<deltalake::kernel::Add>,
    rows: u64,
    query_id: String,
    epoch: i64,
    /// Commits since the snapshot was last loaded afresh ([`TableWriter::reload`]).
    commits_since_load: u64,
}

impl std::fmt::Debug for TableWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableWriter")
            .field("table", &self.name)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl TableWriter {
    /// A writer for a loaded table.
    pub fn new(name: &str, table: DeltaTable, options: WriterOptions) -> Result<Self> {
        let schema = table_arrow_schema(name, &table)?;
        let partition_columns = table
            .snapshot()
            .map_err(|e| LakeError::delta(name, e))?
            .metadata()
            .partition_columns()
            .to_vec();
        Ok(Self {
            name: name.into(),
            table,
            schema,
            partition_columns,
            options,
            writer: None,
            uploaded: Vec::new(),
            rows: 0,
            query_id: uuid::Uuid::new_v4().to_string(),
            epoch: 0,
            commits_since_load: 0,
        })
    }

    /// The loaded table, giving up the writer (buffered rows are dropped).
    pub fn into_table(mut self) -> DeltaTable {
        self.abort();
        self.table
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The table's Arrow schema; batches given to [`TableWriter::write`] must have it.
    pub fn schema(&self) -> Arc<ArrowSchema> {
        self.schema.clone()
    }

    /// The loaded table (at the writer's snapshot).
    pub fn table(&self) -> &DeltaTable {
        &self.table
    }

    /// The snapshot version this writer is at.
    pub fn version(&self) -> Option<i64> {
        self.table.version().map(|v| v as i64)
    }

    /// Rows buffered since the last commit.
    pub fn buffered_rows(&self) -> u64 {
        self.rows
    }

    /// Compressed bytes buffered since the last commit (approximate).
    pub fn buffered_bytes(&self) -> u64 {
        self.writer.as_ref().map_or(0, |w| w.buffer_len() as u64)
    }

    /// Buffers a batch (with partition columns) for the next commit.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.writer.is_none() {
            let w = RecordBatchWriter::for_table(&self.table)
                .map_err(|e| LakeError::delta(&self.name, e))?
                .with_writer_properties(self.options.parquet_properties())
                .with_target_file_size(self.options.target_file_size);
            self.writer = Some(w);
        }
        let rows = batch.num_rows() as u64;
        let writer = self.writer.as_mut().ok_or_else(|| LakeError::Config {
            message: "writer vanished".into(),
        })?;
        let written = match partition_runs(&self.partition_columns, &batch) {
            // Each run of rows with the same partition values goes to its partition's file as a
            // zero-copy slice; delta-rs's own split sorts and copies every column of the batch.
            Some(runs) => {
                let mut written = Ok(());
                for (range, values) in runs {
                    let slice = batch.slice(range.start, range.len());
                    if let Err(e) = writer
                        .write_partition(slice, &values, WriteMode::Default)
                        .await
                    {
                        written = Err(e);
                        break;
                    }
                }
                written
            }
            None => writer.write(batch).await,
        };
        if let Err(e) = written {
            self.abort();
            return Err(LakeError::delta(&self.name, e));
        }
        self.rows += rows;
        Ok(())
    }

    /// Drops everything buffered since the last commit (written files become orphans).
    pub fn abort(&mut self) {
        if let Some(mut w) = self.writer.take() {
            w.reset();
        }
        self.uploaded.clear();
        self.rows = 0;
    }

    /// The next offset committed for `app_id` at this writer's snapshot. (Takes `&mut self` so
    /// that the future does not need the writer to be `Sync`.)
    pub async fn progress(&mut self, app_id: &str) -> Result<Option<i64>> {
        crate::committed_progress(&self.name, &self.table, app_id).await
    }

    /// Moves the snapshot to the table's latest version. Only call this when the caller also
    /// re-reads its progress from the table (on assignment or after being fenced).
    pub async fn refresh(&mut self) -> Result<()> {
        self.abort();
        self.table
            .update_state()
            .await
            .map_err(|e| LakeError::delta(&self.name, e))
    }

    /// After a commit found that another writer (a compaction, `sluice compact`, a tiering
    /// round) committed since this writer's snapshot: moves the snapshot to the latest
    /// version, so the commit can be retried on top of it instead of going through delta-rs's
    /// conflict resolution. That resolution builds a whole DataFusion session on every
    /// conflict, which pages in some 15 MB of code and data the service otherwise never runs
    /// (bench/README.md, "Memory over a long run").
    ///
    /// The fence stays: if the progress of any app id in `progress` differs between the two
    /// snapshots, another writer consumed the same partitions and the commit is refused with
    /// [`LakeError::Fenced`] (its files dropped), as the conflict checker would refuse it. If
    /// the newer commits changed the table's metadata or protocol, the writer keeps its
    /// snapshot and returns [`CatchUp::Unsure`]: the caller leaves that decision to the
    /// conflict checker.
    async fn catch_up(&mut self, progress: &[(String, i64)]) -> Result<CatchUp> {
        let version = self.version();
        let mut latest = self.table.clone();
        latest
            .update_state()
            .await
            .map_err(|e| LakeError::delta(&self.name, e))?;
        {
            let old = self
                .table
                .snapshot()
                .map_err(|e| LakeError::delta(&self.name, e))?;
            let new = latest
                .snapshot()
                .map_err(|e| LakeError::delta(&self.name, e))?;
            if old.metadata() != new.metadata() || old.protocol() != new.protocol() {
                return Ok(CatchUp::Unsure);
            }
        }
        for (app_id, _) in progress {
            let was = crate::committed_progress(&self.name, &self.table, app_id).await?;
            let now = crate::committed_progress(&self.name, &latest, app_id).await?;
            if was != now {
                self.abort();
                return Err(LakeError::Fenced {
                    table: self.name.clone(),
                    detail: format!(
                        "progress of {app_id} moved from {was:?} to {now:?} after version {version:?}"
                    ),
                });
            }
        }
        self.table = latest;
        Ok(CatchUp::Moved)
    }

    /// Replaces the snapshot with one loaded afresh at its own version (from the newest
    /// checkpoint). delta-rs moves a snapshot forward commit by commit, keeping each commit's
    /// file actions as a batch of its own: some 20 KB a commit that only a compaction's removes
    /// thin out, so a writer's memory grew with every commit. A snapshot loaded from a
    /// checkpoint holds the same files in one batch (bench/README.md, "Memory over a long
    /// run"). If the load fails the writer keeps the snapshot it has.
    async fn reload(&mut self) {
        let Some(version) = self.table.version() else {
            return;
        };
        let mut fresh = DeltaTable::new(self.table.log_store());
        match fresh.load_version(version).await {
            Ok(()) => {
                self.table = fresh;
                self.commits_since_load = 0;
            }
            Err(e) => tracing::warn!(
                table = %self.name,
                version,
                error = %e,
                "reloading the writer's snapshot failed; keeping the incremental one"
            ),
        }
    }

    /// Adds columns to the table (or nested fields to its struct columns) in a metadata commit
    /// of its own, before any row that needs them; returns the table's new schema. Rows
    /// buffered before are finished into files of the old schema first and stay waiting for
    /// the next [`TableWriter::commit`] (a file without a column reads null in it).
    pub async fn add_columns(
        &mut self,
        fields: &[deltalake::arrow::datatypes::Field],
    ) -> Result<Arc<ArrowSchema>> {
        self.upload().await?;
        self.table = crate::add_columns(&self.name, self.table.clone(), fields).await?;
        self.schema = table_arrow_schema(&self.name, &self.table)?;
        Ok(self.schema.clone())
    }

    /// Finishes and uploads the files of the buffered rows without committing them; returns
    /// how many files are waiting for [`TableWriter::commit`]. Until then they are orphans.
    pub async fn upload(&mut self) -> Result<usize> {
        if let Some(mut w) = self.writer.take() {
            let adds = w.flush().await.map_err(|e| {
                self.rows = 0;
                LakeError::delta(&self.name, e)
            })?;
            self.uploaded.extend(adds);
        }
        Ok(self.uploaded.len())
    }

    /// Commits the buffered rows and the given progress (`app_id` -> next offset) atomically.
    /// Returns `None` when there was nothing to commit. On a fenced commit the buffered rows
    /// are dropped and [`LakeError::Fenced`] is returned.
    pub async fn commit(
        &mut self,
        progress: &[(String, i64)],
        app_metadata: HashMap<String, serde_json::Value>,
    ) -> Result<Option<CommitOutcome>> {
        self.upload().await?;
        let adds = std::mem::take(&mut self.uploaded);
        let rows = std::mem::take(&mut self.rows);
        if adds.is_empty() && progress.is_empty() {
            return Ok(None);
        }
        self.commit_actions(adds, rows, progress, app_metadata)
            .await
            .map(Some)
    }

    /// Applies changes reduced to the last one per key (upsert mode) in one MERGE commit that
    /// also records `progress`; see [`crate::merge::apply`]. Rows written with
    /// [`TableWriter::write`] are not part of it.
    pub async fn merge(
        &mut self,
        how: crate::merge::Apply,
        key: &[String],
        changes: crate::merge::Changes,
        progress: &[(String, i64)],
        app_metadata: HashMap<String, serde_json::Value>,
    ) -> Result<crate::merge::MergeOutcome> {
        let props = self.options.parquet_properties();
        let out = crate::merge::apply_with(
            how,
            &self.name,
            &mut self.table,
            key,
            changes,
            progress,
            app_metadata,
            props,
        )
        .await?;
        self.commits_since_load += 1;
        if self.commits_since_load >= RELOAD_EVERY {
            self.reload().await;
        }
        Ok(out)
    }

    /// Commits progress alone, leaving the buffered rows for the next [`TableWriter::commit`].
    pub async fn commit_progress(
        &mut self,
        progress: &[(String, i64)],
        app_metadata: HashMap<String, serde_json::Value>,
    ) -> Result<CommitOutcome> {
        self.commit_actions(Vec::new(), 0, progress, app_metadata)
            .await
    }

    async fn commit_actions(
        &mut self,
        adds: Vec<deltalake::kernel::Add>,
        rows: u64,
        progress: &[(String, i64)],
        app_metadata: HashMap<String, serde_json::Value>,
    ) -> Result<CommitOutcome> {
        let files = adds.len();
        let bytes: u64 = adds.iter().map(|a| a.size.max(0) as u64).sum();
        let now = chrono::Utc::now().timestamp_millis();
        let actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
        let txns: Vec<Transaction> = progress
            .iter()
            .map(|(id, v)| Transaction::new_with_last_update(id, *v, Some(now)))
            .collect();
        self.epoch += 1;
        // Attempts without delta-rs's conflict checker: an attempt on a stale snapshot fails
        // at once (`MaxCommitAttempts(0)`, before anything is written), the writer catches up
        // and tries again. Only when the table's metadata or protocol moved, or other writers
        // keep winning, does the last attempt go through the conflict checker.
        let mut caught_up = false;
        let mut checked = false;
        let mut attempt = 0;
        let finalized = loop {
            attempt += 1;
            let retries = if checked { CHECKED_RETRIES } else { 0 };
            let operation = DeltaOperation::StreamingUpdate {
                output_mode: OutputMode::Append,
                query_id: self.query_id.clone(),
                epoch_id: self.epoch,
            };
            let props = CommitProperties::default()
                .with_application_transactions(txns.clone())
                .with_metadata(app_metadata.clone())
                .with_max_retries(retries)
                // delta-rs would otherwise list the whole `_delta_log` after every commit to
                // find expired entries: a cost (and an allocation) that grows with the log, on
                // the ingest path. Maintenance does it instead
                // (`sluice_compaction::clean_expired_logs`).
                .with_cleanup_expired_logs(Some(false));
            let snapshot = self
                .table
                .snapshot()
                .map_err(|e| LakeError::delta(&self.name, e))?;
            let committed = CommitBuilder::from(props)
                .with_actions(actions.clone())
                .build(Some(snapshot), self.table.log_store(), operation)
                .await;
            match committed {
                Ok(finalized) => break finalized,
                Err(DeltaTableError::Transaction {
                    source: TransactionError::MaxCommitAttempts(0),
                }) if !checked => {
                    if attempt >= CATCH_UP_ATTEMPTS {
                        checked = true;
                        continue;
                    }
                    match self.catch_up(progress).await? {
                        CatchUp::Moved => caught_up = true,
                        CatchUp::Unsure => checked = true,
                    }
                }
                Err(e) => return Err(LakeError::delta(&self.name, e)),
            }
        };
        let version = finalized.version() as i64;
        self.table.state = Some(finalized.snapshot());
        self.commits_since_load += 1;
        if finalized.metrics.new_checkpoint_created || self.commits_since_load >= RELOAD_EVERY {
            self.reload().await;
        }
        Ok(CommitOutcome {
            version,
            files,
            rows,
            bytes,
            caught_up,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use deltalake::arrow::array::{Array, Int64Array, StringArray};
    use deltalake::arrow::datatypes::{DataType, Field};

    fn schema() -> Arc<ArrowSchema> {
        Arc::new(ArrowSchema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("day", DataType::Utf8, false),
        ]))
    }

    fn batch(days: &[&str], first_id: i64) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(
                    first_id..first_id + days.len() as i64,
                )),
                Arc::new(StringArray::from_iter_values(days.iter().copied())),
            ],
        )
        .unwrap()
    }

    /// (day, ids in file order) for every data file of the table, sorted by day.
    async fn files_by_day(lake: &crate::Lake) -> Vec<(String, Vec<i64>)> {
        let table = lake.open("t").await.unwrap().unwrap();
        let mut out = Vec::new();
        for f in table.snapshot().unwrap().log_data().iter() {
            let path = f.path().to_string();
            let day = path
                .split('/')
                .next()
                .unwrap()
                .trim_start_matches("day=")
                .to_string();
            let sql = format!("SELECT id FROM t WHERE day = '{day}'");
            let batches = crate::scan_sql("t", &table, &sql).await.unwrap();
            let mut ids: Vec<i64> = batches
                .iter()
                .flat_map(|b| {
                    let c = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                    (0..c.len()).map(|i| c.value(i)).collect::<Vec<_>>()
                })
                .collect();
            ids.sort_unstable();
            out.push((day, ids));
        }
        out.sort();
        out
    }

    /// Writes `rows` and commits them with `app`'s progress at `next`; the commit must succeed.
    async fn commit_rows(
        w: &mut TableWriter,
        rows: RecordBatch,
        app: &str,
        next: i64,
    ) -> CommitOutcome {
        w.write(rows).await.unwrap();
        w.commit(&[(app.into(), next)], HashMap::new())
            .await
            .unwrap()
            .unwrap()
    }

    /// The paths of a table's data files at its snapshot, sorted.
    fn file_paths(table: &DeltaTable) -> Vec<String> {
        let mut paths: Vec<String> = table
            .snapshot()
            .unwrap()
            .log_data()
            .iter()
            .map(|f| f.path().to_string())
            .collect();
        paths.sort();
        paths
    }

    async fn writer(dir: &std::path::Path) -> (crate::Lake, TableWriter) {
        writer_with(dir, HashMap::new()).await
    }

    /// A writer of table `t` (partitioned by `day`) with these table properties.
    async fn writer_with(
        dir: &std::path::Path,
        properties: HashMap<String, String>,
    ) -> (crate::Lake, TableWriter) {
        let lake = crate::Lake::new(&sluice_config::LakeConfig {
            root: dir.display().to_string(),
            ..Default::default()
        })
        .unwrap();
        let spec = crate::TableSpec {
            partition_columns: vec!["day".into()],
            properties,
            description: None,
        };
        let table = lake.open_or_create("t", &schema(), &spec).await.unwrap();
        (
            lake,
            TableWriter::new("t", table, WriterOptions::default()).unwrap(),
        )
    }

    /// After a commit that wrote a checkpoint the writer holds a snapshot loaded afresh from
    /// it (not one grown commit by commit), with the same files and progress, and its next
    /// commits go on from there: every row once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_checkpointing_commit_reloads_the_snapshot_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let properties = HashMap::from([("delta.checkpointInterval".into(), "3".into())]);
        let (lake, mut w) = writer_with(dir.path(), properties).await;
        let mut reloads = 0;
        for i in 0..7i64 {
            let out = commit_rows(&mut w, batch(&["a", "b"], i * 2), "p0", i * 2 + 2).await;
            let checkpointed = (out.version + 1) % 3 == 0;
            assert_eq!(w.commits_since_load == 0, checkpointed, "v{}", out.version);
            reloads += usize::from(checkpointed);
            assert_eq!(w.version(), Some(out.version));
            let fresh = lake.open("t").await.unwrap().unwrap();
            assert_eq!(file_paths(w.table()), file_paths(&fresh));
            assert_eq!(w.progress("p0").await.unwrap(), Some(i * 2 + 2));
        }
        assert_eq!(reloads, 2);
        assert_eq!(all_ids(&lake).await, (0..14).collect::<Vec<i64>>());
    }

    #[test]
    fn runs_of_partition_values_in_row_order() {
        let cols = vec!["day".to_string()];
        let runs = partition_runs(&cols, &batch(&["a", "a", "b", "b", "b", "a"], 0)).unwrap();
        let got: Vec<_> = runs
            .iter()
            .map(|(r, v)| (r.clone(), v["day"].to_string()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0..2, "'a'".into()),
                (2..5, "'b'".into()),
                (5..6, "'a'".into())
            ]
        );
        assert!(partition_runs(&[], &batch(&["a"], 0)).is_none());
        let alternating: Vec<&str> = (0..=MAX_PARTITION_RUNS)
            .map(|i| if i % 2 == 0 { "a" } else { "b" })
            .collect();
        assert!(partition_runs(&cols, &batch(&alternating, 0)).is_none());
    }

    /// Ids of every row of the table, sorted (a doubled row shows twice).
    async fn all_ids(lake: &crate::Lake) -> Vec<i64> {
        let table = lake.open("t").await.unwrap().unwrap();
        let batches = crate::scan_sql("t", &table, "SELECT id FROM t ORDER BY id")
            .await
            .unwrap();
        batches
            .iter()
            .flat_map(|b| {
                let c = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                (0..c.len()).map(|i| c.value(i)).collect::<Vec<_>>()
            })
            .collect()
    }

    /// Another writer's commit that leaves this writer's app ids alone (as a compaction's
    /// does): the next commit moves over it instead of through conflict resolution, and
    /// both land.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_moves_over_another_writers_commit_that_leaves_its_progress_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (lake, mut a) = writer(dir.path()).await;
        let first = commit_rows(&mut a, batch(&["a"; 3], 0), "p0", 3).await;
        assert!(!first.caught_up);
        let table = lake.open("t").await.unwrap().unwrap();
        let mut b = TableWriter::new("t", table, WriterOptions::default()).unwrap();
        let other = commit_rows(&mut b, batch(&["b"; 2], 100), "other", 2).await;
        let next = commit_rows(&mut a, batch(&["a"; 4], 3), "p0", 7).await;
        assert!(next.caught_up);
        assert_eq!(next.version, other.version + 1);
        assert_eq!(a.progress("p0").await.unwrap(), Some(7));
        assert_eq!(a.progress("other").await.unwrap(), Some(2));
        assert_eq!(all_ids(&lake).await, vec![0, 1, 2, 3, 4, 5, 6, 100, 101]);
        // Nothing new since: no catching up.
        let last = commit_rows(&mut a, batch(&["a"], 7), "p0", 8).await;
        assert!(!last.caught_up);
        assert_eq!(last.version, next.version + 1);
    }

    /// A writer behind another writer's progress for the same app id is fenced when it
    /// commits: its rows are dropped, the other writer's stay, nothing is doubled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_behind_another_writers_progress_for_its_app_id_is_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let (lake, mut zombie) = writer(dir.path()).await;
        commit_rows(&mut zombie, batch(&["a"; 2], 0), "p0", 2).await;
        let table = lake.open("t").await.unwrap().unwrap();
        let mut owner = TableWriter::new("t", table, WriterOptions::default()).unwrap();
        commit_rows(&mut owner, batch(&["a"; 3], 2), "p0", 5).await;
        zombie.write(batch(&["a"; 3], 2)).await.unwrap();
        let err = zombie
            .commit(&[("p0".into(), 5)], HashMap::new())
            .await
            .unwrap_err();
        assert!(err.is_fenced(), "{err}");
        assert_eq!(zombie.buffered_rows(), 0);
        let table = lake.open("t").await.unwrap().unwrap();
        assert_eq!(
            crate::committed_progress("t", &table, "p0").await.unwrap(),
            Some(5)
        );
        assert_eq!(all_ids(&lake).await, vec![0, 1, 2, 3, 4]);
        assert_eq!(crate::table_row_count("t", &table).await.unwrap(), 5);
    }

    /// Another writer's metadata change is not caught up over: the commit goes to delta-rs's
    /// conflict checker, which refuses it (not as a fence); after a refresh the writer commits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_after_another_writers_metadata_change_goes_to_the_conflict_checker() {
        let dir = tempfile::tempdir().unwrap();
        let (lake, mut a) = writer(dir.path()).await;
        commit_rows(&mut a, batch(&["a"; 2], 0), "p0", 2).await;
        let table = lake.open("t").await.unwrap().unwrap();
        let changed = table
            .set_tbl_properties()
            .with_properties(HashMap::from([(
                "delta.logRetentionDuration".to_string(),
                "interval 3 days".to_string(),
            )]))
            .await
            .unwrap();
        let changed_at = changed.version().unwrap() as i64;
        a.write(batch(&["a"; 3], 2)).await.unwrap();
        let err = a
            .commit(&[("p0".into(), 5)], HashMap::new())
            .await
            .unwrap_err();
        assert!(!err.is_fenced(), "{err}");
        assert!(err.is_conflict(), "{err}");
        assert!(err.to_string().contains("etadata"), "{err}");
        assert_eq!(all_ids(&lake).await, vec![0, 1]);
        a.refresh().await.unwrap();
        let out = commit_rows(&mut a, batch(&["a"; 3], 2), "p0", 5).await;
        assert_eq!(out.version, changed_at + 1);
        assert_eq!(all_ids(&lake).await, vec![0, 1, 2, 3, 4]);
    }

    /// Runs written slice by slice and a batch too fragmented for that (split by delta-rs)
    /// land in the same files: one per partition per commit, every row once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn partition_runs_and_fragmented_batches_land_in_their_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let (lake, mut w) = writer(dir.path()).await;
        w.write(batch(&["a", "a", "b", "b", "b", "a"], 0))
            .await
            .unwrap();
        let alternating: Vec<&str> = (0..40)
            .map(|i| if i % 2 == 0 { "a" } else { "c" })
            .collect();
        w.write(batch(&alternating, 100)).await.unwrap();
        let out = w.commit(&[], HashMap::new()).await.unwrap().unwrap();
        assert_eq!(out.rows, 46);
        assert_eq!(out.files, 3);
        let a: Vec<i64> = [0, 1, 5].into_iter().chain((100..140).step_by(2)).collect();
        let c: Vec<i64> = (101..140).step_by(2).collect();
        assert_eq!(
            files_by_day(&lake).await,
            vec![
                ("a".into(), a),
                ("b".into(), vec![2, 3, 4]),
                ("c".into(), c)
            ]
        );
    }
}

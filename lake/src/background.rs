//! [`BackgroundWriter`]: a [`TableWriter`] on its own task, so that encoding Parquet runs on
//! one core while the caller decodes the next records on another.
//!
//! Batches go to the task through a bounded channel (the caller waits when the encoder is
//! behind, which bounds memory); commits, refreshes and progress reads go through the same
//! channel, so they see every batch written before them, in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use deltalake::arrow::datatypes::Schema as ArrowSchema;
use deltalake::arrow::record_batch::RecordBatch;
use tokio::sync::{mpsc, oneshot};

use crate::{CommitOutcome, LakeError, Result, TableWriter};

/// Batches that may wait for the encoder: each is at most one polled batch of rows.
const QUEUED_BATCHES: usize = 4;

enum Command {
    Write(RecordBatch),
    Commit {
        progress: Vec<(String, i64)>,
        meta: HashMap<String, serde_json::Value>,
        reply: oneshot::Sender<Result<Option<CommitOutcome>>>,
    },
    Progress(String, oneshot::Sender<Result<Option<i64>>>),
    Refresh(oneshot::Sender<Result<()>>),
    AddColumns(
        Vec<deltalake::arrow::datatypes::Field>,
        oneshot::Sender<Result<Arc<ArrowSchema>>>,
    ),
    TakeError(oneshot::Sender<Option<LakeError>>),
}

/// Shared between the handle and its task.
#[derive(Default)]
struct Shared {
    /// Compressed bytes the task's writer holds (published after every write).
    buffered_bytes: AtomicU64,
    /// A write failed; the error waits in the task for the next call.
    failed: AtomicBool,
}

/// A [`TableWriter`] running on its own tokio task. [`BackgroundWriter::write`] returns once
/// the batch is queued; a failed write is reported by the next call that waits for an answer
/// (and every batch after it is dropped until then).
pub struct BackgroundWriter {
    name: String,
    schema: Arc<ArrowSchema>,
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    rows: u64,
}

impl std::fmt::Debug for BackgroundWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundWriter")
            .field("table", &self.name)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl BackgroundWriter {
    /// Moves `writer` onto a new task (the task ends when this handle is dropped).
    pub fn spawn(writer: TableWriter) -> Self {
        let (tx, rx) = mpsc::channel(QUEUED_BATCHES);
        let shared = Arc::new(Shared::default());
        let handle = Self {
            name: writer.name().to_string(),
            schema: writer.schema(),
            tx,
            shared: shared.clone(),
            rows: writer.buffered_rows(),
        };
        tokio::spawn(serve(writer, rx, shared));
        handle
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The table's Arrow schema.
    pub fn schema(&self) -> Arc<ArrowSchema> {
        self.schema.clone()
    }

    /// Rows written since the last commit (queued ones included).
    pub fn buffered_rows(&self) -> u64 {
        self.rows
    }

    /// Compressed bytes buffered since the last commit, as of the last batch encoded.
    pub fn buffered_bytes(&self) -> u64 {
        self.shared.buffered_bytes.load(Ordering::Relaxed)
    }

    fn gone(&self) -> LakeError {
        LakeError::Config {
            message: format!("the writer task of table {} has stopped", self.name),
        }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| self.gone())?;
        answer.await.map_err(|_| self.gone())
    }

    /// The error of a failed write, if one happened; the writer is usable again afterwards.
    async fn failure(&mut self) -> Result<()> {
        if !self.shared.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        self.rows = 0;
        match self.ask(Command::TakeError).await? {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Queues a batch for the next commit; waits only while the queue is full.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.failure().await?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let rows = batch.num_rows() as u64;
        self.tx
            .send(Command::Write(batch))
            .await
            .map_err(|_| self.gone())?;
        self.rows += rows;
        Ok(())
    }

    /// [`TableWriter::commit`], after every queued batch is encoded.
    pub async fn commit(
        &mut self,
        progress: &[(String, i64)],
        meta: HashMap<String, serde_json::Value>,
    ) -> Result<Option<CommitOutcome>> {
        self.failure().await?;
        let progress = progress.to_vec();
        self.rows = 0;
        self.ask(|reply| Command::Commit {
            progress,
            meta,
            reply,
        })
        .await?
    }

    /// [`TableWriter::progress`] at the writer's snapshot.
    pub async fn progress(&mut self, app_id: &str) -> Result<Option<i64>> {
        let app = app_id.to_string();
        self.ask(|reply| Command::Progress(app, reply)).await?
    }

    /// [`TableWriter::add_columns`], after every queued batch is encoded; batches written
    /// afterwards must have the returned schema.
    pub async fn add_columns(
        &mut self,
        fields: Vec<deltalake::arrow::datatypes::Field>,
    ) -> Result<Arc<ArrowSchema>> {
        self.failure().await?;
        let schema = self
            .ask(|reply| Command::AddColumns(fields, reply))
            .await??;
        self.schema = schema.clone();
        Ok(schema)
    }

    /// [`TableWriter::refresh`]: drops what is buffered and moves to the latest version.
    pub async fn refresh(&mut self) -> Result<()> {
        self.rows = 0;
        let out = self.ask(Command::Refresh).await?;
        self.shared.failed.store(false, Ordering::Release);
        out
    }
}

async fn serve(mut writer: TableWriter, mut rx: mpsc::Receiver<Command>, shared: Arc<Shared>) {
    let mut error: Option<LakeError> = None;
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Command::Write(batch) => {
                if error.is_some() {
                    continue;
                }
                if let Err(e) = writer.write(batch).await {
                    error = Some(e);
                    shared.failed.store(true, Ordering::Release);
                }
                shared
                    .buffered_bytes
                    .store(writer.buffered_bytes(), Ordering::Relaxed);
            }
            Command::Commit {
                progress,
                meta,
                reply,
            } => {
                let out = match error.take() {
                    Some(e) => {
                        writer.abort();
                        Err(e)
                    }
                    None => writer.commit(&progress, meta).await,
                };
                shared.failed.store(false, Ordering::Release);
                shared.buffered_bytes.store(0, Ordering::Relaxed);
                let _ = reply.send(out);
            }
            Command::Progress(app, reply) => {
                let _ = reply.send(writer.progress(&app).await);
            }
            Command::Refresh(reply) => {
                error = None;
                let out = writer.refresh().await;
                shared.buffered_bytes.store(0, Ordering::Relaxed);
                let _ = reply.send(out);
            }
            Command::AddColumns(fields, reply) => {
                let out = match error.take() {
                    Some(e) => Err(e),
                    None => writer.add_columns(&fields).await,
                };
                let _ = reply.send(out);
            }
            Command::TakeError(reply) => {
                writer.abort();
                shared.buffered_bytes.store(0, Ordering::Relaxed);
                shared.failed.store(false, Ordering::Release);
                let _ = reply.send(error.take());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use deltalake::arrow::array::{Int64Array, StringArray};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    fn rows(from: i64, n: i64) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(from..from + n)),
                Arc::new(StringArray::from_iter_values(
                    (from..from + n).map(|i| format!("n{i}")),
                )),
            ],
        )
        .unwrap()
    }

    async fn open(dir: &std::path::Path) -> (crate::Lake, TableWriter) {
        let lake = crate::Lake::new(&sluice_config::LakeConfig {
            root: dir.display().to_string(),
            ..Default::default()
        })
        .unwrap();
        let spec = crate::TableSpec {
            partition_columns: vec![],
            properties: Default::default(),
            description: None,
        };
        let table = lake.open_or_create("t", &schema(), &spec).await.unwrap();
        let writer = TableWriter::new("t", table, crate::WriterOptions::default()).unwrap();
        (lake, writer)
    }

    async fn count(lake: &crate::Lake) -> u64 {
        let table = lake.open("t").await.unwrap().unwrap();
        crate::table_row_count("t", &table).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_holds_every_batch_queued_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (lake, writer) = open(dir.path()).await;
        let mut w = BackgroundWriter::spawn(writer);
        for i in 0..20 {
            w.write(rows(i * 100, 100)).await.unwrap();
        }
        assert_eq!(w.buffered_rows(), 2000);
        let out = w
            .commit(&[("app".into(), 2000)], HashMap::new())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out.rows, 2000);
        assert_eq!(w.buffered_rows(), 0);
        assert_eq!(w.progress("app").await.unwrap(), Some(2000));
        assert_eq!(count(&lake).await, 2000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_fails_the_next_commit_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (lake, writer) = open(dir.path()).await;
        let mut w = BackgroundWriter::spawn(writer);
        w.write(rows(0, 10)).await.unwrap();
        // A batch the table cannot take: its id column is text.
        let bad_schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let bad = RecordBatch::try_new(
            bad_schema,
            vec![
                Arc::new(StringArray::from(vec!["x"])),
                Arc::new(StringArray::from(vec!["y"])),
            ],
        )
        .unwrap();
        // Queued without waiting; the failure is reported by the next call that waits.
        let reported = match w.write(bad).await {
            Err(e) => e,
            Ok(()) => w
                .commit(&[("app".into(), 11)], HashMap::new())
                .await
                .expect_err("the commit after a failed write fails"),
        };
        assert!(reported.to_string().starts_with("table t: "), "{reported}");
        // Nothing of that flush was committed, and the writer takes the next flush.
        assert_eq!(count(&lake).await, 0);
        assert_eq!(w.progress("app").await.unwrap(), None);
        w.write(rows(100, 5)).await.unwrap();
        let out = w
            .commit(&[("app".into(), 105)], HashMap::new())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out.rows, 5);
        assert_eq!(count(&lake).await, 5);
    }
}

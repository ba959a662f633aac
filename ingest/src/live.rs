//! Interactive queries (Kafka Streams' name for reading a running application's state): a
//! running pipeline answers, between two batches, which windows of an aggregate are open and
//! what their running values are.
//!
//! The values are provisional: a window can still take records until the clock passes its
//! end plus the grace, and a restart rebuilds open windows by replaying from the offsets they
//! need. The row committed to the aggregate table when the window closes is the final one.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use arrow::array::RecordBatch;
use tokio::sync::{mpsc, oneshot};

/// A request for one aggregate table's open windows.
#[derive(Debug)]
pub struct OpenWindowsRequest {
    /// The aggregate table.
    pub table: String,
    /// Where the answer goes: the open windows as rows of the table's schema, `None` when
    /// none is open.
    pub reply: oneshot::Sender<Result<Option<RecordBatch>, LiveError>>,
}

/// Why an interactive query has no answer.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// No running pipeline of this process computes the table.
    #[error("no running pipeline of this service computes aggregate table {0:?}")]
    NotRunning(String),
    /// The pipeline did not answer in time (it answers between batches and commits).
    #[error("pipeline computing {0:?} did not answer within {1:?}; try again")]
    Busy(String, Duration),
    /// The window operator could not build the rows.
    #[error("aggregate table {table}: {source}")]
    Window {
        /// The aggregate table.
        table: String,
        /// What went wrong.
        #[source]
        source: sluice_window::WindowError,
    },
}

/// How long a query waits for the pipeline.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

type Routes = HashMap<String, mpsc::Sender<OpenWindowsRequest>>;

fn routes() -> &'static Mutex<Routes> {
    static R: OnceLock<Mutex<Routes>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Registers a pipeline's aggregate tables; the pipeline answers what arrives on the receiver.
pub(crate) fn register(tables: &[String]) -> mpsc::Receiver<OpenWindowsRequest> {
    let (tx, rx) = mpsc::channel(16);
    if let Ok(mut r) = routes().lock() {
        for t in tables {
            r.insert(t.clone(), tx.clone());
        }
    }
    rx
}

/// The open windows of aggregate table `table`, from the pipeline running in this process.
pub async fn open_windows(table: &str) -> Result<Option<RecordBatch>, LiveError> {
    let tx = routes()
        .lock()
        .ok()
        .and_then(|r| r.get(table).cloned())
        .ok_or_else(|| LiveError::NotRunning(table.to_string()))?;
    let (reply, answer) = oneshot::channel();
    let request = OpenWindowsRequest {
        table: table.to_string(),
        reply,
    };
    let busy = || LiveError::Busy(table.to_string(), ANSWER_WITHIN);
    tokio::time::timeout(ANSWER_WITHIN, tx.send(request))
        .await
        .map_err(|_| busy())?
        .map_err(|_| LiveError::NotRunning(table.to_string()))?;
    match tokio::time::timeout(ANSWER_WITHIN, answer).await {
        Err(_) => Err(busy()),
        Ok(Err(_)) => Err(LiveError::NotRunning(table.to_string())),
        Ok(Ok(answer)) => answer,
    }
}

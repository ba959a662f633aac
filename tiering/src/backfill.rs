//! [`backfill`]: a pipeline's own code (decode, event time, windows, exactly-once commits) run
//! over the unified log of its topics, from an offset or a time until an offset, a time or the
//! current end, into a separate set of tables.
//!
//! Table names: `--into T` names the events table; the pipeline's other tables take `T` as a
//! prefix (`T_dead_letter`, and `T_<aggregate table>` and `T_<late table>`). Their progress is
//! stored like a live pipeline's, so an interrupted backfill resumes where it stopped when run
//! again with the same arguments.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sluice_config::{Config, StartPosition};
use sluice_ingest::source::{GroupEvent, RecordSource, SourceError, SourceResult, TopicPartition};
use sluice_ingest::{Pipeline, PipelineSummary, RunOptions};
use sluice_lake::Lake;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::reader::{LogEnd, LogStart, UnifiedLog};
use crate::{Result, TieringError};

/// What to backfill.
#[derive(Clone, Debug)]
pub struct BackfillOptions {
    /// The pipeline whose code and settings run.
    pub pipeline: String,
    /// Where each partition starts.
    pub from: LogStart,
    /// Where each partition stops (not `Follow`).
    pub until: LogEnd,
    /// The events table to write; the pipeline's other tables take it as a prefix.
    pub into: String,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// What a backfill did.
#[derive(Clone, Debug, Default)]
pub struct BackfillSummary {
    /// The pipeline's counts (records, events, dead letters, aggregate and late rows).
    pub pipeline: PipelineSummary,
    /// Records read from archive tables.
    pub from_archive: u64,
    /// Records read from the brokers.
    pub from_broker: u64,
    /// The tables written.
    pub tables: Vec<String>,
    /// Wall time.
    pub elapsed: Duration,
}

impl std::fmt::Display for BackfillSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-3);
        let read = self.from_archive + self.from_broker;
        writeln!(
            f,
            "backfill read {read} records ({} from the archive, {} from the broker) in {secs:.1}s ({:.0} records/s)",
            self.from_archive,
            self.from_broker,
            read as f64 / secs
        )?;
        let s = &self.pipeline;
        writeln!(
            f,
            "wrote {} events, {} dead letters, {} aggregate rows, {} late rows in {} commits",
            s.events, s.dead_letters, s.aggregate_rows, s.late_rows, s.commits
        )?;
        write!(f, "tables: {}", self.tables.join(", "))
    }
}

/// The pipeline config of a backfill: the named pipeline writing the `into` tables.
pub fn backfill_pipeline(
    config: &Config,
    opts: &BackfillOptions,
) -> Result<sluice_config::PipelineConfig> {
    let p = config
        .pipelines
        .iter()
        .find(|p| p.name == opts.pipeline)
        .ok_or_else(|| {
            let known: Vec<&str> = config.pipelines.iter().map(|p| p.name.as_str()).collect();
            TieringError::Invalid(format!(
                "no pipeline named {:?} in the config; known pipelines: {}",
                opts.pipeline,
                known.join(", ")
            ))
        })?;
    if matches!(opts.until, LogEnd::Follow) {
        return Err(TieringError::Invalid(
            "a backfill needs an end: --until an offset, a time, or end".into(),
        ));
    }
    let into = opts.into.trim();
    let mut taken: Vec<String> = Vec::new();
    for q in &config.pipelines {
        taken.push(q.table.clone());
        taken.push(q.dead_letter_table());
        for a in &q.aggregates {
            taken.push(a.table.clone());
            taken.push(q.late_table(a));
        }
    }
    taken.extend(config.tiering.iter().map(|t| t.archive_table()));
    let mut b = p.clone();
    b.table = into.to_string();
    b.dead_letter_table = Some(format!("{into}_dead_letter"));
    for a in &mut b.aggregates {
        let late = p.late_table(a);
        a.late_table = Some(format!("{into}_{late}"));
        a.table = format!("{into}_{}", a.table);
    }
    let mut mine = vec![b.table.clone(), b.dead_letter_table()];
    for a in &b.aggregates {
        mine.push(a.table.clone());
        mine.push(b.late_table(a));
    }
    if let Some(clash) = mine.iter().find(|t| taken.contains(t)) {
        return Err(TieringError::Invalid(format!(
            "--into {into:?} would write table {clash:?}, which the config already uses; pick another name"
        )));
    }
    b.start = match opts.from {
        LogStart::Earliest => StartPosition::Earliest,
        LogStart::Offset(o) => StartPosition::Offset(o),
        LogStart::Time(ms) => StartPosition::Time(ms),
    };
    Ok(b)
}

/// Runs the backfill to its end (or until cancelled, committing what it has).
pub async fn backfill(
    config: &Config,
    lake: &Lake,
    opts: &BackfillOptions,
    cancel: CancellationToken,
) -> Result<BackfillSummary> {
    let started = Instant::now();
    let p = backfill_pipeline(config, opts)?;
    let mut tables = vec![p.table.clone(), p.dead_letter_table()];
    for a in &p.aggregates {
        tables.push(a.table.clone());
        let late = p.late_table(a);
        if !tables.contains(&late) {
            tables.push(late);
        }
    }
    let pipeline = Pipeline::open(config, &p, lake).await?;
    let mut logs = BTreeMap::new();
    for t in &p.topics {
        let log = UnifiedLog::new(config, lake, t)?.with_headers(p.include_headers);
        logs.insert(Arc::<str>::from(t.as_str()), log);
    }
    // Every partition's end, fixed before reading starts.
    let mut ends: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    for (t, log) in &logs {
        for part in log.partitions().await? {
            let end = log.resolve_end(part, opts.until).await?.unwrap_or(0);
            ends.insert((t.clone(), part), end);
        }
    }
    let (tx, rx) = mpsc::channel(8);
    let stop = cancel.child_token();
    let counters = Arc::new(Counters::default());
    let source = Arc::new(ReplaySource {
        logs: logs.clone(),
        ends: ends.clone(),
        stop: stop.clone(),
    });
    let driver = tokio::spawn(drive(
        logs,
        ends.clone(),
        tx,
        stop.clone(),
        counters.clone(),
    ));
    let bar = opts
        .progress
        .then(|| tokio::spawn(progress_bar(counters.clone(), ends.clone(), stop.clone())));
    let result = pipeline
        .run_with(source, rx, RunOptions::default(), stop.clone())
        .await;
    stop.cancel();
    let read = driver.await.map_err(|_| TieringError::TaskLost {
        what: "reading the unified logs",
    })?;
    if let Some(b) = bar {
        let _ = b.await;
    }
    let summary = result?;
    read?;
    Ok(BackfillSummary {
        pipeline: summary,
        from_archive: counters.archive.load(Ordering::Relaxed),
        from_broker: counters.broker.load(Ordering::Relaxed),
        tables,
        elapsed: started.elapsed(),
    })
}

#[derive(Debug, Default)]
struct Counters {
    archive: AtomicU64,
    broker: AtomicU64,
    read: AtomicU64,
    planned: AtomicU64,
}

/// Announces the partitions, learns where each starts (the pipeline answers from its tables,
/// so a rerun resumes), reads them all concurrently, then ends the stream.
async fn drive(
    logs: BTreeMap<Arc<str>, UnifiedLog>,
    ends: BTreeMap<TopicPartition, i64>,
    tx: mpsc::Sender<GroupEvent>,
    stop: CancellationToken,
    counters: Arc<Counters>,
) -> Result<()> {
    let (reply, answer) = oneshot::channel();
    let parts: Vec<TopicPartition> = ends.keys().cloned().collect();
    if tx.send(GroupEvent::Assigned(parts, reply)).await.is_err() {
        return Ok(());
    }
    let Ok(starts) = answer.await else {
        return Ok(());
    };
    let planned: i64 = ends
        .iter()
        .map(|(tp, end)| (end - starts.get(tp).copied().unwrap_or(*end)).max(0))
        .sum();
    counters.planned.store(planned as u64, Ordering::Relaxed);
    let mut tasks = Vec::new();
    for (tp, end) in &ends {
        let start = starts.get(tp).copied().unwrap_or(*end);
        if start >= *end {
            continue;
        }
        let Some(log) = logs.get(&tp.0).cloned() else {
            continue;
        };
        let (rtx, mut rrx) = mpsc::channel(2);
        let stop2 = stop.clone();
        let (part, end) = (tp.1, *end);
        let reader =
            tokio::spawn(async move { log.read_range(part, start, Some(end), &rtx, &stop2).await });
        let tx = tx.clone();
        let counters = counters.clone();
        let forward = tokio::spawn(async move {
            while let Some(raw) = rrx.recv().await {
                counters.read.fetch_add(raw.len() as u64, Ordering::Relaxed);
                if tx.send(GroupEvent::Records(Box::new(raw))).await.is_err() {
                    break;
                }
            }
        });
        tasks.push((reader, forward));
    }
    let mut first_err = None;
    for (reader, forward) in tasks {
        match reader.await {
            Ok(Ok(stats)) => {
                counters
                    .archive
                    .fetch_add(stats.from_archive, Ordering::Relaxed);
                counters
                    .broker
                    .fetch_add(stats.from_broker, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                stop.cancel();
                first_err.get_or_insert(e);
            }
            Err(_) => {
                stop.cancel();
                first_err.get_or_insert(TieringError::TaskLost {
                    what: "reading a partition",
                });
            }
        }
        let _ = forward.await;
    }
    let _ = tx.send(GroupEvent::Ended).await;
    first_err.map_or(Ok(()), Err)
}

async fn progress_bar(
    counters: Arc<Counters>,
    ends: BTreeMap<TopicPartition, i64>,
    stop: CancellationToken,
) {
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let every = if tty {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(5)
    };
    let _ = ends;
    let draw = |last: bool| {
        let read = counters.read.load(Ordering::Relaxed);
        let planned = counters.planned.load(Ordering::Relaxed).max(1);
        let frac = (read as f64 / planned as f64).min(1.0);
        let width = 30usize;
        let filled = (frac * width as f64) as usize;
        let rate = read as f64 / started.elapsed().as_secs_f64().max(1e-3);
        let line = format!(
            "[{}{}] {:>5.1}% {read}/{planned} records, {rate:.0}/s",
            "#".repeat(filled),
            "-".repeat(width - filled),
            frac * 100.0
        );
        if tty {
            eprint!("\r{line}");
            if last {
                eprintln!();
            }
        } else {
            eprintln!("{line}");
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => { draw(true); return; }
            _ = tokio::time::sleep(every) => draw(false),
        }
    }
}

/// The [`RecordSource`] of a backfill: positions come from the unified logs, nothing is
/// committed to a consumer group.
struct ReplaySource {
    logs: BTreeMap<Arc<str>, UnifiedLog>,
    ends: BTreeMap<TopicPartition, i64>,
    stop: CancellationToken,
}

impl RecordSource for ReplaySource {
    fn commit_offsets(&self, _: &HashMap<TopicPartition, i64>) {}

    fn seek(&self, _: &HashMap<TopicPartition, i64>) -> SourceResult<()> {
        Err(SourceError::ReplayOvertaken)
    }

    fn stop(&self) {
        self.stop.cancel();
    }

    fn join(self: Arc<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }

    fn start_offset(
        self: Arc<Self>,
        topic: String,
        partition: i32,
        start: StartPosition,
    ) -> BoxFuture<'static, SourceResult<i64>> {
        Box::pin(async move {
            let log = self
                .logs
                .get(topic.as_str())
                .ok_or_else(|| SourceError::NotReplayed(topic.clone()))?;
            let from = match start {
                StartPosition::Earliest | StartPosition::Latest => LogStart::Earliest,
                StartPosition::Offset(o) => LogStart::Offset(o),
                StartPosition::Time(ms) => LogStart::Time(ms),
            };
            log.resolve_start(partition, from)
                .await
                .map_err(|e| SourceError::Replay {
                    topic,
                    partition,
                    source: Box::new(e),
                })
        })
    }

    fn end_offsets(
        self: Arc<Self>,
        topics: Vec<String>,
    ) -> BoxFuture<'static, SourceResult<BTreeMap<TopicPartition, i64>>> {
        let ends = self
            .ends
            .iter()
            .filter(|(tp, _)| topics.iter().any(|t| t.as_str() == &*tp.0))
            .map(|(tp, e)| (tp.clone(), *e))
            .collect();
        Box::pin(async move { Ok(ends) })
    }

    fn high_watermarks(
        self: Arc<Self>,
        _: Vec<TopicPartition>,
    ) -> BoxFuture<'static, Vec<(TopicPartition, i64)>> {
        Box::pin(async { Vec::new() })
    }
}

//! [`Pipeline`]: consumes a pipeline's topics and commits its tables exactly once.
//!
//! The pipeline is the I/O shell around a [`Ledger`] (crate `sluice-progress`), which decides
//! everything about progress: where a partition resumes, which records a replay writes to
//! which table, and what each commit of a flush records, in which order. A flush commits the
//! dead-letter table (when it has rows), the late tables (when they have rows), the events
//! table, then every aggregate table. Each commit carries one `txn` per partition
//! (`sluice:<pipeline>:<topic>:<p>`); for an aggregate table the version is the lowest offset
//! an open window still needs (`docs/windows.md`), and the window clock is a `txn` of its
//! own (`sluice:<pipeline>:clock`). Offsets go to the consumer group after the flush.
//!
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use sluice_config::{Config, Format, PipelineConfig, StartPosition};
use sluice_lake::{
    Lake, LakeError, TableSpec, TableWriter, WriterOptions, clock_app_id, partition_clock_app_id,
    progress_app_id,
};
use sluice_progress::{Commit, Ledger, Pending, Stored, Table};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::lease::{Holder, Lease};
use crate::positions::Positions;
use crate::sink::EventsSink;
use crate::source::{
    GroupEvent, GroupOptions, KafkaSource, RecordSource, SourceError, TopicPartition,
};
use crate::windows::{AggregateSink, CLOCK_KEY, Windows, late_rows, late_schema};
use sluice_telemetry::{events, health, spec};

use crate::{IngestError, Result};
use sluice_formats::avro::{self, AvroDecoder};
use sluice_formats::avro_key::AvroKeys;
use sluice_formats::dead_letter::dead_letter_batch;
use sluice_formats::infer::InferringJson;
use sluice_formats::protobuf::ProtobufDecoder;
use sluice_formats::registry::Registry;
use sluice_formats::schema::{dead_letter_schema, events_schema};
use sluice_formats::{FormatError, JsonDecoder, RecordDecoder};
use sluice_kafka::RawBatch;

/// How a run ends.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Stop once every partition has committed the end offsets seen at start.
    pub until_caught_up: bool,
}

/// Counts for one pipeline run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipelineSummary {
    /// Records received from Kafka (after replay filtering).
    pub records: u64,
    /// Rows committed to the events table.
    pub events: u64,
    /// Rows committed to the dead-letter table.
    pub dead_letters: u64,
    /// Rows committed to aggregate tables.
    pub aggregate_rows: u64,
    /// Rows committed to late tables.
    pub late_rows: u64,
    /// Delta commits made (all tables).
    pub commits: u64,
    /// Commits that lost to another writer (fenced) and were retried from the table.
    pub fenced: u64,
    /// Commits refused because another writer changed a table's metadata or protocol, and
    /// retried from the tables after a reload.
    pub conflicts: u64,
}

/// Counts waiting for their flush to commit.
#[derive(Debug, Default)]
struct PendingCounts {
    dead: BTreeMap<&'static str, u64>,
    late: BTreeMap<String, u64>,
    skipped: BTreeMap<String, u64>,
    future: BTreeMap<String, u64>,
}

/// Commits in a row that may fail on the object store before the pipeline stops.
const STORE_FAILURES: u32 = 5;

/// One pipeline: its tables, decoder, window operators and partitions.
pub struct Pipeline {
    cfg: PipelineConfig,
    kafka: sluice_config::KafkaConfig,
    /// The events table: appended by a writer that encodes on its own task, in parallel
    /// with decoding, or (upsert mode) changed per key.
    events: EventsSink,
    dead: TableWriter,
    decoder: RecordDecoder,
    aggs: Vec<AggregateSink>,
    /// Late tables, indexed as [`Table::Late`] (the aggregates of a pipeline usually share one).
    late: Vec<TableWriter>,
    /// Small stable ids of partitions, for the window clocks, and the partition of each id.
    pids: HashMap<TopicPartition, u32>,
    by_pid: Vec<TopicPartition>,
    /// What each table has committed per owned partition, and what replays skip.
    ledger: Ledger<TopicPartition>,
    /// Partitions sought and not yet answered ([`GroupEvent::Seeked`]): their records in
    /// the channel are from before the seek and are dropped.
    seeking: HashSet<TopicPartition>,
    first_buffered: Option<Instant>,
    summary: PipelineSummary,
    /// Commits in a row whose object-store requests failed (reset by a commit that lands).
    store_failures: u32,
    /// Diverted-record counts of the current flush, published when it commits.
    pending: PendingCounts,
    last_lag_check: Instant,
    /// Set while a lag update runs (in a task of its own, so that the broker's answers never
    /// hold up flushes).
    lag_in_flight: Arc<std::sync::atomic::AtomicBool>,
    targets: Option<BTreeMap<TopicPartition, i64>>,
    /// Where the time of the current flush went (logged at debug level on commit).
    timing: StageTiming,
    /// Interactive queries of the open windows ([`crate::live`]), answered between batches.
    live: mpsc::Receiver<crate::live::OpenWindowsRequest>,
    /// The lease of a pipeline with topic-clock aggregates run live ([`crate::lease`]).
    lease: Option<Lease>,
    /// The lease epoch the commits of the current flush carry.
    flush_lease: Option<i64>,
    /// The lake, for the lease table.
    lake: Lake,
}

/// Time spent per stage since the last commit.
#[derive(Debug, Default)]
struct StageTiming {
    waiting: Duration,
    decode: Duration,
    write: Duration,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.cfg.name)
            .finish_non_exhaustive()
    }
}

fn writer_options(config: &Config, p: &PipelineConfig) -> WriterOptions {
    WriterOptions {
        compression: p.compression,
        target_file_size: config.maintenance.target_file_size.bytes(),
        ..Default::default()
    }
}

fn table_spec(config: &Config, partition_columns: Vec<String>, description: String) -> TableSpec {
    let properties = HashMap::from([(
        "delta.checkpointInterval".to_string(),
        config.maintenance.checkpoint_interval.to_string(),
    )]);
    TableSpec {
        partition_columns,
        properties,
        description: Some(description),
    }
}

/// Opens (creating when missing) a pipeline's events and dead-letter tables.
pub async fn open_tables(
    config: &Config,
    p: &PipelineConfig,
    lake: &Lake,
) -> Result<(TableWriter, TableWriter)> {
    crate::schema_change::grow_at_open(p, lake).await?;
    let spec = table_spec(
        config,
        p.partition_by.clone(),
        format!("sluice events of pipeline {}", p.name),
    );
    let events = lake
        .open_or_create(&p.table, &events_schema(p), &spec)
        .await?;
    let dl_name = p.dead_letter_table();
    let dl_spec = table_spec(
        config,
        vec![],
        format!("sluice dead letters of pipeline {}", p.name),
    );
    let dead = lake
        .open_or_create(&dl_name, &dead_letter_schema(), &dl_spec)
        .await?;
    let options = writer_options(config, p);
    Ok((
        TableWriter::new(&p.table, events, options.clone())?,
        TableWriter::new(&dl_name, dead, options)?,
    ))
}

impl Pipeline {
    /// Opens the pipeline's tables. A pipeline without `schema` takes the columns of its
    /// existing events table.
    pub async fn open(config: &Config, p: &PipelineConfig, lake: &Lake) -> Result<Self> {
        let format_err = |source| IngestError::Format {
            table: p.table.clone(),
            source,
        };
        let infer = p.format == Format::Json && p.schema.is_empty();
        let resolved;
        let mut registry = None;
        let p = match p.format {
            Format::Avro | Format::Protobuf => {
                let (columns, reg) = registry_schema(config, p, lake).await?;
                resolved = with_columns(p, columns)?;
                registry = Some(reg);
                &resolved
            }
            Format::Json if p.schema.is_empty() => {
                resolved = schema_from_table(p, lake).await?;
                &resolved
            }
            Format::Json => p,
        };
        let (events, dead) = open_tables(config, p, lake).await?;
        let decoder = make_decoder(p, registry, infer, events.schema()).map_err(format_err)?;
        let options = writer_options(config, p);
        let mut aggs = Vec::new();
        let mut late: Vec<TableWriter> = Vec::new();
        for agg in &p.aggregates {
            let schema_err = |message: String| IngestError::Schema {
                table: agg.table.clone(),
                message,
            };
            let mut op =
                Windows::new(p, agg, events.schema()).map_err(|e| schema_err(e.to_string()))?;
            let out_schema = op.output_schema();
            let desc = format!("sluice windowed aggregate of pipeline {}", p.name);
            let table = lake
                .open_or_create(&agg.table, &out_schema, &table_spec(config, vec![], desc))
                .await?;
            let late_name = p.late_table(agg);
            let late_index = match late.iter().position(|w| w.name() == late_name) {
                Some(i) => i,
                None => {
                    let desc = format!("sluice late records of pipeline {}", p.name);
                    let lt = lake
                        .open_or_create(
                            &late_name,
                            &late_schema(),
                            &table_spec(config, vec![], desc),
                        )
                        .await?;
                    late.push(TableWriter::new(&late_name, lt, options.clone())?);
                    late.len() - 1
                }
            };
            let writer = TableWriter::new(&agg.table, table, options.clone())?;
            aggs.push(AggregateSink {
                cfg: agg.clone(),
                late_index,
                op,
                writer,
            });
        }
        let ledger = Ledger::new(late.len(), aggs.len());
        let tables: Vec<String> = aggs.iter().map(|a| a.cfg.table.clone()).collect();
        Ok(Self {
            live: crate::live::register(&tables),
            cfg: p.clone(),
            kafka: config.kafka.clone(),
            events: EventsSink::new(p, events).map_err(format_err)?,
            dead,
            decoder,
            aggs,
            late,
            pids: HashMap::new(),
            by_pid: Vec::new(),
            ledger,
            seeking: HashSet::new(),
            first_buffered: None,
            summary: PipelineSummary::default(),
            store_failures: 0,
            pending: PendingCounts::default(),
            last_lag_check: Instant::now(),
            lag_in_flight: Arc::default(),
            targets: None,
            timing: StageTiming::default(),
            lease: None,
            flush_lease: None,
            lake: lake.clone(),
        })
    }

    /// The consumer group this pipeline joins: `<kafka.group_id>.<pipeline>`.
    pub fn group_id(&self) -> String {
        format!("{}.{}", self.kafka.group_id, self.cfg.name)
    }

    /// Consumes until cancelled (or caught up), committing as it goes.
    pub async fn run(
        mut self,
        opts: RunOptions,
        cancel: CancellationToken,
    ) -> Result<PipelineSummary> {
        if self.aggs.iter().any(|a| matches!(a.op, Windows::Topic(_))) {
            let ttl = self.cfg.standby_takeover.get();
            self.lease = Some(Lease::open(&self.lake, &self.cfg.name, ttl).await?);
            if !self.take_lease(&cancel).await? {
                return Ok(self.summary);
            }
        }
        let source_opts = GroupOptions {
            connection: sluice_kafka::client::Connection {
                group_id: self.group_id(),
                ..(&self.kafka).into()
            },
            topics: self.cfg.topics.clone(),
            max_batch_records: 10_000,
            max_batch_bytes: 8 << 20,
            with_headers: self.cfg.include_headers,
        };
        let (source, rx) = KafkaSource::start(source_opts, 4).map_err(SourceError::from)?;
        self.run_with(Arc::new(source), rx, opts, cancel).await
    }

    /// Runs over any source of records: the live consumer group, or a replay of the unified
    /// log for a backfill. The source sends `Assigned` for the partitions it will deliver (the
    /// pipeline answers with where each starts), then records, then `Ended`.
    pub async fn run_with(
        mut self,
        source: Arc<dyn RecordSource>,
        mut rx: mpsc::Receiver<GroupEvent>,
        opts: RunOptions,
        cancel: CancellationToken,
    ) -> Result<PipelineSummary> {
        health::register_component(&health::pipeline_component(&self.cfg.name));
        // Tables open and the consumer started: ready, with or without partitions. (An
        // instance that joins the group with an empty assignment does not always get a
        // rebalance callback, so readiness cannot wait for one.)
        health::mark_ready(&health::pipeline_component(&self.cfg.name));
        if !self.aggs.is_empty() {
            // Every partition of the source topics holds the window clock until it is idle,
            // not only the assigned ones: after a crash the group may hand this instance a few
            // partitions first, and their records alone must not close windows.
            for tp in end_offsets(&source, &self.cfg.topics).await?.into_keys() {
                self.pid(&tp);
            }
            self.assign_clock_partitions();
        }
        if opts.until_caught_up {
            let targets = end_offsets(&source, &self.cfg.topics).await?;
            tracing::info!(pipeline = %self.cfg.name, partitions = targets.len(), "running until these end offsets are committed: {targets:?}");
            self.targets = Some(targets);
        }
        let mut ended = false;
        let result = self.event_loop(&source, &mut rx, &cancel, &mut ended).await;
        source.stop();
        // Keep draining while the polling thread leaves the group: it may still send (a
        // revocation, a batch) and must never block on a full channel nobody reads.
        let join = source.clone().join();
        tokio::pin!(join);
        let leave = async {
            loop {
                tokio::select! {
                    _ = &mut join => break,
                    ev = rx.recv(), if !ended => match ev {
                        Some(GroupEvent::Assigned(_, reply)) => drop(reply),
                        Some(GroupEvent::Revoked(_, reply)) => drop(reply),
                        Some(GroupEvent::Ended) | None => ended = true,
                        Some(_) => {}
                    },
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(30), leave)
            .await
            .is_err()
        {
            tracing::warn!(pipeline = %self.cfg.name, "the consumer did not leave its group within 30s; going on without it");
        }
        if result.is_ok() {
            self.release_lease().await;
        }
        result.map(|()| self.summary)
    }

    /// Waits as a standby until the pipeline's lease is free or expired, then takes it and
    /// writes its epoch into every table of the pipeline before consuming. False when
    /// cancelled while standing by.
    async fn take_lease(&mut self, cancel: &CancellationToken) -> Result<bool> {
        let name = self.cfg.name.clone();
        let mut announced = false;
        loop {
            let Some(lease) = &mut self.lease else {
                return Ok(true);
            };
            let now = wall_ms();
            let wait = match lease.look(now).await {
                Ok(Holder::Us) => break,
                Ok(Holder::Free) => match lease.write(now).await {
                    Ok(()) => break,
                    // Another standby took it first.
                    Err(e) if e.is_fenced() => continue,
                    Err(e) => {
                        tracing::warn!(pipeline = %name, "taking the lease failed: {e}; looking again");
                        Duration::from_secs(1)
                    }
                },
                Ok(Holder::Other(expiry)) => {
                    if !announced {
                        tracing::info!(pipeline = %name, expiry = %ms_text(expiry), "standing by: another instance computes this pipeline's windows; taking over if its lease is not renewed");
                        spec::PIPELINE_ACTIVE.set([&name], 0.0);
                        health::mark_ready(&health::pipeline_component(&name));
                        announced = true;
                    }
                    Lease::standby_wait(expiry, now)
                }
                Err(e) => {
                    tracing::warn!(pipeline = %name, "reading the lease failed: {e}; looking again");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return Ok(false),
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let Some(lease) = &mut self.lease else {
            return Ok(true);
        };
        lease.take_epoch();
        let progress = [(lease.app_id().to_string(), lease.epoch())];
        let mut tries = 0;
        loop {
            match self.write_epoch(&progress).await {
                Ok(()) => break,
                // Fenced by our own earlier write of the epoch whose answer was lost, unless
                // the lease itself moved on.
                Err(IngestError::Lake(e)) if e.is_fenced() => {
                    if self.lease_taken().await? || tries >= STORE_FAILURES {
                        return Err(self.lease_lost());
                    }
                    tries += 1;
                }
                Err(IngestError::Lake(e)) if e.is_store_failure() && tries < STORE_FAILURES => {
                    tries += 1;
                    tracing::warn!(pipeline = %name, "writing the lease epoch failed: {e}; again in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e),
            }
        }
        tracing::info!(pipeline = %name, "active: this instance computes the pipeline's windows (it holds the lease)");
        spec::PIPELINE_ACTIVE.set([&name], 1.0);
        Ok(true)
    }

    /// The commit metadata naming the pipeline.
    fn meta(&self) -> HashMap<String, serde_json::Value> {
        HashMap::from([(
            "sluice.pipeline".to_string(),
            serde_json::Value::from(self.cfg.name.clone()),
        )])
    }

    /// Writes the lease epoch `progress` into every table of the pipeline: from then on a
    /// commit of the instance that held the lease before is fenced.
    async fn write_epoch(&mut self, progress: &[(String, i64)]) -> Result<()> {
        self.events.refresh().await?;
        self.events.commit(progress, self.meta()).await?;
        self.dead.refresh().await?;
        self.dead.commit_progress(progress, self.meta()).await?;
        for i in 0..self.late.len() {
            let m = self.meta();
            let w = &mut self.late[i];
            w.refresh().await?;
            w.commit_progress(progress, m).await?;
        }
        for j in 0..self.aggs.len() {
            let m = self.meta();
            let w = &mut self.aggs[j].writer;
            w.refresh().await?;
            w.commit_progress(progress, m).await?;
        }
        Ok(())
    }

    /// Renews the lease every third of its time; stops the pipeline when another instance
    /// has taken it. A store that fails a renewal is tried again at the next tick.
    async fn renew_lease(&mut self) -> Result<()> {
        let Some(lease) = &mut self.lease else {
            return Ok(());
        };
        if !lease.due() {
            return Ok(());
        }
        let now = wall_ms();
        let failed = match lease.write(now).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_fenced() => match lease.look(now).await {
                // Our own earlier renewal landed without our hearing of it.
                Ok(Holder::Us) => return Ok(()),
                Ok(_) => return Err(self.lease_lost()),
                Err(e) => e,
            },
            Err(e) => e,
        };
        tracing::warn!(pipeline = %self.cfg.name, "renewing the lease failed: {failed}; trying again");
        Ok(())
    }

    fn lease_lost(&self) -> IngestError {
        spec::PIPELINE_ACTIVE.set([&self.cfg.name], 0.0);
        IngestError::LeaseLost {
            pipeline: self.cfg.name.clone(),
        }
    }

    /// Whether another instance took the lease this one held.
    async fn lease_taken(&mut self) -> Result<bool> {
        let Some(lease) = &mut self.lease else {
            return Ok(false);
        };
        Ok(lease.look(wall_ms()).await? != Holder::Us)
    }

    /// Gives the lease up after a clean stop, so that a standby takes over at once.
    async fn release_lease(&mut self) {
        let Some(lease) = &mut self.lease else {
            return;
        };
        if !lease.held() {
            return;
        }
        match lease.release().await {
            Ok(()) => {
                tracing::info!(pipeline = %self.cfg.name, "lease released: a standby takes over")
            }
            Err(e) => {
                tracing::warn!(pipeline = %self.cfg.name, "could not release the lease (it expires on its own): {e}")
            }
        }
        spec::PIPELINE_ACTIVE.set([&self.cfg.name], 0.0);
    }

    async fn event_loop(
        &mut self,
        source: &Arc<dyn RecordSource>,
        rx: &mut mpsc::Receiver<GroupEvent>,
        cancel: &CancellationToken,
        ended: &mut bool,
    ) -> Result<()> {
        let latency = self.cfg.flush.max_latency.get();
        let mut stopping = false;
        let mut ticker = tokio::time::interval(Duration::from_millis(500));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.first_buffered.map(|t| t + latency);
            let idle_since = Instant::now();
            tokio::select! {
                _ = cancel.cancelled(), if !stopping => {
                    tracing::info!(pipeline = %self.cfg.name, "stopping: committing what is buffered");
                    stopping = true;
                    source.stop();
                }
                _ = sleep_until(deadline) => {
                    self.commit(source).await?;
                }
                _ = ticker.tick(), if !stopping => {
                    self.tick(source).await?;
                }
                Some(request) = self.live.recv() => self.answer(request),
                ev = rx.recv() => {
                    self.timing.waiting += idle_since.elapsed();
                    match ev {
                    None | Some(GroupEvent::Ended) => {
                        *ended = true;
                        break;
                    }
                    Some(GroupEvent::Records(raw)) => {
                        if stopping { continue; }
                        self.process(*raw).await?;
                        if self.events.buffered_rows() as usize >= self.cfg.flush.max_rows
                            || self.events.buffered_bytes() >= self.cfg.flush.max_bytes.bytes()
                            || self.read_to_targets()
                        {
                            self.commit(source).await?;
                        }
                    }
                    Some(GroupEvent::Assigned(new, reply)) => {
                        self.commit(source).await?;
                        let offsets = self.assign(source, &new).await?;
                        let _ = reply.send(offsets);
                        self.rebuild_windows(source, &new).await?;
                    }
                    // Bad credentials or TLS settings: one error, and the service stops (a
                    // retry would be refused the same way).
                    Some(GroupEvent::Refused(e)) => return Err(e.into()),
                    Some(GroupEvent::Seeked(done)) => {
                        done.map_err(SourceError::from)?;
                        self.seeking.clear();
                    }
                    Some(GroupEvent::Revoked(gone, reply)) => {
                        self.commit(source).await?;
                        for tp in &gone {
                            self.ledger.release(tp);
                            // A revoked partition keeps holding the clock until it is idle
                            // (its records now go to another instance).
                        }
                        spec::PARTITIONS_ASSIGNED.set([&self.cfg.name], self.ledger.owned().count() as f64);
                        let _ = reply.send(());
                        self.rebuild_windows(source, &[]).await?;
                    }
                    }
                },
            }
            if !stopping && self.caught_up() {
                tracing::info!(pipeline = %self.cfg.name, "caught up with the end offsets seen at start");
                stopping = true;
                source.stop();
            }
        }
        self.commit(source).await
    }

    /// Answers an interactive query with the open windows' running values.
    fn answer(&mut self, request: crate::live::OpenWindowsRequest) {
        let outcome = match self.aggs.iter_mut().find(|a| a.cfg.table == request.table) {
            None => Err(crate::live::LiveError::NotRunning(request.table.clone())),
            Some(a) => {
                a.op.open_rows()
                    .map_err(|source| crate::live::LiveError::Window {
                        table: request.table.clone(),
                        source,
                    })
            }
        };
        let _ = request.reply.send(outcome);
    }

    /// With `--until-caught-up`: every target offset has been read (not yet committed), so
    /// there is no reason to wait for `max_latency` before the last commit.
    fn read_to_targets(&self) -> bool {
        let Some(targets) = &self.targets else {
            return false;
        };
        targets
            .iter()
            .all(|(tp, end)| self.ledger.next(tp).is_some_and(|n| n >= *end))
            && targets.iter().any(|(tp, end)| {
                self.ledger
                    .committed(tp, Table::Events)
                    .is_some_and(|c| c < *end)
            })
    }

    /// With `--until-caught-up`: every target offset is committed to the events table and
    /// has been read in this run, so that a replay that rebuilds windows (after a restart or
    /// a change of partitions) has reached it too and the last flush commits its windows.
    fn caught_up(&self) -> bool {
        let Some(targets) = &self.targets else {
            return false;
        };
        targets.iter().all(|(tp, end)| {
            self.ledger.next(tp).is_some_and(|n| n >= *end)
                && self
                    .ledger
                    .committed(tp, Table::Events)
                    .is_some_and(|c| c >= *end)
        })
    }

    /// Decides where each new partition starts: the lowest offset a table still needs
    /// ([`Ledger::resume`]); the configured `start` where the events table has no progress.
    async fn assign(
        &mut self,
        source: &Arc<dyn RecordSource>,
        new: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, i64>> {
        // Another instance may have committed since our snapshot: read the latest progress.
        self.refresh_all().await?;
        let mut out = HashMap::new();
        for tp in new {
            let at = self.resume(source, tp, None).await?;
            self.pid(tp);
            out.insert(tp.clone(), at);
        }
        spec::PARTITIONS_ASSIGNED.set([&self.cfg.name], self.ledger.owned().count() as f64);
        health::mark_ready(&health::pipeline_component(&self.cfg.name));
        Ok(out)
    }

    /// Takes `tp` over from what the tables store and returns where to read from. `fresh`
    /// is the start when the events table has no progress (else the configured start).
    async fn resume(
        &mut self,
        source: &Arc<dyn RecordSource>,
        tp: &TopicPartition,
        fresh: Option<i64>,
    ) -> Result<i64> {
        let stored = self.stored(tp).await?;
        let fresh = match (stored.events, fresh) {
            (Some(e), _) => e,
            (None, Some(f)) => f,
            (None, None) => resolve_start(source, &tp.0, tp.1, self.cfg.start).await?,
        };
        let at = self.ledger.resume(tp.clone(), &stored, fresh);
        events::partition_assigned(&self.cfg.name, &tp.0, tp.1, at, stored.events);
        Ok(at)
    }

    /// The small stable id of a partition (for the window clocks), given on first sight.
    fn pid(&mut self, tp: &TopicPartition) -> u32 {
        if let Some(p) = self.pids.get(tp) {
            return *p;
        }
        let p = self.by_pid.len() as u32;
        self.pids.insert(tp.clone(), p);
        self.by_pid.push(tp.clone());
        let now = wall_ms();
        for a in &mut self.aggs {
            a.op.assign(p, now);
        }
        p
    }

    /// Every partition known holds the window clocks until it is idle, not only the assigned
    /// ones: after a crash the group may hand this instance a few partitions first, and their
    /// records alone must not close windows.
    fn assign_clock_partitions(&mut self) {
        let now = wall_ms();
        for a in &mut self.aggs {
            for p in 0..self.by_pid.len() as u32 {
                a.op.assign(p, now);
            }
        }
    }

    /// Moves every table's snapshot to its latest version (dropping what is buffered) and
    /// reads the clocks the aggregate tables committed; a fresh window operator starts at its
    /// table's clock.
    async fn refresh_all(&mut self) -> Result<()> {
        self.events.refresh().await?;
        self.dead.refresh().await?;
        for w in &mut self.late {
            w.refresh().await?;
        }
        let mut clocks = Vec::with_capacity(self.aggs.len());
        for a in &mut self.aggs {
            a.writer.refresh().await?;
            let clock = committed_clock(&self.cfg.name, &mut a.writer).await?;
            a.op.restore_topic_clock(clock);
            clocks.push(clock);
        }
        self.ledger.restore_clocks(&clocks);
        Ok(())
    }

    /// What every table holds for partition `tp`.
    async fn stored(&mut self, tp: &TopicPartition) -> Result<Stored> {
        let app = progress_app_id(&self.cfg.name, &tp.0, tp.1);
        let mut stored = Stored::empty(self.late.len(), self.aggs.len());
        stored.events = self.events.progress(&app).await?;
        stored.dead_letter = self.dead.progress(&app).await?;
        for (i, w) in self.late.iter_mut().enumerate() {
            stored.late[i] = w.progress(&app).await?;
        }
        for (j, a) in self.aggs.iter_mut().enumerate() {
            stored.aggregates[j] = a.writer.progress(&app).await?;
            if let Windows::Partition(_) = a.op {
                let clock_app = partition_clock_app_id(&self.cfg.name, &tp.0, tp.1);
                stored.clocks[j] = a.writer.progress(&clock_app).await?;
            }
        }
        Ok(stored)
    }

    /// Lets the window clocks see idle partitions; buffers the windows that close.
    async fn tick(&mut self, source: &Arc<dyn RecordSource>) -> Result<()> {
        self.renew_lease().await?;
        let now = wall_ms();
        if self.last_lag_check.elapsed() >= Duration::from_secs(5)
            && self.ledger.owned().next().is_some()
            && !self
                .lag_in_flight
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            self.last_lag_check = Instant::now();
            let owned: Vec<(TopicPartition, i64)> = self
                .ledger
                .owned()
                .filter_map(|tp| Some((tp.clone(), self.ledger.committed(tp, Table::Events)?)))
                .collect();
            let (source, name, done) = (
                source.clone(),
                self.cfg.name.clone(),
                self.lag_in_flight.clone(),
            );
            tokio::spawn(async move {
                update_lag(source, owned, name).await;
                done.store(false, std::sync::atomic::Ordering::SeqCst);
            });
        }
        for a in &self.aggs {
            if let Some(c) = a.op.clock() {
                let lag = (now - c) as f64 / 1000.0;
                spec::WINDOW_CLOCK_LAG_SECONDS.set([&self.cfg.name, &a.cfg.table], lag);
                spec::WINDOW_CLOCK_SECONDS.set([&self.cfg.name, &a.cfg.table], c as f64 / 1000.0);
            }
            let open = a.op.open_windows() as f64;
            spec::OPEN_WINDOWS.set([&self.cfg.name, &a.cfg.table], open);
            for (pid, c) in a.op.partition_clocks() {
                if let Some((topic, p)) = self.by_pid.get(pid as usize) {
                    let labels = [self.cfg.name.as_str(), &a.cfg.table, topic, &p.to_string()];
                    spec::PARTITION_WINDOW_CLOCK_SECONDS.set(labels, c as f64 / 1000.0);
                }
            }
        }
        for a in &mut self.aggs {
            let out = a.op.tick(now).map_err(|e| IngestError::Schema {
                table: a.cfg.table.clone(),
                message: e.to_string(),
            })?;
            if let Some(closed) = out.closed {
                a.writer.write(closed).await?;
                self.first_buffered.get_or_insert_with(Instant::now);
            }
        }
        Ok(())
    }

    async fn process(&mut self, raw: RawBatch) -> Result<()> {
        // Keep only records of partitions we own, at or after the next expected offset.
        // Records come in runs of one partition: look each run's state up once.
        let mut keep = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            let (topic, partition) = (&raw.topics[i], raw.partitions[i]);
            let mut end = i + 1;
            while end < raw.len() && raw.partitions[end] == partition && raw.topics[end] == *topic {
                end += 1;
            }
            let tp = (topic.clone(), partition);
            if !self.seeking.contains(&tp) {
                self.ledger
                    .admit_run(&tp, &raw.offsets[i..end], i, &mut keep);
            }
            i = end;
        }
        if keep.is_empty() {
            return Ok(());
        }
        let raw = if keep.len() == raw.len() {
            raw
        } else {
            raw.select(&keep)
        };
        self.summary.records += raw.len() as u64;
        spec::RECORDS_IN.inc([&self.cfg.name], raw.len() as u64);
        spec::BYTES_IN.inc([&self.cfg.name], payload_bytes(&raw));
        self.first_buffered.get_or_insert_with(Instant::now);
        if matches!(self.events, EventsSink::Upsert(_)) {
            return self.process_changes(&raw).await;
        }
        let t0 = Instant::now();
        let decoded = self.decode(&raw).await?;
        let t1 = Instant::now();
        if let Some(events) = decoded.events {
            let positions = Positions::of(&raw, &decoded.event_indices);
            self.feed_windows(&events, &positions).await?;
            let (events, _) = self.wanted_rows(&events, &positions, Table::Events)?;
            if let EventsSink::Append(w) = &mut self.events {
                w.write(events).await?;
            }
        }
        self.timing.decode += t1 - t0;
        self.timing.write += t1.elapsed();
        self.write_dead(&raw, decoded.dead).await
    }

    /// Decodes `raw` with the pipeline's decoder, first taking in the schema change its
    /// records bring, if any.
    async fn decode(&mut self, raw: &RawBatch) -> Result<sluice_formats::Decoded> {
        let format_err = |source| IngestError::Format {
            table: self.cfg.table.clone(),
            source,
        };
        self.decoder.prepare(raw).await.map_err(format_err)?;
        if let Some(change) = self.decoder.take_change() {
            self.take_schema_change(change).await?;
        }
        self.decoder
            .decode(raw)
            .map_err(|source| IngestError::Format {
                table: self.cfg.table.clone(),
                source,
            })
    }

    /// Upsert mode: splits `raw` into upserts and deletes, decodes each, and keeps the last
    /// change per key for the flush; what cannot be applied is a dead letter.
    async fn process_changes(&mut self, raw: &RawBatch) -> Result<()> {
        let t0 = Instant::now();
        let split = match &self.events {
            EventsSink::Upsert(u) => {
                sluice_changelog::envelope::split(raw, u.envelope, &u.key_columns)
            }
            EventsSink::Append(_) => return Ok(()),
        };
        self.write_dead(raw, split.bad).await?;
        if let Some(sub) = split.upserts {
            let decoded = self.decode(&sub).await?;
            self.keep_changes(&sub, decoded, false).await?;
        }
        if let Some(sub) = split.deletes {
            let decoded = match &mut self.events {
                EventsSink::Upsert(u) => u.key_decoder.decode(&sub),
                EventsSink::Append(_) => return Ok(()),
            }
            .map_err(|source| IngestError::Format {
                table: self.cfg.table.clone(),
                source,
            })?;
            self.keep_changes(&sub, decoded, true).await?;
        }
        self.timing.decode += t0.elapsed();
        Ok(())
    }

    /// Hands decoded changes of `raw` that the events table still needs to the upsert
    /// writer; its refusals and the records that did not decode become dead letters.
    async fn keep_changes(
        &mut self,
        raw: &RawBatch,
        decoded: sluice_formats::Decoded,
        delete: bool,
    ) -> Result<()> {
        let mut dead = decoded.dead;
        if let Some(rows) = decoded.events {
            let positions = Positions::of(raw, &decoded.event_indices);
            let (rows, positions) = self.wanted_rows(&rows, &positions, Table::Events)?;
            let refused = match &mut self.events {
                EventsSink::Upsert(u) => u.writer.add(&rows, delete)?,
                EventsSink::Append(_) => Vec::new(),
            };
            if !refused.is_empty() {
                let index: HashMap<(i32, i64), usize> = (0..raw.len())
                    .map(|i| ((raw.partitions[i], raw.offsets[i]), i))
                    .collect();
                for r in refused {
                    if let Some(i) = positions
                        .at(r.row)
                        .and_then(|(tp, offset)| index.get(&(tp.1, offset)))
                    {
                        dead.push(sluice_formats::DeadLetter {
                            index: *i,
                            kind: r.kind,
                            message: r.message,
                        });
                    }
                }
                dead.sort_by_key(|d| d.index);
            }
        }
        self.write_dead(raw, dead).await
    }

    /// Buffers dead letters of `raw` that the dead-letter table still needs.
    async fn write_dead(
        &mut self,
        raw: &RawBatch,
        dead: Vec<sluice_formats::DeadLetter>,
    ) -> Result<()> {
        let dead: Vec<_> = dead
            .into_iter()
            .filter(|d| {
                let tp = (raw.topics[d.index].clone(), raw.partitions[d.index]);
                self.ledger
                    .wants(&tp, Table::DeadLetter, raw.offsets[d.index])
            })
            .collect();
        if dead.is_empty() {
            return Ok(());
        }
        for d in &dead {
            *self.pending.dead.entry(d.kind.as_str()).or_default() += 1;
            let i = d.index;
            let (topic, partition, offset) = (&raw.topics[i], raw.partitions[i], raw.offsets[i]);
            let (reason, message) = (d.kind.as_str(), &d.message);
            events::dead_letter(&self.cfg.name, topic, partition, offset, reason, message);
            sluice_telemetry::recent::dead_letter(
                &self.cfg.name,
                topic,
                partition,
                offset,
                reason,
                message,
            );
        }
        let batch = dead_letter_batch(&self.dead.schema(), &self.cfg.name, raw, &dead).map_err(
            |source| IngestError::Format {
                table: self.dead.name().to_string(),
                source,
            },
        )?;
        self.dead.write(batch).await?;
        Ok(())
    }

    /// Adds the columns a new writer schema brought to the events table, in a metadata commit
    /// before any of its rows, and decodes into the new schema from then on.
    async fn take_schema_change(&mut self, change: sluice_formats::SchemaChange) -> Result<()> {
        let fields: Vec<_> = sluice_formats::evolve::arrow_fields(&change.columns)
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let schema = self.events.add_columns(fields).await?;
        crate::fault::point("after_schema_change");
        self.decoder
            .retarget(schema)
            .map_err(|source| IngestError::Format {
                table: self.cfg.table.clone(),
                source,
            })?;
        let names: Vec<String> = change.columns.iter().map(|c| c.name.clone()).collect();
        spec::SCHEMA_CHANGES.inc([&self.cfg.name], 1);
        events::schema_changed(
            &self.cfg.name,
            &self.cfg.table,
            None,
            &names,
            &change.reason,
        );
        Ok(())
    }

    /// Feeds decoded rows to every window operator, each from its own progress on (records
    /// below the events table's progress are replays that rebuild open windows); buffers
    /// closed windows and, for records seen for the first time, late rows.
    async fn feed_windows(&mut self, events: &RecordBatch, positions: &Positions) -> Result<()> {
        let late_schema = late_schema();
        for j in 0..self.aggs.len() {
            let (rows, pos) = self.wanted_rows(events, positions, Table::Aggregate(j))?;
            if pos.is_empty() {
                continue;
            }
            let now = wall_ms();
            let a = &mut self.aggs[j];
            let out = match &mut a.op {
                Windows::Topic(op) => {
                    let mut pids = Vec::with_capacity(pos.len());
                    for (range, tp) in &pos.runs {
                        let pid = self.pids.get(tp).copied().unwrap_or(u32::MAX);
                        pids.extend(std::iter::repeat_n(pid, range.len()));
                    }
                    op.process_at(&rows, &pids, &pos.offsets, now)
                }
                Windows::Partition(w) => {
                    let runs: Vec<_> = pos
                        .runs
                        .iter()
                        .map(|(range, tp)| {
                            (
                                range.clone(),
                                self.pids.get(tp).copied().unwrap_or(u32::MAX),
                            )
                        })
                        .collect();
                    w.process_runs(&rows, &runs, &pos.offsets, now)
                }
            }
            .map_err(|source| IngestError::Window {
                table: a.cfg.table.clone(),
                source,
            })?;
            if let Some(closed) = out.closed {
                a.writer.write(closed).await?;
            }
            let table = a.cfg.table.clone();
            let late_index = a.late_index;
            *self.pending.skipped.entry(table.clone()).or_default() += out.skipped_assignments;
            let wanted_by = |row: usize, t: Table| {
                pos.at(row)
                    .is_some_and(|(tp, offset)| self.ledger.wants(tp, t, offset))
            };
            let future = out
                .future
                .iter()
                .filter(|r| wanted_by(**r, Table::Events))
                .count() as u64;
            if future > 0 {
                *self.pending.future.entry(table.clone()).or_default() += future;
            }
            let late: Vec<_> = out
                .late
                .into_iter()
                .filter(|l| wanted_by(l.row, Table::Late(late_index)))
                .collect();
            if !late.is_empty() {
                *self.pending.late.entry(table.clone()).or_default() += late.len() as u64;
                for l in late.iter().rev().take(sluice_telemetry::recent::KEEP).rev() {
                    if let Some((tp, offset)) = pos.at(l.row) {
                        let window = format!(
                            "missed [{}, {}) at clock {}",
                            ms_text(l.missed_start_ms),
                            ms_text(l.missed_end_ms),
                            ms_text(l.clock_ms)
                        );
                        let (name, topic) = (&self.cfg.name, &tp.0);
                        sluice_telemetry::recent::late(name, &table, topic, tp.1, offset, window);
                    }
                }
                let writer = &mut self.late[late_index];
                let rows = late_rows(&late_schema, &self.cfg.name, &table, &rows, &late).map_err(
                    |source| IngestError::Arrow {
                        table: writer.name().to_string(),
                        what: "building late rows",
                        source,
                    },
                )?;
                writer.write(rows).await?;
            }
        }
        Ok(())
    }

    /// The rows of `batch` (at `positions`) that go to `table` under the replay rule
    /// ([`Ledger::threshold`]), with their positions.
    fn wanted_rows(
        &self,
        batch: &RecordBatch,
        positions: &Positions,
        table: Table,
    ) -> Result<(RecordBatch, Positions)> {
        let thresholds: Vec<i64> = positions
            .runs
            .iter()
            .map(|(_, tp)| self.ledger.threshold(tp, table).unwrap_or(i64::MAX))
            .collect();
        let offsets = &positions.offsets;
        // Offsets rise within a run: the common case, every run wanted whole, costs one look
        // per run.
        if positions
            .runs
            .iter()
            .zip(&thresholds)
            .all(|((rows, _), t)| offsets[rows.start] >= *t)
        {
            return Ok((batch.clone(), positions.clone()));
        }
        let mut mask = arrow::array::BooleanBufferBuilder::new(batch.num_rows());
        for ((rows, _), t) in positions.runs.iter().zip(&thresholds) {
            for o in &offsets[rows.clone()] {
                mask.append(*o >= *t);
            }
        }
        let mask = BooleanArray::new(mask.finish(), None);
        let rows = filter_record_batch(batch, &mask).map_err(|source| IngestError::Arrow {
            table: self.cfg.table.clone(),
            what: "keeping the rows a table needs",
            source,
        })?;
        Ok((rows, positions.filter(&mask)))
    }

    /// Commits everything buffered in the ledger's order, then offsets to the group.
    async fn commit(&mut self, source: &Arc<dyn RecordSource>) -> Result<()> {
        self.first_buffered = None;
        self.flush_lease = self.lease.as_ref().map(Lease::epoch).filter(|e| *e > 0);
        let mut rows = Vec::new();
        if self.dead.buffered_rows() > 0 {
            rows.push(Table::DeadLetter);
        }
        for (i, w) in self.late.iter().enumerate() {
            if w.buffered_rows() > 0 {
                rows.push(Table::Late(i));
            }
        }
        if self.events.buffered_rows() > 0 {
            rows.push(Table::Events);
        }
        let mut needed = Vec::with_capacity(self.aggs.len());
        let mut clocks = Vec::with_capacity(self.aggs.len());
        let mut partition_clocks = Vec::with_capacity(self.aggs.len());
        for (j, a) in self.aggs.iter().enumerate() {
            if a.writer.buffered_rows() > 0 {
                rows.push(Table::Aggregate(j));
            }
            needed.push(
                a.op.needed_offsets()
                    .into_iter()
                    .filter_map(|(pid, o)| Some((self.by_pid.get(pid as usize)?.clone(), o)))
                    .collect::<BTreeMap<_, _>>(),
            );
            clocks.push(a.op.topic_clock());
            partition_clocks.push(
                a.op.partition_clocks()
                    .into_iter()
                    .filter_map(|(pid, c)| Some((self.by_pid.get(pid as usize)?.clone(), c)))
                    .collect::<BTreeMap<_, _>>(),
            );
        }
        let plan = self.ledger.plan(&Pending {
            rows: &rows,
            needed: &needed,
            clocks: &clocks,
            partition_clocks: &partition_clocks,
        });
        if plan.is_empty() {
            return Ok(());
        }
        let dirty = self.ledger.dirty();
        let started = Instant::now();
        let mut result = Ok(());
        crate::fault::point("before_commit");
        for c in &plan {
            result = self.commit_one(c).await;
            if result.is_err() {
                break;
            }
            self.ledger.record(c);
        }
        let timing = std::mem::take(&mut self.timing);
        tracing::debug!(pipeline = %self.cfg.name, waiting_ms = timing.waiting.as_millis() as u64, decode_ms = timing.decode.as_millis() as u64, write_ms = timing.write.as_millis() as u64, commit_ms = started.elapsed().as_millis() as u64, "flush timing");
        let pending = std::mem::take(&mut self.pending);
        match result {
            Ok(()) => {
                self.store_failures = 0;
                self.publish(&pending, &dirty, started.elapsed());
                source.commit_offsets(&dirty.into_iter().collect());
                Ok(())
            }
            // Fenced by another instance, or refused because another writer changed a table's
            // metadata or protocol: what landed stays (the ledger says so), the rest is dropped;
            // reload the tables and go on from their progress.
            Err(e) if e.is_fenced() && self.lease_taken().await? => Err(self.lease_lost()),
            Err(e) if e.is_fenced() || e.is_conflict() => {
                let (metric, what) = if e.is_fenced() {
                    self.summary.fenced += 1;
                    (&spec::FENCED_COMMITS, "re-reading progress from the tables")
                } else {
                    self.summary.conflicts += 1;
                    (
                        &spec::COMMIT_CONFLICTS,
                        "another writer changed the table's metadata or protocol: reloading the tables and re-reading progress",
                    )
                };
                events::commit_lost(&self.cfg.name, &e, what);
                metric.inc([&self.cfg.name], 1);
                self.resync(source).await
            }
            // The store failed a request of the commit (after object_store's own retries):
            // whether it landed is read back from the tables, as after a fence, after a pause.
            // A store that keeps failing stops the pipeline after a few rounds.
            Err(e) if e.is_store_failure() && self.store_failures < STORE_FAILURES => {
                self.store_failures += 1;
                let pause = Duration::from_secs(1 << self.store_failures);
                events::commit_lost(
                    &self.cfg.name,
                    &e,
                    &format!(
                        "an object-store request failed; re-reading progress from the tables in {pause:?}"
                    ),
                );
                tokio::time::sleep(pause).await;
                self.resync(source).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Makes one commit of a plan; a fault point follows each (for the crash tests).
    async fn commit_one(
        &mut self,
        c: &Commit<TopicPartition>,
    ) -> std::result::Result<(), LakeError> {
        let name = self.cfg.name.clone();
        let mut progress: Vec<(String, i64)> = c
            .progress
            .iter()
            .map(|((t, p), v)| (progress_app_id(&name, t, *p), *v))
            .collect();
        let lease = self
            .lease
            .as_ref()
            .zip(self.flush_lease)
            .map(|(l, expiry)| (l.app_id().to_string(), expiry));
        progress.extend(lease.clone());
        let meta = HashMap::from([(
            "sluice.pipeline".to_string(),
            serde_json::Value::from(name.clone()),
        )]);
        let (out, destination, point) = match c.table {
            Table::DeadLetter => (
                self.dead.commit(&progress, meta).await?,
                "dead_letter",
                "after_dead_letter_commit",
            ),
            Table::Late(i) => {
                let w = &mut self.late[i];
                (
                    w.commit(&progress, meta).await?,
                    "late",
                    "after_late_commit",
                )
            }
            Table::Events => {
                let (out, changes) = self.events.commit(&progress, meta).await?;
                if let Some(c) = changes {
                    record_changes(&name, self.events.name(), &c);
                }
                (out, "events", "after_events_commit")
            }
            Table::Aggregate(j) => {
                let w = &mut self.aggs[j].writer;
                let mut progress = progress;
                if let Some(clock) = c.clock {
                    progress.push((clock_app_id(&name), clock));
                }
                for ((t, p), clock) in &c.partition_clocks {
                    progress.push((partition_clock_app_id(&name, t, *p), *clock));
                }
                if c.rows {
                    (
                        w.commit(&progress, meta).await?,
                        "aggregate",
                        "after_aggregate_commit",
                    )
                } else {
                    (
                        Some(w.commit_progress(&progress, meta).await?),
                        "aggregate",
                        "after_anchor_commit",
                    )
                }
            }
        };
        if let Some(out) = out {
            let table = match c.table {
                Table::DeadLetter => self.dead.name().to_string(),
                Table::Late(i) => self.late[i].name().to_string(),
                Table::Events => self.events.name().to_string(),
                Table::Aggregate(j) => self.aggs[j].writer.name().to_string(),
            };
            record_commit(&name, &table, destination, &out);
            self.summary.commits += 1;
            match c.table {
                Table::DeadLetter => self.summary.dead_letters += out.rows,
                Table::Late(_) => self.summary.late_rows += out.rows,
                Table::Events => self.summary.events += out.rows,
                Table::Aggregate(_) => self.summary.aggregate_rows += out.rows,
            }
            events::table_committed(&name, &table, out.version, out.rows, out.files);
            sluice_telemetry::recent::commit(&name, &table, out.version, out.rows, out.files);
        }
        crate::fault::point(point);
        Ok(())
    }

    /// Publishes the counts of a flush that committed.
    fn publish(&self, pending: &PendingCounts, dirty: &[(TopicPartition, i64)], took: Duration) {
        let name = self.cfg.name.as_str();
        spec::COMMIT_DURATION_SECONDS.observe([name], took.as_secs_f64());
        sluice_telemetry::recent::flush_done(name, took);
        for (reason, n) in &pending.dead {
            spec::DEAD_LETTERS.inc([name, reason], *n);
        }
        for (metric, counts) in [
            (&spec::LATE_RECORDS, &pending.late),
            (&spec::LATE_WINDOW_ASSIGNMENTS_SKIPPED, &pending.skipped),
            (&spec::FUTURE_RECORDS, &pending.future),
        ] {
            for (table, n) in counts {
                metric.inc([name, table], *n);
            }
        }
        for (tp, next) in dirty {
            let partition = tp.1.to_string();
            spec::COMMITTED_OFFSET.set([name, &tp.0, &partition], *next as f64);
        }
    }

    /// After losing a commit: drop buffers and open windows, re-read every owned partition's
    /// progress and the clocks, and seek there. The windows are rebuilt by the replay.
    async fn resync(&mut self, source: &Arc<dyn RecordSource>) -> Result<()> {
        for a in &mut self.aggs {
            a.op.reset();
        }
        self.assign_clock_partitions();
        self.refresh_all().await?;
        let owned: Vec<TopicPartition> = self.ledger.owned().cloned().collect();
        self.resume_and_seek(source, owned.clone()).await?;
        self.open_partition_windows(&owned)
    }

    /// Opens per-partition windows for `parts` (just resumed) at the clocks their tables
    /// committed; the replay from their resume offsets rebuilds the open windows.
    fn open_partition_windows(&mut self, parts: &[TopicPartition]) -> Result<()> {
        let now = wall_ms();
        for (j, a) in self.aggs.iter_mut().enumerate() {
            let Windows::Partition(w) = &mut a.op else {
                continue;
            };
            for tp in parts {
                let Some(pid) = self.pids.get(tp).copied() else {
                    continue;
                };
                let clock = self.ledger.partition_clock(tp, j);
                w.open(pid, (&tp.0, tp.1), clock, now)
                    .map_err(|source| IngestError::Window {
                        table: a.cfg.table.clone(),
                        source,
                    })?;
            }
        }
        Ok(())
    }

    /// A windowed pipeline whose partitions changed rebuilds its windows from the tables: the
    /// windows of a partition it gave up must not be emitted here, and a partition it got back
    /// is replayed into no window that already holds its records. The partitions in `fresh`
    /// were just resumed; the others are resumed and sought.
    async fn rebuild_windows(
        &mut self,
        source: &Arc<dyn RecordSource>,
        fresh: &[TopicPartition],
    ) -> Result<()> {
        if self.aggs.is_empty() {
            return Ok(());
        }
        // Per-partition windows depend on their own partition alone: those of a partition
        // given up are dropped, those of the others stay, unless a topic-clock aggregate of
        // the pipeline makes every owned partition replay.
        let topic_clock = self.aggs.iter().any(|a| matches!(a.op, Windows::Topic(_)));
        for (j, a) in self.aggs.iter_mut().enumerate() {
            match &mut a.op {
                Windows::Topic(op) => {
                    op.reset();
                    op.restore_clock(self.ledger.committed_clock(j));
                }
                Windows::Partition(w) => {
                    let gone: Vec<u32> = self
                        .pids
                        .iter()
                        .filter(|(tp, pid)| w.is_open(**pid) && !self.ledger.owns(tp))
                        .map(|(_, pid)| *pid)
                        .collect();
                    for pid in gone {
                        w.close(pid);
                        if let Some((topic, p)) = self.by_pid.get(pid as usize) {
                            let labels =
                                [self.cfg.name.as_str(), &a.cfg.table, topic, &p.to_string()];
                            spec::PARTITION_WINDOW_CLOCK_SECONDS.remove(labels);
                        }
                    }
                }
            }
        }
        self.assign_clock_partitions();
        let others: Vec<TopicPartition> = if topic_clock {
            self.ledger
                .owned()
                .filter(|tp| !fresh.contains(tp))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        self.resume_and_seek(source, others.clone()).await?;
        let mut opened = fresh.to_vec();
        opened.extend(others);
        self.open_partition_windows(&opened)
    }

    /// Resumes `parts` from the tables and moves the source there; their records still in
    /// the channel are dropped until the source answers.
    async fn resume_and_seek(
        &mut self,
        source: &Arc<dyn RecordSource>,
        parts: Vec<TopicPartition>,
    ) -> Result<()> {
        if parts.is_empty() {
            return Ok(());
        }
        let mut seeks = HashMap::new();
        for tp in parts {
            let fresh = self.ledger.committed(&tp, Table::Events);
            let at = self.resume(source, &tp, fresh).await?;
            seeks.insert(tp.clone(), at);
            self.seeking.insert(tp);
        }
        Ok(source.seek(&seeks)?)
    }
}

/// The columns of a pipeline whose schemas live in the registry (its subject's latest, the key
/// column, the existing table's), and the registry with that latest schema.
async fn registry_schema(
    config: &Config,
    p: &PipelineConfig,
    lake: &Lake,
) -> Result<(
    Vec<sluice_config::FieldConfig>,
    (
        Arc<Registry>,
        Arc<sluice_formats::registry::RegisteredSchema>,
    ),
)> {
    let format_err = |source| IngestError::Format {
        table: p.table.clone(),
        source,
    };
    let registry = Arc::new(
        Registry::new(&config.schema_registry).map_err(|e| format_err(FormatError::from(e)))?,
    );
    let subject = p.value_subject();
    let latest = registry
        .latest(&subject)
        .await
        .map_err(|e| format_err(FormatError::from(e)))?;
    let columns = if p.format == Format::Avro {
        avro::table_columns(&subject, &latest)
    } else {
        sluice_formats::protobuf::table_columns(&subject, &latest)
    }
    .map_err(format_err)?;
    let columns = with_key_column(p, &registry, columns).await?;
    let columns = crate::schema_change::registry_columns(p, lake, columns).await?;
    Ok((columns, (registry, latest)))
}

/// The decoder of pipeline `p` (its columns resolved) into the events table's schema `output`.
fn make_decoder(
    p: &PipelineConfig,
    registry: Option<(
        Arc<Registry>,
        Arc<sluice_formats::registry::RegisteredSchema>,
    )>,
    infer: bool,
    output: arrow::datatypes::SchemaRef,
) -> std::result::Result<RecordDecoder, FormatError> {
    Ok(match (p.format, registry) {
        (Format::Protobuf, Some((registry, latest))) => RecordDecoder::Protobuf(Box::new(
            ProtobufDecoder::new(p, registry, &latest, output)?,
        )),
        (_, Some((registry, latest))) => {
            let mut decoder = AvroDecoder::new(p, registry.clone(), &latest, output.clone())?;
            if p.key_format == sluice_config::KeyFormat::Avro {
                let ty = output
                    .field_with_name(&p.key_column)
                    .map(|f| f.data_type().clone())
                    .map_err(|_| FormatError::MissingColumn {
                        column: p.key_column.clone(),
                    })?;
                decoder = decoder.with_keys(AvroKeys::new(
                    registry,
                    p.key_subject(),
                    p.key_column.clone(),
                    ty,
                )?);
            }
            RecordDecoder::Avro(Box::new(decoder))
        }
        // A JSON pipeline without a configured schema: its columns follow the records.
        (_, None) if infer => RecordDecoder::InferredJson(Box::new(InferringJson::new(p, output)?)),
        (_, None) => RecordDecoder::Json(Box::new(JsonDecoder::new(p, output)?)),
    })
}

/// The value's `columns`, and with `key_format = "avro"` the key column, its type from the key
/// subject's latest schema.
async fn with_key_column(
    p: &PipelineConfig,
    registry: &Registry,
    mut columns: Vec<sluice_config::FieldConfig>,
) -> Result<Vec<sluice_config::FieldConfig>> {
    if p.key_format != sluice_config::KeyFormat::Avro {
        return Ok(columns);
    }
    let format_err = |source| IngestError::Format {
        table: p.table.clone(),
        source,
    };
    if columns.iter().any(|c| c.name == p.key_column) {
        return Err(IngestError::Schema {
            table: p.table.clone(),
            message: format!(
                "the values already have a field {:?}, where the decoded keys would go: set key_column to another name",
                p.key_column
            ),
        });
    }
    let subject = p.key_subject();
    let latest = registry
        .latest(&subject)
        .await
        .map_err(|e| format_err(FormatError::from(e)))?;
    let key = sluice_formats::avro_key::key_column(&p.key_column, &subject, &latest)
        .map_err(format_err)?;
    columns.push(key);
    Ok(columns)
}

/// `p` with `columns` (from its registry subject), checked against the rules that read the
/// schema.
fn with_columns(
    p: &PipelineConfig,
    columns: Vec<sluice_config::FieldConfig>,
) -> Result<PipelineConfig> {
    p.with_schema(columns).map_err(|problems| {
        let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        IngestError::Schema {
            table: p.table.clone(),
            message: format!(
                "with the columns of subject {}: {}",
                p.value_subject(),
                list.join("; ")
            ),
        }
    })
}

/// `p` with the columns of its existing events table (or, for a new table, the event time
/// field alone: the records' other fields become columns as they arrive), checked again
/// against the rules that read the schema.
async fn schema_from_table(p: &PipelineConfig, lake: &Lake) -> Result<PipelineConfig> {
    let fields = match lake.open(&p.table).await? {
        Some(table) => {
            let arrow = sluice_lake::table_arrow_schema(&p.table, &table)?;
            crate::schema_change::data_columns(&p.table, &arrow)?
        }
        None => sluice_formats::infer::seed_columns(p),
    };
    p.with_schema(fields).map_err(|problems| {
        let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        IngestError::Schema {
            table: p.table.clone(),
            message: format!(
                "pipeline {} has no schema, so its columns come from its records and its table, which has no such columns yet: {}; declare schema = [...] with them",
                p.name,
                list.join("; ")
            ),
        }
    })
}

/// Consumer lag per owned partition: high watermark minus committed offset.
async fn update_lag(
    source: Arc<dyn RecordSource>,
    owned: Vec<(TopicPartition, i64)>,
    name: String,
) {
    let committed: HashMap<TopicPartition, i64> = owned.iter().cloned().collect();
    let parts = owned.into_iter().map(|(tp, _)| tp).collect();
    for ((topic, partition), high) in source.high_watermarks(parts).await {
        let Some(c) = committed.get(&(topic.clone(), partition)) else {
            continue;
        };
        let p = partition.to_string();
        spec::CONSUMER_LAG_RECORDS.set([&name, &topic, &p], (high - c).max(0) as f64);
    }
}

/// Counts what an upsert commit did.
fn record_changes(pipeline: &str, table: &str, c: &sluice_changelog::ChangeCounts) {
    for (op, n) in [
        ("inserted", c.merge.inserted),
        ("updated", c.merge.updated),
        ("deleted", c.merge.deleted),
    ] {
        spec::CHANGE_ROWS.inc([pipeline, table, op], n);
    }
    spec::CHANGE_ROWS_COPIED.inc([pipeline, table], c.merge.copied);
    spec::CHANGE_BYTES_REWRITTEN.inc([pipeline, table], c.merge.bytes_removed);
    tracing::info!(
        pipeline,
        table,
        changes = c.changes,
        keys = c.keys,
        inserted = c.merge.inserted,
        updated = c.merge.updated,
        deleted = c.merge.deleted,
        copied = c.merge.copied,
        files_removed = c.merge.files_removed,
        bytes_rewritten = c.merge.bytes_removed,
        amplification = c.amplification(),
        "changes applied"
    );
}

fn record_commit(pipeline: &str, table: &str, destination: &str, out: &sluice_lake::CommitOutcome) {
    spec::ROWS_OUT.inc([pipeline, destination], out.rows);
    spec::BYTES_WRITTEN.inc([pipeline, table], out.bytes);
    spec::COMMITS.inc([pipeline, table], 1);
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The window clock an aggregate table holds for a pipeline: its clock `txn`. Tables written
/// before the clock was a `txn` hold it in commit metadata (`sluice.clock`): then the newest
/// commit that has it, among the last [`LEGACY_CLOCK_COMMITS`].
/// (Takes `&mut` so that the future does not need the writer to be `Sync`.)
pub async fn committed_clock(pipeline: &str, writer: &mut TableWriter) -> Result<Option<i64>> {
    let name = writer.name().to_string();
    table_clock(pipeline, &name, writer.table()).await
}

/// How far back the clock of a table from before the clock `txn` is looked for.
pub const LEGACY_CLOCK_COMMITS: usize = 1000;

/// [`committed_clock`] of a loaded table.
pub async fn table_clock(
    pipeline: &str,
    name: &str,
    table: &sluice_lake::deltalake::DeltaTable,
) -> Result<Option<i64>> {
    use futures::StreamExt;
    if let Some(c) = sluice_lake::committed_progress(name, table, &clock_app_id(pipeline)).await? {
        return Ok(Some(c));
    }
    let mut history = table.history(Some(LEGACY_CLOCK_COMMITS));
    while let Some(info) = history.next().await {
        let Ok(info) = info else { break };
        if let Some(c) = info.info.get(CLOCK_KEY).and_then(|v| v.as_i64()) {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// Key and value bytes of a batch.
fn payload_bytes(raw: &RawBatch) -> u64 {
    let span = |a: &arrow::array::BinaryArray| {
        let o = a.value_offsets();
        o.last().zip(o.first()).map_or(0, |(l, f)| (l - f) as u64)
    };
    span(&raw.keys) + span(&raw.values)
}

/// A time in ms as RFC 3339 (for people).
fn ms_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or(ms.to_string(), |d| d.to_rfc3339())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

async fn resolve_start(
    source: &Arc<dyn RecordSource>,
    topic: &Arc<str>,
    partition: i32,
    start: StartPosition,
) -> Result<i64> {
    let source = source.clone();
    Ok(source
        .start_offset(topic.to_string(), partition, start)
        .await?)
}

/// The end offset of every partition of `topics`, read once at start.
pub async fn end_offsets(
    source: &Arc<dyn RecordSource>,
    topics: &[String],
) -> Result<BTreeMap<TopicPartition, i64>> {
    Ok(source.clone().end_offsets(topics.to_vec()).await?)
}

//! [`Pipeline`]: consumes a pipeline's topics and commits its tables exactly once.
//!
//! Commit protocol for one flush, in this order: the dead-letter table (when it has rows), the
//! late table (when it has rows), every aggregate table, and the events table last. Each commit
//! carries one `txn` per partition (`sluice:<pipeline>:<topic>:<p>`). For the events,
//! dead-letter and late tables the version is the next offset to read; for an aggregate table it
//! is the lowest offset an open window still needs (semantics.md section 6), and the commit's
//! metadata holds the window clock.
//!
//! A partition resumes at the minimum of the events table's progress and the aggregates'
//! versions. Records below the events table's progress were fully handled before: they are fed
//! to the window operators only, to rebuild open windows (windows already emitted are closed
//! under the restored clock and skip them), and never written again to any table. So a crash
//! between any two commits neither loses nor doubles a row. Offsets go to the consumer group
//! only after the events commit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use sluice_config::{Config, PipelineConfig, StartPosition};
use sluice_lake::{
    BackgroundWriter, Lake, LakeError, TableSpec, TableWriter, WriterOptions, progress_app_id,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::dead_letter::dead_letter_batch;
use crate::decode::JsonDecoder;
use crate::raw::RawBatch;
use crate::schema::{dead_letter_schema, events_schema};
use crate::source::{KafkaSource, RecordSource, SourceEvent, SourceOptions, TopicPartition};
use crate::windows::{AggregateSink, CLOCK_KEY, late_rows, late_schema, window_spec};
use crate::{IngestError, Result, metrics};

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
}

#[derive(Clone, Copy, Debug)]
struct PartitionState {
    /// Next offset to accept from Kafka.
    next: i64,
    /// Next offset committed in the events table: records below it are replays.
    events_committed: i64,
    /// Next offset committed in the dead-letter table.
    dead_committed: i64,
    /// Next offset committed in the late table(s).
    late_committed: i64,
}

/// One pipeline: its tables, decoder, window operators and partitions.
pub struct Pipeline {
    cfg: PipelineConfig,
    kafka: sluice_config::KafkaConfig,
    /// The events table's writer encodes on its own task, in parallel with decoding.
    events: BackgroundWriter,
    dead: TableWriter,
    decoder: JsonDecoder,
    aggs: Vec<AggregateSink>,
    /// Late tables by name (the aggregates of a pipeline usually share one).
    late: BTreeMap<String, TableWriter>,
    /// Small stable ids of partitions, for the window clocks.
    pids: HashMap<TopicPartition, u32>,
    parts: HashMap<TopicPartition, PartitionState>,
    first_buffered: Option<Instant>,
    summary: PipelineSummary,
    /// Diverted-record counts of the current flush, published when it commits.
    pending: PendingCounts,
    last_lag_check: Instant,
    targets: Option<BTreeMap<TopicPartition, i64>>,
    /// Where the time of the current flush went (logged at debug level on commit).
    timing: StageTiming,
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
        let resolved;
        let p = if p.schema.is_empty() {
            resolved = schema_from_table(config, p, lake).await?;
            &resolved
        } else {
            p
        };
        let (events, dead) = open_tables(config, p, lake).await?;
        let decoder =
            JsonDecoder::new(p, events.schema()).map_err(|message| IngestError::Schema {
                table: p.table.clone(),
                message,
            })?;
        let options = writer_options(config, p);
        let mut aggs = Vec::new();
        let mut late = BTreeMap::new();
        for agg in &p.aggregates {
            let schema_err = |message: String| IngestError::Schema {
                table: agg.table.clone(),
                message,
            };
            let spec = window_spec(p, agg).map_err(schema_err)?;
            let mut op = sluice_window::WindowOperator::with_input_schema(spec, &events.schema())
                .map_err(|e| schema_err(e.to_string()))?;
            let out_schema = op.output_schema(&[]);
            let desc = format!("sluice windowed aggregate of pipeline {}", p.name);
            let table = lake
                .open_or_create(&agg.table, &out_schema, &table_spec(config, vec![], desc))
                .await?;
            let late_name = p.late_table(agg);
            if !late.contains_key(&late_name) {
                let desc = format!("sluice late records of pipeline {}", p.name);
                let lt = lake
                    .open_or_create(
                        &late_name,
                        &late_schema(),
                        &table_spec(config, vec![], desc),
                    )
                    .await?;
                late.insert(
                    late_name.clone(),
                    TableWriter::new(&late_name, lt, options.clone())?,
                );
            }
            let writer = TableWriter::new(&agg.table, table, options.clone())?;
            aggs.push(AggregateSink {
                cfg: agg.clone(),
                late_table: late_name,
                op,
                writer,
            });
        }
        Ok(Self {
            cfg: p.clone(),
            kafka: config.kafka.clone(),
            events: BackgroundWriter::spawn(events),
            dead,
            decoder,
            aggs,
            late,
            pids: HashMap::new(),
            parts: HashMap::new(),
            first_buffered: None,
            summary: PipelineSummary::default(),
            pending: PendingCounts::default(),
            last_lag_check: Instant::now(),
            targets: None,
            timing: StageTiming::default(),
        })
    }

    /// The consumer group this pipeline joins: `<kafka.group_id>.<pipeline>`.
    pub fn group_id(&self) -> String {
        format!("{}.{}", self.kafka.group_id, self.cfg.name)
    }

    /// Consumes until cancelled (or caught up), committing as it goes.
    pub async fn run(self, opts: RunOptions, cancel: CancellationToken) -> Result<PipelineSummary> {
        let source_opts = SourceOptions {
            brokers: self.kafka.brokers.clone(),
            group_id: self.group_id(),
            topics: self.cfg.topics.clone(),
            options: self
                .kafka
                .options
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            max_batch_records: 10_000,
            max_batch_bytes: 8 << 20,
            with_headers: self.cfg.include_headers,
        };
        let (source, rx) = KafkaSource::start(source_opts, 4).map_err(IngestError::Kafka)?;
        self.run_with(Arc::new(source), rx, opts, cancel).await
    }

    /// Runs over any source of records: the live consumer group, or a replay of the unified
    /// log for a backfill. The source sends `Assigned` for the partitions it will deliver (the
    /// pipeline answers with where each starts), then records, then `Ended`.
    pub async fn run_with(
        mut self,
        source: Arc<dyn RecordSource>,
        mut rx: mpsc::Receiver<SourceEvent>,
        opts: RunOptions,
        cancel: CancellationToken,
    ) -> Result<PipelineSummary> {
        metrics::register_pipeline(&self.cfg.name);
        if !self.aggs.is_empty() {
            // Every partition of the source topics holds the window clock until it is idle,
            // not only the assigned ones: after a crash the group may hand this instance a few
            // partitions first, and their records alone must not close windows.
            let now = wall_ms();
            for tp in end_offsets(&source, &self.cfg.topics).await?.into_keys() {
                let next_id = self.pids.len() as u32;
                let pid = *self.pids.entry(tp).or_insert(next_id);
                for a in &mut self.aggs {
                    a.op.assign(pid, now);
                }
            }
        }
        if opts.until_caught_up {
            let targets = end_offsets(&source, &self.cfg.topics).await?;
            tracing::info!(pipeline = %self.cfg.name, partitions = targets.len(), "running until these end offsets are committed: {targets:?}");
            self.targets = Some(targets);
        }
        let mut ended = false;
        let result = self.event_loop(&source, &mut rx, &cancel, &mut ended).await;
        source.stop();
        // Drain so the polling thread can finish leaving the group.
        let drain = async {
            if ended {
                return;
            }
            while let Some(ev) = rx.recv().await {
                match ev {
                    SourceEvent::Assigned(_, reply) => drop(reply),
                    SourceEvent::Revoked(_, reply) => drop(reply),
                    SourceEvent::Records(_) => {}
                    SourceEvent::Ended => break,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(15), drain).await;
        let _ = tokio::task::spawn_blocking(move || source.join()).await;
        result.map(|()| self.summary)
    }

    async fn event_loop(
        &mut self,
        source: &Arc<dyn RecordSource>,
        rx: &mut mpsc::Receiver<SourceEvent>,
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
                ev = rx.recv() => {
                    self.timing.waiting += idle_since.elapsed();
                    match ev {
                    None | Some(SourceEvent::Ended) => {
                        *ended = true;
                        break;
                    }
                    Some(SourceEvent::Records(raw)) => {
                        if stopping { continue; }
                        self.process(*raw).await?;
                        if self.events.buffered_rows() as usize >= self.cfg.flush.max_rows
                            || self.events.buffered_bytes() >= self.cfg.flush.max_bytes.bytes()
                            || self.read_to_targets()
                        {
                            self.commit(source).await?;
                        }
                    }
                    Some(SourceEvent::Assigned(new, reply)) => {
                        self.commit(source).await?;
                        let offsets = self.assign(source, &new).await?;
                        let _ = reply.send(offsets);
                    }
                    Some(SourceEvent::Revoked(gone, reply)) => {
                        self.commit(source).await?;
                        for tp in &gone {
                            self.parts.remove(tp);
                            metrics::set("sluice_partitions_assigned", &[("pipeline", &self.cfg.name)], self.parts.len() as f64);
                            // A revoked partition keeps holding the clock until it is idle
                            // (its records now go to another instance).
                        }
                        let _ = reply.send(());
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

    /// With `--until-caught-up`: every target offset has been read (not yet committed), so
    /// there is no reason to wait for `max_latency` before the last commit.
    fn read_to_targets(&self) -> bool {
        let Some(targets) = &self.targets else {
            return false;
        };
        targets
            .iter()
            .all(|(tp, end)| self.parts.get(tp).is_some_and(|s| s.next >= *end))
            && targets.iter().any(|(tp, end)| {
                self.parts
                    .get(tp)
                    .is_some_and(|s| s.events_committed < *end)
            })
    }

    fn caught_up(&self) -> bool {
        let Some(targets) = &self.targets else {
            return false;
        };
        targets.iter().all(|(tp, end)| {
            self.parts
                .get(tp)
                .is_some_and(|s| s.events_committed >= *end)
        })
    }

    /// Decides where each new partition starts: the events table's progress, or earlier when an
    /// aggregate's open windows need older records; else the configured `start`.
    async fn assign(
        &mut self,
        source: &Arc<dyn RecordSource>,
        new: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, i64>> {
        // Another instance may have committed since our snapshot: read the latest progress.
        self.refresh_all().await?;
        let now = wall_ms();
        let mut out = HashMap::new();
        for tp in new {
            let state = match self.read_progress(tp).await? {
                Some(s) => s,
                None => {
                    let start = resolve_start(source, &tp.0, tp.1, self.cfg.start_position).await?;
                    PartitionState {
                        next: start,
                        events_committed: start,
                        dead_committed: 0,
                        late_committed: 0,
                    }
                }
            };
            tracing::info!(pipeline = %self.cfg.name, topic = %tp.0, partition = tp.1, start = state.next, committed = state.events_committed, "partition assigned");
            let next_id = self.pids.len() as u32;
            let pid = *self.pids.entry(tp.clone()).or_insert(next_id);
            for a in &mut self.aggs {
                a.op.assign(pid, now);
            }
            self.parts.insert(tp.clone(), state);
            out.insert(tp.clone(), state.next);
        }
        metrics::set(
            "sluice_partitions_assigned",
            &[("pipeline", &self.cfg.name)],
            self.parts.len() as f64,
        );
        metrics::mark_ready(&self.cfg.name);
        Ok(out)
    }

    /// Moves every table's snapshot to its latest version (dropping what is buffered) and, for
    /// a fresh window operator, restores the clock of its table's last commit.
    async fn refresh_all(&mut self) -> Result<()> {
        self.events.refresh().await?;
        self.dead.refresh().await?;
        for w in self.late.values_mut() {
            w.refresh().await?;
        }
        for a in &mut self.aggs {
            a.writer.refresh().await?;
            if a.op.clock().is_none() {
                let clock = last_clock(a.writer.table()).await;
                a.op.restore_clock(clock);
            }
        }
        Ok(())
    }

    /// A partition's progress in every table; `None` when the events table has none.
    async fn read_progress(&mut self, tp: &TopicPartition) -> Result<Option<PartitionState>> {
        let app = progress_app_id(&self.cfg.name, &tp.0, tp.1);
        let Some(events) = self.events.progress(&app).await? else {
            return Ok(None);
        };
        let dead = self.dead.progress(&app).await?.unwrap_or(0);
        let mut late: Option<i64> = None;
        for w in self.late.values_mut() {
            let v = w.progress(&app).await?.unwrap_or(0);
            late = Some(late.map_or(v, |l| l.min(v)));
        }
        let mut start = events;
        for a in &mut self.aggs {
            if let Some(needed) = a.writer.progress(&app).await? {
                start = start.min(needed);
            }
        }
        Ok(Some(PartitionState {
            next: start,
            events_committed: events,
            dead_committed: dead,
            late_committed: late.unwrap_or(0),
        }))
    }

    /// Lets the window clocks see idle partitions; buffers the windows that close.
    async fn tick(&mut self, source: &Arc<dyn RecordSource>) -> Result<()> {
        let now = wall_ms();
        if self.last_lag_check.elapsed() >= Duration::from_secs(5) && !self.parts.is_empty() {
            self.last_lag_check = Instant::now();
            let owned: Vec<(TopicPartition, i64)> = self
                .parts
                .iter()
                .map(|(tp, s)| (tp.clone(), s.events_committed))
                .collect();
            update_lag(source.clone(), owned, self.cfg.name.clone()).await;
        }
        for a in &self.aggs {
            if let Some(c) = a.op.clock() {
                let lag = (now - c) as f64 / 1000.0;
                metrics::set(
                    "sluice_window_clock_lag_seconds",
                    &[("pipeline", &self.cfg.name), ("table", &a.cfg.table)],
                    lag,
                );
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
            if let Some(state) = self.parts.get_mut(&(topic.clone(), partition)) {
                for (j, offset) in raw.offsets[i..end].iter().enumerate() {
                    if *offset >= state.next {
                        state.next = offset + 1;
                        keep.push(i + j);
                    }
                }
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
        metrics::inc(
            "sluice_records_in_total",
            &[("pipeline", &self.cfg.name)],
            raw.len() as u64,
        );
        self.first_buffered.get_or_insert_with(Instant::now);
        let t0 = Instant::now();
        let decoded = self
            .decoder
            .decode(&raw)
            .map_err(|message| IngestError::Schema {
                table: self.cfg.table.clone(),
                message,
            })?;
        let t1 = Instant::now();
        if let Some(events) = decoded.events {
            self.feed_windows(&events).await?;
            let events = self.drop_replayed(events)?;
            self.events.write(events).await?;
        }
        self.timing.decode += t1 - t0;
        self.timing.write += t1.elapsed();
        let dead: Vec<_> = decoded
            .dead
            .into_iter()
            .filter(|d| {
                let tp = (raw.topics[d.index].clone(), raw.partitions[d.index]);
                self.parts.get(&tp).is_none_or(|s| {
                    raw.offsets[d.index] >= s.dead_committed.max(s.events_committed)
                })
            })
            .collect();
        if !dead.is_empty() {
            for d in &dead {
                *self.pending.dead.entry(d.kind.as_str()).or_default() += 1;
                tracing::debug!(pipeline = %self.cfg.name, topic = %raw.topics[d.index], partition = raw.partitions[d.index], offset = raw.offsets[d.index], reason = d.kind.as_str(), "dead letter: {}", d.message);
            }
            let batch = dead_letter_batch(&self.dead.schema(), &self.cfg.name, &raw, &dead)
                .map_err(|message| IngestError::Schema {
                    table: self.dead.name().to_string(),
                    message,
                })?;
            self.dead.write(batch).await?;
        }
        Ok(())
    }

    /// Feeds decoded rows (replayed ones too) to every window operator; buffers closed windows
    /// and, for records seen for the first time, late rows.
    async fn feed_windows(&mut self, events: &RecordBatch) -> Result<()> {
        if self.aggs.is_empty() {
            return Ok(());
        }
        let Some((topics, parts, offsets)) = crate::windows::positions(events) else {
            return Ok(());
        };
        let mut pids = Vec::with_capacity(events.num_rows());
        for (rows, topic, partition) in crate::windows::runs(&topics, &parts) {
            let pid = self
                .pids
                .get(&(Arc::<str>::from(topic), partition))
                .copied()
                .unwrap_or(u32::MAX);
            pids.extend(std::iter::repeat_n(pid, rows.len()));
        }
        let offs = offsets.values().to_vec();
        let now = wall_ms();
        let late_schema = late_schema();
        for a in &mut self.aggs {
            let out =
                a.op.process_at(events, &pids, &offs, now)
                    .map_err(|e| IngestError::Schema {
                        table: a.cfg.table.clone(),
                        message: e.to_string(),
                    })?;
            if let Some(closed) = out.closed {
                a.writer.write(closed).await?;
            }
            *self.pending.skipped.entry(a.cfg.table.clone()).or_default() +=
                out.skipped_assignments;
            let late: Vec<_> = out
                .late
                .into_iter()
                .filter(|l| {
                    let tp = (Arc::<str>::from(topics.value(l.row)), parts.value(l.row));
                    self.parts.get(&tp).is_none_or(|s| {
                        offsets.value(l.row) >= s.late_committed.max(s.events_committed)
                    })
                })
                .collect();
            if !late.is_empty() {
                *self.pending.late.entry(a.cfg.table.clone()).or_default() += late.len() as u64;
                let rows = late_rows(&late_schema, &self.cfg.name, &a.cfg.table, events, &late)
                    .map_err(|message| IngestError::Schema {
                        table: a.late_table.clone(),
                        message,
                    })?;
                if let Some(w) = self.late.get_mut(&a.late_table) {
                    w.write(rows).await?;
                }
            }
        }
        Ok(())
    }

    /// Drops rows whose offset is below the events table's progress (replays).
    fn drop_replayed(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let Some((topics, parts, offsets)) = crate::windows::positions(&batch) else {
            return Ok(batch);
        };
        let mut mask = arrow::array::BooleanBufferBuilder::new(batch.num_rows());
        for (rows, topic, partition) in crate::windows::runs(&topics, &parts) {
            let committed = self
                .parts
                .get(&(Arc::<str>::from(topic), partition))
                .map_or(i64::MIN, |s| s.events_committed);
            for o in &offsets.values()[rows] {
                mask.append(*o >= committed);
            }
        }
        let mask = BooleanArray::new(mask.finish(), None);
        if mask.true_count() == batch.num_rows() {
            return Ok(batch);
        }
        filter_record_batch(&batch, &mask).map_err(|e| IngestError::Schema {
            table: self.cfg.table.clone(),
            message: e.to_string(),
        })
    }

    /// Commits everything buffered, in the order of the module docs, then group offsets.
    async fn commit(&mut self, source: &Arc<dyn RecordSource>) -> Result<()> {
        self.first_buffered = None;
        let dirty: Vec<(TopicPartition, i64)> = self
            .parts
            .iter()
            .filter(|(_, s)| s.next > s.events_committed)
            .map(|(tp, s)| (tp.clone(), s.next))
            .collect();
        let buffered = self.events.buffered_rows()
            + self.dead.buffered_rows()
            + self.late.values().map(|w| w.buffered_rows()).sum::<u64>()
            + self
                .aggs
                .iter()
                .map(|a| a.writer.buffered_rows())
                .sum::<u64>();
        if dirty.is_empty() && buffered == 0 {
            return Ok(());
        }
        let progress: Vec<(String, i64)> = dirty
            .iter()
            .map(|((t, p), next)| (progress_app_id(&self.cfg.name, t, *p), *next))
            .collect();
        let meta = HashMap::from([(
            "sluice.pipeline".to_string(),
            serde_json::Value::from(self.cfg.name.clone()),
        )]);
        let started = Instant::now();
        let result = self.commit_tables(&dirty, &progress, &meta).await;
        let timing = std::mem::take(&mut self.timing);
        tracing::debug!(pipeline = %self.cfg.name, waiting_ms = timing.waiting.as_millis() as u64, decode_ms = timing.decode.as_millis() as u64, write_ms = timing.write.as_millis() as u64, commit_ms = started.elapsed().as_millis() as u64, "flush timing");
        let pending = std::mem::take(&mut self.pending);
        match result {
            Ok(()) => {
                crate::fault::point("after_events_commit");
                let name = self.cfg.name.as_str();
                metrics::observe(
                    "sluice_commit_duration_seconds",
                    &[("pipeline", name)],
                    started.elapsed().as_secs_f64(),
                );
                for (reason, n) in pending.dead {
                    metrics::inc(
                        "sluice_dead_letters_total",
                        &[("pipeline", name), ("reason", reason)],
                        n,
                    );
                }
                for (table, n) in pending.late {
                    metrics::inc(
                        "sluice_late_records_total",
                        &[("pipeline", name), ("table", &table)],
                        n,
                    );
                }
                for (table, n) in pending.skipped {
                    metrics::inc(
                        "sluice_late_window_assignments_skipped_total",
                        &[("pipeline", name), ("table", &table)],
                        n,
                    );
                }
                for (tp, next) in &dirty {
                    if let Some(s) = self.parts.get_mut(tp) {
                        s.events_committed = *next;
                    }
                    let partition = tp.1.to_string();
                    metrics::set(
                        "sluice_committed_offset",
                        &[
                            ("pipeline", name),
                            ("topic", &tp.0),
                            ("partition", &partition),
                        ],
                        *next as f64,
                    );
                }
                source.commit_offsets(&dirty.into_iter().collect());
                Ok(())
            }
            // Fenced by another instance, or refused because another writer changed a table's
            // metadata or protocol: nothing of this flush is committed where it was refused;
            // reload the tables and go on from their progress.
            Err(e) if e.is_fenced() || e.is_conflict() => {
                let (metric, what) = if e.is_fenced() {
                    self.summary.fenced += 1;
                    (
                        "sluice_fenced_commits_total",
                        "re-reading progress from the tables",
                    )
                } else {
                    self.summary.conflicts += 1;
                    (
                        "sluice_commit_conflicts_total",
                        "another writer changed the table's metadata or protocol: reloading the tables and re-reading progress",
                    )
                };
                tracing::warn!(pipeline = %self.cfg.name, "{e}; {what}");
                metrics::inc(metric, &[("pipeline", &self.cfg.name)], 1);
                self.resync(source).await
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn commit_tables(
        &mut self,
        dirty: &[(TopicPartition, i64)],
        progress: &[(String, i64)],
        meta: &HashMap<String, serde_json::Value>,
    ) -> std::result::Result<(), LakeError> {
        crate::fault::point("before_commit");
        if self.dead.buffered_rows() > 0 {
            if let Some(out) = self.dead.commit(progress, meta.clone()).await? {
                self.summary.dead_letters += out.rows;
                record_commit(&self.cfg.name, self.dead.name(), "dead_letter", &out);
                self.summary.commits += 1;
            }
            for (tp, next) in dirty {
                if let Some(s) = self.parts.get_mut(tp) {
                    s.dead_committed = *next;
                }
            }
        }
        crate::fault::point("after_dead_letter_commit");
        for w in self.late.values_mut() {
            if w.buffered_rows() > 0 {
                if let Some(out) = w.commit(progress, meta.clone()).await? {
                    self.summary.late_rows += out.rows;
                    record_commit(&self.cfg.name, w.name(), "late", &out);
                    self.summary.commits += 1;
                }
                for (tp, next) in dirty {
                    if let Some(s) = self.parts.get_mut(tp) {
                        s.late_committed = s.late_committed.max(*next);
                    }
                }
            }
        }
        // Aggregates: closed windows, and per partition the lowest offset open windows need.
        for a in &mut self.aggs {
            let needed = a.op.needed_offsets();
            let agg_progress: Vec<(String, i64)> = self
                .parts
                .iter()
                .map(|(tp, s)| {
                    let pid = self.pids.get(tp).copied().unwrap_or(u32::MAX);
                    let at = needed.get(&pid).map_or(s.next, |n| (*n).min(s.next));
                    (progress_app_id(&self.cfg.name, &tp.0, tp.1), at)
                })
                .collect();
            let mut agg_meta = meta.clone();
            if let Some(c) = a.op.clock() {
                agg_meta.insert(CLOCK_KEY.to_string(), serde_json::Value::from(c));
            }
            if let Some(out) = a.writer.commit(&agg_progress, agg_meta).await? {
                self.summary.aggregate_rows += out.rows;
                record_commit(&self.cfg.name, a.writer.name(), "aggregate", &out);
                self.summary.commits += 1;
            }
            crate::fault::point("after_aggregate_commit");
        }
        if let Some(out) = self.events.commit(progress, meta.clone()).await? {
            self.summary.events += out.rows;
            record_commit(&self.cfg.name, self.events.name(), "events", &out);
            self.summary.commits += 1;
            tracing::debug!(pipeline = %self.cfg.name, version = out.version, rows = out.rows, files = out.files, "committed");
        }
        Ok(())
    }

    /// After losing a commit: drop buffers, re-read every partition's progress, seek there.
    async fn resync(&mut self, source: &Arc<dyn RecordSource>) -> Result<()> {
        self.refresh_all().await?;
        let mut seeks = HashMap::new();
        let owned: Vec<TopicPartition> = self.parts.keys().cloned().collect();
        for tp in owned {
            let current = self.parts.get(&tp).copied();
            let state = match (self.read_progress(&tp).await?, current) {
                (Some(s), _) => s,
                (None, Some(c)) => PartitionState {
                    next: c.events_committed,
                    ..c
                },
                (None, None) => continue,
            };
            self.parts.insert(tp.clone(), state);
            seeks.insert(tp, state.next);
        }
        let source = source.clone();
        tokio::task::spawn_blocking(move || source.seek(&seeks))
            .await
            .map_err(|e| IngestError::Kafka(e.to_string()))?
            .map_err(IngestError::Kafka)
    }
}

/// Fills in `p.schema` from the existing events table, then validates the pipeline again.
async fn schema_from_table(
    config: &Config,
    p: &PipelineConfig,
    lake: &Lake,
) -> Result<PipelineConfig> {
    let fail = |message: String| IngestError::Schema {
        table: p.table.clone(),
        message,
    };
    let table = lake.open(&p.table).await?.ok_or_else(|| {
        fail(format!(
            "pipeline {} has no schema and its table does not exist yet: declare schema = [...] in the config",
            p.name
        ))
    })?;
    let arrow = sluice_lake::table_arrow_schema(&p.table, &table)?;
    let mut resolved = p.clone();
    for f in arrow.fields() {
        if crate::schema::is_sluice_column(f.name()) {
            continue;
        }
        let type_name = crate::schema::type_name_of(f.data_type()).ok_or_else(|| {
            fail(format!(
                "column {:?} has type {} which sluice cannot decode JSON into",
                f.name(),
                f.data_type()
            ))
        })?;
        resolved.schema.push(sluice_config::FieldConfig {
            name: f.name().clone(),
            type_name,
            nullable: Some(f.is_nullable()),
            ..Default::default()
        });
    }
    let mut check = Config {
        kafka: config.kafka.clone(),
        lake: config.lake.clone(),
        pipelines: vec![resolved],
        ..Default::default()
    };
    let mut problems = Vec::new();
    check.validate_into(&mut problems);
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        return Err(fail(format!(
            "with the columns of the existing table: {}",
            list.join("; ")
        )));
    }
    Ok(check.pipelines.remove(0))
}

/// Consumer lag per owned partition: high watermark minus committed offset.
async fn update_lag(
    source: Arc<dyn RecordSource>,
    owned: Vec<(TopicPartition, i64)>,
    name: String,
) {
    let _ = tokio::task::spawn_blocking(move || {
        for ((topic, partition), committed) in owned {
            if let Some(high) = source.high_watermark(&topic, partition) {
                let p = partition.to_string();
                metrics::set(
                    "sluice_consumer_lag_records",
                    &[("pipeline", &name), ("topic", &topic), ("partition", &p)],
                    (high - committed).max(0) as f64,
                );
            }
        }
    })
    .await;
}

fn record_commit(pipeline: &str, table: &str, destination: &str, out: &sluice_lake::CommitOutcome) {
    metrics::inc(
        "sluice_rows_out_total",
        &[("pipeline", pipeline), ("destination", destination)],
        out.rows,
    );
    metrics::inc(
        "sluice_bytes_written_total",
        &[("pipeline", pipeline), ("table", table)],
        out.bytes,
    );
    metrics::inc(
        "sluice_commits_total",
        &[("pipeline", pipeline), ("table", table)],
        1,
    );
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The window clock recorded in the table's latest commit, if any.
pub async fn last_clock(table: &sluice_lake::deltalake::DeltaTable) -> Option<i64> {
    use futures::StreamExt;
    let mut history = table.history(Some(1));
    let info = history.next().await?.ok()?;
    info.info.get(CLOCK_KEY).and_then(|v| v.as_i64())
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
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || source.start_offset(&topic, partition, start))
        .await
        .map_err(|e| IngestError::Kafka(e.to_string()))?
        .map_err(IngestError::Kafka)
}

/// The end offset of every partition of `topics`, read once at start.
pub async fn end_offsets(
    source: &Arc<dyn RecordSource>,
    topics: &[String],
) -> Result<BTreeMap<TopicPartition, i64>> {
    let source = source.clone();
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || source.end_offsets(&topics))
        .await
        .map_err(|e| IngestError::Kafka(e.to_string()))?
        .map_err(IngestError::Kafka)
}

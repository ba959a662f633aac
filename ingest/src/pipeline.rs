//! [`Pipeline`]: consumes a pipeline's topics and commits its tables exactly once.
//!
//! Commit protocol for one flush: the dead-letter table commits first (when it has rows), then
//! the events table; each carries one `txn` per partition (`sluice:<pipeline>:<topic>:<p>`,
//! version = next offset). The events table's progress is where a partition resumes; a replayed
//! dead letter whose offset is below the dead-letter table's own progress is skipped, so a crash
//! between the two commits neither loses nor doubles a row. Offsets go to the consumer group
//! only after the events commit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::Int64Type;
use rdkafka::consumer::Consumer;
use sluice_config::{Config, PipelineConfig, StartPosition};
use sluice_lake::{Lake, LakeError, TableSpec, TableWriter, WriterOptions, progress_app_id};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::dead_letter::dead_letter_batch;
use crate::decode::JsonDecoder;
use crate::raw::RawBatch;
use crate::schema::{columns, dead_letter_schema, events_schema};
use crate::source::{KafkaSource, SourceEvent, SourceOptions, TopicPartition};
use crate::{IngestError, Result};

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
    /// Delta commits made (all tables).
    pub commits: u64,
    /// Commits that lost to another writer (fenced) and were retried from the table.
    pub fenced: u64,
}

#[derive(Clone, Copy, Debug)]
struct PartitionState {
    /// Next offset to accept from Kafka.
    next: i64,
    /// Next offset committed in the events table.
    events_committed: i64,
    /// Next offset committed in the dead-letter table.
    dead_committed: i64,
}

/// One pipeline: its tables, decoder and partitions.
pub struct Pipeline {
    cfg: PipelineConfig,
    kafka: sluice_config::KafkaConfig,
    events: TableWriter,
    dead: TableWriter,
    decoder: JsonDecoder,
    parts: HashMap<TopicPartition, PartitionState>,
    first_buffered: Option<Instant>,
    summary: PipelineSummary,
    targets: Option<BTreeMap<TopicPartition, i64>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.cfg.name)
            .finish_non_exhaustive()
    }
}

/// Opens (creating when missing) a pipeline's events and dead-letter tables.
pub async fn open_tables(
    config: &Config,
    p: &PipelineConfig,
    lake: &Lake,
) -> Result<(TableWriter, TableWriter)> {
    let props = HashMap::from([(
        "delta.checkpointInterval".to_string(),
        config.maintenance.checkpoint_interval.to_string(),
    )]);
    let spec = TableSpec {
        partition_columns: p.partition_by.clone(),
        properties: props.clone(),
        description: Some(format!("sluice events of pipeline {}", p.name)),
    };
    let events = lake
        .open_or_create(&p.table, &events_schema(p), &spec)
        .await?;
    let dl_name = p.dead_letter_table();
    let dl_spec = TableSpec {
        partition_columns: vec![],
        properties: props,
        description: Some(format!("sluice dead letters of pipeline {}", p.name)),
    };
    let dead = lake
        .open_or_create(&dl_name, &dead_letter_schema(), &dl_spec)
        .await?;
    let options = WriterOptions {
        compression: p.compression,
        target_file_size: config.maintenance.target_file_size.bytes(),
        ..Default::default()
    };
    Ok((
        TableWriter::new(&p.table, events, options.clone())?,
        TableWriter::new(&dl_name, dead, options)?,
    ))
}

impl Pipeline {
    /// Opens the pipeline's tables.
    pub async fn open(config: &Config, p: &PipelineConfig, lake: &Lake) -> Result<Self> {
        let (events, dead) = open_tables(config, p, lake).await?;
        let decoder =
            JsonDecoder::new(p, events.schema()).map_err(|message| IngestError::Schema {
                table: p.table.clone(),
                message,
            })?;
        Ok(Self {
            cfg: p.clone(),
            kafka: config.kafka.clone(),
            events,
            dead,
            decoder,
            parts: HashMap::new(),
            first_buffered: None,
            summary: PipelineSummary::default(),
            targets: None,
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
        let (source, mut rx) = KafkaSource::start(source_opts, 4).map_err(IngestError::Kafka)?;
        let source = Arc::new(source);
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
        let joiner = Arc::try_unwrap(source).ok();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(s) = joiner {
                s.join()
            }
        })
        .await;
        result.map(|()| self.summary)
    }

    async fn event_loop(
        &mut self,
        source: &Arc<KafkaSource>,
        rx: &mut mpsc::Receiver<SourceEvent>,
        cancel: &CancellationToken,
        ended: &mut bool,
    ) -> Result<()> {
        let latency = self.cfg.flush.max_latency.get();
        let mut stopping = false;
        loop {
            let deadline = self.first_buffered.map(|t| t + latency);
            tokio::select! {
                _ = cancel.cancelled(), if !stopping => {
                    tracing::info!(pipeline = %self.cfg.name, "stopping: committing what is buffered");
                    stopping = true;
                    source.stop();
                }
                _ = sleep_until(deadline) => {
                    self.commit(source).await?;
                }
                ev = rx.recv() => match ev {
                    None | Some(SourceEvent::Ended) => {
                        *ended = true;
                        break;
                    }
                    Some(SourceEvent::Records(raw)) => {
                        if stopping { continue; }
                        self.process(*raw).await?;
                        if self.events.buffered_rows() as usize >= self.cfg.flush.max_rows
                            || self.events.buffered_bytes() >= self.cfg.flush.max_bytes.bytes()
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
                        }
                        let _ = reply.send(());
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

    /// Decides where each new partition starts: the events table's progress, else `start`.
    async fn assign(
        &mut self,
        source: &Arc<KafkaSource>,
        new: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, i64>> {
        // Another instance may have committed since our snapshot: read the latest progress.
        self.events.refresh().await?;
        self.dead.refresh().await?;
        let mut out = HashMap::new();
        for tp in new {
            let app = progress_app_id(&self.cfg.name, &tp.0, tp.1);
            let events = self.events.progress(&app).await?;
            let dead = self.dead.progress(&app).await?.unwrap_or(0);
            let start = match events {
                Some(o) => o,
                None => resolve_start(source, &tp.0, tp.1, self.cfg.start_position).await?,
            };
            tracing::info!(pipeline = %self.cfg.name, topic = %tp.0, partition = tp.1, start, from_table = events.is_some(), "partition assigned");
            let committed = events.unwrap_or(start);
            self.parts.insert(
                tp.clone(),
                PartitionState {
                    next: start,
                    events_committed: committed,
                    dead_committed: dead,
                },
            );
            out.insert(tp.clone(), start);
        }
        Ok(out)
    }

    async fn process(&mut self, raw: RawBatch) -> Result<()> {
        // Keep only records of partitions we own, at or after the next expected offset.
        let mut keep = Vec::with_capacity(raw.len());
        for i in 0..raw.len() {
            let tp = (raw.topics[i].clone(), raw.partitions[i]);
            if let Some(state) = self.parts.get_mut(&tp)
                && raw.offsets[i] >= state.next
            {
                state.next = raw.offsets[i] + 1;
                keep.push(i);
            }
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
        if self.first_buffered.is_none() {
            self.first_buffered = Some(Instant::now());
        }
        let decoded = self
            .decoder
            .decode(&raw)
            .map_err(|message| IngestError::Schema {
                table: self.cfg.table.clone(),
                message,
            })?;
        if let Some(events) = decoded.events {
            let events = self.drop_committed(events, |s| s.events_committed)?;
            self.events.write(events).await?;
        }
        let dead: Vec<_> = decoded
            .dead
            .into_iter()
            .filter(|d| {
                let tp = (raw.topics[d.index].clone(), raw.partitions[d.index]);
                self.parts
                    .get(&tp)
                    .is_none_or(|s| raw.offsets[d.index] >= s.dead_committed)
            })
            .collect();
        if !dead.is_empty() {
            for d in &dead {
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

    /// Drops rows whose offset is below the given committed progress (replays).
    fn drop_committed(
        &self,
        batch: RecordBatch,
        committed: impl Fn(&PartitionState) -> i64,
    ) -> Result<RecordBatch> {
        let (Some(topics), Some(parts), Some(offsets)) = (
            batch.column_by_name(columns::TOPIC),
            batch.column_by_name(columns::PARTITION),
            batch.column_by_name(columns::OFFSET),
        ) else {
            return Ok(batch);
        };
        let topics = topics.as_string::<i32>();
        let parts = parts.as_primitive::<arrow::datatypes::Int32Type>();
        let offsets = offsets.as_primitive::<Int64Type>();
        let mask: BooleanArray = (0..batch.num_rows())
            .map(|i| {
                let key = (Arc::<str>::from(topics.value(i)), parts.value(i));
                Some(
                    self.parts
                        .get(&key)
                        .is_none_or(|s| offsets.value(i) >= committed(s)),
                )
            })
            .collect();
        if mask.true_count() == batch.num_rows() {
            return Ok(batch);
        }
        filter_record_batch(&batch, &mask).map_err(|e| IngestError::Schema {
            table: self.cfg.table.clone(),
            message: e.to_string(),
        })
    }

    /// Commits everything buffered: dead letters first, then events, then group offsets.
    async fn commit(&mut self, source: &Arc<KafkaSource>) -> Result<()> {
        self.first_buffered = None;
        let dirty: Vec<(TopicPartition, i64)> = self
            .parts
            .iter()
            .filter(|(_, s)| s.next > s.events_committed)
            .map(|(tp, s)| (tp.clone(), s.next))
            .collect();
        if dirty.is_empty() && self.events.buffered_rows() == 0 && self.dead.buffered_rows() == 0 {
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
        let result: std::result::Result<(), LakeError> = async {
            crate::fault::point("before_commit");
            if self.dead.buffered_rows() > 0 {
                if let Some(out) = self.dead.commit(&progress, meta.clone()).await? {
                    self.summary.dead_letters += out.rows;
                    self.summary.commits += 1;
                }
                for (tp, next) in &dirty {
                    if let Some(s) = self.parts.get_mut(tp) {
                        s.dead_committed = *next;
                    }
                }
            }
            crate::fault::point("after_dead_letter_commit");
            if let Some(out) = self.events.commit(&progress, meta).await? {
                self.summary.events += out.rows;
                self.summary.commits += 1;
                tracing::debug!(pipeline = %self.cfg.name, version = out.version, rows = out.rows, files = out.files, "committed");
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                crate::fault::point("after_events_commit");
                for (tp, next) in &dirty {
                    if let Some(s) = self.parts.get_mut(tp) {
                        s.events_committed = *next;
                    }
                }
                source.commit_offsets(&dirty.into_iter().collect());
                Ok(())
            }
            Err(e) if e.is_fenced() => {
                tracing::warn!(pipeline = %self.cfg.name, "{e}; re-reading progress from the tables");
                self.summary.fenced += 1;
                self.resync(source).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// After losing a commit: drop buffers, re-read every partition's progress, seek there.
    async fn resync(&mut self, source: &Arc<KafkaSource>) -> Result<()> {
        self.events.refresh().await?;
        self.dead.refresh().await?;
        let mut seeks = HashMap::new();
        let owned: Vec<TopicPartition> = self.parts.keys().cloned().collect();
        for tp in owned {
            let app = progress_app_id(&self.cfg.name, &tp.0, tp.1);
            let events = self.events.progress(&app).await?;
            let dead = self.dead.progress(&app).await?.unwrap_or(0);
            if let Some(s) = self.parts.get_mut(&tp) {
                let at = events.unwrap_or(s.events_committed);
                *s = PartitionState {
                    next: at,
                    events_committed: at,
                    dead_committed: dead,
                };
                seeks.insert(tp, at);
            }
        }
        let source = source.clone();
        tokio::task::spawn_blocking(move || source.seek(&seeks))
            .await
            .map_err(|e| IngestError::Kafka(e.to_string()))?;
        Ok(())
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

async fn resolve_start(
    source: &Arc<KafkaSource>,
    topic: &Arc<str>,
    partition: i32,
    start: StartPosition,
) -> Result<i64> {
    let source = source.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || -> Result<i64> {
        let c = source.consumer();
        let timeout = Duration::from_secs(30);
        let (low, high) = c
            .fetch_watermarks(&topic, partition, timeout)
            .map_err(|e| IngestError::Kafka(format!("watermarks of {topic}/{partition}: {e}")))?;
        Ok(match start {
            StartPosition::Earliest => low,
            StartPosition::Latest => high,
            StartPosition::Offset(n) => n.clamp(low, high),
            StartPosition::Time(ms) => {
                let mut tpl = rdkafka::TopicPartitionList::new();
                tpl.add_partition_offset(&topic, partition, rdkafka::Offset::Offset(ms))
                    .map_err(|e| IngestError::Kafka(e.to_string()))?;
                let found = c
                    .offsets_for_times(tpl, timeout)
                    .map_err(|e| IngestError::Kafka(format!("offsets for time {ms}: {e}")))?;
                match found.elements().first().map(|e| e.offset()) {
                    Some(rdkafka::Offset::Offset(o)) if o >= 0 => o,
                    _ => high,
                }
            }
        })
    })
    .await
    .map_err(|e| IngestError::Kafka(e.to_string()))?
}

/// The high watermark of every partition of `topics`, read once at start.
pub async fn end_offsets(
    source: &Arc<KafkaSource>,
    topics: &[String],
) -> Result<BTreeMap<TopicPartition, i64>> {
    let source = source.clone();
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || -> Result<BTreeMap<TopicPartition, i64>> {
        let c = source.consumer();
        let timeout = Duration::from_secs(30);
        let mut out = BTreeMap::new();
        for t in &topics {
            let md = c
                .fetch_metadata(Some(t), timeout)
                .map_err(|e| IngestError::Kafka(format!("metadata of topic {t}: {e}")))?;
            let topic = md
                .topics()
                .iter()
                .find(|m| m.name() == t)
                .ok_or_else(|| IngestError::Kafka(format!("topic {t} does not exist")))?;
            if topic.partitions().is_empty() {
                return Err(IngestError::Kafka(format!(
                    "topic {t} does not exist or has no partitions"
                )));
            }
            for p in topic.partitions() {
                let (_, high) = c.fetch_watermarks(t, p.id(), timeout).map_err(|e| {
                    IngestError::Kafka(format!("watermarks of {t}/{}: {e}", p.id()))
                })?;
                out.insert((Arc::from(t.as_str()), p.id()), high);
            }
        }
        Ok(out)
    })
    .await
    .map_err(|e| IngestError::Kafka(e.to_string()))?
}

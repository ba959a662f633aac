//! [`Tierer`]: copies a topic's records into its archive table, then lets the broker forget
//! what the archive holds and the hot window does not need.
//!
//! One round, per topic:
//! 1. read each partition's boundary (the `txn` version of `sluice:archive:<topic>:<p>`) from
//!    the archive table's latest snapshot, and the broker's watermarks;
//! 2. consume `[boundary, high watermark)` (at most `max_records_per_round` per partition) in
//!    offset order and stream it into Parquet files (zstd, sorted by offset);
//! 3. upload the files, then commit them with the new boundaries in one Delta commit; a
//!    concurrent tierer's commit for the same partitions fences this one (nothing doubles);
//! 4. DeleteRecords up to min(boundary, first offset younger than `hot_retention`, the lowest
//!    offset a pipeline reading the topic has not committed), never past the boundary.
//!
//! A crash between 2 and 3 leaves orphan files (vacuum removes them); between 3 and 4 the next
//! round deletes. If a round fails (store unreachable, broker errors), nothing is deleted and
//! the `sluice_tiering_alarm` gauge rises until a round succeeds and the archive is current.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sluice_config::{Config, TieringConfig};
use sluice_kafka::{AtEof, Cluster, RangeEnd, RangeRead, RawBatch};
use sluice_lake::{Lake, TableSpec, TableWriter, WriterOptions, fault};
use sluice_progress::Stored;
use sluice_telemetry::{events, spec};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::archive::{PARTITION_COLUMN, archive_app_id, archive_schema, to_archive_batch};
use crate::{Result, TieringError, blocking};

/// What one round did for one partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionReport {
    /// Records archived in this round.
    pub archived: u64,
    /// The first offset not archived, after the round.
    pub boundary: i64,
    /// The broker's log start offset after the round.
    pub log_start: i64,
    /// The broker's high watermark seen by the round.
    pub high: i64,
}

/// What one round did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// The topic.
    pub topic: String,
    /// The archive table.
    pub table: String,
    /// Records archived.
    pub archived: u64,
    /// Files committed.
    pub files: usize,
    /// Records removed from the broker by DeleteRecords.
    pub deleted: u64,
    /// Per partition.
    pub partitions: BTreeMap<i32, PartitionReport>,
    /// True when records older than the hot window are still not archived.
    pub behind: bool,
    /// True when a pipeline reading the topic still needs records older than the hot window
    /// (its progress, or an open window): the brokers keep them.
    pub held_back: bool,
}

impl std::fmt::Display for RoundReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} -> {}: archived {} records in {} files, deleted {} from the broker",
            self.topic, self.table, self.archived, self.files, self.deleted
        )?;
        for (p, r) in &self.partitions {
            writeln!(
                f,
                "  partition {p}: boundary {} (archived {}), broker log start {}, end {}",
                r.boundary, r.archived, r.log_start, r.high
            )?;
        }
        Ok(())
    }
}

/// How a [`Tierer`] treats the broker.
#[derive(Clone, Copy, Debug)]
pub struct TierOptions {
    /// Read the topic's settings at start: refuse compacted topics, warn on risky retention.
    pub check_topic_settings: bool,
    /// Delete archived records from the broker (the retention interlock). Off only for
    /// brokers without DeleteRecords, such as librdkafka's mock cluster in the demo.
    pub delete_records: bool,
}

impl Default for TierOptions {
    fn default() -> Self {
        Self {
            check_topic_settings: true,
            delete_records: true,
        }
    }
}

/// Tiers one topic.
pub struct Tierer {
    opts: TierOptions,
    /// The pipelines reading this topic: the broker keeps every record until each of them
    /// no longer needs it ([`sluice_progress::Stored::retention_floor`]).
    readers: Vec<Reader>,
    lake: Lake,
    cfg: TieringConfig,
    table: String,
    topic: Arc<str>,
    broker: Cluster,
    writer: TableWriter,
}

impl std::fmt::Debug for Tierer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tierer")
            .field("topic", &self.topic)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// How much older than `hot_retention` an unarchived record may get before the alarm rises.
fn alarm_slack(cfg: &TieringConfig) -> Duration {
    (cfg.interval.get() * 3).max(Duration::from_secs(60))
}

impl Tierer {
    /// Checks the topic, opens (creating when missing) its archive table.
    pub async fn open(config: &Config, cfg: &TieringConfig, lake: &Lake) -> Result<Self> {
        Self::open_with(config, cfg, lake, TierOptions::default()).await
    }

    /// [`Tierer::open`] with options.
    pub async fn open_with(
        config: &Config,
        cfg: &TieringConfig,
        lake: &Lake,
        opts: TierOptions,
    ) -> Result<Self> {
        let broker = Cluster::new(&(&config.kafka).into(), "tiering")?;
        if opts.check_topic_settings {
            check_topic(&broker, cfg).await?;
        } else {
            let (b, t) = (broker.clone(), cfg.topic.clone());
            blocking(move || b.partitions(&t)).await?;
        }
        let table = cfg.archive_table();
        let spec = TableSpec {
            partition_columns: vec![PARTITION_COLUMN.into()],
            properties: HashMap::from([(
                "delta.checkpointInterval".to_string(),
                config.maintenance.checkpoint_interval.to_string(),
            )]),
            description: Some(format!("sluice archive of topic {}", cfg.topic)),
        };
        let delta = lake
            .open_or_create(&table, &archive_schema(), &spec)
            .await?;
        let options = WriterOptions {
            compression: sluice_config::Compression::Zstd,
            target_file_size: config.maintenance.target_file_size.bytes(),
            row_group_rows: 64 * 1024,
            sorted_hint: vec!["offset".into()],
        };
        let writer = TableWriter::new(&table, delta, options)?;
        let readers = config
            .pipelines
            .iter()
            .filter(|p| p.topics.contains(&cfg.topic))
            .map(|p| Reader {
                pipeline: p.name.clone(),
                events: p.table.clone(),
                aggregates: p.aggregates.iter().map(|a| a.table.clone()).collect(),
            })
            .collect();
        Ok(Self {
            opts,
            readers,
            lake: lake.clone(),
            cfg: cfg.clone(),
            table,
            topic: Arc::from(cfg.topic.as_str()),
            broker,
            writer,
        })
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Archives what the broker has beyond the boundary, commits, then deletes below it.
    pub async fn round(&mut self) -> Result<RoundReport> {
        let topic = self.topic.to_string();
        let broker = self.broker.clone();
        let t = topic.clone();
        let marks = blocking(move || {
            let mut out = BTreeMap::new();
            for p in broker.partitions(&t)? {
                out.insert(p, broker.watermarks(&t, p)?);
            }
            Ok::<_, TieringError>(out)
        })
        .await?;
        // The backlog against the last boundary this tierer knows, published before the
        // store is touched, so that it keeps growing in the metrics while the store is down.
        for (&p, &(low, high)) in &marks {
            let known = self
                .writer
                .progress(&archive_app_id(&topic, p))
                .await
                .ok()
                .flatten()
                .unwrap_or(low)
                .max(low);
            let part = p.to_string();
            spec::TIERING_BROKER_BACKLOG_RECORDS.set(
                [topic.as_str(), part.as_str()],
                (high - known).max(0) as f64,
            );
        }
        // Another instance may have tiered since: start from the table's latest boundaries.
        self.writer.refresh().await?;
        let mut report = RoundReport {
            topic: topic.clone(),
            table: self.table.clone(),
            ..Default::default()
        };
        let mut ranges = Vec::new();
        let mut boundaries = BTreeMap::new();
        for (&p, &(low, high)) in &marks {
            let stored = self.writer.progress(&archive_app_id(&topic, p)).await?;
            let start = match stored {
                Some(b) if b >= low => b,
                Some(b) => {
                    events::archive_gap(&topic, p, b, low);
                    low
                }
                None => low,
            };
            boundaries.insert(p, stored.unwrap_or(start));
            let end = high.min(start.saturating_add(self.cfg.max_records_per_round as i64));
            if start < end {
                ranges.push((p, start, end));
            }
            report.partitions.insert(
                p,
                PartitionReport {
                    archived: 0,
                    boundary: stored.unwrap_or(start),
                    log_start: low,
                    high,
                },
            );
        }
        if !ranges.is_empty() {
            let reached = self.archive(&ranges, &mut report).await?;
            for (p, next) in reached {
                boundaries.insert(p, next);
                if let Some(r) = report.partitions.get_mut(&p) {
                    r.boundary = next;
                }
            }
        }
        self.retire(&boundaries, &mut report).await?;
        for (p, r) in &report.partitions {
            let part = p.to_string();
            let l = [topic.as_str(), part.as_str()];
            spec::TIERING_BOUNDARY.set(l, r.boundary as f64);
            spec::TIERING_LOG_START_OFFSET.set(l, r.log_start as f64);
            spec::TIERING_BROKER_BACKLOG_RECORDS.set(l, (r.high - r.boundary).max(0) as f64);
        }
        Ok(report)
    }

    /// Streams the ranges into the archive and commits them; returns each partition's new
    /// boundary (only partitions that moved).
    async fn archive(
        &mut self,
        ranges: &[(i32, i64, i64)],
        report: &mut RoundReport,
    ) -> Result<BTreeMap<i32, i64>> {
        let (tx, mut rx) = mpsc::channel::<RawBatch>(4);
        let stop = Arc::new(AtomicBool::new(false));
        let read = RangeRead {
            topic: self.topic.clone(),
            ranges: ranges.iter().map(|&(p, s, e)| (p, s, Some(e))).collect(),
            with_headers: true,
            batch_records: 20_000,
            at_eof: AtEof::Finish,
            // Below the high watermark and nothing comes: an open transaction holds the rest.
            stall: Some(Duration::from_secs(60)),
        };
        let reader = tokio::spawn(read.run(self.broker.reader_config(), tx, stop.clone()));
        let schema = self.writer.schema();
        let mut write_result = Ok(());
        while let Some(raw) = rx.recv().await {
            let res = match to_archive_batch(&raw, &schema) {
                Ok(batch) => self.writer.write(batch).await.map_err(TieringError::from),
                Err(source) => Err(TieringError::Archive {
                    table: self.table.clone(),
                    source,
                }),
            };
            if let Err(e) = res {
                write_result = Err(e);
                stop.store(true, Ordering::SeqCst);
                break;
            }
            for p in &raw.partitions {
                if let Some(r) = report.partitions.get_mut(p) {
                    r.archived += 1;
                }
            }
        }
        drop(rx);
        let reached = reader.await.map_err(|_| TieringError::TaskLost {
            what: "reading the ranges to archive",
        })?;
        if let Err(e) = write_result {
            self.writer.abort();
            return Err(e);
        }
        let reached = match reached.map_err(TieringError::from).and_then(|r| {
            r.ends
                .into_iter()
                .map(|(p, end)| match end {
                    RangeEnd::Reached(next) => Ok((p, next)),
                    RangeEnd::OutOfRange(next) => Err(TieringError::Topic {
                        topic: self.topic.to_string(),
                        message: format!(
                            "partition {p}: offset {next} is below the broker's log start; the records to archive are gone"
                        ),
                    }),
                })
                .collect::<Result<BTreeMap<i32, i64>>>()
        }) {
            Ok(r) => r,
            Err(e) => {
                self.writer.abort();
                return Err(e);
            }
        };
        let moved: BTreeMap<i32, i64> = reached
            .into_iter()
            .filter(|(p, next)| ranges.iter().any(|(q, start, _)| q == p && next > start))
            .collect();
        if moved.is_empty() {
            self.writer.abort();
            return Ok(moved);
        }
        let files = self.writer.upload().await?;
        fault::point("tier_after_upload");
        let progress: Vec<(String, i64)> = moved
            .iter()
            .map(|(p, next)| (archive_app_id(&self.topic, *p), *next))
            .collect();
        let meta = HashMap::from([(
            "sluice.tiering".to_string(),
            serde_json::Value::from(self.topic.to_string()),
        )]);
        match self.writer.commit(&progress, meta).await {
            Ok(Some(out)) => {
                report.archived = out.rows;
                report.files = files;
                spec::TIERING_RECORDS_ARCHIVED.inc([&self.topic], out.rows);
                events::archived(&self.topic, &self.table, out.version, out.rows, files);
            }
            Ok(None) => {}
            Err(e) if e.is_fenced() => {
                tracing::warn!(topic = %self.topic, "another tierer archived the same partitions first ({e}); nothing committed");
                for r in report.partitions.values_mut() {
                    r.archived = 0;
                }
                self.writer.refresh().await?;
                let mut now = BTreeMap::new();
                for p in moved.keys() {
                    if let Some(b) = self
                        .writer
                        .progress(&archive_app_id(&self.topic, *p))
                        .await?
                    {
                        now.insert(*p, b);
                    }
                }
                return Ok(now);
            }
            Err(e) => return Err(e.into()),
        }
        fault::point("tier_after_commit");
        Ok(moved)
    }

    /// The retention interlock: DeleteRecords up to min(boundary, first offset younger than
    /// the hot window), never past the committed boundary.
    async fn retire(
        &mut self,
        boundaries: &BTreeMap<i32, i64>,
        report: &mut RoundReport,
    ) -> Result<()> {
        let now = chrono::Utc::now().timestamp_millis();
        let hot = self.cfg.hot_retention.get().as_millis() as i64;
        let slack = alarm_slack(&self.cfg).as_millis() as i64;
        let broker = self.broker.clone();
        let topic = self.topic.to_string();
        let parts: Vec<(i32, i64)> = boundaries.iter().map(|(p, b)| (*p, *b)).collect();
        // (partition, boundary, log start, young offset, stale offset)
        let lookups = blocking(move || {
            let mut out = Vec::new();
            for (p, b) in parts {
                let (low, high) = broker.watermarks(&topic, p)?;
                let young = broker
                    .offset_for_time(&topic, p, now - hot)?
                    .unwrap_or(high);
                let stale = broker
                    .offset_for_time(&topic, p, now - hot - slack)?
                    .unwrap_or(high);
                out.push((p, b, low, young, stale));
            }
            Ok::<_, TieringError>(out)
        })
        .await?;
        let (lake, readers, topic) = (self.lake.clone(), self.readers.clone(), self.topic.clone());
        let parts: Vec<i32> = boundaries.keys().copied().collect();
        let floors = pipeline_floors(&lake, &readers, &topic, parts).await?;
        let mut upto = BTreeMap::new();
        for &(p, boundary, low, young, stale) in &lookups {
            let young = match floors.get(&p) {
                Some(Some(f)) => {
                    if *f < stale && *f > low {
                        report.held_back = true;
                        tracing::warn!(topic = %self.topic, partition = p, floor = *f, "a pipeline reading this topic still needs records older than hot_retention (its committed progress, or an open window): the broker keeps them");
                    }
                    young.min(*f)
                }
                Some(None) => low,
                None => young,
            };
            if boundary < stale {
                report.behind = true;
                tracing::warn!(topic = %self.topic, partition = p, boundary, "records older than hot_retention are not archived yet: tiering is behind; the broker keeps them");
            }
            let target = boundary.min(young);
            if target > low {
                upto.insert(p, target);
            }
        }
        if upto.is_empty() || !self.opts.delete_records {
            return Ok(());
        }
        let starts = self.broker.delete_records(&self.topic, &upto).await?;
        for &(p, _, low, _, _) in &lookups {
            if let Some(&new_low) = starts.get(&p) {
                report.deleted += (new_low - low).max(0) as u64;
                if let Some(r) = report.partitions.get_mut(&p) {
                    r.log_start = new_low;
                }
            }
        }
        spec::TIERING_RECORDS_DELETED.inc([&self.topic], report.deleted);
        events::broker_trimmed(&self.topic, report.deleted, &upto);
        Ok(())
    }

    /// Runs a round every `interval` until cancelled. Failed rounds raise the alarm and are
    /// retried; they never delete anything.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(self.cfg.interval.get());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let outcome = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.round() => r,
            };
            record_round(&self.topic, &outcome);
        }
    }
}

/// A pipeline reading a tiered topic, and the tables whose progress can hold records back.
#[derive(Clone, Debug)]
struct Reader {
    pipeline: String,
    events: String,
    aggregates: Vec<String>,
}

/// Per partition, the lowest offset some pipeline reading the topic still needs
/// ([`Stored::retention_floor`]: its events table's progress, or an aggregate's replay
/// offset; the dead-letter and late tables never need more); `Some(None)` when a pipeline has
/// not committed the partition yet, so nothing may be deleted. Partitions without readers are
/// absent.
async fn pipeline_floors(
    lake: &Lake,
    readers: &[Reader],
    topic: &str,
    partitions: Vec<i32>,
) -> Result<BTreeMap<i32, Option<i64>>> {
    let mut out = BTreeMap::new();
    if readers.is_empty() {
        return Ok(out);
    }
    let mut tables = BTreeMap::new();
    for r in readers {
        for n in std::iter::once(&r.events).chain(&r.aggregates) {
            if !tables.contains_key(n) {
                tables.insert(n.clone(), lake.open(n).await?);
            }
        }
    }
    let progress = async |name: &String, app: &str| -> Result<Option<i64>> {
        match tables.get(name).and_then(|t| t.as_ref()) {
            Some(t) => Ok(sluice_lake::committed_progress(name, t, app).await?),
            None => Ok(None),
        }
    };
    for p in partitions {
        let mut floor: Option<i64> = Some(i64::MAX);
        for r in readers {
            let app = sluice_lake::progress_app_id(&r.pipeline, topic, p);
            let mut stored = Stored::empty(0, r.aggregates.len());
            stored.events = progress(&r.events, &app).await?;
            for (j, a) in r.aggregates.iter().enumerate() {
                stored.aggregates[j] = progress(a, &app).await?;
            }
            floor = match (floor, stored.retention_floor()) {
                (Some(f), Some(r)) => Some(f.min(r)),
                _ => None,
            };
        }
        out.insert(p, floor);
    }
    Ok(out)
}

/// Publishes the alarm and round counters for one round's outcome.
pub fn record_round(topic: &str, outcome: &Result<RoundReport>) {
    match outcome {
        Ok(r) => {
            spec::TIERING_ROUNDS.inc([topic, "ok"], 1);
            spec::TIERING_ALARM.set([topic], if r.behind || r.held_back { 1.0 } else { 0.0 });
        }
        Err(e) => {
            spec::TIERING_ROUNDS.inc([topic, "failed"], 1);
            spec::TIERING_ALARM.set([topic], 1.0);
            events::tiering_round_failed(topic, e);
        }
    }
}

/// Refuses compacted topics; warns when the topic's own retention could drop records before
/// they are archived.
async fn check_topic(broker: &Cluster, cfg: &TieringConfig) -> Result<()> {
    let b = broker.clone();
    let t = cfg.topic.clone();
    blocking(move || b.partitions(&t)).await?;
    let settings = match broker.topic_config(&cfg.topic).await {
        Ok(s) => s,
        Err(e) => {
            // Some clusters (or ACLs) do not answer DescribeConfigs: say what is not checked.
            tracing::warn!(topic = %cfg.topic, "cannot read the topic's settings, so cleanup.policy and retention are not checked: {e}");
            return Ok(());
        }
    };
    let policy = settings.get("cleanup.policy").cloned().unwrap_or_default();
    if policy.split(',').any(|p| p.trim() == "compact") {
        return Err(TieringError::Topic {
            topic: cfg.topic.clone(),
            message: format!(
                "cleanup.policy is {policy:?}: a compacted topic drops superseded records on its own and keeps no complete log to archive, so sluice does not tier it; tier topics with cleanup.policy=delete, or remove this [[tiering]] entry"
            ),
        });
    }
    let retention_ms: i64 = settings
        .get("retention.ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1);
    let retention_bytes: i64 = settings
        .get("retention.bytes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1);
    let mut risk = false;
    if retention_ms >= 0 {
        risk = true;
        let hot = cfg.hot_retention.get().as_millis() as i64;
        tracing::warn!(topic = %cfg.topic, retention_ms, "the broker deletes this topic's records older than retention.ms on its own: if tiering stops for longer than {} minutes, records are lost before they are archived; set retention.ms=-1 so that only sluice deletes, and only what is archived", ((retention_ms - hot).max(0)) / 60_000);
    }
    if retention_bytes >= 0 {
        risk = true;
        tracing::warn!(topic = %cfg.topic, retention_bytes, "the broker deletes this topic's oldest records beyond retention.bytes on its own, archived or not; set retention.bytes=-1 so that only sluice deletes");
    }
    spec::TIERING_RETENTION_RISK.set([&cfg.topic], if risk { 1.0 } else { 0.0 });
    Ok(())
}

//! [`UnifiedLog`]: one partition of a topic read as one log across both tiers.
//!
//! `read(partition, from, until)` returns the archive's rows for `[from, boundary)` and then
//! the broker's records from the boundary on: no gap, no duplicate, the bytes, timestamps and
//! headers the producer wrote. The boundary and the archive rows below it come from one
//! snapshot of the archive table, so they always agree. When the broker's log start moves
//! past the read position while reading (tiering archived and deleted more in the meantime),
//! the read goes back to the archive, whose boundary has moved at least as far.
//!
//! A time is resolved across both tiers the way Kafka resolves it within one: the first offset
//! whose timestamp is at or after the time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sluice_config::Config;
use sluice_kafka::{AtEof, Cluster, RangeEnd, RangeRead, RawBatch};
use sluice_lake::deltalake::DeltaTable;
use sluice_lake::{Lake, scan_sql};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::archive::{ArchiveError, archive_app_id, from_archive_batch};
use crate::archive_files;
use crate::{Result, TieringError, blocking};

/// Where a read starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStart {
    /// The oldest record in either tier.
    Earliest,
    /// An offset.
    Offset(i64),
    /// The first record with a timestamp at or after this (ms since the epoch).
    Time(i64),
}

/// Where a read stops (exclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogEnd {
    /// Before this offset.
    Offset(i64),
    /// Before the first record with a timestamp at or after this (ms since the epoch).
    Time(i64),
    /// At the broker's end offset when the read starts.
    End,
    /// Never: keep following new records until cancelled.
    Follow,
}

impl LogStart {
    /// Parses `earliest`, an offset (`1234` or `offset:1234`) or a time
    /// (`2026-03-01T10:00:00Z` or `time:...`).
    pub fn parse(s: &str) -> Result<Self> {
        let t = s.trim();
        if t == "earliest" {
            return Ok(Self::Earliest);
        }
        match parse_position(t)? {
            Position::Offset(o) => Ok(Self::Offset(o)),
            Position::Time(ms) => Ok(Self::Time(ms)),
        }
    }
}

impl LogEnd {
    /// Parses `end` (or `latest`), `follow`, an offset or a time (see [`LogStart::parse`]).
    pub fn parse(s: &str) -> Result<Self> {
        let t = s.trim();
        if t == "end" || t == "latest" {
            return Ok(Self::End);
        }
        if t == "follow" {
            return Ok(Self::Follow);
        }
        match parse_position(t)? {
            Position::Offset(o) => Ok(Self::Offset(o)),
            Position::Time(ms) => Ok(Self::Time(ms)),
        }
    }
}

enum Position {
    Offset(i64),
    Time(i64),
}

fn parse_position(t: &str) -> Result<Position> {
    let bad = || {
        TieringError::Invalid(format!(
            "{t:?} is not a position: use an offset (1234 or offset:1234), a time (2026-03-01T10:00:00Z or time:...), earliest, end or follow"
        ))
    };
    let o = t.strip_prefix("offset:").unwrap_or(t).trim();
    if let Ok(n) = o.parse::<i64>() {
        return if n >= 0 {
            Ok(Position::Offset(n))
        } else {
            Err(bad())
        };
    }
    let ts = t.strip_prefix("time:").unwrap_or(t).trim();
    chrono::DateTime::parse_from_rfc3339(ts)
        .map(|d| Position::Time(d.timestamp_millis()))
        .map_err(|_| bad())
}

/// What a read returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Records read from the archive table.
    pub from_archive: u64,
    /// Records read from the broker.
    pub from_broker: u64,
    /// The offset after the last one read (the next to read).
    pub next: i64,
}

/// A topic read across the archive table and the broker.
#[derive(Clone, Debug)]
pub struct UnifiedLog {
    topic: Arc<str>,
    table: String,
    lake: Lake,
    broker: Cluster,
    with_headers: bool,
    chunk: i64,
    batch_records: usize,
}

const ARCHIVE_ALIAS: &str = "archive";

impl UnifiedLog {
    /// The unified log of `topic`; its archive table is the one of its `[[tiering]]` entry,
    /// or the default name `archive_<topic>` when it has none.
    pub fn new(config: &Config, lake: &Lake, topic: &str) -> Result<Self> {
        let broker = Cluster::new(&(&config.kafka).into(), "replay")?;
        Ok(Self::with_broker(config, lake, topic, broker))
    }

    /// [`UnifiedLog::new`] reading the broker through `broker`, a client the caller keeps.
    pub fn with_broker(config: &Config, lake: &Lake, topic: &str, broker: Cluster) -> Self {
        let table = config
            .tiering
            .iter()
            .find(|t| t.topic == topic)
            .map(|t| t.archive_table())
            .unwrap_or_else(|| {
                sluice_config::TieringConfig {
                    topic: topic.into(),
                    ..Default::default()
                }
                .archive_table()
            });
        Self {
            topic: Arc::from(topic),
            table,
            lake: lake.clone(),
            broker,
            with_headers: true,
            chunk: 250_000,
            batch_records: 10_000,
        }
    }

    /// Whether records carry their headers (on by default; off saves work when not needed).
    pub fn with_headers(mut self, yes: bool) -> Self {
        self.with_headers = yes;
        self
    }

    /// Most records per batch read from the broker (10,000 by default): with the channel's
    /// capacity, this bounds how far a read runs ahead of its consumer.
    pub fn with_batch_records(mut self, n: usize) -> Self {
        self.batch_records = n.max(1);
        self
    }

    /// The topic.
    pub fn topic(&self) -> &Arc<str> {
        &self.topic
    }

    /// The archive table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The topic's partitions.
    pub async fn partitions(&self) -> Result<Vec<i32>> {
        let b = self.broker.clone();
        let t = self.topic.to_string();
        blocking(move || b.partitions(&t)).await
    }

    /// The archive table at its latest version (None when the topic was never tiered).
    async fn snapshot(&self) -> Result<Option<DeltaTable>> {
        Ok(self.lake.open(&self.table).await?)
    }

    /// The partition's boundary in `table`: the first offset not archived.
    async fn boundary_in(&self, table: &DeltaTable, partition: i32) -> Result<Option<i64>> {
        Ok(sluice_lake::committed_progress(
            &self.table,
            table,
            &archive_app_id(&self.topic, partition),
        )
        .await?)
    }

    /// The partition's boundary now (None when nothing is archived).
    pub async fn boundary(&self, partition: i32) -> Result<Option<i64>> {
        match self.snapshot().await? {
            Some(t) => self.boundary_in(&t, partition).await,
            None => Ok(None),
        }
    }

    /// (log start, high watermark) in the broker.
    pub async fn watermarks(&self, partition: i32) -> Result<(i64, i64)> {
        let b = self.broker.clone();
        let t = self.topic.to_string();
        blocking(move || b.watermarks(&t, partition)).await
    }

    /// The offset a start position means now.
    pub async fn resolve_start(&self, partition: i32, from: LogStart) -> Result<i64> {
        match from {
            LogStart::Offset(o) => Ok(o),
            LogStart::Time(ms) => self.offset_for_time(partition, ms).await,
            LogStart::Earliest => {
                let (low, _) = self.watermarks(partition).await?;
                let Some(table) = self.snapshot().await? else {
                    return Ok(low);
                };
                if self.boundary_in(&table, partition).await?.is_none() {
                    return Ok(low);
                }
                let sql = format!(
                    "SELECT min(\"offset\") FROM {ARCHIVE_ALIAS} WHERE \"partition\" = {partition}"
                );
                Ok(self.scalar(&table, &sql).await?.map_or(low, |o| o.min(low)))
            }
        }
    }

    /// The offset an end position means now (`None` for follow).
    pub async fn resolve_end(&self, partition: i32, until: LogEnd) -> Result<Option<i64>> {
        match until {
            LogEnd::Offset(o) => Ok(Some(o)),
            LogEnd::Time(ms) => Ok(Some(self.offset_for_time(partition, ms).await?)),
            LogEnd::End => Ok(Some(self.watermarks(partition).await?.1)),
            LogEnd::Follow => Ok(None),
        }
    }

    /// The first offset whose timestamp is at or after `ms`, across both tiers; the broker's
    /// end offset when no record is that young.
    pub async fn offset_for_time(&self, partition: i32, ms: i64) -> Result<i64> {
        let mut floor = None;
        if let Some(table) = self.snapshot().await?
            && let Some(b) = self.boundary_in(&table, partition).await?
        {
            let at = chrono::DateTime::from_timestamp_millis(ms)
                .ok_or_else(|| TieringError::Invalid(format!("time {ms} is out of range")))?
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let sql = format!(
                "SELECT min(\"offset\") FROM {ARCHIVE_ALIAS} WHERE \"partition\" = {partition} AND \"offset\" < {b} AND \"timestamp\" >= '{at}'"
            );
            if let Some(o) = self.scalar(&table, &sql).await? {
                return Ok(o);
            }
            floor = Some(b);
        }
        let b = self.broker.clone();
        let t = self.topic.to_string();
        let found = blocking(move || {
            let high = b.watermarks(&t, partition)?.1;
            Ok::<_, TieringError>(b.offset_for_time(&t, partition, ms)?.unwrap_or(high))
        })
        .await?;
        Ok(floor.map_or(found, |f| found.max(f)))
    }

    async fn scalar(&self, table: &DeltaTable, sql: &str) -> Result<Option<i64>> {
        let batches = scan_sql(ARCHIVE_ALIAS, table, sql).await?;
        let v = batches.first().filter(|b| b.num_rows() > 0).and_then(|b| {
            let c = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Int64).ok()?;
            let a = c.as_any().downcast_ref::<arrow::array::Int64Array>()?;
            (!arrow::array::Array::is_null(a, 0)).then(|| a.value(0))
        });
        Ok(v)
    }

    /// Reads one partition from `from` until `until` into `tx`, in offset order.
    pub async fn read(
        &self,
        partition: i32,
        from: LogStart,
        until: LogEnd,
        tx: &mpsc::Sender<RawBatch>,
        cancel: &CancellationToken,
    ) -> Result<ReadStats> {
        let start = self.resolve_start(partition, from).await?;
        let end = self.resolve_end(partition, until).await?;
        self.read_range(partition, start, end, tx, cancel).await
    }

    /// Reads offsets `[start, end)` of one partition (`end` `None`: follow until cancelled).
    pub async fn read_range(
        &self,
        partition: i32,
        start: i64,
        end: Option<i64>,
        tx: &mpsc::Sender<RawBatch>,
        cancel: &CancellationToken,
    ) -> Result<ReadStats> {
        let mut stats = ReadStats {
            next: start,
            ..Default::default()
        };
        loop {
            if end.is_some_and(|e| stats.next >= e) || cancel.is_cancelled() {
                return Ok(stats);
            }
            let table = self.snapshot().await?;
            let boundary = match &table {
                Some(t) => self.boundary_in(t, partition).await?,
                None => None,
            };
            if let (Some(table), Some(b)) = (&table, boundary)
                && stats.next < b
            {
                let hi = end.map_or(b, |e| e.min(b));
                stats.from_archive += self
                    .read_archive(table, partition, stats.next, hi, tx)
                    .await?;
                stats.next = hi;
                continue;
            }
            match self
                .read_broker(partition, stats.next, end, tx, cancel)
                .await?
            {
                (n, RangeEnd::Reached(next)) => {
                    stats.from_broker += n;
                    stats.next = next;
                    return Ok(stats);
                }
                (n, RangeEnd::OutOfRange(next)) => {
                    stats.from_broker += n;
                    stats.next = next;
                    let b = self.boundary(partition).await?;
                    if b.is_some_and(|b| b > next) {
                        tracing::debug!(topic = %self.topic, partition, next, "the broker's log start moved past the read position; reading on from the archive");
                        continue;
                    }
                    let (low, _) = self.watermarks(partition).await?;
                    if low > next {
                        return Err(TieringError::Topic {
                            topic: self.topic.to_string(),
                            message: format!(
                                "partition {partition}: offsets [{next}, {low}) are neither in the archive (boundary {}) nor in the broker (log start {low}); they were deleted before they were archived",
                                b.map_or("none".to_string(), |b| b.to_string())
                            ),
                        });
                    }
                    // A transient out-of-range (e.g. a leader change): read the broker again.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Sends the archive's rows with offsets in `[lo, hi)`, in order: straight from the
    /// Parquet row groups when their offset ranges are disjoint (as the tierer writes them),
    /// otherwise chunk by chunk through a sorted query.
    async fn read_archive(
        &self,
        table: &DeltaTable,
        partition: i32,
        lo: i64,
        hi: i64,
        tx: &mpsc::Sender<RawBatch>,
    ) -> Result<u64> {
        let archive_err = |message| self.archive_error(message);
        let Some(plan) = archive_files::plan(table, partition, lo, hi)
            .await
            .map_err(archive_err)?
        else {
            tracing::debug!(table = %self.table, partition, "archive row groups overlap; reading through a sorted query");
            return self.read_archive_sorted(table, partition, lo, hi, tx).await;
        };
        let mut n = 0u64;
        // Read the next row group while the current one is being sent.
        let mut next = (!plan.is_empty()).then(|| {
            let plan = plan.clone();
            tokio::spawn(async move { plan.read(0, partition, lo, hi).await })
        });
        let mut i = 0;
        while let Some(task) = next.take() {
            let batch = task
                .await
                .map_err(|_| archive_err(ArchiveError::TaskLost))?
                .map_err(archive_err)?;
            i += 1;
            if i < plan.len() {
                let plan = plan.clone();
                next = Some(tokio::spawn(async move {
                    plan.read(i, partition, lo, hi).await
                }));
            }
            let mut at = 0;
            while at < batch.num_rows() {
                let len = self.batch_records.min(batch.num_rows() - at);
                let raw = from_archive_batch(&batch.slice(at, len), &self.topic, self.with_headers)
                    .map_err(archive_err)?;
                at += len;
                n += raw.len() as u64;
                if tx.send(raw).await.is_err() {
                    return Ok(n);
                }
            }
        }
        Ok(n)
    }

    /// An error about this log's archive table.
    fn archive_error(&self, source: ArchiveError) -> TieringError {
        TieringError::Archive {
            table: self.table.clone(),
            source,
        }
    }

    /// [`Self::read_archive`] through one sorted query per `chunk` offsets.
    async fn read_archive_sorted(
        &self,
        table: &DeltaTable,
        partition: i32,
        lo: i64,
        hi: i64,
        tx: &mpsc::Sender<RawBatch>,
    ) -> Result<u64> {
        let mut n = 0u64;
        let mut a = lo;
        while a < hi {
            let b = hi.min(a.saturating_add(self.chunk));
            let sql = format!(
                "SELECT * FROM {ARCHIVE_ALIAS} WHERE \"partition\" = {partition} AND \"offset\" >= {a} AND \"offset\" < {b} ORDER BY \"offset\""
            );
            for batch in scan_sql(ARCHIVE_ALIAS, table, &sql).await? {
                if batch.num_rows() == 0 {
                    continue;
                }
                let raw = from_archive_batch(&batch, &self.topic, self.with_headers)
                    .map_err(|message| self.archive_error(message))?;
                n += raw.len() as u64;
                if tx.send(raw).await.is_err() {
                    return Ok(n);
                }
            }
            a = b;
        }
        Ok(n)
    }

    /// Reads the broker's tier of one partition from `start` until `end` (`None`: until
    /// cancelled); (records read, where the read ended).
    async fn read_broker(
        &self,
        partition: i32,
        start: i64,
        end: Option<i64>,
        tx: &mpsc::Sender<RawBatch>,
        cancel: &CancellationToken,
    ) -> Result<(u64, RangeEnd)> {
        let read = RangeRead {
            topic: self.topic.clone(),
            ranges: vec![(partition, start, end)],
            with_headers: self.with_headers,
            batch_records: self.batch_records,
            at_eof: AtEof::Wait,
            stall: None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = tokio::spawn({
            let (stop, cancel) = (stop.clone(), cancel.clone());
            async move {
                cancel.cancelled().await;
                stop.store(true, Ordering::SeqCst);
            }
        });
        let out = read
            .run(self.broker.reader_config(), tx.clone(), stop)
            .await;
        watcher.abort();
        let out = out?;
        let ended = out
            .ends
            .get(&partition)
            .copied()
            .unwrap_or(RangeEnd::Reached(start));
        Ok((out.records, ended))
    }
}

/// Every partition's boundary in the archive of `log` (partitions never archived are absent).
pub async fn boundaries(log: &UnifiedLog) -> Result<BTreeMap<i32, i64>> {
    let mut out = BTreeMap::new();
    let Some(table) = log.snapshot().await? else {
        return Ok(out);
    };
    for p in log.partitions().await? {
        if let Some(b) = log.boundary_in(&table, p).await? {
            out.insert(p, b);
        }
    }
    Ok(out)
}

/// Where tiering of one topic stands.
#[derive(Clone, Debug)]
pub struct TopicStatus {
    /// The topic.
    pub topic: String,
    /// Its archive table.
    pub table: String,
    /// The archive table's version (None before the first round).
    pub version: Option<i64>,
    /// Per partition: (partition, boundary, broker log start, broker end).
    pub partitions: Vec<(i32, Option<i64>, i64, i64)>,
}

/// Where tiering of every `[[tiering]]` topic of `config` stands, the brokers' offsets read
/// through `broker`.
pub async fn tiering_status(
    config: &Config,
    lake: &Lake,
    broker: &Cluster,
) -> Result<Vec<TopicStatus>> {
    let mut out = Vec::new();
    for t in &config.tiering {
        let log = UnifiedLog::with_broker(config, lake, &t.topic, broker.clone());
        let table = log.snapshot().await?;
        let mut partitions = Vec::new();
        for p in log.partitions().await? {
            let boundary = match &table {
                Some(tb) => log.boundary_in(tb, p).await?,
                None => None,
            };
            let (low, high) = log.watermarks(p).await?;
            partitions.push((p, boundary, low, high));
        }
        out.push(TopicStatus {
            topic: t.topic.clone(),
            table: log.table().to_string(),
            version: table.as_ref().and_then(|x| x.version()).map(|v| v as i64),
            partitions,
        });
    }
    Ok(out)
}

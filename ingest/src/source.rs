//! [`KafkaSource`]: one consumer-group member polling in batches on its own thread.
//!
//! Records go to the pipeline as [`RawBatch`]es over a bounded channel, so a slow lake slows
//! consumption instead of growing memory. Rebalances are handled on the polling thread: on an
//! assignment the pipeline is asked, and the thread blocks until it answers, for the offset to
//! start each new partition at (the progress stored in its tables), and the partitions are
//! assigned at exactly those offsets; on a revocation the pipeline first commits what it holds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};

use sluice_config::StartPosition;

use crate::raw::{RawBatch, RawBatchBuilder};

/// A topic-partition.
pub type TopicPartition = (Arc<str>, i32);

/// What the polling thread tells the pipeline.
#[derive(Debug)]
pub enum SourceEvent {
    /// Records, in offset order per partition.
    Records(Box<RawBatch>),
    /// New partitions; reply with the offset to start each at.
    Assigned(
        Vec<TopicPartition>,
        oneshot::Sender<HashMap<TopicPartition, i64>>,
    ),
    /// Partitions taken away; reply once their data is committed.
    Revoked(Vec<TopicPartition>, oneshot::Sender<()>),
    /// The seek asked for with [`RecordSource::seek`] is done (or failed): records before this
    /// event may come from the old positions, records after it come from the new ones.
    Seeked(Result<(), String>),
    /// The polling thread has left the group and ended; nothing follows.
    Ended,
}

/// Settings for a [`KafkaSource`].
#[derive(Clone, Debug)]
pub struct SourceOptions {
    /// Bootstrap servers.
    pub brokers: String,
    /// Consumer group.
    pub group_id: String,
    /// Topics.
    pub topics: Vec<String>,
    /// librdkafka options passed through.
    pub options: Vec<(String, String)>,
    /// Most records per batch.
    pub max_batch_records: usize,
    /// Most bytes per batch.
    pub max_batch_bytes: usize,
    /// Collect headers.
    pub with_headers: bool,
}

struct SourceContext {
    tx: mpsc::Sender<SourceEvent>,
    topics: HashMap<String, Arc<str>>,
}

impl ClientContext for SourceContext {}

impl SourceContext {
    fn tp_list(&self, tpl: &TopicPartitionList) -> Vec<TopicPartition> {
        tpl.elements()
            .iter()
            .map(|e| {
                (
                    self.topics
                        .get(e.topic())
                        .cloned()
                        .unwrap_or_else(|| Arc::from(e.topic())),
                    e.partition(),
                )
            })
            .collect()
    }
}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            rdkafka::consumer::RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let parts = self.tp_list(tpl);
                let (reply, answer) = oneshot::channel();
                let offsets = if self
                    .tx
                    .blocking_send(SourceEvent::Assigned(parts.clone(), reply))
                    .is_ok()
                {
                    answer.blocking_recv().ok()
                } else {
                    None
                };
                let Some(offsets) = offsets else {
                    tracing::info!("pipeline is gone; not taking new partitions");
                    return;
                };
                for (topic, p) in &parts {
                    if let Some(o) = offsets.get(&(topic.clone(), *p))
                        && let Err(e) = tpl.set_partition_offset(topic, *p, Offset::Offset(*o))
                    {
                        tracing::error!(topic = %topic, partition = p, "cannot set start offset: {e}");
                    }
                }
                tracing::info!(partitions = ?parts, "assigned");
                let res = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = res {
                    tracing::error!("assign failed: {e}");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let parts = self.tp_list(tpl);
                let (reply, answer) = oneshot::channel();
                if self
                    .tx
                    .blocking_send(SourceEvent::Revoked(parts.clone(), reply))
                    .is_ok()
                {
                    let _ = answer.blocking_recv();
                }
                tracing::info!(partitions = ?parts, "revoked");
                let res = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = res {
                    tracing::error!("unassign failed: {e}");
                }
            }
            other => {
                tracing::error!("rebalance error: {other:?}");
                let _ = consumer.unassign();
            }
        }
    }

    fn pre_rebalance(&self, _: &BaseConsumer<Self>, _: &Rebalance<'_>) {}
}

/// Where a pipeline's records come from, besides the channel of [`SourceEvent`]s: a live
/// consumer group ([`KafkaSource`]) or a replay of the unified log (a backfill). The methods
/// that talk to a broker block; the pipeline calls them off the async runtime.
pub trait RecordSource: Send + Sync + 'static {
    /// Commits `offsets` (next offset per partition) to the consumer group, if there is one.
    fn commit_offsets(&self, offsets: &HashMap<TopicPartition, i64>);
    /// Moves partitions to new positions after a fenced commit.
    /// Asks the source to move these partitions to these offsets. It answers with
    /// [`SourceEvent::Seeked`] on its channel once done; records of these partitions that
    /// arrive before that answer are from the old positions and must be dropped. An error here
    /// means the source cannot seek at all.
    fn seek(&self, offsets: &HashMap<TopicPartition, i64>) -> Result<(), String>;
    /// Asks the source to stop; it ends by sending [`SourceEvent::Ended`].
    fn stop(&self);
    /// Waits (blocking) until the source's threads have ended.
    fn join(&self);
    /// The offset a partition without stored progress starts at (blocking).
    fn start_offset(
        &self,
        topic: &str,
        partition: i32,
        start: StartPosition,
    ) -> Result<i64, String>;
    /// Every partition of `topics` with its end offset now (blocking).
    fn end_offsets(&self, topics: &[String]) -> Result<BTreeMap<TopicPartition, i64>, String>;
    /// A partition's end offset for lag metrics (blocking); `None` when unknown.
    fn high_watermark(&self, topic: &str, partition: i32) -> Option<i64>;
}

/// A running consumer: its polling thread and a handle to stop it.
pub struct KafkaSource {
    consumer: Arc<BaseConsumer<SourceContext>>,
    stop: Arc<AtomicBool>,
    /// Seeks asked for, made by the polling thread between two polls.
    seeks: Arc<PendingSeeks>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource").finish_non_exhaustive()
    }
}

/// librdkafka settings for a consumer of this source (secrets included: never log them).
pub fn consumer_config(
    brokers: &str,
    group_id: &str,
    options: &[(String, String)],
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "30000")
        .set("max.poll.interval.ms", "300000")
        .set("fetch.max.bytes", "52428800")
        .set("queued.max.messages.kbytes", "65536")
        // When the pipeline is slower than the fetcher, the prefetch queue fills and
        // librdkafka pauses fetching for this long (1 s by default): the queue then drains
        // and the pipeline sits idle. A short pause keeps it fed (5.5 s -> 1.8 s per 1M
        // records in the throughput benchmark).
        .set("fetch.queue.backoff.ms", "20")
        .set("isolation.level", "read_committed");
    for (k, v) in options {
        c.set(k, v);
    }
    c
}

impl KafkaSource {
    /// Creates the consumer, subscribes and starts polling into a channel of `capacity` batches.
    pub fn start(
        opts: SourceOptions,
        capacity: usize,
    ) -> Result<(Self, mpsc::Receiver<SourceEvent>), String> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let topics: HashMap<String, Arc<str>> = opts
            .topics
            .iter()
            .map(|t| (t.clone(), Arc::from(t.as_str())))
            .collect();
        let ctx = SourceContext {
            tx: tx.clone(),
            topics: topics.clone(),
        };
        let consumer: BaseConsumer<SourceContext> =
            consumer_config(&opts.brokers, &opts.group_id, &opts.options)
                .create_with_context(ctx)
                .map_err(|e| {
                    format!("cannot create the Kafka consumer for {}: {e}", opts.brokers)
                })?;
        let names: Vec<&str> = opts.topics.iter().map(|s| s.as_str()).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| format!("cannot subscribe to {names:?}: {e}"))?;
        let consumer = Arc::new(consumer);
        let stop = Arc::new(AtomicBool::new(false));
        let seeks = Arc::new(PendingSeeks::default());
        let thread = {
            let consumer = consumer.clone();
            let stop = stop.clone();
            let seeks = seeks.clone();
            std::thread::Builder::new()
                .name("sluice-poll".into())
                .spawn(move || poll_loop(&consumer, &tx, &stop, &seeks, &topics, &opts))
                .map_err(|e| format!("cannot start the polling thread: {e}"))?
        };
        Ok((
            Self {
                consumer,
                stop,
                seeks,
                thread: std::sync::Mutex::new(Some(thread)),
            },
            rx,
        ))
    }

    /// The consumer, for watermark and time lookups.
    pub fn consumer(&self) -> &BaseConsumer<impl ConsumerContext> {
        &self.consumer
    }
}

impl RecordSource for KafkaSource {
    fn commit_offsets(&self, offsets: &HashMap<TopicPartition, i64>) {
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in offsets {
            if tpl.add_partition_offset(t, *p, Offset::Offset(*o)).is_err() {
                return;
            }
        }
        if let Err(e) = self
            .consumer
            .commit(&tpl, rdkafka::consumer::CommitMode::Async)
        {
            tracing::warn!(
                "committing offsets to the consumer group failed (the table stays the source of truth): {e}"
            );
        }
    }

    fn seek(&self, offsets: &HashMap<TopicPartition, i64>) -> Result<(), String> {
        self.seeks.ask(offsets);
        Ok(())
    }

    /// The pipeline keeps receiving until the channel closes, so that revocations during the
    /// consumer's close are still committed.
    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    fn join(&self) {
        self.stop();
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = handle {
            let _ = t.join();
        }
    }

    fn start_offset(
        &self,
        topic: &str,
        partition: i32,
        start: StartPosition,
    ) -> Result<i64, String> {
        start_offset(&*self.consumer, topic, partition, start)
    }

    fn end_offsets(&self, topics: &[String]) -> Result<BTreeMap<TopicPartition, i64>, String> {
        end_offsets(&*self.consumer, topics)
    }

    fn high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        self.consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(5))
            .ok()
            .map(|(_, high)| high)
    }
}

/// Where a partition without stored progress starts, asked of the broker (blocking).
pub fn start_offset<C: ConsumerContext>(
    c: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    start: StartPosition,
) -> Result<i64, String> {
    let timeout = Duration::from_secs(30);
    let (low, high) = c
        .fetch_watermarks(topic, partition, timeout)
        .map_err(|e| format!("watermarks of {topic}/{partition}: {e}"))?;
    Ok(match start {
        StartPosition::Earliest => low,
        StartPosition::Latest => high,
        StartPosition::Offset(n) => n.clamp(low, high),
        StartPosition::Time(ms) => offset_for_time(c, topic, partition, ms)?.unwrap_or(high),
    })
}

/// The first offset whose timestamp is at or after `ms`, as the broker answers it (blocking);
/// `None` when no record is that young.
pub fn offset_for_time<C: ConsumerContext>(
    c: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    ms: i64,
) -> Result<Option<i64>, String> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(ms))
        .map_err(|e| e.to_string())?;
    let found = c
        .offsets_for_times(tpl, Duration::from_secs(30))
        .map_err(|e| format!("offsets of {topic}/{partition} for time {ms}: {e}"))?;
    Ok(match found.elements().first().map(|e| e.offset()) {
        Some(Offset::Offset(o)) if o >= 0 => Some(o),
        _ => None,
    })
}

/// Every partition of `topics` with its high watermark now (blocking).
pub fn end_offsets<C: ConsumerContext>(
    c: &BaseConsumer<C>,
    topics: &[String],
) -> Result<BTreeMap<TopicPartition, i64>, String> {
    let timeout = Duration::from_secs(30);
    let mut out = BTreeMap::new();
    for t in topics {
        let parts = partitions_of(c, t)?;
        for p in parts {
            let (_, high) = c
                .fetch_watermarks(t, p, timeout)
                .map_err(|e| format!("watermarks of {t}/{p}: {e}"))?;
            out.insert((Arc::from(t.as_str()), p), high);
        }
    }
    Ok(out)
}

/// The partition ids of a topic (blocking); an error when it does not exist.
pub fn partitions_of<C: ConsumerContext>(
    c: &BaseConsumer<C>,
    topic: &str,
) -> Result<Vec<i32>, String> {
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .map_err(|e| format!("metadata of topic {topic}: {e}"))?;
    let t = md
        .topics()
        .iter()
        .find(|m| m.name() == topic)
        .ok_or_else(|| format!("topic {topic} does not exist"))?;
    if t.partitions().is_empty() || t.error().is_some() {
        return Err(format!("topic {topic} does not exist or has no partitions"));
    }
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

/// Converts one consumed message into a row of `batch`.
pub fn push_message<M: Message>(batch: &mut RawBatchBuilder, topic: &Arc<str>, m: &M) {
    let (ts, ts_type) = match m.timestamp() {
        rdkafka::Timestamp::CreateTime(t) => (Some(t), 0),
        rdkafka::Timestamp::LogAppendTime(t) => (Some(t), 1),
        rdkafka::Timestamp::NotAvailable => (None, -1),
    };
    batch.push(
        topic,
        m.partition(),
        m.offset(),
        ts,
        ts_type,
        m.key(),
        m.payload(),
        || {
            m.headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_string(), h.value.map(|v| v.to_vec())))
                        .collect()
                })
                .unwrap_or_default()
        },
    );
}

/// Seeks asked for by the pipeline. The polling thread makes them between two polls and then
/// sends [`SourceEvent::Seeked`], so that the pipeline can tell records from before the seek
/// (still in its channel) from those after.
#[derive(Debug, Default)]
struct PendingSeeks {
    asked: AtomicBool,
    offsets: std::sync::Mutex<HashMap<TopicPartition, i64>>,
}

impl PendingSeeks {
    fn ask(&self, offsets: &HashMap<TopicPartition, i64>) {
        if let Ok(mut o) = self.offsets.lock() {
            o.extend(offsets.iter().map(|(k, v)| (k.clone(), *v)));
        }
        self.asked.store(true, Ordering::SeqCst);
    }

    /// Makes the seeks asked for, if any; the answer to send, if a seek was asked for.
    fn make(&self, consumer: &BaseConsumer<SourceContext>) -> Option<Result<(), String>> {
        if !self.asked.swap(false, Ordering::SeqCst) {
            return None;
        }
        let offsets = self
            .offsets
            .lock()
            .map(|mut o| std::mem::take(&mut *o))
            .unwrap_or_default();
        // A partition revoked since the seek was asked for is not sought (nor an error).
        let assigned = consumer.assignment().unwrap_or_default();
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in &offsets {
            if assigned.find_partition(t, *p).is_none() {
                continue;
            }
            if let Err(e) = tpl.add_partition_offset(t, *p, Offset::Offset(*o)) {
                return Some(Err(format!("seek of {t}:{p} to {o}: {e}")));
            }
        }
        if tpl.count() == 0 {
            return Some(Ok(()));
        }
        let done = match consumer.seek_partitions(tpl, Duration::from_secs(10)) {
            Ok(done) => done,
            Err(e) => return Some(Err(format!("seek failed: {e}"))),
        };
        for e in done.elements() {
            if let Err(err) = e.error() {
                return Some(Err(format!(
                    "seek of {}:{} failed: {err}",
                    e.topic(),
                    e.partition()
                )));
            }
        }
        Some(Ok(()))
    }
}

fn poll_loop(
    consumer: &BaseConsumer<SourceContext>,
    tx: &mpsc::Sender<SourceEvent>,
    stop: &AtomicBool,
    seeks: &PendingSeeks,
    topics: &HashMap<String, Arc<str>>,
    opts: &SourceOptions,
) {
    // Buffers are sized like the previous batch (plus a quarter), not for the largest batch:
    // at a low rate batches are small, and allocating megabytes for each one churns memory.
    let (mut last_len, mut last_bytes) = (1024usize, 256 * 1024usize);
    while !stop.load(Ordering::SeqCst) {
        if let Some(answer) = seeks.make(consumer)
            && tx.blocking_send(SourceEvent::Seeked(answer)).is_err()
        {
            break;
        }
        let records = (last_len + last_len / 4).clamp(64, opts.max_batch_records.min(65_536));
        let mut batch =
            RawBatchBuilder::with_capacity(records, last_bytes + last_bytes / 4, opts.with_headers);
        let started = Instant::now();
        let mut wait = Duration::from_millis(100);
        while batch.len() < opts.max_batch_records
            && batch.bytes() < opts.max_batch_bytes
            && !seeks.asked.load(Ordering::Relaxed)
        {
            match consumer.poll(wait) {
                None => break,
                Some(Err(e)) => {
                    tracing::warn!("Kafka consumer: {e}");
                    break;
                }
                Some(Ok(m)) => {
                    let topic = topics
                        .get(m.topic())
                        .cloned()
                        .unwrap_or_else(|| Arc::from(m.topic()));
                    push_message(&mut batch, &topic, &m);
                    // After the first record, take only what is already fetched. (The clock
                    // is read every 256 records: once per record it cost 3% of the profile.)
                    wait = Duration::ZERO;
                    if batch.len().is_multiple_of(256)
                        && started.elapsed() > Duration::from_millis(200)
                    {
                        break;
                    }
                }
            }
        }
        if !batch.is_empty() {
            (last_len, last_bytes) = (batch.len(), batch.bytes());
        }
        if !batch.is_empty()
            && tx
                .blocking_send(SourceEvent::Records(Box::new(batch.finish())))
                .is_err()
        {
            break;
        }
    }
    // Leaving the group runs the revoke callback, which the pipeline still answers.
    consumer.unsubscribe();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && !consumer
            .assignment()
            .map(|a| a.count() == 0)
            .unwrap_or(true)
    {
        let _ = consumer.poll(Duration::from_millis(50));
    }
    let _ = tx.blocking_send(SourceEvent::Ended);
}

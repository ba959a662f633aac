//! [`GroupConsumer`]: one consumer-group member polling in batches on its own thread.
//!
//! Records go to the owner as [`RawBatch`]es over a bounded channel, so a slow owner slows
//! consumption instead of growing memory. Rebalances are handled on the polling thread: on an
//! assignment the owner is asked, and the thread blocks until it answers, for the offset to
//! start each new partition at (the progress stored in its tables), and the partitions are
//! assigned at exactly those offsets; on a revocation the owner first commits what it holds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sluice_config::StartPosition;
use tokio::sync::{mpsc, oneshot};

use crate::batch::{RawBatch, RawBatchBuilder};
use crate::client::{self, Connection};
use crate::cluster;
use crate::poll::{self, BatchLimits, Flow, Polled, Visit};
use crate::{KafkaError, Result, TopicPartition};

/// What a record source tells its owner: the group member's polling thread, or a replay that
/// plays the same part.
#[derive(Debug)]
pub enum GroupEvent {
    /// Records, in offset order per partition.
    Records(Box<RawBatch>),
    /// New partitions; reply with the offset to start each at.
    Assigned(
        Vec<TopicPartition>,
        oneshot::Sender<HashMap<TopicPartition, i64>>,
    ),
    /// Partitions taken away; reply once their data is committed.
    Revoked(Vec<TopicPartition>, oneshot::Sender<()>),
    /// The seek asked for with [`GroupConsumer::seek`] is done (or failed): records before this
    /// event may come from the old positions, records after it come from the new ones.
    Seeked(Result<()>),
    /// The cluster refused the client (credentials, TLS): nothing will be consumed with these
    /// settings. [`GroupEvent::Ended`] follows.
    Refused(KafkaError),
    /// The polling thread has left the group and ended; nothing follows.
    Ended,
}

/// Settings for a [`GroupConsumer`].
#[derive(Clone, Debug)]
pub struct GroupOptions {
    /// The cluster and the group.
    pub connection: Connection,
    /// Topics.
    pub topics: Vec<String>,
    /// Most records per batch.
    pub max_batch_records: usize,
    /// Most bytes per batch.
    pub max_batch_bytes: usize,
    /// Collect headers.
    pub with_headers: bool,
}

struct GroupContext {
    tx: mpsc::Sender<GroupEvent>,
    topics: HashMap<String, Arc<str>>,
    /// A refusal of the client (credentials, TLS), for the one error the owner reports.
    refused: crate::error::Refusal,
    /// Global errors repeat on every poll while a broker is away: logged once per interval.
    errors: std::sync::Mutex<crate::throttle::Throttle>,
}

impl ClientContext for GroupContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if self.refused.note(&error, reason) {
            return;
        }
        let code = error.rdkafka_error_code();
        let admit = self
            .errors
            .lock()
            .ok()
            .and_then(|mut t| t.admit(&format!("{code:?}")));
        if let Some(held) = admit {
            tracing::error!("librdkafka: {error}: {reason} ({held} like it held back)");
        }
    }
}

impl GroupContext {
    fn tp_list(&self, tpl: &TopicPartitionList) -> Vec<TopicPartition> {
        tpl.elements()
            .iter()
            .map(|e| (self.topic(e.topic()), e.partition()))
            .collect()
    }

    fn topic(&self, name: &str) -> Arc<str> {
        self.topics
            .get(name)
            .cloned()
            .unwrap_or_else(|| Arc::from(name))
    }

    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList, coop: bool) {
        let parts = self.tp_list(tpl);
        let (reply, answer) = oneshot::channel();
        let offsets = if owner_reachable()
            && self
                .tx
                .blocking_send(GroupEvent::Assigned(parts.clone(), reply))
                .is_ok()
        {
            answer.blocking_recv().ok()
        } else {
            None
        };
        let Some(offsets) = offsets else {
            // librdkafka waits for an answer to every assignment: take nothing (eager) or take
            // them to give them back when the member leaves (cooperative), never leave the
            // rebalance hanging, which would keep the member from leaving the group.
            tracing::info!("the owner is gone; not taking new partitions");
            let res = if coop {
                consumer.incremental_assign(tpl)
            } else {
                consumer.unassign()
            };
            if let Err(e) = res {
                tracing::error!("answering the assignment failed: {e}");
            }
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
        let res = if coop {
            consumer.incremental_assign(tpl)
        } else {
            consumer.assign(tpl)
        };
        if let Err(e) = res {
            tracing::error!("assign failed: {e}");
        }
    }

    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList, coop: bool) {
        let parts = self.tp_list(tpl);
        let (reply, answer) = oneshot::channel();
        if owner_reachable()
            && self
                .tx
                .blocking_send(GroupEvent::Revoked(parts.clone(), reply))
                .is_ok()
        {
            let _ = answer.blocking_recv();
        }
        tracing::info!(partitions = ?parts, "revoked");
        let res = if coop {
            consumer.incremental_unassign(tpl)
        } else {
            consumer.unassign()
        };
        if let Err(e) = res {
            tracing::error!("unassign failed: {e}");
        }
    }
}

/// Whether a rebalance callback may wait for the owner: not when librdkafka runs it on a
/// thread of the async runtime (closing a consumer that is dropped there), where waiting
/// would block the runtime (and tokio refuses to). The owner has stopped listening by then.
fn owner_reachable() -> bool {
    tokio::runtime::Handle::try_current().is_err()
}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let coop = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.assign(consumer, tpl, coop)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.revoke(consumer, tpl, coop)
            }
            other => {
                tracing::error!("rebalance error: {other:?}");
                let _ = consumer.unassign();
            }
        }
    }
}

/// A running group member: its polling thread and a handle to steer and stop it.
pub struct GroupConsumer {
    consumer: Arc<BaseConsumer<GroupContext>>,
    /// The bootstrap servers (for errors).
    brokers: String,
    stop: Arc<AtomicBool>,
    /// Seeks asked for, made by the polling thread between two polls.
    seeks: Arc<PendingSeeks>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer").finish_non_exhaustive()
    }
}

impl GroupConsumer {
    /// Creates the consumer, subscribes and starts polling into a channel of `capacity` batches.
    pub fn start(
        opts: GroupOptions,
        capacity: usize,
    ) -> Result<(Self, mpsc::Receiver<GroupEvent>)> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let topics: HashMap<String, Arc<str>> = opts
            .topics
            .iter()
            .map(|t| (t.clone(), Arc::from(t.as_str())))
            .collect();
        let ctx = GroupContext {
            tx: tx.clone(),
            topics,
            refused: Default::default(),
            errors: Default::default(),
        };
        let brokers = opts.connection.brokers.clone();
        let brokers = &brokers;
        let consumer: BaseConsumer<GroupContext> = client::group_member(&opts.connection)
            .create_with_context(ctx)
            .map_err(|e| {
                KafkaError::client(format!("cannot create the Kafka consumer for {brokers}"), e)
            })?;
        let names: Vec<&str> = opts.topics.iter().map(|s| s.as_str()).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| KafkaError::client(format!("cannot subscribe to {names:?}"), e))?;
        let consumer = Arc::new(consumer);
        let stop = Arc::new(AtomicBool::new(false));
        let seeks = Arc::new(PendingSeeks::default());
        let thread = {
            let (consumer, stop, seeks) = (consumer.clone(), stop.clone(), seeks.clone());
            std::thread::Builder::new()
                .name("sluice-poll".into())
                .spawn(move || poll_loop(&consumer, &tx, &stop, &seeks, &opts))
                .map_err(|source| KafkaError::Thread {
                    what: "polling",
                    source,
                })?
        };
        let thread = std::sync::Mutex::new(Some(thread));
        Ok((
            Self {
                consumer,
                brokers: brokers.clone(),
                stop,
                seeks,
                thread,
            },
            rx,
        ))
    }

    /// Commits `offsets` (next offset per partition) to the consumer group, asynchronously; a
    /// failure is logged (the tables stay the source of truth).
    pub fn commit_offsets(&self, offsets: &HashMap<TopicPartition, i64>) {
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in offsets {
            if tpl.add_partition_offset(t, *p, Offset::Offset(*o)).is_err() {
                return;
            }
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!(
                "committing offsets to the consumer group failed (the table stays the source of truth): {e}"
            );
        }
    }

    /// Asks the polling thread to move these partitions to these offsets; it answers with
    /// [`GroupEvent::Seeked`] once done.
    pub fn seek(&self, offsets: &HashMap<TopicPartition, i64>) {
        self.seeks.ask(offsets);
    }

    /// Asks the polling thread to leave the group; it ends by sending [`GroupEvent::Ended`].
    /// The owner keeps receiving until then, so that revocations during the close are still
    /// answered.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Stops and waits (blocking) until the polling thread has ended.
    pub fn join(&self) {
        self.stop();
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = handle {
            let _ = t.join();
        }
    }

    /// `e`, or the cluster's refusal of this client (credentials, TLS) when that is why.
    fn explain(&self, e: KafkaError) -> KafkaError {
        self.consumer.context().refused.explain(&self.brokers, e)
    }

    /// The offset a partition without stored progress starts at (blocking).
    pub fn start_offset(&self, topic: &str, partition: i32, start: StartPosition) -> Result<i64> {
        cluster::start_offset(&*self.consumer, topic, partition, start).map_err(|e| self.explain(e))
    }

    /// Every partition of `topics` with its end offset now (blocking).
    pub fn end_offsets(&self, topics: &[String]) -> Result<BTreeMap<TopicPartition, i64>> {
        cluster::end_offsets(&*self.consumer, topics).map_err(|e| self.explain(e))
    }

    /// The end offsets of `parts` (blocking), in one request per broker: a round trip per
    /// partition waits behind this consumer's fetches (up to `fetch.wait.max.ms` each), which
    /// with 96 partitions took 48 s.
    pub fn end_offsets_of(&self, parts: &[TopicPartition]) -> Result<Vec<(TopicPartition, i64)>> {
        cluster::latest_offsets(&*self.consumer, parts, Duration::from_secs(5))
            .map_err(|e| self.explain(e))
    }
}

/// Seeks asked for by the owner. The polling thread makes them between two polls and then
/// sends [`GroupEvent::Seeked`], so that the owner can tell records from before the seek
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
    fn make(&self, consumer: &BaseConsumer<GroupContext>) -> Option<Result<()>> {
        if !self.asked.swap(false, Ordering::SeqCst) {
            return None;
        }
        let offsets = self
            .offsets
            .lock()
            .map(|mut o| std::mem::take(&mut *o))
            .unwrap_or_default();
        Some(seek_assigned(consumer, &offsets))
    }
}

/// Seeks the partitions of `offsets` that are still assigned (one revoked since the seek was
/// asked for is not sought, nor an error).
fn seek_assigned(
    consumer: &BaseConsumer<GroupContext>,
    offsets: &HashMap<TopicPartition, i64>,
) -> Result<()> {
    let assigned = consumer.assignment().unwrap_or_default();
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in offsets {
        if assigned.find_partition(t, *p).is_none() {
            continue;
        }
        tpl.add_partition_offset(t, *p, Offset::Offset(*o))
            .map_err(|e| KafkaError::client(format!("seek of {t}:{p} to {o}"), e))?;
    }
    if tpl.count() == 0 {
        return Ok(());
    }
    let done = consumer
        .seek_partitions(tpl, Duration::from_secs(10))
        .map_err(|e| KafkaError::client("seek", e))?;
    for e in done.elements() {
        e.error().map_err(|err| {
            KafkaError::client(format!("seek of {}:{}", e.topic(), e.partition()), err)
        })?;
    }
    Ok(())
}

/// The group member's use of the poll loop: every record, and a warning (then a new batch)
/// for an error; a pending seek ends the batch.
struct GroupVisit<'a> {
    topics: &'a HashMap<String, Arc<str>>,
    seeks: &'a PendingSeeks,
    /// Set when the cluster refused the client: the loop reports it once and ends.
    refused: Option<rdkafka::error::KafkaError>,
    /// Consumption errors repeat on every poll while a broker is away.
    errors: crate::throttle::Throttle,
}

impl Visit for GroupVisit<'_> {
    fn visit(&mut self, item: Polled<'_>, batch: &mut RawBatchBuilder) -> Flow {
        match item {
            Polled::Message(m) => {
                let topic = self
                    .topics
                    .get(m.topic())
                    .cloned()
                    .unwrap_or_else(|| Arc::from(m.topic()));
                poll::push_message(batch, &topic, &m);
                Flow::Continue
            }
            Polled::PartitionEof(_) => Flow::Continue,
            Polled::Error(e) => {
                match e.rdkafka_error_code() {
                    Some(code) if crate::error::is_refusal(code) => self.refused = Some(e),
                    code => {
                        if let Some(held) = self.errors.admit(&format!("{code:?}")) {
                            tracing::warn!("Kafka consumer: {e} ({held} like it held back)");
                        }
                    }
                }
                Flow::EndBatch
            }
        }
    }

    fn interrupted(&self) -> bool {
        self.seeks.asked.load(Ordering::Relaxed)
    }
}

fn poll_loop(
    consumer: &BaseConsumer<GroupContext>,
    tx: &mpsc::Sender<GroupEvent>,
    stop: &AtomicBool,
    seeks: &PendingSeeks,
    opts: &GroupOptions,
) {
    let topics = &consumer.context().topics;
    let mut visit = GroupVisit {
        topics,
        seeks,
        refused: None,
        errors: Default::default(),
    };
    // Buffers are sized like the previous batch (plus a quarter), not for the largest batch:
    // at a low rate batches are small, and allocating megabytes for each one churns memory.
    let (mut last_len, mut last_bytes) = (1024usize, 256 * 1024usize);
    let limits = BatchLimits {
        records: opts.max_batch_records,
        bytes: opts.max_batch_bytes,
        time: Duration::from_millis(200),
        first_wait: Duration::from_millis(100),
    };
    while !stop.load(Ordering::SeqCst) {
        if let Some(answer) = seeks.make(consumer)
            && tx.blocking_send(GroupEvent::Seeked(answer)).is_err()
        {
            break;
        }
        let records = (last_len + last_len / 4).clamp(64, opts.max_batch_records.min(65_536));
        let mut batch =
            RawBatchBuilder::with_capacity(records, last_bytes + last_bytes / 4, opts.with_headers);
        poll::fill(consumer, &mut batch, &limits, &mut visit);
        if let Some(e) = visit.refused.take() {
            let refused = consumer
                .context()
                .refused
                .error(&opts.connection.brokers, &e);
            let _ = tx.blocking_send(GroupEvent::Refused(refused));
            break;
        }
        if batch.is_empty() {
            continue;
        }
        (last_len, last_bytes) = (batch.len(), batch.bytes());
        if tx
            .blocking_send(GroupEvent::Records(Box::new(batch.finish())))
            .is_err()
        {
            break;
        }
    }
    leave(consumer);
    let _ = tx.blocking_send(GroupEvent::Ended);
}

/// Leaves the group; leaving runs the revoke callback, which the owner still answers.
fn leave(consumer: &BaseConsumer<GroupContext>) {
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
}

//! The one poll loop: consumed messages into a [`RawBatchBuilder`], for the group member and
//! the range reader alike. What to do with each message, end of partition or error is the
//! caller's [`Visit`]; the loop owns the waiting and the batch limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Headers, Message};

use crate::batch::RawBatchBuilder;

/// When a batch is full.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// Most records per batch.
    pub records: usize,
    /// Most key and value bytes per batch (approximately).
    pub bytes: usize,
    /// Longest time spent filling one batch (checked every 256 records).
    pub time: Duration,
    /// How long to wait for the first record of a batch.
    pub first_wait: Duration,
}

/// What the loop met.
pub enum Polled<'a> {
    /// A record.
    Message(BorrowedMessage<'a>),
    /// The end of a partition (only with `enable.partition.eof`).
    PartitionEof(i32),
    /// An error from librdkafka.
    Error(rdkafka::error::KafkaError),
}

/// What the loop does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep filling the batch.
    Continue,
    /// The batch is done (send what it has).
    EndBatch,
}

/// Called for everything polled; pushes the messages it wants into the batch.
pub trait Visit {
    /// Handles one polled item.
    fn visit(&mut self, item: Polled<'_>, batch: &mut RawBatchBuilder) -> Flow;
    /// True when the batch must end now (a seek is waiting, the reader is told to stop).
    fn interrupted(&self) -> bool {
        false
    }
}

/// Polls `consumer` into `batch` until a limit is reached, nothing more is fetched, or the
/// visitor ends the batch. After the first record only what is already fetched is taken, so a
/// batch never waits for records that are not there.
pub fn fill<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    batch: &mut RawBatchBuilder,
    limits: &BatchLimits,
    visit: &mut impl Visit,
) {
    let started = Instant::now();
    let mut wait = limits.first_wait;
    while batch.len() < limits.records && batch.bytes() < limits.bytes && !visit.interrupted() {
        let item = match consumer.poll(wait) {
            None => break,
            Some(Ok(m)) => Polled::Message(m),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => Polled::PartitionEof(p),
            Some(Err(e)) => Polled::Error(e),
        };
        let was_message = matches!(item, Polled::Message(_));
        if visit.visit(item, batch) == Flow::EndBatch {
            break;
        }
        if was_message {
            wait = Duration::ZERO;
            // (The clock is read every 256 records: once per record it cost 3% of the profile.)
            if batch.len().is_multiple_of(256) && started.elapsed() > limits.time {
                break;
            }
        }
    }
}

/// Appends one consumed message to `batch`.
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

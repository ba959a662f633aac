//! Bounded reads of offset ranges: `[start, end)` of assigned partitions of one topic, in
//! offset order, as [`RawBatch`]es over a bounded channel (so a read runs at most the
//! channel's capacity ahead of its consumer). The tierer reads what it archives with it, and
//! the unified log reads the broker's tier.
//!
//! The reader is not a group member: it assigns the partitions itself and commits nothing. A
//! position below the broker's log start is reported per partition
//! ([`RangeEnd::OutOfRange`]), never silently skipped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::batch::{RawBatch, RawBatchBuilder};
use crate::error::is_out_of_range;
use crate::poll::{self, BatchLimits, Flow, Polled, Visit};
use crate::{KafkaError, Result};

/// The context of reading consumers: reaching the end of a partition is how a read learns
/// it is done, not an error worth a log line (librdkafka reports it as a global error too).
/// A refusal of the client (credentials, TLS) is kept for the error the caller reports.
#[derive(Debug, Default)]
pub struct ReaderContext {
    pub(crate) refused: crate::error::Refusal,
}

impl ClientContext for ReaderContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        let eof =
            error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF);
        if !eof && !self.refused.note(&error, reason) {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for ReaderContext {}

/// What the end of a partition (nothing more fetched for now) means to a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtEof {
    /// The partition's read is done at the last record read (a read of what is there now).
    Finish,
    /// Wait for more until the range's end; the position moves past control records
    /// (transaction markers) that hold no record.
    Wait,
}

/// A read of ranges of one topic's partitions.
#[derive(Clone, Debug)]
pub struct RangeRead {
    /// The topic.
    pub topic: Arc<str>,
    /// (partition, start, end): `end` is exclusive; `None` reads on until stopped.
    pub ranges: Vec<(i32, i64, Option<i64>)>,
    /// Collect record headers.
    pub with_headers: bool,
    /// Most records per batch.
    pub batch_records: usize,
    /// What the end of a partition means.
    pub at_eof: AtEof,
    /// Give up (returning what was reached) after this long without a record.
    pub stall: Option<Duration>,
}

/// Where a partition's read ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeEnd {
    /// The next offset to read (the range's end, or less when the read stopped early).
    Reached(i64),
    /// The position (this offset) fell below the broker's log start.
    OutOfRange(i64),
}

impl RangeEnd {
    /// The next offset to read.
    pub fn next(self) -> i64 {
        match self {
            Self::Reached(o) | Self::OutOfRange(o) => o,
        }
    }
}

/// What a read did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeOutcome {
    /// Where each partition's read ended.
    pub ends: BTreeMap<i32, RangeEnd>,
    /// Records sent.
    pub records: u64,
}

impl RangeRead {
    /// Reads the ranges with a fresh consumer made from `config` (see
    /// [`crate::Cluster::reader_config`]) on a blocking thread, sending batches to `tx` until
    /// every range is done, `stop` is set, or `tx` is closed.
    pub async fn run(
        self,
        config: ClientConfig,
        tx: mpsc::Sender<RawBatch>,
        stop: Arc<AtomicBool>,
    ) -> Result<RangeOutcome> {
        let consumer: BaseConsumer<ReaderContext> = config
            .create_with_context(ReaderContext::default())
            .map_err(|e| KafkaError::client("cannot create a consumer", e))?;
        tokio::task::spawn_blocking(move || self.read_blocking(&consumer, &tx, &stop))
            .await
            .map_err(|_| KafkaError::TaskLost {
                what: "reading a range",
            })?
    }

    /// [`RangeRead::run`] on the calling thread, with a consumer of the caller's.
    pub fn read_blocking(
        &self,
        consumer: &BaseConsumer<ReaderContext>,
        tx: &mpsc::Sender<RawBatch>,
        stop: &AtomicBool,
    ) -> Result<RangeOutcome> {
        let topic = &self.topic;
        let mut tpl = TopicPartitionList::new();
        let mut state = Ranges {
            topic: topic.clone(),
            at_eof: self.at_eof,
            open: BTreeMap::new(),
            done: BTreeMap::new(),
            error: None,
            consumer,
        };
        for &(p, start, end) in &self.ranges {
            tpl.add_partition_offset(topic, p, Offset::Offset(start))
                .map_err(|e| KafkaError::client(format!("assign {topic}/{p}"), e))?;
            state.open.insert(p, (start, end));
        }
        consumer
            .assign(&tpl)
            .map_err(|e| KafkaError::client(format!("assign {topic}"), e))?;
        let limits = BatchLimits {
            records: self.batch_records.max(1),
            bytes: usize::MAX,
            time: Duration::from_millis(300),
            first_wait: Duration::from_millis(100),
        };
        let mut last_record = Instant::now();
        let mut records = 0u64;
        loop {
            state.close_finished();
            if state.open.is_empty() || stop.load(Ordering::SeqCst) {
                break;
            }
            let mut batch = RawBatchBuilder::new(self.batch_records.min(8192), self.with_headers);
            poll::fill(consumer, &mut batch, &limits, &mut state);
            if let Some(e) = state.error.take() {
                return Err(e);
            }
            if !batch.is_empty() {
                last_record = Instant::now();
                records += batch.len() as u64;
                if tx.blocking_send(batch.finish()).is_err() {
                    break;
                }
            } else if self.stall.is_some_and(|s| last_record.elapsed() > s) {
                tracing::warn!(topic = %topic, partitions = ?state.open.keys().collect::<Vec<_>>(), "no records for {:?} below the range's end (an open transaction?); ending the read", self.stall);
                break;
            }
        }
        let open: Vec<(i32, i64)> = state.open.iter().map(|(p, (n, _))| (*p, *n)).collect();
        for (p, next) in open {
            state.done.insert(p, RangeEnd::Reached(next));
        }
        Ok(RangeOutcome {
            ends: state.done,
            records,
        })
    }
}

/// The state of a read, and its use of the poll loop.
struct Ranges<'a> {
    topic: Arc<str>,
    at_eof: AtEof,
    /// partition -> (next offset, end).
    open: BTreeMap<i32, (i64, Option<i64>)>,
    done: BTreeMap<i32, RangeEnd>,
    error: Option<KafkaError>,
    consumer: &'a BaseConsumer<ReaderContext>,
}

impl Ranges<'_> {
    fn close_finished(&mut self) {
        let finished: Vec<i32> = self
            .open
            .iter()
            .filter(|(_, (next, end))| end.is_some_and(|e| *next >= e))
            .map(|(p, _)| *p)
            .collect();
        for p in finished {
            self.close(p, RangeEnd::Reached);
        }
    }

    fn close(&mut self, p: i32, how: fn(i64) -> RangeEnd) {
        if let Some((next, _)) = self.open.remove(&p) {
            self.done.insert(p, how(next));
        }
    }

    /// The fetch position of `p`, which sits past the last record when only control records
    /// followed it.
    fn position(&self, p: i32) -> Option<i64> {
        let pos = self.consumer.position().ok()?;
        match pos.find_partition(&self.topic, p)?.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        }
    }

    fn end_of_partition(&mut self, p: i32) -> Flow {
        match self.at_eof {
            AtEof::Finish => self.close(p, RangeEnd::Reached),
            AtEof::Wait => {
                let pos = self.position(p);
                if let (Some(o), Some((next, end))) = (pos, self.open.get_mut(&p))
                    && o > *next
                {
                    *next = end.map_or(o, |e| o.min(e));
                }
            }
        }
        Flow::EndBatch
    }
}

impl Visit for Ranges<'_> {
    fn visit(&mut self, item: Polled<'_>, batch: &mut RawBatchBuilder) -> Flow {
        match item {
            Polled::Message(m) => {
                let p = m.partition();
                let Some((next, end)) = self.open.get_mut(&p) else {
                    return Flow::Continue;
                };
                if m.offset() < *next {
                    return Flow::Continue;
                }
                if let Some(e) = *end
                    && m.offset() >= e
                {
                    if self.at_eof == AtEof::Wait {
                        *next = e;
                    }
                    self.close(p, RangeEnd::Reached);
                    return Flow::EndBatch;
                }
                poll::push_message(batch, &self.topic, &m);
                *next = m.offset() + 1;
                if end.is_some_and(|e| *next >= e) {
                    self.close(p, RangeEnd::Reached);
                }
                Flow::Continue
            }
            Polled::PartitionEof(p) => self.end_of_partition(p),
            Polled::Error(e) if is_out_of_range(e.rdkafka_error_code()) => {
                // librdkafka names no partition here; a read that can fall out of range reads
                // one partition (the unified log), and the tierer treats it as an error.
                let parts: Vec<i32> = self.open.keys().copied().collect();
                for p in parts {
                    self.close(p, RangeEnd::OutOfRange);
                }
                Flow::EndBatch
            }
            Polled::Error(e) => {
                self.error = Some(KafkaError::client(format!("reading {}", self.topic), e));
                Flow::EndBatch
            }
        }
    }

    fn interrupted(&self) -> bool {
        self.open.is_empty() || self.error.is_some()
    }
}
